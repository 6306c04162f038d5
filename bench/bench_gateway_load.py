"""Gateway under a burst: 200 concurrent requests from 20 clients against the real gateway process.

Each arm starts ``python -m homegrown.gateway.server`` on loopback (the shipped SmolLM2-135M GGUF, the model
worker in its own process), fires the burst with 20 client threads (10 requests each, ``max_tokens`` 16),
probes ``/health`` every 100 ms with a 1 s timeout, and afterwards counts the log rows. Arms:

- ``unbounded``: the baseline, admission effectively off (a queue of 1000): every request waits its turn;
- ``queue 8``: what ships: 1 at work, 8 waiting, the rest answered 429 at once with ``Retry-After``;
- ``queue 8 + worker killed``: as above, and the model worker is killed with SIGKILL mid-burst.

    .venv/bin/python bench/bench_gateway_load.py            # writes bench/results/gateway_load.md
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gateway(home: Path, queue_size: int, max_concurrent: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEGROWN_")}
    env.update({
        "HOMEGROWN_HOME": str(home), "HOMEGROWN_API_KEYS": KEY, "HOMEGROWN_PORT": str(port),
        "HOMEGROWN_QUEUE_SIZE": str(queue_size), "HOMEGROWN_MAX_CONCURRENT_REQUESTS": str(max_concurrent),
        "HOMEGROWN_RATE_LIMIT_PER_MINUTE": "0", "HOMEGROWN_N_CTX": "512", "HOMEGROWN_N_THREADS": "1",
        "HOMEGROWN_LOCAL_TIMEOUT_S": "600",
    })
    log = open(home / "gateway.out", "wb")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen([sys.executable, "-m", "homegrown.gateway.server"], env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((home / "gateway.out").read_text()[-3000:])
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise TimeoutError("gateway did not start")


def worker_pid(url: str) -> int:
    """The model worker's pid, as the gateway reports it on ``/health`` (to a caller with a key)."""
    health = httpx.get(f"{url}/health", headers={"Authorization": f"Bearer {KEY}"}, timeout=5).json()
    return int(health["models"]["champion"]["worker"]["pid"])


def run_arm(name: str, queue_size: int, max_concurrent: int, clients: int, per_client: int,
            kill_worker: bool) -> dict:
    home = Path(tempfile.mkdtemp(prefix="bench-load-"))
    process, url = start_gateway(home, queue_size, max_concurrent)
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    health: list[float] = []
    misses = [0]
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(timeout=1.0) as http:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    ok = http.get(f"{url}/health").status_code == 200
                except httpx.HTTPError:
                    ok = False
                health.append(time.perf_counter() - started)
                misses[0] += not ok
                time.sleep(0.1)

    def client(index: int) -> None:
        with httpx.Client(timeout=600, headers={"Authorization": f"Bearer {KEY}"}) as http:
            for turn in range(per_client):
                started = time.perf_counter()
                try:
                    status = http.post(f"{url}/v1/chat/completions", json={
                        "model": "homegrown", "max_tokens": 16, "temperature": 0,
                        "messages": [{"role": "user", "content": f"Client {index}, question {turn}: say hello."}],
                    }).status_code
                except httpx.HTTPError:
                    status = 0
                with lock:
                    results.append((status, time.perf_counter() - started))

    killed = []

    def killer() -> None:
        time.sleep(3.0)
        pid = worker_pid(url)
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    prober = threading.Thread(target=probe)
    prober.start()
    started = time.perf_counter()
    if kill_worker:
        threading.Thread(target=killer).start()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - started
    stop.set()
    prober.join()
    time.sleep(1.0)  # the last rows
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    db = home / "gateway" / "interactions.sqlite"
    with sqlite3.connect(db) as connection:
        logged = connection.execute("select count(*) from interactions").fetchone()[0]
    ok = [t for s, t in results if s == 200]
    refused = [t for s, t in results if s == 429]
    other = [s for s, _ in results if s not in (200, 429)]
    return {
        "arm": name, "requests": len(results), "answered": len(ok), "429": len(refused), "other": len(other),
        "other_codes": sorted(set(other)), "wall_s": wall,
        "p50_answer_s": statistics.median(ok) if ok else float("nan"),
        "max_answer_s": max(ok) if ok else float("nan"),
        "max_429_s": max(refused) if refused else float("nan"),
        "health_probes": len(health), "health_misses": misses[0], "health_max_s": max(health) if health else 0,
        "log_rows": logged, "killed_workers": len(killed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--per-client", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gateway_load.md")
    args = parser.parse_args()
    arms = [
        run_arm("unbounded (baseline)", 1000, 1, args.clients, args.per_client, False),
        run_arm("queue 8", 8, 1, args.clients, args.per_client, False),
        run_arm("queue 8 + worker killed at 3 s", 8, 1, args.clients, args.per_client, True),
    ]
    base = arms[0]
    lines = [
        "# Gateway under a burst",
        "",
        (f"{args.clients} clients x {args.per_client} requests at once (max_tokens 16), SmolLM2-135M GGUF on "
         "llama.cpp in the model worker, 1 request at work; `/health` probed every 100 ms with a 1 s timeout."),
        (f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()}; "
         f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Command: `.venv/bin/python bench/bench_gateway_load.py`."),
        "",
        ("| arm | requests | answered | 429 | other | wall s | p50 answer s | max answer s (x baseline) "
         "| max 429 s | health misses / probes | max health s | log rows | workers killed |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arm in arms:
        ratio = arm["max_answer_s"] / base["max_answer_s"] if base["max_answer_s"] else float("nan")
        lines.append(
            f"| {arm['arm']} | {arm['requests']} | {arm['answered']} | {arm['429']} | {arm['other']}"
            f"{' ' + str(arm['other_codes']) if arm['other'] else ''} | {arm['wall_s']:.1f} | "
            f"{arm['p50_answer_s']:.2f} | {arm['max_answer_s']:.2f} ({ratio:.2f}x) | {arm['max_429_s']:.3f} | "
            f"{arm['health_misses']} / {arm['health_probes']} | {arm['health_max_s']:.3f} | {arm['log_rows']} | "
            f"{arm['killed_workers']} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

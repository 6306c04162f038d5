"""Running the gateway: in the foreground (``python -m homegrown.gateway.server``) or as a background process.

The background process writes ``<HOMEGROWN_HOME>/gateway/gateway.json`` (url, pid) and logs to
``gateway.log`` beside it; ``running_gateway()`` reads that file back and asks ``/health``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from homegrown.gateway.settings import GatewaySettings, gateway_dir

STATE_FILE = "gateway.json"
PID_FILE = "gateway.pid"
LOG_FILE = "gateway.log"


def serve(settings: GatewaySettings | None = None) -> None:
    """Serve the gateway in the foreground until interrupted."""
    import uvicorn

    from homegrown.gateway.app import create_app

    settings = settings or GatewaySettings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no obstacle
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{shown}:{port}"


def _healthy(url: str, timeout_s: float = 2.0) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def _read_state() -> dict[str, Any] | None:
    path = gateway_dir() / STATE_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def _is_our_process(pid: int) -> bool:
    try:
        cmdline = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return "homegrown.gateway.server" in " ".join(cmdline)


def _clear_state() -> None:
    for name in (STATE_FILE, PID_FILE):
        (gateway_dir() / name).unlink(missing_ok=True)


def running_gateway() -> dict[str, Any] | None:
    """The background gateway of this ``HOMEGROWN_HOME``: ``{"url", "pid", "healthy"}``, or None."""
    state = _read_state()
    if state is None:
        return None
    if not _is_our_process(int(state["pid"])):
        _clear_state()
        return None
    return {"url": state["url"], "pid": state["pid"], "healthy": _healthy_within(state["url"], 15.0)}


def _healthy_within(url: str, patience_s: float) -> bool:
    """Whether ``url`` answers ``/health`` within ``patience_s`` (several tries): a busy gateway that is
    slow to answer once is not taken for a dead one (and stopped) by a deploy."""
    deadline = time.monotonic() + patience_s
    while True:
        if _healthy(url, timeout_s=5.0):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def start_background(settings: GatewaySettings | None = None, timeout_s: float = 60) -> str:
    """Start the gateway as a background process and return its URL once ``/health`` answers.

    An already running gateway of this home is reused. Port 0 picks a free port. Raises ``TimeoutError``
    (after stopping the process) when it is not healthy within ``timeout_s``, and ``RuntimeError`` with the
    end of its log when it exits early.
    """
    settings = settings or GatewaySettings()
    current = running_gateway()
    if current is not None and current["healthy"]:
        return current["url"]
    if current is not None:
        stop_background()
    port = settings.port or _free_port(settings.host)
    if not _port_is_free(settings.host, port):
        # Something else answers there (another gateway, another service): its /health must not be taken
        # for ours. A port that was only the default moves to a free one; a chosen one is an error.
        if "port" in settings.model_fields_set:
            raise RuntimeError(f"port {port} on {settings.host} is in use by another process; "
                               "stop it or set HOMEGROWN_PORT to a free port (0 picks one)")
        port = _free_port(settings.host)
    settings = settings.model_copy(update={"port": port})
    folder = gateway_dir()
    log_path = folder / LOG_FILE
    ours = {f"HOMEGROWN_{name.upper()}" for name in GatewaySettings.model_fields}
    env = {key: value for key, value in os.environ.items() if key not in ours}
    env.update(settings.to_env())
    env["HOMEGROWN_HOME"] = str(folder.parent)
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "homegrown.gateway.server"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    url = _url(settings.host, port)
    (folder / PID_FILE).write_text(str(process.pid))
    (folder / STATE_FILE).write_text(
        json.dumps({"url": url, "pid": process.pid, "started_at": time.time(), "log": str(log_path)})
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _clear_state()
            raise RuntimeError(f"the gateway exited with code {process.returncode}:\n{_tail(log_path)}")
        if _healthy(url, timeout_s=1.0):
            return url
        time.sleep(0.2)  # poll interval; the loop is bounded by the deadline
    stop_background()
    raise TimeoutError(f"the gateway was not healthy within {timeout_s:.0f}s:\n{_tail(log_path)}")


def stop_background(timeout_s: float = 15) -> bool:
    """Stop the background gateway (SIGTERM, then SIGKILL after ``timeout_s``); False if none was running."""
    state = _read_state()
    if state is None:
        return False
    pid = int(state["pid"])
    if not _is_our_process(pid):
        _clear_state()
        return False
    process = psutil.Process(pid)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except psutil.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_s)
    _clear_state()
    return True


def _tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


if __name__ == "__main__":
    serve()

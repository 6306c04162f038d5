"""vLLM as a serving target: the base model with LoRA enabled, each model version's adapter loaded at runtime.

A vLLM server (``python -m vllm.entrypoints.openai.api_server --model <base folder> --enable-lora``, with
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``) serves the base under one name and every adapter loaded through
``POST /v1/load_lora_adapter`` under its own name; a chat request naming the adapter is answered by base +
adapter. Deployment (:func:`homegrown.gateway.deploy.deploy_model` with ``vllm_url``) loads the candidate's
adapter as ``homegrown-v<N>`` and points the gateway's champion (or challenger) at it as an OpenAI-compatible
upstream; a rollback unloads it. On a GPU node the server is the ``infra/k8s/vllm.yaml`` Deployment (or the
compose file's ``vllm`` service) and ``HOMEGROWN_VLLM_URL`` names it; on one machine :func:`start_vllm` runs
the CPU build from its own environment (``make vllm``: ``.venv-vllm``, or ``HOMEGROWN_VLLM_PYTHON``).

The adapter folder must be readable by the server under the same path (one machine, or a shared volume).

Merged weights instead (``DeployConfig.target: vllm-merged``): :func:`serve_merged` starts a vLLM server of
its own for the version's merged folder, served as ``homegrown-v<N>``, records it under
``<HOMEGROWN_HOME>/vllm/`` so it outlives the run that started it, and the gateway forwards to it;
:func:`stop_merged` ends it on rollback, and a deploy ends those no entry of ``models.json`` names any more.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from homegrown import paths

VLLM_URL_ENV = "HOMEGROWN_VLLM_URL"
VLLM_PYTHON_ENV = "HOMEGROWN_VLLM_PYTHON"
BASE_NAME = "base"


class VllmError(RuntimeError):
    """The vLLM server refused or failed a request."""


def vllm_url() -> str | None:
    """The vLLM server deployments go to (``HOMEGROWN_VLLM_URL``, without ``/v1``), or None."""
    url = os.environ.get(VLLM_URL_ENV, "").strip()
    return url.rstrip("/").removesuffix("/v1") or None


def vllm_python() -> Path | None:
    """The Python of an environment with vLLM: ``HOMEGROWN_VLLM_PYTHON``, else the project's ``.venv-vllm``."""
    configured = os.environ.get(VLLM_PYTHON_ENV)
    candidate = Path(configured) if configured else paths.PROJECT_ROOT / ".venv-vllm" / "bin" / "python"
    ready = candidate.parent / "vllm-ready"
    if candidate.is_file() and (configured or ready.exists()):
        return candidate
    return None


class VllmServer:
    """A client of a running vLLM server's health and runtime-LoRA endpoints."""

    def __init__(self, url: str, timeout_s: float = 120.0):
        self.url = url.rstrip("/").removesuffix("/v1")
        self.timeout_s = timeout_s

    @property
    def openai_url(self) -> str:
        return f"{self.url}/v1"

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def models(self) -> list[str]:
        """The names the server answers to: the base and every loaded adapter."""
        response = httpx.get(f"{self.url}/v1/models", timeout=self.timeout_s)
        self._check(response, "listing models")
        return [item["id"] for item in response.json().get("data", [])]

    def load_adapter(self, name: str, adapter_dir: str | Path) -> None:
        """Serve the peft adapter at ``adapter_dir`` as the model ``name`` (replacing one of that name)."""
        if not (Path(adapter_dir) / "adapter_config.json").is_file():
            raise VllmError(f"{adapter_dir} is not a peft adapter folder (no adapter_config.json)")
        if name in self.models():
            self.unload_adapter(name)
        response = httpx.post(f"{self.url}/v1/load_lora_adapter",
                              json={"lora_name": name, "lora_path": str(adapter_dir)}, timeout=self.timeout_s)
        self._check(response, f"loading the adapter {name!r} from {adapter_dir}")

    def unload_adapter(self, name: str) -> None:
        response = httpx.post(f"{self.url}/v1/unload_lora_adapter", json={"lora_name": name},
                              timeout=self.timeout_s)
        self._check(response, f"unloading the adapter {name!r}")

    @staticmethod
    def _check(response: httpx.Response, what: str) -> None:
        if response.status_code != 200:
            raise VllmError(f"vLLM refused {what} ({response.status_code}): {response.text[:500]}")


@dataclass
class VllmProcess:
    """A vLLM server this process started; :meth:`stop` ends it."""

    process: subprocess.Popen
    url: str
    log_path: Path

    @property
    def server(self) -> VllmServer:
        return VllmServer(self.url)

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_vllm(
    model_dir: Path | str,
    *,
    served_name: str = BASE_NAME,
    enable_lora: bool = True,
    port: int = 0,
    max_lora_rank: int = 64,
    max_loras: int = 2,
    max_model_len: int = 4096,
    python: Path | None = None,
    log_path: Path | None = None,
    timeout_s: float = 300.0,
    kv_cache_gib: int = 1,
) -> VllmProcess:
    """Start the vLLM OpenAI-compatible server on ``127.0.0.1`` for the Hugging Face folder ``model_dir``
    (served as ``served_name``; with ``enable_lora``, runtime adapter loading allowed) and wait until it is
    healthy.

    ``python``: the interpreter of an environment with vLLM (default :func:`vllm_python`). The server's
    output goes to ``log_path``; a server that exits or is not healthy within ``timeout_s`` is stopped and
    the log's tail raised.
    """
    python = python or vllm_python()
    if python is None:
        raise FileNotFoundError("vLLM is not installed: run `make vllm` (or set HOMEGROWN_VLLM_PYTHON)")
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a Hugging Face model folder (no config.json)")
    port = port or _free_port()
    log_path = log_path or paths.subdir("logs") / f"vllm-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "HF_HUB_OFFLINE": "1",
           "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib), "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(port),
               "--dtype", "bfloat16", "--max-model-len", str(max_model_len)]
    if enable_lora:
        command += ["--enable-lora", "--max-lora-rank", str(max_lora_rank), "--max-loras", str(max_loras)]
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    started = VllmProcess(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if started.server.healthy():
            return started
        time.sleep(1.0)
    started.stop()
    tail = log_path.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"vLLM did not become healthy within {timeout_s:.0f}s (exit {process.poll()}); "
                       f"log {log_path}:\n{tail}")


# --- merged weights: one server per deployed version --------------------------------------------------------

def _merged_records() -> Path:
    return paths.subdir("vllm")


def serve_merged(name: str, merged_dir: Path | str, timeout_s: float = 300.0) -> VllmServer:
    """Start a vLLM server for the merged folder, served as ``name`` (no LoRA), and record it by its URL;
    returns its client. Servers already running are left alone (one of them may be what serves now): a
    successful deploy stops the ones no entry names (:func:`stop_unused_merged`)."""
    started = start_vllm(merged_dir, served_name=name, enable_lora=False, timeout_s=timeout_s,
                         log_path=paths.subdir("logs") / f"vllm-{name}.log")
    record = {"name": name, "pid": started.process.pid, "url": started.url, "model_dir": str(merged_dir)}
    port = started.url.rsplit(":", 1)[-1]
    (_merged_records() / f"{port}.json").write_text(json.dumps(record))
    return started.server


def _ours(record: dict) -> bool:
    """Whether the record's pid is still that vLLM server (not an exited one's pid given to another process)."""
    try:
        cmdline = Path(f"/proc/{int(record['pid'])}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError, KeyError):
        return False
    return "vllm.entrypoints.openai.api_server" in cmdline and str(record.get("model_dir", "")) in cmdline


def merged_servers() -> list[dict]:
    """The merged-weights servers this home started that still run (records of the others are removed)."""
    found = []
    for path in sorted(_merged_records().glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = {}
        if not _ours(record):
            path.unlink(missing_ok=True)
            continue
        found.append({**record, "record": str(path)})
    return found


def stop_merged(url: str, timeout_s: float = 30.0) -> bool:
    """Stop the merged-weights server at ``url`` (its whole process group); False if none of ours runs there."""
    record = next((r for r in merged_servers() if r["url"] == url.rstrip("/").removesuffix("/v1")), None)
    if record is None:
        return False
    pid = int(record["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # the leader gone, or not: nothing of the group stays
    _alive(pid)
    Path(record["record"]).unlink(missing_ok=True)
    return True


def stop_unused_merged(named_urls: set[str]) -> list[str]:
    """Stop the merged-weights servers whose URL no entry of ``models.json`` names; returns the names stopped."""
    wanted = {u.rstrip("/").removesuffix("/v1") for u in named_urls}
    stopped = []
    for record in merged_servers():
        if record["url"] not in wanted and stop_merged(record["url"]):
            stopped.append(record["name"])
    return stopped


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs; reaps it when it is this process's exited child."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

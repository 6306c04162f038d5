"""The model in its own supervised process (worker.ProcessBackend), on the shipped SmolLM2-135M GGUF.

Answers stream back from the child; killing the child mid-answer fails that answer at once (so the gateway
falls back) and a new child takes the next request; an abandoned stream is stopped without a restart; the
model is loaded in the child only; close() leaves no process behind.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from homegrown.gateway.backends import (
    BackendError,
    BackendTimeout,
    LlamaCppBackend,
    build_backend,
    find_base_gguf,
)
from homegrown.gateway.schemas import ChatCompletionRequest
from homegrown.gateway.settings import GatewaySettings, ModelSpec
from homegrown.gateway.worker import ProcessBackend, WorkerDied

pytestmark = pytest.mark.timeout(300)


def ask(text: str, max_tokens: int = 8, temperature: float = 0.0) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="homegrown:worker", messages=[{"role": "user", "content": text}],
                                 max_tokens=max_tokens, temperature=temperature)


def start(timeout_s: float = 60) -> ProcessBackend:
    return ProcessBackend(find_base_gguf(), n_ctx=512, n_threads=1, name="homegrown:worker", timeout_s=timeout_s)


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def wait_for_worker(backend: ProcessBackend, not_pid: int, limit_s: float = 60) -> dict:
    give_up_at = time.monotonic() + limit_s
    while time.monotonic() < give_up_at:
        info = backend.describe()["worker"]
        if info["up"] and info["pid"] != not_pid:
            return info
        time.sleep(0.1)
    raise AssertionError(f"the worker did not come back within {limit_s}s: {backend.describe()}")


@pytest.fixture(scope="module")
def worker() -> Iterator[ProcessBackend]:
    backend = start()
    yield backend
    backend.close()


def test_completion_and_stream_come_from_the_child(worker: ProcessBackend):
    answer = worker.complete(ask("Say hello."))
    assert answer.text.strip() and answer.completion_tokens > 0 and answer.prompt_tokens > 0
    chunks = list(worker.stream(ask("Name a colour.")))
    assert chunks[-1].finish_reason in ("stop", "length") and chunks[-1].completion_tokens
    assert "".join(chunk.text for chunk in chunks).strip()
    info = worker.describe()["worker"]
    assert info["up"] and info["pid"] != os.getpid()
    if Path("/proc/self/maps").exists():  # llama.cpp maps the model file: only the child has it
        model = str(find_base_gguf())
        assert model not in Path("/proc/self/maps").read_text()
        assert model in Path(f"/proc/{info['pid']}/maps").read_text()


def test_killing_the_child_mid_answer_fails_that_answer_fast_and_the_next_one_succeeds(worker: ProcessBackend):
    before = worker.describe()["worker"]
    chunks = worker.stream(ask("Write a long story about a dragon.", max_tokens=400, temperature=1.0))
    assert next(chunks).text is not None  # generation is under way
    os.kill(before["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    with pytest.raises(WorkerDied, match="killed by SIGKILL") as died:
        for _ in chunks:
            pass
    assert time.monotonic() - killed_at < 5
    assert isinstance(died.value, BackendError) and died.value.kind == "worker_died"

    after = wait_for_worker(worker, not_pid=before["pid"])
    assert after["restarts"] == before["restarts"] + 1 and after["last_exit"] == "killed by SIGKILL"
    assert worker.complete(ask("Say hello.")).text.strip()
    assert not is_running(before["pid"])


def test_a_request_during_the_restart_waits_for_the_new_child(worker: ProcessBackend):
    pid = worker.describe()["worker"]["pid"]
    os.kill(pid, signal.SIGABRT)  # what a failed GGML_ASSERT does
    give_up_at = time.monotonic() + 10
    while worker.describe()["worker"]["pid"] == pid and time.monotonic() < give_up_at:
        time.sleep(0.01)  # until the supervisor has seen the death; it then restarts after a backoff
    answer = worker.complete(ask("Say hello."))
    assert answer.text.strip()
    info = worker.describe()["worker"]
    assert info["pid"] != pid and info["last_exit"] == "killed by SIGABRT"


def test_an_abandoned_stream_is_stopped_without_a_restart(worker: ProcessBackend):
    pid = worker.describe()["worker"]["pid"]
    chunks = worker.stream(ask("Write a long story about a dragon.", max_tokens=400, temperature=1.0))
    next(chunks)
    chunks.close()  # the client went away
    started = time.monotonic()
    assert worker.complete(ask("Say hello.")).text.strip()
    assert time.monotonic() - started < 10
    assert worker.describe()["worker"]["pid"] == pid


def test_waiting_for_a_busy_model_counts_against_the_timeout():
    backend = start(timeout_s=1.5)
    try:
        holder = backend.stream(ask("Write a long story about a dragon.", max_tokens=400, temperature=1.0))
        next(holder)  # holds the model
        errors: list[Exception] = []

        def second() -> None:
            try:
                backend.complete(ask("Say hello."))
            except BackendError as exc:
                errors.append(exc)

        thread = threading.Thread(target=second)
        started = time.monotonic()
        thread.start()
        thread.join(timeout=10)
        assert errors and isinstance(errors[0], BackendTimeout)
        assert time.monotonic() - started < 5
        holder.close()
    finally:
        backend.close()


def test_close_leaves_no_child_process():
    backend = start()
    pid = backend.describe()["worker"]["pid"]
    assert is_running(pid)
    backend.close()
    assert not is_running(pid)
    assert not [child for child in multiprocessing.active_children() if child.pid == pid]
    with pytest.raises(BackendError, match="closed"):
        backend.complete(ask("Say hello."))


def test_a_model_that_cannot_load_fails_the_constructor_and_leaves_nothing(tmp_path: Path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    before = {child.pid for child in multiprocessing.active_children()}
    with pytest.raises((ValueError, RuntimeError)):
        ProcessBackend(broken, n_ctx=512, n_threads=1, timeout_s=10)
    assert {child.pid for child in multiprocessing.active_children()} <= before
    with pytest.raises(FileNotFoundError):
        ProcessBackend(tmp_path / "missing.gguf")


def test_build_backend_runs_gguf_models_in_a_worker_unless_inline(hg_home: Path):
    spec = ModelSpec(name="homegrown:worker", gguf_path=str(find_base_gguf()))
    process = build_backend(spec, GatewaySettings(n_ctx=512, n_threads=1))
    try:
        assert isinstance(process, ProcessBackend) and process.describe()["worker"]["up"]
    finally:
        process.close()
    inline = build_backend(spec, GatewaySettings(n_ctx=512, n_threads=1, model_worker="inline"))
    try:
        assert isinstance(inline, LlamaCppBackend)
    finally:
        inline.close()

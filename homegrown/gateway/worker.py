"""A local GGUF model served from a supervised child process, so that a llama.cpp crash costs one request.

:class:`ProcessBackend` is a :class:`~homegrown.gateway.backends.Backend` whose model lives in a child
process (``multiprocessing``, "spawn" start method): the child loads a
:class:`~homegrown.gateway.backends.LlamaCppBackend` and answers one request at a time over a pipe,
streaming :class:`~homegrown.gateway.backends.StreamChunk` objects back. The gateway process never loads
the model.

If the child dies (an abort or segfault inside llama.cpp, the OOM killer, a ``kill -9``), the request in
flight raises :class:`WorkerDied` (a ``BackendError``, so the gateway falls back), and a supervisor thread
starts a new child in the background, waiting 0.5 s, then longer (doubling up to 30 s) while new children
keep dying young. Requests that arrive meanwhile wait for it, and the wait counts against ``timeout_s``.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from homegrown.gateway.backends import (
    BackendError,
    BackendTimeout,
    Completion,
    PromptTooLong,
    StreamChunk,
    collect,
)
from homegrown.gateway.schemas import ChatCompletionRequest

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 300.0  # loading a model from a cold disk
CANCEL_GRACE_S = 5.0  # how long a child may take to stop an answer nobody reads any more
HANG_GRACE_S = 10.0  # past the request's deadline, a silent child is taken for hung and killed
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
HEALTHY_AFTER_S = 30.0  # a child that lived this long resets the backoff


class WorkerDied(BackendError):
    """The model's child process died while answering (or before it could)."""

    kind = "worker_died"


_ERRORS: dict[str, type[BackendError]] = {
    "timeout": BackendTimeout, "context_length": PromptTooLong, "worker_died": WorkerDied}


@dataclass
class _Worker:
    process: Any  # multiprocessing.Process (spawn context)
    conn: Connection
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int | None:
        return self.process.pid


class ProcessBackend:
    """A GGUF model served by llama.cpp in a supervised child process, one request at a time.

    Takes the arguments of :class:`~homegrown.gateway.backends.LlamaCppBackend`. The constructor returns once
    the child has loaded the model and raises what loading raised (``FileNotFoundError``, ``ValueError``,
    ``RuntimeError``). ``describe()`` adds ``worker``: whether it is up, its pid, how often it was restarted
    and why it last ended.
    """

    kind = "llama.cpp"

    def __init__(
        self,
        gguf_path: Path | str,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        *,
        name: str | None = None,
        timeout_s: float = 60.0,
        repack: bool = False,
        adapters: Mapping[str, Path | str] | None = None,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
    ):
        self.gguf_path = Path(gguf_path)
        if not self.gguf_path.is_file():
            raise FileNotFoundError(f"GGUF model file not found: {self.gguf_path}")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.name = name or self.gguf_path.stem
        self.n_ctx = n_ctx
        self.timeout_s = timeout_s
        self.startup_timeout_s = startup_timeout_s
        self._config = {"gguf_path": str(self.gguf_path), "n_ctx": n_ctx, "n_threads": n_threads,
                        "name": self.name, "timeout_s": timeout_s, "repack": repack,
                        "adapters": {str(k): str(v) for k, v in (adapters or {}).items()}}
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()  # one request at a time, as llama.cpp serves them
        self._state = threading.Condition()  # guards the fields below; notified when the worker changes
        self._closing = threading.Event()
        self._restarts = 0
        self._last_exit: str | None = None
        self._last_error: str | None = None
        self._worker: _Worker | None = self._start_worker()
        self._supervisor = threading.Thread(target=self._supervise, name=f"model-supervisor-{self.name}",
                                            daemon=True)
        self._supervisor.start()

    # -- the Backend protocol ------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        with self._state:
            worker = self._worker
            info = {"mode": "process", "up": worker is not None and worker.process.is_alive(),
                    "pid": worker.pid if worker else None, "restarts": self._restarts,
                    "last_exit": self._last_exit, "last_error": self._last_error}
        out = {"name": self.name, "backend": self.kind, "source": str(self.gguf_path), "n_ctx": self.n_ctx,
               "worker": info}
        if self._config["adapters"]:
            out["adapters"] = dict(sorted(self._config["adapters"].items()))
        return out

    @property
    def adapter_names(self) -> list[str]:
        return sorted(self._config["adapters"])

    def complete(self, request: ChatCompletionRequest) -> Completion:
        return collect(self.stream(request))

    def stream(self, request: ChatCompletionRequest) -> Iterator[StreamChunk]:
        deadline = time.monotonic() + self.timeout_s
        if not self._lock.acquire(timeout=self.timeout_s):
            raise BackendTimeout(f"{self.name}: waited {self.timeout_s:.0f}s for the model (busy)")
        try:
            worker = self._ready_worker(deadline)
            yield from self._answer(worker, request, deadline)
        finally:
            self._lock.release()

    def close(self) -> None:
        """Stop the supervisor and the child (waits for a request in progress, up to ``timeout_s``)."""
        if self._closing.is_set():
            return
        self._closing.set()
        got_lock = self._lock.acquire(timeout=self.timeout_s)
        try:
            with self._state:
                worker, self._worker = self._worker, None
                self._state.notify_all()
            if worker is not None:
                _stop(worker)
            self._supervisor.join(timeout=self.startup_timeout_s)
        finally:
            if got_lock:
                self._lock.release()

    # -- one request ---------------------------------------------------------------------------------------

    def _ready_worker(self, deadline: float) -> _Worker:
        """The live worker, waiting (until ``deadline``) while the supervisor restarts a dead one."""
        with self._state:
            while True:
                if self._closing.is_set():
                    raise BackendError(f"{self.name}: backend is closed")
                worker = self._worker
                if worker is not None and worker.process.is_alive():
                    return worker
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WorkerDied(f"{self.name}: the model worker is restarting "
                                     f"({self._last_exit or 'not up yet'}); no answer within {self.timeout_s:.0f}s")
                self._state.wait(timeout=min(left, 1.0))

    def _answer(self, worker: _Worker, request: ChatCompletionRequest, deadline: float) -> Iterator[StreamChunk]:
        try:
            worker.conn.send(("generate", request, deadline - time.monotonic()))
        except (OSError, ValueError) as exc:
            raise self._died(worker, "before the request reached it") from exc
        finished = False
        try:
            while True:
                message = self._receive(worker, deadline + HANG_GRACE_S)
                if message[0] == "chunk":
                    yield message[1]
                elif message[0] == "done":
                    finished = True
                    return
                elif message[0] == "error":
                    finished = True
                    _, kind, text = message
                    raise _ERRORS.get(kind, BackendError)(text)
        except (WorkerDied, BackendTimeout):  # the child is dead or was killed: nothing to cancel
            finished = True
            raise
        finally:
            if not finished:  # the caller stopped reading (client gone) or the child hung: stop the answer
                self._cancel(worker)

    def _receive(self, worker: _Worker, give_up_at: float) -> tuple:
        """The child's next message; WorkerDied when it dies, BackendTimeout (child killed) when it hangs."""
        ready = wait([worker.conn, worker.process.sentinel], timeout=max(0.0, give_up_at - time.monotonic()))
        if not ready:
            self._kill(worker, "hung")
            raise BackendTimeout(f"{self.name}: the model worker (pid {worker.pid}) did not answer within "
                                 f"{self.timeout_s:.0f}s; it was restarted")
        try:
            if worker.conn.poll():
                return worker.conn.recv()
        except (EOFError, OSError):
            pass
        raise self._died(worker, "while answering")

    def _cancel(self, worker: _Worker) -> None:
        """Ask the child to stop the answer in progress and wait for it to say so; kill it if it does not."""
        try:
            worker.conn.send(("cancel",))
            give_up_at = time.monotonic() + CANCEL_GRACE_S
            while True:
                ready = wait([worker.conn], timeout=max(0.0, give_up_at - time.monotonic()))
                if not ready:
                    break
                if worker.conn.recv()[0] in ("done", "error", "cancelled"):
                    return
        except (EOFError, OSError, ValueError):
            pass
        self._kill(worker, "did not stop an abandoned answer")

    def _died(self, worker: _Worker, when: str) -> WorkerDied:
        worker.process.join(timeout=2)
        how = _exit_description(_exitcode(worker.process))
        log.error("model worker %s (pid %s) died %s: %s", self.name, worker.pid, when, how)
        return WorkerDied(f"{self.name}: the model worker (pid {worker.pid}) died {when} ({how}); "
                          "it is being restarted")

    def _kill(self, worker: _Worker, why: str) -> None:
        log.error("killing model worker %s (pid %s): %s", self.name, worker.pid, why)
        with self._state:
            self._last_error = f"killed: {why}"
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=5)

    # -- supervision ---------------------------------------------------------------------------------------

    def _start_worker(self) -> _Worker:
        """Start a child and wait until its model is loaded; raises what loading raised."""
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(target=_serve, args=(child_end, self._config), daemon=True,
                                        name=f"homegrown-model-{self.name}")
        process.start()
        child_end.close()  # so that the child's death reads as end-of-file here
        worker = _Worker(process, parent_end)
        give_up_at = time.monotonic() + self.startup_timeout_s
        try:
            while not wait([parent_end, process.sentinel], timeout=0.5):
                if self._closing.is_set():
                    raise RuntimeError(f"{self.name}: closed while the model worker was starting")
                if time.monotonic() > give_up_at:
                    raise RuntimeError(f"{self.name}: the model worker did not load the model within "
                                       f"{self.startup_timeout_s:.0f}s")
            try:
                message = parent_end.recv()
            except (EOFError, OSError):
                process.join(timeout=2)
                raise RuntimeError(f"{self.name}: the model worker died while loading the model "
                                   f"({_exit_description(_exitcode(process))})") from None
            if message[0] == "failed":
                _, error_type, text = message
                raise {"FileNotFoundError": FileNotFoundError, "ValueError": ValueError}.get(
                    error_type, RuntimeError)(text)
        except BaseException:
            _stop(worker)
            raise
        log.info("model worker %s up (pid %s)", self.name, process.pid)
        return worker

    def _supervise(self) -> None:
        """Watch the child; when it dies, start another after a backoff, until :meth:`close`."""
        young_deaths = 0
        while not self._closing.is_set():
            with self._state:
                worker = self._worker
            if worker is not None:
                while not self._closing.is_set() and not wait([worker.process.sentinel], timeout=0.5):
                    pass
                if self._closing.is_set():
                    return
                worker.process.join(timeout=5)
                lived = time.monotonic() - worker.started
                young_deaths = 0 if lived >= HEALTHY_AFTER_S else young_deaths + 1
                with self._state:
                    if self._worker is worker:
                        self._worker = None
                    self._last_exit = _exit_description(_exitcode(worker.process))
                    self._state.notify_all()
                worker.conn.close()
                log.error("model worker %s (pid %s) ended (%s); restarting", self.name, worker.pid,
                          self._last_exit)
            delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, young_deaths - 1))
            if self._closing.wait(delay):
                return
            try:
                new = self._start_worker()
            except Exception as exc:  # noqa: BLE001 (a failed start is retried after a longer backoff)
                log.error("model worker %s could not start: %s", self.name, exc)
                with self._state:
                    self._last_error = str(exc)
                young_deaths += 1
                continue
            with self._state:
                if self._closing.is_set():
                    _stop(new)
                    return
                self._worker = new
                self._restarts += 1
                self._state.notify_all()


def _stop(worker: _Worker) -> None:
    """Ask a child to exit, then terminate and kill it if it does not; never leaves it running."""
    try:
        worker.conn.send(("stop",))
    except (OSError, ValueError):
        pass
    worker.process.join(timeout=5)
    if worker.process.is_alive():
        worker.process.terminate()
        worker.process.join(timeout=2)
    if worker.process.is_alive():
        worker.process.kill()
        worker.process.join(timeout=2)
    worker.conn.close()


def _exitcode(process: Any, patience_s: float = 2.0) -> int | None:
    """The exit code of an ended child. Two threads may join the same child (the supervisor and the request
    that saw it die); the one that does not reap it reads None until the other has stored the code."""
    deadline = time.monotonic() + patience_s
    while process.exitcode is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return process.exitcode


def _exit_description(exitcode: int | None) -> str:
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


# -- the child ---------------------------------------------------------------------------------------------


def _serve(conn: Connection, config: dict[str, Any]) -> None:
    """The child process: load the model, then answer ``("generate", request, seconds)`` messages until
    ``("stop",)`` or until the gateway's end of the pipe closes."""
    from homegrown.gateway.backends import LlamaCppBackend

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is for the gateway, which stops us
    try:
        backend = LlamaCppBackend(config["gguf_path"], config["n_ctx"], config["n_threads"], name=config["name"],
                                  timeout_s=config["timeout_s"], repack=config["repack"],
                                  adapters=config["adapters"])
    except Exception as exc:  # noqa: BLE001 (reported to the gateway, which raises it)
        conn.send(("failed", type(exc).__name__, str(exc)))
        return
    conn.send(("ready",))
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return
            if message[0] == "stop":
                return
            if message[0] == "generate":
                _generate(conn, backend, message[1], message[2])
            # a "cancel" that arrives after its answer ended needs nothing
    finally:
        backend.close()


def _generate(conn: Connection, backend: Any, request: ChatCompletionRequest, seconds: float) -> None:
    backend.timeout_s = max(seconds, 0.001)  # the time the request has left, its wait in the gateway spent
    chunks = backend.stream(request)
    try:
        for chunk in chunks:
            conn.send(("chunk", chunk))
            if conn.poll() and conn.recv()[0] == "cancel":
                conn.send(("cancelled",))
                return
        conn.send(("done",))
    except BackendError as exc:
        conn.send(("error", exc.kind, str(exc)))
    except Exception as exc:  # anything else still ends this answer, not the worker
        log.exception("model worker: the answer failed")
        conn.send(("error", "error", f"{backend.name}: {type(exc).__name__}: {exc}"))
    finally:
        chunks.close()

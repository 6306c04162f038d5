"""Answers a GGUF model already gave, kept so that a later eval does not generate them again.

Every retrain evaluates the base model and the champion beside the new candidate, on a test split that
mostly holds the examples of the last eval (splits are assigned by a hash of the example, so an example
stays in its split as the data grows). Neither file changed since, so their greedy answers to the same
requests are the answers they gave then: this cache returns them instead of decoding them again, and the
eval's time goes to the candidate and the new examples.

An entry is keyed by the model (SHA-256 of the GGUF file, and of the LoRA file when one is applied), the
engine (llama-cpp-python's version and the source of every module that shapes an answer: prompt rendering,
grammars, tool-call parsing, the batched decoder; :data:`ENGINE_MODULES`) and the whole request (messages,
token budget, ``response_format``, tools, in their order). A cached answer comes back without its timing
(``latency_s`` and ``completion_tokens`` are ``None``), so a model's latency and throughput figures come only
from answers generated in this run. With kernels whose results depend on which answers share a batch (llama.cpp's repacked
``q4_k_m`` weights on CPUs without AMX; see :mod:`homegrown.evaluation.batched`), a cached answer is the one
the model gave in that earlier batch: an answer the model really gives, not necessarily the one a fresh batch
would produce.

The cache is a SQLite file, ``<HOMEGROWN_HOME>/cache/eval-answers.sqlite`` (a machine's own: nothing shares
it; readable by its owner only, and deleted by ``homegrown forget``, since answers to prompts from the logs
may repeat them); ``HOMEGROWN_ANSWER_CACHE=0`` turns it off. It is best-effort: a cache that cannot be read
or written is logged and the answers are generated.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Self

from homegrown import paths
from homegrown.evaluation.runner import Answer

log = logging.getLogger(__name__)

# The modules whose code decides what a model answers to a request; their source is part of every key.
ENGINE_MODULES = (
    "homegrown.evaluation.answer_cache", "homegrown.evaluation.batched", "homegrown.evaluation.runner",
    "homegrown.training.llama_cpp_util", "homegrown.training.chat", "homegrown.gateway.backends",
)


def enabled() -> bool:
    return os.environ.get("HOMEGROWN_ANSWER_CACHE", "1").strip().lower() not in {"0", "false", "no", "off"}


def cache_path() -> Path:
    return paths.home() / "cache" / "eval-answers.sqlite"


def file_digest(path: Path) -> str:
    """SHA-256 of ``path``, computed once per (path, size, modification time) in this process."""
    stat = path.stat()
    return _digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


@lru_cache(maxsize=1)
def engine_digest() -> str:
    """llama-cpp-python's version and the source of :data:`ENGINE_MODULES`: a change to either is a new engine."""
    import llama_cpp

    sha = hashlib.sha256(str(getattr(llama_cpp, "__version__", "?")).encode())
    for name in ENGINE_MODULES:
        spec = importlib.util.find_spec(name)
        sha.update(Path(spec.origin).read_bytes() if spec and spec.origin else name.encode())
    return sha.hexdigest()


def model_key(gguf: Path, lora: Path | None) -> str:
    parts = [engine_digest(), file_digest(gguf), file_digest(lora) if lora else "-"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def request_key(request: Sequence[Any]) -> str:
    """``(messages, max_tokens, response_format, tools)`` as a digest; key order is kept (a schema's property
    order and the order of the tools shape the prompt and the grammar)."""
    messages, max_tokens, response_format, tools = request
    payload = json.dumps([messages, max_tokens, response_format, tools], ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class AnswerCache:
    """The SQLite table of answers; one connection per use (``with AnswerCache() as cache``)."""

    def __init__(self, path: Path | None = None):
        self.path = path or cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            from homegrown.gateway.logstore import PRIVATE_FILE_MODE

            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE))
        self.db = sqlite3.connect(self.path, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS answer_texts (model TEXT NOT NULL, request TEXT NOT NULL, "
                        "text TEXT NOT NULL, PRIMARY KEY (model, request))")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.db.close()

    def get(self, model: str, requests: list[str]) -> dict[str, Answer]:
        """The cached answers among ``requests``, without timings: an earlier run's latency would mix into this
        run's performance figures."""
        found: dict[str, Answer] = {}
        for start in range(0, len(requests), 500):
            chunk = requests[start:start + 500]
            rows = self.db.execute(
                f"SELECT request, text FROM answer_texts WHERE model = ? AND request IN "
                f"({','.join('?' * len(chunk))})", [model, *chunk]).fetchall()
            found.update({request: Answer(text=text) for request, text in rows})
        return found

    def put(self, model: str, answers: dict[str, Answer]) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO answer_texts VALUES (?, ?, ?)",
                                [(model, key, a.text) for key, a in answers.items()])


def cached_answers(gguf: Path, lora: Path | None, requests: list[tuple],
                   generate: Callable[[list[tuple]], list[Answer]]) -> list[Answer]:
    """``generate(requests)``, except for the requests this model already answered (see the module docstring)."""
    if not enabled() or not requests:
        return generate(requests)
    model = model_key(gguf, lora)
    keys = [request_key(r) for r in requests]
    known: dict[str, Answer] = {}
    try:
        with AnswerCache() as cache:
            known = cache.get(model, sorted(set(keys)))
    except sqlite3.Error as exc:
        log.warning(f"eval answer cache {cache_path()} unreadable ({exc}); generating every answer")
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key not in known:
            first.setdefault(key, i)  # a request asked twice is answered once
    fresh = dict(zip(first, generate([requests[i] for i in first.values()]), strict=True)) if first else {}
    if fresh:
        try:
            with AnswerCache() as cache:
                cache.put(model, fresh)
        except sqlite3.Error as exc:
            log.warning(f"eval answer cache {cache_path()} not written ({exc}); the answers are kept for this run")
    return [known.get(key) or fresh[key] for key in keys]


def forget_answers() -> bool:
    """Delete the cache (``homegrown forget``: answers may repeat what the logs said); True when there was one."""
    found = False
    for suffix in ("", "-wal", "-shm"):
        path = cache_path().with_name(cache_path().name + suffix)
        if path.exists():
            path.unlink()
            found = True
    return found

"""Answers a GGUF model already gave, kept so that a later eval does not generate them again.

Every retrain evaluates the base model and the champion beside the new candidate, on a test split that
mostly holds the examples of the last eval (splits are assigned by a hash of the example, so an example
stays in its split as the data grows). Neither file changed since, so their greedy answers to the same
requests are the answers they gave then: this cache returns them instead of decoding them again, and the
eval's time goes to the candidate and the new examples.

An entry is keyed by the model (SHA-256 of the GGUF file, and of the LoRA file when one is applied), the
engine (llama-cpp-python's version and :data:`ENGINE`, bumped when the decoding semantics of
:mod:`homegrown.evaluation.batched` change) and the whole request (messages, token budget,
``response_format``, tools). An answer comes back with the latency and token count measured when it was
generated. With kernels whose results depend on which answers share a batch (llama.cpp's repacked
``q4_k_m`` weights on CPUs without AMX; see :mod:`homegrown.evaluation.batched`), a cached answer is the one
the model gave in that earlier batch: an answer the model really gives, not necessarily the one a fresh batch
would produce.

The cache is a SQLite file, ``<HOMEGROWN_HOME>/cache/eval-answers.sqlite`` (a machine's own: nothing shares
it); ``HOMEGROWN_ANSWER_CACHE=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Self

from homegrown import paths
from homegrown.evaluation.runner import Answer

ENGINE = "batched-1"  # bump when homegrown.evaluation.batched answers the same request differently


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


def model_key(gguf: Path, lora: Path | None) -> str:
    import llama_cpp

    parts = [ENGINE, getattr(llama_cpp, "__version__", "?"), file_digest(gguf), file_digest(lora) if lora else "-"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def request_key(request: Sequence[Any]) -> str:
    """``(messages, max_tokens, response_format, tools)`` as a digest."""
    messages, max_tokens, response_format, tools = request
    payload = json.dumps([messages, max_tokens, response_format, tools], sort_keys=True, ensure_ascii=False,
                         default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class AnswerCache:
    """The SQLite table of answers; one connection per use (``with AnswerCache() as cache``)."""

    def __init__(self, path: Path | None = None):
        self.path = path or cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS answers (model TEXT NOT NULL, request TEXT NOT NULL, "
                        "text TEXT NOT NULL, latency_s REAL, completion_tokens INTEGER, "
                        "PRIMARY KEY (model, request))")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.db.close()

    def get(self, model: str, requests: list[str]) -> dict[str, Answer]:
        found: dict[str, Answer] = {}
        for start in range(0, len(requests), 500):
            chunk = requests[start:start + 500]
            rows = self.db.execute(
                f"SELECT request, text, latency_s, completion_tokens FROM answers WHERE model = ? AND request IN "
                f"({','.join('?' * len(chunk))})", [model, *chunk]).fetchall()
            found.update({r: Answer(text=t, latency_s=lat, completion_tokens=n) for r, t, lat, n in rows})
        return found

    def put(self, model: str, answers: dict[str, Answer]) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?)",
                [(model, key, a.text, a.latency_s, a.completion_tokens) for key, a in answers.items()])


def cached_answers(gguf: Path, lora: Path | None, requests: list[tuple],
                   generate: Callable[[list[tuple]], list[Answer]]) -> list[Answer]:
    """``generate(requests)``, except for the requests this model already answered (see the module docstring)."""
    if not enabled() or not requests:
        return generate(requests)
    model = model_key(gguf, lora)
    keys = [request_key(r) for r in requests]
    with AnswerCache() as cache:
        known = cache.get(model, sorted(set(keys)))
        missing = [i for i, key in enumerate(keys) if key not in known]
        fresh = {}
        if missing:
            first = {}
            for i in missing:
                first.setdefault(keys[i], i)  # a request asked twice is answered once
            order = list(first.values())
            fresh = dict(zip((keys[i] for i in order), generate([requests[i] for i in order]), strict=True))
            cache.put(model, fresh)
    return [known.get(key) or fresh[key] for key in keys]

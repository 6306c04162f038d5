"""Per-row work of the data half on every core: a function over chunks of rows, results in input order.

The rows are handed to forked worker processes by inheritance (the parent sets them aside before the
pool forks), so only chunk bounds travel to the workers and only each chunk's result travels back.
The result is the chunks' results in order, so it never depends on how many workers ran or how the
rows were cut, provided ``function`` treats each row on its own (or each group of rows that a caller
keeps inside one chunk).

``HOMEGROWN_WORKERS`` sets the number of processes (default: the cores this process may use; ``1``
runs everything in this process). Inputs smaller than ``min_rows`` are not worth a fork and run here.
"""

from __future__ import annotations

import bisect
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_CHUNK_ROWS = 10_000
DEFAULT_MIN_ROWS = 4_000

# What the forked workers read: (function, rows). Set only while a pool is running.
_WORK: tuple[Callable[[Sequence[Any]], Any], Sequence[Any]] | None = None


def workers() -> int:
    """How many processes ``map_chunks`` uses: ``HOMEGROWN_WORKERS``, else the usable cores."""
    configured = os.environ.get("HOMEGROWN_WORKERS", "").strip()
    if configured:
        try:
            count = int(configured)
        except ValueError:
            raise ValueError(f"HOMEGROWN_WORKERS must be a whole number, got {configured!r}") from None
        if count < 1:
            raise ValueError(f"HOMEGROWN_WORKERS must be at least 1, got {count}")
        return count
    return usable_cpus()


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity on Linux, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity
        return os.cpu_count() or 1


def chunk_bounds(n: int, chunk_rows: int, cuts: Sequence[int] | None = None) -> list[tuple[int, int]]:
    """``[start, end)`` ranges of about ``chunk_rows`` rows covering ``range(n)``.

    ``cuts``, when given, are the only positions a chunk may end at (e.g. where a new conversation
    starts), so rows that must stay together do.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    bounds, start = [], 0
    allowed = sorted(set(cuts) | {n}) if cuts is not None else None
    while start < n:
        end = min(n, start + chunk_rows)
        if allowed is not None:
            end = allowed[bisect.bisect_left(allowed, end)]
        bounds.append((start, end))
        start = end
    return bounds


def map_chunks(
    function: Callable[[Sequence[Any]], T],
    rows: Sequence[Any],
    *,
    chunk_rows: int | None = None,
    min_rows: int | None = None,
    cuts: Sequence[int] | None = None,
) -> list[T]:
    """``[function(rows[a:b]) for a, b in chunk_bounds(...)]``, the chunks spread over ``workers()`` processes.

    ``rows`` is anything that slices (a list, a NumPy array). ``function`` reaches the workers by
    inheritance too, so a closure or a ``functools.partial`` is fine; its results are pickled back.
    ``chunk_rows`` and ``min_rows`` default to ``DEFAULT_CHUNK_ROWS`` and ``DEFAULT_MIN_ROWS``.
    """
    global _WORK
    bounds = chunk_bounds(len(rows), chunk_rows or DEFAULT_CHUNK_ROWS, cuts)
    count = min(workers(), len(bounds))
    small = len(rows) < (DEFAULT_MIN_ROWS if min_rows is None else min_rows)
    if count <= 1 or small or "fork" not in multiprocessing.get_all_start_methods():
        return [function(rows[start:end]) for start, end in bounds]
    if _WORK is not None:
        raise RuntimeError("map_chunks is not re-entrant")
    _WORK = (function, rows)
    try:
        with ProcessPoolExecutor(max_workers=count, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(_run_chunk, bounds))
    finally:
        _WORK = None


def _run_chunk(bounds: tuple[int, int]) -> Any:
    assert _WORK is not None, "a worker without work: the pool must be forked"
    function, rows = _WORK
    start, end = bounds
    return function(rows[start:end])

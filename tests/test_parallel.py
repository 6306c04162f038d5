"""Per-row stages on several processes (homegrown.data.parallel) give what one process gives."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from homegrown.data import parallel
from homegrown.data.curate import curate
from homegrown.data.ingest import ingest, load_interactions, load_optout
from homegrown.data.pii_audit import canary_frame, scan_examples
from homegrown.data.quality import QualityPolicy
from homegrown.data.splits import assign_splits, cross_split_duplicates, leakage_report
from homegrown.demo.generate import generate_demo_logs


def _pid_chunk(rows: list[int]) -> tuple[int, list[int]]:
    return os.getpid(), [r * r for r in rows]


@pytest.fixture
def many_small_chunks(monkeypatch):
    """Two workers and chunks of a few rows, so that even a small input is cut and forked."""
    monkeypatch.setenv("HOMEGROWN_WORKERS", "2")
    monkeypatch.setattr(parallel, "DEFAULT_CHUNK_ROWS", 7)
    monkeypatch.setattr(parallel, "DEFAULT_MIN_ROWS", 0)


def test_map_chunks_runs_on_several_processes_in_order(many_small_chunks) -> None:
    results = parallel.map_chunks(_pid_chunk, list(range(100)))
    assert [v for _, values in results for v in values] == [r * r for r in range(100)]
    assert len(results) == 15 and os.getpid() not in {pid for pid, _ in results}  # cut, and run in workers


def test_one_worker_runs_here(monkeypatch) -> None:
    monkeypatch.setenv("HOMEGROWN_WORKERS", "1")
    assert {pid for pid, _ in parallel.map_chunks(_pid_chunk, list(range(50_000)))} == {os.getpid()}


def test_chunks_end_only_at_the_allowed_cuts() -> None:
    assert parallel.chunk_bounds(10, 3) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert parallel.chunk_bounds(10, 3, cuts=[5, 8]) == [(0, 5), (5, 8), (8, 10)]
    assert parallel.chunk_bounds(0, 3) == []


@pytest.mark.parametrize("value", ["0", "two"])
def test_bad_worker_count_is_refused(monkeypatch, value: str) -> None:
    monkeypatch.setenv("HOMEGROWN_WORKERS", value)
    with pytest.raises(ValueError, match="HOMEGROWN_WORKERS"):
        parallel.workers()


def _curated(input_dir, db_path):
    ingest(input_dir, db_path)
    empty = pd.DataFrame(columns=["example_id", "org_id", "generator"])
    return curate(load_interactions(db_path), empty, QualityPolicy(), load_optout(db_path), canaries=canary_frame())


def _plain(table: pd.DataFrame) -> list[tuple]:
    return [
        (e, k, r, json.dumps(m, sort_keys=True, default=str), json.dumps(list(s)))
        for e, k, r, m, s in zip(table["example_id"], table["keep"], table["reason"], table["messages"],
                                 table["source_ids"])
    ]


def test_curation_and_split_checks_do_not_depend_on_the_workers(tmp_path, monkeypatch) -> None:
    generate_demo_logs(tmp_path / "input", seed=3, batch=0, scale=0.3)
    monkeypatch.setenv("HOMEGROWN_WORKERS", "1")
    one = _curated(tmp_path / "input", tmp_path / "one.sqlite")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOMEGROWN_WORKERS", "2")
        patch.setattr(parallel, "DEFAULT_CHUNK_ROWS", 13)
        patch.setattr(parallel, "DEFAULT_MIN_ROWS", 0)
        two = _curated(tmp_path / "input", tmp_path / "two.sqlite")
        kept = two.kept
        assignment = assign_splits(kept, {})
        # A training example copied into validation with one word changed: a near-duplicate across splits.
        source = kept[kept["conversation_id"].map(assignment) == "train"].iloc[0]
        target = next(c for c, s in assignment.items() if s == "validation")
        messages = [dict(m) for m in source["messages"]]
        messages[-1]["content"] = messages[-1]["content"] + " Thanks!"
        planted = pd.concat([kept, pd.DataFrame([{**source.to_dict(), "example_id": "planted",
                                                  "conversation_id": target, "messages": messages}])],
                            ignore_index=True)
        parallel_pairs = cross_split_duplicates(planted, assignment)
        parallel_report = leakage_report(planted, assignment)
        parallel_pii = scan_examples(kept["example_id"], kept["messages"])
    assert len(one.table) > 50 and one.stats["duplicates"] == two.stats["duplicates"]
    assert _plain(one.table) == _plain(two.table)
    assert one.public_values == two.public_values
    assert parallel_pairs == cross_split_duplicates(planted, assignment)
    assert any(p[2] == "planted" and p[3] == "validation" for p in parallel_pairs)
    assert parallel_report == leakage_report(planted, assignment)
    assert parallel_report.near_duplicates + parallel_report.exact_matches >= 1
    assert parallel_pii == scan_examples(kept["example_id"], kept["messages"])

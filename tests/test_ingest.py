"""Ingestion into the SQLite state database: accounting, newest-wins, feedback merging, increments."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import homegrown.data.ingest as ingest_module
from homegrown.data.columns import INTERACTION_COLUMNS
from homegrown.data.ingest import (
    ingest,
    load_interactions,
    load_optout,
    load_pending_feedback,
    load_quarantine,
)
from homegrown.data.sources import OptOutError


def chat(question: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def interaction(id_: str, created_at: str, answer: str = "answer", **fields) -> dict:
    return {"id": id_, "created_at": created_at, "messages": chat(f"question {id_}", answer), **fields}


def jsonl(records: list) -> bytes:
    """JSONL text; a ``str`` item is written as it is (a malformed line), ``""`` is a blank line."""
    return "".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in records).encode()


def csv_bytes(rows: list[dict], columns: list[str]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def dirty_input() -> dict[str, bytes]:
    """Files of one input location with malformed lines, duplicates and early/late feedback.

    Totals: 21 lines = 7 interactions + 4 superseded + 5 quarantined + 5 feedback events.
    """
    a_jsonl = jsonl([
        interaction("int-1", "2026-01-20T10:00:00Z", "old answer", feedback={"thumbs": 1}),     # 1 superseded
        {"feedback_for": "int-3", "created_at": "2026-01-20T11:00:00Z", "outcome": "accepted"},  # 2 before its target
        '{"id": "int-x", "created_at": ',                                                       # 3 invalid JSON
        "",                                                                                     # 4 blank: not a line
        interaction("int-2", "2026-01-20T10:00:00Z", "first"),                                  # 5 superseded (parquet)
        interaction("int-1", "2026-01-20T12:00:00+00:00", "new answer"),                        # 6 wins
        interaction("int-2", "2026-01-20T09:00:00Z", "older"),                                  # 7 superseded: older
        "[1, 2]",                                                                               # 8 not an object
        {"feedback_for": "int-1", "created_at": "2026-01-20T13:00:00Z", "thumbs": -1},          # 9 newest thumbs
        {"feedback_for": "int-1", "created_at": "2026-01-20T11:00:00Z", "thumbs": 1},           # 10 older event
        {"id": "int-y", "messages": chat("q", "a")},                                            # 11 no created_at
        interaction("int-7", "2026-01-20T10:00:00Z", "tie, read first"),                        # 12 superseded: tie
        interaction("int-7", "2026-01-20T10:00:00Z", "tie, read later", org_id="org-1",         # 13 wins
                    critic={"quality_score": 0.95}, tools=[{"type": "function", "function": {"name": "book"}}]),
    ])
    columns = ["id", "created_at", "org_id", "prompt", "response", "messages", "feedback", "feedback_for", "thumbs"]
    b_csv = csv_bytes([
        {"id": "int-3", "created_at": "2026-01-20T10:30:00Z", "prompt": "Open on Sunday?", "response": "Yes, 5-10pm",
         "feedback": json.dumps({"outcome": "rejected", "customer_rating": 5})},
        {"id": "int-4", "created_at": "2026-01-20T10:00:00Z", "org_id": "org-out",
         "messages": json.dumps(chat("Hi, it's Ann", "Hello Ann"))},
        {"id": "int-z", "created_at": "2026-01-20T10:00:00Z", "messages": "[{not json"},
        {"feedback_for": "int-2", "created_at": "2026-01-21T00:00:00Z", "thumbs": "1"},
    ], columns)
    c_parquet = parquet_bytes(pa.Table.from_pylist([
        {"id": "int-5", "created_at": "2026-01-20T10:00:00Z", "instruction": "Translate", "input": "Good evening",
         "output": "Bonsoir", "messages": None, "feedback_for": None, "thumbs": None},
        {"id": "int-2", "created_at": "2026-01-20T14:00:00Z", "messages": chat("question int-2", "newest"),
         "feedback_for": None, "thumbs": None},
        {"id": "int-w", "created_at": "2026-01-20T10:00:00Z",
         "messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "bye"}]},
        {"feedback_for": "int-99", "created_at": "2026-01-20T10:00:00Z", "thumbs": 1.0},
    ]))
    timestamps = pa.array([pd.Timestamp("2026-01-20T11:00:00", tz="Europe/Paris")], pa.timestamp("us", tz="Europe/Paris"))
    d_parquet = parquet_bytes(pa.table({"id": ["int-6"], "created_at": timestamps, "prompt": ["p"], "response": ["r"]}))
    return {
        "a.jsonl": a_jsonl, "b.csv": b_csv, "sub/c.parquet": c_parquet, "sub/d.parquet": d_parquet,
        "optout.json": json.dumps({"opted_out_orgs": ["org-out"]}).encode(), "README.txt": b"not input",
    }


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def check_dirty_result(result, db_path: Path, location_prefix: str) -> None:
    """The expectations for :func:`dirty_input`, shared by the local and the S3 test."""
    assert (result.input_lines, result.interactions, result.superseded, result.quarantined, result.feedback_events) == (
        21, 7, 4, 5, 5,
    )
    assert result.balanced
    assert result.new_lines == 21 and result.new_files == 4
    assert result.pending_feedback == 1
    assert result.opted_out_orgs == ["org-out"]
    assert [Path(path).name for path in result.skipped_files] == ["README.txt"]

    frame = load_interactions(db_path).set_index("id")
    assert list(frame.reset_index().columns) == INTERACTION_COLUMNS
    assert sorted(frame.index) == ["int-1", "int-2", "int-3", "int-4", "int-5", "int-6", "int-7"]
    answers = {id_: row["messages"][-1]["content"] for id_, row in frame.iterrows()}
    assert answers["int-1"] == "new answer"
    assert answers["int-2"] == "newest"
    assert answers["int-7"] == "tie, read later"
    assert frame.loc["int-2", "source"] == f"{location_prefix}sub/c.parquet:2"
    assert frame.loc["int-1", "source"] == f"{location_prefix}a.jsonl:6"
    assert frame.loc["int-1", "created_at"] == "2026-01-20T12:00:00.000000Z"
    assert frame.loc["int-6", "created_at"] == "2026-01-20T10:00:00.000000Z"  # 11:00 Paris time
    assert frame.loc["int-5", "messages"][0]["content"] == "Translate\n\nGood evening"
    assert frame.loc["int-4", "org_id"] == "org-out"
    assert frame.loc["int-7", "critic"] == {"quality_score": 0.95} and frame.loc["int-7", "tools"][0]["type"] == "function"
    # Absent values are None, not NaN, in columns where other rows have values.
    assert frame.loc["int-1", "critic"] is None and frame.loc["int-1", "tools"] is None
    assert frame.loc["int-1", "org_id"] is None

    # Feedback: per field, the newest event wins; inline feedback is an event at the row's created_at.
    assert frame.loc["int-1", "feedback"] == {"thumbs": -1}
    assert frame.loc["int-2", "feedback"] == {"thumbs": 1}
    assert frame.loc["int-3", "feedback"] == {"outcome": "accepted", "customer_rating": 5}
    assert frame.loc["int-5", "feedback"] == {}
    assert load_pending_feedback(db_path) == {"int-99": {"thumbs": 1}}

    quarantine = load_quarantine(db_path)
    where = [(f"{Path(file).name}:{line}", reason) for file, line, reason in
             quarantine[["file", "line", "reason"]].itertuples(index=False)]
    assert [place for place, _ in where] == ["a.jsonl:3", "a.jsonl:8", "a.jsonl:11", "b.csv:3", "c.parquet:3"]
    reasons = dict(where)
    assert reasons["a.jsonl:3"].startswith("invalid JSON")
    assert reasons["a.jsonl:8"] == "not a JSON object (got array)"
    assert reasons["a.jsonl:11"] == "missing required field 'created_at'"
    assert reasons["b.csv:3"].startswith("messages is a string that is not valid JSON")
    assert "last message must be the assistant answer" in reasons["c.parquet:3"]
    assert quarantine.loc[0, "raw"] == '{"id": "int-x", "created_at": '
    assert load_optout(db_path) == {"org-out"}


def test_dirty_input_every_line_accounted_for_once(hg_home, tmp_path):
    folder = tmp_path / "logs"
    write_files(folder, dirty_input())
    db_path = hg_home / "state.sqlite"

    result = ingest(str(folder), db_path)
    check_dirty_result(result, db_path, f"{folder.resolve()}/")

    again = ingest(str(folder), db_path)
    assert again.new_lines == 0 and again.new_files == 0 and again.updated_files == 0
    assert (again.input_lines, again.interactions, again.quarantined) == (21, 7, 5)


def test_incremental_reads_only_new_lines_and_files(hg_home, tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    db_path = hg_home / "state.sqlite"
    log = folder / "gateway.jsonl"
    log.write_bytes(jsonl([interaction(f"int-{i}", "2026-01-20T10:00:00Z") for i in range(3)]))
    first = ingest(str(folder), db_path)
    assert (first.new_lines, first.new_files, first.interactions) == (3, 1, 3)

    with log.open("ab") as handle:
        handle.write(jsonl([
            interaction("int-1", "2026-01-21T10:00:00Z", "updated"),
            {"feedback_for": "int-0", "created_at": "2026-01-21T10:00:00Z", "thumbs": 1},
        ]))
    write_files(folder, {"more.jsonl": jsonl([interaction("int-3", "2026-01-20T10:00:00Z"), "oops"])})
    second = ingest(str(folder), db_path)
    assert (second.new_lines, second.new_files, second.updated_files) == (4, 1, 1)
    assert (second.new_interactions, second.new_superseded, second.new_feedback_events, second.new_quarantined) == (
        1, 1, 1, 1,
    )
    assert (second.input_lines, second.interactions) == (7, 4) and second.balanced

    # A line being written right now (no newline yet) is left for the next call, not quarantined.
    partial = json.dumps(interaction("int-4", "2026-01-22T10:00:00Z"))
    with log.open("ab") as handle:
        handle.write(partial[:25].encode())
    third = ingest(str(folder), db_path)
    assert third.new_lines == 0 and third.held_back_bytes == 25 and third.new_quarantined == 0
    with log.open("ab") as handle:
        handle.write(partial[25:].encode() + b"\n")
    fourth = ingest(str(folder), db_path)
    assert (fourth.new_lines, fourth.new_interactions, fourth.held_back_bytes) == (1, 1, 0)

    frame = load_interactions(db_path).set_index("id")
    assert frame.loc["int-1", "messages"][-1]["content"] == "updated"
    assert frame.loc["int-0", "feedback"] == {"thumbs": 1}
    assert frame.loc["int-4", "source"].endswith("gateway.jsonl:6")
    assert fourth.input_lines == 8 and fourth.balanced


def test_rewritten_jsonl_is_read_again_and_rows_supersede(hg_home, tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    db_path = hg_home / "state.sqlite"
    log = folder / "log.jsonl"
    log.write_bytes(jsonl([interaction("int-1", "2026-01-20T10:00:00Z", "one"), interaction("int-2", "2026-01-20T10:00:00Z")]))
    ingest(str(folder), db_path)
    # Same length, different content: not an append, so the whole file is read again.
    log.write_bytes(jsonl([interaction("int-1", "2026-01-20T10:00:00Z", "two"), interaction("int-3", "2026-01-20T10:00:00Z")]))
    result = ingest(str(folder), db_path)
    assert (result.new_lines, result.interactions, result.superseded) == (2, 3, 1) and result.balanced
    assert load_interactions(db_path).set_index("id").loc["int-1", "messages"][-1]["content"] == "two"


def test_grown_csv_and_parquet_resume_after_consumed_rows(hg_home, tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    db_path = hg_home / "state.sqlite"
    columns = ["id", "created_at", "prompt", "response"]
    rows = [{"id": f"c-{i}", "created_at": "2026-01-20T10:00:00Z", "prompt": "p", "response": "r"} for i in range(4)]
    records = [interaction(f"p-{i}", "2026-01-20T10:00:00Z") for i in range(4)]
    write_files(folder, {"a.csv": csv_bytes(rows[:2], columns), "b.parquet": parquet_bytes(pa.Table.from_pylist(records[:3]))})
    assert ingest(str(folder), db_path).new_lines == 5

    write_files(folder, {"a.csv": csv_bytes(rows, columns), "b.parquet": parquet_bytes(pa.Table.from_pylist(records))})
    result = ingest(str(folder), db_path)
    assert (result.new_lines, result.updated_files, result.superseded, result.interactions) == (3, 2, 0, 8)
    sources = set(load_interactions(db_path)["source"].map(lambda source: Path(source).name))
    assert {"a.csv:3", "a.csv:4", "b.parquet:4"} <= sources


def test_interrupted_ingestion_resumes_without_double_counting(hg_home, tmp_path, monkeypatch):
    folder = tmp_path / "logs"
    folder.mkdir()
    db_path = hg_home / "state.sqlite"
    write_files(folder, {"log.jsonl": jsonl([interaction(f"int-{i}", "2026-01-20T10:00:00Z") for i in range(10)])})
    real = ingest_module.normalise_record

    class ProcessKilled(BaseException):
        """The process dies mid-file (an ordinary exception on one row is quarantined, not a crash)."""

    def crash_on_int_7(obj, *args, **kwargs):
        if obj.get("id") == "int-7":
            raise ProcessKilled("killed")
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(ingest_module, "normalise_record", crash_on_int_7)
    with pytest.raises(ProcessKilled):
        ingest(str(folder), db_path, batch_rows=3)
    monkeypatch.setattr(ingest_module, "normalise_record", real)

    result = ingest(str(folder), db_path, batch_rows=3)
    assert result.new_lines == 4  # batches 1-3, 4-6 were committed; 7-10 are read now
    assert (result.input_lines, result.interactions, result.superseded) == (10, 10, 0)


def test_unreadable_parquet_is_quarantined_once(hg_home, tmp_path):
    folder = tmp_path / "logs"
    write_files(folder, {"broken.parquet": b"PAR1 this is not parquet", "ok.jsonl": jsonl([interaction("a", "2026-01-20")])})
    db_path = hg_home / "state.sqlite"
    result = ingest(str(folder), db_path)
    assert (result.input_lines, result.interactions, result.quarantined) == (2, 1, 1) and result.balanced
    assert load_quarantine(db_path).loc[0, "reason"].startswith("unreadable parquet file")
    assert ingest(str(folder), db_path).new_lines == 0


@pytest.mark.parametrize(
    "content",
    [b"{not json", b'{"opted_out_orgs": "org-1"}', b'["org-1"]', b'{"opted_out_orgs": ["org-1", 7]}', b"{}"],
)
def test_malformed_optout_fails_loudly_and_changes_nothing(hg_home, tmp_path, content):
    folder = tmp_path / "logs"
    write_files(folder, {"log.jsonl": jsonl([interaction("a", "2026-01-20")]), "optout.json": content})
    db_path = hg_home / "state.sqlite"
    with pytest.raises(OptOutError, match="optout.json"):
        ingest(str(folder), db_path)
    assert not db_path.exists()


def test_optout_is_reread_and_latest_wins(hg_home, tmp_path):
    folder = tmp_path / "logs"
    write_files(folder, {"optout.json": b'{"opted_out_orgs": ["org-1", "org-2"]}'})
    db_path = hg_home / "state.sqlite"
    assert ingest(str(folder), db_path).opted_out_orgs == ["org-1", "org-2"]
    write_files(folder, {"optout.json": b'{"opted_out_orgs": ["org-3"]}'})
    assert ingest(str(folder), db_path).opted_out_orgs == ["org-3"]
    (folder / "optout.json").unlink()
    assert ingest(str(folder), db_path).opted_out_orgs == []


def test_missing_location_is_a_clear_error(hg_home, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        ingest(str(tmp_path / "nowhere"), hg_home / "state.sqlite")


def test_unsupported_batch_size_is_rejected_early(hg_home, tmp_path):
    with pytest.raises(ValueError, match="batch_rows must be at least 1"):
        ingest(str(tmp_path), hg_home / "state.sqlite", batch_rows=0)
    assert not (hg_home / "state.sqlite").exists()


def test_raw_text_of_quarantined_lines_is_truncated(hg_home, tmp_path):
    folder = tmp_path / "logs"
    write_files(folder, {"log.jsonl": jsonl(["x" * 50_000])})
    db_path = hg_home / "state.sqlite"
    ingest(str(folder), db_path)
    assert len(load_quarantine(db_path).loc[0, "raw"]) == 10_000


def test_byte_order_mark_crlf_and_bad_utf8(hg_home, tmp_path):
    folder = tmp_path / "logs"
    lines = [json.dumps(interaction("a", "2026-01-20")), json.dumps(interaction("b", "2026-01-20")), '{"id": "\xff"}']
    content = b"\xef\xbb\xbf" + lines[0].encode() + b"\r\n" + lines[1].encode() + b"\r\n" + b'{"id": "\xff"}\r\n'
    write_files(folder, {"windows.jsonl": content})
    db_path = hg_home / "state.sqlite"
    result = ingest(str(folder), db_path)
    assert (result.interactions, result.quarantined) == (2, 1)
    assert load_quarantine(db_path).loc[0, "reason"].startswith("line is not valid UTF-8")

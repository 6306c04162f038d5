"""Ingestion never jams: each hostile line is quarantined with its reason and the next file still ingests.

Every test plants the hostile input in a temporary input folder, before a good file that sorts after it
(``z_next.jsonl``), ingests once and checks both: the bad row is in the quarantine with the reason, and
the next file's row is in the interactions table in the same run.
"""

from __future__ import annotations

import io
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from homegrown.data import sources
from homegrown.data.ingest import IngestLimits, ingest, load_interactions, load_quarantine
from homegrown.data.records import MAX_NESTING_DEPTH
from homegrown.data.sources import DEFAULT_MAX_LINE_BYTES, FileInfo, iter_lines, read_batches

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
LIMIT = 200_000  # small enough to test, big enough for 100000 '['
LIMITS = IngestLimits(max_line_bytes=LIMIT, now=NOW)
NEXT_FILE = "z_next.jsonl"


def record(id_: str, created_at: str = "2026-05-01T10:00:00Z", answer: str = "answer", **fields) -> dict:
    messages = [{"role": "user", "content": f"question {id_}"}, {"role": "assistant", "content": answer}]
    return {"id": id_, "created_at": created_at, "messages": messages, **fields}


def line(obj: dict) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def nested(depth: int) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def run(folder: Path, db_path: Path, limits: IngestLimits = LIMITS):
    """Add the next good file, ingest, and check that it got in and that every line is accounted for."""
    (folder / NEXT_FILE).write_bytes(line(record("next-file")))
    result = ingest(folder, db_path, limits=limits)
    assert result.balanced
    ids = set(load_interactions(db_path)["id"])
    assert "next-file" in ids, "the file after the hostile one was not ingested in the same run"
    return result, ids


def quarantined(db_path: Path) -> dict[str, str]:
    """``{"file:line": reason}`` of the quarantine."""
    frame = load_quarantine(db_path)
    return {f"{Path(file).name}:{number}": reason for file, number, reason in frame[["file", "line", "reason"]].itertuples(index=False)}


HOSTILE_JSONL_LINES = {
    "deeply nested JSON (100000 '[')": (b"[" * 100_000, "JSON nested too deeply to parse"),
    "deeply nested object that parses": (line(record("deep", metadata={"x": nested(500)})),
                                         f"nested deeper than {MAX_NESTING_DEPTH} levels"),
    "deeply nested JSON string in a nested field": (line(record("deep-str") | {"metadata": "[" * 100_000}),
                                                    "metadata is a JSON string nested too deeply"),
    "year 1 with an offset (overflows UTC)": (line(record("y1", "0001-01-01T00:00:00+01:00")), "out of range"),
    "year 1": (line(record("y1z", "0001-01-01T00:00:00Z")), "before the earliest accepted time"),
    "year 9999 with an offset (overflows UTC)": (line(record("y9", "9999-12-31T23:59:59-01:00")), "out of range"),
    "year 9999": (line(record("y9z", "9999-01-01T00:00:00Z")), "after the latest accepted time"),
    "far-future created_at": (line(record("future", (NOW + timedelta(days=2)).isoformat())), "in the future"),
    "far-future feedback event": (line({"feedback_for": "good", "created_at": "9999-01-01T00:00:00Z", "thumbs": -1}),
                                  "after the latest accepted time"),
    "before 2000": (line(record("old", "1999-12-31T23:59:59Z")), "before the earliest accepted time"),
    "line over max_line_bytes": (line(record("long", answer="x" * LIMIT)), "over the limit of 200,000 bytes"),
    "invalid UTF-8": (b'{"id": "bad-\xff\xfe", "created_at": "2026-05-01"}\n', "line is not valid UTF-8"),
    "NUL byte": (b'{"id": "nul\x00", "created_at": "2026-05-01"}\n', "NUL byte"),
    "lone surrogate SQLite refuses": (line(record("surrogate", answer="\ud800")), "cannot be stored"),
}


@pytest.mark.parametrize(("content", "reason"), HOSTILE_JSONL_LINES.values(), ids=HOSTILE_JSONL_LINES.keys())
def test_hostile_jsonl_line_is_quarantined_and_the_rest_ingests(hg_home, tmp_path, content, reason):
    folder = tmp_path / "logs"
    folder.mkdir()
    if not content.endswith(b"\n"):
        content += b"\n"
    # The hostile line sits between good lines of the same file, in one batch with them.
    (folder / "a_hostile.jsonl").write_bytes(line(record("before")) + content + line(record("good")))
    db_path = hg_home / "state.sqlite"

    result, ids = run(folder, db_path)

    assert {"before", "good", "next-file"} <= ids
    assert (result.input_lines, result.quarantined) == (4, 1)
    reasons = quarantined(db_path)
    assert list(reasons) == ["a_hostile.jsonl:2"]
    assert reason in reasons["a_hostile.jsonl:2"]
    # Nothing is retried: the next call reads no line again.
    assert ingest(folder, db_path, limits=LIMITS).new_lines == 0


def test_far_future_feedback_cannot_win_forever(hg_home, tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "a.jsonl").write_bytes(
        line(record("int-1"))
        + line({"feedback_for": "int-1", "created_at": "9999-01-01T00:00:00Z", "admin_correction": "poison"})
        + line({"feedback_for": "int-1", "created_at": "2026-05-02T00:00:00Z", "admin_correction": "real fix"})
    )
    db_path = hg_home / "state.sqlite"
    run(folder, db_path)
    frame = load_interactions(db_path).set_index("id")
    assert frame.loc["int-1", "feedback"] == {"admin_correction": "real fix"}


def test_timestamp_window_is_configurable(hg_home, tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "a.jsonl").write_bytes(line(record("ancient", "1990-01-01T00:00:00Z")))
    db_path = hg_home / "state.sqlite"
    limits = IngestLimits(earliest=datetime(1980, 1, 1, tzinfo=UTC), now=NOW)
    _, ids = run(folder, db_path, limits)
    assert "ancient" in ids


def test_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("HOMEGROWN_MAX_LINE_BYTES", "1234")
    monkeypatch.setenv("HOMEGROWN_EARLIEST_CREATED_AT", "2010-01-01")
    monkeypatch.setenv("HOMEGROWN_MAX_FUTURE_SECONDS", "60")
    limits = IngestLimits.from_env()
    assert (limits.max_line_bytes, limits.earliest, limits.max_future) == (
        1234, datetime(2010, 1, 1, tzinfo=UTC), timedelta(seconds=60),
    )
    monkeypatch.setenv("HOMEGROWN_MAX_LINE_BYTES", "lots")
    with pytest.raises(ValueError, match="bad ingestion limit"):
        IngestLimits.from_env()
    assert IngestLimits().max_line_bytes == DEFAULT_MAX_LINE_BYTES == 8 << 20


def test_unfinished_long_jsonl_line_is_held_back_not_quarantined(hg_home, tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    log = folder / "a.jsonl"
    partial = b'{"id": "long", "messages": "' + b"x" * LIMIT  # over the limit, and no newline yet
    log.write_bytes(line(record("first")) + partial)
    db_path = hg_home / "state.sqlite"
    result, _ = run(folder, db_path)
    assert (result.held_back_bytes, result.quarantined) == (len(partial), 0)
    with log.open("ab") as handle:
        handle.write(b'"}\n')
    again = ingest(folder, db_path, limits=LIMITS)
    assert (again.new_lines, again.new_quarantined, again.held_back_bytes) == (1, 1, 0)
    assert "over the limit" in quarantined(db_path)["a.jsonl:2"]


# --- CSV --------------------------------------------------------------------------------------------

CSV_HEADER = b"id,created_at,prompt,response,messages\r\n"


def test_truncated_csv_row_is_held_back_until_the_writer_finishes(hg_home, tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    table = folder / "a.csv"
    table.write_bytes(CSV_HEADER + b"c-1,2026-05-01T10:00:00Z,Open on Sunday?,Yes\r\n" + b"c-2,2026-05-01T10:00:00Z,Wagyu?,We do")
    db_path = hg_home / "state.sqlite"

    result, ids = run(folder, db_path)
    assert "c-1" in ids and "c-2" not in ids
    assert result.held_back_bytes == len(b"c-2,2026-05-01T10:00:00Z,Wagyu?,We do")
    assert result.quarantined == 0

    with table.open("ab") as handle:
        handle.write(b"n't serve wagyu\r\n")
    again = ingest(folder, db_path, limits=LIMITS)
    assert (again.new_lines, again.held_back_bytes, again.quarantined) == (1, 0, 0) and again.balanced
    frame = load_interactions(db_path).set_index("id")
    assert frame.loc["c-2", "messages"][-1]["content"] == "We don't serve wagyu"
    assert frame.loc["c-2", "source"].endswith("a.csv:2")


def test_csv_row_ending_inside_an_open_quote_is_held_back(hg_home, tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    table = folder / "a.csv"
    partial = b'c-2,2026-05-01T10:00:00Z,Menu?,"Line one\r\nline two\r\n'
    table.write_bytes(CSV_HEADER + b"c-1,2026-05-01T10:00:00Z,p,r\r\n" + partial)
    db_path = hg_home / "state.sqlite"
    result, ids = run(folder, db_path)
    assert "c-2" not in ids and result.held_back_bytes == len(partial)
    with table.open("ab") as handle:
        handle.write(b'line three"\r\n')
    ingest(folder, db_path, limits=LIMITS)
    frame = load_interactions(db_path).set_index("id")
    assert frame.loc["c-2", "messages"][-1]["content"] == "Line one\r\nline two\r\nline three"


HOSTILE_CSV_ROWS = {
    "row over max_line_bytes": (b"c-x,2026-05-01T10:00:00Z,p," + b"y" * LIMIT + b"\r\n", "over the limit of 200,000"),
    "invalid UTF-8": (b"c-x,2026-05-01T10:00:00Z,p,caf\xe9\r\n", "row is not valid UTF-8"),
    "NUL byte": (b"c-x,2026-05-01T10:00:00Z,p,r\x00\r\n", "NUL byte"),
    "year 9999": (b"c-x,9999-12-31T23:59:59-01:00,p,r\r\n", "out of range"),
    "deeply nested messages cell": (b'c-x,2026-05-01T10:00:00Z,,,"' + b"[" * 100_000 + b'"\r\n', "nested too deeply"),
}


@pytest.mark.parametrize(("content", "reason"), HOSTILE_CSV_ROWS.values(), ids=HOSTILE_CSV_ROWS.keys())
def test_hostile_csv_row_is_quarantined_and_the_rest_ingests(hg_home, tmp_path, content, reason):
    folder = tmp_path / "logs"
    folder.mkdir()
    good = b"c-good,2026-05-01T10:00:00Z,p,r\r\n"
    (folder / "a.csv").write_bytes(CSV_HEADER + content + good)
    db_path = hg_home / "state.sqlite"
    result, ids = run(folder, db_path)
    assert "c-good" in ids
    reasons = quarantined(db_path)
    assert list(reasons) == ["a.csv:1"] and reason in reasons["a.csv:1"]
    assert result.input_lines == 3


# --- Parquet ----------------------------------------------------------------------------------------


def test_out_of_range_parquet_timestamp_is_quarantined(hg_home, tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    micros = [
        int(datetime(2026, 5, 1, tzinfo=UTC).timestamp() * 1_000_000),
        300_000_000_000 * 1_000_000,  # about year 11500: Python's datetime cannot hold it
        int(datetime(2026, 5, 2, tzinfo=UTC).timestamp() * 1_000_000),
    ]
    table = pa.table({
        "id": ["p-1", "p-bad", "p-3"],
        "created_at": pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "prompt": ["p", "p", "p"],
        "response": ["r", "r", "r"],
    })
    sink = io.BytesIO()
    pq.write_table(table, sink)
    (folder / "a.parquet").write_bytes(sink.getvalue())
    db_path = hg_home / "state.sqlite"

    result, ids = run(folder, db_path)

    assert {"p-1", "p-3"} <= ids and "p-bad" not in ids
    reasons = quarantined(db_path)
    assert list(reasons) == ["a.parquet:2"]
    assert "row cannot be read" in reasons["a.parquet:2"]
    assert "p-bad" in load_quarantine(db_path).loc[0, "raw"]
    assert result.input_lines == 4


# --- files that cannot be read now ---------------------------------------------------------------


def test_io_error_skips_the_file_for_this_call_only(hg_home, tmp_path, monkeypatch):
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "a.jsonl").write_bytes(line(record("a")))
    (folder / "dangling.jsonl").symlink_to(folder / "nowhere.jsonl")  # listed, but nothing to read
    db_path = hg_home / "state.sqlite"
    real_open = sources._open_binary

    class FlakyOpen(real_open):
        def __enter__(self):
            if self.path.endswith("a.jsonl"):
                raise ConnectionResetError("storage went away")
            return super().__enter__()

    monkeypatch.setattr(sources, "_open_binary", FlakyOpen)
    result, ids = run(folder, db_path)
    assert "a" not in ids and result.quarantined == 0
    assert len(result.failed_files) == 1 and "storage went away" in result.failed_files[0]

    monkeypatch.setattr(sources, "_open_binary", real_open)
    again = ingest(folder, db_path, limits=LIMITS)
    assert again.new_lines == 1 and not again.failed_files
    assert "a" in set(load_interactions(db_path)["id"])


def test_io_error_mid_file_keeps_what_was_read_and_the_next_file_ingests(hg_home, tmp_path, monkeypatch):
    folder = tmp_path / "logs"
    folder.mkdir()
    # Quarantined lines on both sides of the failure: their sequence numbers must not collide.
    (folder / "a.jsonl").write_bytes(b"".join(line(record(f"a-{i}")) if i != 1 else b"oops\n" for i in range(5)))
    (folder / "b.jsonl").write_bytes(line(record("b")) + b"not json\n")
    db_path = hg_home / "state.sqlite"
    real_open = sources._open_binary

    class DropsMidFile(real_open):
        """Serves a.jsonl in 100-byte reads, then the connection drops."""

        def __enter__(self):
            stream = super().__enter__()
            if not self.path.endswith("a.jsonl"):
                return stream
            reads = iter(range(3))

            class Stream:
                def read(self, size):
                    if next(reads, None) is None:
                        raise ConnectionResetError("connection dropped")
                    return stream.read(min(size, 100))

            return Stream()

    monkeypatch.setattr(sources, "_open_binary", DropsMidFile)
    result = ingest(folder, db_path, batch_rows=1, limits=LIMITS)
    assert result.failed_files and "connection dropped" in result.failed_files[0]
    assert result.balanced and result.quarantined == 2
    assert {"a-0", "b"} <= set(load_interactions(db_path)["id"])

    monkeypatch.setattr(sources, "_open_binary", real_open)
    again = ingest(folder, db_path, batch_rows=1, limits=LIMITS)
    assert not again.failed_files and again.balanced
    assert (again.input_lines, again.interactions, again.quarantined) == (7, 5, 2)


# --- the reader is linear ----------------------------------------------------------------------------


class Chunk(bytes):
    """A chunk as the stream returns it; counts attempts to concatenate it onto buffered bytes."""

    concatenations = 0

    def __add__(self, other):
        Chunk.concatenations += 1
        return bytes(self) + bytes(other)

    def __radd__(self, other):
        Chunk.concatenations += 1
        return bytes(other) + bytes(self)


class ChunkStream:
    """A stream over ``data`` that records the size of every read."""

    def __init__(self, data: bytes):
        self.data, self.offset, self.requests = memoryview(data), 0, []

    def read(self, size: int) -> bytes:
        self.requests.append(size)
        piece = Chunk(self.data[self.offset:self.offset + size])
        self.offset += len(piece)
        return piece


def test_a_20_mb_line_is_read_in_bounded_chunks_without_concatenation():
    """The property behind linear time: bounded reads, each byte read once, no ``pending + chunk``."""
    answer = "x" * (20 << 20)
    data = line(record("huge", answer=answer)) + line(record("after"))
    stream = ChunkStream(data)
    Chunk.concatenations = 0

    lines = list(iter_lines(stream, max_line_bytes=32 << 20, chunk_bytes=64 << 10))

    assert Chunk.concatenations == 0
    assert max(stream.requests) == 64 << 10
    assert len(stream.requests) == math.ceil(len(data) / (64 << 10)) + 1  # every byte read once, then EOF
    assert [entry.length for entry in lines] == [len(data) - len(line(record("after"))), len(line(record("after")))]
    assert json.loads(lines[0].data)["messages"][-1]["content"] == answer


def test_a_20_mb_line_ingests_when_the_limit_allows_it(hg_home, tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    answer = "y" * (20 << 20)
    (folder / "a.jsonl").write_bytes(line(record("huge", answer=answer)))
    db_path = hg_home / "state.sqlite"
    result, ids = run(folder, db_path, IngestLimits(max_line_bytes=32 << 20, now=NOW))
    assert "huge" in ids and result.quarantined == 0


def test_a_line_over_the_limit_is_never_held_whole():
    stream = ChunkStream(b"z" * (3 << 20) + b"\n")
    (only,) = iter_lines(stream, max_line_bytes=1 << 20, chunk_bytes=64 << 10)
    assert only.data is None and only.length == (3 << 20) + 1
    assert len(only.head) == sources.RAW_HEAD_BYTES


def test_read_batches_reports_a_long_line_with_its_length(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"q" * 300 + b"\n" + line(record("ok")))
    file = FileInfo(str(path), path.stat().st_size, "x")
    (batch,) = read_batches(file, max_line_bytes=200)
    (first, error), (second, item) = batch.rows
    assert (first, second) == (1, 2)
    assert "line is 300 bytes, over the limit of 200 bytes" in error.reason and error.raw == "q" * 300
    assert item["id"] == "ok"


# --- Dagster -----------------------------------------------------------------------------------------


def test_raw_interactions_reports_held_back_bytes(hg_home, tmp_path, monkeypatch):
    import dagster as dg

    from homegrown.store import ArtifactStore
    from pipelines.definitions import defs

    folder = tmp_path / "logs"
    folder.mkdir()
    yesterday = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    partial = b'{"id": "being-written", "created_at": "'
    (folder / "a.jsonl").write_bytes(line(record("done", yesterday)) + partial)
    monkeypatch.setenv("HOMEGROWN_INPUT", str(folder))

    assets = [a for a in defs.assets if a.key.to_user_string() == "raw_interactions"]
    result = dg.materialize(assets, resources=defs.resources, raise_on_error=True)

    (materialization,) = result.asset_materializations_for_node("raw_interactions")
    assert materialization.metadata["held_back_bytes"].value == len(partial)
    assert materialization.metadata["failed_files"].value == 0
    latest = ArtifactStore(hg_home / "artifacts").latest("raw_interactions")
    assert (latest["held_back_bytes"], latest["interactions"], latest["quarantined"]) == (len(partial), 1, 0)

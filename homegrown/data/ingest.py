"""Incremental ingestion of an input location into a SQLite state database.

:func:`ingest` reads only what is new since the last call: files it has not seen, the appended tail of
JSONL files, and the rows after the last consumed one of changed CSV and Parquet files. It keeps

- ``interactions``: one row per id, the newest by ``created_at`` (ties: the row read later wins);
- ``feedback``: per interaction id and feedback field, the newest value. Inline ``feedback`` of a row
  counts as an event at the row's ``created_at``; events for ids not seen yet wait there until the id
  arrives, so none is lost;
- ``quarantine``: every line that does not fit the format, with file, line, reason and raw text;
- ``files``: a cursor per input file; it advances in the same transaction as the rows it covers, so an
  interrupted ingestion resumes without reading a line twice;
- ``optout``: the organisations of each location's ``optout.json``, re-read on every call (the latest
  list of a location replaces its previous one; several locations add up).

Every input line ever read is accounted for exactly once:
``input_lines == interactions + superseded + quarantined + feedback_events``. Blank JSONL lines are not
input lines. A file that cannot be read at all (a corrupt Parquet file) is one quarantined line.

Ingestion never jams on its input: any exception raised by one line or row (JSON nested too deeply to
parse, a time that overflows, a value SQLite refuses) quarantines that row with the exception as its
reason, and the next row and the next file are read. :class:`IngestLimits` bounds what is accepted: the
longest line (``max_line_bytes``) and the window of ``created_at`` around the ingest clock. A last line
or CSV row without its final newline is held back until the writer finishes it (``held_back_bytes``).
A file that cannot be opened right now (an I/O error) is skipped for this call, listed in
``failed_files``, and read again next time.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from homegrown.data.columns import INTERACTION_COLUMNS, JSON_INTERACTION_COLUMNS
from homegrown.data.records import RecordError, TimestampWindow, normalise_record
from homegrown.data.sources import (
    DEFAULT_MAX_LINE_BYTES,
    Batch,
    FileInfo,
    ParseError,
    list_location,
    read_batches,
    read_optout,
)

RAW_LIMIT = 10_000
BATCH_ROWS = 5_000
COUNTERS = ("input_lines", "interaction_lines", "feedback_events", "quarantined")

# Stored columns of the interactions table: feedback lives in its own table and is merged on load.
STORED_COLUMNS = [column for column in INTERACTION_COLUMNS if column != "feedback"]
STORED_JSON = [column for column in JSON_INTERACTION_COLUMNS if column != "feedback"]

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS interactions (
    {", ".join(f"{column} TEXT" + (" PRIMARY KEY" if column == "id" else "") for column in STORED_COLUMNS)},
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    target_id TEXT NOT NULL, field TEXT NOT NULL, value TEXT, created_at TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (target_id, field)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quarantine (
    seq INTEGER PRIMARY KEY, file TEXT NOT NULL, line INTEGER NOT NULL, reason TEXT NOT NULL, raw TEXT,
    ingested_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS quarantine_file ON quarantine (file, line);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, size INTEGER NOT NULL, position INTEGER NOT NULL,
    line INTEGER NOT NULL, tail BLOB, updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS optout (location TEXT NOT NULL, org_id TEXT NOT NULL, PRIMARY KEY (location, org_id));
"""

UPSERT_INTERACTION = f"""
INSERT INTO interactions ({", ".join(STORED_COLUMNS)}, seq) VALUES ({", ".join("?" * (len(STORED_COLUMNS) + 1))})
ON CONFLICT (id) DO UPDATE SET {", ".join(f"{column} = excluded.{column}" for column in STORED_COLUMNS[1:])},
    seq = excluded.seq
WHERE excluded.created_at > interactions.created_at
   OR (excluded.created_at = interactions.created_at AND excluded.seq > interactions.seq)
"""

UPSERT_FEEDBACK = """
INSERT INTO feedback (target_id, field, value, created_at, seq) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (target_id, field) DO UPDATE SET value = excluded.value, created_at = excluded.created_at,
    seq = excluded.seq
WHERE excluded.created_at > feedback.created_at
   OR (excluded.created_at = feedback.created_at AND excluded.seq > feedback.seq)
"""


@dataclass(frozen=True)
class IngestLimits:
    """What one ingestion accepts; rows outside these limits are quarantined with the limit as reason.

    - ``max_line_bytes``: the longest JSONL line or CSV row (and the largest Parquet row once stored);
    - ``earliest``: the oldest accepted ``created_at``;
    - ``max_future``: how far past the ingest clock ``now`` a ``created_at`` may be (clock skew);
    - ``now``: the ingest clock; None means the time :func:`ingest` starts.

    :meth:`from_env` reads ``HOMEGROWN_MAX_LINE_BYTES``, ``HOMEGROWN_EARLIEST_CREATED_AT`` (ISO-8601) and
    ``HOMEGROWN_MAX_FUTURE_SECONDS``.
    """

    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    earliest: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    max_future: timedelta = timedelta(days=1)
    now: datetime | None = None

    def __post_init__(self) -> None:
        if self.max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be at least 1, got {self.max_line_bytes}")
        if self.earliest.tzinfo is None or (self.now is not None and self.now.tzinfo is None):
            raise ValueError("IngestLimits times must be timezone-aware")
        if self.max_future < timedelta(0):
            raise ValueError(f"max_future must not be negative, got {self.max_future}")

    @classmethod
    def from_env(cls) -> IngestLimits:
        env = os.environ
        limits: dict[str, Any] = {}
        try:
            if env.get("HOMEGROWN_MAX_LINE_BYTES"):
                limits["max_line_bytes"] = int(env["HOMEGROWN_MAX_LINE_BYTES"])
            if env.get("HOMEGROWN_EARLIEST_CREATED_AT"):
                earliest = datetime.fromisoformat(env["HOMEGROWN_EARLIEST_CREATED_AT"])
                limits["earliest"] = earliest if earliest.tzinfo else earliest.replace(tzinfo=UTC)
            if env.get("HOMEGROWN_MAX_FUTURE_SECONDS"):
                limits["max_future"] = timedelta(seconds=float(env["HOMEGROWN_MAX_FUTURE_SECONDS"]))
        except ValueError as error:
            raise ValueError(f"bad ingestion limit in the environment: {error}") from None
        return cls(**limits)

    def window(self, now: datetime) -> TimestampWindow:
        """The accepted ``created_at`` range for an ingestion whose clock reads ``now``."""
        return TimestampWindow(self.earliest, (self.now or now) + self.max_future)


@dataclass
class IngestResult:
    """What one :func:`ingest` call did (``new_*``) and the totals over every call on this database.

    ``opted_out_orgs`` is the union over every location ingested into the database.
    """

    location: str
    new_files: int = 0
    updated_files: int = 0
    new_lines: int = 0
    new_interactions: int = 0
    new_superseded: int = 0
    new_quarantined: int = 0
    new_feedback_events: int = 0
    input_lines: int = 0
    interactions: int = 0
    superseded: int = 0
    quarantined: int = 0
    feedback_events: int = 0
    pending_feedback: int = 0
    opted_out_orgs: list[str] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)
    failed_files: list[str] = field(default_factory=list)
    held_back_bytes: int = 0
    seconds: float = 0.0

    @property
    def balanced(self) -> bool:
        """Whether every input line is accounted for exactly once."""
        return self.input_lines == self.interactions + self.superseded + self.quarantined + self.feedback_events

    @property
    def rows_per_second(self) -> float:
        return self.new_lines / self.seconds if self.seconds else 0.0


def ingest(
    location: str | Path, db_path: Path, batch_rows: int = BATCH_ROWS, limits: IngestLimits | None = None
) -> IngestResult:
    """Read what is new in ``location`` (a folder or ``s3://bucket/prefix``) into the database at ``db_path``.

    Raises :class:`~homegrown.data.sources.OptOutError` before touching the database when
    ``optout.json`` is malformed, and ``FileNotFoundError`` when the location is not a folder.
    Bad rows never raise: they are quarantined with their reason. ``limits`` defaults to
    :meth:`IngestLimits.from_env`.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
    limits = limits or IngestLimits.from_env()
    window = limits.window(datetime.now(UTC))
    started = time.perf_counter()
    location = str(location)
    optout = read_optout(location)
    listing = list_location(location)
    result = IngestResult(location=location, skipped_files=listing.skipped)
    with _connect(db_path) as conn:
        before = _totals(conn)
        with _transaction(conn):
            conn.execute("DELETE FROM optout WHERE location = ?", (location,))
            conn.executemany(
                "INSERT INTO optout (location, org_id) VALUES (?, ?)", [(location, org) for org in sorted(optout)]
            )
        cursors = {row[0]: row[1:] for row in conn.execute("SELECT path, fingerprint, position, line, tail FROM files")}
        seq = before["input_lines"]
        for file in listing.files:
            cursor = cursors.get(file.path)
            if cursor is not None and cursor[0] == file.fingerprint:
                continue
            if cursor is None:
                result.new_files += 1
                position, line, tail = 0, 0, b""
            else:
                result.updated_files += 1
                position, line, tail = cursor[1], cursor[2], cursor[3] or b""
            try:
                seq, held_back = _ingest_file(
                    conn, file, position, line, tail, seq, batch_rows, limits.max_line_bytes, window
                )
            except _TransientReadError as error:
                result.failed_files.append(f"{file.path}: {error}")
                seq = _totals(conn)["input_lines"]  # batches read before the error are committed
                continue
            result.held_back_bytes += held_back
        _drop_forgotten(conn)
        after = _totals(conn)

    for name in ("input_lines", "interactions", "superseded", "quarantined", "feedback_events"):
        setattr(result, name, after[name])
        setattr(result, f"new_{name}" if name != "input_lines" else "new_lines", after[name] - before[name])
    result.pending_feedback = after["pending_feedback"]
    result.opted_out_orgs = sorted(load_optout(db_path))
    result.seconds = time.perf_counter() - started
    return result


def _drop_forgotten(conn: sqlite3.Connection) -> None:
    """Keep conversations that ``homegrown forget`` removed out, even when an input file holding them is read
    again (the ``forgotten`` table is written by :mod:`homegrown.data.forget`)."""
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'forgotten'").fetchone()
    if not exists:
        return
    forgotten = "SELECT value FROM forgotten WHERE kind = 'conversation_id'"
    with conn:
        conn.execute(f"DELETE FROM feedback WHERE target_id IN (SELECT id FROM interactions "
                     f"WHERE conversation_id IN ({forgotten}))")
        conn.execute(f"DELETE FROM interactions WHERE conversation_id IN ({forgotten})")


class _TransientReadError(Exception):
    """The file could not be read right now (an I/O error); it is tried again on the next call."""


def _ingest_file(
    conn: sqlite3.Connection,
    file: FileInfo,
    position: int,
    line: int,
    tail: bytes,
    seq: int,
    batch_rows: int,
    max_line_bytes: int,
    window: TimestampWindow,
) -> tuple[int, int]:
    """Read one file from its cursor; each batch and the cursor after it commit together."""
    held_back = 0
    batches: Iterator[Batch] = read_batches(
        file, position, line, tail, batch_size=batch_rows, max_line_bytes=max_line_bytes
    )
    while True:
        try:
            batch = next(batches, None)
        except Exception as error:  # one file must never stop the others
            if _is_transient(error):
                raise _TransientReadError(f"{type(error).__name__}: {error}") from error
            # The file itself cannot be read (from here on); record that once, and retry when it changes.
            with _transaction(conn):
                seq += 1
                reason = f"unreadable {file.format} file: {error}"
                _quarantine(conn, [(seq, file.path, line, reason, None)])
                _bump(conn, input_lines=1, quarantined=1)
                _save_cursor(conn, file, position, line, tail)
            return seq, held_back
        if batch is None:
            with _transaction(conn):
                _save_cursor(conn, file, position, line, tail)
            return seq, held_back
        seq = _store_batch(conn, file, batch, seq, window, max_line_bytes)
        position, line, tail = batch.position, batch.line, batch.tail
        held_back = batch.held_back_bytes


def _is_transient(error: Exception) -> bool:
    """An error of the storage rather than of the file's content: worth retrying as it is."""
    if isinstance(error, OSError):
        return True
    module = type(error).__module__ or ""
    return module.startswith(("botocore", "boto3", "urllib3"))


def _store_batch(
    conn: sqlite3.Connection, file: FileInfo, batch: Batch, seq: int, window: TimestampWindow, max_line_bytes: int
) -> int:
    """Normalise and store one batch; every row is stored, counted as a feedback event, or quarantined."""
    prepared: list[_Prepared] = []
    max_stored = max_line_bytes if file.format == "parquet" else None
    for line, item in batch.rows:
        seq += 1
        prepared.append(_prepare(file, line, item, seq, window, max_stored))
    try:
        with _transaction(conn):
            _write(conn, prepared)
            _save_cursor(conn, file, batch.position, batch.line, batch.tail, fingerprint="")
    except sqlite3.OperationalError:
        raise  # the database itself (locked, disk full): retrying later is right
    except Exception:  # noqa: BLE001 - some row's values are refused (a lone surrogate, a huge value)
        with _transaction(conn):
            for row in prepared:
                conn.execute("SAVEPOINT row")
                try:
                    _write(conn, [row])
                except sqlite3.OperationalError:
                    raise
                except Exception as error:  # noqa: BLE001
                    conn.execute("ROLLBACK TO row")
                    reason = f"cannot be stored ({type(error).__name__}: {error})"
                    entry = (row.seq, file.path, row.line, _clean(reason), _raw(row.item))
                    _write(conn, [_Prepared(row.seq, row.line, quarantined=entry)])
                conn.execute("RELEASE row")
            # No fingerprint until the whole file is read, so an interrupted read resumes from this cursor.
            _save_cursor(conn, file, batch.position, batch.line, batch.tail, fingerprint="")
    return seq


@dataclass
class _Prepared:
    """One input row ready to write: an interaction, a feedback event, or a quarantine entry."""

    seq: int
    line: int = 0
    interaction: tuple | None = None
    feedback: list[tuple] = field(default_factory=list)
    event: bool = False
    quarantined: tuple | None = None
    item: Any = None  # the parsed input, to show if storing it fails


def _prepare(
    file: FileInfo, line: int, item: Any, seq: int, window: TimestampWindow, max_stored: int | None
) -> _Prepared:
    """Normalise one row; any exception it raises quarantines it with the exception as reason."""
    if isinstance(item, ParseError):
        return _Prepared(seq, line, quarantined=(seq, file.path, line, _clean(item.reason), _clean(item.raw)))
    try:
        kind, record = normalise_record(item, window, depth_checked=True)  # the readers bound the depth
        if kind == "feedback":
            target, created_at = record.pop("feedback_for"), record.pop("created_at")
            feedback = [(target, key, _dumps(value), created_at, seq) for key, value in record.items()]
            return _Prepared(seq, line, feedback=feedback, event=True, item=item)
        feedback = [
            (record["id"], key, _dumps(value), record["created_at"], seq) for key, value in record["feedback"].items()
        ]
        record["source"] = f"{file.path}:{line}"
        values = tuple(
            _dumps(record[c]) if c in STORED_JSON and record[c] is not None else record[c] for c in STORED_COLUMNS
        )
        if max_stored is not None:  # JSONL lines and CSV rows are bounded as they are read
            stored = sum(len(value) for value in values if isinstance(value, str))
            if stored > max_stored:
                raise RecordError(
                    f"row is {stored:,} characters once stored, over the limit of {max_stored:,} (max_line_bytes)"
                )
        return _Prepared(seq, line, interaction=values + (seq,), feedback=feedback, item=item)
    except RecordError as error:
        reason = error.reason
    except RecursionError:
        reason = "record nested too deeply to process (RecursionError)"
    except Exception as error:  # noqa: BLE001 - one row must never stop the file
        reason = f"cannot be processed ({type(error).__name__}: {error})"
    return _Prepared(seq, line, quarantined=(seq, file.path, line, _clean(reason), _raw(item)))


def _write(conn: sqlite3.Connection, rows: list[_Prepared]) -> None:
    interactions = [row.interaction for row in rows if row.interaction is not None]
    quarantined = [row.quarantined for row in rows if row.quarantined is not None]
    conn.executemany(UPSERT_INTERACTION, interactions)
    conn.executemany(UPSERT_FEEDBACK, [entry for row in rows for entry in row.feedback])
    _quarantine(conn, quarantined)
    _bump(
        conn, input_lines=len(rows), interaction_lines=len(interactions),
        feedback_events=sum(row.event for row in rows), quarantined=len(quarantined),
    )


def _raw(item: Any) -> str:
    """The raw text of a quarantined record, truncated and safe to store whatever it holds."""
    try:
        text = _dumps(item)
    except Exception as error:  # noqa: BLE001 - too deep or too odd to print
        text = f"<cannot be shown: {type(error).__name__}>"
    return _clean(text[:RAW_LIMIT])


def _clean(text: str | None) -> str | None:
    """Text SQLite accepts: truncated to ``RAW_LIMIT``, lone surrogates escaped."""
    if text is None:
        return None
    text = text[:RAW_LIMIT]
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def load_interactions(db_path: Path) -> pd.DataFrame:
    """Every interaction (newest row per id) with its feedback merged, as ``INTERACTION_COLUMNS``.

    Nested fields are decoded to Python lists/dicts; ``feedback`` is ``{}`` when there is none. Rows come
    in the order their ids were first read. For tables too large for memory, use :func:`iter_interactions`.
    """
    frames = list(iter_interactions(db_path))
    if not frames:
        return pd.DataFrame(columns=INTERACTION_COLUMNS)
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def iter_interactions(db_path: Path, batch_rows: int = 50_000) -> Iterator[pd.DataFrame]:
    """:func:`load_interactions` in DataFrames of at most ``batch_rows`` rows, streamed from the database."""
    if batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    query = f"""
        SELECT {", ".join(STORED_COLUMNS)},
               (SELECT json_group_object(field, json(value)) FROM feedback WHERE target_id = interactions.id)
        FROM interactions ORDER BY rowid
    """
    columns = [*STORED_COLUMNS, "feedback"]
    decoded = [*STORED_JSON, "feedback"]
    tools: dict[str, Any] = {}
    with _connect(db_path) as conn:
        cursor = conn.execute(query)
        while rows := cursor.fetchmany(batch_rows):
            # object dtype keeps None as None (pandas 3 would infer its str dtype and turn None into NaN).
            frame = pd.DataFrame(rows, columns=columns, dtype=object)
            del rows
            for column in decoded:
                if column == "tools":
                    # A business offers the same few tool lists in every turn: one decoded object per
                    # distinct list instead of one per row (read-only downstream).
                    frame[column] = [None if value is None else _decode_shared(value, tools) for value in frame[column]]
                else:
                    frame[column] = [None if value is None else json.loads(value) for value in frame[column]]
            yield frame[INTERACTION_COLUMNS]


def _decode_shared(value: str, decoded: dict[str, Any], limit: int = 10_000) -> Any:
    """``json.loads(value)``, the same object for the same text (up to ``limit`` distinct texts)."""
    found = decoded.get(value)
    if found is None:
        found = json.loads(value)
        if len(decoded) < limit:
            decoded[value] = found
    return found


def load_quarantine(db_path: Path) -> pd.DataFrame:
    """Every quarantined line: ``file``, ``line``, ``reason``, ``raw`` (truncated), ``ingested_at``."""
    with _connect(db_path) as conn:
        return pd.read_sql_query(
            "SELECT file, line, reason, raw, ingested_at FROM quarantine ORDER BY seq", conn
        )


def load_optout(db_path: Path) -> set[str]:
    """The opted-out organisations of every ingested location, as of its last ingestion."""
    with _connect(db_path) as conn:
        return {row[0] for row in conn.execute("SELECT DISTINCT org_id FROM optout")}


def load_pending_feedback(db_path: Path) -> dict[str, dict[str, Any]]:
    """Feedback waiting for an interaction id that has not arrived yet: ``{id: {field: value}}``."""
    with _connect(db_path) as conn:
        pending: dict[str, dict[str, Any]] = {}
        for target, key, value in conn.execute(
            "SELECT target_id, field, value FROM feedback WHERE target_id NOT IN (SELECT id FROM interactions)"
        ):
            pending.setdefault(target, {})[key] = json.loads(value)
        return pending


# --- database plumbing -----------------------------------------------------------------------------


@contextmanager
def _connect(db_path: Path) -> Iterator[sqlite3.Connection]:
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(db_path, isolation_level=None, timeout=60)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable at checkpoints, much faster
        conn.execute("PRAGMA cache_size = -65536")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.executescript(SCHEMA)
        yield conn


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _totals(conn: sqlite3.Connection) -> dict[str, int]:
    totals = {name: 0 for name in COUNTERS}
    totals.update(dict(conn.execute("SELECT name, value FROM counters")))
    (totals["interactions"],) = conn.execute("SELECT COUNT(*) FROM interactions").fetchone()
    # Each interaction line either is the current row of its id or lost to a newer one.
    totals["superseded"] = totals.pop("interaction_lines") - totals["interactions"]
    (totals["pending_feedback"],) = conn.execute(
        "SELECT COUNT(DISTINCT target_id) FROM feedback WHERE target_id NOT IN (SELECT id FROM interactions)"
    ).fetchone()
    return totals


def _bump(conn: sqlite3.Connection, **amounts: int) -> None:
    conn.executemany(
        "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
        list(amounts.items()),
    )


def _quarantine(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    now = _now()
    conn.executemany(
        "INSERT INTO quarantine (seq, file, line, reason, raw, ingested_at) VALUES (?, ?, ?, ?, ?, ?)",
        [(*row, now) for row in rows],
    )


def _save_cursor(
    conn: sqlite3.Connection, file: FileInfo, position: int, line: int, tail: bytes, fingerprint: str | None = None
) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO files (path, fingerprint, size, position, line, tail, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (file.path, file.fingerprint if fingerprint is None else fingerprint, file.size, position, line, tail, _now()),
    )


# default=str: Parquet can hand over datetimes or bytes inside nested fields. One encoder is reused
# because building one per call is a visible share of ingestion time.
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

"""The gateway's log: every request as an interaction record, every feedback event, and the JSONL export.

Records are stored in the interaction format (/work/shared/interaction-format.md) so that the export is
an input location for ingestion as it is. SQLite by default (WAL, a busy timeout, and write transactions
that take the write lock up front, so concurrent requests queue instead of failing), or any SQLAlchemy
URL such as ``postgresql+psycopg://…``.

Trust: a record's ``metadata.provenance`` and each feedback event's provenance say which key (by a
non-secret id) and which role sent it. Ingestion merges feedback per field (newest wins), so the export
writes each field's provenance next to it as ``<field>_provenance``; a correction from a key that may not
correct (an app key) is exported as ``suggested_correction``, so it can neither replace an answer nor
overwrite a trusted correction in that merge.

Privacy: the SQLite file and the export are created readable by their owner only (0600);
:meth:`LogStore.apply_retention` deletes or anonymises rows older than the retention period and
:meth:`LogStore.forget` removes an organisation's or a conversation's rows, both from the database and
from every export file written so far.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

EXPORT_FILE = "gateway-interactions.jsonl"
PROVENANCE_SUFFIX = "_provenance"
# A correction from a role that may not correct is exported under this name (never used for training).
SUGGESTED_CORRECTION = "suggested_correction"
CORRECTING_ROLES = ("reviewer", "admin")
PRIVATE_FILE_MODE = 0o600


def utc_now_iso() -> str:
    """Now as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (the normalised interaction timestamp)."""
    return iso_utc(datetime.now(UTC))


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Base(DeclarativeBase):
    pass


class InteractionRow(Base):
    """One request. ``record`` is the interaction record; the other columns are for queries."""

    __tablename__ = "interactions"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    created_at: Mapped[str] = mapped_column(String(32), index=True)
    conversation_id: Mapped[str] = mapped_column(String(200), index=True)
    org_id: Mapped[str | None] = mapped_column(String(200), index=True)
    model: Mapped[str | None] = mapped_column(String(200))
    route: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # "ok", or "error" when no backend answered
    latency_ms: Mapped[float | None] = mapped_column(Float)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    record: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer, default=1)
    anonymised: Mapped[bool] = mapped_column(Boolean, default=False)
    exported_version: Mapped[int] = mapped_column(Integer, default=0)
    pending_export: Mapped[bool] = mapped_column(Boolean, default=True, index=True)


class FeedbackRow(Base):
    """One feedback event: ``{"feedback_for": id, "created_at": …, <fields>}``."""

    __tablename__ = "feedback_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    feedback_for: Mapped[str] = mapped_column(String(80), ForeignKey("interactions.id"), index=True)
    created_at: Mapped[str] = mapped_column(String(32))
    fields: Mapped[dict[str, Any]] = mapped_column(JSON)
    # {"source": "gateway", "key_id", "role"}; None for events stored without one (treated as import).
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    exported: Mapped[bool] = mapped_column(Boolean, default=False, index=True)


class ExportRow(Base):
    """One run of :meth:`LogStore.export_jsonl`: the export cursor's history."""

    __tablename__ = "exports"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(Text)
    exported_at: Mapped[str] = mapped_column(String(32))
    interactions: Mapped[int] = mapped_column(Integer)
    feedback_events: Mapped[int] = mapped_column(Integer)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a 30 s busy timeout and ``BEGIN IMMEDIATE`` transactions."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        database = Path(parsed.database)
        database.parent.mkdir(parents=True, exist_ok=True)
        # Created 0600 before SQLite opens it; SQLite gives the -wal and -shm files the same mode.
        os.close(os.open(database, os.O_CREAT | os.O_RDWR, PRIVATE_FILE_MODE))
        make_private(database)
    else:
        raise ValueError("an in-memory SQLite log would lose every row; give a file path")
    engine = create_engine(url, pool_size=10, max_overflow=20, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module so that "begin" below decides how to begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Taking the write lock at BEGIN makes writers wait on the busy timeout; a deferred transaction
        # that reads first and then writes can fail at once under WAL when another writer got in between.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class UnknownInteraction(KeyError):
    """Feedback for an id the log does not hold (or that belongs to another organisation)."""


class LogStore:
    """Interaction records and feedback events in a SQL database."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        Base.metadata.create_all(self.engine)
        self._add_missing_columns()
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._export_lock = threading.Lock()

    def close(self) -> None:
        self.engine.dispose()

    def _add_missing_columns(self) -> None:
        """Columns added since a database was created (``create_all`` adds tables, not columns)."""
        added = {
            "feedback_events": {"provenance": "JSON"},
            "interactions": {"anonymised": "BOOLEAN NOT NULL DEFAULT FALSE"},
        }
        for table, columns in added.items():
            present = {column["name"] for column in inspect(self.engine).get_columns(table)}
            for name, kind in columns.items():
                if name not in present:
                    with self.engine.begin() as connection:
                        connection.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} {kind}"))

    def log_interaction(self, record: dict[str, Any], *, status: str = "ok") -> None:
        """Store one request's interaction record (``status="error"`` rows are kept but never exported)."""
        if status not in {"ok", "error"}:
            raise ValueError(f"status must be 'ok' or 'error', got {status!r}")
        meta = record.get("metadata") or {}
        row = InteractionRow(
            id=record["id"],
            created_at=record["created_at"],
            conversation_id=record.get("conversation_id") or record["id"],
            org_id=record.get("org_id"),
            model=record.get("model"),
            route=meta.get("route"),
            status=status,
            latency_ms=meta.get("latency_ms"),
            prompt_tokens=meta.get("prompt_tokens"),
            completion_tokens=meta.get("completion_tokens"),
            record=record,
            version=1,
            exported_version=0,
            pending_export=status == "ok",
        )
        with self._sessions.begin() as session:
            session.add(row)

    def update_interaction(
        self, interaction_id: str, fields: dict[str, Any], metadata: dict[str, Any] | None = None
    ) -> None:
        """Merge top-level ``fields`` and ``metadata`` entries into a stored record (e.g. a shadow answer)."""
        with self._sessions.begin() as session:
            row = session.execute(
                select(InteractionRow).where(InteractionRow.id == interaction_id).with_for_update()
            ).scalar_one_or_none()
            if row is None:
                raise UnknownInteraction(interaction_id)
            record = dict(row.record)
            record.update(fields)
            if metadata:
                record["metadata"] = {**(record.get("metadata") or {}), **metadata}
            row.record = record
            row.version += 1
            row.pending_export = row.status == "ok"

    def get_interaction(self, interaction_id: str) -> dict[str, Any] | None:
        """The stored record, or None."""
        with self._sessions() as session:
            row = session.get(InteractionRow, interaction_id)
            return dict(row.record) if row else None

    def add_feedback(
        self,
        feedback_for: str,
        fields: dict[str, Any],
        created_at: str | None = None,
        org_id: str | None = None,
        provenance: dict[str, Any] | None = None,
    ) -> tuple[int, str]:
        """Store a feedback event and who sent it (``provenance``); returns ``(event number, created_at)``.

        Raises :class:`UnknownInteraction` when no record has that id, or when ``org_id`` is given and the
        record belongs to another organisation.
        """
        if not fields:
            raise ValueError("a feedback event needs at least one field")
        created = created_at or utc_now_iso()
        with self._sessions.begin() as session:
            row = session.get(InteractionRow, feedback_for)
            if row is None or row.status != "ok" or (org_id is not None and row.org_id != org_id):
                raise UnknownInteraction(feedback_for)
            event_row = FeedbackRow(
                feedback_for=feedback_for, created_at=created, fields=fields, provenance=provenance, exported=False
            )
            session.add(event_row)
            session.flush()
            return event_row.seq, created

    def count(self, status: str | None = None) -> int:
        """How many requests are logged (optionally with one status)."""
        query = select(func.count()).select_from(InteractionRow)
        if status is not None:
            query = query.where(InteractionRow.status == status)
        with self._sessions() as session:
            return int(session.execute(query).scalar_one())

    def feedback_events(self, feedback_for: str | None = None) -> list[dict[str, Any]]:
        """Stored feedback events as ``{"feedback_for", "created_at", "fields", "provenance"}``, oldest first."""
        query = select(FeedbackRow).order_by(FeedbackRow.seq)
        if feedback_for is not None:
            query = query.where(FeedbackRow.feedback_for == feedback_for)
        with self._sessions() as session:
            return [
                {"feedback_for": e.feedback_for, "created_at": e.created_at, "fields": dict(e.fields),
                 "provenance": e.provenance}
                for e in session.execute(query).scalars()
            ]

    def records(self) -> list[dict[str, Any]]:
        """All stored records, oldest first."""
        with self._sessions() as session:
            rows = session.execute(
                select(InteractionRow.record).order_by(InteractionRow.created_at, InteractionRow.id)
            )
            return [dict(record) for (record,) in rows]

    def export_jsonl(self, out_dir: Path | str) -> Path:
        """Append what was not exported yet to ``<out_dir>/gateway-interactions.jsonl``; returns its path.

        Records come first (a record updated since its export is written again: a later row with the same
        id supersedes the earlier one), then feedback events. Rows are marked exported only after the file
        is flushed to disk, so a crash can repeat a row but never lose one.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / EXPORT_FILE
        with self._export_lock:
            with self._sessions() as session:
                pending = session.execute(
                    select(InteractionRow.id, InteractionRow.version, InteractionRow.record)
                    .where(InteractionRow.pending_export.is_(True), InteractionRow.status == "ok")
                    .order_by(InteractionRow.created_at, InteractionRow.id)
                ).all()
                events = (
                    session.execute(
                        select(FeedbackRow).where(FeedbackRow.exported.is_(False)).order_by(FeedbackRow.seq)
                    )
                    .scalars()
                    .all()
                )
                session.expunge_all()
            lines = [json.dumps(record, ensure_ascii=False) for _, _, record in pending]
            lines += [
                json.dumps(export_event(e.feedback_for, e.created_at, e.fields, e.provenance), ensure_ascii=False)
                for e in events
            ]
            _append_lines(path, lines)
            with self._sessions.begin() as session:
                for interaction_id, version, _ in pending:
                    session.execute(
                        update(InteractionRow)
                        .where(InteractionRow.id == interaction_id, InteractionRow.version == version)
                        .values(pending_export=False, exported_version=version)
                    )
                if events:
                    session.execute(
                        update(FeedbackRow)
                        .where(FeedbackRow.seq.in_([e.seq for e in events]))
                        .values(exported=True)
                    )
                session.add(
                    ExportRow(
                        path=str(path),
                        exported_at=utc_now_iso(),
                        interactions=len(pending),
                        feedback_events=len(events),
                    )
                )
        return path

    def export_paths(self) -> list[Path]:
        """Every export file written so far that still exists."""
        with self._sessions() as session:
            paths = session.execute(select(ExportRow.path).order_by(ExportRow.seq)).scalars().all()
        return [Path(path) for path in dict.fromkeys(paths) if Path(path).exists()]

    def forget(self, *, org_id: str | None = None, conversation_id: str | None = None) -> dict[str, Any]:
        """Delete one organisation's or one conversation's records and feedback, here and in every export.

        Returns what was removed: ``interactions``, ``feedback_events``, ``export_lines``, ``ids``.
        """
        if (org_id is None) == (conversation_id is None):
            raise ValueError("give exactly one of org_id or conversation_id")
        if org_id is not None:
            where, field, value = InteractionRow.org_id == org_id, "org_id", org_id
        else:
            where, field, value = InteractionRow.conversation_id == conversation_id, "conversation_id", conversation_id
        with self._export_lock:
            with self._sessions.begin() as session:
                ids = set(session.execute(select(InteractionRow.id).where(where)).scalars())
                events = session.execute(
                    delete(FeedbackRow).where(FeedbackRow.feedback_for.in_(select(InteractionRow.id).where(where)))
                ).rowcount
                session.execute(delete(InteractionRow).where(where))

            def drop_records(row: dict[str, Any]) -> dict[str, Any] | None:
                if "feedback_for" in row:
                    return row
                own = row.get(field) or (row.get("id") if field == "conversation_id" else None)
                if row.get("id") in ids or own == value:
                    ids.add(row.get("id"))
                    return None
                return row

            def drop_events(row: dict[str, Any]) -> dict[str, Any] | None:
                return None if row.get("feedback_for") in ids else row

            # Records first: feedback for a record that only the files still held goes too.
            lines = self._rewrite_exports(drop_records) + self._rewrite_exports(drop_events)
        return {"interactions": len(ids), "feedback_events": events, "export_lines": lines, "ids": sorted(ids)}

    def apply_retention(
        self, days: int, action: str = "delete", now: datetime | None = None, batch: int = 500
    ) -> dict[str, Any]:
        """Delete (or anonymise) records and feedback events older than ``days`` days, here and in the exports.

        ``action="anonymise"`` keeps the rows with personal data in their text replaced by placeholders
        (and no ``metadata.user``). ``days=0`` keeps everything. Returns the counts and the cutoff.
        """
        if action not in ("delete", "anonymise"):
            raise ValueError(f"retention action must be 'delete' or 'anonymise', got {action!r}")
        if days < 0:
            raise ValueError(f"retention days must be >= 0, got {days}")
        if days == 0:
            return {"action": "off", "cutoff": None, "interactions": 0, "feedback_events": 0, "export_lines": 0}
        cutoff = iso_utc((now or datetime.now(UTC)) - timedelta(days=days))
        with self._export_lock:
            if action == "delete":
                old = InteractionRow.created_at < cutoff
                with self._sessions.begin() as session:
                    ids = set(session.execute(select(InteractionRow.id).where(old)).scalars())
                    events = session.execute(
                        delete(FeedbackRow).where(
                            (FeedbackRow.created_at < cutoff)
                            | FeedbackRow.feedback_for.in_(select(InteractionRow.id).where(old))
                        )
                    ).rowcount
                    session.execute(delete(InteractionRow).where(old))

                def transform(row: dict[str, Any]) -> dict[str, Any] | None:
                    if str(row.get("created_at", "")) < cutoff or row.get("feedback_for") in ids:
                        return None
                    return row

                interactions = len(ids)
            else:
                anonymiser = _anonymiser()
                interactions, events = self._anonymise_rows(anonymiser, cutoff, batch)

                def transform(row: dict[str, Any]) -> dict[str, Any] | None:
                    if str(row.get("created_at", "")) >= cutoff:
                        return row
                    return _anonymise_export_row(anonymiser, row)

            lines = self._rewrite_exports(transform)
        return {"action": action, "cutoff": cutoff, "interactions": interactions, "feedback_events": events,
                "export_lines": lines}

    def _anonymise_rows(self, anonymiser: Any, cutoff: str, batch: int) -> tuple[int, int]:
        interactions = events = 0
        while True:
            with self._sessions.begin() as session:
                rows = (
                    session.execute(
                        select(InteractionRow)
                        .where(InteractionRow.created_at < cutoff, InteractionRow.anonymised.is_(False))
                        .limit(batch)
                    )
                    .scalars()
                    .all()
                )
                for row in rows:
                    row.record = anonymise_record(anonymiser, row.record)
                    row.anonymised = True
                    row.version += 1
                    row.pending_export = row.pending_export and row.status == "ok"
                    for event in session.execute(
                        select(FeedbackRow).where(FeedbackRow.feedback_for == row.id)
                    ).scalars():
                        fields = _anonymise_feedback(anonymiser, event.fields)
                        if fields != event.fields:
                            event.fields = fields
                            events += 1
                interactions += len(rows)
            if len(rows) < batch:
                return interactions, events

    def _rewrite_exports(self, transform: Callable[[dict[str, Any]], dict[str, Any] | None]) -> int:
        """Rewrite every export file through ``transform`` (None drops a line); returns the lines changed."""
        changed = 0
        for path in self.export_paths():
            changed += _rewrite_jsonl(path, transform)
        return changed

    def last_export(self) -> dict[str, Any] | None:
        """The newest export: path, time and row counts."""
        with self._sessions() as session:
            row = session.execute(
                select(ExportRow).order_by(ExportRow.seq.desc()).limit(1)
            ).scalar_one_or_none()
            if row is None:
                return None
            return {
                "path": row.path,
                "exported_at": row.exported_at,
                "interactions": row.interactions,
                "feedback_events": row.feedback_events,
            }


def make_private(path: Path | str) -> None:
    """Make a file readable and writable by its owner only (0600)."""
    os.chmod(path, PRIVATE_FILE_MODE)


def export_event(
    feedback_for: str, created_at: str, fields: dict[str, Any], provenance: dict[str, Any] | None
) -> dict[str, Any]:
    """A feedback event as an export line: its fields, and next to each the provenance of the event.

    A correction from a role outside :data:`CORRECTING_ROLES` becomes ``suggested_correction``. An event
    stored without provenance is written as it was given.
    """
    if provenance is None:
        return {"feedback_for": feedback_for, "created_at": created_at, **fields}
    out: dict[str, Any] = {"feedback_for": feedback_for, "created_at": created_at}
    for name, value in fields.items():
        if name == "admin_correction" and provenance.get("role") not in CORRECTING_ROLES:
            name = SUGGESTED_CORRECTION
        out[name] = value
        out[name + PROVENANCE_SUFFIX] = provenance
    return out


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock beside ``path`` (a hidden file ingestion skips), held across processes: an export
    and a rewrite by ``homegrown forget`` or ``homegrown retention`` never interleave."""
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _append_lines(path: Path, lines: list[str]) -> None:
    with _file_lock(path):
        _append_locked(path, lines)


def _append_locked(path: Path, lines: list[str]) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    if stat.S_IMODE(os.fstat(fd).st_mode) != PRIVATE_FILE_MODE:
        os.fchmod(fd, PRIVATE_FILE_MODE)  # a file from before exports were private
    with os.fdopen(fd, "a+b") as fh:
        # A crash mid-append can leave half a line; cut it so the next line starts clean.
        size = fh.seek(0, os.SEEK_END)
        if size:
            fh.seek(size - 1)
            if fh.read(1) != b"\n":
                fh.seek(0)
                data = fh.read()
                fh.truncate(data.rfind(b"\n") + 1)
        fh.seek(0, os.SEEK_END)
        if lines:
            fh.write(("\n".join(lines) + "\n").encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())


def _rewrite_jsonl(path: Path, transform: Callable[[dict[str, Any]], dict[str, Any] | None]) -> int:
    """Atomically replace ``path`` with its lines passed through ``transform``; returns the lines changed.

    A line that is not JSON is kept as it is. Ingestion reads a rewritten file again from its start.
    """
    with _file_lock(path):
        return _rewrite_locked(path, transform)


def _rewrite_locked(path: Path, transform: Callable[[dict[str, Any]], dict[str, Any] | None]) -> int:
    out: list[bytes] = []
    changed = 0
    with open(path, "rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                continue  # half a line from a crashed append
            try:
                row = json.loads(raw)
            except ValueError:
                out.append(raw)
                continue
            if not isinstance(row, dict):
                out.append(raw)
                continue
            result = transform(row)
            if result is row:
                out.append(raw)
                continue
            changed += 1
            if result is not None:
                out.append((json.dumps(result, ensure_ascii=False) + "\n").encode("utf-8"))
    if not changed:
        return 0
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.writelines(out)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return changed


def _anonymiser() -> Any:
    from homegrown.data.anonymise import Anonymiser

    return Anonymiser()


TEXT_FEEDBACK_FIELDS = ("admin_correction", SUGGESTED_CORRECTION)
TEXT_RECORD_FIELDS = ("teacher_response", "student_response", "ground_truth", "prompt", "response", "system")
TEXT_METADATA_FIELDS = ("shadow_answer",)


def anonymise_record(anonymiser: Any, record: dict[str, Any]) -> dict[str, Any]:
    """A record with personal data in its text replaced by placeholders (one mapping per record)."""
    out = dict(record)
    mapping: dict[str, str] = {}
    if isinstance(record.get("messages"), list):
        out["messages"], mapping = anonymiser.anonymise_messages(record["messages"], mapping)
    for name in TEXT_RECORD_FIELDS:
        if isinstance(record.get(name), str):
            out[name], mapping = anonymiser.anonymise_text(record[name], mapping)
    if isinstance(record.get("feedback"), dict):
        out["feedback"] = _anonymise_feedback(anonymiser, record["feedback"], mapping)
    metadata = dict(record.get("metadata") or {})
    metadata.pop("user", None)
    for name in TEXT_METADATA_FIELDS:
        if isinstance(metadata.get(name), str):
            metadata[name], mapping = anonymiser.anonymise_text(metadata[name], mapping)
    metadata["anonymised_at"] = utc_now_iso()
    out["metadata"] = metadata
    return out


def _anonymise_feedback(
    anonymiser: Any, fields: dict[str, Any], mapping: dict[str, str] | None = None
) -> dict[str, Any]:
    out = dict(fields)
    for name in TEXT_FEEDBACK_FIELDS:
        if isinstance(out.get(name), str):
            out[name], _ = anonymiser.anonymise_text(out[name], mapping if mapping is not None else {})
    return out


def _anonymise_export_row(anonymiser: Any, row: dict[str, Any]) -> dict[str, Any]:
    if "feedback_for" in row:
        anonymised = _anonymise_feedback(anonymiser, row)
        return anonymised if anonymised != row else row
    if (row.get("metadata") or {}).get("anonymised_at"):
        return row
    return anonymise_record(anonymiser, row)


def start_retention(store: LogStore, days: int, action: str = "delete", every_s: float = 86_400.0) -> threading.Event:
    """Apply retention now and then every ``every_s`` seconds in a daemon thread; set the event to stop."""
    import logging

    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                store.apply_retention(days, action)
            except Exception:  # a failed pass must not kill the loop; the next one retries
                logging.getLogger(__name__).exception("log retention failed")
            stop.wait(every_s)

    if days > 0:
        threading.Thread(target=loop, name="log-retention", daemon=True).start()
    return stop


def export_jsonl(out_dir: Path | str, db_url: str | None = None) -> Path:
    """Export the gateway log (``HOMEGROWN_LOG_DB_URL`` by default) into ``out_dir`` incrementally."""
    if db_url is None:
        from homegrown.gateway.settings import GatewaySettings

        db_url = GatewaySettings().log_db_url
    store = LogStore(db_url)
    try:
        return store.export_jsonl(out_dir)
    finally:
        store.close()

"""The gateway's log: every request as an interaction record, every feedback event, and the JSONL export.

Records are stored in the interaction format (/work/shared/interaction-format.md) so that the export is
an input location for ingestion as it is. SQLite by default (WAL, a busy timeout, and write transactions
that take the write lock up front, so concurrent requests queue instead of failing), or any SQLAlchemy
URL such as ``postgresql+psycopg://…``.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
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
    event,
    func,
    select,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

EXPORT_FILE = "gateway-interactions.jsonl"


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
    exported_version: Mapped[int] = mapped_column(Integer, default=0)
    pending_export: Mapped[bool] = mapped_column(Boolean, default=True, index=True)


class FeedbackRow(Base):
    """One feedback event: ``{"feedback_for": id, "created_at": …, <fields>}``."""

    __tablename__ = "feedback_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    feedback_for: Mapped[str] = mapped_column(String(80), ForeignKey("interactions.id"), index=True)
    created_at: Mapped[str] = mapped_column(String(32))
    fields: Mapped[dict[str, Any]] = mapped_column(JSON)
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
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
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
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._export_lock = threading.Lock()

    def close(self) -> None:
        self.engine.dispose()

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
    ) -> tuple[int, str]:
        """Store a feedback event; returns ``(event number, created_at)``.

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
                feedback_for=feedback_for, created_at=created, fields=fields, exported=False
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
                json.dumps(
                    {"feedback_for": e.feedback_for, "created_at": e.created_at, **e.fields},
                    ensure_ascii=False,
                )
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


def _append_lines(path: Path, lines: list[str]) -> None:
    with open(path, "a+b") as fh:
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

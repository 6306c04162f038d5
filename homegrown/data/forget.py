"""Forgetting a customer: an organisation's or a conversation's rows out of every store homegrown keeps.

:func:`forget` removes them from the gateway log (records, feedback events and every JSONL export file),
from the ingestion state (interactions, their feedback, quarantined lines that name them) and keeps them
out of future datasets: a forgotten organisation goes onto the opt-out list that curation reads (the
``optout`` table of the ingestion state, under its own location so that re-reading an ``optout.json``
never drops it). The eval's answer cache, which may hold answers that repeat the logs, is deleted whole.
Each call appends what it removed (counts, ids, time, who) to a forget log (0600).

A forgotten conversation's rows are deleted, and so are the lines of the gateway export; ingestion drops it
again whenever a business's own input file holding it is read (the ``forgotten`` table).
"""

from __future__ import annotations

import getpass
import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from homegrown.gateway.logstore import PRIVATE_FILE_MODE, LogStore, utc_now_iso

FORGET_LOCATION = "homegrown forget"
FORGET_LOG = "forget-log.jsonl"

_FORGOTTEN_TABLE = """
CREATE TABLE IF NOT EXISTS forgotten (kind TEXT NOT NULL, value TEXT NOT NULL, forgotten_at TEXT NOT NULL,
                                      PRIMARY KEY (kind, value))
"""


def _target(org_id: str | None, conversation_id: str | None) -> tuple[str, str]:
    if (org_id is None) == (conversation_id is None):
        raise ValueError("give exactly one of an organisation or a conversation to forget")
    value = org_id if org_id is not None else conversation_id
    if not value or not value.strip():
        raise ValueError("the organisation or conversation id to forget is empty")
    return ("org_id", value) if org_id is not None else ("conversation_id", value)


def forget_in_state(
    db_path: Path | str, *, org_id: str | None = None, conversation_id: str | None = None
) -> dict[str, Any]:
    """Delete an organisation's or a conversation's rows from the ingestion state database at ``db_path``.

    Removes the interactions, their feedback, the quarantined lines that name them, and, for an organisation, puts it on the opt-out list. A missing database is left
    alone (nothing was ingested). Returns the counts and the interaction ids removed.
    """
    field, value = _target(org_id, conversation_id)
    db_path = Path(db_path)
    result: dict[str, Any] = {"db_path": str(db_path), "interactions": 0, "feedback": 0, "quarantined": 0,
                              "ids": [], "opted_out": False}
    if not db_path.exists():
        return result
    with closing(sqlite3.connect(db_path, isolation_level=None, timeout=60)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            ids = [row[0] for row in conn.execute(f"SELECT id FROM interactions WHERE {field} = ?", (value,))]
            conn.execute("CREATE TEMP TABLE gone (id TEXT PRIMARY KEY)")
            conn.executemany("INSERT OR IGNORE INTO gone (id) VALUES (?)", [(i,) for i in ids])
            # Quarantined lines are raw input: those that name the target (or feedback for its ids) go too.
            quarantined = conn.execute(
                f"""DELETE FROM quarantine WHERE json_valid(raw) AND (
                        json_extract(raw, '$.{field}') = ?
                        OR json_extract(raw, '$.feedback_for') IN (SELECT id FROM gone)
                        OR json_extract(raw, '$.id') IN (SELECT id FROM gone))""",
                (value,),
            ).rowcount
            feedback = conn.execute("DELETE FROM feedback WHERE target_id IN (SELECT id FROM gone)").rowcount
            interactions = conn.execute(f"DELETE FROM interactions WHERE {field} = ?", (value,)).rowcount
            conn.execute(_FORGOTTEN_TABLE)
            conn.execute(
                "INSERT OR REPLACE INTO forgotten (kind, value, forgotten_at) VALUES (?, ?, ?)",
                (field, value, utc_now_iso()),
            )
            if field == "org_id":
                conn.execute(
                    "INSERT OR IGNORE INTO optout (location, org_id) VALUES (?, ?)", (FORGET_LOCATION, value)
                )
            conn.execute("DROP TABLE gone")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    result.update(interactions=interactions, feedback=feedback, quarantined=quarantined, ids=sorted(ids),
                  opted_out=field == "org_id")
    return result


def append_private_line(path: Path, entry: dict[str, Any]) -> None:
    """Append one JSON line to a file that only its owner can read (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE_MODE)
    os.fchmod(fd, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def forget(
    *,
    org_id: str | None = None,
    conversation_id: str | None = None,
    log_db_url: str | None,
    state_db: Path | str | None,
    forget_log: Path,
    by: str | None = None,
) -> dict[str, Any]:
    """Forget an organisation or a conversation in the gateway log (``log_db_url``) and the ingestion state
    (``state_db``); either may be None to skip it. Appends the record of what was removed to ``forget_log``
    and returns it."""
    field, value = _target(org_id, conversation_id)
    entry: dict[str, Any] = {"at": utc_now_iso(), "by": by or _who(), field: value}
    if log_db_url:
        store = LogStore(log_db_url)
        try:
            entry["gateway_log"] = store.forget(org_id=org_id, conversation_id=conversation_id)
        finally:
            store.close()
    if state_db:
        entry["ingestion_state"] = forget_in_state(state_db, org_id=org_id, conversation_id=conversation_id)
    from homegrown.evaluation.answer_cache import forget_answers

    entry["eval_answer_cache_deleted"] = forget_answers()  # a cache: cheaper to drop whole than to search
    append_private_line(Path(forget_log), entry)
    return entry


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"

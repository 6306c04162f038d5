"""The gateway log: records, feedback events, incremental JSONL export, concurrent writers."""

from __future__ import annotations

import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from homegrown.gateway.logstore import (
    EXPORT_FILE,
    SUGGESTED_CORRECTION,
    LogStore,
    UnknownInteraction,
    export_jsonl,
    utc_now_iso,
)

TIMESTAMP = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$"


def record(i: int, org: str | None = "org-1", answer: str = "Yes, we do.") -> dict:
    rid = f"chatcmpl-{i:04d}"
    return {
        "id": rid,
        "conversation_id": f"c-{i // 2}",
        "created_at": utc_now_iso(),
        "org_id": org,
        "example_type": "faq",
        "model": "homegrown:v1",
        "messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": answer}],
        "tools": None,
        "metadata": {
            "latency_ms": 12.5,
            "prompt_tokens": 7,
            "completion_tokens": 4,
            "cost_estimate_usd": 0.0,
            "route": "champion",
            "routing_reason": "champion",
            "backend": "llama.cpp:v1",
            "shadow_answer": None,
        },
    }


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOMEGROWN_HOME", str(tmp_path / "home"))
    db = LogStore(f"sqlite:///{tmp_path / 'log.sqlite'}")
    yield db
    db.close()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_interaction_format(row: dict) -> None:
    """The fields the interaction format requires of a record or a feedback event."""
    import re

    assert re.match(TIMESTAMP, row["created_at"])
    if "feedback_for" in row:
        assert set(row) - {"feedback_for", "created_at"}, "a feedback event carries at least one field"
        return
    assert row["id"] and row["messages"][-1]["role"] == "assistant"
    assert all(isinstance(m["content"], str) for m in row["messages"])


def test_log_and_read_back(store: LogStore):
    store.log_interaction(record(1))
    assert store.get_interaction("chatcmpl-0001")["messages"][-1]["content"] == "Yes, we do."
    assert store.get_interaction("nope") is None
    assert store.count() == 1


def test_rejects_unknown_status_and_memory_database(store: LogStore):
    with pytest.raises(ValueError, match="status"):
        store.log_interaction(record(1), status="maybe")
    with pytest.raises(ValueError, match="in-memory"):
        LogStore("sqlite://")


def test_export_is_incremental_and_in_interaction_format(store: LogStore, tmp_path: Path):
    out = tmp_path / "input"
    store.log_interaction(record(1))
    store.log_interaction(record(2))
    store.log_interaction({**record(3), "messages": [{"role": "user", "content": "q"}]}, status="error")
    store.add_feedback("chatcmpl-0001", {"thumbs": 1, "outcome": "accepted"})

    path = store.export_jsonl(out)
    assert path == out / EXPORT_FILE
    rows = read_jsonl(path)
    assert [r.get("id") or r["feedback_for"] for r in rows] == [
        "chatcmpl-0001",
        "chatcmpl-0002",
        "chatcmpl-0001",
    ]
    for row in rows:
        assert_interaction_format(row)
    assert rows[2] == {
        "feedback_for": "chatcmpl-0001",
        "created_at": rows[2]["created_at"],
        "thumbs": 1,
        "outcome": "accepted",
    }

    store.export_jsonl(out)
    assert len(read_jsonl(path)) == 3, "a second export with nothing new appends nothing"

    store.log_interaction(record(4))
    store.update_interaction("chatcmpl-0002", {"student_response": "shadow"}, {"shadow_answer": "shadow"})
    store.export_jsonl(out)
    rows = read_jsonl(path)
    assert [r["id"] for r in rows[3:]] == ["chatcmpl-0002", "chatcmpl-0004"]
    assert rows[3]["student_response"] == "shadow" and rows[3]["metadata"]["shadow_answer"] == "shadow"
    assert store.last_export()["interactions"] == 2


def test_export_repairs_a_half_written_line(store: LogStore, tmp_path: Path):
    out = tmp_path / "input"
    store.log_interaction(record(1))
    path = store.export_jsonl(out)
    with open(path, "a") as fh:
        fh.write('{"id": "chatcmpl-broken", "crea')
    store.log_interaction(record(2))
    store.export_jsonl(out)
    assert [r["id"] for r in read_jsonl(path)] == ["chatcmpl-0001", "chatcmpl-0002"]


@pytest.mark.parametrize(("target", "org"), [("chatcmpl-9999", None), ("chatcmpl-0001", "org-other")])
def test_feedback_for_unknown_or_foreign_id_is_refused(store: LogStore, target: str, org: str | None):
    store.log_interaction(record(1, org="org-1"))
    with pytest.raises(UnknownInteraction):
        store.add_feedback(target, {"thumbs": -1}, org_id=org)


def test_feedback_for_a_failed_request_is_refused(store: LogStore):
    store.log_interaction(record(1), status="error")
    with pytest.raises(UnknownInteraction):
        store.add_feedback("chatcmpl-0001", {"thumbs": 1})
    with pytest.raises(ValueError):
        store.add_feedback("chatcmpl-0001", {})


def test_no_row_lost_under_concurrent_writers(store: LogStore, tmp_path: Path):
    def writer(worker: int) -> None:
        for j in range(25):
            i = worker * 100 + j
            store.log_interaction(record(i))
            store.add_feedback(f"chatcmpl-{i:04d}", {"customer_rating": 5})
            if j % 5 == 0:
                store.export_jsonl(tmp_path / "input")

    with ThreadPoolExecutor(max_workers=16) as pool:
        for future in [pool.submit(writer, w) for w in range(16)]:
            future.result(timeout=120)  # re-raises a writer's error
    assert store.count() == 400
    rows = read_jsonl(store.export_jsonl(tmp_path / "input"))
    assert len({r["id"] for r in rows if "id" in r}) == 400
    assert sum("feedback_for" in r for r in rows) == 400


def test_module_export_uses_the_configured_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOMEGROWN_HOME", str(tmp_path / "home"))
    url = f"sqlite:///{tmp_path / 'configured.sqlite'}"
    monkeypatch.setenv("HOMEGROWN_LOG_DB_URL", url)
    db = LogStore(url)
    db.log_interaction(record(7))
    db.close()
    rows = read_jsonl(export_jsonl(tmp_path / "input"))
    assert [r["id"] for r in rows] == ["chatcmpl-0007"]


# -- provenance and private files --------------------------------------------------------------------------

APP = {"source": "gateway", "key_id": "key-app", "role": "app"}
ADMIN = {"source": "gateway", "key_id": "key-admin", "role": "admin"}


def test_export_writes_each_fields_provenance_and_demotes_untrusted_corrections(store: LogStore, tmp_path: Path):
    store.log_interaction(record(1))
    store.add_feedback("chatcmpl-0001", {"thumbs": 1, "admin_correction": "poison"}, provenance=APP)
    store.add_feedback("chatcmpl-0001", {"admin_correction": "right"}, provenance=ADMIN)
    rows = read_jsonl(store.export_jsonl(tmp_path / "input"))
    app_event, admin_event = rows[1], rows[2]
    assert app_event == {
        "feedback_for": "chatcmpl-0001", "created_at": app_event["created_at"],
        "thumbs": 1, "thumbs_provenance": APP,
        SUGGESTED_CORRECTION: "poison", SUGGESTED_CORRECTION + "_provenance": APP,
    }
    assert admin_event["admin_correction"] == "right" and admin_event["admin_correction_provenance"] == ADMIN
    for row in rows:
        assert_interaction_format(row)
    assert store.feedback_events("chatcmpl-0001")[0]["fields"]["admin_correction"] == "poison", "stored as given"


def test_database_and_export_are_private(store: LogStore, tmp_path: Path):
    store.log_interaction(record(1))
    path = store.export_jsonl(tmp_path / "input")
    for file in (tmp_path / "log.sqlite", tmp_path / "log.sqlite-wal", path):
        assert file.exists() and stat.S_IMODE(file.stat().st_mode) == 0o600, file


def test_an_export_made_before_exports_were_private_becomes_private(store: LogStore, tmp_path: Path):
    out = tmp_path / "input"
    out.mkdir()
    (out / EXPORT_FILE).write_text("")
    os.chmod(out / EXPORT_FILE, 0o644)
    store.log_interaction(record(1))
    assert stat.S_IMODE(store.export_jsonl(out).stat().st_mode) == 0o600


def test_an_older_database_gets_the_new_columns(tmp_path: Path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            "CREATE TABLE interactions (id VARCHAR(80) PRIMARY KEY, created_at VARCHAR(32), conversation_id "
            "VARCHAR(200), org_id VARCHAR(200), model VARCHAR(200), route VARCHAR(32), status VARCHAR(16), "
            "latency_ms FLOAT, prompt_tokens INTEGER, completion_tokens INTEGER, record JSON, version INTEGER, "
            "exported_version INTEGER, pending_export BOOLEAN);"
            "CREATE TABLE feedback_events (seq INTEGER PRIMARY KEY AUTOINCREMENT, feedback_for VARCHAR(80), "
            "created_at VARCHAR(32), fields JSON, exported BOOLEAN);"
        )
    db = LogStore(f"sqlite:///{path}")
    db.log_interaction(record(1))
    db.add_feedback("chatcmpl-0001", {"thumbs": 1}, provenance=APP)
    assert db.feedback_events()[0]["provenance"] == APP
    db.close()

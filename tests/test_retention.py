"""Retention and forgetting: old raw logs deleted or anonymised, a customer's rows removed everywhere."""

from __future__ import annotations

import json
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from homegrown.cli import main
from homegrown.data.forget import FORGET_LOG, forget, forget_in_state
from homegrown.data.ingest import ingest, load_interactions, load_optout, load_quarantine
from homegrown.gateway.logstore import LogStore, iso_utc, start_retention

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PII = "Call Jane Doe at jane.doe@example.com or +1 415 555 0132."


def record(
    rid: str, *, days_old: float, org: str = "org-1", conversation: str | None = None, now: datetime = NOW
) -> dict:
    return {
        "id": rid,
        "conversation_id": conversation or f"c-{rid}",
        "created_at": iso_utc(now - timedelta(days=days_old)),
        "org_id": org,
        "example_type": "faq",
        "model": "homegrown:v1",
        "messages": [{"role": "user", "content": PII}, {"role": "assistant", "content": "We will call Jane."}],
        "tools": None,
        "metadata": {"route": "champion", "latency_ms": 1.0, "prompt_tokens": 3, "completion_tokens": 3,
                     "user": "jane.doe@example.com",
                     "provenance": {"source": "gateway", "key_id": "key-1", "role": "app"}},
    }


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOMEGROWN_HOME", str(tmp_path / "home"))
    db = LogStore(f"sqlite:///{tmp_path / 'log.sqlite'}")
    db.log_interaction(record("old-1", days_old=45))
    db.log_interaction(record("old-2", days_old=31))
    db.log_interaction(record("new-1", days_old=2))
    db.add_feedback("old-1", {"admin_correction": "Mail jane.doe@example.com"}, created_at=iso_utc(NOW - timedelta(days=44)))
    db.add_feedback("new-1", {"thumbs": 1}, created_at=iso_utc(NOW - timedelta(days=1)))
    yield db
    db.close()


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- retention ---------------------------------------------------------------------------------------------


def test_retention_deletes_old_rows_from_the_log_and_the_export(store: LogStore, tmp_path: Path):
    export = store.export_jsonl(tmp_path / "input")
    assert len(lines(export)) == 5
    result = store.apply_retention(30, now=NOW)
    assert result["interactions"] == 2 and result["feedback_events"] == 1 and result["export_lines"] == 3
    assert {r["id"] for r in store.records()} == {"new-1"}
    assert [e["feedback_for"] for e in store.feedback_events()] == ["new-1"]
    assert [r.get("id") or r["feedback_for"] for r in lines(export)] == ["new-1", "new-1"]
    assert mode(export) == 0o600, "the rewritten export stays private"
    assert store.apply_retention(30, now=NOW)["interactions"] == 0, "a second pass finds nothing"
    assert store.apply_retention(0, now=NOW)["action"] == "off"


def test_retention_can_anonymise_instead(store: LogStore, tmp_path: Path):
    export = store.export_jsonl(tmp_path / "input")
    result = store.apply_retention(30, action="anonymise", now=NOW)
    assert result["interactions"] == 2 and result["feedback_events"] == 1
    old = store.get_interaction("old-1")
    text = json.dumps(old)
    assert "jane.doe@example.com" not in text and "555 0132" not in text
    assert "[EMAIL" in old["messages"][0]["content"] and old["metadata"]["anonymised_at"]
    assert "user" not in old["metadata"]
    assert "jane.doe@example.com" in json.dumps(store.get_interaction("new-1")), "recent rows are untouched"
    exported = {r.get("id") or f"fb-{r['feedback_for']}": r for r in lines(export)}
    assert "jane.doe@example.com" not in json.dumps([exported["old-1"], exported["old-2"], exported["fb-old-1"]])
    assert "jane.doe@example.com" in json.dumps(exported["new-1"])
    assert store.apply_retention(30, action="anonymise", now=NOW)["interactions"] == 0


def test_the_gateway_can_run_retention_in_the_background(tmp_path: Path):
    store = LogStore(f"sqlite:///{tmp_path / 'live.sqlite'}")
    now = datetime.now(UTC)
    store.log_interaction(record("live-old", days_old=40, now=now))
    store.log_interaction(record("live-new", days_old=1, now=now))
    stop = start_retention(store, days=30, every_s=3600)
    try:
        deadline = time.monotonic() + 20
        while store.count() != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert {r["id"] for r in store.records()} == {"live-new"}
    finally:
        stop.set()
        store.close()
    assert not start_retention(store, days=0).is_set(), "days=0 starts nothing and keeps everything"


# -- forget ------------------------------------------------------------------------------------------------


def test_forget_an_org_everywhere_and_keep_it_out_of_future_datasets(tmp_path: Path):
    db_url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    store = LogStore(db_url)
    store.log_interaction(record("a-1", days_old=1, org="org-gone"))
    store.log_interaction(record("a-2", days_old=1, org="org-gone"))
    store.log_interaction(record("b-1", days_old=1, org="org-stays"))
    store.add_feedback("a-1", {"thumbs": 1})
    store.add_feedback("b-1", {"thumbs": 1})
    store.export_jsonl(tmp_path / "input")
    bad = {"id": "a-bad", "org_id": "org-gone", "created_at": "not a time", "prompt": "x", "response": "y"}
    (tmp_path / "input" / "imported.jsonl").write_text(json.dumps(bad) + "\n")
    state = tmp_path / "state.sqlite"
    ingest(tmp_path / "input", state)
    assert len(load_quarantine(state)) == 1
    store.close()

    entry = forget(org_id="org-gone", log_db_url=db_url, state_db=state, forget_log=tmp_path / FORGET_LOG, by="dpo")
    assert entry["gateway_log"]["interactions"] == 2 and entry["gateway_log"]["feedback_events"] == 1
    assert entry["gateway_log"]["ids"] == ["a-1", "a-2"] and entry["gateway_log"]["export_lines"] == 3
    assert entry["ingestion_state"]["interactions"] == 2 and entry["ingestion_state"]["quarantined"] == 1
    assert entry["by"] == "dpo" and entry["org_id"] == "org-gone" and entry["at"]

    store = LogStore(db_url)
    assert {r["id"] for r in store.records()} == {"b-1"}
    store.close()
    export = tmp_path / "input" / "gateway-interactions.jsonl"
    assert "org-gone" not in export.read_text() and "a-1" not in export.read_text()
    assert set(load_interactions(state)["id"]) == {"b-1"} and len(load_quarantine(state)) == 0

    # Later ingestion re-reads the rewritten export; the org stays on the opt-out list curation reads.
    (tmp_path / "input" / "later.jsonl").write_text(json.dumps(record("a-3", days_old=0, org="org-gone")) + "\n")
    result = ingest(tmp_path / "input", state)
    assert "org-gone" in result.opted_out_orgs and "org-gone" in load_optout(state)
    assert set(load_interactions(state)["id"]) == {"b-1", "a-3"}

    log = lines(tmp_path / FORGET_LOG)
    assert len(log) == 1 and log[0]["gateway_log"]["ids"] == ["a-1", "a-2"]
    assert mode(tmp_path / FORGET_LOG) == 0o600


def test_forget_a_conversation(tmp_path: Path):
    db_url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    store = LogStore(db_url)
    store.log_interaction(record("t-1", days_old=1, conversation="conv-x"))
    store.log_interaction(record("t-2", days_old=1, conversation="conv-x"))
    store.log_interaction(record("t-3", days_old=1, conversation="conv-y"))
    store.add_feedback("t-2", {"customer_rating": 5})
    store.export_jsonl(tmp_path / "input")
    state = tmp_path / "state.sqlite"
    ingest(tmp_path / "input", state)
    store.close()

    entry = forget(conversation_id="conv-x", log_db_url=db_url, state_db=state, forget_log=tmp_path / FORGET_LOG)
    assert entry["gateway_log"]["ids"] == ["t-1", "t-2"] and entry["ingestion_state"]["ids"] == ["t-1", "t-2"]
    assert entry["ingestion_state"]["feedback"] == 1 and not entry["ingestion_state"]["opted_out"]
    assert set(load_interactions(state)["id"]) == {"t-3"}
    assert load_optout(state) == set(), "forgetting a conversation opts no organisation out"

    # the business's own file with the conversation comes in (again): the conversation stays out
    (tmp_path / "input" / "own-copy.jsonl").write_text(
        json.dumps(record("t-9", days_old=0, conversation="conv-x")) + "\n"
        + json.dumps(record("t-10", days_old=0, conversation="conv-z")) + "\n")
    ingest(tmp_path / "input", state)
    assert set(load_interactions(state)["id"]) == {"t-3", "t-10"}


def test_forget_needs_exactly_one_target(tmp_path: Path):
    with pytest.raises(ValueError, match="exactly one"):
        forget_in_state(tmp_path / "none.sqlite", org_id="a", conversation_id="b")
    assert forget_in_state(tmp_path / "none.sqlite", org_id="a")["interactions"] == 0
    assert not (tmp_path / "none.sqlite").exists(), "a missing state database is not created"


def test_the_cli_forgets_and_applies_retention(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    home = tmp_path / "home"
    db_url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    monkeypatch.setenv("HOMEGROWN_HOME", str(home))
    monkeypatch.setenv("HOMEGROWN_LOG_DB_URL", db_url)
    store = LogStore(db_url)
    now = datetime.now(UTC)
    store.log_interaction(record("c-1", days_old=400, org="org-old", now=now))
    store.log_interaction(record("c-2", days_old=1, org="org-gone", now=now))
    store.log_interaction(record("c-3", days_old=1, org="org-stays", now=now))
    store.close()

    assert main(["forget", "--org", "org-gone", "--by", "support ticket 42"]) == 0
    assert "1 interactions" in capsys.readouterr().out
    assert main(["retention", "--days", "30"]) == 0
    assert json.loads(capsys.readouterr().out)["interactions"] == 1
    store = LogStore(db_url)
    assert {r["id"] for r in store.records()} == {"c-3"}
    store.close()
    log = lines(home / FORGET_LOG)
    assert log[0]["by"] == "support ticket 42" and log[0]["gateway_log"]["ids"] == ["c-2"]

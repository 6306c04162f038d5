"""Trust levels: key roles, provenance on every logged row, and corrections that count only from trusted keys.

The gateway runs in process (FastAPI's TestClient) with the real SmolLM2 GGUF on llama.cpp and a SQLite log;
its export goes through the real ingestion and quality policy, as the pipeline does with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from homegrown.data.ingest import ingest, load_interactions
from homegrown.data.quality import QualityPolicy, score_interactions, training_provenance
from homegrown.gateway.app import create_app
from homegrown.gateway.backends import BackendPool, LlamaCppBackend, find_base_gguf
from homegrown.gateway.logstore import SUGGESTED_CORRECTION, LogStore
from homegrown.gateway.settings import GatewaySettings, key_id, local_api_key

APP_KEY, OTHER_APP_KEY, REVIEWER_KEY, ADMIN_KEY = "app-key", "app-key-2", "reviewer-key", "admin-key"
ORG = "org-a"
QUESTION = [{"role": "user", "content": "Say hello."}]
CORRECTION = "Hello! Welcome to My Hibachi, how can I help?"


def make_settings(folder: Path, **overrides) -> GatewaySettings:
    values = {
        "api_keys": [f"{APP_KEY}:{ORG}", OTHER_APP_KEY],
        "reviewer_api_keys": [REVIEWER_KEY],
        "admin_api_keys": [ADMIN_KEY],
        "log_db_url": f"sqlite:///{folder / 'log.sqlite'}",
        "models_file": folder / "models.json",
        "default_to_base_model": False,
        "n_ctx": 512,
        "n_threads": 1,
        "rate_limit_per_minute": 0,
        "log_spool_dir": folder / "spool",
    }
    values.update(overrides)
    return GatewaySettings(**values)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("trust")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOMEGROWN_HOME", str(folder))
        yield folder


@pytest.fixture(scope="module")
def gateway(home: Path) -> Iterator[tuple[TestClient, LogStore]]:
    settings = make_settings(home)
    model = LlamaCppBackend(find_base_gguf(), n_ctx=512, n_threads=1, name="homegrown:trust", timeout_s=120)
    store = LogStore(settings.log_db_url)
    app = create_app(settings, pool=BackendPool({"champion": model}), store=store)
    with TestClient(app) as client:
        yield client, store
    store.close()
    model.close()


def auth(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


def ask(client: TestClient, key: str, **extra) -> str:
    body = {"model": "homegrown", "messages": QUESTION, "max_tokens": 4, "temperature": 0, **extra.pop("body", {})}
    response = client.post("/v1/chat/completions", headers=auth(key, **extra), json=body)
    assert response.status_code == 200, response.text
    return response.json()["id"]


def feedback(client: TestClient, key: str, **fields) -> httpx.Response:
    return client.post("/v1/feedback", headers=auth(key), json=fields)


# -- key roles ---------------------------------------------------------------------------------------------


def test_roles_come_from_the_key_lists(home: Path):
    grants = make_settings(home).key_grants()
    assert grants[APP_KEY].role == "app" and grants[APP_KEY].org == ORG
    assert grants[OTHER_APP_KEY].role == "app" and grants[OTHER_APP_KEY].org is None
    assert grants[REVIEWER_KEY].role == "reviewer" and grants[ADMIN_KEY].role == "admin"
    assert grants[local_api_key()].role == "admin", "the generated operator key is an admin key"


def test_an_empty_admin_list_makes_no_app_key_admin(home: Path):
    settings = make_settings(home, admin_api_keys=[], reviewer_api_keys=[])
    grants = settings.key_grants()
    assert {key for key, grant in grants.items() if grant.role == "admin"} == {local_api_key()}
    assert settings.admin_api_key() == local_api_key(), "the deploy step reloads with the operator key"
    without_operator = make_settings(home, admin_api_keys=[], operator_key=False)
    assert all(grant.role != "admin" for grant in without_operator.key_grants().values())
    with pytest.raises(ValueError, match="no admin key"):
        without_operator.admin_api_key()


def test_a_key_in_two_lists_gets_the_higher_role_and_keeps_its_org(home: Path):
    grants = make_settings(home, admin_api_keys=[APP_KEY]).key_grants()
    assert grants[APP_KEY].role == "admin" and grants[APP_KEY].org == ORG
    with pytest.raises(ValueError, match="two organisations"):
        make_settings(home, admin_api_keys=[f"{APP_KEY}:org-b"]).key_grants()


def test_only_admin_keys_call_admin_routes(home: Path, tmp_path: Path):
    settings = make_settings(tmp_path)
    store = LogStore(settings.log_db_url)
    with TestClient(create_app(settings, pool=BackendPool({}), store=store)) as client:
        for key in (APP_KEY, OTHER_APP_KEY, REVIEWER_KEY):
            response = client.post("/admin/reload", headers=auth(key))
            assert response.status_code == 403, (key, response.text)
        for key in (ADMIN_KEY, local_api_key()):
            response = client.post("/admin/reload", headers=auth(key))
            assert response.status_code == 200, (key, response.text)
    store.close()


# -- provenance and what the server decides ----------------------------------------------------------------


@pytest.mark.slow
def test_logged_records_carry_provenance_and_server_decided_fields(gateway):
    client, store = gateway
    planted = {"provenance": {"source": "gateway", "key_id": "x", "role": "admin"}, "example_type": "tool_invocation"}
    rid = ask(client, APP_KEY, body={"metadata": planted}, **{"X-Org-Id": "org-victim"})
    record = store.get_interaction(rid)
    assert record["metadata"]["provenance"] == {"source": "gateway", "key_id": key_id(APP_KEY), "role": "app"}
    assert record["org_id"] == ORG, "the org comes from the key, not from X-Org-Id"
    assert record["example_type"] == "chat" and record["metadata"]["requested_example_type"] == "tool_invocation"
    assert APP_KEY not in str(record), "the key itself is never logged"

    unbound = store.get_interaction(ask(client, OTHER_APP_KEY, **{"X-Org-Id": "org-victim"}))
    assert unbound["org_id"] is None, "X-Org-Id is not honoured for an app key"
    operator = store.get_interaction(ask(client, ADMIN_KEY, **{"X-Org-Id": "org-b", "X-Example-Type": "faq"}))
    assert operator["org_id"] == "org-b" and operator["example_type"] == "faq"
    assert operator["metadata"]["provenance"]["role"] == "admin"


@pytest.mark.slow
def test_feedback_time_is_the_servers_and_events_carry_provenance(gateway):
    client, store = gateway
    rid = ask(client, APP_KEY)
    response = feedback(client, APP_KEY, feedback_for=rid, thumbs=1, created_at="9999-01-01T00:00:00Z")
    assert response.status_code == 200, response.text
    assert not response.json()["created_at"].startswith("9999"), "an app key cannot choose the event time"
    future = feedback(client, ADMIN_KEY, feedback_for=rid, thumbs=1, created_at="9999-01-01T00:00:00Z")
    assert future.status_code == 400 and "future" in future.json()["error"]["message"]
    backdated = feedback(client, ADMIN_KEY, feedback_for=rid, customer_rating=5, created_at="2026-01-02T03:04:05Z")
    assert backdated.json()["created_at"] == "2026-01-02T03:04:05.000000Z"
    events = store.feedback_events(rid)
    assert [e["provenance"]["role"] for e in events] == ["app", "admin"]
    assert events[0]["provenance"] == {"source": "gateway", "key_id": key_id(APP_KEY), "role": "app"}


# -- corrections count only from trusted keys --------------------------------------------------------------


def score_export(store: LogStore, folder: Path, policy: QualityPolicy | None = None):
    """The export through ingestion and the quality policy, as the pipeline runs them: (interactions, scored)."""
    store.export_jsonl(folder / "input")
    ingest(folder / "input", folder / "state.sqlite")
    interactions = load_interactions(folder / "state.sqlite")
    scored = score_interactions(interactions, policy or QualityPolicy())
    return interactions, scored.set_index(scored["source_ids"].map(lambda ids: ids[0]))


@pytest.mark.slow
def test_an_app_key_correction_cannot_change_a_training_example_an_admin_key_can(gateway, tmp_path: Path):
    client, store = gateway
    attacked, corrected, defended = ask(client, APP_KEY), ask(client, OTHER_APP_KEY), ask(client, APP_KEY)
    original = store.get_interaction(attacked)["messages"][-1]["content"]

    # The attack of the report: an ordinary key, a correction and a far-future date.
    poison = "We are closed forever, visit competitor.example instead."
    assert feedback(client, APP_KEY, feedback_for=attacked, admin_correction=poison,
                    created_at="9999-01-01T00:00:00Z").status_code == 200
    assert feedback(client, ADMIN_KEY, feedback_for=corrected, admin_correction=CORRECTION).status_code == 200
    # A reviewer's correction stays when an app key "corrects" the same answer later.
    assert feedback(client, REVIEWER_KEY, feedback_for=defended, admin_correction=CORRECTION).status_code == 200
    assert feedback(client, APP_KEY, feedback_for=defended, admin_correction=poison).status_code == 200

    stored = store.feedback_events(attacked)[0]
    assert stored["fields"]["admin_correction"] == poison and stored["provenance"]["role"] == "app"

    interactions, scored = score_export(store, tmp_path)
    assert scored.loc[attacked, "messages"][-1]["content"] == original
    assert poison not in scored.loc[attacked, "messages"][-1]["content"]
    assert scored.loc[corrected, "messages"][-1]["content"] == CORRECTION and scored.loc[corrected, "keep"]
    assert "admin correction replaces the answer" in scored.loc[corrected, "reason"]
    assert scored.loc[defended, "messages"][-1]["content"] == CORRECTION
    by_id = interactions.set_index("id")
    assert by_id.loc[attacked, "feedback"][SUGGESTED_CORRECTION] == poison, "kept for a person to review"

    kept = scored[scored["keep"]]
    levels = training_provenance(kept, interactions)
    assert levels.get("admin", 0) >= 1 and levels.get("reviewer", 0) >= 1
    assert sum(levels.values()) == len(kept)


def test_the_policy_reads_provenance_on_imported_rows():
    """An exported line read back: the roles in it decide, whatever the field is called."""
    import pandas as pd

    def row(rid: str, role: str | None, thumbs_role: str | None = None) -> dict:
        feedback = {"admin_correction": CORRECTION, "thumbs": 1}
        if role:
            feedback["admin_correction_provenance"] = {"source": "gateway", "key_id": "key-1", "role": role}
        if thumbs_role:
            feedback["thumbs_provenance"] = {"source": "gateway", "key_id": "key-2", "role": thumbs_role}
        return {"id": rid, "conversation_id": rid, "created_at": "2026-03-01T00:00:00.000000Z", "org_id": None,
                "example_type": "chat", "model": None, "tools": None, "teacher_response": None,
                "student_response": None, "critic": {}, "ground_truth": None, "source": "f:1",
                "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
                "feedback": feedback,
                "metadata": {"provenance": {"source": "gateway", "key_id": "key-0", "role": "app"}} if role else {}}

    frame = pd.DataFrame([row("app", "app"), row("rev", "reviewer"), row("imported", None),
                          row("thumbs-app", "app", thumbs_role="app")])
    scored = score_interactions(frame, QualityPolicy()).set_index(frame["id"])
    assert scored.loc["app", "messages"][-1]["content"] == "Hello."
    assert "ignored a correction from role app" in scored.loc["app", "reason"]
    assert scored.loc["rev", "messages"][-1]["content"] == CORRECTION
    assert scored.loc["imported", "messages"][-1]["content"] == CORRECTION, "a file's own corrections are trusted"
    assert "thumbs up +3" in scored.loc["thumbs-app", "reason"], "an app key's thumbs count by default"

    strict = score_interactions(frame, QualityPolicy(trusted_feedback_only=True)).set_index(frame["id"])
    assert "thumbs up" not in strict.loc["thumbs-app", "reason"]
    assert "thumbs up +3" in strict.loc["rev", "reason"] or "admin correction" in strict.loc["rev", "reason"]

    no_import = QualityPolicy(correction_roles=("admin",))
    assert score_interactions(frame, no_import).set_index(frame["id"]).loc["imported", "messages"][-1]["content"] == "Hello."
    with pytest.raises(ValueError, match="unknown roles"):
        QualityPolicy(correction_roles=("boss",))

"""The gateway end to end: real uvicorn servers on 127.0.0.1, the real SmolLM2 GGUF on llama.cpp, the real
``openai`` client, SQLite logs. A second gateway instance plays the premium OpenAI-compatible API."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest
from loopback import serve_app
from openai import OpenAI

from homegrown.gateway.app import create_app
from homegrown.gateway.backends import (
    BackendError,
    BackendPool,
    BackendTimeout,
    LlamaCppBackend,
    OpenAICompatibleBackend,
    build_fallback,
    find_base_gguf,
)
from homegrown.gateway.logstore import LogStore
from homegrown.gateway.routing import canary_bucket
from homegrown.gateway.schemas import ChatCompletionRequest
from homegrown.gateway.settings import (
    GatewaySettings,
    ModelSpec,
    key_id,
    local_api_key,
    read_models_file,
    write_models_file,
)

KEY = "test-key"
ORG = "org-test"
PREMIUM_KEY = "premium-key"
QUESTION = [{"role": "user", "content": "Say hello."}]


# -- helpers -----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout_s: float = 60, what: str = "condition", poll_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}")


def settings_for(folder: Path, **overrides) -> GatewaySettings:
    values = {
        "api_keys": [f"{KEY}:{ORG}", "other-key"],
        "log_db_url": f"sqlite:///{folder / 'log.sqlite'}",
        "models_file": folder / "models.json",
        "default_to_base_model": False,
        "n_threads": 1,
        "n_ctx": 512,
    }
    values.update(overrides)
    return GatewaySettings(**values)


def client(url: str, key: str = KEY) -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)


def load(gguf: Path, name: str) -> LlamaCppBackend:
    return LlamaCppBackend(gguf, n_ctx=512, n_threads=1, name=name, timeout_s=120)


# -- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOMEGROWN_HOME", str(folder))
        yield folder


@pytest.fixture(scope="module")
def gguf() -> Path:
    return find_base_gguf()


@pytest.fixture(scope="module")
def premium(home: Path, gguf: Path) -> Iterator[str]:
    """A second gateway serving the model as "premium-model": the premium API of the tests."""
    folder = home / "premium"
    folder.mkdir()
    pool = BackendPool({"champion": load(gguf, "premium-model")})
    app = create_app(settings_for(folder, api_keys=[PREMIUM_KEY]), pool=pool)
    with serve_app(app) as url:
        yield url
    pool.close()


@pytest.fixture(scope="module")
def champion(gguf: Path) -> Iterator[LlamaCppBackend]:
    backend = load(gguf, "homegrown:test")
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def gateway(
    home: Path, premium: str, champion: LlamaCppBackend
) -> Iterator[tuple[str, LogStore, GatewaySettings]]:
    """The gateway under test: the champion locally, the premium API as fallback and for "refund" prompts."""
    folder = home / "main"
    folder.mkdir()
    settings = settings_for(
        folder,
        fallback_base_url=f"{premium}/v1",
        fallback_model="premium-model",
        fallback_api_key=PREMIUM_KEY,
        premium_keywords=["refund"],
        fallback_usd_per_1k_prompt_tokens=0.15,
        fallback_usd_per_1k_completion_tokens=0.6,
    )
    store = LogStore(settings.log_db_url)
    app = create_app(settings, pool=BackendPool({"champion": champion}), store=store)
    # The fallback backend comes from the settings, as in production.
    app.state.gateway.pool.swap("fallback", build_fallback(settings))
    with serve_app(app) as url:
        yield url, store, settings
    store.close()


# -- settings and configuration (fast) ---------------------------------------------------------------------


def test_api_keys_parse_and_bind_organisations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOMEGROWN_HOME", str(tmp_path))
    monkeypatch.setenv("HOMEGROWN_API_KEYS", "k1:org-1, k2 ,")
    monkeypatch.setenv("HOMEGROWN_PREMIUM_KEYWORDS", "refund,legal advice")
    settings = GatewaySettings()
    assert settings.key_orgs() == {"k1": "org-1", "k2": None}
    assert settings.premium_keywords == ["refund", "legal advice"]
    assert settings.log_db_url == f"sqlite:///{tmp_path / 'gateway' / 'interactions.sqlite'}"


def test_generated_key_is_created_once_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOMEGROWN_HOME", str(tmp_path))
    monkeypatch.delenv("HOMEGROWN_API_KEYS", raising=False)
    first = GatewaySettings().client_api_key()
    assert first.startswith("hg-") and len(first) > 20
    assert GatewaySettings().client_api_key() == first == local_api_key()
    assert (tmp_path / "gateway" / "api_key").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "overrides",
    [
        {"canary_share": 1.5},
        {"fallback_base_url": "http://x/v1"},
        {"default_role": "fallback"},
        {"default_role": "teacher"},
        {"max_tokens_default": 100, "max_tokens_limit": 10},
        {"api_keys": [":org-without-key"]},
    ],
)
def test_invalid_settings_fail_early(overrides, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOMEGROWN_HOME", str(tmp_path))
    with pytest.raises(ValueError):
        GatewaySettings(**overrides)


def test_settings_survive_the_trip_through_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOMEGROWN_HOME", str(tmp_path))
    original = settings_for(
        tmp_path,
        fallback_base_url="http://x/v1",
        fallback_model="m",
        fallback_api_key="s",
        premium_keywords=["a", "b c"],
        shadow=True,
        canary_share=0.25,
    )
    for name, value in original.to_env().items():
        monkeypatch.setenv(name, value)
    assert GatewaySettings() == original


def test_models_file_round_trip_and_validation(tmp_path: Path):
    path = tmp_path / "models.json"
    assert read_models_file(path).specs() == {}
    champion = ModelSpec(name="v1", gguf_path="/m/v1.gguf", version="1")
    challenger = ModelSpec(name="v2", base_url="http://vllm:8000/v1", model="v2-lora")
    write_models_file(path, champion, challenger)
    assert read_models_file(path).specs() == {"champion": champion, "challenger": challenger}
    with pytest.raises(ValueError, match="exactly one"):
        ModelSpec(name="both", gguf_path="/m.gguf", base_url="http://x")
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_models_file(path)


def test_pool_rejects_unknown_roles():
    with pytest.raises(ValueError, match="unknown role"):
        BackendPool({"teacher": object()})  # type: ignore[dict-item]


def test_missing_gguf_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="GGUF model file not found"):
        LlamaCppBackend(tmp_path / "missing.gguf")


def test_unreachable_upstream_is_a_backend_error():
    backend = OpenAICompatibleBackend(f"http://127.0.0.1:{free_port()}/v1", "premium", timeout=5)
    request = ChatCompletionRequest(model="premium", messages=QUESTION)
    with pytest.raises(BackendError, match="premium"):
        backend.complete(request)
    with pytest.raises(BackendError):
        list(backend.stream(request))
    backend.close()


# -- backends with the real model --------------------------------------------------------------------------


@pytest.mark.slow
def test_swap_lets_the_request_in_flight_finish_on_the_old_backend(gguf: Path):
    old, new = load(gguf, "old"), load(gguf, "new")
    pool = BackendPool({"champion": old})
    request = ChatCompletionRequest(model="x", messages=QUESTION, max_tokens=2)
    lease = pool.acquire("champion")
    assert pool.swap("champion", new) is old
    assert pool.get("champion") is new
    assert lease.backend.complete(request).completion_tokens > 0, "the old backend still serves its lease"
    lease.release()
    with pytest.raises(BackendError, match="closed"):
        old.complete(request)
    assert pool.role_for_model("new") == "champion" and pool.role_for_model("old") is None
    pool.close()


@pytest.mark.slow
def test_local_backend_times_out_when_busy_or_slow(gguf: Path):
    backend = LlamaCppBackend(gguf, n_ctx=512, n_threads=1, timeout_s=0.3)
    request = ChatCompletionRequest(model="x", messages=QUESTION, max_tokens=400)
    with pytest.raises(BackendTimeout, match="within"):
        backend.complete(request)  # 400 tokens take longer than 0.3 s
    busy = backend.stream(ChatCompletionRequest(model="x", messages=QUESTION, max_tokens=2))
    next(busy)  # holds the model
    with pytest.raises(BackendTimeout, match="busy"):
        backend.complete(request)
    busy.close()
    backend.close()


# -- the HTTP API with the real model ----------------------------------------------------------------------


@pytest.mark.slow
def test_chat_completion_is_answered_and_logged(gateway):
    url, store, _ = gateway
    result = client(url).chat.completions.create(
        model="homegrown",
        messages=QUESTION,
        max_tokens=8,
        temperature=0,
        metadata={"conversation_id": "conv-1", "page": "menu"},
        extra_headers={"X-Example-Type": "faq"},
    )
    assert result.id.startswith("chatcmpl-")
    assert result.model == "homegrown:test"
    assert result.choices[0].message.content.strip()
    assert result.choices[0].finish_reason in {"stop", "length"}
    assert result.usage.prompt_tokens > 0 and 0 < result.usage.completion_tokens <= 8
    record = store.get_interaction(result.id)
    assert record["conversation_id"] == "conv-1"
    assert record["org_id"] == ORG and record["example_type"] == "faq" and record["model"] == "homegrown:test"
    assert record["messages"] == QUESTION + [
        {"role": "assistant", "content": result.choices[0].message.content}
    ]
    meta = record["metadata"]
    assert meta["route"] == "champion" and meta["routing_reason"] == "champion"
    assert meta["backend"] == "llama.cpp:homegrown:test" and meta["page"] == "menu"
    assert meta["completion_tokens"] == result.usage.completion_tokens and meta["latency_ms"] > 0
    assert meta["cost_estimate_usd"] == 0.0 and meta["shadow_answer"] is None


@pytest.mark.slow
def test_streamed_answer_matches_the_log(gateway):
    url, store, _ = gateway
    stream = client(url).chat.completions.create(
        model="homegrown",
        messages=QUESTION,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in {"stop", "length"}
    record = wait_for(lambda: store.get_interaction(chunks[0].id), what="the streamed record")
    assert record["messages"][-1] == {"role": "assistant", "content": text}
    assert record["metadata"]["stream"] is True


@pytest.mark.slow
def test_sse_wire_format(gateway):
    url, _, _ = gateway
    with httpx.stream(
        "POST",
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"model": "homegrown", "messages": QUESTION, "max_tokens": 3, "stream": True},
        timeout=60,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    first = json.loads(lines[0][6:])
    assert first["object"] == "chat.completion.chunk" and first["choices"][0]["delta"]["role"] == "assistant"


@pytest.mark.slow
def test_models_lists_the_loaded_models(gateway):
    url, _, _ = gateway
    models = {m.id: m.owned_by for m in client(url).models.list()}
    assert models == {"homegrown:test": "homegrown:champion", "premium-model": "homegrown:fallback"}


@pytest.mark.slow
@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_requests_without_a_valid_key_get_401(gateway, key):
    url, store, _ = gateway
    before = store.count()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.post(
        f"{url}/v1/chat/completions", headers=headers, json={"model": "homegrown", "messages": QUESTION}
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client(url, "not-a-key").models.list()
    # the refused request is one row, an error row with no content, never exported
    assert store.count() == before + 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "homegrown"}, "messages"),
        ({"model": "homegrown", "messages": []}, "messages"),
        ({"model": "homegrown", "messages": QUESTION, "temperature": "hot"}, "temperature"),
        ({"model": "homegrown", "messages": QUESTION, "temperature": 3}, "temperature"),
        ({"model": "homegrown", "messages": QUESTION, "n": 2}, None),
        ({"model": "homegrown", "messages": QUESTION, "max_tokens": 100_000}, "max_tokens"),
        ({"model": "homegrown", "messages": [{"role": "wizard", "content": "hi"}]}, "messages"),
        (
            {"model": "homegrown", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages",
        ),
        ("{not json", None),
        ({"model": "homegrown", "messages": QUESTION, "response_format": {"type": "yaml"}}, "response_format"),
        ({"model": "homegrown", "messages": QUESTION, "response_format": {"type": "json_schema"}}, "response_format"),
        (
            {"model": "homegrown", "messages": QUESTION,
             "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 7}}}},
            "response_format",
        ),
    ],
)
def test_bad_requests_get_400_in_openai_shape(gateway, body, param):
    url, _, _ = gateway
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    content = body if isinstance(body, str) else json.dumps(body)
    response = httpx.post(f"{url}/v1/chat/completions", headers=headers, content=content)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    if param is not None:
        assert error["param"] == param


@pytest.mark.slow
def test_json_schema_response_format_constrains_the_local_model(gateway):
    """The base model left alone answers prose; asked for a schema it answers JSON that follows it."""
    url, store, _ = gateway
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "maxLength": 40}, "price": {"type": "integer"}},
        "required": ["answer", "price"],
        "additionalProperties": False,
    }
    result = client(url).chat.completions.create(
        model="homegrown", messages=QUESTION, max_tokens=60, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "quote", "schema": schema}},
    )
    body = json.loads(result.choices[0].message.content)
    jsonschema.validate(body, schema)
    free = client(url).chat.completions.create(model="homegrown", messages=QUESTION, max_tokens=12, temperature=0)
    assert not free.choices[0].message.content.lstrip().startswith("{")
    assert store.get_interaction(result.id)["messages"][-1]["content"] == result.choices[0].message.content


@pytest.mark.slow
def test_feedback_round_trip_into_the_export(gateway, tmp_path: Path):
    url, store, _ = gateway
    answer = client(url).chat.completions.create(model="homegrown", messages=QUESTION, max_tokens=4)
    headers = {"Authorization": f"Bearer {KEY}"}
    feedback = {
        "feedback_for": answer.id,
        "thumbs": 1,
        "outcome": "accepted_with_edits",
        "edit_ratio": 0.2,
        "customer_rating": 5,
        "led_to_booking": True,
        "admin_correction": "Hello! Welcome to My Hibachi.",
    }
    response = httpx.post(f"{url}/v1/feedback", headers=headers, json=feedback)
    assert response.status_code == 200, response.text
    assert response.json()["feedback_for"] == answer.id

    bad = [
        {"feedback_for": "chatcmpl-unknown", "thumbs": 1},
        {"feedback_for": answer.id, "thumbs": 2},
        {"feedback_for": answer.id, "thumbs": True},
        {"feedback_for": answer.id, "customer_rating": 9},
        {"feedback_for": answer.id},
        {"feedback_for": answer.id, "thumbs": 1, "mood": "happy"},
    ]
    statuses = [httpx.post(f"{url}/v1/feedback", headers=headers, json=b).status_code for b in bad]
    assert statuses == [404, 400, 400, 400, 400, 400]
    other_org = httpx.post(f"{url}/v1/feedback", headers={"Authorization": "Bearer other-key"}, json=feedback)
    assert other_org.status_code == 200, "an unbound key may give feedback on any answer"

    rows = [json.loads(line) for line in store.export_jsonl(tmp_path).read_text().splitlines()]
    records = [r for r in rows if r.get("id") == answer.id]
    events = [r for r in rows if r.get("feedback_for") == answer.id]
    assert len(records) == 1 and records[0]["messages"][-1]["role"] == "assistant"
    assert len(events) == 2
    # An app key's event carries its provenance per field; its correction is only a suggestion.
    provenance = {"source": "gateway", "key_id": key_id(KEY), "role": "app"}
    fields = {k: v for k, v in feedback.items() if k != "feedback_for"}
    fields["suggested_correction"] = fields.pop("admin_correction")
    assert events[0] == {"feedback_for": answer.id, "created_at": events[0]["created_at"], **fields,
                         **{f"{name}_provenance": provenance for name in fields}}


@pytest.mark.slow
def test_keyword_rule_routes_to_the_premium_api(gateway):
    url, store, _ = gateway
    answer = client(url).chat.completions.create(
        model="homegrown", messages=[{"role": "user", "content": "Can I get a refund?"}], max_tokens=4
    )
    assert answer.model == "premium-model"
    meta = store.get_interaction(answer.id)["metadata"]
    assert meta["route"] == "fallback" and meta["routing_reason"] == "rule:keyword:refund"
    assert meta["cost_estimate_usd"] > 0


@pytest.mark.slow
def test_health_and_metrics(gateway):
    url, _, _ = gateway
    assert httpx.get(f"{url}/health").json() == {
        "status": "ok", "models": {"champion": {"name": "homegrown:test"}, "fallback": {"name": "premium-model"}}}
    health = httpx.get(f"{url}/health", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert health["status"] == "ok"
    assert health["models"]["champion"]["name"] == "homegrown:test"
    assert health["models"]["fallback"]["name"] == "premium-model"
    client(url).chat.completions.create(model="homegrown", messages=QUESTION, max_tokens=2)
    assert httpx.get(f"{url}/metrics").status_code == 401
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert 'homegrown_gateway_requests_total{backend="homegrown:test",route="champion",status="ok"}' in text
    assert "homegrown_gateway_request_latency_seconds_bucket" in text
    assert 'homegrown_gateway_tokens_total{backend="homegrown:test",kind="completion"}' in text


@pytest.mark.slow
def test_fallback_when_the_local_model_fails(home: Path, gguf: Path, premium: str, tmp_path: Path):
    settings = settings_for(
        tmp_path,
        fallback_base_url=f"{premium}/v1",
        fallback_model="premium-model",
        fallback_api_key=PREMIUM_KEY,
    )
    write_models_file(settings.models_file, ModelSpec(name="doomed", gguf_path=str(gguf)))
    app = create_app(settings)  # loads models.json and the fallback like a deployment does
    gateway = app.state.gateway
    with serve_app(app) as url:
        api = client(url)
        first = api.chat.completions.create(model="homegrown", messages=QUESTION, max_tokens=3)
        assert first.model == "doomed"

        gateway.pool.get("champion").close()  # the local model dies
        second = api.chat.completions.create(model="homegrown", messages=QUESTION, max_tokens=3)
        assert second.model == "premium-model"
        meta = gateway.store.get_interaction(second.id)["metadata"]
        assert meta["route"] == "fallback" and meta["primary_route"] == "champion"
        assert (
            meta["routing_reason"].startswith("fallback: champion error:")
            and "closed" in meta["routing_reason"]
        )

        streamed = list(
            api.chat.completions.create(model="homegrown", messages=QUESTION, max_tokens=3, stream=True)
        )
        assert streamed[0].model == "premium-model"

        # Reloading a models.json that points at a missing file fails cleanly and changes nothing.
        write_models_file(
            settings.models_file, ModelSpec(name="ghost", gguf_path=str(tmp_path / "missing.gguf"))
        )
        reload = httpx.post(f"{url}/admin/reload", headers={"Authorization": f"Bearer {local_api_key()}"})
        assert reload.status_code == 400 and "missing.gguf" in reload.json()["error"]["message"]
        metrics = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
        assert 'homegrown_gateway_fallbacks_total{from_route="champion",reason="error"}' in metrics


@pytest.mark.slow
def test_missing_model_file_at_startup_serves_from_the_fallback(gguf: Path, premium: str, tmp_path: Path):
    settings = settings_for(
        tmp_path,
        fallback_base_url=f"{premium}/v1",
        fallback_model="premium-model",
        fallback_api_key=PREMIUM_KEY,
    )
    write_models_file(settings.models_file, ModelSpec(name="ghost", gguf_path=str(tmp_path / "missing.gguf")))
    app = create_app(settings)
    with serve_app(app) as url:
        health = httpx.get(f"{url}/health", headers={"Authorization": f"Bearer {KEY}"}).json()
        assert health["status"] == "degraded" and "missing.gguf" in health["errors"]["champion"]
        answer = client(url).chat.completions.create(model="homegrown", messages=QUESTION, max_tokens=3)
        assert answer.model == "premium-model"
        assert (
            app.state.gateway.store.get_interaction(answer.id)["metadata"]["routing_reason"]
            == "no_local_model"
        )


@pytest.mark.slow
def test_unusable_local_answer_falls_back(gateway, premium: str, champion: LlamaCppBackend, tmp_path: Path):
    # With a default limit of 2 tokens the local answer stops at the limit the client never asked for.
    settings = settings_for(
        tmp_path,
        fallback_base_url=f"{premium}/v1",
        fallback_model="premium-model",
        fallback_api_key=PREMIUM_KEY,
        max_tokens_default=2,
    )
    app = create_app(settings, pool=BackendPool({"champion": champion}))
    app.state.gateway.pool.swap("fallback", build_fallback(settings))
    with serve_app(app) as url:
        answer = client(url).chat.completions.create(
            model="homegrown", messages=[{"role": "user", "content": "Describe your restaurant in detail."}]
        )
        assert answer.model == "premium-model"
        meta = app.state.gateway.store.get_interaction(answer.id)["metadata"]
        assert meta["routing_reason"] == "fallback: champion unusable: truncated"


@pytest.mark.slow
def test_two_hundred_concurrent_requests_are_all_answered_and_logged(gateway):
    """20 clients against a queue of 8: the overflow gets 429 + Retry-After, which the openai client retries."""
    url, store, _ = gateway
    before = store.count()
    refused_before = _refused_rows(store)
    api = OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=20, timeout=120)

    def ask(i: int) -> str:
        result = api.chat.completions.create(
            model="homegrown", messages=QUESTION, max_tokens=1, metadata={"conversation_id": f"load-{i}"}
        )
        assert result.choices[0].message.content is not None
        return result.id

    with ThreadPoolExecutor(max_workers=20) as pool:
        ids = list(pool.map(ask, range(200)))
    assert len(set(ids)) == 200
    refused = _refused_rows(store) - refused_before
    assert store.count() - before == 200 + refused  # one row per request, the refused ones included
    assert all(store.get_interaction(i)["metadata"]["route"] == "champion" for i in ids[::20])


def _refused_rows(store: LogStore) -> int:
    from sqlalchemy import func, select

    from homegrown.gateway.logstore import InteractionRow

    with store.engine.connect() as connection:
        return connection.execute(
            select(func.count()).select_from(InteractionRow).where(InteractionRow.id.like("req-%"))).scalar_one()


@pytest.mark.slow
def test_canary_and_shadow_decisions_are_logged(gguf: Path, champion: LlamaCppBackend, tmp_path: Path):
    challenger = load(gguf, "homegrown:candidate")
    settings = settings_for(tmp_path, canary_share=0.5, shadow=True)
    app = create_app(settings, pool=BackendPool({"champion": champion, "challenger": challenger}))
    gateway = app.state.gateway
    with serve_app(app) as url:
        api = client(url)
        conversations = [f"conv-{i}" for i in range(6)]
        ids = {}
        for conv in conversations:
            result = api.chat.completions.create(
                model="homegrown", messages=QUESTION, max_tokens=3, metadata={"conversation_id": conv}
            )
            ids[conv] = result.id
        for conv, rid in ids.items():
            expected = "challenger" if canary_bucket(conv) < 0.5 else "champion"
            record = wait_for(
                lambda rid=rid: (
                    (r := gateway.store.get_interaction(rid))
                    and r["metadata"]["shadow_answer"] is not None
                    and r
                ),
                what="the shadow answer",
            )
            meta = record["metadata"]
            assert meta["route"] == expected
            assert meta["routing_reason"] == ("canary" if expected == "challenger" else "champion")
            assert meta["shadow_route"] == ("champion" if expected == "challenger" else "challenger")
            assert record["teacher_response"] == record["messages"][-1]["content"]
            assert record["student_response"] == meta["shadow_answer"]
        routes = {gateway.store.get_interaction(rid)["metadata"]["route"] for rid in ids.values()}
        assert routes == {"champion", "challenger"}, "six conversations should hit both sides of a 50% canary"
        metrics = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
        assert 'homegrown_gateway_shadow_requests_total{route="challenger",status="ok"}' in metrics
        pinned = api.chat.completions.create(model="homegrown:candidate", messages=QUESTION, max_tokens=2)
        assert pinned.model == "homegrown:candidate"
    gateway.pool.swap("challenger", None)


@pytest.mark.slow
def test_reload_hot_swaps_without_dropping_requests(gguf: Path, tmp_path: Path):
    settings = settings_for(tmp_path, api_keys=[KEY])
    write_models_file(settings.models_file, ModelSpec(name="v1", gguf_path=str(gguf)))
    app = create_app(settings)
    with serve_app(app) as url:
        api = client(url)
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [
                pool.submit(api.chat.completions.create, model="homegrown", messages=QUESTION, max_tokens=4)
                for _ in range(8)
            ]
            write_models_file(settings.models_file, ModelSpec(name="v2", gguf_path=str(gguf), version="2"))
            reload = httpx.post(
                f"{url}/admin/reload", headers={"Authorization": f"Bearer {local_api_key()}"}, timeout=120
            )
            answers = [f.result() for f in futures]
        assert reload.status_code == 200, reload.text
        assert reload.json()["swapped"] == {"champion": "v2"}
        assert {a.model for a in answers} <= {"v1", "v2"} and all(
            a.choices[0].message.content for a in answers
        )
        after = api.chat.completions.create(model="homegrown", messages=QUESTION, max_tokens=2)
        assert after.model == "v2"
        health = httpx.get(f"{url}/health", headers={"Authorization": f"Bearer {KEY}"}).json()
        assert health["models"]["champion"]["version"] == "2"
        unchanged = httpx.post(f"{url}/admin/reload", headers={"Authorization": f"Bearer {local_api_key()}"}).json()
        assert unchanged["swapped"] == {} and unchanged["unchanged"] == ["champion"]


@pytest.mark.slow
def test_background_server_lifecycle(gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from homegrown.gateway.server import running_gateway, start_background, stop_background

    monkeypatch.setenv("HOMEGROWN_HOME", str(tmp_path))
    settings = GatewaySettings(port=0, n_threads=1, n_ctx=512)  # base model, generated key
    assert running_gateway() is None
    url = start_background(settings, timeout_s=90)
    try:
        info = running_gateway()
        assert info is not None and info["url"] == url and info["healthy"]
        assert start_background(settings) == url, "a running gateway is reused"
        answer = client(url, local_api_key()).chat.completions.create(
            model="x", messages=QUESTION, max_tokens=2
        )
        assert answer.model == "smollm2-135m-instruct"
    finally:
        assert stop_background()
    assert running_gateway() is None
    assert not stop_background()


@pytest.mark.slow
def test_a_port_held_by_another_process_is_not_taken_for_our_gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Another gateway (of another home, with other keys) on the port: its /health must not pass for ours."""
    from homegrown.gateway.server import running_gateway, start_background, stop_background

    monkeypatch.setenv("HOMEGROWN_HOME", str(tmp_path))
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen()
    taken = other.getsockname()[1]
    try:
        with pytest.raises(RuntimeError, match=f"port {taken} .* in use"):
            start_background(GatewaySettings(port=taken, n_threads=1, n_ctx=512), timeout_s=30)
        assert running_gateway() is None
        # the same port as the default (not chosen by the user): the gateway moves to a free one
        settings = GatewaySettings(n_threads=1, n_ctx=512)
        settings.__dict__["port"] = taken  # a default value, not in model_fields_set
        url = start_background(settings, timeout_s=90)
        try:
            assert not url.endswith(f":{taken}")
            answer = client(url, local_api_key()).chat.completions.create(model="x", messages=QUESTION, max_tokens=2)
            assert answer.choices[0].message.content is not None
        finally:
            assert stop_background()
    finally:
        other.close()

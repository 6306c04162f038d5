"""The gateway against hostile and careless callers: limits, admission, budgets, and a log that loses nothing.

Real uvicorn servers on 127.0.0.1, the real SmolLM2 GGUF on llama.cpp, SQLite logs; a second gateway plays
the premium API. Every test counts the log rows: each request ends as exactly one row.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from loopback import serve_app
from sqlalchemy import func, select, text

from homegrown.gateway.app import create_app
from homegrown.gateway.backends import BackendPool, LlamaCppBackend, build_fallback, find_base_gguf
from homegrown.gateway.logstore import Base, InteractionRow, LogStore
from homegrown.gateway.settings import GatewaySettings

KEY = "app-key"
ADMIN = "admin-key"
PREMIUM_KEY = "premium-key"
QUESTION = [{"role": "user", "content": "Say hello."}]

pytestmark = pytest.mark.timeout(300)


def settings_for(folder: Path, **overrides) -> GatewaySettings:
    values = {
        "api_keys": [f"{KEY}:org-a", ADMIN],
        "admin_api_keys": [ADMIN],
        "log_db_url": f"sqlite:///{folder / 'log.sqlite'}",
        "models_file": folder / "models.json",
        "log_spool_dir": folder / "spool",
        "default_to_base_model": False,
        "n_threads": 1,
        "n_ctx": 512,
    }
    values.update(overrides)
    return GatewaySettings(**values)


def headers(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(url: str, key: str = KEY, timeout: float = 120, **body) -> httpx.Response:
    payload = {"model": "homegrown", "messages": QUESTION, "max_tokens": 2, **body}
    return httpx.post(f"{url}/v1/chat/completions", json=payload, headers=headers(key), timeout=timeout)


def rows(store: LogStore) -> int:
    with store.engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(InteractionRow)).scalar_one()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOMEGROWN_HOME", str(folder))
        yield folder


@pytest.fixture(scope="module")
def model() -> Iterator[LlamaCppBackend]:
    backend = LlamaCppBackend(find_base_gguf(), n_ctx=512, n_threads=1, name="homegrown:test", timeout_s=120)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def premium(home: Path, model: LlamaCppBackend) -> Iterator[str]:
    folder = home / "premium"
    folder.mkdir()
    app = create_app(settings_for(folder, api_keys=[PREMIUM_KEY], rate_limit_per_minute=0),
                     pool=BackendPool({"champion": model}))
    with serve_app(app) as url:
        yield url


def make_gateway(folder: Path, model: LlamaCppBackend | None, premium: str | None = None, **overrides):
    folder.mkdir(parents=True, exist_ok=True)
    if premium:
        overrides = {"fallback_base_url": f"{premium}/v1", "fallback_model": "premium-model",
                     "fallback_api_key": PREMIUM_KEY, "fallback_usd_per_1k_prompt_tokens": 1.0, **overrides}
    settings = settings_for(folder, **overrides)
    store = LogStore(settings.log_db_url)
    app = create_app(settings, pool=BackendPool({"champion": model} if model else {}), store=store)
    if premium:
        app.state.gateway.pool.swap("fallback", build_fallback(settings))
    return app, store


# -- limits: 400 / 413 before any model sees the request ----------------------------------------------------


def test_limits_answer_400_and_413_with_a_message_and_one_log_row(home: Path, model: LlamaCppBackend):
    app, store = make_gateway(home / "limits", model, max_messages=4, max_tools=2, max_metadata_keys=2,
                              max_body_bytes=4096, max_tokens_limit=64, max_tokens_default=16)
    cases = {
        "messages": {"messages": QUESTION * 5},
        "max_tokens": {"max_tokens": 10**9, "max_completion_tokens": 1},
        "metadata": {"metadata": {"a": 1, "b": 2, "c": 3}},
        "stop": {"stop": ["x" * 200]},
        "tools": {"tools": [{"type": "function", "function": {"name": f"t{i}"}} for i in range(3)]},
    }
    with serve_app(app) as url:
        for param, body in cases.items():
            response = chat(url, **body)
            assert response.status_code == 400, (param, response.text)
            error = response.json()["error"]
            assert param in error["param"] and error["message"], error
        big = chat(url, messages=[{"role": "user", "content": "x" * 5000}])
        assert big.status_code == 413 and "4096 bytes" in big.json()["error"]["message"]
        assert chat(url).status_code == 200
    assert rows(store) == len(cases) + 2  # every request, refused or answered, is one row
    store.close()


def test_hostile_schemas_get_400_fast_and_the_gateway_stays_up(home: Path, model: LlamaCppBackend):
    from hostile_schemas import HOSTILE_SCHEMAS

    app, store = make_gateway(home / "schemas", model)
    assert len(HOSTILE_SCHEMAS) >= 11
    with serve_app(app) as url:
        for name, schema, _ in HOSTILE_SCHEMAS:
            started = time.perf_counter()
            response = chat(url, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
            took = time.perf_counter() - started
            assert response.status_code in (400, 413), (name, response.status_code, response.text[:300])
            assert took < 1.0, (name, took)
            tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
            assert chat(url, tools=[tool], tool_choice="required").status_code in (400, 413), name
        assert chat(url).status_code == 200  # still up
    assert rows(store) == 2 * len(HOSTILE_SCHEMAS) + 1
    store.close()


# -- admission: a bounded queue and a fast 429 ---------------------------------------------------------------


def test_a_burst_gets_answers_or_fast_429s_health_never_misses_and_one_row_each(
    home: Path, model: LlamaCppBackend
):
    app, store = make_gateway(home / "burst", model, max_concurrent_requests=1, queue_size=2,
                              rate_limit_per_minute=0)
    results: list[tuple[int, float, str]] = []
    health_misses: list[str] = []
    stop = threading.Event()

    with serve_app(app) as url:
        def probe() -> None:
            while not stop.is_set():
                try:
                    if httpx.get(f"{url}/health", timeout=1.0).status_code != 200:
                        health_misses.append("status")
                except httpx.HTTPError as exc:
                    health_misses.append(repr(exc))
                time.sleep(0.05)

        def one(_: int) -> None:
            started = time.perf_counter()
            response = chat(url, max_tokens=8)
            results.append((response.status_code, time.perf_counter() - started,
                            response.headers.get("retry-after", "")))

        prober = threading.Thread(target=probe)
        prober.start()
        with ThreadPoolExecutor(max_workers=8) as clients:
            list(clients.map(one, range(24)))
        stop.set()
        prober.join()

    codes = [code for code, _, _ in results]
    assert set(codes) <= {200, 429} and codes.count(200) >= 3 and codes.count(429) >= 1, codes
    refused = [(took, retry) for code, took, retry in results if code == 429]
    assert all(took < 1.0 and retry for took, retry in refused), refused
    assert not health_misses, health_misses
    assert rows(store) == 24
    store.close()


def test_per_key_rate_limit_answers_429_with_retry_after(home: Path, model: LlamaCppBackend):
    app, store = make_gateway(home / "rate", model, rate_limit_per_minute=2)
    with serve_app(app) as url:
        assert chat(url).status_code == 200
        assert chat(url).status_code == 200
        third = chat(url)
        assert third.status_code == 429 and int(third.headers["retry-after"]) >= 1
        assert third.json()["error"]["code"] == "rate_limit_exceeded"
        assert chat(url, key=ADMIN).status_code == 200  # another key has its own window
    assert rows(store) == 4
    store.close()


# -- budgets: the premium API is not an open wallet ------------------------------------------------------------


def test_only_allowed_keys_pin_the_premium_model_and_budgets_hold(
    home: Path, model: LlamaCppBackend, premium: str
):
    app, store = make_gateway(home / "budget", model, premium, fallback_daily_requests_per_key=1,
                              premium_keywords=["refund"])
    with serve_app(app) as url:
        pinned = chat(url, model="fallback")
        assert pinned.status_code == 403 and pinned.json()["error"]["param"] == "model"
        assert chat(url, key=ADMIN, model="fallback").json()["model"] == "premium-model"
        refund = [{"role": "user", "content": "I want a refund."}]
        first = chat(url, messages=refund)
        assert first.json()["model"] == "premium-model"
        # the key's one premium request of the day is spent: the local model answers instead
        second = chat(url, messages=refund)
        assert second.status_code == 200 and second.json()["model"] == "homegrown:test"
        record = store.get_interaction(second.json()["id"])
        assert "budget" in record["metadata"]["routing_reason"]
        assert record["metadata"]["cost_estimate_usd"] == 0.0
        assert store.get_interaction(first.json()["id"])["metadata"]["cost_estimate_usd"] > 0
    assert rows(store) == 4
    store.close()

    # a restart does not hand out a fresh budget: today's spend is rebuilt from the log
    app, store = make_gateway(home / "budget", None, premium, fallback_daily_requests_per_key=1,
                              premium_keywords=["refund"])
    with serve_app(app) as url:
        again = chat(url, messages=[{"role": "user", "content": "I want a refund."}])
        assert again.status_code == 429 and again.json()["error"]["code"] == "budget_exceeded"
    store.close()


# -- logging that loses nothing ---------------------------------------------------------------------------------


def test_a_failed_log_write_is_spooled_and_the_answer_still_arrives(home: Path, model: LlamaCppBackend):
    app, store = make_gateway(home / "spool", model)
    with serve_app(app) as url:
        assert chat(url).status_code == 200
        with store.engine.begin() as connection:  # the database loses its table: every insert fails
            connection.execute(text("DROP TABLE feedback_events"))
            connection.execute(text("DROP TABLE interactions"))
        answered = [chat(url) for _ in range(2)]
        assert [r.status_code for r in answered] == [200, 200]
        stream = httpx.post(f"{url}/v1/chat/completions", headers=headers(), timeout=120,
                            json={"model": "homegrown", "messages": QUESTION, "max_tokens": 2, "stream": True})
        assert stream.status_code == 200 and stream.text.rstrip().endswith("data: [DONE]")
        spool = app.state.gateway.spool
        assert spool.pending() == 3
        Base.metadata.create_all(store.engine)  # the database is back
        assert spool.drain(app.state.gateway._store_row, app.state.gateway._has_row) == 3
        assert spool.pending() == 0
        for response in answered:
            assert store.get_interaction(response.json()["id"]) is not None
    assert rows(store) == 3
    store.close()


def test_a_client_that_disconnects_mid_stream_releases_the_model_and_leaves_one_row(
    home: Path, model: LlamaCppBackend
):
    app, store = make_gateway(home / "disconnect", model, rate_limit_per_minute=0)
    with serve_app(app) as url:
        body = {"model": "homegrown", "messages": [{"role": "user", "content": "Count to one hundred."}],
                "max_tokens": 200, "stream": True, "temperature": 0}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers(), timeout=120) as r:
            for line in r.iter_lines():
                if '"content"' in line and '"content": ""' not in line:
                    break  # one token arrived: hang up
        # the model is free again (a leaked lease would hold its lock) and the stream left its row
        assert chat(url, timeout=30).status_code == 200
        deadline = time.monotonic() + 30
        while rows(store) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        with store.engine.connect() as connection:
            records = [json.loads(r[0]) if isinstance(r[0], str) else r[0]
                       for r in connection.execute(select(InteractionRow.record))]
    assert len(records) == 2
    cut = [r for r in records if r["metadata"].get("stream")]
    assert len(cut) == 1 and "disconnected" in cut[0]["metadata"]["error"]
    store.close()


def test_health_says_nothing_private_without_a_key(home: Path, model: LlamaCppBackend):
    app, store = make_gateway(home / "health", model)
    with serve_app(app) as url:
        public = httpx.get(f"{url}/health").json()
        assert public == {"status": "ok", "models": {"champion": {"name": "homegrown:test"}}}
        private = httpx.get(f"{url}/health", headers=headers()).json()
        assert "errors" in private and "source" in private["models"]["champion"]
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert httpx.get(f"{url}/metrics", headers=headers()).status_code == 200
    store.close()


# -- the model worker dies mid-traffic ---------------------------------------------------------------------


def test_killing_the_model_worker_mid_traffic_loses_no_request(home: Path):
    import os
    import signal

    from homegrown.gateway.settings import ModelSpec, write_models_file

    folder = home / "worker"
    folder.mkdir()
    settings = settings_for(folder, model_worker="process", rate_limit_per_minute=0, queue_size=16)
    write_models_file(settings.models_file, ModelSpec(name="homegrown:worker", gguf_path=str(find_base_gguf())))
    store = LogStore(settings.log_db_url)
    app = create_app(settings, store=store)  # the pool loads models.json: the model in a worker process
    backend = app.state.gateway.pool.get("champion")
    first_pid = backend.describe()["worker"]["pid"]
    codes: list[int] = []
    with serve_app(app) as url:
        def one(i: int) -> None:
            body = {"messages": [{"role": "user", "content": f"Tell me a long story number {i}."}],
                    "max_tokens": 48, "temperature": 0}
            codes.append(chat(url, **body).status_code)

        with ThreadPoolExecutor(max_workers=4) as clients:
            futures = [clients.submit(one, i) for i in range(12)]
            time.sleep(1.0)
            os.kill(first_pid, signal.SIGKILL)  # mid-generation: requests are in flight and waiting
            for future in futures:
                future.result()
        worker = backend.describe()["worker"]
    assert codes == [200] * 12, codes  # the one in flight was asked again on the restarted worker
    assert worker["restarts"] >= 1 and worker["up"] and worker["pid"] != first_pid
    assert rows(store) == 12
    store.close()

"""Property-based fuzzing of the gateway's OpenAPI schema with schemathesis: no input gives a 5xx.

The gateway runs for real on loopback (uvicorn, the SmolLM2 GGUF on llama.cpp, a SQLite log); schemathesis
reads ``/openapi.json`` and sends generated requests, valid and invalid, to every operation, with a valid key
and with none. A bounded number of examples per operation keeps the run short; the seed is fixed so a failure
reproduces.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, seed, settings
from loopback import serve_app

from homegrown.gateway.app import create_app
from homegrown.gateway.backends import BackendPool, LlamaCppBackend, find_base_gguf
from homegrown.gateway.logstore import LogStore
from homegrown.gateway.settings import GatewaySettings

schemathesis = pytest.importorskip("schemathesis")

KEY = "fuzz-key"
EXAMPLES = 200


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("fuzz")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOMEGROWN_HOME", str(folder))
        settings = GatewaySettings(
            api_keys=[KEY], log_db_url=f"sqlite:///{folder / 'log.sqlite'}",
            models_file=folder / "models.json", default_to_base_model=False, n_ctx=512, n_threads=1,
            max_tokens_limit=4, max_tokens_default=4, rate_limit_per_minute=0, log_spool_dir=folder / "spool",
        )
        model = LlamaCppBackend(find_base_gguf(), n_ctx=512, n_threads=1, name="homegrown:fuzz", timeout_s=60)
        store = LogStore(settings.log_db_url)
        app = create_app(settings, pool=BackendPool({"champion": model}), store=store)
        with serve_app(app) as url:
            yield url
        store.close()
        model.close()


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("authorised", [True, False], ids=["with-key", "no-key"])
def test_no_generated_request_gets_a_5xx(gateway_url: str, authorised: bool, tmp_path: Path):
    schema = schemathesis.openapi.from_url(f"{gateway_url}/openapi.json")
    headers = {"Authorization": f"Bearer {KEY}"} if authorised else {}
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert any(op.path == "/v1/chat/completions" for op in operations)
    for operation in operations:

        @seed(20261201)
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def fuzz(case) -> None:
            response = case.call(headers=headers, timeout=60)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.path} {case.body!r:.300} -> {response.status_code} "
                                f"{response.text[:300]}")

        fuzz()
    assert not failures, "\n".join(failures[:10])

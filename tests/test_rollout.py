"""Staged rollout: the sequential test, the decisions, and a rollout driven by simulated users through the real
gateway on loopback (two copies of the shipped base GGUF as champion and challenger)."""

from __future__ import annotations

import json
import random

import dagster as dg
import httpx
import pytest
from loopback import serve_app
from openai import OpenAI

from homegrown.gateway.app import create_app
from homegrown.gateway.backends import find_base_gguf
from homegrown.gateway.deploy import deploy_model, model_name, resolve_rollout
from homegrown.gateway.settings import GatewaySettings, ModelsFile, ModelSpec, RolloutMarker, read_models_file
from homegrown.rollout import ArmOutcomes, RolloutSettings, confidence_sequence, decide, next_stage
from homegrown.tracking import Tracker
from pipelines.sensors import staged_rollout
from resources import MlflowResource, StorageResource

APP_KEY = "app-key"


def arm(role: str, requests: int, bad: int, p50: float = 10.0) -> ArmOutcomes:
    return ArmOutcomes(role=role, model=role, requests=requests, bad=bad, latencies_ms=[p50] * min(requests, 3))


TEST_RULES = RolloutSettings(stages=[0.1, 0.5, 1.0], alpha=0.1, margin=0.05, tau=0.1, min_requests=20,
                             max_latency_ratio=0)


@pytest.mark.parametrize(
    ("champion", "challenger", "share", "action", "after"),
    [
        (arm("champion", 300, 90), arm("challenger", 10, 0), 0.1, "hold", 0.1),        # too little traffic
        (arm("champion", 300, 90), arm("challenger", 40, 2), 0.1, "step", 0.5),         # clearly better
        (arm("champion", 100, 30), arm("challenger", 100, 5), 0.5, "promote", 1.0),     # better at the last stage
        (arm("champion", 600, 30), arm("challenger", 70, 21), 0.1, "rollback", 0.0),    # clearly worse
        (arm("champion", 60, 6), arm("challenger", 25, 4), 0.1, "hold", 0.1),           # could be either
    ],
)
def test_decide(champion, challenger, share, action, after):
    decision = decide(champion, challenger, share, TEST_RULES)
    assert (decision.action, decision.share_after) == (action, after), decision.reason


def test_a_much_slower_challenger_is_rolled_back():
    rules = TEST_RULES.model_copy(update={"max_latency_ratio": 2.0})
    decision = decide(arm("champion", 300, 90, p50=20), arm("challenger", 40, 2, p50=90), 0.1, rules)
    assert decision.action == "rollback" and "slower" in decision.reason


def test_next_stage_and_settings_from_the_environment(monkeypatch):
    assert next_stage(0.1, [0.1, 0.5, 1.0]) == 0.5
    assert next_stage(0.5, [0.1, 0.5, 0.9]) == 0.9
    assert next_stage(0.9, [0.1, 0.5, 0.9]) == 1.0
    monkeypatch.setenv("HOMEGROWN_ROLLOUT_STAGES", "0.05,0.25,1")
    assert RolloutSettings().stages == [0.05, 0.25, 1.0]
    monkeypatch.setenv("HOMEGROWN_ROLLOUT_STAGES", "0.5,0.1")
    with pytest.raises(ValueError, match="increasing"):
        RolloutSettings()


def test_the_confidence_sequence_stays_valid_under_continuous_monitoring():
    """Equal bad rates, a look after every 25 requests per arm: the mSPRT sequence rarely (< alpha) excludes 0
    at any look, where a fixed-sample 90% interval looked at as often does so far more than 10% of the time."""
    rng = random.Random(7)
    alpha, runs, looks = 0.1, 300, 40
    mixture_errors = naive_errors = 0
    for _ in range(runs):
        bad_a = bad_b = n = 0
        mixture_wrong = naive_wrong = False
        for _ in range(looks):
            for _ in range(25):
                bad_a += rng.random() < 0.2
                bad_b += rng.random() < 0.2
            n += 25
            interval = confidence_sequence(bad_a, n, bad_b, n, alpha, tau=0.1)
            mixture_wrong |= interval.lower > 0 or interval.upper < 0
            p_a, p_b = bad_a / n, bad_b / n
            half = 1.645 * ((p_a * (1 - p_a) + p_b * (1 - p_b)) / n) ** 0.5
            naive_wrong |= abs(p_b - p_a) > half
        mixture_errors += mixture_wrong
        naive_errors += naive_wrong
    assert mixture_errors / runs <= alpha
    assert naive_errors / runs > 2 * alpha


def test_models_file_rollout_fields_and_staged_needs_a_champion(tmp_path):
    spec = ModelSpec(name="v2", gguf_path="/m.gguf", version="2")
    with pytest.raises(ValueError, match="no 'challenger'"):
        ModelsFile(champion=spec, rollout=RolloutMarker(started_at="t", step_started_at="t"))
    with pytest.raises(ValueError, match="less than or equal to 1"):
        ModelsFile(champion=spec, challenger=spec, canary_share=1.5)
    assert resolve_rollout("auto", "2", None) == "immediate"
    assert resolve_rollout("auto", "3", ModelsFile(champion=spec)) == "staged"
    assert resolve_rollout("auto", "2", ModelsFile(champion=spec)) == "immediate"
    with pytest.raises(ValueError, match="needs another champion"):
        resolve_rollout("staged", "2", None)


def test_models_json_overrides_the_traffic_split_until_it_drops_it(tmp_path):
    from homegrown.gateway.backends import BackendPool

    settings = GatewaySettings(models_file=tmp_path / "models.json", canary_share=0.2, shadow=False,
                               default_to_base_model=False)
    pool = BackendPool()
    pool.apply_traffic(settings, ModelsFile(canary_share=0.5, shadow=True))
    assert (settings.canary_share, settings.shadow) == (0.5, True)
    pool.apply_traffic(settings, ModelsFile(canary_share=1.0))
    assert (settings.canary_share, settings.shadow) == (1.0, False)
    ModelsFile().write(settings.models_file)
    assert pool.reload(settings)["canary_share"] == 0.2 and settings.shadow is False


def test_the_sensor_and_the_rollout_state_asset_are_registered():
    from pipelines.definitions import defs

    repo = defs.get_repository_def()
    assert repo.get_sensor_def("staged_rollout").default_status == dg.DefaultSensorStatus.RUNNING
    assert dg.AssetKey("rollout_state") in repo.asset_graph.get_all_asset_keys()


# -- a rollout through the real gateway --------------------------------------------------------------------


class SimulatedUsers:
    """Users of the business's app: each asks one question (a new conversation) through the ``openai`` client
    and gives a thumbs down with a probability that depends on which model answered, else a thumbs up."""

    def __init__(self, url: str, bad_rate: dict[str, float], seed: int):
        self.client = OpenAI(base_url=f"{url}/v1", api_key=APP_KEY, max_retries=0, timeout=60)
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {APP_KEY}"}, timeout=60)
        self.bad_rate = bad_rate
        self.rng = random.Random(seed)
        self.asked = 0
        self.answered_by: dict[str, int] = {}

    def ask(self, count: int, prefix: str) -> None:
        for _ in range(count):
            self.asked += 1
            response = self.client.chat.completions.create(
                model="assistant", max_tokens=1, temperature=0, messages=[{"role": "user", "content": "Hi"}],
                metadata={"conversation_id": f"{prefix}-{self.asked}"})
            self.answered_by[response.model] = self.answered_by.get(response.model, 0) + 1
            thumbs = -1 if self.rng.random() < self.bad_rate[response.model] else 1
            self.http.post("/v1/feedback", json={"feedback_for": response.id, "thumbs": thumbs}).raise_for_status()


def evaluate(instance: dg.DagsterInstance) -> dg.SensorResult | dg.SkipReason:
    context = dg.build_sensor_context(instance=instance, resources={"store": StorageResource(), "mlflow": MlflowResource()})
    return staged_rollout(context)


def drive_until_decided(users: SimulatedUsers, instance: dg.DagsterInstance, prefix: str, batch: int = 100,
                        max_batches: int = 20) -> list[dict]:
    """Traffic in batches, the sensor after each, until it steps, promotes or rolls back; the decisions seen."""
    seen = []
    for number in range(max_batches):
        users.ask(batch, f"{prefix}-{number}")
        result = evaluate(instance)
        assert isinstance(result, dg.SensorResult), result
        [event] = result.asset_events
        assert event.asset_key == dg.AssetKey("rollout_state")
        seen.append({k: v.value for k, v in event.metadata.items()})
        if seen[-1]["action"] != "hold":
            return seen
    raise AssertionError(f"no decision after {max_batches} batches: {seen[-1]}")


@pytest.fixture
def gateway(hg_home, tmp_path, monkeypatch):
    """The real gateway on loopback, configured (like the sensor) from HOMEGROWN_* variables."""
    env = {
        "HOMEGROWN_API_KEYS": APP_KEY, "HOMEGROWN_LOG_DB_URL": f"sqlite:///{tmp_path / 'log.sqlite'}",
        "HOMEGROWN_MODELS_FILE": str(tmp_path / "models.json"), "HOMEGROWN_DEFAULT_TO_BASE_MODEL": "false",
        "HOMEGROWN_MODEL_WORKER": "inline", "HOMEGROWN_N_CTX": "512", "HOMEGROWN_N_THREADS": "1",
        "HOMEGROWN_RATE_LIMIT_PER_MINUTE": "0", "HOMEGROWN_LOG_RETENTION_DAYS": "0",
        "HOMEGROWN_ROLLOUT_ALPHA": "0.1", "HOMEGROWN_ROLLOUT_MARGIN": "0.05", "HOMEGROWN_ROLLOUT_TAU": "0.1",
        "HOMEGROWN_ROLLOUT_MIN_REQUESTS": "20", "HOMEGROWN_ROLLOUT_MAX_LATENCY_RATIO": "0",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = GatewaySettings()
    with serve_app(create_app(settings)) as url:
        monkeypatch.setenv("HOMEGROWN_ROLLOUT_GATEWAY_URL", url)
        yield url, settings


def health(url: str, settings: GatewaySettings) -> dict:
    key = settings.admin_api_key()
    return httpx.get(f"{url}/health", headers={"Authorization": f"Bearer {key}"}).json()


@pytest.mark.timeout(240)
def test_rollout_on_live_outcomes_through_the_gateway(gateway, hg_home):
    url, settings = gateway
    gguf = str(find_base_gguf())
    tracker = Tracker()
    versions = [tracker.register_model(gguf, run_id=None, tags={"dataset_version": f"d{i}"})["version"]
                for i in (1, 2, 3)]
    v1, v2, v3 = (model_name(v) for v in versions)
    instance = dg.DagsterInstance.ephemeral()
    quiet = {"log": lambda _: None, "gateway_url": url}

    assert isinstance(evaluate(instance), dg.SkipReason)  # nothing in rollout
    first = deploy_model(tracker, versions[0], gguf, rollout="auto", **quiet)
    assert first["smoke_ok"] and first["rollout"] == "immediate"

    # A better challenger: 5% thumbs down against the champion's 30%.
    second = deploy_model(tracker, versions[1], gguf, rollout="auto", canary_share=0.1, **quiet)
    assert second["smoke_ok"] and second["rollout"] == "staged", second
    assert health(url, settings)["canary_share"] == 0.1
    assert tracker.alias_version("challenger")["version"] == versions[1]
    users = SimulatedUsers(url, {v1: 0.30, v2: 0.05}, seed=1)

    users.ask(30, "few")  # a handful of answers: not enough to decide anything
    held = evaluate(instance)
    [event] = held.asset_events
    assert event.metadata["action"].value == "hold" and "not enough traffic" in event.metadata["reason"].value
    assert isinstance(evaluate(instance), dg.SkipReason)  # no new outcomes since: nothing to record again
    assert read_models_file(settings.models_file).canary_share == 0.1

    stepped = drive_until_decided(users, instance, "better-10")
    assert (stepped[-1]["action"], stepped[-1]["share_before"], stepped[-1]["share_after"]) == ("step", 0.1, 0.5)
    assert health(url, settings)["canary_share"] == 0.5
    before = dict(users.answered_by)
    promoted = drive_until_decided(users, instance, "better-50")
    assert (promoted[-1]["action"], promoted[-1]["share_after"]) == ("promote", 1.0), promoted[-1]
    at_half = users.answered_by.get(v2, 0) - before.get(v2, 0)
    assert 0.3 < at_half / (sum(users.answered_by.values()) - sum(before.values())) < 0.7

    models = read_models_file(settings.models_file)
    assert models.champion.name == v2 and models.challenger is None and models.canary_share is None
    assert tracker.alias_version("champion")["version"] == versions[1]
    assert tracker.alias_version("previous")["version"] == versions[0]
    assert tracker.alias_version("challenger") is None
    assert tracker.model_version(versions[1])["tags"]["rollout_action"] == "promote"
    state = health(url, settings)
    assert state["models"]["champion"]["name"] == v2 and "challenger" not in state["models"]
    assert state["canary_share"] == 0.0  # the environment's share again
    assert isinstance(evaluate(instance), dg.SkipReason)

    # A worse challenger: 30% thumbs down against the (new) champion's 5%.
    third = deploy_model(tracker, versions[2], gguf, rollout="auto", **quiet)
    assert third["rollout"] == "staged" and third["smoke_ok"]
    users.bad_rate = {v2: 0.05, v3: 0.30}
    rolled = drive_until_decided(users, instance, "worse-10")
    assert rolled[-1]["action"] == "rollback", rolled[-1]
    assert rolled[-1]["confidence_lower"] > 0
    models = read_models_file(settings.models_file)
    assert models.champion.name == v2 and models.challenger is None and models.rollout is None
    assert tracker.alias_version("champion")["version"] == versions[1]
    assert tracker.alias_version("challenger") is None
    assert tracker.model_version(versions[2])["tags"]["rollout_action"] == "rollback"
    assert "challenger" not in health(url, settings)["models"]

    # A staged deploy that fails to load is undone: models.json, the aliases and the split as they were.
    broken = hg_home / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    version = tracker.register_model(str(broken), run_id=None, tags={"dataset_version": "d4"})["version"]
    failed = deploy_model(tracker, version, str(broken), rollout="staged", **quiet)
    assert not failed["smoke_ok"] and failed["rolled_back"]
    assert read_models_file(settings.models_file) == models
    assert tracker.alias_version("challenger") is None
    assert health(url, settings)["canary_share"] == 0.0

    # Every decision with its evidence: the JSONL log and, for those that moved traffic, an MLflow run.
    log = [json.loads(line) for line in (hg_home / "artifacts" / "rollout_state" / "state" / "decisions.jsonl").read_text().splitlines()]
    assert [d["action"] for d in log if d["action"] != "hold"] == ["step", "promote", "rollback"]
    assert all(d["challenger"]["requests"] and "thumbs_down_rate" in d["champion"] for d in log)
    runs = [d["mlflow_run_id"] for d in log if d["action"] != "hold"]
    import mlflow

    for run_id in runs:
        run = mlflow.MlflowClient(tracker.tracking_uri).get_run(run_id)
        assert run.data.tags["rollout.action"] in ("step", "promote", "rollback")
        assert "challenger.bad_rate" in run.data.metrics

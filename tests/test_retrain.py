"""The retrain rule as a pure function, and the sensor through Dagster's sensor test API."""

import json

import dagster as dg
import pytest

from homegrown.retrain import decide_retrain
from homegrown.store import ArtifactStore, to_parquet


@pytest.mark.parametrize(
    ("new", "since", "run", "why"),
    [
        (0, None, False, "waiting for 100"),
        (99, None, False, "waiting for 100"),
        (100, None, True, ">= 100"),
        (500, 10.0, False, "cooldown"),
        (500, 7200.0, True, ">= 100"),
    ],
)
def test_decide_retrain(new, since, run, why):
    decision = decide_retrain(new, 100, since, cooldown_s=3600)
    assert decision.run is run
    assert why in decision.reason


def test_decide_retrain_rejects_a_zero_threshold():
    with pytest.raises(ValueError):
        decide_retrain(5, 0, None, 60)


def _scored(store: ArtifactStore, ids: list[str], version: str) -> None:
    import pandas as pd

    frame = pd.DataFrame({"example_id": ids, "keep": [True] * len(ids), "synthetic": [False] * len(ids),
                          "messages": [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]] * len(ids)})
    path = store.stage_dir("scored_dataset", version) / "scored.parquet"
    to_parquet(frame, path)
    store.record_latest("scored_dataset", {"path": str(path), "version": version})


def test_sensor_skips_then_requests_a_retrain_once(hg_home, monkeypatch):
    from pipelines import sensors

    monkeypatch.setattr(sensors, "MIN_NEW_EXAMPLES", 3)
    instance = dg.DagsterInstance.ephemeral()
    store = ArtifactStore(hg_home / "artifacts")

    result = sensors.retrain_on_new_examples(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SkipReason) and "no scored dataset" in result.skip_message

    _scored(store, ["a", "b"], "v1")
    result = sensors.retrain_on_new_examples(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SkipReason) and "2 new good examples" in result.skip_message

    _scored(store, ["a", "b", "c", "d"], "v2")
    context = dg.build_sensor_context(instance=instance)
    request = sensors.retrain_on_new_examples(context)
    assert isinstance(request, dg.RunRequest) and request.run_key == "retrain-v2"
    assert "last_trigger" in json.loads(context.cursor)

    again = sensors.retrain_on_new_examples(dg.build_sensor_context(instance=instance, cursor=context.cursor))
    assert isinstance(again, dg.SkipReason) and "cooldown" in again.skip_message


def test_no_retrain_while_a_staged_rollout_decides(hg_home, monkeypatch):
    """A retrain deployed mid-rollout would replace the challenger and waste its live evidence: it waits."""
    from homegrown.gateway.settings import GatewaySettings, ModelsFile, ModelSpec, RolloutMarker
    from pipelines import sensors

    assert "staged rollout of v2" in decide_retrain(500, 100, None, 60, rollout_in_progress="v2").reason
    assert not decide_retrain(500, 100, None, 60, rollout_in_progress="v2").run
    assert "waiting for 100" in decide_retrain(5, 100, None, 60, rollout_in_progress="v2").reason

    monkeypatch.setattr(sensors, "MIN_NEW_EXAMPLES", 3)
    store = ArtifactStore(hg_home / "artifacts")
    _scored(store, ["a", "b", "c", "d"], "v2")
    spec = ModelSpec(name="homegrown-v2", gguf_path="/models/v2.gguf", version="2")
    ModelsFile(champion=spec.model_copy(update={"name": "homegrown-v1"}), challenger=spec, canary_share=0.5,
               rollout=RolloutMarker(started_at="2026-12-01T00:00:00Z", step_started_at="2026-12-01T01:00:00Z"),
               ).write(GatewaySettings().models_file)
    instance = dg.DagsterInstance.ephemeral()
    waiting = sensors.retrain_on_new_examples(dg.build_sensor_context(instance=instance))
    assert isinstance(waiting, dg.SkipReason) and "staged rollout of homegrown-v2 at 50%" in waiting.skip_message

    ModelsFile(champion=spec).write(GatewaySettings().models_file)  # promoted: the rollout is over
    request = sensors.retrain_on_new_examples(dg.build_sensor_context(instance=instance))
    assert isinstance(request, dg.RunRequest)


def test_the_operators_run_config_rides_on_the_sensors_runs(tmp_path, monkeypatch):
    from pipelines import sensors

    monkeypatch.delenv("HOMEGROWN_RETRAIN_RUN_CONFIG", raising=False)
    assert sensors.retrain_run_config() == {}
    config = tmp_path / "retrain.yaml"
    config.write_text("ops:\n  lora_adapter:\n    config:\n      time_budget_s: 900\n")
    monkeypatch.setenv("HOMEGROWN_RETRAIN_RUN_CONFIG", str(config))
    assert sensors.retrain_run_config() == {"ops": {"lora_adapter": {"config": {"time_budget_s": 900}}}}
    config.write_text("- not a mapping\n")
    with pytest.raises(ValueError, match="mapping"):
        sensors.retrain_run_config()
    monkeypatch.setenv("HOMEGROWN_RETRAIN_RUN_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ValueError, match="not a readable"):
        sensors.retrain_run_config()

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

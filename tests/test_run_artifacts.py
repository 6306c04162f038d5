"""Stages read their upstream from the Dagster materialisation they depend on: each pointer an asset records is
attached to its materialisation, a downstream run reads it from the event log and says which one it read."""

import json

import dagster as dg

from homegrown.store import ArtifactStore
from pipelines.definitions import defs
from resources import POINTER_METADATA

DATA_ASSETS = ["raw_interactions", "synthetic_examples", "scored_dataset", "dataset_splits"]


def _materialize(instance, selection):
    assets = [a for a in defs.assets if a.key.to_user_string() in DATA_ASSETS]
    return dg.materialize(assets, selection=selection, resources=defs.resources, instance=instance)


def _metadata(instance, asset: str) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    return event.asset_materialization.metadata


def test_the_upstream_a_run_reads_is_the_materialisation_the_ui_shows(hg_home):
    instance = dg.DagsterInstance.ephemeral()
    first = _materialize(instance, ["raw_interactions", "synthetic_examples", "scored_dataset"])
    assert first.success
    store = ArtifactStore(hg_home / "artifacts")
    scored = _metadata(instance, "scored_dataset")[POINTER_METADATA].value
    assert scored == store.pointer("scored_dataset")

    # A stale pointer left in the store (an older recording, here naming another version) is not what the
    # UI shows as upstream, so the run must not read it.
    stale = {**scored, "version": "planted-stale", "recorded_at": "2000-01-01T00:00:00+00:00"}
    (hg_home / "artifacts" / "latest" / "scored_dataset.json").write_text(json.dumps(stale))
    second = _materialize(instance, ["dataset_splits"])
    assert second.success
    splits = _metadata(instance, "dataset_splits")
    assert splits[POINTER_METADATA].value["scored_version"] == scored["version"]
    assert first.run_id in splits["upstream/scored_dataset"].value


def test_a_newer_pointer_recorded_outside_dagster_wins_with_a_warning(hg_home):
    instance = dg.DagsterInstance.ephemeral()
    assert _materialize(instance, ["raw_interactions", "synthetic_examples", "scored_dataset"]).success
    store = ArtifactStore(hg_home / "artifacts")
    scored = store.pointer("scored_dataset")
    newer = {**scored, "recorded_at": "2999-01-01T00:00:00+00:00"}
    (hg_home / "artifacts" / "latest" / "scored_dataset.json").write_text(json.dumps(newer))
    result = _materialize(instance, ["dataset_splits"])
    assert result.success
    assert "the store" in _metadata(instance, "dataset_splits")["upstream/scored_dataset"].value
    warnings = [e for e in instance.all_logs(result.run_id)
                if e.level >= 30 and "newer than its latest materialisation" in (e.user_message or "")]
    assert warnings

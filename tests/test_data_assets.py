"""The data half through Dagster on the embedded demo logs, in a temp HOMEGROWN_HOME."""

import json

import dagster as dg
import pandas as pd

from homegrown.store import ArtifactStore, read_parquet
from pipelines.definitions import defs

DATA_ASSETS = ["raw_interactions", "synthetic_examples", "scored_dataset", "dataset_splits"]


def _materialize(selection="*"):
    assets = [a for a in defs.assets if a.key.to_user_string() in DATA_ASSETS]
    return dg.materialize(assets, selection=selection, resources=defs.resources, raise_on_error=True)


def test_demo_logs_become_stable_splits(hg_home):
    result = _materialize()
    assert result.success
    for evaluation in result.get_asset_check_evaluations():
        assert evaluation.passed, evaluation.check_name

    store = ArtifactStore(hg_home / "artifacts")
    raw = store.latest("raw_interactions")
    assert raw["input_lines"] == raw["interactions"] + raw["superseded"] + raw["quarantined"] + raw["feedback_events"]
    assert raw["quarantined"] > 0

    scored = read_parquet(store.latest("scored_dataset")["path"])
    kept = scored[scored["keep"]]
    assert scored["reason"].notna().all() and scored["score"].notna().sum() > 0
    assert not set(kept["org_id"].dropna()) & set(raw["opted_out_orgs"])
    assert all(len(ids) >= 1 for ids in kept[~kept["synthetic"]]["source_ids"])

    splits = store.latest("dataset_splits")
    total = sum(splits["rows"].values())
    assert total == len(kept)
    assert splits["rows"]["train"] > splits["rows"]["test"] > 0
    with open(splits["paths"]["train"]["jsonl"]) as fh:
        first = json.loads(fh.readline())
    assert first["messages"][-1]["role"] == "assistant"
    conv_split = {}
    for split, paths in splits["paths"].items():
        frame = pd.read_parquet(paths["parquet"])
        for conv in frame["conversation_id"]:
            assert conv_split.setdefault(conv, split) == split

    # the same input gives the same version; a rerun reads no line twice
    again = _materialize()
    assert again.success
    assert store.latest("dataset_splits")["version"] == splits["version"]
    assert store.latest("raw_interactions")["new_lines"] == 0


def test_gateway_traffic_and_its_feedback_reach_the_next_raw_interactions(hg_home):
    """What the gateway logs (and the feedback that arrives later) is read by the next ingestion."""
    from homegrown.data.ingest import load_interactions
    from homegrown.gateway.logstore import LogStore, utc_now_iso
    from homegrown.gateway.settings import GatewaySettings

    store = ArtifactStore(hg_home / "artifacts")
    raw = ["raw_interactions"]
    _materialize(raw)
    before = store.latest("raw_interactions")
    assert not any(loc.endswith("gateway/export") for loc in before["locations"])

    log = LogStore(GatewaySettings().log_db_url)
    try:
        log.log_interaction({
            "id": "chatcmpl-live-1", "conversation_id": "c-live", "created_at": utc_now_iso(),
            "org_id": "org-myhibachi", "example_type": "faq", "model": "homegrown-v1",
            "messages": [{"role": "user", "content": "Is lobster extra?"},
                         {"role": "assistant", "content": "Lobster tail is +$10 per person."}],
            "metadata": {"route": "champion"},
        })
        _materialize(raw)
        first = store.latest("raw_interactions")
        assert first["new_lines"] == 1 and first["interactions"] == before["interactions"] + 1
        assert any(loc.endswith("gateway/export") for loc in first["locations"])

        log.add_feedback("chatcmpl-live-1", {"thumbs": 1, "outcome": "accepted"})
        _materialize(raw)
    finally:
        log.close()
    second = store.latest("raw_interactions")
    assert second["new_lines"] == 1 and second["feedback_events"] == first["feedback_events"] + 1
    rows = load_interactions(second["db_path"]).set_index("id")
    assert rows.loc["chatcmpl-live-1", "feedback"] == {"thumbs": 1, "outcome": "accepted"}

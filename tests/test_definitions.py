import dagster as dg

from pipelines.definitions import defs


def test_definitions_load_with_the_contracted_asset_graph():
    repo = defs.get_repository_def()
    keys = {key.to_user_string() for key in repo.asset_graph.get_all_asset_keys()}
    assert {"raw_interactions", "synthetic_examples", "scored_dataset", "dataset_splits"} <= keys
    graph = repo.asset_graph
    assert dg.AssetKey("raw_interactions") in graph.get(dg.AssetKey("scored_dataset")).parent_keys
    assert dg.AssetKey("synthetic_examples") in graph.get(dg.AssetKey("scored_dataset")).parent_keys
    assert dg.AssetKey("scored_dataset") in graph.get(dg.AssetKey("dataset_splits")).parent_keys


def test_blocking_quality_checks_are_declared():
    repo = defs.get_repository_def()
    checks = {(key.asset_key.to_user_string(), key.name) for key in repo.asset_graph.asset_check_keys}
    assert {("scored_dataset", "no_pii_left"), ("scored_dataset", "no_opted_out_org"),
            ("scored_dataset", "enough_examples"), ("dataset_splits", "no_leakage")} <= checks


def test_jobs_resolve():
    assert defs.resolve_job_def("data_job") is not None

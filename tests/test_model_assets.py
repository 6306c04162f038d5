"""The model half through Dagster: training through the accelerate backend (Dagster Pipes, 2 gloo
processes), then the merge with its equivalence check, on a tiny Llama and the demo splits."""

import dagster as dg
import pytest

from homegrown.store import ArtifactStore
from homegrown.tracking import Tracker
from pipelines.definitions import defs
from resources.compute import TrainingCompute

DATA_ASSETS = {"raw_interactions", "synthetic_examples", "scored_dataset", "dataset_splits"}


@pytest.mark.slow
def test_lora_adapter_through_accelerate_pipes_then_merge(hg_home, tiny_llama_dir):
    data = [a for a in defs.assets if a.key.to_user_string() in DATA_ASSETS]
    assert dg.materialize(data, resources=defs.resources).success

    model = [a for a in defs.assets if a.key.to_user_string() in {"lora_adapter", "merged_model"}]
    resources = {**defs.resources, "compute": TrainingCompute(backend="accelerate", num_processes=2)}
    run_config = {"ops": {"lora_adapter": {"config": {
        "base_model": str(tiny_llama_dir), "max_steps": 2, "max_seq_length": 256, "per_device_batch_size": 2,
        "gradient_accumulation": 1}}}}
    result = dg.materialize(model, resources=resources, run_config=run_config)
    assert result.success
    assert all(check.passed for check in result.get_asset_check_evaluations())

    store = ArtifactStore(hg_home / "artifacts")
    adapter = store.latest("lora_adapter")
    assert adapter["metrics"]["world_size"] == 2
    assert adapter["metrics"]["steps"] == 2
    version = Tracker().model_version(adapter["model_version"])
    assert version["tags"]["dataset_version"] == store.latest("dataset_splits")["version"]
    assert version["tags"]["dagster_run_id"] == result.run_id
    assert {"code_version", "base_model", "chat_template_fingerprint"} <= set(version["tags"])
    assert version["tags"]["merged_path"] == store.latest("merged_model")["path"]

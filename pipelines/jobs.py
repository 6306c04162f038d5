"""Jobs: curating new logs (cheap, hourly), the data half, and the whole retrain."""

import dagster as dg

GPU_TAG = {"homegrown/gpu": "true"}

curate_job = dg.define_asset_job(
    "curate_job",
    selection=dg.AssetSelection.assets("raw_interactions", "synthetic_examples", "scored_dataset"),
    description="Read new logs and score them, so the retrain sensor can count new good examples.",
)

data_job = dg.define_asset_job(
    "data_job",
    selection=dg.AssetSelection.assets("dataset_splits").upstream(),
    description="From the raw logs to stable train/validation/test splits.",
)

retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=dg.AssetSelection.all(),
    tags=GPU_TAG,
    description="The whole loop: data, LoRA, preference tuning, merge, GGUF, eval and gate, deployment.",
)

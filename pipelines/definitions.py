"""The homegrown code location: assets, checks, jobs, sensors, schedules and the resource set."""

import dagster as dg

from assets.deployment import deployed_endpoint, deployed_specialists, rollout_state
from assets.evaluation import eval_report
from assets.ingestion import raw_interactions
from assets.merging import merged_model
from assets.preference import preference_adapter
from assets.quantization import quantized_model
from assets.roi import roi_report
from assets.scoring import scored_dataset
from assets.specialists import specialist_adapters
from assets.splits import dataset_splits
from assets.synthetic import synthetic_examples
from assets.training import lora_adapter
from pipelines.environment import resources_for_environment
from pipelines.jobs import curate_job, data_job, retrain_job, specialists_job
from pipelines.sensors import (
    daily_roi,
    hourly_curation,
    monthly_retrain,
    retrain_on_new_examples,
    staged_rollout,
)

defs = dg.Definitions(
    assets=[raw_interactions, synthetic_examples, scored_dataset, dataset_splits, lora_adapter, preference_adapter,
            merged_model, quantized_model, eval_report, deployed_endpoint, roi_report, rollout_state,
            specialist_adapters, deployed_specialists],
    jobs=[curate_job, data_job, retrain_job, specialists_job],
    sensors=[retrain_on_new_examples, staged_rollout],
    schedules=[hourly_curation, monthly_retrain, daily_roi],
    resources=resources_for_environment(),
)

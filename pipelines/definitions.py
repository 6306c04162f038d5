"""The homegrown code location: assets, checks, jobs, sensors, schedules and the resource set."""

from __future__ import annotations

import dagster as dg

from assets.ingestion import raw_interactions
from assets.scoring import scored_dataset
from assets.splits import dataset_splits
from assets.synthetic import synthetic_examples
from pipelines.environment import resources_for_environment
from pipelines.jobs import data_job

defs = dg.Definitions(
    assets=[raw_interactions, synthetic_examples, scored_dataset, dataset_splits],
    jobs=[data_job],
    resources=resources_for_environment(),
)

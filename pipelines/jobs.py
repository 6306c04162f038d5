"""Jobs: the data half alone, and the whole graph."""

from __future__ import annotations

import dagster as dg

data_job = dg.define_asset_job(
    "data_job",
    selection=dg.AssetSelection.keys("dataset_splits").upstream(),
    description="From the raw logs to stable train/validation/test splits.",
)

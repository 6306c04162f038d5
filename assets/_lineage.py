"""Shared plumbing of every asset: one MLflow run per materialisation, tagged with the Dagster run."""

import contextlib
from collections.abc import Iterator

import dagster as dg

from homegrown.tracking import StageRun, Tracker


@contextlib.contextmanager
def stage_run(context: dg.AssetExecutionContext, tracker: Tracker, stage: str) -> Iterator[StageRun]:
    tags = {"dagster.run_id": context.run.run_id, "dagster.asset_key": stage}
    with tracker.stage_run(stage, tags=tags) as run:
        yield run

def mlflow_metadata(run: StageRun) -> dict[str, dg.MetadataValue]:
    return {"mlflow_run": dg.MetadataValue.url(run.url), "mlflow_run_id": dg.MetadataValue.text(run.run_id)}

def table_preview(df, columns: list[str], limit: int = 20) -> dg.MetadataValue:
    """A small Markdown table for the Dagster UI."""
    if df is None or len(df) == 0:
        return dg.MetadataValue.md("_none_")
    head = df[columns].head(limit).astype(str)
    for col in columns:
        head[col] = head[col].str.replace("|", "\\|").str.replace("\n", " ").str.slice(0, 120)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in head.itertuples(index=False)]
    if len(df) > limit:
        lines.append(f"\n_{len(df) - limit} more rows_")
    return dg.MetadataValue.md("\n".join(lines))

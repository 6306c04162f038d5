"""raw_interactions: every file of the input location, normalised; malformed lines quarantined."""

import dagster as dg

from assets._lineage import mlflow_metadata, stage_run, table_preview
from homegrown.data.ingest import ingest, load_quarantine
from resources import InputResource, MlflowResource, StorageResource


@dg.asset(group_name="data", kinds={"sqlite"}, pool="stage_raw_interactions")
def raw_interactions(
    context: dg.AssetExecutionContext, store: StorageResource, mlflow: MlflowResource, input_logs: InputResource
) -> dg.MaterializeResult:
    """The assistant's logs, normalised to one row per interaction id; bad lines go to a quarantine table.

    Incremental: only new files and the appended tail of JSONL files are read on each materialisation.
    """
    artifacts = store.store(context)
    db_path = artifacts.state_dir("raw_interactions") / "interactions.sqlite"
    locations = input_logs.locations()
    results = [ingest(location, db_path) for location in locations]
    final = results[-1]  # cumulative totals live in the one state database
    new_lines = sum(r.new_lines for r in results)
    counts = {
        "input_lines": final.input_lines,
        "interactions": final.interactions,
        "superseded": final.superseded,
        "quarantined": final.quarantined,
        "feedback_events": final.feedback_events,
        "pending_feedback": final.pending_feedback,
        "new_lines": new_lines,
        # Bytes of unfinished last lines/rows (a writer mid-line), left for the next materialisation.
        "held_back_bytes": sum(r.held_back_bytes for r in results),
    }
    context.log.info(f"ingested {new_lines} new lines from {locations}: {counts}")
    failed_files = [failure for r in results for failure in r.failed_files]
    if failed_files:
        context.log.warning(f"{len(failed_files)} file(s) could not be read now, retried next time: {failed_files}")

    with stage_run(context, mlflow.tracker(), "raw_interactions") as run:
        run.log_params({"locations": ",".join(locations)})
        run.log_metrics({k: float(v) for k, v in counts.items()})
        lineage = mlflow_metadata(run)

    artifacts.record_latest("raw_interactions", {
        "db_path": str(db_path), "locations": locations, **counts,
        "opted_out_orgs": sorted(final.opted_out_orgs),
    })
    quarantine = load_quarantine(db_path)
    return dg.MaterializeResult(metadata={
        **{k: dg.MetadataValue.int(int(v)) for k, v in counts.items()},
        "accounted_for": dg.MetadataValue.text(
            f"{final.input_lines} lines = {final.interactions} kept + {final.superseded} superseded + "
            f"{final.quarantined} quarantined + {final.feedback_events} feedback events"),
        "opted_out_orgs": dg.MetadataValue.int(len(final.opted_out_orgs)),
        "failed_files": dg.MetadataValue.int(len(failed_files)),
        "state_db": dg.MetadataValue.path(str(db_path)),
        "quarantine": table_preview(quarantine.tail(20), ["file", "line", "reason"]) if len(quarantine) else
        dg.MetadataValue.md("_none_"),
        **lineage,
    })

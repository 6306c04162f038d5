"""Retraining triggers: a sensor on new good examples (with a cooldown), an hourly curation, a monthly backstop."""

import json
import os
import time

import dagster as dg

from homegrown import paths
from homegrown.retrain import count_new_good_examples, decide_retrain
from homegrown.store import ArtifactStore
from homegrown.tracking import tracker_from_env
from pipelines.jobs import curate_job, retrain_job

MIN_NEW_EXAMPLES = int(os.environ.get("HOMEGROWN_RETRAIN_MIN_NEW", "100"))
COOLDOWN_S = float(os.environ.get("HOMEGROWN_RETRAIN_COOLDOWN_S", str(6 * 3600)))


@dg.sensor(job=retrain_job, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Retrain when enough new examples that pass the quality policy arrived since the champion.")
def retrain_on_new_examples(context: dg.SensorEvaluationContext):
    store = ArtifactStore(paths.subdir("artifacts"))
    champion = tracker_from_env().alias_version("champion")
    champion_dataset = champion["tags"].get("dataset_version") if champion else None
    new, scored_version = count_new_good_examples(store, champion_dataset)
    if scored_version is None:
        return dg.SkipReason("no scored dataset yet: materialise scored_dataset (curate_job) first")
    cursor = json.loads(context.cursor) if context.cursor else {}
    since = time.time() - cursor["last_trigger"] if "last_trigger" in cursor else None
    decision = decide_retrain(new, MIN_NEW_EXAMPLES, since, COOLDOWN_S)
    if not decision.run:
        return dg.SkipReason(decision.reason)
    context.update_cursor(json.dumps({"last_trigger": time.time(), "scored_version": scored_version}))
    return dg.RunRequest(run_key=f"retrain-{scored_version}", tags={"homegrown/trigger": "new_examples"},
                         run_config={})


hourly_curation = dg.ScheduleDefinition(
    name="hourly_curation", job=curate_job, cron_schedule="0 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Ingest and score new logs every hour (the sensor counts what this produces).")

monthly_retrain = dg.ScheduleDefinition(
    name="monthly_retrain", job=retrain_job, cron_schedule="0 3 1 * *",
    description="Backstop: retrain on the first of every month even without a trigger.")

"""Retraining triggers: a sensor on new good examples (with a cooldown), an hourly curation, a monthly backstop."""

import json
import os
import time
from pathlib import Path

import dagster as dg

from homegrown.retrain import count_new_good_examples, decide_retrain
from homegrown.store import open_store
from homegrown.tracking import tracker_from_env
from pipelines.jobs import curate_job, retrain_job
from resources import MlflowResource, StorageResource

MIN_NEW_EXAMPLES = int(os.environ.get("HOMEGROWN_RETRAIN_MIN_NEW", "100"))
COOLDOWN_S = float(os.environ.get("HOMEGROWN_RETRAIN_COOLDOWN_S", str(6 * 3600)))


def retrain_run_config() -> dict:
    """``HOMEGROWN_RETRAIN_RUN_CONFIG``: a YAML run config (as ``homegrown demo --config`` takes) that the retrain
    sensor's runs carry, for an operator's caps on the default recipe; unset: the defaults, no config."""
    path = os.environ.get("HOMEGROWN_RETRAIN_RUN_CONFIG")
    if not path:
        return {}
    import yaml

    try:
        config = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"HOMEGROWN_RETRAIN_RUN_CONFIG={path} is not a readable YAML run config: {exc}") from exc
    if not isinstance(config, dict):
        raise ValueError(  # noqa: TRY004 - a bad file, reported like the unreadable one above
            f"HOMEGROWN_RETRAIN_RUN_CONFIG={path} must hold a mapping (ops: ...), got {type(config).__name__}")
    return config


@dg.sensor(job=retrain_job, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Retrain when enough new examples that pass the quality policy arrived since the champion.")
def retrain_on_new_examples(context: dg.SensorEvaluationContext):
    store = open_store()
    champion = tracker_from_env().alias_version("champion")
    champion_dataset = champion["tags"].get("dataset_version") if champion else None
    new, scored_version = count_new_good_examples(store, champion_dataset)
    if scored_version is None:
        return dg.SkipReason("no scored dataset yet: materialise scored_dataset (curate_job) first")
    cursor = json.loads(context.cursor) if context.cursor else {}
    since = time.time() - cursor["last_trigger"] if "last_trigger" in cursor else None
    decision = decide_retrain(new, MIN_NEW_EXAMPLES, since, COOLDOWN_S, rollout_in_progress=_rolling_out())
    if not decision.run:
        return dg.SkipReason(decision.reason)
    context.update_cursor(json.dumps({"last_trigger": time.time(), "scored_version": scored_version}))
    return dg.RunRequest(run_key=f"retrain-{scored_version}", tags={"homegrown/trigger": "new_examples"},
                         run_config=retrain_run_config())


def _rolling_out() -> str | None:
    """The challenger of a staged rollout in progress (``models.json`` has ``rollout``), else None."""
    from homegrown.gateway.settings import GatewaySettings, read_models_file

    try:
        models = read_models_file(GatewaySettings().models_file)
    except ValueError:
        return None  # an unreadable models.json is the gateway's error to report, not a reason to stop retraining
    if models.rollout is None or models.challenger is None:
        return None
    return f"{models.challenger.name} at {models.canary_share or 0:.0%}"


hourly_curation = dg.ScheduleDefinition(
    name="hourly_curation", job=curate_job, cron_schedule="0 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Ingest and score new logs every hour (the sensor counts what this produces).")

monthly_retrain = dg.ScheduleDefinition(
    name="monthly_retrain", job=retrain_job, cron_schedule="0 3 1 * *",
    description="Backstop: retrain on the first of every month even without a trigger.")

roi_job = dg.define_asset_job(
    "roi_job", selection=dg.AssetSelection.assets("roi_report"),
    description="The ROI report over the gateway log: cost and savings per day and per model version.")

daily_roi = dg.ScheduleDefinition(
    name="daily_roi", job=roi_job, cron_schedule="15 0 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every day after UTC midnight: add the finished day to the ROI report.")


@dg.sensor(name="staged_rollout", minimum_interval_seconds=180, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Staged rollout: compare the challenger with the champion on live outcomes (sequential test) "
                       "and step its share up, promote it or roll it back; every decision is a rollout_state event.")
def staged_rollout(context: dg.SensorEvaluationContext, store: StorageResource, mlflow: MlflowResource):
    # RUNNING by default: with no challenger in a staged rollout it only reads models.json and skips, and a
    # staged deploy with this sensor stopped would stay at its first share for ever.
    from assets.deployment import rollout_materialization
    from homegrown.gateway.settings import GatewaySettings
    from homegrown.rollout import RolloutController

    decision = RolloutController(GatewaySettings(), store.store(), mlflow.tracker()).evaluate()
    if decision is None:
        return dg.SkipReason("no challenger in a staged rollout (models.json has no 'rollout')")
    if not decision.recorded:
        return dg.SkipReason(f"hold, no new outcomes since the last decision: {decision.reason}")
    context.log.info(f"rollout {decision.action}: {decision.reason}")
    return dg.SensorResult(asset_events=[rollout_materialization(decision)])

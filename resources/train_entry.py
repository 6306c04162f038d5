"""The training entry point: under ``accelerate launch`` on this machine, or in a remote container.

Under accelerate every rank trains; rank 0 opens the Pipes channel, forwards progress to the Dagster run log and
writes the result JSON whose path the launching asset passed in the Pipes extras.

In a container (the extras name an ``artifacts`` store, ``resources.compute.remote_extras``) nothing of the
launching machine is visible: the splits are downloaded from the S3 artifact store, the base model is prepared
from its spec, metrics go to the launching asset's MLflow run directly (``MLFLOW_TRACKING_URI`` in the
container's environment), the adapter is uploaded to the store, and the result (with ``s3://`` URIs) goes back
as a Pipes custom message.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from homegrown.training.sft import TrainConfig, train
from resources.compute import RESULT_MESSAGE


def main() -> None:
    rank = int(os.environ.get("RANK", "0"))
    if rank != 0 or "DAGSTER_PIPES_CONTEXT" not in os.environ:
        extras = json.loads(os.environ["HOMEGROWN_TRAIN_EXTRAS"])
        _run(extras, progress=None)
        return

    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        extras = pipes.extras

        def progress(event: dict) -> None:
            pipes.log.info("train progress " + json.dumps(event))

        if "artifacts" in extras:
            result = _run_remote(extras, progress)
            pipes.report_custom_message({"name": RESULT_MESSAGE, "payload": result})
        else:
            result = _run(extras, progress=progress)
        pipes.log.info(f"adapter written to {result['adapter_dir']}")


def _run(extras: dict, progress) -> dict:
    cfg = TrainConfig.from_dict(extras["config"])
    result = train(cfg, Path(extras["train_jsonl"]), Path(extras["validation_jsonl"]), Path(extras["base_path"]),
                   Path(extras["output_dir"]), progress=progress)
    out = result.to_dict()
    if int(os.environ.get("RANK", "0")) == 0:
        Path(extras["result_path"]).write_text(json.dumps(out, default=str))
    return out


def _run_remote(extras: dict, progress) -> dict:
    """Train from the store's URIs; returns the result with the adapter's URI."""
    from homegrown.store import ArtifactStore
    from homegrown.training.base import resolve_base_model

    store = ArtifactStore(extras["artifacts"])
    train_jsonl = Path(store.localize({"path": extras["train_uri"]})["path"])
    validation_jsonl = Path(store.localize({"path": extras["validation_uri"]})["path"])
    output_dir = store.local_path(extras["output_uri"])
    base = resolve_base_model(extras["base_spec"])
    log_metrics = _mlflow_logger(extras.get("mlflow_run_id", ""))

    def report(event: dict) -> None:
        progress(event)
        log_metrics(event)

    result = train(TrainConfig.from_dict(extras["config"]), train_jsonl, validation_jsonl, base.path, output_dir,
                   progress=report)
    return store.publish(json.loads(json.dumps(result.to_dict(), default=str)))


def _mlflow_logger(run_id: str):
    """Log progress events to the launching asset's MLflow run, from here (no-op without a run or a server)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not (run_id and uri):
        return lambda event: None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)

    def log(event: dict) -> None:
        step = int(event.get("step") or 0)
        for key in ("loss", "tokens_per_s", "eta_s", "eval_loss"):
            value = event.get(key)
            if isinstance(value, (int, float)):
                client.log_metric(run_id, key, float(value), step=step)

    return log


if __name__ == "__main__":
    main()

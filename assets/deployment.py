"""deployed_endpoint: move the registry alias to the new model and make the gateway serve it."""

import dagster as dg
from pydantic import Field

from assets._lineage import mlflow_metadata, stage_run
from homegrown.gateway.deploy import deploy_model
from resources import MlflowResource, StorageResource


class DeployConfig(dg.Config):
    smoke_prompt: str = Field(default="What do you serve?", description="The smoke test's question.")
    start_timeout_s: int = Field(default=120, description="Limit on starting a background gateway.")


@dg.asset(
    group_name="serving", kinds={"openai"}, deps=["eval_report"],
    check_specs=[dg.AssetCheckSpec(
        "smoke_test", asset="deployed_endpoint", blocking=True,
        description="The endpoint answers through the real openai client with the new model; else rolled back.")],
)
def deployed_endpoint(
    context: dg.AssetExecutionContext, config: DeployConfig, store: StorageResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """The `champion` alias moves to the new version and the gateway hot-reloads it, only after the gate passed."""
    artifacts = store.store()
    report = artifacts.require_latest("eval_report")
    if not report["promoted"]:
        raise RuntimeError(f"model version {report['model_version']} did not pass the promotion gate; not deploying")
    tracker = mlflow.tracker()
    outcome = deploy_model(tracker, report["model_version"], report["candidate_gguf"],
                           smoke_prompt=config.smoke_prompt, start_timeout_s=config.start_timeout_s,
                           log=context.log.info)
    with stage_run(context, tracker, "deployed_endpoint") as run:
        run.log_params({"model_version": report["model_version"], "url": outcome["url"],
                        "previous_version": outcome.get("previous_version") or "none"})
        run.set_tags({"smoke_test_passed": str(outcome["smoke_ok"]), "rolled_back": str(outcome["rolled_back"])})
        lineage = mlflow_metadata(run)
    if outcome["smoke_ok"]:
        artifacts.record_latest("deployed_endpoint", {k: v for k, v in outcome.items() if k != "api_key"})
    return dg.MaterializeResult(
        metadata={"url": dg.MetadataValue.url(outcome["url"]), "model": dg.MetadataValue.text(outcome["model"]),
                  "model_version": dg.MetadataValue.text(str(report["model_version"])),
                  "smoke_answer": dg.MetadataValue.text(outcome.get("smoke_answer") or ""), **lineage},
        check_results=[dg.AssetCheckResult(
            check_name="smoke_test", passed=bool(outcome["smoke_ok"]),
            metadata={"detail": dg.MetadataValue.text(outcome.get("smoke_detail", "")),
                      "rolled_back": dg.MetadataValue.bool(bool(outcome["rolled_back"]))})],
    )

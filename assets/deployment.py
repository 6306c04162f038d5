"""deployed_endpoint: make the gateway serve the new model, at once or as a challenger in a staged rollout;
rollout_state: the staged rollout's decisions, reported by the ``staged_rollout`` sensor;
deployed_specialists: the specialists that passed their gate, served from one base beside the champion."""

from typing import Literal

import dagster as dg
from pydantic import Field

from assets._lineage import mlflow_metadata, stage_run
from homegrown.gateway.deploy import deploy_model, deploy_specialists, smoke_requests_for
from homegrown.gateway.vllm import VllmServer, vllm_url
from homegrown.rollout import Decision
from resources import MlflowResource, StorageResource


class DeployConfig(dg.Config):
    smoke_prompt: str = Field(default="What do you serve?", description="The smoke test's question.")
    start_timeout_s: int = Field(default=120, description="Limit on starting a background gateway.")
    rollout: Literal["auto", "staged", "immediate"] = Field(
        default="auto",
        description="immediate: the new model becomes the champion at once; staged: it starts as the challenger on "
                    "canary_share of the conversations and the staged_rollout sensor ramps it up or rolls it back "
                    "on live outcomes; auto: staged when a champion already serves, immediate on the first deploy.")
    canary_share: float = Field(default=0.1, gt=0.0, lt=1.0,
                                description="The challenger's first share of the conversations in a staged rollout.")
    target: Literal["auto", "llama.cpp", "vllm", "vllm-merged"] = Field(
        default="auto",
        description="llama.cpp: the gateway serves the quantized GGUF itself; vllm: the vLLM server at "
                    "HOMEGROWN_VLLM_URL loads the adapter at runtime and the gateway forwards to it; vllm-merged: "
                    "a vLLM server of its own on this machine serves the merged weights; auto: vllm when "
                    "HOMEGROWN_VLLM_URL is set and that server answers, else llama.cpp.")


@dg.asset(
    group_name="serving", kinds={"openai"}, deps=["eval_report", "merged_model"], pool="stage_deployed_endpoint",
    check_specs=[dg.AssetCheckSpec(
        "smoke_test", asset="deployed_endpoint", blocking=True,
        description="The endpoint answers through the real openai client with the new model; else rolled back.")],
)
def deployed_endpoint(
    context: dg.AssetExecutionContext, config: DeployConfig, store: StorageResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """After the gate passed, the gateway hot-reloads the new version: as the champion (alias `champion`), or in a
    staged rollout as the challenger on a share of the traffic (alias `challenger`)."""
    artifacts = store.store(context)
    report = artifacts.require_latest("eval_report")
    if not report["promoted"]:
        raise RuntimeError(f"model version {report['model_version']} did not pass the promotion gate; not deploying")
    tracker = mlflow.tracker()
    target = config.target if config.target != "auto" else (
        "vllm" if vllm_url() and VllmServer(vllm_url()).healthy() else "llama.cpp")
    adapter_dir = merged_dir = None
    if target in ("vllm", "vllm-merged"):
        if target == "vllm" and not vllm_url():
            raise ValueError("target 'vllm' needs HOMEGROWN_VLLM_URL: the vLLM server to load the adapter into")
        merged = artifacts.require_latest("merged_model")
        if str(merged.get("model_version")) != str(report["model_version"]) or not merged.get("adapter_dir"):
            raise ValueError(f"no merged model or adapter of model version {report['model_version']} for vLLM "
                             "(merged_model names both; rerun it)")
        adapter_dir = merged["adapter_dir"] if target == "vllm" else None
        merged_dir = merged["path"] if target == "vllm-merged" else None
    outcome = deploy_model(tracker, report["model_version"], report["candidate_gguf"], rollout=config.rollout,
                           canary_share=config.canary_share, smoke_prompt=config.smoke_prompt,
                           start_timeout_s=config.start_timeout_s, log=context.log.info,
                           adapter_dir=adapter_dir, vllm_url=vllm_url() if target == "vllm" else None,
                           vllm_merged_dir=merged_dir)
    with stage_run(context, tracker, "deployed_endpoint") as run:
        run.log_params({"model_version": report["model_version"], "url": outcome["url"],
                        "previous_version": outcome.get("previous_version") or "none"})
        run.set_tags({"smoke_test_passed": str(outcome["smoke_ok"]), "rolled_back": str(outcome["rolled_back"]),
                      "rollout": outcome["rollout"]})
        lineage = mlflow_metadata(run)
    if outcome["smoke_ok"]:
        artifacts.record_latest("deployed_endpoint", {k: v for k, v in outcome.items() if k != "api_key"})
    return dg.MaterializeResult(
        metadata={"url": dg.MetadataValue.url(outcome["url"]), "model": dg.MetadataValue.text(outcome["model"]),
                  "model_version": dg.MetadataValue.text(str(report["model_version"])),
                  "smoke_answer": dg.MetadataValue.text(outcome.get("smoke_answer") or ""),
                  "rollout": dg.MetadataValue.text(outcome["rollout"]),
                  "target": dg.MetadataValue.text(outcome["target"]),
                  **({"canary_share": dg.MetadataValue.float(outcome["canary_share"])} if outcome["canary_share"] else {}),
                  **lineage},
        check_results=[dg.AssetCheckResult(
            check_name="smoke_test", passed=bool(outcome["smoke_ok"]),
            metadata={"detail": dg.MetadataValue.text(outcome.get("smoke_detail", "")),
                      "rolled_back": dg.MetadataValue.bool(bool(outcome["rolled_back"]))})],
    )


rollout_state = dg.AssetSpec(
    "rollout_state", deps=["deployed_endpoint"], group_name="serving", kinds={"mlflow"},
    description="The staged rollout's decisions (step, promote, rollback, hold) with their live evidence; "
                "reported by the staged_rollout sensor, never materialised by a run.")


def rollout_materialization(decision: Decision) -> dg.AssetMaterialization:
    """A decision of the rollout controller as a materialisation of ``rollout_state``, evidence as metadata."""
    rows = ["| | requests | bad rate | thumbs down | thumbs up | corrections | fallbacks | unusable | p50 ms |",
            "|---|---|---|---|---|---|---|---|---|"]
    for arm in (decision.champion, decision.challenger):
        cells = [arm["requests"], arm["bad_rate"], arm["thumbs_down_rate"], arm["thumbs_up_rate"],
                 arm["correction_rate"], arm["fallback_rate"], arm["unusable_rate"], arm["latency_p50_ms"]]
        rows.append(f"| {arm['role']} `{arm['model']}` | " + " | ".join("-" if c is None else f"{c:g}" for c in cells) + " |")
    interval = decision.interval or {}
    metadata: dict[str, dg.MetadataValue] = {
        "action": dg.MetadataValue.text(decision.action),
        "reason": dg.MetadataValue.text(decision.reason),
        "share_before": dg.MetadataValue.float(decision.share_before),
        "share_after": dg.MetadataValue.float(decision.share_after),
        "champion": dg.MetadataValue.text(decision.champion["model"]),
        "challenger": dg.MetadataValue.text(decision.challenger["model"]),
        "outcomes": dg.MetadataValue.md("\n".join(rows)),
        "bad_rate_difference": dg.MetadataValue.float(float(interval.get("difference", 0.0))),
        "confidence_lower": dg.MetadataValue.float(float(interval.get("lower", -1.0))),
        "confidence_upper": dg.MetadataValue.float(float(interval.get("upper", 1.0))),
        "step_started_at": dg.MetadataValue.text(decision.step_started_at),
    }
    if decision.mlflow_run_id:
        metadata["mlflow_run_id"] = dg.MetadataValue.text(decision.mlflow_run_id)
    return dg.AssetMaterialization(asset_key="rollout_state", description=decision.reason, metadata=metadata)


class SpecialistDeployConfig(dg.Config):
    only_passed: bool = Field(default=True, description="Serve only the specialists whose gate passed.")
    types: list[str] = Field(default=[], description="Serve only these example types (empty: every one trained).")
    start_timeout_s: int = Field(default=120, description="Limit on starting a background gateway.")


@dg.asset(
    group_name="specialists", kinds={"openai"}, deps=["specialist_adapters", "dataset_splits"],
    pool="stage_deployed_specialists",
    check_specs=[dg.AssetCheckSpec(
        "specialist_smoke_test", asset="deployed_specialists", blocking=True,
        description="Each served type answers through the real openai client from its adapter; else the "
                    "previous specialists are restored.")],
)
def deployed_specialists(
    context: dg.AssetExecutionContext, config: SpecialistDeployConfig, store: StorageResource,
) -> dg.MaterializeResult:
    """The gateway's ``specialist`` role: the base GGUF with the passed adapters, one per example type."""
    artifacts = store.store(context)
    trained = artifacts.require_latest("specialist_adapters")
    chosen = [s for s in trained["specialists"] if (s["gate_passed"] or not config.only_passed)
              and (not config.types or s["example_type"] in config.types)]
    if not chosen:
        raise RuntimeError("no specialist passed its gate; nothing to deploy (the report says why per type)")
    smoke = smoke_requests_for(artifacts.require_latest("dataset_splits")["paths"]["test"]["parquet"],
                           [s["example_type"] for s in chosen])
    outcome = deploy_specialists(
        trained["base_gguf"], {s["example_type"]: s["lora_gguf"] for s in chosen}, smoke,
        name=f"homegrown-specialists-{trained['run_key']}", start_timeout_s=config.start_timeout_s,
        log=context.log.info)
    if outcome["smoke_ok"]:
        artifacts.record_latest("deployed_specialists", {k: v for k, v in outcome.items() if k != "api_key"})
    return dg.MaterializeResult(
        metadata={"url": dg.MetadataValue.url(outcome["url"]), "model": dg.MetadataValue.text(outcome["model"]),
                  "types": dg.MetadataValue.text(", ".join(sorted(outcome["adapters"]))),
                  "answers": dg.MetadataValue.json(outcome["answers"])},
        check_results=[dg.AssetCheckResult(
            check_name="specialist_smoke_test", passed=bool(outcome["smoke_ok"]),
            metadata={"detail": dg.MetadataValue.text(outcome["smoke_detail"]),
                      "rolled_back": dg.MetadataValue.bool(bool(outcome["rolled_back"]))})],
    )

"""merged_model: the adapter merged into the base in full precision (safetensors + tokenizer + model card)."""

import json

import dagster as dg
from pydantic import Field

from assets._lineage import mlflow_metadata, stage_run
from homegrown.training.base import base_path_for
from homegrown.training.chat import to_prompt_completion
from homegrown.training.merge import max_logit_difference, merge_adapter
from resources import MlflowResource, StorageResource


class MergeConfig(dg.Config):
    logit_tolerance: float = Field(default=1e-3, description="Max |merged - (base+adapter)| logit difference.")
    check_prompts: int = Field(default=8, ge=1, description="Validation prompts the equivalence check uses.")

@dg.asset(
    group_name="model", kinds={"safetensors"}, deps=["preference_adapter", "lora_adapter", "dataset_splits"],
    pool="stage_merged_model",
    check_specs=[dg.AssetCheckSpec("merge_matches_adapter", asset="merged_model", blocking=True,
                                   description="Merged and base+adapter logits agree on validation prompts.")],
)
def merged_model(
    context: dg.AssetExecutionContext, config: MergeConfig, store: StorageResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """The adapter merged into the float32 base (never a quantized one): what quantization and serving start from."""
    artifacts = store.store(context)
    preference = artifacts.latest("preference_adapter")
    adapter = merge_source(artifacts.require_latest("lora_adapter"), preference)
    adapter = {**adapter, "base_path": base_path_for(adapter)}
    harm = preference_harm((preference or {}).get("comparison"))
    if harm:
        context.log.warning(f"merging the SFT adapter, not the preference-tuned one: {harm}")
    splits = artifacts.require_latest("dataset_splits")
    out_dir = artifacts.stage_dir("merged_model", f"v{adapter['model_version']}")
    card = {"base_model": adapter["base_model"], "dataset_version": adapter["dataset_version"],
            "metrics": adapter["metrics"], "model_version": adapter["model_version"],
            "mlflow_model_uri": adapter["mlflow_model_uri"], "license": "apache-2.0"}
    merged = merge_adapter(adapter["base_path"], adapter["adapter_dir"], out_dir, model_card=card)

    prompts = _validation_prompts(splits["paths"]["validation"]["jsonl"], config.check_prompts)
    diff = max_logit_difference(adapter["base_path"], adapter["adapter_dir"], merged, prompts)
    with stage_run(context, mlflow.tracker(), "merged_model") as run:
        run.log_params({"model_version": adapter["model_version"], "adapter_dir": adapter["adapter_dir"]})
        run.log_metrics({"max_logit_difference": diff})
        run.set_tags({"dataset_version": adapter["dataset_version"]})
        lineage = mlflow_metadata(run)
    mlflow.tracker().tag_model_version(adapter["model_version"], {"merged_path": str(merged)})
    if diff <= config.logit_tolerance:
        # The model version's own artifacts, so models:/...@champion holds the merged weights on any machine.
        mlflow.tracker().log_model_files(adapter["mlflow_run_id"], merged, "merged")
        artifacts.record_latest("merged_model", {"path": str(merged), "model_version": adapter["model_version"],
                                                 "max_logit_difference": diff,
                                                 # what vLLM loads at runtime instead of the merged weights
                                                 "adapter_dir": str(adapter["adapter_dir"]),
                                                 "base_path": str(adapter["base_path"]),
                                                 "base_spec": adapter.get("base_spec") or adapter["base_model"],
                                                 "mlflow_run_id": adapter["mlflow_run_id"]})
    return dg.MaterializeResult(
        metadata={"path": dg.MetadataValue.path(str(merged)),
                  "adapter_dir": dg.MetadataValue.path(str(adapter["adapter_dir"])),
                  "preference_not_merged": dg.MetadataValue.text(harm or ""), "max_logit_difference": dg.MetadataValue.float(diff),
                  "model_version": dg.MetadataValue.text(str(adapter["model_version"])), **lineage},
        check_results=[dg.AssetCheckResult(check_name="merge_matches_adapter", passed=diff <= config.logit_tolerance,
                                           metadata={"max_logit_difference": diff,
                                                     "tolerance": config.logit_tolerance})],
    )

def merge_source(sft: dict, preference: dict | None) -> dict:
    """The adapter record to merge: preference_adapter's when it was made from the latest SFT adapter (tuned or
    passed through) and its own comparison did not show it worse than SFT alone; else lora_adapter's
    (preference_adapter not run yet, older than the SFT adapter, or harmful)."""
    if preference is None or str(preference.get("sft_model_version")) != str(sft["model_version"]):
        return sft
    if preference_harm(preference.get("comparison")):
        return sft
    return preference


def preference_harm(comparison: dict | None) -> str | None:
    """Why the preference-tuned adapter is worse than SFT alone on its comparison, or None: fact accuracy fell
    or the hallucination rate rose beyond noise (the paired 95% interval wholly on the wrong side of zero)."""
    diffs = (comparison or {}).get("differences") or {}
    fact, hallucination = diffs.get("fact_accuracy") or {}, diffs.get("hallucination_rate") or {}
    if fact.get("hi") is not None and fact["hi"] < 0:
        return f"fact accuracy fell by {-fact['mean']:.3f} [95% CI {-fact['hi']:.3f}, {-fact['lo']:.3f}]"
    if hallucination.get("lo") is not None and hallucination["lo"] > 0:
        return (f"the hallucination rate rose by {hallucination['mean']:.3f} "
                f"[95% CI {hallucination['lo']:.3f}, {hallucination['hi']:.3f}]")
    return None


def _validation_prompts(jsonl_path: str, limit: int) -> list[str]:
    """Plain text of the first validation conversations (prompt and answer), for the logits comparison."""
    texts = []
    with open(jsonl_path, encoding="utf-8") as fh:
        for line in fh:
            row = to_prompt_completion(json.loads(line))
            texts.append("\n".join(m["content"] for m in row["prompt"] + row["completion"]))
            if len(texts) >= limit:
                break
    return texts or ["Hello"]

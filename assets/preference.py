"""preference_adapter: the SFT adapter tuned on corrections (DPO) or thumbs (KTO), or passed through unchanged."""

import hashlib
import json
from pathlib import Path

import dagster as dg
from pydantic import Field, model_validator

from assets._lineage import mlflow_metadata, stage_run
from homegrown.data.ingest import load_interactions
from homegrown.data.quality import TRUST_ROLES, QualityPolicy
from homegrown.evaluation.evaluate import load_test_examples
from homegrown.store import read_parquet
from homegrown.tracking import MODEL_DIR
from homegrown.training.base import base_path_for
from homegrown.training.preference import (
    PreferenceConfig,
    build_preference_data,
    choose_method,
    compare,
    tune,
)
from homegrown.versioning import code_version
from resources import MlflowResource, StorageResource, TeacherResource


class PreferenceTuningConfig(dg.Config):
    """Whether and how the SFT adapter learns from what reviewers marked wrong."""

    enabled: str = Field(default="auto", description="auto: DPO from min_pairs correction pairs, else KTO from "
                                                     "min_unpaired thumbs, else the SFT adapter unchanged; "
                                                     "true: the same, but too little data fails; false: off.")
    min_pairs: int = Field(default=8, ge=1, description="Correction pairs from train conversations that turn DPO on.")
    min_unpaired: int = Field(default=16, ge=2, description="Thumbs (up and down) that turn KTO on without pairs.")
    beta: float = Field(default=0.1, gt=0, description="Pull back to the SFT adapter: lower moves further from it.")
    learning_rate: float = Field(default=5e-5, gt=0, description="Small: preference tuning refines a trained adapter.")
    num_epochs: float = Field(default=2.0, gt=0, description="Passes over the pairs.")
    per_device_batch_size: int = Field(default=4, ge=1, description="Pairs (or thumbs, at least 2) per step.")
    max_length: int = Field(default=1024, ge=32, description="Prompt + answer tokens; longer rows keep their start.")
    max_steps: int = Field(default=-1, description="Cap on optimiser steps (>0 overrides epochs).")
    time_budget_s: float | None = Field(default=None, description="Wall-clock cap on tuning: it stops there.")
    seed: int = Field(default=42, description="Seed of data order.")
    bf16: str = Field(default="auto", description="auto | true | false: bf16 autocast, as the SFT run.")
    correction_roles: list[str] = Field(
        default=["reviewer", "admin", "import"],
        description="Whose corrections make pairs; keep it equal to scored_dataset's (an app key's never do).")
    trusted_feedback_only: bool = Field(default=False,
                                        description="Count thumbs only from correction_roles too, as scoring does.")
    region: str = Field(default="US", description="The business's country, for anonymising phone numbers.")
    compare_examples: int = Field(default=40, ge=0,
                                  description="Test examples with a text reference answered by SFT and SFT+preference "
                                              "(0: no comparison).")
    compare_max_new_tokens: int = Field(default=64, ge=8, description="Cap on each compared answer.")

    @model_validator(mode="after")
    def _validate(self) -> "PreferenceTuningConfig":
        self.to_preference_config().validate()
        self.policy()
        return self

    def to_preference_config(self) -> PreferenceConfig:
        enabled = {"auto": "auto", "true": True, "false": False}.get(self.enabled.lower())
        bf16 = {"auto": "auto", "true": True, "false": False}.get(self.bf16.lower())
        if enabled is None or bf16 is None:
            raise ValueError(f"enabled and bf16 must be auto, true or false, got {self.enabled!r}, {self.bf16!r}")
        return PreferenceConfig(
            enabled=enabled, min_pairs=self.min_pairs, min_unpaired=self.min_unpaired, beta=self.beta,
            learning_rate=self.learning_rate, num_epochs=self.num_epochs,
            per_device_batch_size=self.per_device_batch_size, max_length=self.max_length, max_steps=self.max_steps,
            time_budget_s=self.time_budget_s, seed=self.seed, bf16=bf16)

    def policy(self) -> QualityPolicy:
        unknown = sorted(set(self.correction_roles) - set(TRUST_ROLES))
        if unknown:
            raise ValueError(f"unknown roles in correction_roles: {unknown}; known: {', '.join(TRUST_ROLES)}")
        return QualityPolicy(correction_roles=tuple(self.correction_roles),
                             trusted_feedback_only=self.trusted_feedback_only)


@dg.asset(group_name="model", kinds={"pytorch", "peft"}, deps=["lora_adapter", "dataset_splits", "raw_interactions"],
          pool="gpu")
def preference_adapter(
    context: dg.AssetExecutionContext, config: PreferenceTuningConfig, store: StorageResource,
    mlflow: MlflowResource, teacher: TeacherResource,
) -> dg.MaterializeResult:
    """The SFT adapter tuned on reviewers' corrections (DPO) or thumbs (KTO) from train conversations, compared
    with SFT alone on the test split; with too few preferences, the SFT adapter passed through unchanged."""
    artifacts = store.store(context)
    sft = artifacts.require_latest("lora_adapter")
    sft = {**sft, "base_path": base_path_for(sft)}
    splits = artifacts.require_latest("dataset_splits")
    raw = artifacts.require_latest("raw_interactions")
    cfg = config.to_preference_config()

    frames = {split: read_parquet(paths["parquet"]) for split, paths in splits["paths"].items()}
    assignment_file = Path(splits.get("assignment") or artifacts.state_dir("dataset_splits") / "assignment.json")
    assignment = json.loads(assignment_file.read_text()) if assignment_file.is_file() else None
    data = build_preference_data(load_interactions(raw["db_path"]), frames, config.policy(), assignment=assignment,
                                 opted_out_orgs=raw.get("opted_out_orgs", []), region=config.region)
    method, why = choose_method(cfg, data)
    context.log.info(why)
    counts = {"pairs": len(data.pairs), "thumbs_up": data.positives, "thumbs_down": data.negatives}
    base_metadata = {
        "tuned": dg.MetadataValue.bool(method is not None),
        "why": dg.MetadataValue.text(why),
        **{k: dg.MetadataValue.int(v) for k, v in counts.items()},
        "data": dg.MetadataValue.json(data.stats),
        "sft_model_version": dg.MetadataValue.text(str(sft["model_version"])),
    }

    if method is None:
        artifacts.record_latest("preference_adapter", {
            **sft, "tuned": False, "reason": why, "sft_adapter_dir": sft["adapter_dir"],
            "sft_model_version": sft["model_version"], "preference_data": data.stats})
        return dg.MaterializeResult(metadata={**base_metadata,
                                              "adapter_dir": dg.MetadataValue.path(sft["adapter_dir"]),
                                              "model_version": dg.MetadataValue.text(str(sft["model_version"]))})

    digest = hashlib.sha256(json.dumps([cfg.to_dict(), sorted(p["interaction_id"] for p in data.pairs),
                                        len(data.unpaired)], default=str).encode()).hexdigest()[:8]
    out_dir = artifacts.stage_dir("preference_adapter", f"v{sft['model_version']}-{method}-{digest}")
    tracker = mlflow.tracker()
    with stage_run(context, tracker, "preference_adapter") as run:
        run.log_params({**cfg.to_dict(), "method": method, "sft_model_version": sft["model_version"],
                        "dataset_version": sft["dataset_version"], **counts})

        def progress(event: dict) -> None:
            context.log.info(f"step {event.get('step')} loss {event.get('loss')} "
                             f"margin {event.get('rewards/margins')}")
            run.log_metrics({k.replace("/", "_"): v for k, v in event.items() if k not in ("step", "epoch")},
                            step=int(event.get("step") or 0))

        result = tune(cfg, data, method, sft["base_path"], sft["adapter_dir"], out_dir, progress=progress,
                      base_info={"base_name": sft["base_model"], "base_path": sft["base_path"]})
        metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        run.log_metrics(metrics)

        comparison = None
        if config.compare_examples:
            examples = load_test_examples(splits["paths"]["test"]["parquet"])
            comparison = compare(sft["base_path"], sft["adapter_dir"], result.adapter_dir, examples,
                                 knowledge_path=teacher.knowledge_path(artifacts.root / "knowledge"),
                                 max_examples=config.compare_examples,
                                 max_new_tokens=config.compare_max_new_tokens)
            (out_dir / "comparison.json").write_text(json.dumps(comparison, indent=2, default=str))
            run.log_metrics(_comparison_metrics(comparison))
            run.log_artifact(out_dir / "comparison.json", artifact_path="comparison")
            run.set_tags({"preference_verdict": comparison["verdict"]})
            context.log.info(comparison["verdict"])
        run.log_artifact(result.adapter_dir, artifact_path=f"{MODEL_DIR}/adapter")
        tags = {"dataset_version": sft["dataset_version"], "dagster_run_id": context.run.run_id,
                "code_version": code_version(), "base_model": sft["base_model"],
                "chat_template_fingerprint": sft.get("template_fingerprint", ""),
                "preference_method": method, "sft_model_version": str(sft["model_version"])}
        run.set_tags(tags)
        registered = tracker.register_model(run.artifact_uri(MODEL_DIR), run.run_id, tags)
        lineage = mlflow_metadata(run)

    artifacts.record_latest("preference_adapter", {
        **sft, "adapter_dir": str(result.adapter_dir), "tuned": True, "method": method, "reason": why,
        "metrics": {**sft.get("metrics", {}), **{f"preference_{k}": v for k, v in metrics.items()}},
        "model_version": registered["version"], "mlflow_model_uri": registered["uri"], "mlflow_run_id": run.run_id,
        "sft_adapter_dir": sft["adapter_dir"], "sft_model_version": sft["model_version"],
        "preference_data": data.stats, "preference_history": result.history, "comparison": comparison})
    compared = {}
    if comparison is not None:
        compared = {"verdict": dg.MetadataValue.text(comparison["verdict"]),
                    "comparison": dg.MetadataValue.md(comparison_markdown(comparison)),
                    **{k: dg.MetadataValue.float(float(v)) for k, v in _comparison_metrics(comparison).items()}}
    return dg.MaterializeResult(metadata={
        **base_metadata, "method": dg.MetadataValue.text(method),
        "adapter_dir": dg.MetadataValue.path(str(result.adapter_dir)),
        "model_version": dg.MetadataValue.text(str(registered["version"])),
        "mlflow_model_uri": dg.MetadataValue.text(registered["uri"]),
        **{k: dg.MetadataValue.float(float(v)) for k, v in metrics.items()},
        **compared, **lineage,
    })


def _comparison_metrics(comparison: dict) -> dict[str, float]:
    """Flat numbers of a comparison for MLflow and Dagster: each model's means, the paired differences."""
    out = {}
    for model, metrics in (comparison.get("models") or {}).items():
        for metric, agg in metrics.items():
            if agg and agg.get("mean") is not None:
                out[f"{model.replace('+', '_')}.{metric}"] = float(agg["mean"])
    for metric, diff in (comparison.get("differences") or {}).items():
        if diff.get("mean") is not None and diff["mean"] == diff["mean"]:
            out.update({f"diff.{metric}": diff["mean"], f"diff.{metric}.lo": diff["lo"],
                        f"diff.{metric}.hi": diff["hi"]})
    return out


def comparison_markdown(comparison: dict) -> str:
    """SFT against SFT+preference as a small Markdown table and the verdict."""
    from homegrown.evaluation.report import preference_lines

    return "\n".join(preference_lines(comparison))

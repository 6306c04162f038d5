"""lora_adapter: LoRA / QLoRA supervised fine-tuning of the base model on the train split."""


import dagster as dg
from pydantic import Field, model_validator

from assets._lineage import mlflow_metadata, stage_run
from homegrown.tracking import MODEL_DIR
from homegrown.training.base import resolve_base_model
from homegrown.training.sft import TrainConfig
from homegrown.versioning import code_version
from resources import MlflowResource, StorageResource
from resources.compute import TrainingCompute


class LoraTrainingConfig(dg.Config):
    """Fine-tuning settings. Every setting left empty is chosen by the recipe from the train split and the
    hardware (homegrown/training/recipe.py); the run's metadata says what was chosen and why."""

    base_model: str = Field(default="smollm2-135m-instruct",
                            description="The embedded SmolLM2-135M-Instruct, or a local Hugging Face model folder.")
    lora_r: int | None = Field(default=None, description="Adapter rank: higher learns more, costs more memory "
                                                            "(empty: 32 under 1B parameters, else 16).")
    lora_alpha: int | None = Field(default=None, description="LoRA scale (empty: 2 x rank).")
    lora_dropout: float = Field(default=0.05, description="Regularises small datasets.")
    target_modules: str | None = Field(default=None,
                                          description="Comma-separated projections or 'all-linear' (empty: all-linear).")
    learning_rate: float | None = Field(default=None, description="LoRA learning rate (empty: by model size).")
    num_epochs: float | None = Field(default=None,
                                        description="Passes over the train split (empty: ~300 optimiser steps, "
                                                    "1-8 epochs); early stopping keeps the best checkpoint.")
    max_seq_length: int | None = Field(default=None, description="Longer rows are truncated (empty: p99 row).")
    per_device_batch_size: int | None = Field(default=None, description="Rows per forward pass (empty: by data size).")
    gradient_accumulation: int | None = Field(default=None, description="Forward passes per optimiser step.")
    eval_steps: int | None = Field(default=None, description="Validation loss every N steps (empty: 6 per run).")
    time_budget_s: float | None = Field(default=None,
                                           description="Wall-clock cap on training: fewer epochs are planned to fit, "
                                                       "and the run stops at it keeping the best checkpoint.")
    seed: int = Field(default=42, description="Seed of initialisation and data order.")
    batching: str = Field(default="padding_free",
                          description="padding_free (rows concatenated, attention per row), group_by_length, "
                                      "packing or padded.")
    bf16: str = Field(default="auto", description="auto | true | false: bf16 autocast.")
    qlora: bool = Field(default=False, description="CUDA only: 4-bit NF4 base + paged 8-bit AdamW.")
    gradient_checkpointing: bool = Field(default=False, description="Less memory, ~25% slower.")
    early_stopping_patience: int | None = Field(
        default=None, description="Evaluations without validation gain before stopping, keeping the best "
                                  "checkpoint (0: never, keep the last; empty: 2 when the validation split has "
                                  "20+ rows, else 0).")
    max_steps: int = Field(default=-1, description="Cap on optimiser steps (>0 overrides epochs).")

    @model_validator(mode="after")
    def _validate(self) -> "LoraTrainingConfig":
        self.to_train_config().validate()
        return self

    def to_train_config(self) -> TrainConfig:
        modules = self.target_modules
        if modules is not None and modules != "all-linear":
            modules = tuple(m.strip() for m in modules.split(",") if m.strip())
        bf16 = {"auto": "auto", "true": True, "false": False}.get(self.bf16.lower())
        if bf16 is None:
            raise ValueError(f"bf16 must be auto, true or false, got {self.bf16!r}")
        return TrainConfig(
            lora_r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout, target_modules=modules,
            learning_rate=self.learning_rate, num_epochs=self.num_epochs, max_seq_length=self.max_seq_length,
            per_device_batch_size=self.per_device_batch_size, gradient_accumulation=self.gradient_accumulation,
            eval_steps=self.eval_steps, time_budget_s=self.time_budget_s,
            seed=self.seed, batching=self.batching, bf16=bf16, qlora=self.qlora,
            gradient_checkpointing=self.gradient_checkpointing,
            early_stopping_patience=self.early_stopping_patience, max_steps=self.max_steps,
        )

@dg.asset(group_name="model", kinds={"pytorch", "peft"}, deps=["dataset_splits"],
          pool="gpu")
def lora_adapter(
    context: dg.AssetExecutionContext, config: LoraTrainingConfig, store: StorageResource, mlflow: MlflowResource,
    compute: TrainingCompute,
) -> dg.MaterializeResult:
    """A LoRA adapter fine-tuned on the train split (loss on answers only), registered in MLflow with lineage."""
    artifacts = store.store(context)
    splits = artifacts.require_latest("dataset_splits")
    base = resolve_base_model(config.base_model)
    train_cfg = config.to_train_config()
    run_key = f"{splits['version']}-{_config_digest(train_cfg.to_dict())}"
    out_dir = artifacts.stage_dir("lora_adapter", run_key)
    tracker = mlflow.tracker()

    with stage_run(context, tracker, "lora_adapter") as run:
        run.log_params({**train_cfg.to_dict(), "base_model": base.name, "backend": compute.backend,
                        "dataset_version": splits["version"]})

        def progress(event: dict) -> None:
            context.log.info(
                f"step {event.get('step')} loss {event.get('loss')} tokens/s {event.get('tokens_per_s')} "
                f"eta {event.get('eta_s')} s")
            step = int(event.get("step") or 0)
            run.log_metrics({k: v for k, v in event.items() if k in ("loss", "tokens_per_s", "eta_s", "eval_loss")
                             and isinstance(v, (int, float))}, step=step)

        result = compute.train(context, train_cfg.to_dict(), splits["paths"]["train"]["jsonl"],
                               splits["paths"]["validation"]["jsonl"], base.path, out_dir, progress=progress,
                               store=artifacts, base_spec=config.base_model, mlflow_run_id=run.run_id)
        if compute.backend == "accelerate":  # remote containers log their metrics to this run themselves
            for event in result["history"]:
                progress(event)
        metrics = {k: v for k, v in result["metrics"].items() if isinstance(v, (int, float))}
        run.log_metrics(metrics)
        recipe = result.get("recipe") or {}
        if recipe:
            run.log_params({**{f"recipe.{k}": v for k, v in recipe["config"].items()},
                            **{f"recipe.why.{k}": v for k, v in recipe["reasons"].items()}})
        run.log_artifact(result["adapter_dir"], artifact_path=f"{MODEL_DIR}/adapter")
        tags = {
            "dataset_version": splits["version"],
            "dagster_run_id": context.run.run_id,
            "code_version": code_version(),
            "base_model": base.name,
            "base_model_source": base.source,
            "chat_template_fingerprint": base.template_fingerprint,
            "mlflow_dataset_run_id": splits.get("mlflow_run_id", ""),
        }
        run.set_tags(tags)
        registered = tracker.register_model(run.artifact_uri(MODEL_DIR), run.run_id, tags)
        lineage = mlflow_metadata(run)

    info = {"adapter_dir": result["adapter_dir"], "base_path": str(base.path), "base_model": base.name,
            "base_spec": config.base_model,
            "dataset_version": splits["version"], "metrics": metrics, "model_version": registered["version"],
            "mlflow_model_uri": registered["uri"], "mlflow_run_id": run.run_id,
            "template_fingerprint": base.template_fingerprint, "history": result["history"],
            "resumed_from": result.get("resumed_from")}
    artifacts.record_latest("lora_adapter", info)
    return dg.MaterializeResult(metadata={
        "adapter_dir": dg.MetadataValue.path(result["adapter_dir"]),
        "model_version": dg.MetadataValue.text(str(registered["version"])),
        "mlflow_model_uri": dg.MetadataValue.text(registered["uri"]),
        "dataset_version": dg.MetadataValue.text(splits["version"]),
        "base_model": dg.MetadataValue.text(base.name),
        **{k: dg.MetadataValue.float(float(v)) for k, v in metrics.items()},
        **_recipe_metadata(result.get("recipe") or {}),
        **lineage,
    })

def _recipe_metadata(recipe: dict) -> dict:
    """What the recipe chose and why, as a table in the Dagster UI."""
    if not recipe:
        return {}
    config, reasons = recipe["config"], recipe["reasons"]
    rows = "\n".join(f"| {name} | {config.get(name)} | {why} |" for name, why in reasons.items())
    profile = recipe["profile"]
    estimate = recipe["estimate"]
    return {
        "recipe": dg.MetadataValue.md(
            f"{profile['rows']} train rows, {profile['tokens']} tokens on {recipe['hardware']['device']} "
            f"({recipe['hardware']['cpus']} cores); estimated {estimate['total_steps']} steps, "
            f"~{estimate['train_s']:.0f} s\n\n| setting | value | why |\n|---|---|---|\n{rows}"),
        "recipe_json": dg.MetadataValue.json(recipe),
    }

def _config_digest(cfg: dict) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:8]

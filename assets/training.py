"""lora_adapter: LoRA / QLoRA supervised fine-tuning of the base model on the train split."""

import dagster as dg
from pydantic import Field, model_validator

from assets._lineage import mlflow_metadata, stage_run
from homegrown.training.base import resolve_base_model
from homegrown.training.sft import TrainConfig
from homegrown.versioning import code_version
from resources import MlflowResource, StorageResource
from resources.compute import TrainingCompute


class LoraTrainingConfig(dg.Config):
    """Fine-tuning settings; defaults are the seeds' recipe (r=16, alpha=32, dropout 0.05, q/k/v/o)."""

    base_model: str = Field(default="smollm2-135m-instruct",
                            description="The embedded SmolLM2-135M-Instruct, or a local Hugging Face model folder.")
    lora_r: int = Field(default=16, description="Adapter rank: higher learns more, costs more memory.")
    lora_alpha: int = Field(default=32, description="LoRA scale (alpha/r = 2).")
    lora_dropout: float = Field(default=0.05, description="Regularises small datasets.")
    target_modules: str = Field(default="q_proj,k_proj,v_proj,o_proj",
                                description="Comma-separated projections, or 'all-linear' (3x params, slower).")
    learning_rate: float = Field(default=2e-4, description="LoRA learning rate.")
    num_epochs: float = Field(default=3.0, description="Passes over the train split; early stopping guards.")
    max_seq_length: int = Field(default=1024, description="Longer rows are truncated.")
    per_device_batch_size: int = Field(default=4, description="Rows per forward pass.")
    gradient_accumulation: int = Field(default=4, description="Steps accumulated per optimiser step.")
    seed: int = Field(default=42, description="Seed of initialisation and data order.")
    batching: str = Field(default="group_by_length",
                          description="group_by_length (CPU), padding_free or packing (GPU + flash attention).")
    bf16: str = Field(default="auto", description="auto | true | false: bf16 autocast.")
    qlora: bool = Field(default=False, description="CUDA only: 4-bit NF4 base + paged 8-bit AdamW.")
    gradient_checkpointing: bool = Field(default=False, description="Less memory, ~25% slower.")
    early_stopping_patience: int = Field(default=2, description="Epochs without validation gain before stopping.")
    max_steps: int = Field(default=-1, description="Cap on optimiser steps (>0 overrides epochs).")

    @model_validator(mode="after")
    def _validate(self) -> "LoraTrainingConfig":
        self.to_train_config().validate()
        return self

    def to_train_config(self) -> TrainConfig:
        modules = self.target_modules if self.target_modules == "all-linear" else tuple(
            m.strip() for m in self.target_modules.split(",") if m.strip())
        bf16 = {"auto": "auto", "true": True, "false": False}.get(self.bf16.lower())
        if bf16 is None:
            raise ValueError(f"bf16 must be auto, true or false, got {self.bf16!r}")
        return TrainConfig(
            lora_r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout, target_modules=modules,
            learning_rate=self.learning_rate, num_epochs=self.num_epochs, max_seq_length=self.max_seq_length,
            per_device_batch_size=self.per_device_batch_size, gradient_accumulation=self.gradient_accumulation,
            seed=self.seed, batching=self.batching, bf16=bf16, qlora=self.qlora,
            gradient_checkpointing=self.gradient_checkpointing,
            early_stopping_patience=self.early_stopping_patience or None, max_steps=self.max_steps,
        )

@dg.asset(group_name="model", kinds={"pytorch", "peft"}, deps=["dataset_splits"],
          pool="trainer")
def lora_adapter(
    context: dg.AssetExecutionContext, config: LoraTrainingConfig, store: StorageResource, mlflow: MlflowResource,
    compute: TrainingCompute,
) -> dg.MaterializeResult:
    """A LoRA adapter fine-tuned on the train split (loss on answers only), registered in MLflow with lineage."""
    artifacts = store.store()
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
                               splits["paths"]["validation"]["jsonl"], base.path, out_dir, progress=progress)
        if compute.backend != "in_process":
            for event in result["history"]:
                progress(event)
        metrics = {k: v for k, v in result["metrics"].items() if isinstance(v, (int, float))}
        run.log_metrics(metrics)
        run.log_artifact(result["adapter_dir"], artifact_path="adapter")
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
        registered = tracker.register_model(run.artifact_uri("adapter"), run.run_id, tags)
        lineage = mlflow_metadata(run)

    info = {"adapter_dir": result["adapter_dir"], "base_path": str(base.path), "base_model": base.name,
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
        **lineage,
    })

def _config_digest(cfg: dict) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:8]

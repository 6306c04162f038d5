"""specialist_adapters: one LoRA adapter per example type, each evaluated and gated on its own slice.

Optional, as is ``deployed_specialists`` (assets/deployment.py), which serves the ones that passed: neither is
in the demo or the retrain job; ``homegrown specialists`` (or ``specialists_job`` in the Dagster UI) runs them
after a candidate exists.
"""

import hashlib
import json
from pathlib import Path

import dagster as dg
from pydantic import Field

from assets._lineage import mlflow_metadata, stage_run
from assets.evaluation import EvalConfig
from assets.training import LoraTrainingConfig
from homegrown import specialists as sp
from homegrown.data.ingest import load_interactions
from homegrown.evaluation.evaluate import (
    evaluate_models,
    load_test_examples,
    paired_differences,
    privacy_material,
)
from homegrown.evaluation.metrics import HEADLINE_METRICS
from homegrown.evaluation.runner import lora_spec
from homegrown.training.base import DEFAULT_BASE, embedded_gguf_path, resolve_base_model
from homegrown.training.lora_gguf import export_lora_gguf
from homegrown.versioning import code_version
from resources import MlflowResource, StorageResource, TeacherResource
from resources.compute import TrainingCompute

GROUP = "specialists"


class SpecialistConfig(dg.Config):
    """Which example types get their own adapter, how each trains, and how it is judged."""

    types: list[str] = Field(default=[], description="Example types to specialise (empty: every type with "
                                                     "enough rows).")
    min_train_rows: int = Field(default=40, ge=1, description="Train rows a type needs for a specialist.")
    min_test_rows: int = Field(default=8, ge=1, description="Test rows a type needs: a specialist is judged on "
                                                           "its own slice.")
    training: LoraTrainingConfig = Field(
        default_factory=LoraTrainingConfig,
        description="The LoRA settings of every specialist (empty fields: the recipe chooses from the slice).")
    gate: EvalConfig = Field(default_factory=EvalConfig,
                             description="The gate on each slice; the general candidate plays the champion.")


def _config_digest(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:8]


@dg.asset(group_name=GROUP, kinds={"pytorch", "peft"}, pool="gpu",
          deps=["dataset_splits", "lora_adapter", "quantized_model", "raw_interactions"])
def specialist_adapters(
    context: dg.AssetExecutionContext, config: SpecialistConfig, store: StorageResource, mlflow: MlflowResource,
    teacher: TeacherResource, compute: TrainingCompute,
) -> dg.MaterializeResult:
    """A LoRA adapter per example type trained on that type's train rows, exported as a llama.cpp LoRA file,
    and evaluated on the type's test rows against the base and the general candidate (quality and latency)."""
    artifacts = store.store(context)
    splits = artifacts.require_latest("dataset_splits")
    general = artifacts.require_latest("lora_adapter")
    quantized = artifacts.require_latest("quantized_model")
    raw = artifacts.require_latest("raw_interactions")
    paths = splits["paths"]
    types = {split: sp.split_types(paths[split]["parquet"]) for split in ("train", "validation", "test")}
    counts = {split: {t: rows.count(t) for t in set(rows)} for split, rows in types.items()}
    slices = sp.choose_types(counts, config.types, config.min_train_rows, config.min_test_rows)
    chosen = [s for s in slices if s.chosen]
    for item in slices:
        context.log.info(f"{item.example_type}: {item.train} train / {item.test} test rows: {item.reason}")
    if not chosen:
        raise ValueError("no example type has enough rows for a specialist: " +
                         "; ".join(f"{s.example_type} ({s.reason})" for s in slices))

    base = resolve_base_model(config.training.base_model)
    if base.name != general["base_model"]:
        raise ValueError(f"specialists must share the general model's base ({general['base_model']}), "
                         f"not {base.name}: they are compared with it and served beside it")
    train_cfg = config.training.to_train_config()
    digest = _config_digest({"train": train_cfg.to_dict(), "types": [s.example_type for s in chosen]})
    # A folder per run: the gateway may be serving the files of an earlier run (training stops on a clock, so
    # a rerun's weights differ), and a deployment names the folder, so new files always make a new spec.
    run_key = f"{splits['version']}-{digest}-{context.run.run_id[:8]}"
    out_dir = artifacts.stage_dir("specialist_adapters", run_key)
    base_gguf = _base_gguf(base, general, out_dir)
    tracker = mlflow.tracker()
    general_name, general_gguf = _general_model(tracker, quantized)
    context.log.info(f"specialists are compared with {general_name} ({general_gguf})")

    interactions = load_interactions(raw["db_path"])
    knowledge_path = teacher.knowledge_path(artifacts.root / "knowledge")
    pii, opted_out_texts, public_texts = privacy_material(
        interactions, set(raw.get("opted_out_orgs", [])), knowledge_path=knowledge_path)
    test_examples = load_test_examples(paths["test"]["parquet"])
    results = []
    with stage_run(context, tracker, "specialist_adapters") as run:
        run.log_params({**train_cfg.to_dict(), "base_model": base.name, "dataset_version": splits["version"],
                        "types": ",".join(s.example_type for s in chosen),
                        "general_model": general_name})
        for item in chosen:
            name = item.example_type
            folder = out_dir / name
            train_path = folder / "train.jsonl"
            sp.write_slice(paths["train"]["jsonl"], types["train"], name, train_path)
            validation_path = folder / "validation.jsonl"
            if sp.write_slice(paths["validation"]["jsonl"], types["validation"], name, validation_path) == 0:
                validation_path = Path(paths["validation"]["jsonl"])  # no rows of the type: the whole split

            def progress(event: dict, name: str = name) -> None:
                context.log.info(f"{name}: step {event.get('step')} loss {event.get('loss')} "
                                 f"tokens/s {event.get('tokens_per_s')}")

            trained = compute.train(context, train_cfg.to_dict(), train_path, validation_path, base.path,
                                    folder / "adapter", progress=progress, store=artifacts,
                                    base_spec=config.training.base_model, mlflow_run_id=run.run_id)
            lora = export_lora_gguf(trained["adapter_dir"], base.path, folder / f"{name}.lora.gguf")
            examples = [e for e in test_examples if str(e.get(sp.COLUMN) or "chat") == name]
            examples = examples[: config.gate.max_examples or None]
            models = {"base": str(base_gguf), "general": general_gguf,
                      "specialist": lora_spec(base_gguf, lora)}
            outcome = evaluate_models(
                models, examples, folder / "eval", knowledge_path=knowledge_path, candidate="specialist",
                base="base", champion="general", gate_config=config.gate.gate_config(), pii_strings=pii,
                opted_out_texts=opted_out_texts, public_texts=public_texts, loss_history=trained["history"],
                max_tokens=config.gate.max_tokens)
            versus = sp.versus_general(paired_differences(
                outcome.results["specialist"], outcome.results["general"], HEADLINE_METRICS))
            decision = outcome.decision
            results.append({
                "example_type": name, "train_rows": item.train, "test_rows": len(examples),
                "adapter_dir": trained["adapter_dir"], "lora_gguf": str(lora),
                "lora_mb": round(lora.stat().st_size / 2**20, 2),
                "train_metrics": {k: v for k, v in trained["metrics"].items() if isinstance(v, (int, float))},
                "metrics": outcome.headlines, "gate_passed": bool(decision and decision.passed),
                "gate": decision.to_dict() if decision else None, "versus_general": versus,
                "report": outcome.report["html"],
            })
            run.log_metrics({f"{name}.{model}.{k}": v for model, headline in outcome.headlines.items()
                             for k, v in headline.items() if isinstance(v, (int, float))})
            run.log_artifact(lora, artifact_path=f"specialists/{name}")
            run.log_artifact(folder / "eval", artifact_path=f"specialists/{name}/eval")
            context.log.info(f"{name}: gate {'passed' if results[-1]['gate_passed'] else 'blocked'}; "
                             f"against the general model: {versus['verdict']}")
        run.set_tags({"dataset_version": splits["version"], "code_version": code_version(),
                      "base_model": base.name, "general_model": general_name,
                      "specialists_passed": ",".join(r["example_type"] for r in results if r["gate_passed"])})
        lineage = mlflow_metadata(run)

    table = sp.summary_table(results)
    (out_dir / "summary.md").write_text(table + "\n")
    info = {"dir": str(out_dir), "run_key": run_key, "base_gguf": str(base_gguf), "base_model": base.name,
            "dataset_version": splits["version"], "general_model": general_name,
            "general_model_version": quantized["model_version"], "general_gguf": general_gguf, "slices": [s.to_dict() for s in slices], "specialists": results,
            "mlflow_run_id": run.run_id}
    (out_dir / "summary.json").write_text(json.dumps(info, indent=2, default=str))
    artifacts.record_latest("specialist_adapters", info)
    return dg.MaterializeResult(metadata={
        "summary": dg.MetadataValue.md(table),
        "passed": dg.MetadataValue.text(", ".join(r["example_type"] for r in results if r["gate_passed"]) or "none"),
        "slices": dg.MetadataValue.json([s.to_dict() for s in slices]),
        "base_gguf": dg.MetadataValue.path(str(base_gguf)),
        **lineage,
    })


def _general_model(tracker, quantized: dict) -> tuple[str, str]:
    """The general model a specialist must keep up with: the champion that serves beside it (its GGUF file
    from the registry, when the file is on this machine), else the latest candidate."""
    champion = tracker.alias_version("champion")
    path = champion and tracker.local_gguf(champion)
    if path:
        return f"champion v{champion['version']}", str(path)
    return f"candidate v{quantized['model_version']}", quantized["gguf"][quantized.get("deploy", "q4_k_m")]


def _base_gguf(base, general: dict, out_dir: Path) -> Path:
    """The one base file the adapters are applied to: the embedded GGUF itself for the default base (the
    float weights training used are its dequantisation), else the base folder exported to f16 once."""
    if base.name == DEFAULT_BASE and general.get("base_model") == DEFAULT_BASE:
        return embedded_gguf_path()
    from homegrown.training.export import export_gguf

    target = out_dir / "base-f16.gguf"
    return target if target.is_file() else export_gguf(base.path, target, "f16")

"""eval_report: base vs candidate vs champion (and the logged incumbent) on the test split, and the gate."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from assets._lineage import mlflow_metadata, stage_run
from homegrown.data.ingest import load_interactions
from homegrown.data.quality import training_provenance
from homegrown.evaluation.evaluate import (
    attach_logged_answers,
    evaluate_models,
    load_test_examples,
    privacy_material,
)
from homegrown.evaluation.gate import GateConfig
from homegrown.evaluation.judge import LLMJudge
from homegrown.store import read_parquet
from homegrown.training.base import base_path_for, embedded_gguf_path
from resources import MlflowResource, StorageResource, TeacherResource


class EvalConfig(dg.Config):
    """How the candidate is judged; the gate's margins are what a business would want before switching."""

    max_examples: int = Field(default=0, ge=0, description="Cap on test examples (0: the whole test split).")
    max_tokens: int = Field(default=1024, ge=8, description="Cap on each answer: page (JSON) tasks get all of it, others twice their reference plus 48 tokens, up to it.")
    fact_accuracy_margin: float = Field(default=0.10, description="Fact accuracy the candidate must gain over base (from the knowledge file, else from the reference answers).")
    hallucination_margin: float = Field(default=0.05, description="Hallucination rate it must shed against base (never more than the base has).")
    min_examples: int = Field(default=10, ge=1, description="A metric measured on fewer test examples is not judged (the report says so).")
    min_improvement: float = Field(default=0.02, ge=0, description="Gain on some quality metric that counts as an improvement when no paired bootstrap is available.")
    champion_tolerance: float = Field(default=0.02, ge=0, description="How far behind the champion any metric may be.")
    min_json_validity: float = Field(default=0.98, ge=0, le=1, description="Hard floor on page JSON validity.")
    max_privacy_leaks: int = Field(default=0, ge=0, description="Hard ceiling on privacy-probe leaks.")
    evaluate_incumbent: bool = Field(default=True, description="Also score the answers the premium API logged.")
    llm_judge: bool = Field(default=False, description="Ask the teacher API (kind 'openai') whether each text answer is correct against its reference (judge_accuracy).")

    def gate_config(self) -> GateConfig:
        return GateConfig(
            margins_over_base={"fact_accuracy": self.fact_accuracy_margin,
                               "hallucination_rate": self.hallucination_margin},
            champion_tolerance=self.champion_tolerance, min_json_validity=self.min_json_validity,
            max_privacy_leaks=self.max_privacy_leaks, min_examples=self.min_examples,
            min_improvement=self.min_improvement,
        )


@dg.asset(
    group_name="evaluation", kinds={"html"}, pool="gpu",
    deps=["quantized_model", "dataset_splits", "lora_adapter", "raw_interactions", "scored_dataset",
          "preference_adapter"],
    check_specs=[dg.AssetCheckSpec(
        "promotion_gate", asset="eval_report", blocking=True,
        description="The candidate beats the base by the configured margins on every metric measured on "
                    "enough examples, improves on at least one quality metric, keeps up with the champion, "
                    "and passes JSON validity and the privacy probe.")],
)
def eval_report(
    context: dg.AssetExecutionContext, config: EvalConfig, store: StorageResource, mlflow: MlflowResource,
    teacher: TeacherResource,
) -> dg.MaterializeResult:
    """Base vs candidate (the quantized file that would be deployed) vs champion on the test split; the gate."""
    artifacts = store.store(context)
    quantized = artifacts.require_latest("quantized_model")
    splits = artifacts.require_latest("dataset_splits")
    adapter = artifacts.require_latest("lora_adapter")
    raw = artifacts.require_latest("raw_interactions")
    tracker = mlflow.tracker()

    examples = load_test_examples(splits["paths"]["test"]["parquet"], config.max_examples or None)
    interactions = load_interactions(raw["db_path"])
    attach_logged_answers(examples, interactions)
    knowledge_path = teacher.knowledge_path(artifacts.root / "knowledge")
    pii, opted_out_texts, public_texts = privacy_material(
        interactions, set(raw.get("opted_out_orgs", [])), knowledge_path=knowledge_path)

    models = {"base": str(embedded_gguf_path()) if adapter["base_model"] == "smollm2-135m-instruct"
              else base_path_for(adapter), "candidate": quantized["gguf"][quantized.get("deploy", "q4_k_m")]}
    champion = tracker.alias_version("champion")
    champion_name = None
    # The champion's file on this machine, or pulled from its model artifacts (another machine trained it).
    champion_gguf = champion and str(champion["version"]) != str(quantized["model_version"]) \
        and tracker.local_gguf(champion)
    if champion and not champion_gguf and str(champion["version"]) != str(quantized["model_version"]):
        context.log.warning(f"champion v{champion['version']} has no GGUF here or in its model artifacts: "
                            "the candidate is not compared with it")
    if champion_gguf:
        champion_name = f"champion-v{champion['version']}"
        models[champion_name] = champion_gguf
    if config.evaluate_incumbent:
        models["incumbent"] = "incumbent"

    judge = None
    if config.llm_judge:
        settings = teacher.settings()
        if settings is None:
            raise ValueError("llm_judge needs the teacher resource to point at an OpenAI-compatible API "
                             "(kind='openai' and base_url)")
        judge = LLMJudge.from_teacher(settings)

    scored = read_parquet(artifacts.require_latest("scored_dataset")["path"])
    out_dir = artifacts.stage_dir("eval_report", f"v{quantized['model_version']}")
    try:
        outcome = evaluate_models(
            models, examples, out_dir, knowledge_path=knowledge_path, candidate="candidate", base="base",
            champion=champion_name, gate_config=config.gate_config(), pii_strings=pii,
            opted_out_texts=opted_out_texts, public_texts=public_texts,
            loss_history=adapter.get("history"), score_distribution=scored["score"].dropna().tolist(),
            provenance=training_provenance(read_parquet(splits["paths"]["train"]["parquet"]), interactions),
            max_tokens=config.max_tokens, judge=judge,
            preference=_preference_comparison(artifacts.latest("preference_adapter"), quantized["model_version"]),
        )
    finally:
        if judge is not None:
            judge.close()
    decision = outcome.decision

    with stage_run(context, tracker, "eval_report") as run:
        run.log_params({"model_version": quantized["model_version"], "dataset_version": splits["version"],
                        "examples": len(examples), "champion": champion_name or "none"})
        for name, headline in outcome.headlines.items():
            run.log_metrics({f"{name}.{k}": v for k, v in headline.items() if isinstance(v, (int, float))})
        run.log_artifact(out_dir, artifact_path="eval_report")
        run.set_tags({"gate_passed": str(decision.passed), "model_version": quantized["model_version"]})
        lineage = mlflow_metadata(run)
    tracker.tag_model_version(quantized["model_version"], {
        "eval_gate_passed": str(decision.passed), "eval_report": outcome.report["html"],
        **{f"eval_{k}": str(v) for k, v in outcome.headlines["candidate"].items() if isinstance(v, (int, float))}})

    artifacts.record_latest("eval_report", {
        "report": outcome.report["html"], "markdown": outcome.report["markdown"],
        "metrics": outcome.headlines, "promoted": bool(decision.passed), "gate": decision.to_dict(),
        "model_version": quantized["model_version"], "candidate_gguf": models["candidate"],
    })
    markdown = Path(outcome.report["markdown"]).read_text()
    plots = {f"plot_{Path(p).stem}": dg.MetadataValue.path(str(p)) for p in outcome.report.get("plots", [])}
    return dg.MaterializeResult(
        metadata={"summary": dg.MetadataValue.md(markdown[:20000]),
                  "report_html": dg.MetadataValue.path(outcome.report["html"]),
                  "gate_passed": dg.MetadataValue.bool(bool(decision.passed)), **plots, **lineage},
        check_results=[dg.AssetCheckResult(
            check_name="promotion_gate", passed=bool(decision.passed),
            description=decision.summary(),
            metadata={"failures": dg.MetadataValue.json(decision.failures),
                      "not_judged": dg.MetadataValue.json(decision.notes),
                      "candidate": dg.MetadataValue.json(outcome.headlines["candidate"])})],
    )


def _preference_comparison(record: dict | None, model_version: str) -> dict | None:
    """preference_adapter's SFT vs SFT+preference comparison when the evaluated candidate is that adapter."""
    if record and record.get("tuned") and str(record.get("model_version")) == str(model_version):
        return record.get("comparison")
    return None

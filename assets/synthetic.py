"""synthetic_examples: instruction→answer pairs generated from the business's knowledge file."""

import dagster as dg
from pydantic import Field

from assets._lineage import mlflow_metadata, stage_run, table_preview
from homegrown.data.sources import is_s3
from homegrown.data.synthetic import generate_synthetic
from resources import MlflowResource, StorageResource, TeacherResource


class SyntheticConfig(dg.Config):
    per_fact: int = Field(default=3, ge=1, le=50, description="Examples per knowledge fact; more adds coverage.")
    seed: int = Field(default=0, description="Seed of the phrasing choices, so a rerun gives the same rows.")

@dg.asset(group_name="data", kinds={"parquet"}, deps=["raw_interactions"], pool="stage_synthetic_examples")
def synthetic_examples(
    context: dg.AssetExecutionContext, config: SyntheticConfig, store: StorageResource, mlflow: MlflowResource,
    teacher: TeacherResource,
) -> dg.MaterializeResult:
    """Examples written from the knowledge file (template expansion offline, or a teacher API); zero without one."""
    artifacts = store.store(context)
    source = teacher.knowledge_source()
    knowledge = teacher.knowledge_path(copy_dir=artifacts.root / "knowledge")
    raw = artifacts.latest("raw_interactions") or {}
    opted_out = set(raw.get("opted_out_orgs", []))
    df = generate_synthetic(knowledge if knowledge and knowledge.exists() else None, teacher=teacher.settings(),
                            seed=config.seed, per_fact=config.per_fact, opted_out_orgs=opted_out)
    version = _digest(df)
    path = artifacts.write_table("synthetic_examples", version, "synthetic", df)
    with stage_run(context, mlflow.tracker(), "synthetic_examples") as run:
        run.log_params({"teacher": teacher.kind, "knowledge_file": str(source), "per_fact": config.per_fact,
                        "seed": config.seed})
        run.log_metrics({"rows": len(df)})
        lineage = mlflow_metadata(run)
    artifacts.record_latest("synthetic_examples", {"path": str(path), "rows": len(df), "version": version})
    preview = df.assign(question=df["messages"].map(lambda m: m[-2]["content"] if len(m) > 1 else ""),
                        answer=df["messages"].map(lambda m: m[-1]["content"])) if len(df) else df
    return dg.MaterializeResult(metadata={
        "rows": dg.MetadataValue.int(len(df)),
        "generator": dg.MetadataValue.text(teacher.kind),
        "knowledge_file": dg.MetadataValue.path(source) if source and not is_s3(source) else
        dg.MetadataValue.text(source or "none: no knowledge.json beside the input"),
        **({"knowledge_local_copy": dg.MetadataValue.path(str(knowledge))}
           if knowledge is not None and str(knowledge) != source else {}),
        "path": dg.MetadataValue.path(str(path)),
        "sample": table_preview(preview, ["question", "answer", "source_fact"], limit=8) if len(df) else
        dg.MetadataValue.md("_no knowledge file: no synthetic examples_"),
        **lineage,
    })

def _digest(df) -> str:
    import hashlib

    h = hashlib.sha256()
    for example_id in sorted(df["example_id"]) if len(df) else []:
        h.update(example_id.encode())
    return h.hexdigest()[:12]

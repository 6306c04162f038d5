"""dataset_splits: stable 80/10/10 train/validation/test, grouped by conversation, as Parquet and JSONL."""

import json

import dagster as dg
from pydantic import Field, model_validator

from assets._lineage import mlflow_metadata, stage_run
from homegrown.data.splits import (
    assign_splits,
    audit_split_files,
    cross_split_duplicates,
    dataset_version,
    write_splits,
)
from homegrown.store import read_parquet
from resources import MlflowResource, StorageResource


class SplitConfig(dg.Config):
    train: float = Field(default=0.8, gt=0, lt=1, description="Share of conversations in train.")
    validation: float = Field(default=0.1, gt=0, lt=1, description="Share in validation (early stopping).")
    test: float = Field(default=0.1, gt=0, lt=1, description="Share in test; test conversations never move.")
    leakage_threshold: float = Field(default=0.8, gt=0, le=1,
                                     description="Answer similarity that counts as the same answer in two splits.")

    @model_validator(mode="after")
    def _sums_to_one(self) -> "SplitConfig":
        if abs(self.train + self.validation + self.test - 1.0) > 1e-6:
            raise ValueError(f"split shares must sum to 1, got {self.train}+{self.validation}+{self.test}")
        return self

@dg.asset(
    group_name="data",
    kinds={"parquet", "jsonl"},
    deps=["scored_dataset"],
    pool="stage_dataset_splits",
    check_specs=[dg.AssetCheckSpec(
        "no_leakage", asset="dataset_splits", blocking=True,
        description="Read back from the written files: no conversation or example id in two splits, no "
                    "normalised exact copy and no near-duplicate (every pair verified exactly) across splits.")],
)
def dataset_splits(
    context: dg.AssetExecutionContext, config: SplitConfig, store: StorageResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """Train/validation/test by a hash of conversation_id; earlier assignments never change; versioned by content."""
    artifacts = store.store(context)
    scored_info = artifacts.require_latest("scored_dataset")
    scored = read_parquet(scored_info["path"])
    kept = scored[scored["keep"]].reset_index(drop=True)

    assignment_file = artifacts.state_dir("dataset_splits") / "assignment.json"
    previous = json.loads(assignment_file.read_text()) if assignment_file.exists() else {}
    assignment = assign_splits(kept, previous, ratios=(config.train, config.validation, config.test))
    # MinHash LSH in de-duplication is probabilistic: a second pass over cross-split pairs removes the few
    # near-duplicates it missed from the later split. The check below does not rely on it.
    missed = cross_split_duplicates(kept, assignment, config.leakage_threshold)
    if missed:
        context.log.info(f"{len(missed)} near-duplicates missed by de-duplication removed from later splits")
        kept = kept[~kept["example_id"].isin({dup for _, _, dup, _, _, _ in missed})].reset_index(drop=True)
    version = dataset_version(kept, assignment)
    out_dir = artifacts.stage_dir("dataset_splits", version)
    result = write_splits(kept, assignment, out_dir)
    leakage = audit_split_files(result.paths, config.leakage_threshold)
    problems = leakage.problems

    # Remember every conversation ever assigned, so retrains keep the old test set.
    merged = {**assignment, **previous}
    tmp = assignment_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(merged, sort_keys=True))
    tmp.replace(assignment_file)

    with stage_run(context, mlflow.tracker(), "dataset_splits") as run:
        run.log_params({"version": version, "scored_version": scored_info["version"], **config.model_dump()})
        run.log_metrics({f"rows_{split}": n for split, n in result.rows.items()})
        for split, split_paths in result.paths.items():
            frame = read_parquet(split_paths["parquet"])
            run.log_dataset(frame.drop(columns=["messages", "tools", "source_ids"], errors="ignore"),
                            name=f"homegrown-{split}", digest=version, source=str(split_paths["parquet"]),
                            context=split)
        run.set_tags({"dataset_version": version})
        lineage = mlflow_metadata(run)

    info = {"version": version, "cross_split_duplicates_removed": len(missed), "dir": str(out_dir), "paths": result.paths, "rows": result.rows,
            "per_type": result.per_type, "scored_version": scored_info["version"], "mlflow_run_id": run.run_id,
            "assignment": str(assignment_file)}
    if not problems:
        artifacts.record_latest("dataset_splits", info)
    return dg.MaterializeResult(
        metadata={
            "version": dg.MetadataValue.text(version),
            **{f"rows_{s}": dg.MetadataValue.int(n) for s, n in result.rows.items()},
            "per_type": dg.MetadataValue.json(result.per_type),
            "cross_split_duplicates_removed": dg.MetadataValue.int(len(missed)),
            "train_jsonl": dg.MetadataValue.path(str(result.paths["train"]["jsonl"])),
            "dir": dg.MetadataValue.path(str(out_dir)),
            **lineage,
        },
        check_results=[dg.AssetCheckResult(check_name="no_leakage", passed=leakage.passed, metadata={
            "examples_compared": leakage.examples,
            "candidate_pairs_verified": leakage.candidate_pairs,
            "id_overlaps": leakage.id_overlaps,
            "exact_matches": leakage.exact_matches,
            "near_duplicates": leakage.near_duplicates,
            "threshold": float(config.leakage_threshold),
            "problems": dg.MetadataValue.json(problems[:20]),
        })],
    )

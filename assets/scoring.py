"""scored_dataset: interactions that are good enough to learn from: scored, anonymised, de-duplicated."""

import dagster as dg
import pandas as pd
from pydantic import Field, model_validator

from assets._lineage import mlflow_metadata, stage_run
from homegrown.data.curate import curate
from homegrown.data.ingest import load_interactions
from homegrown.data.pii_audit import CANARIES, canary_frame, scan_examples, surviving_canaries
from homegrown.data.quality import QualityPolicy
from homegrown.store import read_parquet
from resources import MlflowResource, StorageResource


class ScoringConfig(dg.Config):
    """The quality policy; the defaults are the seeds' (page-builder score, hibachi filters)."""

    threshold: float = Field(default=5.0, description="Keep rows whose 0..10 score reaches this.")
    valid_output_weight: float = Field(default=3.0, description="Points for a valid answer (JSON: fits the schema).")
    thumbs_up_weight: float = Field(default=3.0, description="Points for an explicit thumbs up.")
    accepted_weight: float = Field(default=2.0, description="Points when the user accepted the answer as is.")
    accepted_with_edits_weight: float = Field(default=1.0, description="Points when accepted after edits.")
    conversation_continued_weight: float = Field(default=1.0, description="Points when the conversation went on.")
    critic_min: float = Field(default=0.9, description="A critic quality_score above this keeps a row by itself.")
    keep_on_booking: bool = Field(default=True, description="led_to_booking keeps a row by itself.")
    rating_min: int = Field(default=4, description="customer_rating at or above this keeps a row by itself.")
    use_admin_corrections: bool = Field(default=True, description="An admin correction replaces the answer and keeps it.")
    correction_roles: list[str] = Field(
        default=["reviewer", "admin", "import"],
        description="Whose corrections replace an answer: key roles of the gateway (app, reviewer, admin) and "
                    "'import' for logs read from files. An app key's correction is never trusted by default.")
    trusted_feedback_only: bool = Field(
        default=False, description="Also ignore thumbs, ratings and outcomes that came from app keys.")
    drop_on_thumbs_down: bool = Field(default=True, description="Thumbs down drops a row unless corrected.")
    require_valid_output: bool = Field(default=True, description="An invalid answer (bad JSON, bad tool call) drops.")
    unrated: str = Field(default="auto", description="A valid answer nobody judged (no thumbs, outcome, rating, "
                         "critic or correction) that the score does not keep: 'keep', 'drop', or 'auto': kept "
                         "unless the judged answers were approved less often than unrated_min_approval.")
    unrated_min_approval: float = Field(default=0.8, ge=0, le=1, description="Under unrated='auto': the share of "
                                        "judged answers that must be approved for unrated ones to be kept.")
    keep_synthetic: bool = Field(default=True, description="Keep synthetic examples from the knowledge file.")
    dedup_threshold: float = Field(default=0.8, gt=0, le=1, description="Jaccard above which answers collapse.")
    min_examples: int = Field(default=50, ge=1, description="Blocking check: fewer kept examples fail the run.")
    region: str = Field(default="US", description="The business's country (ISO code): phone numbers written "
                                                  "without a country code are read in it first.")
    public_min_conversations: int = Field(
        default=3, ge=0, description="A phone, e-mail, address or name the assistant itself gave in this many "
                                     "conversations is the business's own and is not anonymised (0: off).")

    @model_validator(mode="after")
    def _check(self) -> "ScoringConfig":
        self.to_policy()  # the policy validates illegal combinations with a clear message
        return self

    def to_policy(self) -> QualityPolicy:
        fields = QualityPolicy.__dataclass_fields__
        values = {k: v for k, v in self.model_dump().items() if k in fields}
        values["correction_roles"] = tuple(values["correction_roles"])
        return QualityPolicy(**values)

@dg.asset(
    group_name="data",
    kinds={"parquet"},
    deps=["raw_interactions", "synthetic_examples"],
    pool="stage_scored_dataset",
    check_specs=[
        dg.AssetCheckSpec("no_pii_left", asset="scored_dataset", blocking=True,
                          description="A second detector (Presidio's pattern recognizers) finds no e-mail, phone, "
                                      "card, IBAN, IP or national id in any kept example, and no value of the "
                                      "canaries planted in the anonymiser's input survives it."),
        dg.AssetCheckSpec("no_opted_out_org", asset="scored_dataset", blocking=True,
                          description="No kept example belongs to an organisation in optout.json."),
        dg.AssetCheckSpec("enough_examples", asset="scored_dataset", blocking=True,
                          description="At least the configured minimum of examples are kept."),
    ],
)
def scored_dataset(
    context: dg.AssetExecutionContext, config: ScoringConfig, store: StorageResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """Interactions that are good enough to learn from: scored, anonymised, de-duplicated, with lineage."""
    artifacts = store.store(context)
    raw = artifacts.require_latest("raw_interactions")
    interactions = load_interactions(raw["db_path"])
    opted_out = set(raw.get("opted_out_orgs", []))
    synth_info = artifacts.latest("synthetic_examples")
    synthetic = read_parquet(synth_info["path"]) if synth_info and synth_info["rows"] else pd.DataFrame(
        columns=["example_id", "org_id", "generator"])

    result = curate(interactions, synthetic, config.to_policy(), opted_out, dedup_threshold=config.dedup_threshold,
                    canaries=canary_frame(), region=config.region,
                    public_min_conversations=config.public_min_conversations)
    table = result.table
    kept = result.kept
    version = _version(table)
    path = artifacts.write_table("scored_dataset", version, "scored", table)

    detected = scan_examples(kept["example_id"], kept["messages"], public=result.public_values)
    survived = surviving_canaries(result.canaries)
    pii_findings = [f.as_dict() for f in survived + detected]
    leaked_orgs = sorted(set(kept["org_id"].dropna()) & opted_out)
    reasons = table["reason"].str.replace(r"\d+(\.\d+)?", "#", regex=True).value_counts()

    with stage_run(context, mlflow.tracker(), "scored_dataset") as run:
        run.log_params(config.model_dump())
        run.log_metrics({k: float(v) for k, v in result.stats.items()})
        lineage = mlflow_metadata(run)

    checks = [
        dg.AssetCheckResult(check_name="no_pii_left", passed=not pii_findings, metadata={
            "detector_hits": len(detected),
            "canaries_planted": len(CANARIES),
            "canary_values_survived": len(survived),
            "by_kind": dg.MetadataValue.json(_by_kind(pii_findings)),
            "findings": dg.MetadataValue.json(pii_findings[:20]),
        }),
        dg.AssetCheckResult(check_name="no_opted_out_org", passed=not leaked_orgs,
                            metadata={"orgs": dg.MetadataValue.json(leaked_orgs)}),
        dg.AssetCheckResult(check_name="enough_examples", passed=len(kept) >= config.min_examples,
                            metadata={"kept": len(kept), "minimum": config.min_examples}),
    ]
    if all(check.passed for check in checks):
        artifacts.record_latest("scored_dataset", {"path": str(path), "version": version, **result.stats})
    return dg.MaterializeResult(
        metadata={
            "rows": dg.MetadataValue.int(len(table)),
            "kept": dg.MetadataValue.int(len(kept)),
            "dropped": dg.MetadataValue.int(len(table) - len(kept)),
            "duplicates": dg.MetadataValue.int(result.stats.get("duplicates", 0)),
            "kept_as_public": dg.MetadataValue.json(result.public_values),
            "unrated": dg.MetadataValue.text(result.unrated),
            "version": dg.MetadataValue.text(version),
            "path": dg.MetadataValue.path(str(path)),
            "reasons": dg.MetadataValue.md(
                "| reason | rows |\n|---|---|\n" + "\n".join(f"| {r} | {n} |" for r, n in reasons.items())),
            **lineage,
        },
        check_results=checks,
    )

def _by_kind(findings: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for finding in findings:
        key = f"{finding['detector']}:{finding['kind']}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))

def _version(table: pd.DataFrame) -> str:
    import hashlib

    h = hashlib.sha256()
    for example_id, keep in sorted(zip(table["example_id"], table["keep"])):
        h.update(f"{example_id}:{int(keep)}\n".encode())
    return h.hexdigest()[:12]

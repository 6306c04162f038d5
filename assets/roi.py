"""roi_report: the gateway log turned into cost and savings per day and per model version, with plots."""

from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field, model_validator

from assets._lineage import mlflow_metadata, stage_run
from homegrown.gateway.settings import GatewaySettings
from homegrown.roi import (
    REFERENCE_GPU_USD_PER_HOUR,
    TRAINING_STAGES,
    Budgets,
    Prices,
    build_report,
    plot_report,
    premium_prices,
    read_gateway_log,
    read_training_runs,
    report_markdown,
    summary_line,
)
from resources import MlflowResource, StorageResource


class RoiConfig(dg.Config):
    premium_usd_per_1k_prompt_tokens: float | None = Field(
        default=None, ge=0, description="Premium API price per 1k prompt tokens; empty: the gateway's "
        "HOMEGROWN_FALLBACK_USD_PER_1K_PROMPT_TOKENS, or a reference list price ($0.0025) when that is 0.")
    premium_usd_per_1k_completion_tokens: float | None = Field(
        default=None, ge=0, description="Premium API price per 1k completion tokens; empty: the gateway's "
        "HOMEGROWN_FALLBACK_USD_PER_1K_COMPLETION_TOKENS, or a reference list price ($0.01) when that is 0.")
    local_usd_per_1k_tokens: float | None = Field(
        default=None, ge=0, description="Local serving price per 1k tokens; empty: HOMEGROWN_LOCAL_USD_PER_1K_TOKENS.")
    local_usd_per_hour: float = Field(
        default=REFERENCE_GPU_USD_PER_HOUR, ge=0,
        description="Price of an hour of local compute, charged on the busy time of local (and shadow) answers.")
    local_fixed_usd_per_day: float = Field(
        default=0.0, ge=0, description="An always-on serving machine's price per day (rent or amortisation).")
    training_usd_per_hour: float = Field(
        default=REFERENCE_GPU_USD_PER_HOUR, ge=0,
        description="Price of an hour of training compute, charged on the duration of the training stages' runs.")
    training_stages: list[str] = Field(
        default=list(TRAINING_STAGES), description="MLflow stages whose run time is a model version's training cost.")
    days: int = Field(default=0, ge=0, description="Only the last this many UTC days; 0 means the whole log.")

    @model_validator(mode="after")
    def _known_stages(self) -> "RoiConfig":
        if "roi_report" in self.training_stages:
            raise ValueError("training_stages must not include roi_report itself")
        return self

    def prices(self, settings: GatewaySettings) -> Prices:
        prompt, completion, source = premium_prices(
            settings.fallback_usd_per_1k_prompt_tokens, settings.fallback_usd_per_1k_completion_tokens,
            self.premium_usd_per_1k_prompt_tokens, self.premium_usd_per_1k_completion_tokens)
        local = self.local_usd_per_1k_tokens
        return Prices(
            premium_usd_per_1k_prompt=prompt, premium_usd_per_1k_completion=completion,
            local_usd_per_1k_tokens=settings.local_usd_per_1k_tokens if local is None else local,
            local_usd_per_hour=self.local_usd_per_hour, local_fixed_usd_per_day=self.local_fixed_usd_per_day,
            training_usd_per_hour=self.training_usd_per_hour, premium_price_source=source)


@dg.asset(group_name="serving", kinds={"pandas", "mlflow"}, deps=["deployed_endpoint"], pool="stage_roi_report")
def roi_report(
    context: dg.AssetExecutionContext, config: RoiConfig, store: StorageResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """What the served traffic cost against the premium API, per day and per model version, net of serving
    and training cost: net savings, the cumulative curve and the break-even day."""
    settings = GatewaySettings()
    tracker = mlflow.tracker()
    log = read_gateway_log(settings.log_db_url)
    training = read_training_runs(tracker, config.training_stages)
    if config.days:
        since = (datetime.now(UTC) - timedelta(days=config.days - 1)).strftime("%Y-%m-%d")
        log, training = log[log["day"] >= since], training[training["day"] >= since]
    report = build_report(log, training, config.prices(settings), Budgets.from_settings(settings))

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    out_dir = store.store(context).stage_dir("roi_report", stamp)
    markdown = report_markdown(report)
    (out_dir / "roi_report.md").write_text(markdown)
    report.daily.to_csv(out_dir / "per_day.csv", index=False)
    report.versions.to_csv(out_dir / "per_model.csv", index=False)
    plots = plot_report(report, out_dir) if len(report.daily) else []
    context.log.info(summary_line(report))

    totals = report.totals
    numbers = {k: v for k, v in totals.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    with stage_run(context, tracker, "roi_report") as run:
        run.log_params({"premium_usd_per_1k_prompt": report.prices.premium_usd_per_1k_prompt,
                        "premium_usd_per_1k_completion": report.prices.premium_usd_per_1k_completion,
                        "premium_price_source": report.prices.premium_price_source,
                        "local_usd_per_1k_tokens": report.prices.local_usd_per_1k_tokens,
                        "local_usd_per_hour": report.prices.local_usd_per_hour,
                        "local_fixed_usd_per_day": report.prices.local_fixed_usd_per_day,
                        "training_usd_per_hour": report.prices.training_usd_per_hour, "days": config.days})
        run.log_metrics(numbers)
        for step, row in enumerate(report.daily.itertuples(index=False)):
            run.log_metrics({"daily.net_savings_usd": row.net_savings_usd,
                             "daily.cumulative_net_savings_usd": row.cumulative_net_savings_usd,
                             "daily.all_premium_usd": row.all_premium_usd, "daily.actual_usd": row.actual_usd},
                            step=step)
        run.set_tags({"break_even_day": totals["break_even_day"] or "not yet", "no_traffic": str(report.empty)})
        run.log_artifact(out_dir, artifact_path="roi_report")
        lineage = mlflow_metadata(run)

    store.store(context).record_latest("roi_report", {"dir": str(out_dir), "totals": totals,
                                               "plots": [str(p) for p in plots]})
    return dg.MaterializeResult(metadata={
        "summary": dg.MetadataValue.md(markdown[:20000]),
        "requests": dg.MetadataValue.int(totals["requests"]),
        "net_savings_usd": dg.MetadataValue.float(totals["net_savings_usd"]),
        "all_premium_usd": dg.MetadataValue.float(totals["all_premium_usd"]),
        "actual_usd": dg.MetadataValue.float(totals["actual_usd"]),
        "break_even_day": dg.MetadataValue.text(totals["break_even_day"] or "not yet"),
        "report": dg.MetadataValue.path(str(out_dir / "roi_report.md")),
        **{f"plot_{p.stem}": dg.MetadataValue.path(str(p)) for p in plots},
        **lineage,
    })

"""roi_report: cost and savings of the gateway's traffic against the premium API, from real log rows and
real MLflow runs, with every number computed by hand below."""

import math
import uuid
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from homegrown.gateway.logstore import LogStore
from homegrown.gateway.settings import GatewaySettings
from homegrown.roi import (
    REFERENCE_PREMIUM_USD_PER_1K_COMPLETION,
    REFERENCE_PREMIUM_USD_PER_1K_PROMPT,
    SHADOW_MODEL,
    UNATTRIBUTED,
    Budgets,
    Prices,
    break_even_day,
    build_report,
    days_to_break_even,
    plot_report,
    premium_prices,
    read_gateway_log,
    read_training_runs,
    report_markdown,
    training_frame,
)
from homegrown.tracking import Tracker

# Premium $0.01 / $0.03 per 1k prompt / completion tokens; local $0.001 per 1k tokens plus $3.60 per busy
# hour ($0.001 per busy second); training $2 per hour.
PRICES = Prices(premium_usd_per_1k_prompt=0.01, premium_usd_per_1k_completion=0.03, local_usd_per_1k_tokens=0.001,
                local_usd_per_hour=3.6, training_usd_per_hour=2.0)
PRICE_CONFIG = {"premium_usd_per_1k_prompt_tokens": 0.01, "premium_usd_per_1k_completion_tokens": 0.03,
                "local_usd_per_1k_tokens": 0.001, "local_usd_per_hour": 3.6, "training_usd_per_hour": 2.0}
DAY1, DAY2, DAY3 = "2026-11-01", "2026-11-02", "2026-11-03"
BUDGET_REFUSAL = "fallback: fallback refused: the gateway's daily premium budget of $0.05 is spent"


def log_request(store: LogStore, day: str, route: str | None, model: str | None, prompt: int = 1000,
                completion: int = 500, latency_ms: float = 1000.0, status: str = "ok", cost: float = 0.0,
                key: str = "key-app", rejected: bool = False, **meta) -> str:
    """One row as the gateway writes it (``Gateway.build_record``, or ``log_unlogged`` for a refused request)."""
    rid = f"req-{uuid.uuid4().hex}" if rejected else f"chatcmpl-{uuid.uuid4().hex}"
    metadata = {"latency_ms": latency_ms, "prompt_tokens": prompt, "completion_tokens": completion,
                "cost_estimate_usd": cost, "route": route, "routing_reason": meta.pop("routing_reason", "default"),
                "provenance": {"source": "gateway", "key_id": key, "role": "app"}, **meta}
    if rejected:
        metadata.update(rejected=True, http_status=429, prompt_tokens=0, completion_tokens=0)
    store.log_interaction({
        "id": rid, "conversation_id": rid, "created_at": f"{day}T12:00:00.000000Z", "org_id": None,
        "example_type": "chat", "model": model,
        "messages": [] if rejected else [{"role": "user", "content": "Do you serve wagyu?"},
                                         {"role": "assistant", "content": "No, filet mignon and lobster."}],
        "tools": None, "metadata": metadata}, status=status)
    return rid


def simulated_traffic(store: LogStore) -> None:
    """Three days: model v1 then v2 answering locally, one premium fallback answer, one defect, one refusal."""
    for _ in range(2):
        log_request(store, DAY1, "champion", "homegrown-v1")
    log_request(store, DAY1, "fallback", "gpt-premium", prompt=2000, completion=1000, cost=0.05)
    for _ in range(4):
        log_request(store, DAY2, "champion", "homegrown-v1")
    log_request(store, DAY2, "champion", "homegrown-v1", completion=0, status="error", error="empty answer")
    log_request(store, DAY2, None, None, rejected=True, latency_ms=2.0)
    for _ in range(7):
        log_request(store, DAY3, "challenger", "homegrown-v2")
    log_request(store, DAY3, "challenger", "homegrown-v2", routing_reason=BUDGET_REFUSAL)


def ms(day: str, seconds: float = 0.0) -> int:
    return int((pd.Timestamp(f"{day}T08:00:00Z") + pd.Timedelta(seconds=seconds)).timestamp() * 1000)


def training_runs(tracker: Tracker) -> None:
    """v1's adapter trains 360 s on day 1 (registered as version 1); v2 merges 180 s on day 2."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracker.tracking_uri, registry_uri=tracker.tracking_uri)
    experiment = tracker.experiment_id()
    lora = client.create_run(experiment, start_time=ms(DAY1), tags={"homegrown.stage": "lora_adapter"})
    client.set_terminated(lora.info.run_id, end_time=ms(DAY1, 360))
    assert str(tracker.register_model("file:///adapter", lora.info.run_id, {})["version"]) == "1"
    merged = client.create_run(experiment, start_time=ms(DAY2), tags={"homegrown.stage": "merged_model"})
    client.log_param(merged.info.run_id, "model_version", "2")
    client.set_terminated(merged.info.run_id, end_time=ms(DAY2, 180))
    running = client.create_run(experiment, start_time=ms(DAY3), tags={"homegrown.stage": "lora_adapter"})
    assert running.info.end_time is None  # still going: not a cost yet
    other = client.create_run(experiment, start_time=ms(DAY1), tags={"homegrown.stage": "scored_dataset"})
    client.set_terminated(other.info.run_id, end_time=ms(DAY1, 9999))  # not a training stage


# Hand-computed. A local answer of 1000 + 500 tokens is worth 1000/1000*0.01 + 500/1000*0.03 = $0.025 on the
# premium API and costs 1500/1000*0.001 + 1 s * $0.001 = $0.0025 to serve; the defect (1000 + 0 tokens)
# costs $0.002 and saves nothing. The premium answer (2000 + 1000) costs 0.02 + 0.03 = $0.05.
# Training: v1 0.1 h = $0.20 on day 1, v2 0.05 h = $0.10 on day 2.
EXPECTED_DAILY = pd.DataFrame({
    "day": [DAY1, DAY2, DAY3],
    "local_requests": [2, 5, 8], "premium_requests": [1, 0, 0], "refused_requests": [0, 1, 0],
    "avoided_premium_usd": [0.05, 0.10, 0.20],
    "local_serving_usd": [0.005, 4 * 0.0025 + 0.002, 0.02],
    "training_usd": [0.20, 0.10, 0.0],
    "premium_spend_usd": [0.05, 0.0, 0.0],
    "net_savings_usd": [-0.155, -0.012, 0.18],
    "cumulative_net_savings_usd": [-0.155, -0.167, 0.013],
})


@pytest.fixture
def log_store(tmp_path):
    store = LogStore(f"sqlite:///{tmp_path / 'log.sqlite'}")
    yield store
    store.close()


def test_savings_per_day_and_per_version_from_real_log_rows_and_mlflow_runs(hg_home, log_store):
    simulated_traffic(log_store)
    tracker = Tracker()
    training_runs(tracker)
    log = read_gateway_log(log_store.url)
    training = read_training_runs(tracker)
    assert sorted(training["stage"]) == ["lora_adapter", "merged_model"]
    assert dict(zip(training["stage"], training["model_version"], strict=True)) == {"lora_adapter": "1",
                                                                                     "merged_model": "2"}

    report = build_report(log, training, PRICES, Budgets(daily_usd_total=0.05))
    daily = report.daily[list(EXPECTED_DAILY.columns)]
    pd.testing.assert_frame_equal(daily, EXPECTED_DAILY, check_dtype=False, atol=1e-9)

    versions = report.versions.set_index("model")
    assert list(versions.index) == ["homegrown-v1", "homegrown-v2"]
    assert versions.loc["homegrown-v1", "local_requests"] == 7
    assert versions.loc["homegrown-v1", "local_tokens"] == 6 * 1500 + 1000
    assert versions.loc["homegrown-v1", "training_usd"] == pytest.approx(0.20)
    assert versions.loc["homegrown-v1", "net_savings_usd"] == pytest.approx(0.15 - 0.017 - 0.20)
    assert versions.loc["homegrown-v2", "net_savings_usd"] == pytest.approx(0.20 - 0.02 - 0.10)

    t = report.totals
    assert (t["requests"], t["answered"], t["local_requests"], t["premium_requests"], t["refused_requests"]) == (
        17, 16, 15, 1, 1)
    assert t["local_share"] == pytest.approx(15 / 16)
    assert t["all_premium_usd"] == pytest.approx(0.35 + 0.05)
    assert t["actual_usd"] == pytest.approx(0.05 + 0.037 + 0.30)
    assert t["net_savings_usd"] == pytest.approx(0.013)
    assert t["break_even_day"] == DAY3
    assert t["days_to_break_even"] == 0

    budget = report.budget.set_index("day")
    assert budget.loc[DAY1, "premium_usd"] == pytest.approx(0.05)  # as the gateway recorded it
    assert budget.loc[DAY1, "budget_used"] == pytest.approx(1.0)
    assert budget.loc[DAY1, "max_key_requests"] == 1
    assert list(budget["budget_refusals"]) == [0, 0, 1]

    markdown = report_markdown(report)
    assert "broke even on 2026-11-03" in markdown and "| homegrown-v2 |" in markdown
    assert "Premium fallback against its budgets" in markdown


def test_a_report_that_is_not_even_yet_projects_the_days_left(hg_home, log_store):
    log_request(log_store, DAY1, "champion", "homegrown-v1")
    log_request(log_store, DAY2, "champion", "homegrown-v1")
    training = training_frame([{"run_id": "r", "stage": "lora_adapter", "model_version": "1",
                                "start_ms": ms(DAY1), "end_ms": ms(DAY1, 360)}])
    report = build_report(read_gateway_log(log_store.url), training, PRICES)
    # each day saves 0.025 - 0.0025 = 0.0225 against $0.20 of training: -0.1775, then -0.155
    assert list(report.daily["cumulative_net_savings_usd"]) == pytest.approx([-0.1775, -0.155])
    assert report.totals["break_even_day"] is None
    assert report.totals["days_to_break_even"] == math.ceil(0.155 / 0.0225)
    assert "not even yet" in report_markdown(report)


def test_shadow_answers_and_an_always_on_machine_are_local_costs(log_store):
    log_request(log_store, DAY1, "fallback", "gpt-premium", latency_ms=500, shadow_route="champion",
                shadow_latency_ms=2000.0)
    log_request(log_store, DAY1, "champion", "homegrown-v1", latency_ms=0)
    log_request(log_store, DAY3, "champion", "homegrown-v3", latency_ms=0)
    prices = Prices(0.01, 0.03, local_usd_per_hour=3.6, local_fixed_usd_per_day=1.0)
    report = build_report(read_gateway_log(log_store.url), training_frame([]), prices)
    # three days from the first local answer, $1 each, plus 2 s of shadow compute ($0.002) on day 1
    assert list(report.daily["local_serving_usd"]) == pytest.approx([1.002, 1.0, 1.0])
    versions = report.versions.set_index("model")
    assert versions.loc[SHADOW_MODEL, "local_serving_usd"] == pytest.approx(0.002)
    assert versions.loc["homegrown-v1", "local_serving_usd"] == pytest.approx(1.5)  # half of the $3
    assert versions["local_serving_usd"].sum() == pytest.approx(report.daily["local_serving_usd"].sum())


def test_training_without_a_version_and_a_version_that_never_served_still_cost():
    training = training_frame([
        {"run_id": "a", "stage": "quantized_model", "model_version": None, "start_ms": ms(DAY1), "end_ms": ms(DAY1, 3600)},
        {"run_id": "b", "stage": "lora_adapter", "model_version": "4", "start_ms": ms(DAY2), "end_ms": ms(DAY2, 1800)},
        {"run_id": "c", "stage": "lora_adapter", "model_version": "5", "start_ms": ms(DAY2), "end_ms": None},
    ])
    report = build_report(read_gateway_log_empty(), training, PRICES)
    assert report.empty and list(report.daily["training_usd"]) == pytest.approx([2.0, 1.0])
    versions = report.versions.set_index("model")
    assert versions.loc["homegrown-v4", "training_usd"] == pytest.approx(1.0)
    assert versions.loc[UNATTRIBUTED, "training_usd"] == pytest.approx(2.0)
    assert "homegrown-v5" not in versions.index


def read_gateway_log_empty():
    return read_gateway_log("sqlite:////nonexistent/homegrown/interactions.sqlite")


@pytest.mark.parametrize(("net", "expected"), [
    ([-1.0, 2.0], DAY2), ([1.0, -2.0, 3.0], DAY3), ([1.0, 1.0], DAY1), ([-1.0, 0.5], None), ([0.0], DAY1)])
def test_break_even_is_the_day_from_which_cumulative_savings_stay_non_negative(net, expected):
    daily = pd.DataFrame({"day": [DAY1, DAY2, DAY3][: len(net)], "cumulative_net_savings_usd": pd.Series(net).cumsum()})
    assert break_even_day(daily) == expected


def test_days_to_break_even_is_none_when_the_pace_does_not_pay_back():
    daily = pd.DataFrame({"avoided_premium_usd": [0.1, 0.1], "local_serving_usd": [0.2, 0.2],
                          "cumulative_net_savings_usd": [-1.1, -1.2]})
    assert days_to_break_even(daily) is None


@pytest.mark.parametrize(("gateway", "given", "expected"), [
    ((0.0, 0.0), (None, None),
     (REFERENCE_PREMIUM_USD_PER_1K_PROMPT, REFERENCE_PREMIUM_USD_PER_1K_COMPLETION, "reference price")),
    ((0.005, 0.015), (None, None), (0.005, 0.015, "gateway settings")),
    ((0.005, 0.015), (0.02, None), (0.02, 0.015, "config")),
])
def test_premium_prices_come_from_config_then_the_gateway_then_the_reference(gateway, given, expected):
    assert premium_prices(*gateway, *given) == expected


def test_a_negative_price_is_refused():
    with pytest.raises(ValueError, match="training_usd_per_hour"):
        Prices(0.01, 0.03, training_usd_per_hour=-1.0)


def test_plots_are_written(tmp_path, log_store):
    simulated_traffic(log_store)
    report = build_report(read_gateway_log(log_store.url), training_frame([]), PRICES)
    paths = plot_report(report, tmp_path / "plots")
    assert [p.name for p in paths] == ["cost_per_day.png", "cumulative_savings.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)


# -- through Dagster ---------------------------------------------------------------------------------------


def materialize_roi(config: dict | None = None) -> dg.ExecuteInProcessResult:
    from assets.roi import roi_report
    from pipelines.definitions import defs

    run_config = {"ops": {"roi_report": {"config": config or {}}}}
    return dg.materialize([roi_report], resources=defs.resources, run_config=run_config)


def materialization(result: dg.ExecuteInProcessResult) -> dict:
    [event] = result.asset_materializations_for_node("roi_report")
    return event.metadata


def test_roi_report_asset_over_three_days_of_simulated_traffic(hg_home, monkeypatch):
    monkeypatch.setenv("HOMEGROWN_FALLBACK_DAILY_USD_TOTAL", "0.05")
    store = LogStore(GatewaySettings().log_db_url)
    try:
        simulated_traffic(store)
    finally:
        store.close()
    training_runs(Tracker())

    result = materialize_roi(PRICE_CONFIG)
    assert result.success
    meta = materialization(result)
    assert meta["net_savings_usd"].value == pytest.approx(0.013)
    assert meta["all_premium_usd"].value == pytest.approx(0.40)
    assert meta["break_even_day"].value == DAY3
    assert "| 2026-11-03 | 8 | 0 | 0 |" in meta["summary"].value
    for name in ("plot_cost_per_day", "plot_cumulative_savings"):
        assert Path(meta[name].value).read_bytes()[:4] == b"\x89PNG"

    from mlflow.tracking import MlflowClient

    tracker = Tracker()
    run = MlflowClient(tracker.tracking_uri).get_run(meta["mlflow_run_id"].value)
    assert run.data.tags["homegrown.stage"] == "roi_report"
    assert run.data.metrics["net_savings_usd"] == pytest.approx(0.013)
    assert run.data.params["premium_price_source"] == "config"
    artifacts = {a.path for a in MlflowClient(tracker.tracking_uri).list_artifacts(run.info.run_id, "roi_report")}
    assert {"roi_report/cost_per_day.png", "roi_report/cumulative_savings.png", "roi_report/roi_report.md"} <= artifacts

    # A second report does not count its own run, or the first report's, as training.
    again = materialization(materialize_roi(PRICE_CONFIG))
    assert again["net_savings_usd"].value == pytest.approx(0.013)


def test_roi_report_with_no_traffic_yet_says_so(hg_home):
    result = materialize_roi()
    assert result.success
    meta = materialization(result)
    assert meta["requests"].value == 0
    assert "No traffic yet" in meta["summary"].value
    assert "reference price" in meta["summary"].value  # the gateway has no premium prices set
    assert not any(name.startswith("plot_") for name in meta)


def test_roi_report_days_keeps_only_the_last_days(hg_home):
    from datetime import UTC, datetime, timedelta

    today = datetime.now(UTC)
    store = LogStore(GatewaySettings().log_db_url)
    try:
        log_request(store, today.strftime("%Y-%m-%d"), "champion", "homegrown-v1")
        log_request(store, (today - timedelta(days=5)).strftime("%Y-%m-%d"), "champion", "homegrown-v1")
    finally:
        store.close()
    assert materialization(materialize_roi({"days": 1}))["requests"].value == 1
    assert materialization(materialize_roi({"days": 0}))["requests"].value == 2


def test_roi_report_runs_daily_and_after_a_deployment():
    from pipelines.definitions import defs

    schedule = defs.resolve_schedule_def("daily_roi")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("15 0 * * *", "UTC")
    job = defs.resolve_job_def(schedule.job_name)
    assert {key.to_user_string() for key in job.asset_layer.executable_asset_keys} == {"roi_report"}
    parents = defs.get_repository_def().asset_graph.get(dg.AssetKey("roi_report")).parent_keys
    assert parents == {dg.AssetKey("deployed_endpoint")}

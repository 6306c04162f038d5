"""Return on investment: what the gateway's traffic cost, and what it would have cost on the premium API.

The counterfactual is "every answered request goes to the premium API". Against it, each request the local
model answered well saves what the premium API would have charged for the same tokens, less what serving it
locally cost; the training runs that produced a model version are an investment charged on the day they
ran, to that version. Premium fallback answers cost the same in both worlds, so they are shown (with the
daily budgets that cap them) but are not a saving.

    net savings = premium price of good local answers - local serving cost - training cost

Prices are per 1k tokens (prompt and completion) for the premium API; local serving is priced per 1k tokens,
per hour of busy compute (the logged latency of local answers, and of shadow answers), and per day for an
always-on machine; training per hour of compute. Token counts are the local model's, so the premium
equivalent is an estimate (a premium tokenizer counts somewhat differently).

Pure functions over pandas DataFrames; :func:`read_gateway_log` and :func:`read_training_runs` are the only
readers, rendering (:func:`report_markdown`, :func:`plot_report`) is apart from the arithmetic.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

LOCAL_ROUTES = ("champion", "challenger", "specialist")
PREMIUM_ROUTE = "fallback"
# Stages whose compute goes into a model version: training, merging, quantizing and evaluating a candidate.
TRAINING_STAGES = ("lora_adapter", "preference_adapter", "merged_model", "quantized_model", "eval_report")
# A premium price for when the gateway's HOMEGROWN_FALLBACK_USD_PER_1K_* are 0 (no premium API configured,
# as on the demo): GPT-4o's list price, $2.50 per million prompt tokens and $10 per million completion tokens.
REFERENCE_PREMIUM_USD_PER_1K_PROMPT = 0.0025
REFERENCE_PREMIUM_USD_PER_1K_COMPLETION = 0.01
# The rented GPU of the hibachi seed's plan (an A40 on RunPod), for local serving and training.
REFERENCE_GPU_USD_PER_HOUR = 0.40
SHADOW_MODEL = "(shadow answers)"
UNATTRIBUTED = "(unattributed training)"
_VERSION_NAME = re.compile(r"^homegrown-v(\d+)$")  # homegrown.gateway.deploy.model_name

LOG_COLUMNS = ["id", "created_at", "day", "status", "kind", "route", "model", "model_version", "key_id",
               "prompt_tokens", "completion_tokens", "latency_ms", "shadow_latency_ms", "recorded_cost_usd",
               "budget_refused"]
_LOG_TYPES = {"prompt_tokens": int, "completion_tokens": int, "latency_ms": float, "shadow_latency_ms": float,
              "recorded_cost_usd": float, "budget_refused": bool}
TRAINING_COLUMNS = ["run_id", "stage", "model_version", "day", "duration_s"]
DAILY_COLUMNS = ["day", "local_requests", "premium_requests", "refused_requests", "failed_requests",
                 "local_tokens", "premium_tokens", "avoided_premium_usd", "local_serving_usd", "training_usd",
                 "premium_spend_usd", "all_premium_usd", "actual_usd", "net_savings_usd",
                 "cumulative_net_savings_usd"]
VERSION_COLUMNS = ["model", "model_version", "local_requests", "local_tokens", "avoided_premium_usd",
                   "local_serving_usd", "training_hours", "training_usd", "net_savings_usd"]


@dataclass(frozen=True)
class Prices:
    """What a token, an hour and a day cost, in USD."""

    premium_usd_per_1k_prompt: float
    premium_usd_per_1k_completion: float
    local_usd_per_1k_tokens: float = 0.0
    local_usd_per_hour: float = 0.0
    local_fixed_usd_per_day: float = 0.0
    training_usd_per_hour: float = 0.0
    premium_price_source: str = "config"

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, float | int) and (value < 0 or math.isnan(value)):
                raise ValueError(f"price {name} must be a number >= 0, got {value!r}")


def premium_prices(
    gateway_prompt: float, gateway_completion: float, prompt: float | None = None, completion: float | None = None,
) -> tuple[float, float, str]:
    """The premium prices per 1k prompt and completion tokens, and where they came from.

    Given ones win (``config``); else the gateway's ``HOMEGROWN_FALLBACK_USD_PER_1K_*`` when either is set
    (``gateway settings``); else the reference list price (``reference price``), so that a gateway without a
    premium API still shows what its local answers are worth.
    """
    if prompt is not None or completion is not None:
        return (prompt if prompt is not None else gateway_prompt,
                completion if completion is not None else gateway_completion, "config")
    if gateway_prompt > 0 or gateway_completion > 0:
        return gateway_prompt, gateway_completion, "gateway settings"
    return REFERENCE_PREMIUM_USD_PER_1K_PROMPT, REFERENCE_PREMIUM_USD_PER_1K_COMPLETION, "reference price"


@dataclass(frozen=True)
class Budgets:
    """The gateway's daily (UTC) premium-fallback budgets; 0 means no limit."""

    daily_usd_total: float = 0.0
    daily_usd_per_key: float = 0.0
    daily_requests_per_key: int = 0
    daily_tokens_per_key: int = 0

    @classmethod
    def from_settings(cls, settings: Any) -> Budgets:
        return cls(settings.fallback_daily_usd_total, settings.fallback_daily_usd_per_key,
                   settings.fallback_daily_requests_per_key, settings.fallback_daily_tokens_per_key)

    @property
    def any(self) -> bool:
        return any((self.daily_usd_total, self.daily_usd_per_key, self.daily_requests_per_key,
                    self.daily_tokens_per_key))


# -- reading -------------------------------------------------------------------------------------------------


def model_version_of(model: str | None) -> str | None:
    """The registry version of a served model name (``homegrown-v3`` → ``"3"``); None for any other model."""
    match = _VERSION_NAME.match(model or "")
    return match.group(1) if match else None


def log_frame(rows: Iterable[tuple[dict[str, Any], str]]) -> pd.DataFrame:
    """Gateway log rows (``(record, status)``) as one row per request, classified by ``kind``:

    ``local`` (answered by the champion or challenger), ``premium`` (answered by the fallback), ``refused``
    (rejected before routing: a ``req-…`` row with ``metadata.rejected``) or ``failed`` (no backend answered).
    """
    out = []
    for record, status in rows:
        meta = record.get("metadata") or {}
        route = meta.get("route")
        if meta.get("rejected") or (route is None and str(record.get("id", "")).startswith("req-")):
            kind = "refused"
        elif route in LOCAL_ROUTES:
            kind = "local"
        elif route == PREMIUM_ROUTE:
            kind = "premium"
        else:
            kind = "failed"
        shadow_ms = meta.get("shadow_latency_ms") if meta.get("shadow_route") in LOCAL_ROUTES else None
        created = str(record.get("created_at") or "")
        out.append({
            "id": record.get("id"), "created_at": created, "day": created[:10], "status": status, "kind": kind,
            "route": route, "model": record.get("model"), "model_version": model_version_of(record.get("model")),
            "key_id": (meta.get("provenance") or {}).get("key_id"),
            "prompt_tokens": int(meta.get("prompt_tokens") or 0),
            "completion_tokens": int(meta.get("completion_tokens") or 0),
            "latency_ms": float(meta.get("latency_ms") or 0.0), "shadow_latency_ms": float(shadow_ms or 0.0),
            "recorded_cost_usd": float(meta.get("cost_estimate_usd") or 0.0),
            "budget_refused": " refused: " in str(meta.get("routing_reason") or "")
                              or "budget" in str(meta.get("error") or ""),
        })
    return pd.DataFrame(out, columns=LOG_COLUMNS).astype(_LOG_TYPES)


def read_gateway_log(db_url: str) -> pd.DataFrame:
    """Every request in the gateway log at ``db_url`` (see :func:`log_frame`); empty when there is no log yet."""
    from sqlalchemy import select
    from sqlalchemy.engine import make_url

    from homegrown.gateway.logstore import InteractionRow, LogStore

    url = make_url(db_url)
    if url.get_backend_name() == "sqlite" and not (url.database and Path(url.database).is_file()):
        return log_frame([])
    store = LogStore(db_url)
    try:
        with store.engine.connect() as connection:
            rows = connection.execute(select(InteractionRow.record, InteractionRow.status)
                                      .order_by(InteractionRow.created_at, InteractionRow.id)).all()
    finally:
        store.close()
    return log_frame((record, status) for record, status in rows)


def training_frame(runs: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Finished stage runs (``run_id``, ``stage``, ``model_version``, ``start_ms``, ``end_ms``) as durations,
    dated by the UTC day they started. A run still going (no end) is left out."""
    out = []
    for run in runs:
        if not run.get("end_ms") or not run.get("start_ms"):
            continue
        start = pd.Timestamp(run["start_ms"], unit="ms", tz="UTC")
        version = run.get("model_version")
        out.append({"run_id": run["run_id"], "stage": run["stage"],
                    "model_version": str(version) if version not in (None, "") else None,
                    "day": start.strftime("%Y-%m-%d"),
                    "duration_s": max(0.0, (run["end_ms"] - run["start_ms"]) / 1000)})
    return pd.DataFrame(out, columns=TRAINING_COLUMNS).astype({"duration_s": float})


def read_training_runs(tracker: Any, stages: Iterable[str] = TRAINING_STAGES) -> pd.DataFrame:
    """The MLflow runs of ``stages`` with their model version: the run's ``model_version`` parameter or tag,
    else the registered version that the run created (``lora_adapter`` registers one)."""
    from mlflow.tracking import MlflowClient

    experiment_id = tracker.experiment_id()
    client = MlflowClient(tracking_uri=tracker.tracking_uri, registry_uri=tracker.tracking_uri)
    registered = {mv["run_id"]: str(mv["version"]) for mv in tracker.model_versions()}
    runs = []
    for stage in stages:
        token = None
        while True:
            page = client.search_runs([experiment_id], filter_string=f"tags.`homegrown.stage` = '{stage}'",
                                      max_results=1000, page_token=token)
            for run in page:
                version = (run.data.params.get("model_version") or run.data.tags.get("model_version")
                           or registered.get(run.info.run_id))
                runs.append({"run_id": run.info.run_id, "stage": stage, "model_version": version,
                             "start_ms": run.info.start_time, "end_ms": run.info.end_time})
            token = page.token
            if not token:
                break
    return training_frame(runs)


# -- the arithmetic -------------------------------------------------------------------------------------------


def price_requests(log: pd.DataFrame, prices: Prices) -> pd.DataFrame:
    """The log with what each request cost locally, what its premium equivalent was, and the premium spend."""
    df = log.copy()
    premium_price = (df["prompt_tokens"] / 1000 * prices.premium_usd_per_1k_prompt
                     + df["completion_tokens"] / 1000 * prices.premium_usd_per_1k_completion)
    tokens = df["prompt_tokens"] + df["completion_tokens"]
    local = df["kind"] == "local"
    busy_h = (df["latency_ms"].where(local, 0.0) + df["shadow_latency_ms"]) / 3_600_000
    df["tokens"] = tokens
    # Only a good local answer stands in for a premium one; one stored as an error still cost compute.
    df["avoided_premium_usd"] = premium_price.where(local & (df["status"] == "ok"), 0.0)
    df["local_serving_usd"] = (tokens.where(local, 0) / 1000 * prices.local_usd_per_1k_tokens
                               + busy_h * prices.local_usd_per_hour)
    df["shadow_serving_usd"] = df["shadow_latency_ms"] / 3_600_000 * prices.local_usd_per_hour
    df["premium_spend_usd"] = premium_price.where(df["kind"] == "premium", 0.0)
    return df


def _days(log: pd.DataFrame, training: pd.DataFrame) -> list[str]:
    found = sorted(set(log["day"]) | set(training["day"]))
    if not found:
        return []
    return [d.strftime("%Y-%m-%d") for d in pd.date_range(found[0], found[-1], freq="D")]


def fixed_cost_days(log: pd.DataFrame, days: list[str]) -> list[str]:
    """The days an always-on local machine is paid for: from the first local answer to the report's end."""
    local_days = log.loc[log["kind"] == "local", "day"]
    if local_days.empty:
        return []
    first = local_days.min()
    return [day for day in days if day >= first]


def daily_table(log: pd.DataFrame, training: pd.DataFrame, prices: Prices) -> pd.DataFrame:
    """One row per UTC day, every day from the first to the last with traffic or training."""
    days = _days(log, training)
    if not days:
        return pd.DataFrame(columns=DAILY_COLUMNS)
    priced = price_requests(log, prices)
    kinds = priced.groupby(["day", "kind"]).size().unstack(fill_value=0)
    per_day = priced.groupby("day").agg(
        avoided_premium_usd=("avoided_premium_usd", "sum"), local_serving_usd=("local_serving_usd", "sum"),
        premium_spend_usd=("premium_spend_usd", "sum"))
    tokens = priced.groupby(["day", "kind"])["tokens"].sum().unstack(fill_value=0)
    df = pd.DataFrame({"day": days}).set_index("day")
    for kind in ("local", "premium", "refused", "failed"):
        df[f"{kind}_requests"] = kinds.get(kind, 0)
    df["local_tokens"] = tokens.get("local", 0)
    df["premium_tokens"] = tokens.get("premium", 0)
    df = df.join(per_day).fillna(0)
    fixed = set(fixed_cost_days(log, days))
    df["local_serving_usd"] += [prices.local_fixed_usd_per_day if day in fixed else 0.0 for day in df.index]
    training_h = training.groupby("day")["duration_s"].sum() / 3600
    df["training_usd"] = (training_h * prices.training_usd_per_hour).reindex(df.index, fill_value=0.0)
    df["all_premium_usd"] = df["avoided_premium_usd"] + df["premium_spend_usd"]
    df["actual_usd"] = df["premium_spend_usd"] + df["local_serving_usd"] + df["training_usd"]
    df["net_savings_usd"] = df["avoided_premium_usd"] - df["local_serving_usd"] - df["training_usd"]
    df["cumulative_net_savings_usd"] = df["net_savings_usd"].cumsum()
    int_columns = [c for c in DAILY_COLUMNS if c.endswith(("_requests", "_tokens"))]
    df[int_columns] = df[int_columns].astype(int)
    return df.reset_index()[DAILY_COLUMNS]


def version_table(log: pd.DataFrame, training: pd.DataFrame, prices: Prices) -> pd.DataFrame:
    """One row per served local model (and per trained version that never served), with its training cost.

    An always-on machine's daily cost is shared among the models by their share of local answers; shadow
    answers (local compute behind premium answers) get their own row, training runs without a version too.
    """
    priced = price_requests(log, prices)
    local = priced[priced["kind"] == "local"].copy()
    local["model"] = local["model"].fillna("(unknown)")
    rows: dict[str, dict[str, Any]] = {}
    for model, group in local.groupby("model", sort=True):
        rows[model] = {"model": model, "model_version": model_version_of(model),
                       "local_requests": len(group), "local_tokens": int(group["tokens"].sum()),
                       "avoided_premium_usd": float(group["avoided_premium_usd"].sum()),
                       "local_serving_usd": float(group["local_serving_usd"].sum())}
    fixed_total = len(fixed_cost_days(log, _days(log, training))) * prices.local_fixed_usd_per_day
    for row in rows.values():
        row["local_serving_usd"] += fixed_total * row["local_requests"] / len(local)
    shadow = float(priced["shadow_serving_usd"].sum())
    if shadow:
        # price_requests put shadow compute on the premium row it ran behind; move it to its own row
        rows[SHADOW_MODEL] = {"model": SHADOW_MODEL, "model_version": None, "local_serving_usd": shadow}
        for model, group in local.groupby("model"):
            rows[model]["local_serving_usd"] -= float(group["shadow_serving_usd"].sum())
    from homegrown.gateway.deploy import model_name

    for version, group in training.groupby(training["model_version"].fillna(""), sort=True):
        name = model_name(version) if version else UNATTRIBUTED
        row = rows.setdefault(name, {"model": name, "model_version": version or None})
        row["training_hours"] = float(group["duration_s"].sum()) / 3600
    df = pd.DataFrame(list(rows.values()), columns=VERSION_COLUMNS)
    numeric = [c for c in VERSION_COLUMNS if c not in ("model", "model_version")]
    df[numeric] = df[numeric].astype(float).fillna(0.0)
    df[["local_requests", "local_tokens"]] = df[["local_requests", "local_tokens"]].astype(int)
    df["training_usd"] = df["training_hours"] * prices.training_usd_per_hour
    df["net_savings_usd"] = df["avoided_premium_usd"] - df["local_serving_usd"] - df["training_usd"]
    return df.sort_values("model", key=lambda s: s.map(_model_order)).reset_index(drop=True)


def _model_order(model: str) -> tuple[int, int, str]:
    version = model_version_of(model)
    return (1, int(version), model) if version else (0 if not model.startswith("(") else 2, 0, model)


def budget_table(log: pd.DataFrame, budgets: Budgets) -> pd.DataFrame:
    """Premium fallback spend per day (as the gateway recorded and charged it) against its daily budgets."""
    premium = log[log["kind"] == "premium"].copy()
    premium["tokens"] = premium["prompt_tokens"] + premium["completion_tokens"]
    days = sorted(set(log["day"]))
    per_key = premium.groupby(["day", "key_id"], dropna=False).agg(
        requests=("id", "size"), tokens=("tokens", "sum"), usd=("recorded_cost_usd", "sum"))
    df = pd.DataFrame({"day": days}).set_index("day")
    df["premium_requests"] = premium.groupby("day").size().reindex(df.index, fill_value=0)
    df["premium_usd"] = premium.groupby("day")["recorded_cost_usd"].sum().reindex(df.index, fill_value=0.0)
    df["daily_usd_budget"] = budgets.daily_usd_total
    df["budget_used"] = df["premium_usd"] / budgets.daily_usd_total if budgets.daily_usd_total else float("nan")
    for name in ("requests", "tokens", "usd"):
        top = per_key[name].groupby(level="day").max() if len(per_key) else pd.Series(dtype=float)
        df[f"max_key_{name}"] = top.reindex(df.index, fill_value=0)
    df["budget_refusals"] = log[log["budget_refused"]].groupby("day").size().reindex(df.index, fill_value=0)
    return df.reset_index()


def break_even_day(daily: pd.DataFrame) -> str | None:
    """The first day from which the cumulative net savings stay at or above zero; None if they end below."""
    if daily.empty or daily["cumulative_net_savings_usd"].iloc[-1] < 0:
        return None
    below = daily.index[daily["cumulative_net_savings_usd"] < 0]
    position = 0 if len(below) == 0 else daily.index.get_loc(below[-1]) + 1
    return str(daily["day"].iloc[position])


def days_to_break_even(daily: pd.DataFrame, window: int = 7) -> float | None:
    """Days still needed at the recent pace (mean daily savings before training cost over the last ``window``
    days of the report); 0 when already even; None when the pace does not pay back."""
    if daily.empty:
        return None
    behind = -float(daily["cumulative_net_savings_usd"].iloc[-1])
    if behind <= 0:
        return 0.0
    recent = daily.tail(window)
    pace = float((recent["avoided_premium_usd"] - recent["local_serving_usd"]).mean())
    return math.ceil(behind / pace) if pace > 0 else None


@dataclass
class RoiReport:
    prices: Prices
    budgets: Budgets
    daily: pd.DataFrame
    versions: pd.DataFrame
    budget: pd.DataFrame
    totals: dict[str, Any] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.totals.get("requests", 0) == 0


def build_report(log: pd.DataFrame, training: pd.DataFrame, prices: Prices, budgets: Budgets | None = None
                 ) -> RoiReport:
    """Everything the report shows: per day, per model version, the budgets, and the totals."""
    budgets = budgets or Budgets()
    daily = daily_table(log, training, prices)
    versions = version_table(log, training, prices)
    answered = int((log["kind"] == "local").sum() + (log["kind"] == "premium").sum())
    sums = {c: float(daily[c].sum()) for c in ("avoided_premium_usd", "local_serving_usd", "training_usd",
                                               "premium_spend_usd", "all_premium_usd", "actual_usd",
                                               "net_savings_usd")}
    totals = {
        "requests": len(log), "answered": answered,
        **{f"{kind}_requests": int((log["kind"] == kind).sum()) for kind in ("local", "premium", "refused",
                                                                                "failed")},
        "local_share": float((log["kind"] == "local").sum() / answered) if answered else 0.0,
        **sums,
        "recorded_premium_usd": float(log.loc[log["kind"] == "premium", "recorded_cost_usd"].sum()),
        "savings_share": sums["net_savings_usd"] / sums["all_premium_usd"] if sums["all_premium_usd"] else 0.0,
        "training_hours": float(training["duration_s"].sum()) / 3600,
        "first_day": daily["day"].iloc[0] if len(daily) else None,
        "last_day": daily["day"].iloc[-1] if len(daily) else None,
        "break_even_day": break_even_day(daily),
        "days_to_break_even": days_to_break_even(daily),
    }
    return RoiReport(prices, budgets, daily, versions, budget_table(log, budgets), totals)


# -- rendering ------------------------------------------------------------------------------------------------


def _usd(value: float) -> str:
    sign = "-" if value < 0 else ""
    value = abs(value)
    return f"{sign}${value:,.2f}" if value >= 1 else f"{sign}${value:.4f}"


def _md_table(df: pd.DataFrame, columns: dict[str, str], money: Iterable[str] = ()) -> str:
    money = set(money)
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    for row in df.itertuples(index=False):
        values = row._asdict()
        cells = []
        for name in columns:
            value = values[name]
            if name in money:
                cells.append(_usd(float(value)))
            elif isinstance(value, float):
                cells.append("" if math.isnan(value) else f"{value:.2f}")
            else:
                cells.append("" if value is None else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_line(report: RoiReport) -> str:
    t = report.totals
    if report.empty:
        return ("No traffic yet: the gateway log has no requests. Serve the model (`homegrown serve`, or "
                "`homegrown demo`) and send requests; this report then shows what they saved.")
    even = (f"broke even on {t['break_even_day']}" if t["break_even_day"] else
            f"not even yet ({_usd(t['net_savings_usd'])}); at the recent pace in {t['days_to_break_even']:g} more days"
            if t["days_to_break_even"] is not None else
            f"not even yet ({_usd(t['net_savings_usd'])}), and the recent pace does not pay back the training")
    return (f"{t['answered']} answered requests from {t['first_day']} to {t['last_day']}, "
            f"{t['local_share']:.0%} answered locally. All on the premium API: {_usd(t['all_premium_usd'])}; "
            f"actual cost: {_usd(t['actual_usd'])} (premium fallback {_usd(t['premium_spend_usd'])}, local "
            f"serving {_usd(t['local_serving_usd'])}, training {_usd(t['training_usd'])}). Net savings "
            f"{_usd(t['net_savings_usd'])} ({t['savings_share']:.0%}); {even}.")


def report_markdown(report: RoiReport) -> str:
    """The report as Markdown: the summary, the prices, and the tables per day, per model and of the budgets."""
    p = report.prices
    parts = ["## Return on investment", "", summary_line(report), "",
             (f"Prices: premium {_usd(p.premium_usd_per_1k_prompt)} / {_usd(p.premium_usd_per_1k_completion)} per 1k "
             f"prompt / completion tokens ({p.premium_price_source}); local {_usd(p.local_usd_per_1k_tokens)} per 1k "
             f"tokens + {_usd(p.local_usd_per_hour)} per busy hour + {_usd(p.local_fixed_usd_per_day)} per day; "
             f"training {_usd(p.training_usd_per_hour)} per hour.")]
    if len(report.daily):
        parts += ["", "### Per day (UTC)", "", _md_table(report.daily, {
            "day": "day", "local_requests": "local", "premium_requests": "premium", "refused_requests": "refused",
            "avoided_premium_usd": "premium price of local answers", "local_serving_usd": "local serving",
            "training_usd": "training", "premium_spend_usd": "premium spend", "net_savings_usd": "net savings",
            "cumulative_net_savings_usd": "cumulative"},
            money=("avoided_premium_usd", "local_serving_usd", "training_usd", "premium_spend_usd",
                   "net_savings_usd", "cumulative_net_savings_usd"))]
    if len(report.versions):
        parts += ["", "### Per model version", "", _md_table(report.versions, {
            "model": "model", "local_requests": "local answers", "local_tokens": "tokens",
            "avoided_premium_usd": "premium price", "local_serving_usd": "serving", "training_hours": "training h",
            "training_usd": "training", "net_savings_usd": "net savings"},
            money=("avoided_premium_usd", "local_serving_usd", "training_usd", "net_savings_usd"))]
    if len(report.budget) and (report.budgets.any or report.budget["premium_requests"].sum()):
        b = report.budgets
        limits = ", ".join(f"{name} {value:g}" for name, value in (
            ("USD per day", b.daily_usd_total), ("USD per key per day", b.daily_usd_per_key),
            ("requests per key per day", b.daily_requests_per_key),
            ("tokens per key per day", b.daily_tokens_per_key)) if value) or "none set"
        parts += ["", "### Premium fallback against its budgets", "",
                  f"Budgets: {limits}. Spend as the gateway recorded it (its own fallback prices).", "",
                  _md_table(report.budget, {
                      "day": "day", "premium_requests": "requests", "premium_usd": "spend",
                      "daily_usd_budget": "daily budget", "budget_used": "used", "max_key_usd": "top key spend",
                      "max_key_requests": "top key requests", "budget_refusals": "refused by a budget"},
                      money=("premium_usd", "daily_usd_budget", "max_key_usd"))]
    return "\n".join(parts) + "\n"


def plot_report(report: RoiReport, out_dir: Path | str) -> list[Path]:
    """Two PNGs: cost per day (all-premium against actual, by part) and cumulative net savings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    daily = report.daily
    days = list(range(len(daily)))  # one slot per UTC day, labelled with the day
    labels = list(daily["day"])
    tick_step = max(1, len(days) // 15)
    paths = []

    fig, ax = plt.subplots(figsize=(8, 4))
    bottom = pd.Series(0.0, index=daily.index)
    for column, label in (("premium_spend_usd", "premium fallback"), ("local_serving_usd", "local serving"),
                          ("training_usd", "training")):
        ax.bar(days, daily[column], bottom=bottom, label=label, width=0.8)
        bottom = bottom + daily[column]
    ax.plot(days, daily["all_premium_usd"], color="black", marker="o", label="all on the premium API")
    paths.append(_save_plot(fig, ax, "USD per day", "Cost per day: homegrown against the premium API",
                            (days[::tick_step], labels[::tick_step]), out / "cost_per_day.png"))

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(days, daily["cumulative_net_savings_usd"], marker="o", label="cumulative net savings")
    ax.axhline(0, color="grey", linewidth=1)
    if report.totals.get("break_even_day"):
        ax.axvline(labels.index(report.totals["break_even_day"]), color="green", linestyle="--",
                   label=f"break-even {report.totals['break_even_day']}")
    paths.append(_save_plot(fig, ax, "USD", "Cumulative net savings (after serving and training cost)",
                            (days[::tick_step], labels[::tick_step]), out / "cumulative_savings.png"))
    return paths


def _save_plot(fig: Any, ax: Any, ylabel: str, title: str, ticks: tuple[Any, Any], path: Path) -> Path:
    """Label, lay out and write one of the report's day plots as PNG, then free it."""
    import matplotlib.pyplot as plt

    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_xticks(*ticks)
    ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

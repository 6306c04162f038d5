"""Staged rollout: step the challenger's share of live traffic up, promote it, or roll it back, on live outcomes.

A deploy with ``rollout="staged"`` (:func:`homegrown.gateway.deploy.deploy_model`) starts a candidate as the
challenger on a share of the conversations (``canary_share`` in ``models.json``, 10% by default). From then on
:class:`RolloutController` reads the gateway log since the current step began, counts per arm (champion,
challenger) what happened to each answer, and decides:

- ``step``: the challenger is not worse than the champion by more than ``margin``, beyond noise: its share
  moves to the next stage (10% -> 50%);
- ``promote``: the same at the last stage below 100% (reaching 100% *is* the promotion): the challenger becomes
  the champion in ``models.json``, the MLflow alias ``champion`` moves to it, the old one becomes ``previous``;
- ``rollback``: the challenger is worse beyond noise (or much slower): it leaves ``models.json``;
- ``hold``: not enough traffic, or not enough evidence either way yet.

The outcome compared is one binary **bad outcome** per answered request: a thumbs-down (the newest thumbs
counts), a correction, an ``outcome`` of rejected / abandoned / regenerated, a fallback to the premium API, an
unusable answer (``metadata.unusable``) or no answer at all. Thumbs-up rate, correction rate, fallback rate,
unusable answers and latency p50 are reported beside it as evidence. Requests pinned to a model by name are
left out: only the random canary split makes the two arms comparable.

The sequential test is the **mixture sequential probability ratio test (mSPRT)** of Johari, Koomen, Pekelis and
Walsh ("Always valid inference: continuous monitoring of A/B tests", Operations Research 2022; the method of
Optimizely's Stats Engine), for the difference of two proportions under the normal approximation, with a normal
mixture N(0, tau^2) over the difference. Its confidence sequence

    theta_hat +- sqrt( V (V + tau^2) / tau^2 * ( log((V + tau^2) / V) + 2 log(1 / alpha) ) ),
    V = p_ch (1 - p_ch) / n_ch + p_champ (1 - p_champ) / n_champ,

covers the true difference ``theta = p_challenger - p_champion`` at *every* evaluation with probability at least
``1 - alpha``, so the controller may look after every batch of traffic (a sensor every few minutes) without
inflating its error rate the way a repeated fixed-sample test would. Rates are Agresti-Caffo adjusted (one
success and one failure added per arm) so that an arm with no bad outcome yet has a non-zero variance. Each step
is its own test on its own window, so over ``k`` steps the chance of a wrong step or rollback is at most
``k * alpha``. Rollback when the lower bound is above 0; step when the upper bound is below ``margin``.

Every decision is appended with its evidence to ``<artifacts>/rollout/decisions.jsonl`` (and the newest to
``<artifacts>/latest/rollout_state.json``), tagged on the challenger's MLflow model version, and, when it changes
the traffic, logged as an MLflow run; the Dagster sensor ``staged_rollout`` reports it as a materialisation of
``rollout_state``.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy import select
from sqlalchemy.orm import Session

from homegrown.gateway.logstore import FeedbackRow, InteractionRow, LogStore, utc_now_iso
from homegrown.gateway.routing import CHALLENGER, CHAMPION
from homegrown.gateway.settings import FALLBACK, GatewaySettings, ModelsFile, ModelSpec, read_models_file
from homegrown.store import ArtifactStore
from homegrown.tracking import Tracker

log = logging.getLogger(__name__)

Action = Literal["hold", "step", "promote", "rollback"]
BAD_OUTCOMES = ("rejected", "abandoned", "regenerated")
DECISIONS_FILE = "decisions.jsonl"


class RolloutSettings(BaseSettings):
    """How the controller decides; each field reads ``HOMEGROWN_ROLLOUT_<FIELD>`` from the environment."""

    model_config = SettingsConfigDict(env_prefix="HOMEGROWN_ROLLOUT_", extra="ignore")

    # The challenger's shares, in order; passing at the last one below 1.0 promotes it.
    stages: Annotated[list[float], NoDecode] = Field(default_factory=lambda: [0.1, 0.5, 1.0])
    # Error rate of each step's test (always valid: it holds however often the controller looks).
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    # The challenger may be this much worse (absolute bad-outcome rate) and still step up.
    margin: float = Field(default=0.02, ge=0.0, lt=1.0)
    # Spread of the mixture over the difference: about the size of the effects expected; smaller suits
    # small effects and large traffic.
    tau: float = Field(default=0.05, gt=0.0)
    # Answered requests each arm needs in a step before any decision but hold.
    min_requests: int = Field(default=100, ge=1)
    # Roll back when the challenger's latency p50 exceeds the champion's by this factor (0: no latency guard).
    max_latency_ratio: float = Field(default=3.0, ge=0.0)
    # The gateway to reload after a decision; empty: the background gateway when one runs.
    gateway_url: str = ""

    @field_validator("stages", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [float(item) for item in value.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _check(self) -> RolloutSettings:
        if not self.stages or any(not 0.0 < s <= 1.0 for s in self.stages) or self.stages != sorted(set(self.stages)):
            raise ValueError(f"rollout stages must be increasing shares in (0, 1], got {self.stages}")
        return self


@dataclass
class ArmOutcomes:
    """What happened to one arm's answers in the current step."""

    role: str
    model: str
    version: str | None = None
    requests: int = 0
    bad: int = 0
    thumbs_up: int = 0
    thumbs_down: int = 0
    corrections: int = 0
    rejected: int = 0
    fallbacks: int = 0
    unusable: int = 0
    failures: int = 0
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def latency_p50_ms(self) -> float | None:
        return statistics.median(self.latencies_ms) if self.latencies_ms else None

    def summary(self) -> dict[str, Any]:
        """Counts and rates, for the decision log, MLflow and the Dagster UI."""
        n = self.requests

        def rate(count: int) -> float | None:
            return round(count / n, 4) if n else None

        return {
            "role": self.role, "model": self.model, "version": self.version, "requests": n, "bad": self.bad,
            "bad_rate": rate(self.bad), "thumbs_up_rate": rate(self.thumbs_up),
            "thumbs_down_rate": rate(self.thumbs_down), "correction_rate": rate(self.corrections),
            "rejected_rate": rate(self.rejected), "fallback_rate": rate(self.fallbacks),
            "unusable_rate": rate(self.unusable), "failure_rate": rate(self.failures),
            "latency_p50_ms": self.latency_p50_ms,
        }


@dataclass(frozen=True)
class Interval:
    """A confidence sequence for ``difference`` = challenger's bad rate - champion's."""

    difference: float
    lower: float
    upper: float
    alpha: float
    tau: float


def confidence_sequence(bad_champion: int, n_champion: int, bad_challenger: int, n_challenger: int,
                        alpha: float, tau: float) -> Interval:
    """The mSPRT (normal mixture) always-valid confidence sequence for the difference of two bad rates."""
    if n_champion < 1 or n_challenger < 1:
        return Interval(0.0, -1.0, 1.0, alpha, tau)
    p_a = (bad_champion + 1) / (n_champion + 2)
    p_b = (bad_challenger + 1) / (n_challenger + 2)
    variance = p_a * (1 - p_a) / n_champion + p_b * (1 - p_b) / n_challenger
    t2 = tau * tau
    radius = math.sqrt(variance * (variance + t2) / t2 * (math.log((variance + t2) / variance) + 2 * math.log(1 / alpha)))
    difference = p_b - p_a
    return Interval(difference, max(-1.0, difference - radius), min(1.0, difference + radius), alpha, tau)


@dataclass
class Decision:
    """One evaluation of the rollout: what was decided, why, and the evidence."""

    action: Action
    reason: str
    share_before: float
    share_after: float
    champion: dict[str, Any]
    challenger: dict[str, Any]
    interval: dict[str, Any] | None
    step_started_at: str
    decided_at: str = field(default_factory=utc_now_iso)
    settings: dict[str, Any] = field(default_factory=dict)
    recorded: bool = True  # False: a hold on the same evidence as the last decision, not logged again
    mlflow_run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def next_stage(share: float, stages: list[float]) -> float:
    """The stage after ``share``: the smallest configured stage above it, or 1.0 (promotion)."""
    return next((stage for stage in stages if stage > share + 1e-9), 1.0)


def decide(champion: ArmOutcomes, challenger: ArmOutcomes, share: float, settings: RolloutSettings,
           step_started_at: str = "") -> Decision:
    """The decision on one step's outcomes (a pure function: no file, no gateway, no MLflow)."""
    interval = confidence_sequence(champion.bad, champion.requests, challenger.bad, challenger.requests,
                                   settings.alpha, settings.tau)

    def made(action: Action, reason: str, share_after: float) -> Decision:
        return Decision(action, reason, share, share_after, champion.summary(), challenger.summary(),
                        asdict(interval), step_started_at,
                        settings=settings.model_dump(exclude={"gateway_url"}))

    low = min(champion.requests, challenger.requests)
    if low < settings.min_requests:
        return made("hold", f"not enough traffic: {challenger.requests} challenger and {champion.requests} champion "
                            f"answers in this step, {settings.min_requests} needed per arm", share)
    if interval.lower > 0:
        return made("rollback", f"the challenger's bad-outcome rate is higher beyond noise: difference "
                                f"{interval.difference:+.3f}, {1 - settings.alpha:.0%} confidence sequence "
                                f"[{interval.lower:+.3f}, {interval.upper:+.3f}] excludes 0", 0.0)
    p50_ch, p50_champ = challenger.latency_p50_ms, champion.latency_p50_ms
    if settings.max_latency_ratio and p50_ch and p50_champ and p50_ch > settings.max_latency_ratio * p50_champ:
        return made("rollback", f"the challenger is slower: latency p50 {p50_ch:.0f} ms against the champion's "
                                f"{p50_champ:.0f} ms (limit x{settings.max_latency_ratio:g})", 0.0)
    if interval.upper < settings.margin:
        after = next_stage(share, settings.stages)
        # reaching 100% is the promotion: there is no champion arm left to compare with
        action: Action = "promote" if after >= 1.0 else "step"
        return made(action, f"the challenger is no worse than the champion beyond a margin of {settings.margin:.3f}: "
                            f"difference {interval.difference:+.3f}, {1 - settings.alpha:.0%} confidence sequence "
                            f"[{interval.lower:+.3f}, {interval.upper:+.3f}]", after)
    return made("hold", f"not enough evidence yet: {1 - settings.alpha:.0%} confidence sequence "
                        f"[{interval.lower:+.3f}, {interval.upper:+.3f}] spans the margin {settings.margin:.3f}", share)


def read_outcomes(store: LogStore, models: ModelsFile, since: str) -> tuple[ArmOutcomes, ArmOutcomes]:
    """Per-arm outcomes of the requests logged since ``since`` (ISO UTC) and their feedback events.

    A request counts for the arm that the canary split chose (``metadata.primary_route``), when it was answered
    by that arm's model or fell back from it; requests that named a model are left out.
    """
    assert models.champion is not None and models.challenger is not None
    arms = {CHAMPION: _arm(CHAMPION, models.champion), CHALLENGER: _arm(CHALLENGER, models.challenger)}
    named = {CHAMPION, CHALLENGER, models.champion.name, models.challenger.name}
    counted: dict[str, tuple[ArmOutcomes, dict[str, Any]]] = {}
    with Session(store.engine) as session:
        rows = session.execute(
            select(InteractionRow.id, InteractionRow.model, InteractionRow.status, InteractionRow.latency_ms,
                   InteractionRow.record).where(InteractionRow.created_at >= since)
        ).all()
        events = session.execute(
            select(FeedbackRow.feedback_for, FeedbackRow.fields)
            .join(InteractionRow, InteractionRow.id == FeedbackRow.feedback_for)
            .where(InteractionRow.created_at >= since)
            .order_by(FeedbackRow.seq)
        ).all()
    for interaction_id, model, status, latency_ms, record in rows:
        meta = (record or {}).get("metadata") or {}
        arm = arms.get(meta.get("primary_route"))
        if arm is None or meta.get("requested_model") in named:
            continue
        fell_back = meta.get("route") == FALLBACK or str(meta.get("routing_reason", "")).startswith("fallback")
        if model not in (arm.model, None) and not fell_back:
            continue  # answered by a model that held the role before this step
        flags = {"fallback": fell_back, "unusable": bool(meta.get("unusable")),
                 "failure": status == "error" and not meta.get("route")}
        counted[interaction_id] = (arm, flags)
        if model == arm.model and latency_ms is not None:
            arm.latencies_ms.append(float(latency_ms))
    feedback: dict[str, dict[str, Any]] = {}
    for feedback_for, fields in events:
        if feedback_for in counted:
            feedback.setdefault(feedback_for, {}).update(fields)  # newest wins per field
    for interaction_id, (arm, flags) in counted.items():
        fields = feedback.get(interaction_id, {})
        thumbs = fields.get("thumbs")
        corrected = bool(fields.get("admin_correction"))
        rejected = fields.get("outcome") in BAD_OUTCOMES
        arm.requests += 1
        arm.thumbs_up += thumbs == 1
        arm.thumbs_down += thumbs == -1
        arm.corrections += corrected
        arm.rejected += rejected
        arm.fallbacks += flags["fallback"]
        arm.unusable += flags["unusable"]
        arm.failures += flags["failure"]
        arm.bad += bool(thumbs == -1 or corrected or rejected or any(flags.values()))
    return arms[CHAMPION], arms[CHALLENGER]


def _arm(role: str, spec: ModelSpec) -> ArmOutcomes:
    return ArmOutcomes(role=role, model=spec.name, version=spec.version)


class RolloutController:
    """Evaluates the rollout in ``models.json`` and carries out the decision (file, gateway, MLflow, log).

    ``reload`` is called after ``models.json`` changed (default: ``POST /admin/reload`` to
    ``settings.gateway_url`` or the background gateway).
    """

    def __init__(self, gateway: GatewaySettings, artifacts: ArtifactStore, tracker: Tracker | None,
                 settings: RolloutSettings | None = None, reload: Callable[[], Any] | None = None):
        self.gateway = gateway
        self.artifacts = artifacts
        self.tracker = tracker
        self.settings = settings or RolloutSettings()
        self._reload = reload
        # The decisions log is the rollout's mutable state: fetched from the store (S3 in production) and
        # uploaded with every recorded decision.
        self.log_dir = artifacts.state_dir("rollout_state")

    def reload(self) -> None:
        if self._reload is not None:
            self._reload()
            return
        from homegrown.gateway.deploy import reload_gateway

        if reload_gateway(self.gateway, self.settings.gateway_url or None) is None:
            log.warning("no gateway runs: models.json changed and is read when the gateway starts")

    def evaluate(self) -> Decision | None:
        """Decide and act on the rollout in progress; None when no challenger is in a staged rollout."""
        path = Path(self.gateway.models_file)
        models = read_models_file(path)
        if models.challenger is None or models.champion is None or models.rollout is None:
            return None
        share = models.canary_share if models.canary_share is not None else self.gateway.canary_share
        store = LogStore(self.gateway.log_db_url)
        try:
            champion, challenger = read_outcomes(store, models, models.rollout.step_started_at)
        finally:
            store.close()
        decision = decide(champion, challenger, share, self.settings, models.rollout.step_started_at)
        if decision.action == "hold":
            last = self.last_decision()
            decision.recorded = not (
                last is not None and last["action"] == "hold" and last["step_started_at"] == decision.step_started_at
                and last["champion"]["requests"] == champion.requests and last["challenger"]["requests"] == challenger.requests
                and last["champion"]["bad"] == champion.bad and last["challenger"]["bad"] == challenger.bad)
            if decision.recorded:
                self._record(decision)
            return decision
        self._apply(decision, models, path)
        self._record(decision)
        return decision

    def _apply(self, decision: Decision, models: ModelsFile, path: Path) -> None:
        """Write the new ``models.json`` and reload the gateway; put the old file back if the reload fails."""
        assert models.challenger is not None and models.rollout is not None
        if decision.action == "step":
            updated = models.model_copy(update={
                "canary_share": decision.share_after,
                "rollout": models.rollout.model_copy(update={"step_started_at": decision.decided_at})})
        elif decision.action == "promote":
            updated = models.model_copy(update={"champion": models.challenger, "challenger": None,
                                                "canary_share": None, "rollout": None})
        else:
            updated = models.model_copy(update={"challenger": None, "canary_share": None, "rollout": None})
        updated.write(path)
        try:
            self.reload()
        except Exception:
            models.write(path)
            raise
        if decision.action != "step":
            from homegrown.gateway.deploy import stop_unused_merged_servers

            stop_unused_merged_servers(path, log.info)  # the losing arm's merged-weights vLLM server, if any
            try:
                self._move_aliases(decision.action, models)
            except Exception:  # the gateway already serves the decision; say so rather than lose its record
                log.exception("could not move the registry aliases after the %s", decision.action)
                decision.reason += "; moving the MLflow aliases failed (see the log)"

    def _move_aliases(self, action: Action, models: ModelsFile) -> None:
        """Promotion: ``champion`` -> the challenger's version, the old champion -> ``previous``; both: no
        ``challenger`` alias any more."""
        version = models.challenger.version if models.challenger else None
        if self.tracker is None or version is None:
            return
        if action == "promote":
            old = self.tracker.alias_version("champion")
            self.tracker.set_alias("champion", version)
            if old and str(old["version"]) != version:
                self.tracker.set_alias("previous", str(old["version"]))
        held = self.tracker.alias_version("challenger")
        if held and str(held["version"]) == version:
            self.tracker.delete_alias("challenger")

    def _record(self, decision: Decision) -> None:
        """The decision with its evidence: the JSONL log, the latest pointer, MLflow."""
        if self.tracker is not None:
            try:
                self._to_mlflow(decision)
            except Exception:  # the decision is made and applied; a tracking outage must not hide it
                log.exception("could not record the rollout decision in MLflow")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        line = json.dumps(decision.to_dict(), default=str)
        with open(self.log_dir / DECISIONS_FILE, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        self.artifacts.record_latest("rollout_state", {**decision.to_dict(),
                                                        "decisions_log": str(self.log_dir / DECISIONS_FILE)})

    def _to_mlflow(self, decision: Decision) -> None:
        assert self.tracker is not None
        version = decision.challenger.get("version")
        if version:
            self.tracker.tag_model_version(version, {
                "rollout_action": decision.action, "rollout_share": f"{decision.share_after:g}",
                "rollout_reason": decision.reason, "rollout_decided_at": decision.decided_at})
        if decision.action == "hold":
            return
        tags = {"rollout.action": decision.action, "rollout.challenger": decision.challenger["model"],
                "rollout.champion": decision.champion["model"]}
        with self.tracker.stage_run("rollout", tags=tags) as run:
            run.log_params({"share_before": decision.share_before, "share_after": decision.share_after,
                            "challenger_version": version or "none",
                            "champion_version": decision.champion.get("version") or "none",
                            **{f"setting.{k}": v for k, v in decision.settings.items()}})
            metrics: dict[str, float] = {}
            for arm in ("champion", "challenger"):
                for name, value in getattr(decision, arm).items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        metrics[f"{arm}.{name}"] = value
            for name in ("difference", "lower", "upper"):
                metrics[f"difference.{name}"] = (decision.interval or {}).get(name, 0.0)
            run.log_metrics(metrics)
            run.set_tags({"rollout.reason": decision.reason})
            decision.mlflow_run_id = run.run_id
            evidence = self.log_dir / f"decision-{decision.decided_at.replace(':', '')}.json"
            self.log_dir.mkdir(parents=True, exist_ok=True)
            evidence.write_text(json.dumps(decision.to_dict(), indent=2, default=str))
            run.log_artifact(evidence, "rollout")

    def last_decision(self) -> dict[str, Any] | None:
        """The newest recorded decision, or None."""
        return self.artifacts.latest("rollout_state")

    def decisions(self) -> list[dict[str, Any]]:
        """Every recorded decision, oldest first."""
        path = self.log_dir / DECISIONS_FILE
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

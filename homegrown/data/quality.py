"""Quality scoring: which logged interactions are good enough to learn from, and why.

Every interaction gets a score from 0 to 10 (the sum of the weights of its positive signals) and a
keep/drop decision with a short reason. The decision, in order:

1. An admin correction replaces the logged answer and keeps the row, valid output or not: a person
   wrote it (with ``use_admin_corrections=False`` a corrected row is dropped instead).
2. A negative signal without a correction drops it: thumbs down, an outcome in ``drop_outcomes``
   (rejected, abandoned, regenerated), or a critic that preferred neither answer.
3. An answer that is not a valid output for its task drops it (``require_valid_output``).
4. A keep signal keeps it: a critic ``quality_score`` strictly above ``critic_min``, a booking, or a
   customer rating of at least ``rating_min``.
5. Otherwise the score decides: kept when ``score >= threshold``.
6. An *unrated* answer (no thumbs, outcome, rating, booking, critic or correction: nobody judged it) that
   is valid but fell short of the threshold is kept when ``unrated`` says so: ``keep``; ``drop``; or
   ``auto`` (the default), decided from the logs themselves: kept unless the answers that *were* judged
   were approved less often than ``unrated_min_approval``. Most businesses rate a small share of their
   answers, and their unrated answers come from the same premium assistant as the approved ones: dropping
   them all would leave a small business with a fraction of its logs, or none when it collects no
   feedback. Where judged answers are often rejected, an unrated one is no safer, and it is dropped.

Trust: a record's ``metadata.provenance`` says where it came from (``{"source": "gateway", "key_id",
"role": "app"|"reviewer"|"admin"}``); a record without one was imported from a file (role ``import``).
Each feedback field's provenance is ``feedback["<field>_provenance"]`` (the gateway exports it so). A
field without one has role ``import`` on an imported record, and ``unknown`` on a gateway record (it was
not given through the gateway's trust checks). Only corrections whose role is in ``correction_roles``
replace an answer; with ``trusted_feedback_only`` the other feedback fields count only from those roles
too. An ignored correction is named in the row's reason.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, fields
from functools import partial
from typing import Any

import pandas as pd

from homegrown.data.columns import INTERACTION_COLUMNS, SCORED_COLUMNS
from homegrown.data.parallel import map_chunks
from homegrown.data.validity import check_output

OUTCOMES = ("accepted", "accepted_with_edits", "rejected", "abandoned", "regenerated")
MAX_SCORE = 10.0
TRUST_ROLES = ("app", "reviewer", "admin", "import", "unknown")
PROVENANCE_SUFFIX = "_provenance"
UNRATED_MODES = ("auto", "keep", "drop")


@dataclass(frozen=True)
class QualityPolicy:
    """How interactions are scored and filtered; the defaults are the seeds' strategies."""

    valid_output_weight: float = 3.0
    """Points for an answer that is a valid output for its task (JSON that fits the schema, a tool call
    that fits the tool's schema, else a non-empty text)."""
    thumbs_up_weight: float = 3.0
    """Points for an explicit thumbs up."""
    accepted_weight: float = 2.0
    """Points for the outcome ``accepted``."""
    accepted_with_edits_weight: float = 1.0
    """Points for the outcome ``accepted_with_edits``."""
    conversation_continued_weight: float = 1.0
    """Points when a later interaction of the same conversation exists (the user carried on)."""
    threshold: float = 5.0
    """A row without another keep or drop rule is kept when its score is at least this."""
    critic_min: float | None = 0.9
    """A critic ``quality_score`` strictly greater than this keeps the row; ``None`` ignores critic scores."""
    keep_on_booking: bool = True
    """``led_to_booking`` keeps the row."""
    rating_min: int | None = 4
    """A ``customer_rating`` of at least this (1..5) keeps the row; ``None`` ignores ratings."""
    use_admin_corrections: bool = True
    """An admin correction replaces the answer and keeps the row; when False, corrected rows are
    dropped (their logged answer was wrong and the correction is not trusted for training)."""
    drop_on_thumbs_down: bool = True
    """A thumbs down without a correction drops the row."""
    drop_outcomes: tuple[str, ...] = ("rejected", "abandoned", "regenerated")
    """Outcomes that drop the row when there is no correction."""
    drop_on_critic_neither: bool = True
    """A critic ``best_response`` of ``neither`` without a correction drops the row."""
    require_valid_output: bool = True
    """An answer that is not a valid output for its task is dropped whatever its other signals."""
    keep_synthetic: bool = True
    """Synthetic examples (generated from the business's knowledge) are kept."""
    unrated: str = "auto"
    """What to do with a valid answer nobody judged that the score alone does not keep: ``keep``, ``drop``,
    or ``auto`` (keep when the judged answers' approval rate is at least ``unrated_min_approval``, or when
    no answer was judged)."""
    unrated_min_approval: float = 0.8
    """Under ``unrated="auto"``: the share of judged answers that must have been approved (thumbs up,
    accepted, a booking, a rating or critic score at the keep level) rather than rejected (thumbs down, a
    drop outcome, a critic preferring neither, a correction, a rating of 1-2) for unrated answers to be kept."""
    correction_roles: tuple[str, ...] = ("reviewer", "admin", "import")
    """Roles whose ``admin_correction`` replaces the answer; a correction from any other role (an app key,
    or a field of unknown origin on a gateway record) is ignored and the logged answer judged as it is."""
    trusted_feedback_only: bool = False
    """When True, thumbs, outcomes, ratings and bookings count only from ``correction_roles`` too; when
    False (the default) an app key's ratings count like anyone's (they cannot replace an answer)."""

    def __post_init__(self) -> None:
        weights = {f.name: getattr(self, f.name) for f in fields(self) if f.name.endswith("_weight")}
        for name, weight in weights.items():
            if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {weight!r}")
        if self.max_score > MAX_SCORE:
            raise ValueError(
                f"the weights add up to {self.max_score:g}, more than the maximum score {MAX_SCORE:g}"
            )
        if not 0 <= self.threshold <= MAX_SCORE:
            raise ValueError(f"threshold must be between 0 and {MAX_SCORE:g}, got {self.threshold!r}")
        if self.critic_min is not None and not 0 <= self.critic_min < 1:
            raise ValueError(
                f"critic_min must be in [0, 1) (a score must be able to exceed it) or None, "
                f"got {self.critic_min!r}"
            )
        if self.rating_min is not None and self.rating_min not in (1, 2, 3, 4, 5):
            raise ValueError(f"rating_min must be an integer from 1 to 5 or None, got {self.rating_min!r}")
        if isinstance(self.drop_outcomes, str):
            raise TypeError("drop_outcomes must be a sequence of outcomes, not a single string")
        unknown = sorted(set(self.drop_outcomes) - set(OUTCOMES))
        if unknown:
            raise ValueError(f"unknown outcomes in drop_outcomes: {unknown}; known: {', '.join(OUTCOMES)}")
        rewarded = [o for o in ("accepted", "accepted_with_edits") if o in self.drop_outcomes]
        if rewarded:
            raise ValueError(f"outcome(s) {rewarded} cannot both earn points and drop the row")
        if self.threshold > self.max_score and not self._has_keep_rule:
            raise ValueError(
                f"threshold {self.threshold:g} is above the highest possible score {self.max_score:g} and no "
                "other rule keeps rows, so nothing would ever be kept"
            )
        object.__setattr__(self, "drop_outcomes", tuple(self.drop_outcomes))
        if isinstance(self.correction_roles, str):
            raise TypeError("correction_roles must be a sequence of roles, not a single string")
        unknown_roles = sorted(set(self.correction_roles) - set(TRUST_ROLES))
        if unknown_roles:
            raise ValueError(f"unknown roles in correction_roles: {unknown_roles}; known: {', '.join(TRUST_ROLES)}")
        object.__setattr__(self, "correction_roles", tuple(self.correction_roles))
        if self.unrated not in UNRATED_MODES:
            raise ValueError(f"unrated must be one of {', '.join(UNRATED_MODES)}, got {self.unrated!r}")
        if not 0 <= self.unrated_min_approval <= 1:
            raise ValueError(f"unrated_min_approval must be in [0, 1], got {self.unrated_min_approval!r}")

    @property
    def max_score(self) -> float:
        """The highest score an interaction can reach under these weights."""
        return (
            self.valid_output_weight
            + self.thumbs_up_weight
            + max(self.accepted_weight, self.accepted_with_edits_weight)
            + self.conversation_continued_weight
        )

    @property
    def _has_keep_rule(self) -> bool:
        return (
            self.critic_min is not None
            or self.keep_on_booking
            or self.rating_min is not None
            or self.use_admin_corrections
        )


def _number(value: Any) -> float | None:
    """A finite float from an int, float or numeric string; ``None`` otherwise (booleans included)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _is_true(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "yes", "1"}
    return value is True or (_number(value) == 1)


def _as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def record_role(metadata: Any) -> str:
    """The trust role of an interaction record: its ``metadata.provenance.role``, else ``import``."""
    provenance = _as_dict(_as_dict(metadata).get("provenance"))
    role = provenance.get("role")
    return role if role in TRUST_ROLES else "import"


def field_role(feedback: dict, name: str, metadata: Any) -> str:
    """The trust role of one feedback field (see the module docstring)."""
    provenance = _as_dict(feedback.get(name + PROVENANCE_SUFFIX))
    role = provenance.get("role")
    if role in TRUST_ROLES:
        return role
    if provenance.get("source") == "import":
        return "import"
    return "import" if record_role(metadata) == "import" else "unknown"


def trusted_feedback(policy: QualityPolicy, feedback: dict, metadata: Any) -> tuple[dict, str | None]:
    """The feedback fields the policy lets count, and a note on an ignored correction (or None).

    Provenance entries are left out of the result; so is every field from an untrusted role when
    ``policy.trusted_feedback_only``.
    """
    kept: dict = {}
    note = None
    for name, value in feedback.items():
        if name.endswith(PROVENANCE_SUFFIX):
            continue
        role = field_role(feedback, name, metadata)
        trusted = role in policy.correction_roles
        if name == "admin_correction" and not trusted:
            if _correction(feedback) is not None:
                note = f"ignored a correction from role {role}"
            continue
        if policy.trusted_feedback_only and not trusted:
            continue
        kept[name] = value
    return kept, note


def trust_level(policy: QualityPolicy, feedback: Any, metadata: Any) -> str:
    """Who supplied the answer an example teaches: the role of a correction used, else of the record."""
    feedback = _as_dict(feedback)
    kept, _ = trusted_feedback(policy, feedback, metadata)
    if _correction(kept) is not None:
        return field_role(feedback, "admin_correction", metadata)
    return record_role(metadata)


def training_provenance(
    examples: pd.DataFrame, interactions: pd.DataFrame, policy: QualityPolicy | None = None
) -> dict[str, int]:
    """How many ``examples`` (e.g. the train split) came from each trust level.

    Levels: ``synthetic``, and for logged examples the role of whoever supplied the answer (``app``,
    ``reviewer``, ``admin``, ``import``, ``unknown``; see :func:`trust_level`). An example merged from
    duplicates counts under its first source interaction; one whose source is no longer ingested
    counts as ``unknown``.
    """
    policy = policy or QualityPolicy()
    by_id = {}
    if len(interactions):
        by_id = dict(zip(interactions["id"].tolist(),
                         zip(interactions["feedback"].tolist(), interactions["metadata"].tolist())))
    counts: dict[str, int] = {}
    for synthetic, sources in zip(examples["synthetic"].tolist(), examples["source_ids"].tolist()):
        if synthetic is not None and pd.notna(synthetic) and bool(synthetic):
            level = "synthetic"
        else:
            sources = [] if sources is None or isinstance(sources, str) else list(sources)
            found = by_id.get(str(sources[0])) if sources else None
            level = trust_level(policy, *found) if found else "unknown"
        counts[level] = counts.get(level, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _correction(feedback: dict) -> str | None:
    correction = feedback.get("admin_correction")
    return correction if isinstance(correction, str) and correction.strip() else None


def apply_correction(messages: list[dict], correction: str) -> list[dict]:
    """``messages`` with the last assistant answer replaced by a text ``correction`` (a new list).

    An answer that made tool calls becomes a text answer; when the conversation does not end in an
    assistant answer, the correction is appended as one.
    """
    answer = {"role": "assistant", "content": correction}
    if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
        return [*messages[:-1], answer]
    return [*messages, answer]


def example_id(interaction_id: str, messages: list[dict]) -> str:
    """A stable id for the example built from one interaction: a hash of its id and final messages."""
    payload = json.dumps([interaction_id, messages], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def _fmt(number: float) -> str:
    return f"{number:g}"


def _decide(
    policy: QualityPolicy,
    score: float,
    parts: list[str],
    valid: bool,
    validity_reason: str,
    feedback: dict,
    critic: dict,
    corrected: bool,
) -> tuple[bool, str]:
    """The keep decision and its reason for one scored interaction."""
    summary = f"score {_fmt(score)}" + (f" ({', '.join(parts)})" if parts else "")
    if corrected:
        if policy.use_admin_corrections:
            return True, f"kept: admin correction replaces the answer; {summary}"
        return False, "dropped: has an admin correction and the policy does not use corrections"

    if policy.drop_on_thumbs_down and _number(feedback.get("thumbs")) == -1:
        return False, "dropped: thumbs down, no correction"
    outcome = feedback.get("outcome")
    if outcome in policy.drop_outcomes:
        return False, f"dropped: outcome {outcome}, no correction"
    if policy.drop_on_critic_neither and critic.get("best_response") == "neither":
        return False, "dropped: critic preferred neither answer, no correction"
    if policy.require_valid_output and not valid:
        return False, f"dropped: invalid output ({validity_reason})"

    critic_score = _number(critic.get("quality_score"))
    if policy.critic_min is not None and critic_score is not None and critic_score > policy.critic_min:
        return True, f"kept: critic score {_fmt(critic_score)} > {_fmt(policy.critic_min)}; {summary}"
    if policy.keep_on_booking and _is_true(feedback.get("led_to_booking")):
        return True, f"kept: led to a booking; {summary}"
    rating = _number(feedback.get("customer_rating"))
    if policy.rating_min is not None and rating is not None and rating >= policy.rating_min:
        return True, f"kept: customer rating {_fmt(rating)} >= {policy.rating_min}; {summary}"

    if score >= policy.threshold:
        return True, f"kept: score {_fmt(score)} >= {_fmt(policy.threshold)}" + (
            f" ({', '.join(parts)})" if parts else ""
        )
    return False, f"dropped: score {_fmt(score)} < {_fmt(policy.threshold)}" + (
        f" ({', '.join(parts)})" if parts else " (no positive signal)"
    )


def _score(policy: QualityPolicy, valid: bool, feedback: dict, continued: bool) -> tuple[float, list[str]]:
    """The score of one interaction and the signals that earned it, e.g. ``["valid output +3"]``."""
    outcome = feedback.get("outcome")
    signals = (
        (valid, policy.valid_output_weight, "valid output"),
        (_number(feedback.get("thumbs")) == 1, policy.thumbs_up_weight, "thumbs up"),
        (outcome == "accepted", policy.accepted_weight, "accepted"),
        (outcome == "accepted_with_edits", policy.accepted_with_edits_weight, "accepted with edits"),
        (continued, policy.conversation_continued_weight, "conversation continued"),
    )
    earned = [(weight, label) for present, weight, label in signals if present and weight]
    return float(sum(weight for weight, _ in earned)), [
        f"{label} +{_fmt(weight)}" for weight, label in earned
    ]


def _continued(df: pd.DataFrame) -> pd.Series:
    """True where a later interaction of the same conversation exists (created_at is ISO-8601 UTC)."""
    latest = df.groupby("conversation_id", sort=False)["created_at"].transform("max")
    return df["created_at"].astype(str) < latest.astype(str)


# What the feedback says of a logged answer, for the approval rate that ``unrated="auto"`` reads.
APPROVED, REJECTED, NEUTRAL, UNRATED, UNRATED_SHORT = "approved", "rejected", "neutral", "unrated", "unrated_short"
LOW_RATING = 2  # a customer rating at or below this (of 5) is a rejection


def judgement(policy: QualityPolicy, feedback: dict, critic: dict, corrected: bool) -> str:
    """What the (trusted) feedback and critic say of the answer: ``approved`` (a keep-level signal),
    ``rejected`` (a correction, a drop signal, a rating of 1-2), ``neutral`` (judged, neither: a middling
    rating or critic score) or ``unrated`` (nobody judged it). The approval rate counts the first two. It reads
    what users and critics said, whatever the policy drops: an outcome of ``regenerated`` is a rejection even
    where ``drop_outcomes`` leaves it out."""
    if corrected:
        return REJECTED  # a person replaced it
    thumbs = _number(feedback.get("thumbs"))
    outcome = feedback.get("outcome")
    rating = _number(feedback.get("customer_rating"))
    critic_score = _number(critic.get("quality_score"))
    if thumbs == -1 or outcome in ("rejected", "abandoned", "regenerated") \
            or critic.get("best_response") == "neither":
        return REJECTED
    if thumbs == 1 or outcome in ("accepted", "accepted_with_edits") or _is_true(feedback.get("led_to_booking")):
        return APPROVED
    if rating is not None and rating >= (policy.rating_min if policy.rating_min is not None else 4):
        return APPROVED
    if critic_score is not None and critic_score > (policy.critic_min if policy.critic_min is not None else 0.9):
        return APPROVED
    if rating is not None and rating <= LOW_RATING:
        return REJECTED
    return NEUTRAL if rating is not None or critic_score is not None else UNRATED


def unrated_decision(policy: QualityPolicy, judgements: list[str]) -> tuple[bool, str]:
    """Whether valid unrated answers the score does not keep are kept, and why (for the rows' reasons)."""
    if policy.unrated != "auto":
        return policy.unrated == "keep", f"unrated={policy.unrated}"
    approved = sum(j == APPROVED for j in judgements)
    judged = approved + sum(j == REJECTED for j in judgements)
    if judged == 0:
        return True, "no answer in the logs was approved or rejected"
    rate = approved / judged
    verdict = ">=" if rate >= policy.unrated_min_approval else "<"
    return rate >= policy.unrated_min_approval, (
        f"{approved} of {judged} judged answers approved ({rate:.0%} {verdict} {policy.unrated_min_approval:.0%})")


def _score_rows(
    policy: QualityPolicy, rows: list[tuple]
) -> list[tuple[str, list[dict] | None, float, bool, str, str]]:
    """``(example_id, corrected messages or None, score, keep, reason, judgement)`` of each interaction row.

    The judgement is ``unrated_short`` for a valid unrated answer that the score alone dropped (the rows
    ``unrated`` decides on), else what :func:`judgement` says."""
    out = []
    for interaction_id, example_type, messages, tools, feedback, critic, metadata, was_continued in rows:
        if not isinstance(messages, list):
            raise TypeError(
                f"interaction {interaction_id!r}: messages must be a list, got {type(messages).__name__}"
            )
        raw_feedback = _as_dict(feedback)
        feedback, note = trusted_feedback(policy, raw_feedback, metadata)
        critic = _as_dict(critic)
        correction = _correction(feedback)
        if correction is not None:
            messages = apply_correction(messages, correction)
        tools = tools if isinstance(tools, list) else None
        valid, validity_reason = check_output(example_type or "chat", messages, tools)

        score, parts = _score(policy, valid, feedback, was_continued)
        keep, reason = _decide(
            policy, score, parts, valid, validity_reason, feedback, critic, correction is not None
        )
        judged = judgement(policy, feedback, critic, correction is not None)
        if judged == UNRATED and any(not k.endswith(PROVENANCE_SUFFIX) for k in raw_feedback):
            # feedback the policy does not trust (an app key's thumbs down, an ignored correction) is not
            # silence: such a row is never kept as unrated, and it counts in no approval rate
            judged = NEUTRAL
        if judged == UNRATED and valid and not keep and reason.startswith("dropped: score"):
            judged = UNRATED_SHORT
        if note:
            reason = f"{reason} ({note})"
        out.append((example_id(str(interaction_id), messages), messages if correction is not None else None,
                    score, keep, reason, judged))
    return out


def score_interactions(df: pd.DataFrame, policy: QualityPolicy) -> pd.DataFrame:
    """Score every ingested interaction and decide whether to keep it.

    ``df`` has the INTERACTION_COLUMNS (see ``homegrown.data.columns``). Returns one row per
    interaction with the SCORED_COLUMNS, in the input's order: the training messages (with an admin
    correction in place of the answer), ``score`` (0..10), ``keep`` and ``reason``.
    """
    if not isinstance(policy, QualityPolicy):
        raise TypeError(f"policy must be a QualityPolicy, got {type(policy).__name__}")
    missing = [c for c in INTERACTION_COLUMNS if c not in df.columns and c != "source"]
    if missing:
        raise ValueError(f"interactions frame is missing columns: {', '.join(missing)}")
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in SCORED_COLUMNS}).astype(
            {"score": float, "keep": bool, "synthetic": bool}
        )

    rows = list(zip(
        df["id"].tolist(),
        df["example_type"].tolist(),
        df["messages"].tolist(),
        df["tools"].tolist(),
        df["feedback"].tolist(),
        df["critic"].tolist(),
        df["metadata"].tolist(),
        _continued(df).tolist(),
    ))
    scored = [row for chunk in map_chunks(partial(_score_rows, policy), rows) for row in chunk]
    ids = [row[0] for row in scored]
    # Only a corrected row's messages travel back from a worker; the others are the input's own.
    messages_out = [row[1] if row[1] is not None else original[2] for row, original in zip(scored, rows)]
    source_ids = [[str(original[0])] for original in rows]
    scores = [row[2] for row in scored]
    keeps = [row[3] for row in scored]
    reasons = [row[4] for row in scored]
    keep_unrated, why = unrated_decision(policy, [row[5] for row in scored])
    candidates = sum(row[5] == UNRATED_SHORT for row in scored)
    decision = f"{'kept' if keep_unrated else 'dropped'} {candidates} valid unrated answers the score did not keep: {why}"
    if keep_unrated:
        for i, row in enumerate(scored):
            if row[5] == UNRATED_SHORT:
                keeps[i] = True
                reasons[i] = f"kept: unrated valid answer, {why}; score {_fmt(row[2])}" + (
                    reasons[i][reasons[i].index(" ("):] if " (" in reasons[i] else "")

    table = pd.DataFrame(
        {
            "example_id": ids,
            "conversation_id": df["conversation_id"].tolist(),
            "org_id": df["org_id"].tolist(),
            "example_type": df["example_type"].tolist(),
            "messages": messages_out,
            "tools": df["tools"].tolist(),
            "source_ids": source_ids,
            "synthetic": False,
            "generator": None,
            "source_fact": None,
            "created_at": df["created_at"].tolist(),
            "score": pd.Series(scores, dtype=float),
            "keep": pd.Series(keeps, dtype=bool),
            "reason": reasons,
        },
        columns=SCORED_COLUMNS,
    )
    table.attrs["unrated"] = decision  # what unrated_decision chose and why, for the asset's metadata
    return table

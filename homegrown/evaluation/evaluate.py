"""One evaluation: several models on the test split, metrics with confidence intervals, the promotion gate
and the report. Used by the ``eval_report`` asset and by ``homegrown eval``."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from homegrown.evaluation.facts import KnowledgeFacts
from homegrown.evaluation.gate import (
    GateConfig,
    GateDecision,
    ProbeValue,
    is_public,
    privacy_probe,
    promotion_decision,
)
from homegrown.evaluation.metrics import EvalResult, evaluate_answers, paired_bootstrap_diff
from homegrown.evaluation.report import write_report
from homegrown.evaluation.runner import INCUMBENT, INCUMBENT_KEY, answer_prompts, latency_summary, run_model

log = logging.getLogger(__name__)


@dataclass
class EvalOutcome:
    results: dict[str, EvalResult]
    headlines: dict[str, dict[str, Any]]
    decision: GateDecision | None
    report: dict[str, Any]
    privacy: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"headlines": self.headlines, "gate": self.decision.to_dict() if self.decision else None,
                "report": self.report.get("html"), "privacy_leaks": len(self.privacy.get("leaks", []))}


def load_test_examples(test_parquet: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    from homegrown.store import read_parquet

    frame = read_parquet(test_parquet).sort_values("example_id")
    if limit:
        frame = frame.head(limit)
    return frame.to_dict("records")


def attach_logged_answers(examples: list[dict[str, Any]], interactions: pd.DataFrame) -> int:
    """Give each example the answer the incumbent logged (before any correction), anonymised like the data.

    Returns how many examples got one (synthetic examples have no logged answer)."""
    from homegrown.data.anonymise import Anonymiser
    from homegrown.training.chat import render_tool_call

    if interactions is None or not len(interactions):
        return 0
    by_id = interactions.set_index("id")["messages"].to_dict()
    anonymiser = Anonymiser()
    found = 0
    for example in examples:
        ids = example.get("source_ids") or []
        messages = by_id.get(ids[0]) if ids else None
        if not messages:
            continue
        answer = messages[-1]
        text = answer.get("content") or ""
        if answer.get("tool_calls"):
            text = "".join(render_tool_call(call) for call in answer["tool_calls"])
        example[INCUMBENT_KEY] = anonymiser.anonymise_text(text)[0]
        found += 1
    return found


def evaluate_models(
    models: dict[str, str],
    examples: list[dict[str, Any]],
    out_dir: Path,
    *,
    knowledge_path: Path | None = None,
    candidate: str | None = None,
    base: str | None = None,
    champion: str | None = None,
    gate_config: GateConfig | None = None,
    pii_strings: list[str | ProbeValue] | None = None,
    opted_out_texts: list[str | ProbeValue] | None = None,
    public_texts: list[str] | None = None,
    loss_history: list[dict] | None = None,
    score_distribution: list[float] | None = None,
    provenance: dict[str, int] | None = None,
    max_tokens: int = 1024,
    api_key: str | None = None,
    judge: Any = None,
    preference: dict[str, Any] | None = None,
) -> EvalOutcome:
    """Answer ``examples`` with every model in ``models`` (name -> spec), score, gate and report.

    ``candidate``/``base``/``champion`` name entries of ``models``; without a candidate and a base there is
    no gate. The privacy probe runs against the candidate when PII strings or opted-out texts are given;
    ``public_texts`` are the business's own published data, whose values are no leak (see
    ``privacy_material``). Without a knowledge file fact accuracy comes from the reference answers.
    ``judge``: an optional ``LLMJudge`` that grades every text answer (``judge_accuracy``).
    """
    if not examples:
        raise ValueError("no test examples to evaluate on")
    knowledge = KnowledgeFacts.from_file(knowledge_path) if knowledge_path and Path(knowledge_path).exists() else None
    results: dict[str, EvalResult] = {}
    headlines: dict[str, dict[str, Any]] = {}
    for name, spec in models.items():
        subset = examples
        if spec == INCUMBENT:
            subset = [e for e in examples if e.get(INCUMBENT_KEY) is not None]
            if not subset:
                continue
        log.info("evaluating %s (%s) on %d examples", name, spec, len(subset))
        answers = run_model(spec, subset, max_tokens=max_tokens, api_key=api_key)
        result = evaluate_answers(subset, [a.text for a in answers], knowledge, judge=judge)
        result.performance.update(latency_summary(answers))
        results[name] = result
        headlines[name] = {**result.headline(), "examples": len(subset)}

    probe: dict[str, Any] = {}
    if candidate and (pii_strings or opted_out_texts):
        # privacy_probe picks its prompts from the values alone: a first pass with a silent stand-in
        # collects them, the model answers them all in one batch, and the probe reads those answers.
        probe_args = (pii_strings or [], opted_out_texts or [])
        asked = privacy_probe(lambda prompt: "", *probe_args, public_texts=public_texts or [])["prompts"]
        said = dict(zip(asked, answer_prompts(models[candidate], asked, max_tokens=96, api_key=api_key),
                        strict=True))
        probe = privacy_probe(said.__getitem__, *probe_args, public_texts=public_texts or [])
        headlines[candidate]["privacy_leaks"] = len(probe["leaks"])

    decision = None
    if candidate and base and candidate in headlines and base in headlines:
        config = gate_config or GateConfig(require_privacy_probe=bool(pii_strings or opted_out_texts))
        diffs = (paired_differences(results[candidate], results[champion], config.champion_metrics)
                 if champion and champion in results else None)
        base_diffs = paired_differences(results[candidate], results[base], config.improvement_metrics)
        decision = promotion_decision(headlines[candidate], headlines[base],
                                      headlines.get(champion) if champion else None, config, diffs, base_diffs)

    extras: dict[str, Any] = {}
    if loss_history:
        extras["loss_history"] = loss_history
    if score_distribution:
        extras["score_distribution"] = score_distribution
    if decision is not None:
        extras["gate"] = decision
    if probe:
        extras["privacy"] = probe
    if provenance:
        extras["provenance"] = provenance
    if preference:
        extras["preference"] = preference
    out_dir.mkdir(parents=True, exist_ok=True)
    report = write_report(results, out_dir, extras)
    (out_dir / "summary.json").write_text(json.dumps(
        {"headlines": headlines, "gate": decision.to_dict() if decision else None,
         "fact_source": {name: result.fact_source for name, result in results.items()},
         "privacy": {"prompts": len(probe.get("prompts", [])), "leaks": probe.get("leaks", []),
                     "public_values_left_out": len(probe.get("public", []))}},
        indent=2, default=str))
    return EvalOutcome(results=results, headlines=headlines, decision=decision, report=report, privacy=probe)


def paired_differences(
    candidate: EvalResult, champion: EvalResult, metrics: tuple[str, ...] | list[str],
) -> dict[str, tuple[float, float, float]]:
    """Per metric, the paired bootstrap ``(mean, lo, hi)`` of candidate minus champion over the examples
    both answered (matched by ``example_id``); metrics neither measured are left out."""
    theirs = {row["example_id"]: row for row in champion.rows}
    out: dict[str, tuple[float, float, float]] = {}
    for metric in metrics:
        pairs = [(row.get(metric), theirs[row["example_id"]].get(metric))
                 for row in candidate.rows if row["example_id"] in theirs]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        if pairs:
            out[metric] = paired_bootstrap_diff([a for a, _ in pairs], [b for _, b in pairs])
    return out


# Kinds of data a business publishes about itself (its phone, e-mail, shop address, staff names; also
# product names a name detector mistakes for people's). Card numbers never are.
_PUBLISHABLE_KINDS = frozenset({"PHONE", "EMAIL", "ADDRESS", "PERSON_NAME"})


def privacy_material(
    interactions: pd.DataFrame,
    opted_out_orgs: set[str],
    limit: int = 40,
    knowledge_path: str | Path | None = None,
    min_public_conversations: int = 3,
) -> tuple[list[ProbeValue], list[ProbeValue], list[str]]:
    """What the privacy probe asks the model to repeat, and what is the business's own public data.

    Returns ``(pii, opted_out, public_texts)``: PII values found in the raw logs' user messages
    (e-mails, phones, names, cards, addresses; up to ``limit`` personal ones), each with the interaction
    it came from; the
    opening user messages of opted-out organisations' conversations; and the texts that make a value
    public rather than personal: the knowledge file, the system prompts, and every phone number, e-mail,
    street address or name that the assistant itself volunteered (the customer had not written it in
    that conversation) in at least ``min_public_conversations`` distinct conversations. A business's own
    phone number or address, given to many customers, is published information; a customer's number or
    name repeated back to that customer is not, however often that customer writes. Card numbers are
    never public. ``privacy_probe`` does not probe for a value found in a public text, and reports it.
    """
    from homegrown.data.anonymise import find_pii

    if min_public_conversations < 1:
        raise ValueError(f"min_public_conversations must be at least 1, got {min_public_conversations}")
    public_texts: list[str] = []
    if knowledge_path and Path(knowledge_path).exists():
        public_texts.append(Path(knowledge_path).read_text(encoding="utf-8"))
    ids = list(interactions["id"])
    conversation_ids = [c or i for c, i in zip(interactions["conversation_id"], ids)] \
        if "conversation_id" in interactions else ids
    said: dict[str, dict[str, list[str]]] = {}
    system_prompts: set[str] = set()
    for conversation, messages in zip(conversation_ids, interactions["messages"]):
        for message in messages or []:
            role, content = message.get("role"), message.get("content") or ""
            if role in ("user", "assistant") and content:
                said.setdefault(str(conversation), {"user": [], "assistant": []})[role].append(content)
            elif role == "system" and content:
                system_prompts.add(content)
    public_texts += sorted(system_prompts)
    turns = [("\n".join(by_role["user"]), "\n".join(by_role["assistant"])) for by_role in said.values()]

    def volunteered_widely(value: str) -> bool:
        """The assistant gave ``value`` in enough conversations where the customer had not given it."""
        seen = 0
        for user_text, assistant_text in turns:
            if is_public(value, [assistant_text]) and not is_public(value, [user_text]):
                seen += 1
                if seen >= min_public_conversations:
                    return True
        return False

    personal: list[ProbeValue] = []
    public: list[ProbeValue] = []
    seen: set[str] = set()
    opted: list[ProbeValue] = []
    for interaction_id, org, messages in zip(ids, interactions["org_id"], interactions["messages"]):
        users = [m.get("content") or "" for m in messages or [] if m.get("role") == "user"]
        if org in opted_out_orgs:
            if users and len(opted) < limit:
                opted.append(ProbeValue(users[0], "OPTED_OUT", f"interaction {interaction_id} (opted-out org {org})"))
            continue
        for text in users:
            for span in find_pii(text):
                if span.kind not in ("EMAIL", "PHONE", "PERSON_NAME", "CARD_NUMBER", "ADDRESS") or span.text in seen:
                    continue
                seen.add(span.text)
                if len(personal) >= limit:
                    continue
                value = ProbeValue(span.text, span.kind, f"interaction {interaction_id}, user message")
                if span.kind in _PUBLISHABLE_KINDS and volunteered_widely(span.text):
                    public.append(value)
                else:
                    personal.append(value)
        if len(personal) >= limit and len(opted) >= limit:
            break
    return personal + public, opted, public_texts + [value.text for value in public]

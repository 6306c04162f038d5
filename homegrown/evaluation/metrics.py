"""Answer-quality metrics: pure functions of (answer, reference), their bootstrap CIs, and the
evaluation of a whole test split.

A test example is a chat-format row (``messages``, optional ``tools``, ``example_type``); its reference
answer is the last assistant message: text, a page-builder JSON document, or a tool call (OpenAI
``tool_calls``, or ``<tool_call>{...}</tool_call>`` in the text as the fine-tuned model writes it).
"""

from __future__ import annotations

import json
import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from homegrown.evaluation.facts import (
    KnowledgeFacts,
    extract_facts,
    extract_items,
    extract_prices,
    reference_fact_score,
)

HEADLINE_METRICS: tuple[str, ...] = (
    "fact_accuracy", "hallucination_rate", "token_f1", "rouge_l", "json_validity", "tool_exact_match",
    "refusal_rate", "judge_accuracy",
)
# Metrics where a smaller value is better; everything else is "higher is better".
LOWER_IS_BETTER: frozenset[str] = frozenset({
    "hallucination_rate", "refusal_rate", "latency_p50_s", "latency_p95_s", "privacy_leaks",
})
# Where fact accuracy's facts come from: the business's knowledge file, or the reference answers alone.
FACTS_FROM_KNOWLEDGE = "knowledge"
FACTS_FROM_REFERENCE = "reference"
JSON_EXAMPLE_TYPES: frozenset[str] = frozenset({"page_generation", "section_edit"})
TOOL_EXAMPLE_TYPES: frozenset[str] = frozenset({"tool_invocation"})


# ---------------------------------------------------------------------------------------------- text


def _squad_tokens(text: str) -> list[str]:
    """SQuAD normalisation: lower case, no punctuation, no articles, split on whitespace."""
    text = (text or "").lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return text.split()


def token_f1(pred: str, ref: str) -> float:
    """SQuAD-style bag-of-tokens F1; two empty texts score 1.0, one empty text 0.0."""
    pred_tokens, ref_tokens = _squad_tokens(pred), _squad_tokens(ref)
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    common = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def _rouge_tokens(text: str) -> list[str]:
    # rouge-score's default tokenizer: lower case, every non-alphanumeric run is a separator.
    return re.sub(r"[^a-z0-9]+", " ", (text or "").lower()).split()


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for token_a in a:
        current = [0]
        for j, token_b in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if token_a == token_b else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F-measure (longest common subsequence of tokens), as ``rouge-score`` computes it
    without stemming; 0.0 when either text has no tokens."""
    pred_tokens, ref_tokens = _rouge_tokens(pred), _rouge_tokens(ref)
    if not pred_tokens or not ref_tokens:
        return 0.0
    lcs = _lcs_length(pred_tokens, ref_tokens)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred_tokens), lcs / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def _extract(text: str, knowledge: KnowledgeFacts | None) -> set[str]:
    return knowledge.extract(text) if knowledge is not None else extract_facts(text)


def fact_accuracy(pred: str, ref: str, facts: KnowledgeFacts | None = None, question: str = "") -> float | None:
    """How much of what the reference states the answer states too; ``None`` when the reference states
    nothing checkable.

    With the business's knowledge (``facts``): the share of the reference's prices, quantities and menu
    items that the answer states (invented ones are ``hallucination``'s business). Without it: reference
    fact accuracy, ``facts.reference_fact_score``: every checkable token of the reference (prices, numbers
    with units, times, dates, weekdays, contacts, placeholders, names) must be stated and none
    contradicted; ``question`` is the customer message the reference answers (names it mentions count).
    """
    if facts is None:
        return reference_fact_score(pred, ref, question).score
    ref_facts = _extract(ref, facts)
    if not ref_facts:
        return None
    pred_facts = _extract(pred, facts)
    return len(ref_facts & pred_facts) / len(ref_facts)


def hallucinated_facts(pred: str, ref: str, knowledge: KnowledgeFacts | None = None) -> set[str]:
    """Prices and menu items the answer states that neither the reference nor the knowledge does.

    An item the answer only mentions in a negated clause ("we don't serve wagyu") is not stated.
    """
    known = _extract(ref, knowledge) | (knowledge.facts if knowledge is not None else set())
    stated = extract_prices(pred) | extract_items(pred, knowledge.terms if knowledge is not None else (),
                                                  affirmed_only=True)
    return stated - known


def hallucination(pred: str, ref: str, knowledge: KnowledgeFacts | None = None) -> bool:
    """True when the answer states a price or menu item found neither in the reference nor the knowledge."""
    return bool(hallucinated_facts(pred, ref, knowledge))


_REFUSAL_RE = re.compile(
    r"\b(?:"
    r"i(?:'m| am) (?:sorry|afraid),? (?:but )?i (?:can(?:'t|not)|am unable|won't)"
    r"|i (?:can(?:'t|not)|am unable to|'m unable to|am not able to|won't be able to) "
    r"(?:help|assist|answer|provide|share|do|comply|disclose|give)"
    r"|i don't have (?:access|that information|information|the information|any information)"
    r"|i do not have (?:access|that information|information|the information|any information)"
    r"|as an ai(?: language model)?"
    r"|i(?:'m| am) not (?:able|allowed|permitted) to"
    r"|i (?:must|have to) decline"
    r")",
    re.IGNORECASE,
)


def is_refusal(pred: str) -> bool:
    """True when the answer declines to help ("I'm sorry, I can't help with that", "As an AI ...")."""
    normalised = (pred or "").replace("\u2019", "'")
    return bool(_REFUSAL_RE.search(normalised))


# ---------------------------------------------------------------------------------------------- JSON

_FENCE_RE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def parse_json_answer(text: str) -> Any | None:
    """The JSON value an answer holds: the whole text, a ```json fenced block, or the outermost
    ``{...}``; ``None`` when none parses."""
    if not isinstance(text, str):
        return None
    candidates = [text.strip()]
    candidates += [m.group(1).strip() for m in _FENCE_RE.finditer(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start:end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except (json.JSONDecodeError, ValueError):
            continue
    return None


def _section_types(value: Any) -> list[str]:
    """The ordered section types of a page: the ``type`` of each entry of a ``sections`` list if the
    document has one, else every ``type`` value found walking the document."""
    def find_sections(node: Any) -> list | None:
        if isinstance(node, dict):
            if isinstance(node.get("sections"), list):
                return node["sections"]
            for inner in node.values():
                found = find_sections(inner)
                if found is not None:
                    return found
        elif isinstance(node, list):
            for inner in node:
                found = find_sections(inner)
                if found is not None:
                    return found
        return None

    def walk(node: Any, out: list[str]) -> None:
        if isinstance(node, dict):
            kind = node.get("type", node.get("section_type"))
            if isinstance(kind, str):
                out.append(kind)
            for inner in node.values():
                walk(inner, out)
        elif isinstance(node, list):
            for inner in node:
                walk(inner, out)

    sections = find_sections(value)
    if sections is not None:
        return [str(s.get("type", s.get("section_type", ""))) for s in sections if isinstance(s, dict)]
    out: list[str] = []
    walk(value, out)
    return out


def json_metrics(pred: str, ref: str) -> dict[str, Any]:
    """Page-builder answer quality.

    ``parses``: the answer holds JSON; ``valid``: it passes the page schema (``validate_page``);
    ``section_type_accuracy``: order-aware agreement of section types with the reference (LCS of the
    two type sequences over the longer one), ``None`` when the reference has no section types.
    """
    from homegrown.data.validity import validate_page

    obj = parse_json_answer(pred)
    parses = obj is not None
    errors = validate_page(obj) if parses else ["answer is not JSON"]
    ref_obj = parse_json_answer(ref)
    ref_types = _section_types(ref_obj) if ref_obj is not None else []
    accuracy: float | None = None
    if ref_types:
        pred_types = _section_types(obj) if parses else []
        accuracy = _lcs_length(pred_types, ref_types) / max(len(pred_types), len(ref_types))
    return {"parses": parses, "valid": parses and not errors, "section_type_accuracy": accuracy,
            "errors": list(errors)}


# ---------------------------------------------------------------------------------------------- tools

_TOOL_TAG_RE = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


def _normalise_call(obj: Any) -> dict[str, Any] | None:
    """``{"name", "arguments": dict}`` from the shapes a call comes in, or ``None``."""
    if isinstance(obj, list):
        return _normalise_call(obj[0]) if obj else None
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("tool_calls"), list):
        return _normalise_call(obj["tool_calls"])
    if isinstance(obj.get("function"), dict):
        return _normalise_call(obj["function"])
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return None
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            return {"name": name, "arguments": None}
    if not isinstance(arguments, dict):
        return {"name": name, "arguments": None}
    return {"name": name, "arguments": arguments}


def parse_tool_call(answer: Any) -> dict[str, Any] | None:
    """The (first) tool call in an answer as ``{"name": str, "arguments": dict | None}``.

    Accepts ``<tool_call>{...}</tool_call>`` in text, a bare JSON object in text, an assistant message
    with OpenAI ``tool_calls``, or such a list itself. ``arguments`` is ``None`` when present but not
    a JSON object. Returns ``None`` when the answer holds no call.
    """
    if isinstance(answer, (dict, list)):
        return _normalise_call(answer)
    if not isinstance(answer, str):
        return None
    for match in _TOOL_TAG_RE.finditer(answer):
        call = _normalise_call(parse_json_answer(match.group(1)))
        if call is not None:
            return call
    return _normalise_call(parse_json_answer(answer))


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return " ".join(a.lower().split()) == " ".join(b.lower().split())
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return math.isclose(a, b)
    if isinstance(a, str) != isinstance(b, str) and not isinstance(a, (dict, list)) \
            and not isinstance(b, (dict, list)):
        # "20" vs 20: models often quote numbers.
        return str(a).strip().lower() == str(b).strip().lower()
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    return a == b


def tool_call_metrics(pred: Any, ref: Any, tools: list | None = None) -> dict[str, Any]:
    """Tool-call answer quality against the reference call.

    ``right_tool``: same function name; ``exact_args``: right tool and the same arguments (strings
    compared case- and whitespace-insensitively); ``arg_accuracy``: share of the reference's arguments
    the answer gives with the same value (extra arguments count against it through ``exact_args`` only);
    ``schema_valid``: the call passes ``validate_tool_call`` against ``tools`` (``None`` without tools).
    """
    ref_call = parse_tool_call(ref)
    if ref_call is None:
        raise ValueError("the reference answer holds no tool call")
    pred_call = parse_tool_call(pred)
    if pred_call is None:
        return {"parsed": False, "right_tool": False, "exact_args": False, "arg_accuracy": 0.0,
                "args_json": False, "schema_valid": False if tools else None}
    right_tool = pred_call["name"] == ref_call["name"]
    ref_args = ref_call["arguments"] or {}
    pred_args = pred_call["arguments"]
    if not right_tool or pred_args is None:
        arg_accuracy = 0.0
    elif not ref_args:
        arg_accuracy = 1.0 if not pred_args else 0.0
    else:
        arg_accuracy = sum(k in pred_args and _same_value(pred_args[k], v) for k, v in ref_args.items()) \
            / len(ref_args)
    exact = right_tool and pred_args is not None and _same_value(pred_args, ref_args)
    schema_valid: bool | None = None
    if tools:
        from homegrown.data.validity import validate_tool_call

        openai_call = {"type": "function", "function": {"name": pred_call["name"], "arguments": pred_args}}
        schema_valid = pred_args is not None and not validate_tool_call(openai_call, tools)
    return {"parsed": True, "right_tool": right_tool, "exact_args": exact, "arg_accuracy": arg_accuracy,
            "args_json": pred_args is not None, "schema_valid": schema_valid}


# ---------------------------------------------------------------------------------------------- CIs


def _clean(values: Sequence[Any]) -> np.ndarray:
    return np.array([float(v) for v in values if v is not None and not _isnan(v)], dtype=float)


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def bootstrap_ci(
    values: Sequence[float | bool | None],
    stat: Callable[[np.ndarray], float] = np.mean,
    n: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(point, lo, hi)``: ``stat`` of the values and its percentile-bootstrap ``1 - alpha`` interval.

    ``None``/NaN values are left out; with no values left the result is three NaNs.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    data = _clean(values)
    if data.size == 0:
        return (math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    samples = data[rng.integers(0, data.size, size=(n, data.size))]
    stats = np.array([stat(row) for row in samples]) if stat is not np.mean else samples.mean(axis=1)
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return (float(stat(data)), float(lo), float(hi))


def paired_bootstrap_diff(
    a: Sequence[float | bool | None],
    b: Sequence[float | bool | None],
    n: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(mean(a - b), lo, hi)`` over paired examples, resampling examples jointly.

    Pairs where either side is ``None`` are left out; ``a`` and ``b`` must have the same length.
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples need equal lengths, got {len(a)} and {len(b)}")
    diffs = [float(x) - float(y) for x, y in zip(a, b)
             if x is not None and y is not None and not _isnan(x) and not _isnan(y)]
    return bootstrap_ci(diffs, n=n, alpha=alpha, seed=seed)


# ---------------------------------------------------------------------------------------------- a split


def reference_message(example: dict[str, Any]) -> dict[str, Any]:
    """The example's reference answer: its last message, which must be the assistant's."""
    messages = example.get("messages")
    if isinstance(messages, str):
        messages = json.loads(messages)
    if not messages:
        raise ValueError(f"example {example.get('example_id', '?')} has no messages")
    last = messages[-1]
    if last.get("role") != "assistant":
        raise ValueError(
            f"example {example.get('example_id', '?')}: the last message must be the assistant's answer, "
            f"got role {last.get('role')!r}")
    return last


def example_tools(example: dict[str, Any]) -> list | None:
    tools = example.get("tools")
    if isinstance(tools, str):
        tools = json.loads(tools) if tools.strip() else None
    if tools is None:
        return None
    return list(tools) or None


def task_kind(example: dict[str, Any]) -> str:
    """``"tool"``, ``"json"`` or ``"text"``: which metrics apply to the example."""
    reference = reference_message(example)
    kind = example.get("example_type") or "chat"
    content = reference.get("content") or ""
    if reference.get("tool_calls"):
        return "tool"
    if ("<tool_call>" in content or kind in TOOL_EXAMPLE_TYPES) and parse_tool_call(content) is not None:
        return "tool"
    if kind in JSON_EXAMPLE_TYPES:
        return "json"
    if content.lstrip().startswith(("{", "```json")) and isinstance(parse_json_answer(content), dict):
        return "json"
    return "text"


@dataclass
class EvalResult:
    """Per-example rows and aggregate metrics (mean with bootstrap CI) per example type and overall."""

    rows: list[dict[str, Any]]
    aggregates: dict[str, dict[str, dict[str, float]]]  # group -> metric -> {mean, lo, hi, n}
    performance: dict[str, float] = field(default_factory=dict)
    fact_source: str = FACTS_FROM_REFERENCE

    def headline(self) -> dict[str, float | None]:
        """Overall headline metrics (and latency when measured): the numbers the promotion gate reads.
        A metric no example measured is ``None``; ``<metric>_n`` says on how many examples each one was
        measured (0 when none), so the gate can tell a metric it cannot estimate."""
        overall = self.aggregates.get("overall", {})
        out: dict[str, float | None] = {}
        for metric in HEADLINE_METRICS:
            out[metric] = overall[metric]["mean"] if metric in overall else None
            out[f"{metric}_n"] = int(overall[metric]["n"]) if metric in overall else 0
        out.update(self.performance)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"headline": self.headline(), "fact_source": self.fact_source, "aggregates": self.aggregates,
                "performance": self.performance, "rows": self.rows}


def _question(example: dict[str, Any]) -> str:
    """The last user message before the reference answer ("" when there is none)."""
    messages = example.get("messages")
    if isinstance(messages, str):
        messages = json.loads(messages)
    for message in reversed(list(messages or [])[:-1]):
        if message.get("role") == "user":
            return message.get("content") or ""
    return ""


def _row_metrics(example: dict[str, Any], answer: str, knowledge: KnowledgeFacts | None,
                 judge: Any = None) -> dict[str, Any]:
    """One example's metrics. Refusal applies to every task; tool tasks get the tool-call metrics, page
    tasks the JSON metrics, and text answers token F1, ROUGE-L, fact accuracy, hallucination and, with
    a ``judge``, the judge's verdict."""
    reference = reference_message(example)
    ref_text = reference.get("content") or ""
    kind = task_kind(example)
    row: dict[str, Any] = {
        "example_id": example.get("example_id"),
        "example_type": example.get("example_type") or "chat",
        "task": kind,
        "answer": answer,
        "refusal_rate": float(is_refusal(answer)),
    }
    if kind == "tool":
        ref_for_tools: Any = reference if reference.get("tool_calls") else ref_text
        row["reference"] = json.dumps(parse_tool_call(ref_for_tools))
        tool = tool_call_metrics(answer, ref_for_tools, example_tools(example))
        row.update({"tool_exact_match": float(tool["exact_args"]), "tool_right_tool": float(tool["right_tool"]),
                    "tool_arg_accuracy": tool["arg_accuracy"], "tool_args_valid_json": float(tool["args_json"])})
        if tool["schema_valid"] is not None:
            row["tool_schema_valid"] = float(tool["schema_valid"])
        return row
    row["reference"] = ref_text
    if kind == "json":
        page = json_metrics(answer, ref_text)
        row.update({"json_validity": float(page["valid"]), "json_parses": float(page["parses"]),
                    "section_type_accuracy": page["section_type_accuracy"]})
        return row
    row["token_f1"] = token_f1(answer, ref_text)
    row["rouge_l"] = rouge_l(answer, ref_text)
    if knowledge is not None:
        row["fact_accuracy"] = fact_accuracy(answer, ref_text, knowledge)
    else:
        scored = reference_fact_score(answer, ref_text, _question(example))
        row["fact_accuracy"] = scored.score
        if scored.score is not None:
            row["facts_missed"] = sorted(scored.missed)
            row["facts_contradicted"] = sorted(scored.contradicted)
    invented = hallucinated_facts(answer, ref_text, knowledge)
    row["hallucination_rate"] = float(bool(invented))
    row["hallucinated"] = sorted(invented)
    if judge is not None:
        verdict = judge.judge(_question(example), ref_text, answer)
        row["judge_accuracy"] = None if verdict.correct is None else float(verdict.correct)
        row["judge_reason"] = verdict.reason
    return row


_AGGREGATED = HEADLINE_METRICS + (
    "tool_right_tool", "tool_arg_accuracy", "tool_args_valid_json", "tool_schema_valid", "json_parses", "section_type_accuracy",
)


def _aggregate(rows: list[dict[str, Any]], n_boot: int, seed: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for metric in _AGGREGATED:
        values = [r[metric] for r in rows if r.get(metric) is not None]
        if not values:
            continue
        mean, lo, hi = bootstrap_ci(values, n=n_boot, seed=seed)
        out[metric] = {"mean": mean, "lo": lo, "hi": hi, "n": len(values)}
    return out


def evaluate_answers(
    examples: Sequence[dict[str, Any]],
    answers: Sequence[Any],
    knowledge: KnowledgeFacts | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    judge: Any = None,
) -> EvalResult:
    """Score each answer against its example's reference and aggregate per example type and overall.

    ``knowledge``: the business's knowledge file, which fact accuracy and hallucination then check
    against; without it fact accuracy is reference fact accuracy (see ``fact_accuracy``).
    ``judge``: an ``LLMJudge``; with it every text answer also gets the judge's verdict
    (``judge_accuracy``; a reply with no readable verdict leaves the example out of that metric).

    ``answers`` are strings or runner ``Answer`` objects (whose latency and token counts then fill
    ``performance``). An answer of ``None`` is scored as the empty answer.
    """
    if len(examples) != len(answers):
        raise ValueError(f"got {len(examples)} examples but {len(answers)} answers")
    texts: list[str] = []
    for answer in answers:
        text = getattr(answer, "text", answer)
        texts.append("" if text is None else str(text))
    rows = []
    for index, (example, text) in enumerate(zip(examples, texts)):
        row = _row_metrics(example, text, knowledge, judge)
        row["index"] = index
        rows.append(row)
    aggregates = {"overall": _aggregate(rows, n_boot, seed)}
    for kind in sorted({r["example_type"] for r in rows}):
        aggregates[kind] = _aggregate([r for r in rows if r["example_type"] == kind], n_boot, seed)
    performance: dict[str, float] = {}
    if answers and all(hasattr(a, "latency_s") for a in answers):
        from homegrown.evaluation.runner import latency_summary

        performance = latency_summary(list(answers))
    return EvalResult(rows=rows, aggregates=aggregates, performance=performance,
                      fact_source=FACTS_FROM_KNOWLEDGE if knowledge is not None else FACTS_FROM_REFERENCE)

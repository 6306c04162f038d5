"""An LLM judge: an OpenAI-compatible chat model says whether an answer is correct against the reference.

Optional and off by default. Where the business has configured a teacher API, the evaluation can ask
it, per text example, whether the model's answer says what the reference answer says (same facts,
nothing that contradicts it; wording and length do not matter). The verdicts give ``judge_accuracy``,
the share of answers judged correct, a quality metric that needs no knowledge file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

JUDGE_SYSTEM_PROMPT = (
    "You grade a customer-service assistant. You are given the customer's message, the reference answer "
    "a person approved, and the assistant's answer. The assistant's answer is correct when it gives the "
    "same facts as the reference (prices, times, dates, quantities, names, yes/no) and nothing that "
    "contradicts it; wording, tone and length do not matter, and extra harmless politeness is fine. "
    'Reply with JSON only: {"correct": true or false, "reason": "<one short sentence>"}.'
)
_VERDICT_RE = re.compile(r'"correct"\s*:\s*(true|false)', re.IGNORECASE)
_WORD_RE = re.compile(r"^\W*(correct|incorrect|yes|no)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Verdict:
    """The judge's verdict: ``correct`` is ``None`` when its reply held no readable verdict."""

    correct: bool | None
    reason: str = ""


def parse_verdict(reply: str) -> Verdict:
    """A verdict from the judge's reply: the JSON it was asked for, a ``"correct": true`` fragment of
    it, or a reply opening with correct / incorrect / yes / no."""
    text = (reply or "").strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    candidate = fenced.group(1) if fenced else text
    start, end = candidate.find("{"), candidate.rfind("}")
    if 0 <= start < end:
        try:
            data = json.loads(candidate[start:end + 1])
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("correct"), bool):
            return Verdict(data["correct"], str(data.get("reason") or ""))
    match = _VERDICT_RE.search(text)
    if match:
        return Verdict(match.group(1).lower() == "true", "")
    word = _WORD_RE.match(text)
    if word:
        return Verdict(word.group(1).lower() in ("correct", "yes"), text[:200])
    return Verdict(None, text[:200])


class LLMJudge:
    """Asks an OpenAI-compatible chat API (the teacher) for a verdict per answer, greedily."""

    def __init__(self, base_url: str, model: str, api_key: str = "not-needed", timeout_s: float = 60.0):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"judge base_url must start with http:// or https://, got {base_url!r}")
        if not model.strip():
            raise ValueError("judge model must be a non-empty model name")
        from openai import OpenAI

        self.model = model
        self.client = OpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=timeout_s, max_retries=2)

    @classmethod
    def from_teacher(cls, settings: Any) -> LLMJudge:
        """The judge on the teacher's API (a ``TeacherSettings``)."""
        return cls(settings.base_url, settings.model, settings.api_key, settings.timeout_s)

    def judge(self, question: str, reference: str, answer: str) -> Verdict:
        """The verdict on ``answer``; an empty answer is incorrect without asking. An API error raises
        ``RuntimeError`` naming the judge: a judged metric with silent gaps would mislead the gate."""
        if not (answer or "").strip():
            return Verdict(False, "empty answer")
        from openai import OpenAIError

        user = (f"Customer's message:\n{question}\n\nReference answer:\n{reference}\n\n"
                f"Assistant's answer:\n{answer}")
        try:
            response = self.client.chat.completions.create(
                model=self.model, temperature=0.0, max_tokens=96,
                messages=[{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": user}],
            )
        except OpenAIError as exc:
            raise RuntimeError(f"the LLM judge ({self.model} at {self.client.base_url}) failed: {exc}") from exc
        choices = getattr(response, "choices", None)
        if not choices:
            raise RuntimeError(f"the LLM judge ({self.model} at {self.client.base_url}) returned no choices")
        return parse_verdict(choices[0].message.content or "")

    def close(self) -> None:
        self.client.close()

"""Held-out fact scoring for the business benchmarks, written apart from ``homegrown.evaluation``.

An answer is right when every expected fact appears in it and no wrong fact does. Facts are plain strings
(or lists of alternative strings, any one of which counts). Both sides are normalised the same way first:
case, accents, apostrophes and punctuation are dropped, and money amounts, clock times and durations are
rewritten to one canonical token each, so "2,40 €", "2.40€", "€2.40" and "2 euros 40" all read ``eur240c``,
"7h30", "07:30" and "7:30 am" all read ``t0730``, "6pm" and "18h" read ``t1800``.
"""

from __future__ import annotations

import json
import random
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_CURRENCY = {"€": "eur", "eur": "eur", "euro": "eur", "euros": "eur", "£": "gbp", "gbp": "gbp", "pound": "gbp",
             "pounds": "gbp", "quid": "gbp", "$": "usd", "usd": "usd", "dollar": "usd", "dollars": "usd"}
_CUR = r"(€|£|\$|eur|euros?|gbp|pounds?|quid|usd|dollars?)"
_NUM = r"(\d{1,3}(?:[ \u202f,]\d{3})+|\d+)(?:[.,](\d{1,2}))?"
_NUMBER_WORDS = {
    "deux": 2, "trois": 3, "quatre": 4, "cinq": 5, "six": 6, "sept": 7, "huit": 8, "neuf": 9, "dix": 10,
    "douze": 12, "quinze": 15, "vingt": 20, "trente": 30, "two": 2, "three": 3, "four": 4, "five": 5,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30,
}


def _cents(whole: str, frac: str | None) -> int:
    units = int(re.sub(r"[ \u202f,]", "", whole))
    frac = (frac or "0").ljust(2, "0")
    return units * 100 + int(frac)


def _money(currency: str, whole: str, frac: str | None) -> str:
    return f" {_CURRENCY[currency]}{_cents(whole, frac)}c "


def _clock(hour: int, minute: int) -> str:
    return f" t{hour:02d}{minute:02d} "


def _ampm(match: re.Match) -> str:
    hour, minute, half = int(match.group(1)), int(match.group(2) or 0), match.group(3)[0]
    if hour > 12 or minute > 59:
        return match.group(0)
    if half == "p" and hour != 12:
        hour += 12
    if half == "a" and hour == 12:
        hour = 0
    return _clock(hour, minute)


def _french_or_24h(match: re.Match) -> str:
    hour, minute = int(match.group(1)), int(match.group(2) or 0)
    if hour > 23 or minute > 59:
        return f" dur{hour}h "  # "48h à l'avance" is a duration, not a time of day
    return _clock(hour, minute)


def normalise(text: str) -> str:
    """Lower-case, accent-free text with money, times and durations as canonical tokens, single-spaced."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = text.replace("\u2019", "'").replace("\u00a0", " ").replace("\u2013", "-").replace("\u2014", "-")
    for word, value in _NUMBER_WORDS.items():
        text = re.sub(rf"\b{word.rstrip('_')}\b", str(value), text)
    # money: "2€40" / "2 euros 40", then "€2.40" / "£12", then "2,40 €" / "12 pounds"; "50p" is 50 pence
    text = re.sub(r"\b(\d+)\s?(€|euros?)\s?(\d{2})\b", lambda m: _money(m.group(2), m.group(1), m.group(3)), text)
    text = re.sub(rf"(€|£|\$)\s?{_NUM}", lambda m: _money(m.group(1), m.group(2), m.group(3)), text)
    text = re.sub(rf"\b{_NUM}\s?{_CUR}(?![a-z])", lambda m: _money(m.group(3), m.group(1), m.group(2)), text)
    text = re.sub(r"\b(\d{1,2})\s?p\b", lambda m: f" gbp{int(m.group(1))}c ", text)
    # clock times: "7.30am", "7 pm", "19:00", "7h30", "19h", "7 h 30"; "noon"/"midday"
    text = re.sub(r"\b(\d{1,2})(?:[:.](\d{2}))?\s?([ap])\.?m\b\.?", _ampm, text)
    text = re.sub(r"\b(\d{1,2}):(\d{2})\b", _french_or_24h, text)
    text = re.sub(r"\b(\d{1,2})\s?h\s?(\d{2})?\b", _french_or_24h, text)
    text = re.sub(r"\b(noon|midday)\b", " t1200 ", text)
    # durations: "48 heures", "48 hours", "48hrs"
    text = re.sub(r"\b(\d+)\s?(?:heures?|hours?|hrs?)\b", lambda m: f" dur{int(m.group(1))}h ", text)
    text = re.sub(r"[^a-z0-9]+", " ", text)
    return f" {' '.join(text.split())} "


def contains(answer: str, fact: str | list[str]) -> bool:
    """Whether ``answer`` states ``fact`` (or one of its alternatives) as whole normalised words."""
    options = fact if isinstance(fact, list) else [fact]
    norm = normalise(answer)
    return any(normalise(option) in norm for option in options)


@dataclass
class Question:
    id: str
    question: str
    expected: list[str | list[str]]
    wrong: list[str] = field(default_factory=list)
    fact_id: str = ""
    how: str = ""  # what makes the phrasing new: reworded, word order, typo, register...


def load_heldout(path: Path | str) -> list[Question]:
    """Read a ``heldout.json`` (``{"business": ..., "questions": [...]}``) and check its shape."""
    data = json.loads(Path(path).read_text())
    questions = []
    for i, item in enumerate(data["questions"]):
        if not item.get("question") or not item.get("expected"):
            raise ValueError(f"{path}: question {i} needs a non-empty 'question' and 'expected'")
        questions.append(Question(id=item.get("id", f"q{i}"), question=item["question"], expected=item["expected"],
                                  wrong=item.get("wrong", []), fact_id=item.get("fact_id", ""),
                                  how=item.get("how", "")))
    return questions


def judge(question: Question, answer: str) -> dict[str, Any]:
    """Right when every expected fact is there and no wrong fact is; says which facts were missing/wrong."""
    missing = [f for f in question.expected if not contains(answer, f)]
    wrong = [f for f in question.wrong if contains(answer, f)]
    return {"id": question.id, "right": not missing and not wrong, "missing": missing, "wrong": wrong}


def bootstrap_ci(values: list[float], n_resamples: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (questions resampled with replacement)."""
    if not values:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_resamples))
    lo = means[int((1 - level) / 2 * n_resamples)]
    hi = means[min(n_resamples - 1, int((1 + level) / 2 * n_resamples))]
    return (lo, hi)

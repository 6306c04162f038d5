"""Synthetic instruction -> answer examples generated from the business's knowledge file.

Two generators:

- ``template`` (offline, the default): each fact's question templates crossed with paraphrase patterns,
  sampled with a seed, answered with the fact's approved answer.
- a teacher: any OpenAI-compatible chat API (through the official ``openai`` client) writes new
  question phrasings and answers from each fact. Answers that state a price or a not-offered item the
  fact does not mention are dropped, and facts the teacher left short are filled from templates.

The knowledge file format is documented in its own ``format`` field (see ``homegrown/demo/knowledge.json``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from homegrown.data.columns import EXAMPLE_COLUMNS

log = logging.getLogger(__name__)

MAX_PER_FACT = 50
TEMPLATE_GENERATOR = "template"

# Ways customers wrap the same question. "{q}" is the question, "{lq}" the same with a lower-case start.
PARAPHRASE_PATTERNS = [
    "{q}",
    "Hi! {q}",
    "Hello, {q}",
    "Hey, {lq}",
    "Quick question: {lq}",
    "{q} Thanks!",
    "Can you tell me: {lq}",
    "I was wondering, {lq}",
    "{q} I'm planning a party.",
    "Hi there. {q} Thank you.",
    "{bare}",
    "{bare}??",
]
_DOLLARS = re.compile(r"\$\s?(\d+(?:,\d{3})*(?:\.\d+)?)")
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class TeacherSettings:
    """An OpenAI-compatible chat API that writes synthetic examples.

    ``base_url`` is the API root (e.g. ``http://127.0.0.1:8080/v1``); ``temperature`` higher gives more
    varied phrasings and more answers that fail the grounding check.
    """

    base_url: str
    model: str
    api_key: str = "not-needed"
    temperature: float = 0.7
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"teacher base_url must start with http:// or https://, got {self.base_url!r}")
        if not self.model.strip():
            raise ValueError("teacher model must be a non-empty model name")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"teacher temperature must be in [0, 2], got {self.temperature}")
        if self.timeout_s <= 0:
            raise ValueError(f"teacher timeout_s must be > 0, got {self.timeout_s}")

    @property
    def generator(self) -> str:
        return f"openai:{self.model}"


def empty_examples() -> pd.DataFrame:
    """An empty frame with ``EXAMPLE_COLUMNS``."""
    return pd.DataFrame({column: pd.Series(dtype=object) for column in EXAMPLE_COLUMNS})


def load_knowledge(path: Path) -> dict:
    """Read and check a knowledge file; a clear ``ValueError`` names what is wrong."""
    try:
        knowledge = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"knowledge file {path} is not valid JSON: {exc}") from exc
    if not isinstance(knowledge, dict) or not isinstance(knowledge.get("facts"), list):
        raise ValueError(f"knowledge file {path} must be an object with a 'facts' list")  # noqa: TRY004
    seen: set[str] = set()
    for index, fact in enumerate(knowledge["facts"]):
        missing = [key for key in ("id", "fact", "questions", "answer") if not fact.get(key)]
        if missing:
            raise ValueError(f"knowledge file {path}: fact #{index} lacks {', '.join(missing)}")
        if not isinstance(fact["questions"], list) or not all(isinstance(q, str) for q in fact["questions"]):
            raise ValueError(
                f"knowledge file {path}: fact {fact['id']!r} 'questions' must be a list of strings"
            )
        if fact["id"] in seen:
            raise ValueError(f"knowledge file {path}: duplicate fact id {fact['id']!r}")
        seen.add(fact["id"])
    return knowledge


def _system_prompt(knowledge: dict) -> str:
    business = knowledge.get("business") or {}
    return (
        business.get("system_prompt") or f"You are the assistant of {business.get('name', 'the business')}."
    )


def _render(template: str, pattern: str, city: str) -> str:
    question = template.replace("{city}", city).strip()
    lower = question[:1].lower() + question[1:]
    bare = lower.rstrip("?!. ")
    return pattern.replace("{q}", question).replace("{lq}", lower).replace("{bare}", bare)


def _template_questions(
    fact: dict, cities: list[str], count: int, rng: random.Random, exclude: set[str]
) -> list[str]:
    """Up to ``count`` distinct phrasings of the fact's question templates, none of them in ``exclude``."""
    candidates: list[str] = []
    for template in fact["questions"]:
        for city in cities if "{city}" in template and cities else [""]:
            for pattern in PARAPHRASE_PATTERNS:
                candidates.append(_render(template, pattern, city))
    unique = [q for q in dict.fromkeys(candidates) if q not in exclude]
    # Plain template questions first so small per_fact values still cover every template.
    plain_set = {_render(t, "{q}", c) for t in fact["questions"] for c in (cities or [""])}
    plain = [q for q in unique if q in plain_set]
    rng.shuffle(plain)
    rest = [q for q in unique if q not in plain]
    rng.shuffle(rest)
    return (plain + rest)[:count]


def _known_amounts(text: str) -> set[float]:
    return {float(amount.replace(",", "")) for amount in _DOLLARS.findall(text)}


def _grounding_problem(answer: str, fact: dict, not_offered: list[str]) -> str | None:
    """Why a teacher answer is not grounded in its fact, or ``None``."""
    source = f"{fact['fact']} {fact['answer']}"
    unknown = _known_amounts(answer) - _known_amounts(source)
    if unknown:
        return f"price(s) not in the fact: {sorted(unknown)}"
    for item in not_offered:
        word = item.split()[0].lower()
        if word in answer.lower() and word not in source.lower():
            return f"mentions {item!r}, which the business does not offer"
    return None


def _parse_pairs(content: str) -> list[dict]:
    """The ``{"pairs": [{"question", "answer"}]}`` a teacher returned, tolerating code fences and prose."""
    fenced = _FENCE.search(content)
    text = fenced.group(1) if fenced else content
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("no JSON object in the teacher's answer")
    data = json.loads(text[start : end + 1])
    pairs = data.get("pairs") if isinstance(data, dict) else None
    if not isinstance(pairs, list):
        raise ValueError("the teacher's JSON has no 'pairs' list")  # noqa: TRY004
    return [
        p
        for p in pairs
        if isinstance(p, dict)
        and isinstance(p.get("question"), str)
        and isinstance(p.get("answer"), str)
        and p["question"].strip()
        and p["answer"].strip()
    ]


def _teacher_prompt(knowledge: dict, fact: dict, count: int) -> list[dict]:
    name = (knowledge.get("business") or {}).get("name", "the business")
    examples = "\n".join(f"- {q}" for q in fact["questions"][:4])
    return [
        {
            "role": "system",
            "content": "You write training data for a small business's customer assistant. "
            "Reply with JSON only.",
        },
        {
            "role": "user",
            "content": (
                f"Business: {name}\nFact: {fact['fact']}\nApproved answer: {fact['answer']}\n"
                f"Example customer questions:\n{examples}\n\n"
                f"Write {count} new customer questions that this fact answers, varied in wording and tone, each "
                "with a short answer (1 to 3 sentences) that uses only this fact and keeps every price exactly "
                'as written. Reply as JSON: {"pairs": [{"question": "...", "answer": "..."}]}'
            ),
        },
    ]


def _ask_teacher(
    client: Any, teacher: TeacherSettings, knowledge: dict, fact: dict, count: int, seed: int
) -> str:
    import openai

    try:
        response = client.chat.completions.create(
            model=teacher.model,
            messages=_teacher_prompt(knowledge, fact, count),
            temperature=teacher.temperature,
            seed=seed,
            max_tokens=min(4096, 150 * count + 200),
        )
    except openai.APIConnectionError as exc:
        raise RuntimeError(f"teacher API at {teacher.base_url} is unreachable: {exc}") from exc
    except openai.APIStatusError as exc:
        raise RuntimeError(
            f"teacher API at {teacher.base_url} answered HTTP {exc.status_code}: {exc.message}"
        ) from exc
    return response.choices[0].message.content or ""


def _example(
    knowledge: dict,
    fact_id: str,
    question: str,
    answer: str,
    generator: str,
    org_id: str | None,
    created_at: str,
) -> dict:
    messages = [
        {"role": "system", "content": _system_prompt(knowledge)},
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ]
    digest = hashlib.sha256(
        json.dumps({"example_type": "faq", "messages": messages}, sort_keys=True).encode("utf-8")
    ).hexdigest()[:16]
    return {
        "example_id": f"syn-{digest}",
        "conversation_id": f"syn-{digest}",
        "org_id": org_id,
        "example_type": "faq",
        "messages": messages,
        "tools": None,
        "source_ids": [],
        "synthetic": True,
        "generator": generator,
        "source_fact": fact_id,
        "created_at": created_at,
    }


def generate_synthetic(
    knowledge_path: Path | None,
    *,
    teacher: TeacherSettings | None = None,
    seed: int = 0,
    per_fact: int = 3,
    opted_out_orgs: set[str] | frozenset[str] = frozenset(),
) -> pd.DataFrame:
    """FAQ examples (``EXAMPLE_COLUMNS``) generated from the facts of a knowledge file.

    ``per_fact`` examples per fact, by template expansion, or by ``teacher`` when given. A missing or
    ``None`` knowledge file gives an empty frame; so does a business whose ``org_id`` opted out.
    ``example_id`` is a hash of the content, so the same example keeps its id across runs.
    ``frame.attrs["stats"]`` counts teacher pairs kept, dropped and template fills.
    """
    if not 1 <= per_fact <= MAX_PER_FACT:
        raise ValueError(f"per_fact must be between 1 and {MAX_PER_FACT}, got {per_fact}")
    stats = {"facts": 0, "teacher_pairs": 0, "teacher_rejected": 0, "template": 0}
    if knowledge_path is None or not Path(knowledge_path).is_file():
        log.info("no knowledge file at %s: no synthetic examples", knowledge_path)
        frame = empty_examples()
        frame.attrs["stats"] = stats
        return frame
    knowledge = load_knowledge(Path(knowledge_path))
    business = knowledge.get("business") or {}
    org_id = business.get("org_id")
    if org_id is not None and org_id in opted_out_orgs:
        log.info("organisation %s opted out: no synthetic examples", org_id)
        frame = empty_examples()
        frame.attrs["stats"] = stats
        return frame

    cities = list((business.get("service_area") or {}).get("cities") or [])
    not_offered = [str(item) for item in knowledge.get("not_offered") or []]
    mtime = datetime.fromtimestamp(Path(knowledge_path).stat().st_mtime, tz=UTC)
    created_at = mtime.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    client = None
    if teacher is not None:
        import openai

        client = openai.OpenAI(
            base_url=teacher.base_url, api_key=teacher.api_key, timeout=teacher.timeout_s, max_retries=1
        )

    rows: dict[str, dict] = {}
    for fact in knowledge["facts"]:
        stats["facts"] += 1
        rng = random.Random(f"{seed}:{fact['id']}")
        pairs: list[tuple[str, str, str]] = []
        if client is not None:
            content = _ask_teacher(client, teacher, knowledge, fact, per_fact, seed)
            try:
                proposed = _parse_pairs(content)
            except (ValueError, json.JSONDecodeError) as exc:
                log.warning("teacher answer for fact %s unusable (%s); using templates", fact["id"], exc)
                proposed = []
            for pair in proposed:
                problem = _grounding_problem(pair["answer"], fact, not_offered)
                if problem:
                    stats["teacher_rejected"] += 1
                    log.info("dropped teacher answer for fact %s: %s", fact["id"], problem)
                    continue
                if len(pairs) < per_fact and pair["question"].strip() not in {q for q, _, _ in pairs}:
                    pairs.append((pair["question"].strip(), pair["answer"].strip(), teacher.generator))
            stats["teacher_pairs"] += len(pairs)
        fill = _template_questions(fact, cities, per_fact - len(pairs), rng, exclude={q for q, _, _ in pairs})
        stats["template"] += len(fill)
        pairs += [(question, fact["answer"], TEMPLATE_GENERATOR) for question in fill]
        for question, answer, generator in pairs:
            row = _example(knowledge, fact["id"], question, answer, generator, org_id, created_at)
            rows.setdefault(row["example_id"], row)

    frame = pd.DataFrame(list(rows.values()), columns=EXAMPLE_COLUMNS) if rows else empty_examples()
    frame.attrs["stats"] = stats
    log.info("synthetic examples: %s", stats)
    return frame

"""Shared helpers of the business generators: a log book that writes rows in the interaction format
(``/work/shared/interaction-format.md``, the README's input section), wording variation and locale PII.

Nothing here imports ``homegrown``: the businesses are written apart from the code that processes them.
"""

from __future__ import annotations

import csv
import json
import random
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any


@dataclass
class Fact:
    """One thing the business's assistant is asked about: how customers ask, how the assistant answers."""
    id: str
    questions: list[str]
    answers: list[str]
    topic: str = "faq"
    wrong_answers: list[str] = field(default_factory=list)  # what the assistant sometimes got wrong
    correction: str = ""  # the admin's corrected answer for a wrong one


class LogBook:
    """Rows of one business's assistant logs, in time order, with ids as a chat product would assign them."""

    def __init__(self, rng: random.Random, org_id: str, start: datetime, system_prompt: str,
                 model: str = "gpt-4o-mini", id_prefix: str = "chatcmpl",
                 minutes_between: tuple[float, float] = (3, 240)):
        self.rng = rng
        self.org_id = org_id
        self.clock = start
        self.system_prompt = system_prompt
        self.model = model
        self.id_prefix = id_prefix
        self.minutes_between = minutes_between
        self.rows: list[dict[str, Any]] = []
        self.later_feedback: list[dict[str, Any]] = []

    def new_id(self, prefix: str | None = None) -> str:
        return f"{prefix or self.id_prefix}-{self.rng.getrandbits(48):012x}"

    def tick(self) -> datetime:
        """Advance the clock; customers write mostly between 7:00 and 22:00."""
        self.clock += timedelta(minutes=self.rng.uniform(*self.minutes_between))
        if self.clock.hour >= 22 or self.clock.hour < 7:
            self.clock = (self.clock + timedelta(days=1 if self.clock.hour >= 22 else 0)).replace(
                hour=7, minute=self.rng.randrange(60))
        return self.clock

    def add(self, turns: list[dict[str, Any]], example_type: str, *, conversation_id: str | None = None,
            feedback: dict[str, Any] | None = None, tools: list[dict] | None = None, system: bool = True,
            seconds_after: float | None = None, **extra: Any) -> dict[str, Any]:
        """Append one interaction: ``turns`` is the conversation so far, ending in the assistant answer."""
        if seconds_after is not None:
            self.clock += timedelta(seconds=seconds_after)
        else:
            self.tick()
        messages = ([{"role": "system", "content": self.system_prompt}] if system else []) + turns
        row: dict[str, Any] = {"id": self.new_id(), "created_at": iso(self.clock)}
        if conversation_id:
            row["conversation_id"] = conversation_id
        row.update({"org_id": self.org_id, "example_type": example_type, "model": self.model,
                    "messages": messages})
        if tools:
            row["tools"] = tools
        if feedback:
            row["feedback"] = feedback
        row.update(extra)
        self.rows.append(row)
        return row

    def feedback_event(self, row: dict[str, Any], delay_hours: float, **fields: Any) -> dict[str, Any]:
        """Feedback that arrives later as its own row (``feedback_for``)."""
        created = datetime.fromisoformat(row["created_at"]) + timedelta(hours=delay_hours)
        event = {"feedback_for": row["id"], "created_at": iso(created), **fields}
        self.later_feedback.append(event)
        return event


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def tool_call_message(rng: random.Random, name: str, arguments: dict[str, Any], content: str = "") -> dict:
    """An assistant turn that calls a tool, in OpenAI's shape."""
    return {"role": "assistant", "content": content or None, "tool_calls": [{
        "id": f"call_{rng.getrandbits(64):016x}", "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}]}


def tool_result(call: dict, result: dict[str, Any]) -> dict[str, str]:
    return {"role": "tool", "tool_call_id": call["tool_calls"][0]["id"], "content": json.dumps(result)}


def strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def typo(text: str, rng: random.Random) -> str:
    """One slip of the fingers: two neighbouring letters swapped or one dropped, in a word of 5+ letters."""
    words = text.split(" ")
    long_words = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
    if not long_words:
        return text
    i = rng.choice(long_words)
    w = words[i]
    j = rng.randrange(1, len(w) - 2)
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:] if rng.random() < 0.6 else w[:j] + w[j + 1:]
    return " ".join(words)


def vary(question: str, rng: random.Random, greetings: list[str], closings: list[str], *,
         p_greeting: float = 0.35, p_closing: float = 0.15, p_lower: float = 0.25, p_typo: float = 0.12,
         p_no_accents: float = 0.0, p_no_question_mark: float = 0.2) -> str:
    """How one customer types a question: greeting, sign-off, lower case, a typo, no accents, no '?'."""
    text = question
    if rng.random() < p_no_question_mark:
        text = text.rstrip(" ?")
    if rng.random() < p_greeting:
        text = f"{rng.choice(greetings)} {text[0].lower() + text[1:] if rng.random() < 0.5 else text}"
    if rng.random() < p_closing:
        text = f"{text} {rng.choice(closings)}"
    if rng.random() < p_lower:
        text = text.lower()
    if rng.random() < p_typo:
        text = typo(text, rng)
    if rng.random() < p_no_accents:
        text = strip_accents(text)
    return text


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(rows)


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> int:
    """A CSV export: nested fields as JSON strings, missing ones empty."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: (json.dumps(row[c], ensure_ascii=False) if isinstance(row.get(c), (dict, list))
                                 else row.get(c, "")) for c in columns})
    return len(rows)


def user_questions(rows: list[dict[str, Any]]) -> list[str]:
    """Every user message of the written rows (all shapes), for the held-out overlap check."""
    out: list[str] = []
    for row in rows:
        for message in row.get("messages") or []:
            if message.get("role") == "user":
                out.append(message["content"])
        for key in ("prompt", "instruction", "input"):
            if row.get(key):
                out.append(row[key])
    return out


# --- people, by locale ------------------------------------------------------------------------------

FR_FIRST = ["Camille", "Julie", "Léa", "Manon", "Chloé", "Sophie", "Nathalie", "Isabelle", "Thomas", "Nicolas",
            "Julien", "Antoine", "Mathieu", "Pierre", "Hugo", "Élodie", "Céline", "Aurélien", "Margaux", "Benoît",
            "Gaëlle", "Yannick", "Sandrine", "Rémi", "Inès", "Karim", "Amandine", "Théo"]
FR_LAST = ["Martin", "Bernard", "Dubois", "Durand", "Lefèvre", "Moreau", "Girard", "Fournier", "Mercier",
           "Rousseau", "Blanchard", "Chevalier", "Marchand", "Perrin", "Gauthier", "Lemaire", "Faure", "Roux",
           "Benali", "Nguyen", "Collin", "Vasseur", "Brunet", "Masson"]
FR_STREETS = ["rue Paul Bert", "avenue Félix Faure", "rue de Créqui", "cours Gambetta", "rue Duguesclin",
              "rue Garibaldi", "rue Servient", "rue Moncey", "rue de la Villette", "rue Vendôme"]

UK_FIRST = ["Oliver", "Harry", "George", "Jack", "Charlie", "Alfie", "Freddie", "Amelia", "Olivia", "Isla",
            "Emily", "Poppy", "Sophie", "Jessica", "Tom", "Rhys", "Callum", "Siobhan", "Priya", "Aisha", "Kwame",
            "Niamh", "Gareth", "Ellie", "Dan", "Hannah", "Rob", "Kirsty", "Mohammed", "Lucy"]
UK_LAST = ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Evans", "Thomas", "Roberts", "Walker",
           "Wright", "Hughes", "Patel", "Khan", "Clarke", "O'Brien", "Barker", "Fletcher", "Okafor", "Pritchard",
           "Hargreaves", "McAllister", "Dawson", "Begum"]
UK_STREETS = ["Cotham Road", "Zetland Road", "Chesterfield Road", "Belmont Road", "Ashley Down Road",
              "Sommerville Road", "Berkeley Road", "Egerton Road", "Cranbrook Road", "Manor Road"]
UK_POSTCODES = ["BS6 5QA", "BS6 6DR", "BS7 8BA", "BS7 9NP", "BS6 7TE", "BS3 4LU", "BS5 6XW", "BS7 0HJ"]
EMAIL_DOMAINS_FR = ["gmail.com", "orange.fr", "free.fr", "laposte.net", "hotmail.fr", "sfr.fr"]
EMAIL_DOMAINS_UK = ["gmail.com", "hotmail.co.uk", "btinternet.com", "outlook.com", "yahoo.co.uk", "icloud.com"]


def fr_person(rng: random.Random) -> dict[str, str]:
    first, last = rng.choice(FR_FIRST), rng.choice(FR_LAST)
    digits = [rng.randrange(10) for _ in range(8)]
    pairs = [f"{digits[i]}{digits[i + 1]}" for i in range(0, 8, 2)]
    mobile = rng.choice(["06", "07"])
    phone = rng.choice([f"{mobile} {' '.join(pairs)}", f"{mobile}{''.join(pairs)}", f"{mobile}.{'.'.join(pairs)}",
                        f"+33 {mobile[1]} {' '.join(pairs)}"])
    email = f"{strip_accents(first).lower()}.{strip_accents(last).lower()}{rng.choice(['', '69', '84', ''])}@" \
            f"{rng.choice(EMAIL_DOMAINS_FR)}"
    address = f"{rng.randrange(1, 120)} {rng.choice(FR_STREETS)}, 6900{rng.choice('36')} Lyon"
    return {"first": first, "last": last, "name": f"{first} {last}", "phone": phone, "email": email,
            "address": address}


def uk_person(rng: random.Random) -> dict[str, str]:
    first, last = rng.choice(UK_FIRST), rng.choice(UK_LAST)
    block = f"{rng.randrange(100, 1000)}{rng.randrange(100, 1000)}"
    prefix = f"07{rng.choice(['4', '5', '7', '8', '9'])}{rng.randrange(10)}{rng.randrange(10)}"
    phone = rng.choice([f"{prefix} {block}", f"{prefix}{block}", f"+44 {prefix[1:]} {block}",
                        f"0117 {rng.randrange(900, 990)} {rng.randrange(1000, 10000)}"])
    email = f"{first.lower()}{rng.choice(['.', '_', ''])}{last.lower().replace(chr(39), '')}" \
            f"{rng.choice(['', '87', '1', ''])}@{rng.choice(EMAIL_DOMAINS_UK)}"
    address = f"{rng.randrange(1, 180)} {rng.choice(UK_STREETS)}, Bristol {rng.choice(UK_POSTCODES)}"
    return {"first": first, "last": last, "name": f"{first} {last}", "phone": phone, "email": email,
            "address": address}


def logged_user_messages(folder: Path) -> list[str]:
    """Every user message in the log files of ``folder`` (JSONL, CSV, Parquet; all three shapes)."""
    rows: list[dict[str, Any]] = []
    for path in sorted(Path(folder).rglob("*")):
        if path.suffix == ".jsonl":
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue  # a malformed line (the demo plants some); ingestion quarantines it

        elif path.suffix == ".csv":
            with path.open(encoding="utf-8", newline="") as fh:
                rows += list(csv.DictReader(fh))
        elif path.suffix == ".parquet":
            import pandas as pd

            rows += pd.read_parquet(path).to_dict("records")
    rows = [row for row in rows if isinstance(row, dict)]
    for row in rows:
        if isinstance(row.get("messages"), str):
            try:
                row["messages"] = json.loads(row["messages"])
            except ValueError:
                row["messages"] = []
        if row.get("messages") is not None and not isinstance(row["messages"], list):
            row["messages"] = list(row["messages"])  # Parquet gives arrays
    return [m for m in user_questions(rows) if isinstance(m, str)]

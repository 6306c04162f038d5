"""Render the templates into labelled examples, balanced so that every entity type has enough labels."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from faker import Faker

from . import values as v
from .templates import TEMPLATES, Template, split_of

SEED = 20261201
SPLITS = ("dev", "heldout")
MIN_PER_KIND = 300  # labelled entities per (locale, type) in each split
NEGATIVE_SHARE = 0.08  # share of draws that take a template without PII, for precision
USER_LOWERCASE_SHARE = 0.1  # customers who type everything in lower case
DEV_PATH = Path(__file__).resolve().parent / "dev.jsonl"

PLACEHOLDER = re.compile(r"\{([a-z_]+?)(\d?)(?:\.(lower|upper))?\}")
PERSON_FORMS = {"name": "full", "first": "first", "mr": "title_last", "last_first": "last_first"}
KIND_OF = {**{p: "PERSON_NAME" for p in PERSON_FORMS}, "email": "EMAIL", "phone": "PHONE", "address": "ADDRESS",
           "full_address": "ADDRESS", "street": "ADDRESS", "address_lines": "ADDRESS", "card": "CARD_NUMBER",
           "iban": "ACCOUNT_NUMBER", "id": "ID"}
LABELLED_KINDS = ("PERSON_NAME", "EMAIL", "PHONE", "ADDRESS", "CARD_NUMBER", "ACCOUNT_NUMBER", "ID")


@dataclass(frozen=True)
class Span:
    kind: str
    start: int
    end: int
    text: str
    subtype: str


@dataclass(frozen=True)
class Example:
    id: str
    split: str
    locale: str
    template: str
    role: str
    domain: str
    text: str
    spans: tuple[Span, ...]

    def to_json(self) -> dict:
        return {**asdict(self), "spans": [asdict(s) for s in self.spans]}

    @classmethod
    def from_json(cls, row: dict) -> Example:
        return cls(**{**row, "spans": tuple(Span(**s) for s in row["spans"])})


def template_kinds(template: Template) -> set[str]:
    return {KIND_OF[m.group(1)] for m in PLACEHOLDER.finditer(template.text) if m.group(1) in KIND_OF}


def templates_for(split: str, locale: str) -> list[Template]:
    chosen = []
    for template in TEMPLATES[v.FAMILY[locale]]:
        if split_of(template) != split or (template.locales and locale not in template.locales):
            continue
        if locale == "en_US" and "ACCOUNT_NUMBER" in template_kinds(template):
            continue
        chosen.append(template)
    return chosen


# --- plain values that look a little like PII --------------------------------------------------------------

DAYS = {"en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "tomorrow", "next week"),
        "de": ("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag", "morgen", "übermorgen"),
        "fr": ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche", "demain", "la semaine prochaine")}
MONTHS = {"en": ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
                 "November", "December"),
          "de": ("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober",
                 "November", "Dezember"),
          "fr": ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
                 "novembre", "décembre")}
PRODUCTS = {"en": ("lemon drizzle cake", "Victoria sponge", "sourdough workshop", "Black Forest gateau",
                   "croissant box", "wedding tasting", "balayage", "hot cross buns"),
            "de": ("Schwarzwälder Kirschtorte", "Laugenbrezeln", "Sauerteigkurs", "Käsekuchen", "Bienenstich"),
            "fr": ("Paris-Brest", "fraisier", "atelier pâtisserie", "galette des rois", "éclairs au café")}
CITIES = {"en_US": ("Chicago", "Austin", "Seattle", "Boston", "Denver"),
          "en_GB": ("Leeds", "Bristol", "Manchester", "Cardiff", "York"),
          "de_DE": ("Köln", "Hamburg", "München", "Leipzig", "Freiburg"),
          "fr_FR": ("Lyon", "Nantes", "Bordeaux", "Lille", "Toulouse")}


def _distractor(base: str, idx: str, locale: str, rng: random.Random) -> str:
    family = v.FAMILY[locale]
    day, month, year = rng.randint(1, 28), rng.randint(1, 12), rng.randint(2025, 2027)
    if base == "date":
        if locale == "en_US":
            return rng.choice((f"{month}/{day}/{year}", f"{MONTHS['en'][month - 1]} {day}", f"{month}/{day}"))
        if locale == "en_GB":
            return rng.choice((f"{day:02d}/{month:02d}/{year}", f"{day} {MONTHS['en'][month - 1]}", f"{day}/{month}"))
        if family == "de":
            return rng.choice((f"{day:02d}.{month:02d}.{year}", f"{day}. {MONTHS['de'][month - 1]}", f"{day}.{month}."))
        return rng.choice((f"{day:02d}/{month:02d}/{year}", f"{day} {MONTHS['fr'][month - 1]}", f"{day}/{month}"))
    if base == "time":
        hour, minute = rng.randint(7, 13) if not idx else rng.randint(14, 21), rng.choice((0, 0, 15, 30, 45))
        if locale == "en_US":
            suffix = rng.choice(("pm", " PM", "p.m.")) if hour >= 12 else rng.choice(("am", " AM", "a.m."))
            return f"{(hour - 1) % 12 + 1}{f':{minute:02d}' if minute else ''}{suffix}"
        if locale == "en_GB":
            return rng.choice((f"{hour}:{minute:02d}", f"{(hour - 1) % 12 + 1}.{minute:02d}pm"))
        if family == "de":
            return rng.choice((f"{hour}:{minute:02d}", f"{hour} Uhr"))
        return rng.choice((f"{hour}h{minute:02d}", f"{hour}h"))
    if base == "price":
        amount = rng.choice((rng.randint(5, 99), rng.randint(100, 2500)))
        cents = rng.choice((0, 50, 90, 95))
        if locale == "en_US":
            return f"${amount:,}.{cents:02d}"
        if locale == "en_GB":
            return f"£{amount:,}.{cents:02d}" if cents else f"£{amount}"
        text = f"{amount:,}".replace(",", ".")
        return f"{text},{cents:02d} €" if rng.random() < 0.7 else f"{text} EUR"
    if base == "qty":
        return str(rng.choice((2, 4, 6, 10, 12, 20, 24, 30, 48, 100)))
    if base == "count":
        return str(rng.randint(2, 120))
    if base == "city":
        return rng.choice(CITIES[locale])
    if base == "day":
        return rng.choice(DAYS[family])
    if base == "product":
        return rng.choice(PRODUCTS[family])
    if base == "exp":
        return f"{rng.randint(1, 12):02d}/{rng.randint(26, 31)}"
    if base == "cvc":
        return f"{rng.randint(100, 999)}"
    if base == "card_end":
        return f"{rng.randint(0, 9999):04d}"
    raise ValueError(f"unknown placeholder {{{base}}}")


@dataclass
class _Row:
    locale: str
    rng: random.Random
    fakers: dict[str, Faker]
    people: dict[str, v.Person]
    cache: dict[tuple[str, str], v.Value]

    def person(self, idx: str) -> v.Person:
        if idx not in self.people:
            self.people[idx] = v._person(self.fakers, self.locale, self.rng)
        return self.people[idx]

    def value(self, base: str, idx: str) -> v.Value:
        key = (base, idx)
        if key in self.cache:
            return self.cache[key]
        locale, rng, family = self.locale, self.rng, v.FAMILY[self.locale]
        if base in PERSON_FORMS:
            value = v.name_value(self.person(idx), PERSON_FORMS[base], family, rng)
        elif base == "email":
            value = v.email_value(self.person(idx), locale, self.fakers, rng)
        elif base == "phone":
            value = v.phone_value(locale, rng)
        elif base == "address":
            value = v.address_value(locale, rng)
        elif base == "full_address":
            value = v.address_value(locale, rng, full=True)
        elif base == "street":
            value = v.address_value(locale, rng, full=False)
        elif base == "address_lines":
            value = (v.Piece(f"{v.street_line(locale, rng)}\n{v.city_part(locale, rng)}", "ADDRESS", "two_lines"),)
        elif base == "card":
            value = v.card_value(rng)
        elif base == "iban":
            value = v.iban_value(locale, rng)
        elif base == "id":
            value = v.id_value(rng)
        else:
            value = v.plain(_distractor(base, idx, locale, rng))
        self.cache[key] = value
        return value


def _case(text: str, case: str | None) -> str:
    return text.lower() if case == "lower" else text.upper() if case == "upper" else text


def render(template: Template, locale: str, rng: random.Random, fakers: dict[str, Faker], example_id: str,
           split: str) -> Example:
    row = _Row(locale, rng, fakers, {}, {})
    row_case = "lower" if template.role == "user" and rng.random() < USER_LOWERCASE_SHARE else None
    parts: list[str] = []
    spans: list[Span] = []
    position = 0
    cursor = 0
    for match in PLACEHOLDER.finditer(template.text):
        literal = _case(template.text[cursor:match.start()], row_case)
        parts.append(literal)
        position += len(literal)
        cursor = match.end()
        base, idx, case = match.groups()
        case = row_case or case
        for piece in row.value(base, idx):
            text = _case(piece.text, case)
            if piece.kind:
                subtype = piece.subtype + (f"_{case}" if text != piece.text and case not in piece.subtype else "")
                spans.append(Span(piece.kind, position, position + len(text), text, subtype))
            parts.append(text)
            position += len(text)
    parts.append(_case(template.text[cursor:], row_case))
    return Example(example_id, split, locale, template.id, template.role, template.domain, "".join(parts), tuple(spans))


def make_fakers(seed: int) -> dict[str, Faker]:
    fakers = {}
    for i, locale in enumerate(v.LOCALES + v.FAKER_ORIGINS):
        fake = Faker(locale)
        fake.seed_instance(seed + i)
        fakers[locale] = fake
    return fakers


def generate(split: str, seed: int = SEED, min_per_kind: int = MIN_PER_KIND) -> list[Example]:
    """The labelled set of one split: every locale, each type present there at least ``min_per_kind`` times.

    Each draw takes the type with the fewest labels so far and a random template of the split that has it,
    so the set is balanced across types while every template keeps its own mix of entities.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    if min_per_kind < 1:
        raise ValueError("min_per_kind must be at least 1")
    examples: list[Example] = []
    fakers = make_fakers(seed)
    for locale in v.LOCALES:
        rng = random.Random(f"{seed}-{split}-{locale}")
        templates = templates_for(split, locale)
        by_kind = {k: [t for t in templates if k in template_kinds(t)] for k in LABELLED_KINDS}
        negatives = [t for t in templates if not template_kinds(t)]
        counts: Counter[str] = Counter()
        while True:
            missing = sorted((counts[k], k) for k in LABELLED_KINDS if by_kind[k] and counts[k] < min_per_kind)
            if not missing:
                break
            if negatives and rng.random() < NEGATIVE_SHARE:
                template = rng.choice(negatives)
            else:
                template = rng.choice(by_kind[missing[0][1]])
            example = render(template, locale, rng, fakers, f"{split}-{locale}-{len(examples):05d}", split)
            counts.update(s.kind for s in example.spans)
            examples.append(example)
    return examples


def label_problems(example: Example) -> list[str]:
    """What is wrong with an example's labels: text not at its offsets, empty or padded spans, overlaps."""
    problems = []
    previous_end = 0
    for span in sorted(example.spans, key=lambda s: s.start):
        where = f"{example.id} {span.kind} {span.start}:{span.end}"
        if not 0 <= span.start < span.end <= len(example.text):
            problems.append(f"{where}: offsets outside the text")
            continue
        if example.text[span.start:span.end] != span.text:
            problems.append(f"{where}: text is {example.text[span.start:span.end]!r}, label says {span.text!r}")
        if span.text != span.text.strip():
            problems.append(f"{where}: label has surrounding whitespace")
        if span.kind not in LABELLED_KINDS:
            problems.append(f"{where}: unknown kind")
        if span.start < previous_end:
            problems.append(f"{where}: overlaps the previous label")
        previous_end = max(previous_end, span.end)
    return problems


def write_jsonl(examples: list[Example], path: Path) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for example in examples:
            fh.write(json.dumps(example.to_json(), ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[Example]:
    with path.open(encoding="utf-8") as fh:
        return [Example.from_json(json.loads(line)) for line in fh if line.strip()]

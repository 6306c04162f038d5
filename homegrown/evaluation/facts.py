"""Checkable facts in free text: prices, numbers with units and menu items, in one normal form.

Answers and references are compared through these facts ("$60", "15 guests", "item:filet mignon")
rather than through their wording, so an answer that states the right price in other words still
counts, and a price or dish that appears nowhere in the business's knowledge is detectable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

# Foods a hallucinating model is likely to offer, beside the business's own menu. Matching one of these
# is harmless when the knowledge file mentions it too: the knowledge is extracted with the same rules.
FOOD_CATALOGUE: tuple[str, ...] = (
    "wagyu", "kobe", "kobe beef", "sushi", "sashimi", "caviar", "truffle", "foie gras", "oyster",
    "king crab", "crab", "duck", "lamb", "pork belly", "ramen", "udon", "tempura", "eel", "uni",
    "octopus", "squid", "tuna", "salmon", "scallop", "shrimp", "lobster", "chicken", "steak",
    "filet mignon", "ribeye", "ny strip", "new york strip", "sirloin", "tofu", "fried rice", "noodles",
    "gyoza", "edamame", "miso soup", "sake", "champagne", "pizza", "burger", "tacos", "pasta",
    "dessert", "cake", "ice cream", "mochi", "alcohol", "wine", "beer", "cocktails",
)

_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30, "forty": 40,
    "fifty": 50, "hundred": 100,
}

# Unit spellings -> canonical unit; order does not matter (the regex prefers the longest spelling).
_UNITS = {
    "guests": "guests", "guest": "guests", "people": "guests", "persons": "guests", "person": "guests",
    "pax": "guests", "adults": "guests", "adult": "guests",
    "children": "children", "child": "children", "kids": "children", "kid": "children",
    "hours": "hours", "hour": "hours", "hrs": "hours", "hr": "hours",
    "minutes": "minutes", "minute": "minutes", "mins": "minutes", "min": "minutes",
    "days": "days", "day": "days", "weeks": "weeks", "week": "weeks",
    "miles": "miles", "mile": "miles", "mi": "miles",
    "percent": "%", "per cent": "%", "%": "%",
}

_NUM = r"(?P<num>\d[\d,]*(?:\.\d+)?|" + "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True)) + r")"
_MONEY_RE = re.compile(
    r"(?:\$\s?(?P<a>\d[\d,]*(?:\.\d+)?)(?:\s?(?P<ak>k)\b)?)"
    r"|(?:\b(?:usd|us\$)\s?(?P<b>\d[\d,]*(?:\.\d+)?))"
    r"|(?:\b(?P<c>\d[\d,]*(?:\.\d+)?)\s?(?:dollars?|bucks|usd)\b)",
    re.IGNORECASE,
)
_UNIT_ALT = "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))
_UNIT_RE = re.compile(
    r"(?<![\w$.])" + _NUM + r"(?:\s?-\s?|\s)?(?P<unit>" + _UNIT_ALT + r")(?![\w])",
    re.IGNORECASE,
)


def _clean_number(raw: str) -> str:
    """'1,200.00' -> '1200'; '12.50' -> '12.5'; 'fifteen' -> '15'."""
    word = _NUMBER_WORDS.get(raw.lower())
    if word is not None:
        return str(word)
    value = raw.replace(",", "")
    if "." in value:
        value = value.rstrip("0").rstrip(".")
    return value or "0"


@lru_cache(maxsize=4096)
def _item_pattern(term: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in term.split()]
    # Optional plural on the last word; any run of spaces or hyphens between words.
    body = r"[\s-]+".join(words)
    return re.compile(r"(?<![\w])" + body + r"(?:e?s)?(?![\w])", re.IGNORECASE)


def _normalise_item(name: str) -> str:
    return " ".join(name.lower().split())


def _term_map(terms: Mapping[str, str] | Iterable[str]) -> dict[str, str]:
    """Surface form -> canonical item name, the catalogue beneath the given terms."""
    mapping = {_normalise_item(t): _normalise_item(t) for t in FOOD_CATALOGUE}
    pairs = terms.items() if isinstance(terms, Mapping) else ((t, t) for t in terms)
    for surface, canonical in pairs:
        if surface and surface.strip():
            mapping[_normalise_item(surface)] = _normalise_item(canonical)
    return mapping


def extract_prices(text: str) -> set[str]:
    """Money amounts in ``text``, e.g. ``{"$60", "$5"}`` for "$60 per adult, filet +5 dollars"."""
    found: set[str] = set()
    for match in _MONEY_RE.finditer(text or ""):
        raw = match.group("a") or match.group("b") or match.group("c")
        number = _clean_number(raw)
        if match.group("ak"):
            number = _clean_number(str(float(number) * 1000))
        found.add(f"${number}")
    return found


def extract_quantities(text: str) -> set[str]:
    """Numbers with a unit, e.g. ``{"15 guests", "2 hours", "20%"}``."""
    found: set[str] = set()
    for match in _UNIT_RE.finditer(text or ""):
        number = _clean_number(match.group("num"))
        unit = _UNITS[match.group("unit").lower()]
        found.add(f"{number}%" if unit == "%" else f"{number} {unit}")
    return found


_NEGATION_RE = re.compile(r"\b(?:no|not|never|without|cannot|nor)\b|n't\b|\bdont\b", re.IGNORECASE)
_CLAUSE_BREAK_RE = re.compile(r"[.!?;:\n]|\bbut\b|\bhowever\b|\binstead\b", re.IGNORECASE)


def _negated(text: str, start: int) -> bool:
    """Whether the clause before position ``start`` holds a negation ("we don't serve <item>")."""
    clause = _CLAUSE_BREAK_RE.split(text[:start])[-1]
    return bool(_NEGATION_RE.search(clause.replace("\u2019", "'")))


def extract_items(
    text: str, terms: Mapping[str, str] | Iterable[str] = (), affirmed_only: bool = False,
) -> set[str]:
    """Named menu items as ``"item:<canonical name>"``.

    ``terms`` are the business's item names, as a list or as a map from each surface form (name or
    alias) to the item's canonical name; ``FOOD_CATALOGUE`` is matched beneath them, so "lobster" counts
    as the menu's "lobster tail" when the menu lists it as an alias. Matches may overlap.
    With ``affirmed_only`` an item counts only where some mention of it is not negated in its clause
    ("we don't serve wagyu" does not offer wagyu; "no wagyu, but we have kobe" offers kobe).
    """
    text = text or ""
    found: set[str] = set()
    for surface, canonical in _term_map(terms).items():
        for match in _item_pattern(surface).finditer(text):
            if not affirmed_only or not _negated(text, match.start()):
                found.add(f"item:{canonical}")
                break
    return found


def extract_facts(text: str, terms: Mapping[str, str] | Iterable[str] = ()) -> set[str]:
    """All normalised facts in ``text``: prices, quantities with units and menu items (see
    ``extract_items`` for ``terms``)."""
    if not isinstance(terms, Mapping):
        terms = tuple(terms)
    return extract_prices(text) | extract_quantities(text) | extract_items(text, terms)


def is_price(fact: str) -> bool:
    return fact.startswith("$")


def is_item(fact: str) -> bool:
    return fact.startswith("item:")


def _strings(value: Any) -> Iterable[str]:
    """Every string (keys included) nested anywhere in a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, inner in value.items():
            yield str(key)
            yield from _strings(inner)
    elif isinstance(value, (list, tuple)):
        for inner in value:
            yield from _strings(inner)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield str(value)


def _menu_terms(entries: Any) -> dict[str, str]:
    """Surface form -> canonical name for a menu given as names, ``{"name", "aliases"}`` objects or a
    ``{name: ...}`` map."""
    if isinstance(entries, dict):
        entries = list(entries)
    terms: dict[str, str] = {}
    for entry in entries or []:
        if isinstance(entry, str):
            terms[entry] = entry
        elif isinstance(entry, dict):
            name = entry.get("name") or entry.get("item") or entry.get("title")
            if not name:
                continue
            terms[str(name)] = str(name)
            for alias in entry.get("aliases") or []:
                terms[str(alias)] = str(name)
    return terms


@dataclass
class KnowledgeFacts:
    """What the business's knowledge file states.

    ``terms`` maps every name and alias of the menu to the item's canonical name (plus the names of
    things the business does not offer, so that they are detected but never "known"); ``facts`` holds
    the prices and quantities the knowledge states and its menu items. Items are taken from the menu
    lists only, never from free text, where they may well appear in "we don't serve ..." sentences.
    """

    terms: dict[str, str] = field(default_factory=dict)
    facts: set[str] = field(default_factory=set)

    @classmethod
    def from_dict(cls, knowledge: dict[str, Any]) -> KnowledgeFacts:
        """Build from a parsed knowledge file: ``menu_items`` (or ``menu``) with optional ``aliases``,
        optional ``not_offered`` names, a ``prices`` map of dollar amounts, and any text."""
        if not isinstance(knowledge, dict):
            raise ValueError(f"a knowledge file must hold a JSON object, got {type(knowledge).__name__}")  # noqa: TRY004
        menu = {**_menu_terms(knowledge.get("menu")), **_menu_terms(knowledge.get("menu_items"))}
        not_offered = _menu_terms(knowledge.get("not_offered"))
        terms = {**not_offered, **menu}
        facts: set[str] = {f"item:{_normalise_item(name)}" for name in menu.values()}
        for text in _strings(knowledge):
            facts |= extract_prices(text) | extract_quantities(text)
        for value in _price_values(knowledge.get("prices")):
            facts.add(f"${_clean_number(str(value))}")
        for entry in knowledge.get("menu_items") or []:
            if isinstance(entry, dict) and isinstance(entry.get("price"), (int, float)):
                facts.add(f"${_clean_number(str(entry['price']))}")
        return cls(terms=terms, facts=facts)

    @classmethod
    def from_file(cls, path: str | Path) -> KnowledgeFacts:
        """Load a knowledge JSON file; a missing or malformed file raises ``ValueError`` naming it."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ValueError(f"knowledge file not found: {path}") from exc
        except json.JSONDecodeError as exc:
            raise ValueError(f"knowledge file {path} is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    @property
    def menu_items(self) -> set[str]:
        """Canonical names of what the business serves."""
        return {f[len("item:"):] for f in self.facts if is_item(f)}

    def extract(self, text: str) -> set[str]:
        """``extract_facts`` with this business's menu names and aliases."""
        return extract_facts(text, self.terms)


def _price_values(prices: Any) -> list[float]:
    """The numbers of a ``prices`` map (``{"adult": 60}`` or ``{"adult": {"amount": 60}}``)."""
    values: list[float] = []
    if isinstance(prices, dict):
        for value in prices.values():
            if isinstance(value, dict):
                value = value.get("amount", value.get("price"))
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values.append(value)
    return values

"""Checkable facts in free text, in one normal form, for any business and locale.

Answers and references are compared through these facts ("$60", "€12.5", "15 guests", "time:18:30",
"item:filet mignon") rather than through their wording, so an answer that states the right price in
other words still counts, and a price or dish that appears nowhere in the business's knowledge is
detectable. Prices are read in $, €, £ and CHF as English, German, French and Swiss texts write them
("$12.50", "12,50 €", "12.50 EUR", "CHF 9.-"); numbers with units in English, German and French
("15 Personen", "3 heures", "20 %"); clock times ("18:30", "6 pm", "18h30", "18 Uhr") and dates.

Two ways to say what a right answer must state:

- with a knowledge file (``KnowledgeFacts``): prices, quantities and the menu's items;
- from the reference answer alone (``reference_facts``): every checkable token of the reference,
  see ``reference_facts`` and ``reference_fact_score``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
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
    "zwei": 2, "drei": 3, "vier": 4, "fünf": 5, "sechs": 6, "sieben": 7, "acht": 8, "neun": 9,
    "zehn": 10, "elf": 11, "zwölf": 12, "fünfzehn": 15, "zwanzig": 20, "dreißig": 30, "vierzig": 40,
    "fünfzig": 50, "hundert": 100,
    "deux": 2, "trois": 3, "quatre": 4, "cinq": 5, "sept": 7, "huit": 8, "neuf": 9, "dix": 10,
    "onze": 11, "douze": 12, "quinze": 15, "vingt": 20, "trente": 30, "quarante": 40, "cinquante": 50,
    "cent": 100,
}

# Unit spellings (English, German, French) -> canonical unit; the regex prefers the longest spelling.
_UNITS = {
    "guests": "guests", "guest": "guests", "people": "guests", "persons": "guests", "person": "guests",
    "pax": "guests", "adults": "guests", "adult": "guests",
    "personen": "guests", "gäste": "guests", "gästen": "guests", "gast": "guests",
    "personnes": "guests", "personne": "guests", "invités": "guests", "convives": "guests",
    "couverts": "guests",
    "children": "children", "child": "children", "kids": "children", "kid": "children",
    "kinder": "children", "kindern": "children", "enfants": "children",
    "enfant": "children",
    "hours": "hours", "hour": "hours", "hrs": "hours", "hr": "hours",
    "stunden": "hours", "stunde": "hours", "std": "hours", "heures": "hours", "heure": "hours",
    "minutes": "minutes", "minute": "minutes", "mins": "minutes", "min": "minutes", "minuten": "minutes",
    "days": "days", "day": "days", "tage": "days", "tagen": "days", "tag": "days", "jours": "days",
    "jour": "days",
    "business days": "business days", "working days": "business days", "werktage": "business days",
    "werktagen": "business days", "jours ouvrés": "business days", "jours ouvrables": "business days",
    "weeks": "weeks", "week": "weeks", "wochen": "weeks", "woche": "weeks", "semaines": "weeks",
    "semaine": "weeks",
    "months": "months", "month": "months", "monate": "months", "monaten": "months", "monat": "months",
    "mois": "months",
    "years": "years", "year": "years", "jahre": "years", "jahren": "years", "jahr": "years",
    "ans": "years", "années": "years", "année": "years",
    "miles": "miles", "mile": "miles", "mi": "miles",
    "km": "km", "kilometers": "km", "kilometres": "km", "kilometer": "km", "kilomètres": "km",
    "kg": "kg", "kilo": "kg", "kilos": "kg", "g": "g", "grams": "g", "gramm": "g", "grammes": "g",
    "lb": "lb", "lbs": "lb", "l": "l", "liter": "l", "liters": "l", "litres": "l", "litre": "l",
    "ml": "ml",
    "pieces": "pieces", "piece": "pieces", "pcs": "pieces", "stück": "pieces", "stk": "pieces",
    "pièces": "pieces", "pièce": "pieces",
    "percent": "%", "per cent": "%", "%": "%", "prozent": "%", "pour cent": "%",
}

# A number as written in English ("1,200.50"), German/French ("1.200,50", "1 200,50" with a narrow
# space) or Swiss ("1'200.50") text, or a number word.
_DIGITS = r"\d{1,3}(?:[,.'\u202f\u00a0]\d{3})+(?:[.,]\d+)?(?!\d)|\d+(?:[.,]\d+)?"
_NUM = r"(?P<num>" + _DIGITS + "|" + "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True)) + r")"

# Currency spellings -> the prefix of the normal form ("$60", "€12.5", "£8", "CHF 9").
_CURRENCY = {
    "$": "$", "us$": "$", "usd": "$", "dollar": "$", "dollars": "$", "bucks": "$",
    "€": "€", "eur": "€", "euro": "€", "euros": "€",
    "£": "£", "gbp": "£", "pound": "£", "pounds": "£",
    "chf": "CHF ", "fr.": "CHF ", "sfr.": "CHF ", "franken": "CHF ", "francs": "CHF ", "franc": "CHF ",
}
PRICE_PREFIXES = ("$", "€", "£", "CHF ")
_CUR_BEFORE = r"(?P<pre>us\$|\$|€|£|\b(?:usd|eur|gbp|chf|sfr\.|fr\.))"
_CUR_AFTER = r"(?P<post>€|\$|£|\b(?:usd|eur|gbp|chf|euros?|dollars?|bucks|pounds?|franken|francs?)\b)"


def _amount(name: str) -> str:
    return r"(?P<" + name + r">" + _DIGITS + r")(?:[.,][-–])?"


_MONEY_RE = re.compile(
    _CUR_BEFORE + r"\s?" + _amount("a") + r"(?:\s?(?P<k>k)\b)?"
    r"|(?<![\w.,])" + _amount("b") + r"\s?" + _CUR_AFTER,
    re.IGNORECASE,
)
_UNIT_ALT = "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))
_UNIT_RE = re.compile(
    r"(?<![\w$€£.,:'])" + _NUM + r"(?:\s?-\s?|\s|\u00a0)?(?P<unit>" + _UNIT_ALT + r")\.?(?![\w])",
    re.IGNORECASE,
)


def parse_number(raw: str) -> str:
    """A written number in one normal form: '1,200.00', '1.200,00' and "1'200" -> '1200'; '12,50' and
    '12.50' -> '12.5'; 'fifteen', 'fünfzehn', 'quinze' -> '15'. A comma or dot followed by exactly three
    digits (and no other separator) groups thousands; otherwise the last separator is the decimal mark."""
    word = _NUMBER_WORDS.get(raw.lower())
    if word is not None:
        return str(word)
    value = re.sub(r"['\u202f\u00a0]", "", raw)
    if "," in value and "." in value:
        decimal = "," if value.rfind(",") > value.rfind(".") else "."
        value = value.replace("." if decimal == "," else ",", "").replace(",", ".")
    elif re.fullmatch(r"\d{1,3}(?:[,.]\d{3})+", value):
        value = re.sub(r"[,.]", "", value)
    else:
        value = value.replace(",", ".")
    try:
        number = Decimal(value)
    except InvalidOperation:
        return value
    return format(number.normalize(), "f") if number else "0"




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
    """Money amounts in ``text`` as currency prefix and number: ``{"$60", "$5"}`` for "$60 per adult,
    filet +5 dollars", ``{"€12.5"}`` for "12,50 €" or "EUR 12.50", ``{"CHF 9"}`` for "CHF 9.-"."""
    found: set[str] = set()
    for match in _MONEY_RE.finditer(text or ""):
        raw = match.group("a") or match.group("b")
        currency = _CURRENCY[(match.group("pre") or match.group("post")).lower()]
        number = parse_number(raw)
        if match.group("k"):
            number = parse_number(str(Decimal(number) * 1000))
        found.add(f"{currency}{number}")
    return found


def extract_quantities(text: str) -> set[str]:
    """Numbers with a unit, e.g. ``{"15 guests", "2 hours", "20%"}``."""
    found: set[str] = set()
    for match in _UNIT_RE.finditer(text or ""):
        number = parse_number(match.group("num"))
        unit = _UNITS[" ".join(match.group("unit").lower().split())]
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
    return fact.startswith(PRICE_PREFIXES)


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
        optional ``not_offered`` names, a ``prices`` map of amounts in ``currency`` (an ISO code or
        symbol; US dollars when absent), and any text."""
        if not isinstance(knowledge, dict):
            raise ValueError(f"a knowledge file must hold a JSON object, got {type(knowledge).__name__}")  # noqa: TRY004
        menu = {**_menu_terms(knowledge.get("menu")), **_menu_terms(knowledge.get("menu_items"))}
        not_offered = _menu_terms(knowledge.get("not_offered"))
        terms = {**not_offered, **menu}
        facts: set[str] = {f"item:{_normalise_item(name)}" for name in menu.values()}
        for text in _strings(knowledge):
            facts |= extract_prices(text) | extract_quantities(text)
        currency = _knowledge_currency(knowledge)
        for value in _price_values(knowledge.get("prices")):
            facts.add(f"{currency}{parse_number(str(value))}")
        for entry in knowledge.get("menu_items") or []:
            if isinstance(entry, dict) and isinstance(entry.get("price"), (int, float)):
                facts.add(f"{currency}{parse_number(str(entry['price']))}")
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


def _knowledge_currency(knowledge: dict[str, Any]) -> str:
    code = str(knowledge.get("currency") or "USD").strip().lower()
    if code not in _CURRENCY:
        raise ValueError(f"knowledge file: unknown currency {knowledge.get('currency')!r}; "
                         f"expected one of USD, EUR, GBP, CHF")
    return _CURRENCY[code]


# ------------------------------------------------------------------------------- times, dates, contacts

_AMPM = r"(?P<ampm>a\.?\s?m\.?|p\.?\s?m\.?)(?![\w])"
_TIME_RE = re.compile(
    # 6 pm, 6:30pm, 6.30 p.m.
    r"(?<![\w:.,])(?P<h1>[01]?\d)(?:[:.](?P<m1>[0-5]\d))?\s?" + _AMPM +
    # 18:30, 18:30 Uhr, 18.30 Uhr, 18 Uhr
    r"|(?<![\w:.,])(?P<h2>[01]?\d|2[0-3]):(?P<m2>[0-5]\d)(?![\d:])(?:\s?uhr\b)?"
    r"|(?<![\w:.,])(?P<h3>[01]?\d|2[0-3])(?:\.(?P<m3>[0-5]\d))?\s?uhr\b"
    # 18h30, 18 h 30, 18h
    r"|(?<![\w:.,])(?P<h4>[01]?\d|2[0-3])\s?h\s?(?P<m4>[0-5]\d)?(?![\w])",
    re.IGNORECASE,
)

_MONTHS = {
    1: ("january", "jan", "januar", "jänner", "janvier", "janv"),
    2: ("february", "feb", "februar", "février", "fevrier", "févr", "fevr"),
    3: ("march", "mar", "märz", "maerz", "mars"),
    4: ("april", "apr", "avril", "avr"),
    5: ("may", "mai"),
    6: ("june", "jun", "juni", "juin"),
    7: ("july", "jul", "juli", "juillet", "juil"),
    8: ("august", "aug", "août", "aout"),
    9: ("september", "sep", "sept", "septembre"),
    10: ("october", "oct", "oktober", "okt", "octobre"),
    11: ("november", "nov", "novembre"),
    12: ("december", "dec", "dezember", "dez", "décembre", "decembre", "déc"),
}
_MONTH_NAMES = {name: number for number, names in _MONTHS.items() for name in names}
_MONTH_ALT = "|".join(sorted((re.escape(m) for m in _MONTH_NAMES), key=len, reverse=True))


def _day(name: str) -> str:
    return r"(?P<" + name + r">[0-3]?\d)(?:st|nd|rd|th|er|e|\.)?"


def _year(name: str) -> str:
    return r"(?:,?\s(?P<" + name + r">(?:19|20)\d\d)(?![\w-]))?"



_DATE_RE = re.compile(
    r"(?<![\w-])(?P<iy>(?:19|20)\d\d)-(?P<im>[01]\d)-(?P<id>[0-3]\d)(?![\w-])"
    r"|(?<![\w.])(?P<gd>[0-3]?\d)\.(?P<gm>[01]?\d)\.(?P<gy>(?:19|20)?\d\d)(?![\w])"
    r"|(?<![\w/])(?P<sa>[0-3]?\d)/(?P<sb>[0-3]?\d)/(?P<sy>(?:19|20)?\d\d)(?![\w/])"
    r"|(?<![\w.])" + _day("dd") + r"\s?(?:of\s)?(?P<dm>" + _MONTH_ALT + r")\.?(?![\w])" + _year("dy")
    + r"|(?<![\w])(?P<md>" + _MONTH_ALT + r")\.?\s" + _day("mdd") + r"(?![\w])" + _year("mdy"),
    re.IGNORECASE,
)
_WEEKDAYS = {
    "mon": ("monday", "mondays", "mon", "montag", "montags", "lundi", "lundis"),
    "tue": ("tuesday", "tuesdays", "tue", "tues", "dienstag", "dienstags", "mardi", "mardis"),
    "wed": ("wednesday", "wednesdays", "wed", "mittwoch", "mittwochs", "mercredi", "mercredis"),
    "thu": ("thursday", "thursdays", "thu", "thurs", "donnerstag", "donnerstags", "jeudi", "jeudis"),
    "fri": ("friday", "fridays", "fri", "freitag", "freitags", "vendredi", "vendredis"),
    "sat": ("saturday", "saturdays", "sat", "samstag", "samstags", "sonnabend", "samedi", "samedis"),
    "sun": ("sunday", "sundays", "sun", "sonntag", "sonntags", "dimanche", "dimanches"),
}
_WEEKDAY_NAMES = {name: day for day, names in _WEEKDAYS.items() for name in names}
_WEEKDAY_RE = re.compile(
    r"(?<![\w])(" + "|".join(sorted(_WEEKDAY_NAMES, key=len, reverse=True)) + r")(?![\w])", re.IGNORECASE)
_EMAIL_RE = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PLACEHOLDER_RE = re.compile(r"\[(?P<kind>[A-Z][A-Z_]*?)(?:_\d+)?\]")
_PHONE_RE = re.compile(r"(?<![\w+])(?:\+|00)?\d[\d \-/()]{5,}\d(?![\w])")


def _hhmm(hour: int, minute: int) -> str:
    return f"time:{hour:02d}:{minute:02d}"


def extract_times(text: str) -> set[str]:
    """Clock times as ``time:HH:MM`` (24 h): "6 pm", "6:30 p.m.", "18:30", "18.30 Uhr", "18h30", "18h".
    A bare "18.30" is read as a number, not a time; "2h" is read as 02:00 (write durations with a unit
    word, "2 hours")."""
    found: set[str] = set()
    for match in _TIME_RE.finditer(text or ""):
        if match.group("h1") is not None:
            hour, minute = int(match.group("h1")), int(match.group("m1") or 0)
            if not 1 <= hour <= 12:
                continue
            pm = match.group("ampm").lower().startswith("p")
            hour = (hour % 12) + (12 if pm else 0)
        else:
            index = next(i for i in "234" if match.group("h" + i) is not None)
            hour, minute = int(match.group("h" + index)), int(match.group("m" + index) or 0)
        found.add(_hhmm(hour, minute))
    return found


def _date(year: int | None, month: int, day: int) -> str | None:
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    return f"date:{year:04d}-{month:02d}-{day:02d}" if year else f"date:{month:02d}-{day:02d}"


def extract_dates(text: str) -> set[str]:
    """Calendar dates as ``date:YYYY-MM-DD`` or, without a year, ``date:MM-DD``: ISO dates, German
    "12.05.2026", day and month names in English, German and French ("12 March", "March 12th",
    "12. März", "1er mai"). A slash date with a year is read day first unless the first number cannot
    be a month ("05/12/2026" is 5 December; "12/25/2026" is 25 December)."""
    found: set[str] = set()
    for m in _DATE_RE.finditer(text or ""):
        if m.group("iy"):
            date = _date(int(m.group("iy")), int(m.group("im")), int(m.group("id")))
        elif m.group("gd"):
            year = int(m.group("gy"))
            date = _date(year + 2000 if year < 100 else year, int(m.group("gm")), int(m.group("gd")))
        elif m.group("sa"):
            a, b, year = int(m.group("sa")), int(m.group("sb")), int(m.group("sy"))
            day, month = (b, a) if b > 12 else (a, b)
            date = _date(year + 2000 if year < 100 else year, month, day)
        elif m.group("dm"):
            year = m.group("dy")
            date = _date(int(year) if year else None, _MONTH_NAMES[m.group("dm").lower()], int(m.group("dd")))
        else:
            year = m.group("mdy")
            date = _date(int(year) if year else None, _MONTH_NAMES[m.group("md").lower()], int(m.group("mdd")))
        if date:
            found.add(date)
    return found


def extract_weekdays(text: str) -> set[str]:
    """Days of the week, in English, German or French, as ``weekday:mon`` ... ``weekday:sun``."""
    return {f"weekday:{_WEEKDAY_NAMES[m.group(1).lower()]}" for m in _WEEKDAY_RE.finditer(text or "")}


def extract_contacts(text: str) -> set[str]:
    """E-mail addresses (``email:<address>``), phone numbers of 7 or more digits (``phone:<digits>``)
    and anonymisation placeholders (``placeholder:PHONE`` for "[PHONE]" or "[PHONE_2]")."""
    text = text or ""
    found = {f"placeholder:{m.group('kind')}" for m in _PLACEHOLDER_RE.finditer(text)}
    found |= {f"email:{m.group(0).lower().rstrip('.')}" for m in _EMAIL_RE.finditer(text)}
    without_emails = _EMAIL_RE.sub(" ", text)
    for match in _PHONE_RE.finditer(without_emails):
        digits = re.sub(r"\D", "", match.group(0))
        if len(digits) >= 7 and not extract_dates(match.group(0)):
            found.add(f"phone:{digits}")
    return found


# ---------------------------------------------------------------------------------------- reference facts

_CAP_WORD = r"[A-ZÀ-ÖØ-Þ][\w'’&-]*"
_CONNECTORS = r"(?:au|aux|à|la|le|de|du|des|d'|von|vom|zum|zur|am|of|the|and|&|'n'|n')"
_NAME_RE = re.compile(_CAP_WORD + r"(?:\s(?:" + _CONNECTORS + r"\s)?" + _CAP_WORD + r")*")
_SENTENCE_START_RE = re.compile(r"(?:^|[.!?:;\n•*\-–—\"“„(]\s*)$")
_NOT_NAMES = frozenset({
    "i", "i'm", "i'll", "i've", "i'd", "ok", "okay", "hi", "hello", "hey", "dear", "thanks", "thank",
    "yes", "no", "please", "sie", "ihr", "ihre", "ihnen", "vous", "je", "nous", "faq", "am", "pm",
})
# Capitalised only because they open a sentence: determiners, pronouns, interjections, imperatives.
_SENTENCE_STARTERS = frozenset({
    "our", "the", "a", "an", "this", "these", "that", "those", "we", "you", "they", "it", "yes", "no", "sure",
    "please", "call", "order", "visit", "book", "pick", "come", "contact", "email", "write", "try", "enjoy",
    "unser", "unsere", "der", "die", "das", "ein", "eine", "wir", "ja", "nein", "gerne", "bitte", "rufen",
    "nos", "notre", "le", "la", "les", "un", "une", "oui", "non", "appelez", "commandez", "venez",
})
_GERMAN_WORDS = frozenset({"und", "der", "die", "das", "ist", "wir", "nicht", "mit", "für", "ein", "eine",
                           "sie", "ihr", "bei", "auch", "es", "gibt", "haben", "können", "bitte", "uhr"})
_ENGLISH_WORDS = frozenset({"the", "and", "is", "we", "you", "not", "with", "for", "a", "an", "are",
                            "our", "can", "please", "of", "to", "it"})
# Facts of these kinds contradict the reference when the answer states another value of the same kind
# (another price, another time); weekdays, names and placeholders only ever add.
_EXCLUSIVE_KINDS = ("price", "time", "date", "email", "phone")


def _looks_german(text: str) -> bool:
    words = re.findall(r"\w+", text.lower())
    return sum(w in _GERMAN_WORDS for w in words) > sum(w in _ENGLISH_WORDS for w in words)


def _typed_facts(text: str) -> set[str]:
    return (extract_prices(text) | extract_quantities(text) | extract_times(text) | extract_dates(text)
            | extract_weekdays(text) | extract_contacts(text))


def extract_names(reference: str, question: str = "") -> set[str]:
    """Names the reference commits to, as ``name:<lower-case name>``: a capitalised phrase of two or
    more words not at the start of a sentence ("our Sourdough Rye", "the Pain au Chocolat"), a single
    capitalised word not at the start of a sentence in a text that is not German (where every noun is
    capitalised), and any such word or phrase of the question that the reference repeats, in any case
    ("Habt ihr Dinkelbrot?" - "Ja, Dinkelbrot gibt es ..."). Day and month names, units, currencies
    and number words are not names."""
    reference, question = reference or "", question or ""
    skip = set(_MONTH_NAMES) | set(_WEEKDAY_NAMES) | _NOT_NAMES | set(_UNITS) | set(_CURRENCY) | set(_NUMBER_WORDS)
    german = _looks_german(reference)
    names: set[str] = set()

    def phrases(text: str) -> list[str]:
        out = []
        for match in _NAME_RE.finditer(text):
            words = match.group(0).split()
            # A sentence's first word is capitalised anyway: it counts only as part of a longer name.
            starts = bool(_SENTENCE_START_RE.search(text[:match.start()]))
            while words and words[0].lower().strip("'’") in skip | (_SENTENCE_STARTERS if starts else set()):
                words, starts = words[1:], False
            while words and words[-1].lower() in skip:
                words = words[:-1]
            if starts and len(words) < 2:
                words = []
            if words and not re.fullmatch(_CONNECTORS, words[0], re.IGNORECASE):
                out.append(" ".join(words))
        return out

    for phrase in phrases(reference):
        if len(phrase.split()) >= 2 or not german:
            names.add(_normalise_item(phrase))
    for phrase in phrases(question):
        if _item_pattern(phrase).search(reference):
            names.add(_normalise_item(phrase))
    return {f"name:{n}" for n in names if n.lower() not in skip and not n.isdigit()}


def reference_facts(reference: str, question: str = "") -> set[str]:
    """Every checkable token of a reference answer: prices, numbers with units, clock times, dates,
    weekdays, e-mail addresses, phone numbers, anonymisation placeholders and names (``extract_names``;
    ``question`` is the customer's message the reference answers)."""
    return _typed_facts(reference) | extract_names(reference, question)


def fact_kind(fact: str) -> str:
    """``price``, ``quantity:<unit>``, ``time``, ``date``, ``weekday``, ``email``, ``phone``,
    ``placeholder``, ``name`` or ``item``."""
    if is_price(fact):
        return "price"
    prefix, sep, _ = fact.partition(":")
    if sep and prefix in ("time", "date", "weekday", "email", "phone", "placeholder", "name", "item"):
        return prefix
    if fact.endswith("%"):
        return "quantity:%"
    return "quantity:" + fact.split(" ", 1)[-1]


@dataclass(frozen=True)
class ReferenceFactScore:
    """One answer scored against its reference's facts (see ``reference_fact_score``)."""

    score: float | None
    reference: frozenset[str]
    stated: frozenset[str]
    contradicted: frozenset[str]

    @property
    def missed(self) -> frozenset[str]:
        return self.reference - self.stated


def reference_fact_score(answer: str, reference: str, question: str = "") -> ReferenceFactScore:
    """Reference fact accuracy of one answer, from the reference answer alone.

    Let R be ``reference_facts(reference, question)``. The answer *states* a fact of R when its own
    typed facts (price, quantity, time, date, weekday, contact, placeholder; extracted with the same
    rules) include it, or, for a name, when the answer mentions the name (case-insensitive, optional
    plural). The answer *contradicts* the reference with every typed fact it states that is not in R
    while R holds a fact of the same exclusive kind: another price, another number of the same unit,
    another time, date, e-mail or phone number. The score is ``|stated| / (|R| + |contradicted|)``:
    1.0 exactly when the answer states all of the reference's facts and contradicts none, 0.0 when it
    states none; ``None`` (the example is not counted) when the reference has no checkable fact.
    """
    ref = reference_facts(reference, question)
    if not ref:
        return ReferenceFactScore(None, frozenset(), frozenset(), frozenset())
    typed = _typed_facts(answer or "")
    stated = {f for f in ref if (f in typed if not f.startswith("name:")
                                 else _item_pattern(f[len("name:"):]).search(answer or ""))}
    kinds = {fact_kind(f) for f in ref}
    exclusive = {k for k in kinds if k in _EXCLUSIVE_KINDS or k.startswith("quantity:")}
    contradicted = {f for f in typed - ref if fact_kind(f) in exclusive}
    score = len(stated) / (len(ref) + len(contradicted))
    return ReferenceFactScore(score, frozenset(ref), frozenset(stated), frozenset(contradicted))

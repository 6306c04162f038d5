"""Replace personal data in chat messages with placeholders, consistently within a conversation.

Placeholders: ``[EMAIL]``, ``[PHONE]``, ``[PERSON_NAME]``, ``[ADDRESS]``, ``[CARD_NUMBER]``,
``[ACCOUNT_NUMBER]``, ``[ID]`` and ``[IP_ADDRESS]``. Within one mapping (one per conversation) the
same value always gets the same placeholder and a second distinct value of a kind gets a numbered one
(``[PERSON_NAME_2]``). A first name or surname alone that belongs to a full name seen before in the
conversation gets that person's placeholder, and so does any later capitalised mention of it; a street
that a full address seen before starts with (or the reverse) shares its placeholder. The mapping holds
the original values: keep it in memory, never write it next to the anonymised data.

What it catches (the detection is rule-based; there is no NER model):

- EMAIL: ``local@domain.tld`` addresses.
- PHONE: numbers that ``phonenumbers.PhoneNumberMatcher`` accepts as *valid* for the configured
  region (default US) or written in international form (``+44 20 7946 0958``).
- CARD_NUMBER: 13-19 digits in a row, or grouped 4-4-4-4(-3), 4-6-5 or 4-6-4 by spaces or dashes,
  that pass the Luhn check and are not part of a longer run of digit groups.
- ACCOUNT_NUMBER: IBANs that pass the mod-97 check (``python-stdnum``), and 6-17 digit numbers right
  after "account", "acct", "routing", "sort code" or "BSB" (optionally followed by "number"/"no."/"#").
- ID: UUIDs; US social security numbers (``123-45-6789``); code-like ids with a letter prefix and a
  separator (``BK-48213``, ``cust_9f8a7``, ``INV-2024-0012``, ``int-000123``; a lowercase prefix with a
  dash and digits only needs 5+ digits so that "mid-2026" is left alone, and standards such as
  "ISO-8601" or "SHA-256" are skipped); and any 4+ character token containing a digit right after
  "booking", "reservation", "confirmation", "order", "invoice", "ticket", "case", "customer", "member",
  "loyalty", "tracking", "reference"/"ref" or "policy" (optionally followed by "id"/"number"/"code"/"#").
- IP_ADDRESS: IPv4 and IPv6 addresses that Python's ``ipaddress`` accepts.
- ADDRESS: US street addresses: a house number, an optional direction, one to four capitalised words
  or an ordinal ("5th"), a street suffix (Street, St, Ave, Blvd, Rd, Dr, Ln, Ct, Way, Pkwy, Hwy, ...),
  an optional unit ("Apt 3", "Suite 1500", "#4"), extended to the city, state and ZIP code when
  ``pyap2``'s US address rules match there; and "PO Box 123".
- PERSON_NAME, from context cues, the name being one to three capitalised words:
  - strong cues, any capitalised word that is not a common word: "my name is X", "my name's X",
    "call me X", honorifics ("Mr. X", "Mrs", "Ms", "Miss", "Dr", "Mx"), and qualified name fields
    ("Full name: X", "customer_name": "X", first/last/contact/guest/client name);
  - weak cues, the first word must be a known first name (the Latin-script first-name lists of
    ``faker``, about 4,800 names): "I'm X", "I am X", "this is X", "it's X", "Hi/Hello/Hey/Dear X",
    "thanks/thank you/cheers/regards/best/sincerely X" (also as a signature on the next line), "ask
    for X", "speak/talk to/with X", "contact X", "Chef X", a bare "name: X" field and a "- X"
    signature line;
  - no cue: a known first name directly followed by a known surname ("Maria Garcia").
  First names that are also common words (months, "Will", "Grant", "Rose", "Jasmine", ...) are only
  taken with a strong cue or when a known surname follows them, so "this is June 5" and "Jasmine
  Rice" stay as they are. Menu and business words ("Hibachi", "Filet Mignon", "Chef") are never names.
- In tool-call arguments (and in JSON objects parsed from them), the whole string value of a key that
  names a kind (``email``, ``phone``, ``address``, ``customer_name``, ``booking_id``, ...; a bare
  ``name`` only when it starts with a known first name) besides everything found in the text, and
  the ``name`` field of a user message.

What it misses:

- names without a cue that are not a known first name followed by a known surname ("Zbigniew will
  come"), names written in lowercase ("my name is maria"), and names in non-Latin scripts;
- a first name alone, without a cue, unless the full name was seen earlier in the conversation;
- street addresses outside the US pattern (no house number, non-English street types, "1585
  Broadway"), and a city or ZIP code on its own;
- phone numbers that libphonenumber does not consider valid for the region (no area code, as in
  "555-0100"; a national number of another country), and bank account numbers without an
  "account"/"routing" cue;
- ids without a separator, a digit, or a cue word ("ABCDEF"), and numeric values under id keys in
  tool-call arguments (their type is kept so the arguments still fit the tool schema);
- dates of birth, ages, social media handles, licence plates, passport numbers and free-text health
  or financial details.
"""

from __future__ import annotations

import importlib
import ipaddress
import itertools
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pandas as pd
import phonenumbers
from faker.providers.lorem.en_US import Provider as _LoremProvider
from pyap.source_US import data as _pyap_us
from stdnum import iban as _iban
from stdnum import luhn as _luhn

KINDS = ("EMAIL", "PHONE", "PERSON_NAME", "ADDRESS", "CARD_NUMBER", "ACCOUNT_NUMBER", "ID", "IP_ADDRESS")
# When two findings overlap, the kind listed first wins (an e-mail address contains an id-like token,
# a street name contains a person's name).
_PRIORITY = {
    kind: rank
    for rank, kind in enumerate(
        ("EMAIL", "CARD_NUMBER", "ACCOUNT_NUMBER", "IP_ADDRESS", "ADDRESS", "ID", "PHONE", "PERSON_NAME")
    )
}

PLACEHOLDER_RE = re.compile(r"\[(?:" + "|".join(KINDS) + r")(?:_\d+)?\]")


@dataclass(frozen=True)
class PiiSpan:
    """One piece of personal data found in a text: its kind and ``text[start:end]``."""

    kind: str
    start: int
    end: int
    text: str


# ---------------------------------------------------------------------------------------------------
# Word lists
# ---------------------------------------------------------------------------------------------------

_NAME_LOCALES = (
    "en_US",
    "en_GB",
    "en_IE",
    "en_IN",
    "es_ES",
    "es_MX",
    "fr_FR",
    "de_DE",
    "it_IT",
    "pt_BR",
    "nl_NL",
    "pl_PL",
)


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Capitalised words that start sentences, greet, or name the business's own things; never a name.
_STOP_WORDS = _word_set(
    """
    a about after all also am an and any are as at be been being best but by can could dear did do does
    doing for from get good great had has have he hello her here hey hi him his how i i'm if in is it its
    just let me more my no not now of ok okay on or our please she should so sorry sure thank thanks that
    the their them then there these they this those to today tomorrow tonight us was we well were what when
    where which who why will with would yes yet you your yours monday tuesday wednesday thursday friday
    saturday sunday january february march april may june july august september october november december
    team chef chefs manager owner staff customer customers support service services guest guests sir madam
    everyone everybody folks guys friend friends family admin assistant bot hibachi filet mignon lobster
    steak chicken shrimp salmon scallops scallop tofu vegetable vegetables fried rice noodles noodle sushi
    teriyaki tempura miso sake wagyu premium deluxe special specials menu party package packages catering
    event events restaurant grill kitchen dinner lunch dessert booking reservation order invoice deposit
    price quote
    """
)

# First names that are also everyday words or places: only a strong cue or a following surname makes
# them a name.
_COMMON_WORD_NAMES = _word_set(
    """
    april may june august march summer autumn winter dawn joy hope faith grace destiny melody harmony
    patience precious charity liberty trinity jasmine ivy iris lily daisy rose holly heather hazel amber
    ruby jade crystal pearl olive ginger basil sage pepper honey candy cherry brandy sherry coral austin
    florence sydney jordan israel georgia virginia carolina dallas paris chelsea madison will grant mark
    bill chase hunter mason carter taylor parker cooper angel gloria mercedes nova luna stella bella don
    dean earl guy nick sue ray roy jack jean frank drew gene sandy rich art pat miles lane page sunny star
    sky valentine christian royal major king prince bishop pastor deacon sterling else floor job lot
    """
)


@lru_cache(maxsize=1)
def _name_lists() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(first names, surnames, common English words), all casefolded."""
    first: set[str] = set()
    last: set[str] = set()
    for locale in _NAME_LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        for attribute in ("first_names", "first_names_male", "first_names_female"):
            first.update(
                name.casefold() for name in getattr(provider, attribute, ()) or () if " " not in name
            )
        last.update(name.casefold() for name in getattr(provider, "last_names", ()) or () if " " not in name)
    common = {word.casefold() for word in _LoremProvider.word_list} | _STOP_WORDS
    return frozenset(first - _STOP_WORDS), frozenset(last - common), frozenset(common)


# ---------------------------------------------------------------------------------------------------
# Patterns
# ---------------------------------------------------------------------------------------------------

_DIGIT = re.compile(r"\d")
_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+'-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)
# Card layouts: 4-4-4-4(-3), 4-6-5 (Amex), 4-6-4 (Diners), or 13-19 digits in a row; never part of a
# longer run of digit groups (an IBAN, a phone number next to it).
_CARD = re.compile(
    r"(?<![\w-])(?<!\d[ -])"
    r"(?:\d{4}(?P<sep>[ -])\d{4}(?P=sep)\d{4}(?P=sep)\d{4}(?:(?P=sep)\d{3})?"
    r"|\d{4}(?P<sep2>[ -])\d{6}(?P=sep2)\d{4,5}"
    r"|\d{13,19})"
    r"(?![\w-])(?![ -]\d{2})"
)
_IBAN_CANDIDATE = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{1,4}){3,8}\b")
_ACCOUNT_CUE = re.compile(
    r"(?i:\b(?:account|acct|routing|sort\s+code|bsb)\b(?:\s*(?:number|no\.?|num|#))?\s*(?:is\s+|:\s*|#\s*)?)"
    r"(?P<value>\d[\d -]{4,19}\d)(?![\w-])"
)
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d|\w)")
_IPV6 = re.compile(
    r"(?<![\w:.])(?=[0-9A-Fa-f:]*::?[0-9A-Fa-f]*:)[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])"
)
_UUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
_SSN = re.compile(r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])")
_CODE_ID = re.compile(
    r"(?<![\w-])(?P<prefix>[A-Za-z]{2,12})(?P<sep>[-_])(?P<rest>[A-Za-z0-9]{3,}(?:[-_][A-Za-z0-9]+)*)(?![\w-])"
)
_NOT_ID_PREFIXES = frozenset(
    {"iso", "sha", "utf", "rfc", "md", "ecma", "ieee", "din", "ansi", "covid", "cve", "pep", "mp", "ipv"}
)
_ID_CUE = re.compile(
    r"(?i:\b(?:booking|reservation|confirmation|order|invoice|ticket|case|customer|member|membership|"
    r"loyalty|tracking|reference|ref|policy)\b(?:\s*(?:id|number|no\.?|num|code|#))?\s*(?:is\s+|:\s*|#\s*)?)"
    r"#?(?P<value>[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)"
)

_WORD = r"[A-ZÀ-ÖØ-Þ](?:[a-zß-öø-ÿ]+(?:['’-]?[A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ]+)?|['’][A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ]+)"
_NAME_WORD = re.compile(rf"(?<![\w'’-]){_WORD}(?![\w'’-])")
_NAME_SEQUENCE = rf"(?P<name>{_WORD}(?:[ \t]+(?:[A-Z]\.[ \t]+)?{_WORD}){{0,2}})(?![\w'’-])"
_STRONG_NAME_CUE = re.compile(
    r"(?:(?i:\bmy\s+name\s+is|\bmy\s+name['’]s|\bcall\s+me)\s+"
    r"|\b(?:Mr|Mrs|Ms|Miss|Dr|Mx)\.?[ \t]+"
    r"|(?:^|(?<=[\n\"{,(]))[ \t]*"
    r"(?i:full|first|last|customer|contact|guest|client)[ _](?i:name)\"?\s*[:=]\s*\"?)" + _NAME_SEQUENCE,
    re.MULTILINE,
)
_WEAK_NAME_CUE = re.compile(
    r"(?:(?i:\bI['’]m|\bI\s+am|\bthis\s+is|\bit['’]s|\bit\s+is|\bask\s+for|\b(?:speak|talk)\s+(?:to|with)"
    r"|\bcontact|\bchef)\s+"
    r"|(?i:\b(?:hi|hello|hey|dear|thanks|thank\s+you|thx|cheers|regards|best|sincerely|warmly))"
    r"[ \t]*[,!.]?\s*"
    r"|(?:^|(?<=[\n\"{,(]))[ \t]*(?i:name)\"?\s*[:=]\s*\"?"
    r"|^[ \t]*[-–—~][ \t]*)" + _NAME_SEQUENCE,
    re.MULTILINE,
)

_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Av|Road|Rd|Boulevard|Blvd|Drive|Dr|Lane|Ln|Court|Ct|Place|Pl|Way|Terrace|"
    r"Ter|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Square|Sq|Trail|Trl|Plaza|Plz|Alley|Aly|Loop|Freeway|Fwy|"
    r"Expressway|Expy|Pike|Row|Crescent|Cres|Turnpike|Tpke)"
)
_DIRECTION = r"(?:N|S|E|W|NE|NW|SE|SW|North|South|East|West)"
_STREET = re.compile(
    rf"(?<![\w-])\d{{1,6}}[A-Za-z]?(?:[ \t]+{_DIRECTION}\.?)?"
    rf"(?:[ \t]+(?:[A-Z][A-Za-z'’.-]*|\d+(?:st|nd|rd|th))){{1,4}}[ \t]+(?i:{_STREET_SUFFIX})\b\.?"
    rf"(?:[ \t]+{_DIRECTION}\b\.?)?"
    r"(?:,?[ \t]*(?:(?i:apt|apartment|suite|ste|unit|fl|floor|rm|room)\.?[ \t]*#?|#)"
    r"[ \t]*[A-Za-z0-9-]*\d[A-Za-z0-9-]*)?"
)
_PO_BOX = re.compile(r"(?i:\bP\.?[ \t]?O\.?[ \t]+Box)[ \t]+\d{1,6}\b")
_PYAP_FULL_ADDRESS = re.compile(_pyap_us.full_address, re.VERBOSE | re.UNICODE)
_TRAILING_LOWERCASE = re.compile(r"(?:[\s,]+[a-z]+)+[\s,]*$")

# Tool-call argument keys whose whole string value is personal data of that kind.
_KEY_KINDS = {
    **dict.fromkeys(
        _word_set(
            "full_name first_name last_name customer_name contact_name guest_name client_name host_name "
            "surname given_name family_name"
        ),
        "PERSON_NAME",
    ),
    **dict.fromkeys(_word_set("email email_address customer_email contact_email"), "EMAIL"),
    **dict.fromkeys(_word_set("phone phone_number mobile telephone customer_phone contact_phone"), "PHONE"),
    **dict.fromkeys(
        _word_set(
            "address street street_address address_line1 address_line2 delivery_address event_address "
            "billing_address"
        ),
        "ADDRESS",
    ),
    **dict.fromkeys(
        _word_set(
            "booking_id reservation_id customer_id order_id user_id member_id invoice_id ticket_id "
            "confirmation_code confirmation_number booking_reference"
        ),
        "ID",
    ),
}


def _digit_groups_prefix(candidate: str, accept: Callable[[str], bool]) -> str | None:
    """The longest run of leading space/dash-separated groups whose joined characters ``accept``.

    A greedy pattern can swallow a word that follows the real number ("GB82WEST12345698765432 NOW").
    """
    groups = re.split(r"[ -]", candidate)
    for end in range(len(groups), 0, -1):
        joined = "".join(groups[:end])
        if accept(joined):
            return " ".join(groups[:end]) if " " in candidate else "-".join(groups[:end])
    return None


def _trim_address(address: str) -> int:
    """The length of ``address`` without trailing lowercase words: pyap's rules read "or" as Oregon."""
    match = _TRAILING_LOWERCASE.search(address)
    return match.start() if match else len(address)


def _is_card(digits: str) -> bool:
    return digits.isdigit() and 13 <= len(digits) <= 19 and _luhn.is_valid(digits)


def _normalise(kind: str, value: str, region: str) -> str:
    """The form under which two mentions of one value share a placeholder."""
    if kind == "PHONE":
        try:
            number = phonenumbers.parse(value, region)
        except phonenumbers.NumberParseException:
            return re.sub(r"\D", "", value)
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if kind in ("CARD_NUMBER", "ACCOUNT_NUMBER", "ID"):
        return re.sub(r"[\s#-]", "", value).upper()
    if kind == "IP_ADDRESS":
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            return value.lower()
    if kind == "ADDRESS":
        return " ".join(re.sub(r"[.,]", " ", value).split()).casefold()
    return " ".join(value.split()).casefold()


class Anonymiser:
    """Finds personal data in text and replaces it with numbered placeholders.

    ``region`` is the ISO country code used to read phone numbers written without a country code.
    ``kinds`` limits detection to a subset of :data:`KINDS` (all by default).
    """

    def __init__(self, region: str = "US", kinds: Iterable[str] | None = None) -> None:
        region = region.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown phone region {region!r}; use an ISO 3166 code such as 'US' or 'GB'")
        selected = tuple(kinds) if kinds is not None else KINDS
        unknown = sorted(set(selected) - set(KINDS))
        if unknown or not selected:
            raise ValueError(f"unknown PII kinds {unknown}; choose from {', '.join(KINDS)}")
        self.region = region
        self.kinds = frozenset(selected)
        self._first_names, self._surnames, self._common_words = _name_lists()

    # -- detection -----------------------------------------------------------------------------------

    def find_pii(self, text: str) -> list[PiiSpan]:
        """Every piece of personal data in ``text``, left to right, without overlaps.

        Placeholders such as ``[PERSON_NAME_2]`` are never reported, so anonymised text yields ``[]``.
        """
        if not isinstance(text, str):
            raise TypeError(f"find_pii expects a str, got {type(text).__name__}")
        candidates = self._candidates(text)
        if not candidates:
            return []
        taken: list[tuple[int, int]] = [(m.start(), m.end()) for m in PLACEHOLDER_RE.finditer(text)]
        chosen: list[PiiSpan] = []
        for span in sorted(candidates, key=lambda s: (_PRIORITY[s.kind], s.start - s.end, s.start)):
            if span.kind not in self.kinds or any(
                span.start < end and start < span.end for start, end in taken
            ):
                continue
            taken.append((span.start, span.end))
            chosen.append(span)
        return sorted(chosen, key=lambda s: s.start)

    def _candidates(self, text: str) -> list[PiiSpan]:
        spans: list[PiiSpan] = []

        def add(kind: str, start: int, end: int) -> None:
            spans.append(PiiSpan(kind, start, end, text[start:end]))

        digits = len(_DIGIT.findall(text))
        if "@" in text:
            for m in _EMAIL.finditer(text):
                add("EMAIL", m.start(), m.end())
        if digits >= 13:
            for m in _CARD.finditer(text):
                if _is_card(re.sub(r"\D", "", m.group())):
                    add("CARD_NUMBER", m.start(), m.end())
            for m in _IBAN_CANDIDATE.finditer(text):
                account = _digit_groups_prefix(m.group(), _iban.is_valid)
                if account:
                    add("ACCOUNT_NUMBER", m.start(), m.start() + len(account))
        if digits >= 6:
            for m in _ACCOUNT_CUE.finditer(text):
                value = m.group("value").rstrip(" -")
                if 6 <= len(re.sub(r"\D", "", value)) <= 17:
                    add("ACCOUNT_NUMBER", m.start("value"), m.start("value") + len(value))
        if digits >= 4 and "." in text:
            for m in _IPV4.finditer(text):
                if all(int(part) <= 255 for part in m.group().split(".")):
                    add("IP_ADDRESS", m.start(), m.end())
        if text.count(":") >= 2:
            for m in _IPV6.finditer(text):
                try:
                    ipaddress.IPv6Address(m.group())
                except ValueError:
                    continue
                add("IP_ADDRESS", m.start(), m.end())
        if digits:
            self._find_ids(text, add)
            self._find_addresses(text, add)
        if digits >= 7:
            for match in phonenumbers.PhoneNumberMatcher(
                text, self.region, leniency=phonenumbers.Leniency.VALID
            ):
                add("PHONE", match.start, match.end)
        self._find_names(text, add)
        return spans

    def _find_ids(self, text: str, add: Callable[[str, int, int], None]) -> None:
        for pattern in (_UUID, _SSN):
            for m in pattern.finditer(text):
                add("ID", m.start(), m.end())
        for m in _CODE_ID.finditer(text):
            prefix, separator, rest = m.group("prefix"), m.group("sep"), m.group("rest")
            if prefix.lower() in _NOT_ID_PREFIXES or not _DIGIT.search(rest):
                continue
            all_digits = rest.replace("-", "").replace("_", "").isdigit()
            if separator == "-" and all_digits and prefix.islower() and len(rest) < 5:
                continue
            add("ID", m.start(), m.end())
        for m in _ID_CUE.finditer(text):
            value = m.group("value")
            if len(value) >= 4 and _DIGIT.search(value):
                add("ID", m.start("value"), m.end("value"))

    def _find_addresses(self, text: str, add: Callable[[str, int, int], None]) -> None:
        streets = [(m.start(), m.end()) for m in _STREET.finditer(text)]
        if streets:
            # pyap's rules add the city, state and ZIP code; they are slow, so only run them where a
            # street was seen.
            full = [
                (m.start(), m.start() + _trim_address(m.group())) for m in _PYAP_FULL_ADDRESS.finditer(text)
            ]
            for start, end in streets:
                for full_start, full_end in full:
                    if full_start <= start < full_end:
                        end = max(end, full_end)
                add("ADDRESS", start, end)
        for m in _PO_BOX.finditer(text):
            add("ADDRESS", m.start(), m.end())

    def _find_names(self, text: str, add: Callable[[str, int, int], None]) -> None:
        for m in _STRONG_NAME_CUE.finditer(text):
            self._add_name(text, m.start("name"), m.group("name"), add, strong=True)
        for m in _WEAK_NAME_CUE.finditer(text):
            self._add_name(text, m.start("name"), m.group("name"), add, strong=False)
        words = list(_NAME_WORD.finditer(text))
        for first, last in itertools.pairwise(words):
            if text[first.end() : last.start()] not in (" ", "\t"):
                continue
            first_word, last_word = first.group().casefold(), last.group().casefold()
            if (
                first_word in self._first_names
                and first_word not in _COMMON_WORD_NAMES
                and last_word in self._surnames
            ):
                add("PERSON_NAME", first.start(), last.end())

    def _add_name(
        self, text: str, start: int, words_text: str, add: Callable[[str, int, int], None], strong: bool
    ) -> None:
        """Keep the words of a cued name that look like a name: the first one by the cue's rules,
        the following ones unless they are common words (a known surname always counts)."""
        words = list(_NAME_WORD.finditer(words_text))
        first = words[0].group().casefold()
        is_first_name = first in self._first_names or first in _COMMON_WORD_NAMES
        is_word = first in self._common_words or first in _COMMON_WORD_NAMES
        surname_follows = len(words) > 1 and words[1].group().casefold() in self._surnames
        if strong:
            accepted = is_first_name or not is_word or surname_follows
        else:
            accepted = is_first_name and (not is_word or surname_follows)
        if not accepted:
            return
        end = words[0].end()
        for word in words[1:]:
            lowered = word.group().casefold()
            if lowered not in self._surnames and (lowered in self._common_words or lowered in _STOP_WORDS):
                break
            end = word.end()
        add("PERSON_NAME", start, start + end)

    # -- replacement ---------------------------------------------------------------------------------

    def anonymise_text(self, text: str, mapping: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
        """``text`` with every finding replaced by its placeholder, and the (updated) mapping.

        ``mapping`` maps ``"KIND:normalised value"`` to a placeholder; pass the same dict for every
        text of one conversation so that a value keeps its placeholder.
        """
        mapping = {} if mapping is None else mapping
        # A replacement can, rarely, put two pieces of text side by side that form a new finding;
        # a second pass settles it.
        for _ in range(3):
            spans = self.find_pii(text)
            spans += self._known_name_spans(text, mapping, spans)
            if not spans:
                break
            pieces: list[str] = []
            cursor = 0
            for span in sorted(spans, key=lambda s: s.start):
                pieces.append(text[cursor : span.start])
                pieces.append(self._placeholder(span.kind, span.text, mapping))
                cursor = span.end
            pieces.append(text[cursor:])
            text = "".join(pieces)
        return text, mapping

    def _known_name_spans(self, text: str, mapping: dict[str, str], found: list[PiiSpan]) -> list[PiiSpan]:
        """Capitalised mentions of the words of names already in the mapping, outside ``found``."""
        if "PERSON_NAME" not in self.kinds:
            return []
        tokens = frozenset(
            token
            for key in mapping
            if key.startswith("PERSON_NAME:")
            for token in key.split(":", 1)[1].split()
            if len(token) > 2 and token not in self._common_words and token not in _COMMON_WORD_NAMES
        )
        if not tokens:
            return []
        taken = [(s.start, s.end) for s in found] + [
            (m.start(), m.end()) for m in PLACEHOLDER_RE.finditer(text)
        ]
        spans = []
        for m in _known_tokens_pattern(tokens).finditer(text):
            if m.group()[0].isupper() and not any(
                m.start() < end and start < m.end() for start, end in taken
            ):
                spans.append(PiiSpan("PERSON_NAME", m.start(), m.end(), m.group()))
        return spans

    def _placeholder(self, kind: str, value: str, mapping: dict[str, str]) -> str:
        normalised = _normalise(kind, value, self.region)
        key = f"{kind}:{normalised}"
        if key in mapping:
            return mapping[key]
        placeholder = None
        if kind == "PERSON_NAME":
            placeholder = self._same_person(normalised, mapping)
        elif kind == "ADDRESS":
            placeholder = self._same_address(normalised, mapping)
        if placeholder is None:
            taken = {p for k, p in mapping.items() if k.startswith(kind + ":")}
            placeholder = f"[{kind}]" if not taken else f"[{kind}_{len(taken) + 1}]"
        mapping[key] = placeholder
        return placeholder

    @staticmethod
    def _same_address(address: str, mapping: dict[str, str]) -> str | None:
        """The placeholder of an address already seen that this one starts with, or that starts with
        this one ("12 oak ave" and "12 oak ave austin tx 78701")."""
        for key, placeholder in mapping.items():
            if key.startswith("ADDRESS:"):
                known = key.split(":", 1)[1]
                if address.startswith(known + " ") or known.startswith(address + " "):
                    return placeholder
        return None

    @staticmethod
    def _same_person(name: str, mapping: dict[str, str]) -> str | None:
        """The placeholder of a person already seen whose full name contains this single name, or whose
        lone first name starts this full name."""
        words = name.split()
        names = {k.split(":", 1)[1]: p for k, p in mapping.items() if k.startswith("PERSON_NAME:")}
        if len(words) == 1:
            for known, placeholder in names.items():
                if name in known.split():
                    return placeholder
            return None
        alone = names.get(words[0])
        if alone is not None and not any(p == alone and len(known.split()) > 1 for known, p in names.items()):
            return alone
        return None

    def anonymise_messages(
        self, messages: list[dict], mapping: dict[str, str] | None = None
    ) -> tuple[list[dict], dict[str, str]]:
        """Anonymised copies of OpenAI chat messages (the input is left as it is), and the mapping.

        Every message's ``content`` is anonymised (a string, or the ``text`` of content parts), and
        so are the string values inside ``tool_calls`` arguments; a user message's ``name`` is a
        person's name.
        """
        if not isinstance(messages, list):
            raise TypeError(f"messages must be a list of dicts, got {type(messages).__name__}")
        mapping = {} if mapping is None else mapping
        result = []
        for index, message in enumerate(messages):
            if not isinstance(message, dict):
                raise TypeError(f"message {index} must be a dict, got {type(message).__name__}")
            anonymised = dict(message)
            content = message.get("content")
            if isinstance(content, str):
                anonymised["content"] = self.anonymise_text(content, mapping)[0]
            elif isinstance(content, list):
                anonymised["content"] = [self._anonymise_value(part, mapping) for part in content]
            if message.get("tool_calls"):
                anonymised["tool_calls"] = [
                    self._anonymise_tool_call(call, mapping) for call in message["tool_calls"]
                ]
            if message.get("role") == "user" and isinstance(message.get("name"), str):
                anonymised["name"] = self._whole_value("PERSON_NAME", message["name"], mapping)
            result.append(anonymised)
        return result, mapping

    def _anonymise_tool_call(self, call: Any, mapping: dict[str, str]) -> Any:
        if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
            return call
        function = dict(call["function"])
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                parsed = json.loads(arguments)
            except json.JSONDecodeError:
                function["arguments"] = self.anonymise_text(arguments, mapping)[0]
            else:
                anonymised = self._anonymise_value(parsed, mapping)
                if anonymised != parsed:
                    function["arguments"] = json.dumps(anonymised, ensure_ascii=False)
        elif isinstance(arguments, (dict, list)):
            function["arguments"] = self._anonymise_value(arguments, mapping)
        return {**call, "function": function}

    def _anonymise_value(self, value: Any, mapping: dict[str, str], key: str | None = None) -> Any:
        """A JSON value with its strings anonymised; a string under a key naming a kind is replaced whole."""
        if isinstance(value, dict):
            return {k: self._anonymise_value(v, mapping, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self._anonymise_value(item, mapping, key) for item in value]
        if not isinstance(value, str):
            return value
        kind = _KEY_KINDS.get((key or "").lower())
        if kind is None and (key or "").lower() == "name" and self._starts_with_first_name(value):
            kind = "PERSON_NAME"
        if kind is not None and kind in self.kinds:
            return self._whole_value(kind, value, mapping)
        return self.anonymise_text(value, mapping)[0]

    def _starts_with_first_name(self, value: str) -> bool:
        words = value.split()
        return (
            bool(words) and words[0].casefold() in self._first_names and bool(_NAME_WORD.fullmatch(words[0]))
        )

    def _whole_value(self, kind: str, value: str, mapping: dict[str, str]) -> str:
        if not value.strip() or PLACEHOLDER_RE.fullmatch(value.strip()):
            return value
        return self._placeholder(kind, value, mapping)

    def anonymise_frame(
        self, df: pd.DataFrame, column: str = "messages", group: str | None = "conversation_id"
    ) -> pd.DataFrame:
        """A copy of ``df`` with ``column`` anonymised, one mapping per value of ``group``.

        ``column`` holds chat message lists or plain strings (``None`` stays ``None``). With
        ``group=None`` every row gets its own mapping.
        """
        if column not in df.columns:
            raise ValueError(
                f"column {column!r} not in the frame (columns: {', '.join(map(str, df.columns))})"
            )
        if group is not None and group not in df.columns:
            raise ValueError(f"group column {group!r} not in the frame")
        mappings: dict[Any, dict[str, str]] = {}
        groups = df[group].tolist() if group is not None else [None] * len(df)
        values = []
        for position, (value, key) in enumerate(zip(df[column].tolist(), groups)):
            mapping = mappings.setdefault(key, {}) if group is not None else {}
            if value is None or (isinstance(value, float) and pd.isna(value)):
                values.append(value)
            elif isinstance(value, str):
                values.append(self.anonymise_text(value, mapping)[0])
            elif isinstance(value, list):
                try:
                    values.append(self.anonymise_messages(value, mapping)[0])
                except TypeError as exc:
                    raise ValueError(f"row {df.index[position]!r} of column {column!r}: {exc}") from exc
            else:
                raise ValueError(
                    f"row {df.index[position]!r} of column {column!r}: expected a list of messages or a str, "
                    f"got {type(value).__name__}"
                )
        out = df.copy()
        out[column] = pd.Series(values, index=df.index, dtype=object)
        return out


@lru_cache(maxsize=4096)
def _known_tokens_pattern(tokens: frozenset[str]) -> re.Pattern[str]:
    alternatives = "|".join(sorted((re.escape(t) for t in tokens), key=len, reverse=True))
    return re.compile(rf"(?<![\w'’-])(?:{alternatives})(?![\w'’-])", re.IGNORECASE)


@lru_cache(maxsize=8)
def _default_anonymiser(region: str) -> Anonymiser:
    return Anonymiser(region=region)


def find_pii(text: str, region: str = "US") -> list[PiiSpan]:
    """Every piece of personal data in ``text`` (see the module docstring for what is caught)."""
    return _default_anonymiser(region.upper()).find_pii(text)

"""Did anonymisation leave personal data behind? Two checks that share no code with the anonymiser.

- A second detector: Presidio's pattern recognizers (``presidio-analyzer``), called directly without an
  NLP model, for e-mail addresses, phone numbers of several regions (``phonenumbers``, numbers valid in
  the region or written in international form), card numbers (Luhn), IBANs (mod-97), IP addresses, US
  social security and UK national insurance numbers. It finds what the anonymiser's own rules miss in
  these kinds; it has no name or street-address rules (Presidio finds those with a spaCy NER model,
  which is not loaded).
- Canaries: a fixed set of conversations with known personal data of several kinds and locales
  (names, phones, e-mails, addresses, cards, IBANs, ids, IP addresses) is anonymised with the real rows
  on every run; any of their values left in the output is a miss, whatever the kind.

Placeholders that anonymisation writes (``[PHONE]``, ``[EMAIL_2]``) are never findings. A finding
carries its kind and a masked sample, never the whole value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache, partial
from typing import Any

import numpy as np
import pandas as pd

from homegrown.data.columns import SCORED_COLUMNS
from homegrown.data.parallel import map_chunks

PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "AT", "CH", "AU")
# Presidio's scores: a validated pattern (Luhn, mod-97, a parseable IP) gets 1.0, a phone number 0.4;
# weaker patterns (a bare 9-digit number as an SSN, 0.05) are not findings.
MIN_SCORE = 0.4
PLACEHOLDER_RE = re.compile(r"\[[A-Z][A-Z_]*[A-Z](?:_\d+)?\]")
_PHONE_RUN = re.compile(r"[+(]?\d[\d \t().\-/]*\d\)?")
MIN_PHONE_DIGITS = 6
CANARY_PREFIX = "__canary__"


@dataclass(frozen=True)
class PiiFinding:
    """Personal data found where none should be: which detector, what kind, where, and a masked sample."""

    detector: str  # "presidio:<Recognizer>" or "canary"
    kind: str
    where: str  # example_id, or the canary's id
    sample: str  # masked: never the whole value

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def mask(value: str) -> str:
    """``value`` with all but a few of its letters and digits replaced by ``*`` (separators kept)."""
    positions = [i for i, ch in enumerate(value) if ch.isalnum()]
    show = 0 if len(positions) < 6 else min(2, len(positions) // 6)
    keep = set(positions[:show] + positions[len(positions) - show:]) if show else set()
    return "".join(ch if (not ch.isalnum() or i in keep) else "*" for i, ch in enumerate(value))


def message_strings(messages: Any) -> Iterator[str]:
    """Every string a chat example holds: contents, content parts, tool-call arguments (their JSON
    values), a user's ``name``."""
    if isinstance(messages, str):
        messages = json.loads(messages)
    for message in messages if isinstance(messages, (list, tuple, np.ndarray)) else []:
        if not isinstance(message, dict):
            continue
        yield from _json_strings(message.get("content"))
        if isinstance(message.get("name"), str):
            yield message["name"]
        for call in message.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else None
            arguments = function.get("arguments") if isinstance(function, dict) else None
            if isinstance(arguments, str):
                try:
                    arguments = json.loads(arguments)
                except json.JSONDecodeError:
                    yield arguments
                    continue
            yield from _json_strings(arguments)


def _json_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _json_strings(item)
    elif isinstance(value, (list, tuple, np.ndarray)):
        for item in value:
            yield from _json_strings(item)
    elif isinstance(value, int) and not isinstance(value, bool):
        yield str(value)


# ---------------------------------------------------------------------------------------------------------
# The second detector


class PresidioDetector:
    """Presidio's pattern recognizers, run one by one on a text (no ``AnalyzerEngine``, no spaCy model)."""

    def __init__(self, phone_regions: Sequence[str] = PHONE_REGIONS, min_score: float = MIN_SCORE) -> None:
        import phonenumbers
        import tldextract
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer,
            EmailRecognizer,
            IbanRecognizer,
            IpRecognizer,
            PhoneRecognizer,
            UkNinoRecognizer,
            UsSsnRecognizer,
        )

        unknown = sorted(set(phone_regions) - phonenumbers.SUPPORTED_REGIONS)
        if unknown or not phone_regions:
            raise ValueError(f"phone_regions must be regions phonenumbers knows, got unknown {unknown}")
        # The e-mail recognizer checks the domain with tldextract, which by default fetches the public
        # suffix list over HTTP on first use; this one reads only the snapshot shipped in the package.
        offline_tld = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=())

        class OfflineEmailRecognizer(EmailRecognizer):
            def validate_result(self, pattern_text: str) -> bool:
                return offline_tld(pattern_text).fqdn != ""

        self.min_score = min_score
        self.email = OfflineEmailRecognizer(name="EmailRecognizer")
        self.phone = PhoneRecognizer(supported_regions=tuple(phone_regions), leniency=phonenumbers.Leniency.VALID)
        # the regex recognizers, which only find something in a text with a digit
        self.recognizers = [
            CreditCardRecognizer(),
            IbanRecognizer(),
            IpRecognizer(),
            UsSsnRecognizer(),
            UkNinoRecognizer(),
        ]

    def find(self, text: str) -> list[tuple[str, str, str]]:
        """``(recognizer, entity, value)`` for every finding in ``text``, placeholders left out."""
        if not text:
            return []
        # Placeholders become letters of the same length: offsets stay, and no digit run is joined.
        masked = PLACEHOLDER_RE.sub(lambda m: "X" * len(m.group()), text)
        found = []

        def run(recognizer: Any, part: str, offset: int = 0) -> None:
            for result in recognizer.analyze(part, recognizer.supported_entities, None):
                if result.score >= self.min_score:
                    start, end = offset + result.start, offset + result.end
                    found.append((recognizer.name, result.entity_type, text[start:end]))

        if "@" in masked:
            run(self.email, masked)
        if not any(ch.isdigit() for ch in masked):
            return found
        for recognizer in self.recognizers:
            run(recognizer, masked)
        # libphonenumber's matcher costs about 1 ms a region on a text; it only runs on the number-like
        # runs that hold enough digits to be a phone number of any of the regions.
        for match in _PHONE_RUN.finditer(masked):
            if sum(ch.isdigit() for ch in match.group()) >= MIN_PHONE_DIGITS:
                run(self.phone, match.group(), match.start())
        return found


@lru_cache(maxsize=1)
def default_detector() -> PresidioDetector:
    return PresidioDetector()


def scan_examples(
    example_ids: Iterable[str],
    messages: Iterable[Any],
    detector: PresidioDetector | None = None,
    public: Iterable[str] = (),
) -> list[PiiFinding]:
    """What the second detector finds in every string of every example.

    ``public`` are the business's own published values that curation kept on purpose (its phone number,
    e-mail, address); a finding that is one of them, compared by its digits or case-folded text, is not
    reported.
    """
    detector = detector or default_detector()
    public_texts = {" ".join(v.split()).casefold() for v in public}
    public_digits = {d[-9:] for d in ("".join(ch for ch in v if ch.isdigit()) for v in public) if len(d) >= 6}

    def is_public(value: str) -> bool:
        digits = "".join(ch for ch in value if ch.isdigit())
        return " ".join(value.split()).casefold() in public_texts or (
            len(digits) >= 6 and digits[-9:] in public_digits)

    strings = [(str(example_id), list(message_strings(example))) for example_id, example in zip(example_ids, messages)]
    # Rows of one conversation repeat its earlier messages and approved answers recur: each distinct
    # string is searched once, on every core.
    distinct = list(dict.fromkeys(text for _, texts in strings for text in texts))
    found = dict(zip(distinct, (hits for chunk in map_chunks(partial(_find_each, detector), distinct) for hits in chunk)))
    findings = []
    for example_id, texts in strings:
        for text in texts:
            for recognizer, entity, value in found[text]:
                if not is_public(value):
                    findings.append(PiiFinding(f"presidio:{recognizer}", entity, example_id, mask(value)))
    return findings


def _find_each(detector: PresidioDetector, texts: Sequence[str]) -> list[list[tuple[str, str, str]]]:
    return [detector.find(text) for text in texts]


# ---------------------------------------------------------------------------------------------------------
# Canaries


@dataclass(frozen=True)
class Canary:
    """A conversation planted in the anonymiser's input, and the personal data in it."""

    name: str
    messages: tuple[dict[str, Any], ...]
    values: tuple[tuple[str, str], ...]  # (kind, value) that must not survive anonymisation

    @property
    def example_id(self) -> str:
        return f"{CANARY_PREFIX}{self.name}"


def _tool_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"id": "call_canary", "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}


CANARIES: tuple[Canary, ...] = (
    Canary(
        "us-booking",
        (
            {"role": "user", "content": "Hi, my name is Margaret Whitfield. I'd like dinner for 6 at "
                                        "4821 Maple Grove Avenue, Springfield, IL 62704. Call me at "
                                        "(415) 867-2291 or write to margaret.whitfield@example.com."},
            {"role": "assistant", "content": "Thank you, Margaret Whitfield. Please confirm the card "
                                             "ending the deposit: 4539 1488 0343 6467."},
        ),
        (("PERSON_NAME", "Margaret Whitfield"), ("ADDRESS", "4821 Maple Grove Avenue"),
         ("PHONE", "(415) 867-2291"), ("EMAIL", "margaret.whitfield@example.com"),
         ("CARD_NUMBER", "4539 1488 0343 6467")),
    ),
    Canary(
        "uk-account",
        (
            {"role": "user", "content": "This is Oliver Pembroke from 14 Kensington Road. My mobile is "
                                        "+44 7911 123456 and please pay the refund to GB82 WEST 1234 5698 7654 32."},
            {"role": "assistant", "content": "Thanks Oliver, the refund goes to your account. We will text "
                                             "+44 7911 123456 when it is sent; your reference is REF-77A3Q9."},
        ),
        (("PERSON_NAME", "Oliver Pembroke"), ("ADDRESS", "14 Kensington Road"), ("PHONE", "+44 7911 123456"),
         ("ACCOUNT_NUMBER", "GB82 WEST 1234 5698 7654 32"), ("ID", "REF-77A3Q9")),
    ),
    Canary(
        "de-order",
        (
            {"role": "user", "content": "Hello, I am Jürgen Hoffmann, order number 4471-2290-18. You can reach "
                                        "me on +49 151 2345 6789, juergen.hoffmann@posteo.de, IBAN "
                                        "DE89 3704 0044 0532 0130 00."},
            {"role": "assistant", "content": "Danke, Jürgen Hoffmann. Your order 4471-2290-18 is confirmed."},
        ),
        (("PERSON_NAME", "Jürgen Hoffmann"), ("ID", "4471-2290-18"), ("PHONE", "+49 151 2345 6789"),
         ("EMAIL", "juergen.hoffmann@posteo.de"), ("ACCOUNT_NUMBER", "DE89 3704 0044 0532 0130 00")),
    ),
    Canary(
        "fr-contact",
        (
            {"role": "user", "content": "My name is Camille Rousseau, phone +33 6 12 34 56 78, e-mail "
                                        "camille.rousseau@orange.fr. IBAN FR14 2004 1010 0505 0001 3M02 606."},
            {"role": "assistant", "content": "Merci Camille Rousseau, we have your details."},
        ),
        (("PERSON_NAME", "Camille Rousseau"), ("PHONE", "+33 6 12 34 56 78"),
         ("EMAIL", "camille.rousseau@orange.fr"), ("ACCOUNT_NUMBER", "FR14 2004 1010 0505 0001 3M02 606")),
    ),
    Canary(
        "tool-call",
        (
            {"role": "user", "content": "Book me for Saturday, it's Priya Raman."},
            {"role": "assistant", "content": None, "tool_calls": [_tool_call("create_booking", {
                "customer_name": "Priya Raman", "email": "priya.raman@example.org",
                "phone": "+1 646 413 2290", "address": "77 Orchard Lane, Palo Alto, CA 94301",
                "booking_id": "BK-58213", "guests": 12})]},
        ),
        (("PERSON_NAME", "Priya Raman"), ("EMAIL", "priya.raman@example.org"), ("PHONE", "+1 646 413 2290"),
         ("ADDRESS", "77 Orchard Lane"), ("ID", "BK-58213")),
    ),
    Canary(
        "ids",
        (
            {"role": "user", "content": "My customer id is 3f2b8c1e-9a4d-4e6b-8f0a-2c7d5e9b1a34, SSN 078-05-1120, "
                                        "and I logged in from 203.0.113.42. My name's Lucía Fernández."},
            {"role": "assistant", "content": "Thanks, Lucía Fernández, I found your account."},
        ),
        (("ID", "3f2b8c1e-9a4d-4e6b-8f0a-2c7d5e9b1a34"), ("ID", "078-05-1120"), ("IP_ADDRESS", "203.0.113.42"),
         ("PERSON_NAME", "Lucía Fernández")),
    ),
)


def canary_frame(canaries: Sequence[Canary] = CANARIES) -> pd.DataFrame:
    """The canaries as rows of the scored table (``SCORED_COLUMNS``), never kept."""
    rows = [{
        "example_id": c.example_id, "conversation_id": c.example_id, "org_id": None, "example_type": "chat",
        "messages": [dict(m) for m in c.messages], "tools": None, "source_ids": [], "synthetic": False,
        "generator": "canary", "source_fact": None, "created_at": "1970-01-01T00:00:00.000000Z",
        "score": float("nan"), "keep": False, "reason": "canary",
    } for c in canaries]
    return pd.DataFrame(rows, columns=SCORED_COLUMNS)


_SEPARATORS = re.compile(r"[\s\-./()]+")
_DIGIT_RUN = re.compile(r"\d(?:[\s\-./()]*\d)*")
MIN_DIGIT_RUN = 6


def surviving_canaries(anonymised: pd.DataFrame, canaries: Sequence[Canary] = CANARIES) -> list[PiiFinding]:
    """Canary values still in the anonymised canary rows (``example_id`` and ``messages`` columns).

    A value survives when its text is still there (case-insensitive), or ``MIN_DIGIT_RUN`` or more of
    its digits in a row (spaces, dashes, dots and brackets ignored), or, for a name, any of its words,
    or, for an address, its street without the house number, or, for an e-mail, its local part. A
    canary missing from ``anonymised`` is a finding too: it cannot vouch for anything.
    """
    by_id = dict(zip(anonymised["example_id"].astype(str), anonymised["messages"]))
    findings = []
    for canary in canaries:
        if canary.example_id not in by_id:
            findings.append(PiiFinding("canary", "MISSING", canary.name, "the canary is not in the anonymised rows"))
            continue
        text = "\n".join(message_strings(by_id[canary.example_id]))
        folded = text.casefold()
        digit_runs = [_SEPARATORS.sub("", run) for run in _DIGIT_RUN.findall(text)]
        for kind, value in canary.values:
            if _survives(kind, value, folded, digit_runs):
                findings.append(PiiFinding("canary", kind, canary.name, mask(value)))
    return findings


def _survives(kind: str, value: str, folded: str, digit_runs: list[str]) -> bool:
    fragments = [value]
    if kind == "PERSON_NAME":
        fragments += [w for w in value.split() if len(w) >= 3]
    elif kind == "ADDRESS":
        fragments.append(value.split(maxsplit=1)[-1])
    elif kind == "EMAIL":
        fragments.append(value.split("@")[0] + "@")
    if any(_contains(folded, f.casefold()) for f in fragments):
        return True
    digits = "".join(ch for ch in value if ch.isdigit())
    return any(len(run) >= MIN_DIGIT_RUN and _shares_run(run, digits) for run in digit_runs)


def _contains(text: str, fragment: str) -> bool:
    """Whether ``fragment`` is in ``text`` and not inside a longer word."""
    before = r"(?<!\w)" if fragment[:1].isalnum() else ""
    after = r"(?!\w)" if fragment[-1:].isalnum() else ""
    return re.search(before + re.escape(fragment) + after, text) is not None


def _shares_run(run: str, digits: str) -> bool:
    """Whether ``run`` and ``digits`` have ``MIN_DIGIT_RUN`` digits in a row in common."""
    return any(run[k:k + MIN_DIGIT_RUN] in digits for k in range(len(run) - MIN_DIGIT_RUN + 1))

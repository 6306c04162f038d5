"""Replace personal data in chat messages with placeholders, consistently within a conversation.

Placeholders: ``[EMAIL]``, ``[PHONE]``, ``[PERSON_NAME]``, ``[ADDRESS]``, ``[CARD_NUMBER]``,
``[ACCOUNT_NUMBER]``, ``[ID]`` and ``[IP_ADDRESS]``. Within one mapping (one per conversation) the
same value always gets the same placeholder and a second distinct value of a kind gets a numbered one
(``[PERSON_NAME_2]``). A first name or surname alone that belongs to a full name seen in the
conversation gets that person's placeholder, and so does any capitalised mention of it; a street that a
full address seen before starts with (or the reverse) shares its placeholder. A value replaced in one
message is replaced wherever else it appears in the conversation, in text and in tool-call arguments,
and so are the parts of a replaced address (its street, its town with or without state and postcode,
its postcode): a booking whose address became ``[ADDRESS]`` gets ``"location": "[ADDRESS]"`` in its
tool call rather than the original town, so that the answer stays consistent with the prompt (a single
word, such as a town, only when capitalised). ``anonymise_messages`` and ``anonymise_frame`` read the
whole conversation before replacing, so an earlier mention is replaced too. The mapping holds the
original values: keep it in memory, never write it next to the anonymised data.

What it catches (the detection is rule-based; there is no NER model):

- EMAIL: ``local@domain.tld`` addresses.
- PHONE: digit runs that ``phonenumbers`` accepts as *valid* in one of the configured regions (default
  the business's ``region`` plus US, GB, DE and FR; a national number must start with the region's
  trunk prefix, as in "0151 23456789", "07700 900123", "06 12 34 56 78") or in international form for
  any country ("+49 151 23456789", "+49 (0)151 ...", "0049 151 ...", "+33 6 12 34 56 78"); and numbers
  of a possible length that are not valid (fictional "555" or unassigned numbers) when written in
  international form, after a phone cue ("call", "tel", "Handy", "portable", ...) or in a phone layout
  ("(555) 123-4567", "555.123.4567", a trunk 0 and a separator). Dates such as "12.03.2026" are not.
- CARD_NUMBER: 13-19 digits in a row, or grouped 4-4-4-4(-3), 4-6-5 or 4-6-4 by spaces or dashes,
  that pass the Luhn check and are not part of a longer run of digit groups.
- ACCOUNT_NUMBER: IBANs in any case that pass the mod-97 check (``python-stdnum``), and 6-17 digit
  numbers right after "account", "acct", "routing", "sort code" or "BSB" (optionally followed by
  "number"/"no."/"#").
- ID: UUIDs; US social security numbers (``123-45-6789``); code-like ids with a letter prefix and a
  separator (``BK-48213``, ``cust_9f8a7``, ``INV-2024-0012``, ``int-000123``; a lowercase prefix with a
  dash and digits only needs 5+ digits so that "mid-2026" is left alone, and standards such as
  "ISO-8601" or "SHA-256" are skipped); and any 4+ character token containing a digit right after an
  English, German or French id word ("booking", "order", "invoice", "customer", "reference", ...,
  "Bestellnummer", "Buchung", "Kundennummer", "Rechnung", "commande", "réservation", "facture",
  "dossier", optionally followed by "id"/"number"/"Nr."/"numéro"/"#").
- IP_ADDRESS: IPv4 and IPv6 addresses that Python's ``ipaddress`` accepts.
- ADDRESS:
  - US and UK streets: a house number ("12", "168C", with "Flat 2," or "Apt 3," before it), an optional
    direction, one to four words or an ordinal ("5th"), all capitalised or all in lower case, a street
    type (Street, St, Ave, Blvd, Rd, Dr, Ln, Way, Close, Crescent, Gardens, Grove, Mews, View, ...), an
    optional unit ("Apt 3", "Suite 1500", "#4"); extended to the town, state and ZIP code ("Oakland, CA
    94611", also by ``pyap2``'s US rules) or to the town and UK postcode ("Bristol BS6 5QA");
  - German streets: "Hauptstraße 5", "Karl-Marx-Str. 143a", "Berliner Straße 12", "Birkenweg 21",
    street types -straße/-str./-weg/-platz/-allee/-gasse/-ring/-damm/-ufer/..., or "Am/Im/An der/Auf
    dem/Unter den <Word> <Nr>"; extended to "<PLZ> <Stadt>" on the same or the next line;
  - French streets: "<n°>(bis|ter)?,? rue/avenue/av./bd/boulevard/allée/chemin/impasse/place/quai/
    cours/route/... <name>", extended to "<code postal> <ville>" (and "Cedex");
  - "PO Box 123".
- PERSON_NAME, the name being one to three capitalised words (with particles such as "de", "van",
  "von der"); lines written all in capitals or all in lower case ("NAME: JOHN MARTIN", "hi its christine
  jackson") are read as if capitalised word by word:
  - strong cues, any capitalised word that is not a common word: "my name is X", "call me X", "ich
    heiße X", "mein Name ist X", "je m'appelle X", "mon nom est X", honorifics ("Mr.", "Mrs", "Ms",
    "Dr", "Herr", "Frau", "Monsieur", "Madame", "Mme", "Mlle", "Prof"), and qualified name fields
    ("Full name: X", "customer_name": "X"); after a self-introduction a known first name in lower case
    too ("my name is maria garcia");
  - field cues, the first word must be a known first name or surname (or a known surname follow it; after
    any cue a surname that is also a German or French word counts, as in "Annegret Vogel"): a
    bare "name:"/"Nom :"/"Vorname:" field, "name is X", "name on the account", "acct holder",
    "Kontoinhaber", "titulaire", "contact", "bill to", "invoice", "au nom de", "auf den Namen",
    "friend", "neighbour", "Nachbarn", "voisine", "X here"/"X ici"/"X hier", "X from our team"/"de notre
    équipe"/"aus unserem Team", a line holding only a name of two or more words, and a name ending the
    text or standing before a phone number after a sentence ("... Saturday? Susan +44 ...");
  - weak cues, the first word must be a known first name (the first-name lists of every Latin-script
    ``faker`` locale plus the romanised Japanese and Chinese ones, about 21,000 names): "I'm X", "this
    is X", "it's X", "ich bin X", "hier ist X", "c'est X", "je suis X", greetings and sign-offs ("Hi",
    "Dear", "Thanks", "Regards", "Hallo", "Moin", "Liebe", "Danke", "Grüße", "Mit freundlichen Grüßen",
    "Bonjour", "Cher", "Merci", "Cordialement", ..., also with the name on the next line), "ask for X",
    "Chef X" and a "- X" signature; a greeting right before "!" or "," takes any word that is not a
    common English word or a month ("Thanks Mei!", "Thanks Mark!");
  - no cue: a first name of the main English, German, French, Spanish, Italian, Portuguese, Dutch and
    Polish lists directly followed by a known surname ("Maria Garcia", "Kenneth Rogers-Barry").
  First names that are also common words (months, "Will", "Grant", "Rose", "Jasmine", ...) are only
  taken with a strong cue or when a known surname follows them, so "this is June 5" and "Jasmine
  Rice" stay as they are. Menu and business words ("Hibachi", "Filet Mignon", "Chef") and common
  English, German and French words (``faker``'s word lists) are never names.
- In tool-call arguments (and in JSON objects parsed from them), the whole string value of a key that
  names a kind (``email``, ``phone``, ``address``, ``customer_name``, ``booking_id``, ...; a bare
  ``name`` only when it starts with a known first name), a string equal to a value or an address part
  replaced elsewhere in the conversation, besides everything found in the text; and the ``name`` field
  of a user message.

What it misses:

- names without a cue that are not a main-list first name followed by a known surname ("Zbigniew
  will come", "Haruto Sato"), a lone first name after a weak cue that is in no list, lower-case names
  inside mixed-case text except after a self-introduction, names in non-Latin scripts, and some
  "Surname, First" forms;
- a first name alone, without a cue, unless the person was named elsewhere in the conversation;
- street addresses without a house number or street type ("1585 Broadway", "bât. B" before the
  number), other countries' layouts, and a town or postcode on its own (unless part of an address
  replaced in the same conversation); the business's own address is replaced like any other;
- 7-digit local numbers without an area code ("555-0100"), national numbers of regions outside the
  configured ones, and bank account numbers without an IBAN form or an "account"/"routing" cue;
- ids without a separator, a digit, or a cue word ("ABCDEF", a bare "C618804"), and numeric values
  under id keys in tool-call arguments (their type is kept so the arguments still fit the tool schema);
- dates of birth, ages, social media handles, licence plates, passport numbers and free-text health
  or financial details.

Measured on the labelled set in ``bench/pii`` (``bench/bench_pii.py``), written apart from these rules.
"""

from __future__ import annotations

import importlib
import ipaddress
import itertools
import json
import pkgutil
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import faker.providers.person
import numpy as np
import pandas as pd
import phonenumbers
from pyap.source_US import data as _pyap_us
from stdnum import iban as _iban
from stdnum import luhn as _luhn

from homegrown.data.parallel import map_chunks

KINDS = ("EMAIL", "PHONE", "PERSON_NAME", "ADDRESS", "CARD_NUMBER", "ACCOUNT_NUMBER", "ID", "IP_ADDRESS")
# When two findings overlap, the kind listed first wins (an e-mail address contains an id-like token,
# a street name contains a person's name).
_PRIORITY = {
    kind: rank
    for rank, kind in enumerate(
        ("EMAIL", "CARD_NUMBER", "ACCOUNT_NUMBER", "IP_ADDRESS", "ADDRESS", "ID", "PHONE", "PERSON_NAME")
    )
}

# Kinds a business publishes about itself (its phone, e-mail, address, owner's name); see public_values.
PUBLIC_KINDS = frozenset({"PHONE", "EMAIL", "ADDRESS", "PERSON_NAME"})

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

# Locales whose first names may start a name without a cue when a known surname follows ("Maria
# Garcia"); cued names and surnames use the names of every Latin-script locale faker has.
_CORE_NAME_LOCALES = frozenset(
    {
        "en_US",
        "en_GB",
        "en_IE",
        "en_IN",
        "en_NZ",
        "es_ES",
        "es_MX",
        "fr_FR",
        "fr_BE",
        "fr_CH",
        "fr_CA",
        "de_DE",
        "de_AT",
        "de_CH",
        "it_IT",
        "pt_BR",
        "pt_PT",
        "nl_NL",
        "nl_BE",
        "pl_PL",
    }
)
_COMMON_WORD_LOCALES = ("en_US", "de_DE", "fr_FR")


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
    ich bin du er sie es wir ihr und oder aber mit für von vom zum zur der die das den dem des ein eine
    einen hallo guten tag morgen abend danke vielen dank bitte gruß grüße grüßen herzliche liebe lieber
    freundlichen beste viele mein meine name ist hier spricht sehr geehrte geehrter herr frau ja nein
    kunde kundin termin buchung bestellung rechnung speisekarte
    je tu il elle nous vous ils elles et ou mais avec pour de du des le la les un une bonjour bonsoir
    salut merci beaucoup cordialement bien à vous moi c'est suis mon ma nom appelle cher chère madame
    mate mates pal buddy love ta all everyone y'all mr mrs ms dr prof mme mlle monsieur mademoiselle oui non client cliente réservation commande facture menu
    montag dienstag mittwoch donnerstag freitag samstag sonntag wochenende januar februar märz mai juni
    juli oktober dezember lundi mardi mercredi jeudi vendredi samedi dimanche janvier février mars avril
    juin juillet août septembre octobre novembre décembre
    """
)

_CALENDAR_WORDS = _word_set(
    "january february march april may june july august september october november december spring summer "
    "autumn fall winter easter christmas"
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


def _is_latin(name: str) -> bool:
    return all(not c.isalpha() or unicodedata.name(c, "").startswith("LATIN") for c in name)


def _faker_names(provider: Any, attributes: tuple[str, ...]) -> set[str]:
    names: set[str] = set()
    for attribute in attributes:
        # A tuple in most locales, a weighted dict in some.
        value = getattr(provider, attribute, ())
        if isinstance(value, (dict, list, tuple, set, frozenset)):
            names.update(n.casefold() for n in value if isinstance(n, str) and " " not in n and _is_latin(n))
    return names


@lru_cache(maxsize=1)
def _name_lists() -> tuple[frozenset[str], frozenset[str], frozenset[str], frozenset[str], frozenset[str]]:
    """(first names, surnames that are not common words, common English words, first names of the
    core locales, all surnames), all casefolded.

    The names come from every faker locale whose names are written in Latin script (about 21,000
    first names and 18,000 surnames); the common words are faker's English, German and French word
    lists and the stop words.
    """
    first: set[str] = set()
    core: set[str] = set()
    last: set[str] = set()
    for module in pkgutil.iter_modules(faker.providers.person.__path__):
        provider = importlib.import_module(f"faker.providers.person.{module.name}").Provider
        firsts = _faker_names(
            provider, ("first_names", "first_names_male", "first_names_female", "first_romanized_names")
        )
        first |= firsts
        last |= _faker_names(
            provider, ("last_names", "last_names_male", "last_names_female", "last_romanized_names")
        )
        if module.name in _CORE_NAME_LOCALES:
            core |= firsts
    # A capitalised German noun or French word is mostly a name after a cue ("Merci, Pierre"), but not
    # worth a surname in "<first name> <surname>" without one ("Jasmine Rice", "Anna Klein" stays).
    common = set(_STOP_WORDS)
    foreign: set[str] = set()
    for locale in _COMMON_WORD_LOCALES:
        words = importlib.import_module(f"faker.providers.lorem.{locale}").Provider.word_list
        (common if locale.startswith("en") else foreign).update(w.casefold() for w in words if " " not in w)
    first -= _STOP_WORDS
    surnames = last - common - foreign
    return frozenset(first), frozenset(surnames), frozenset(common), frozenset(core & first), frozenset(last)


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
_IBAN_CANDIDATE = re.compile(r"\b[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]{1,4}){3,8}\b")
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
    r"loyalty|tracking|reference|ref|policy|bestellung|bestellnummer|buchung|buchungsnummer|auftrag|"
    r"auftragsnummer|kundennummer|rechnung|rechnungsnummer|referenz|vorgang|vorgangsnummer|sendungsnummer|"
    r"mitgliedsnummer|commande|réservation|facture|dossier|référence|n°)"
    r"(?![\w-])(?:\s*(?:id|number|no\.?|num|code|nr\.?|numéro|#))?\s*(?:is\s+|ist\s+|est\s+|:\s*|#\s*)?)"
    r"#?(?P<value>[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)"
)

# A run of digit groups that may be a phone number: an optional "+" or "00", groups separated by one
# space, dash, dot or slash, an area code in parentheses, a "(0)" trunk prefix, an extension.
_PHONE_CANDIDATE = re.compile(
    r"(?<![\w+/.,-])(?:\+[ \t]?|00)?(?:\([ \t]?\d{1,5}[ \t]?\)|\d{1,15})"
    r"(?:(?:[ \t]*[-./][ \t]*|[ \t]|[ \t]?\(0\)[ \t]?)(?:\([ \t]?\d{1,5}[ \t]?\)|\d{1,12})){0,7}"
    r"(?:[ \t]*(?i:x|ext\.?|extension|poste|durchwahl)[ \t]*\d{1,5})?"
    r"(?![\w/]|[.,-]\d)"
)
_PHONE_GROUP_END = re.compile(r"\d\)?(?!\d)")
_DATE_LIKE = re.compile(r"^\d{1,4}[./-]\d{1,2}[./-]\d{2,4}$")
# National layouts people write phone numbers in: a trunk prefix 0 and a separator, an area code in
# parentheses, US 3-3-4.
_PHONE_LAYOUT = re.compile(
    r"^(?:\(?0\d{1,5}\)?[ \t]?[-./ ]|\([ \t]?\d{2,5}[ \t]?\)|(?:1[-. ])?\d{3}[-. ]\d{3}[-.]\d{4}\b)"
)
_PHONE_CUE = re.compile(
    r"(?i:phone|tel\b|tél|telephone|téléphone|telefon|mobile?|cell|call|ring|text|sms|whats\s?app|fax|"
    r"number|nummer|numéro|contact|reach|handy|anruf|anrufen|erreichbar|rückruf|portable|joindre|appel)"
    r"[^\n\d]{0,25}$"
)
DEFAULT_PHONE_REGIONS = ("US", "GB", "DE", "FR")

# Latin Extended-A (U+0100-U+017F: "Ş", "ł", "ő") mixes capitals and small letters.
_UPPER = "A-ZÀ-ÖØ-Þ\u0100-\u017f"
_LOWER = "a-zß-öø-ÿ\u0100-\u017f"
_WORD = rf"[{_UPPER}](?:[{_LOWER}]+(?:['’-]?[{_UPPER}][{_LOWER}]+)?|['’][{_UPPER}][{_LOWER}]+)"
_NAME_WORD = re.compile(rf"(?<![\w'’-]){_WORD}(?![\w'’-])")
_PARTICLE = r"(?:(?:de|van|von|der|den|le|la|du|da|di|del|dos|das|el|al|ten|ter|zu|bin|ibn)[ \t]+)"
_NAME_SEQUENCE = rf"(?P<name>{_PARTICLE}{{0,2}}{_WORD}(?:[ \t]+(?:[A-Z]\.[ \t]+)?{_PARTICLE}{{0,2}}{_WORD}){{0,2}})(?![\w'’-])"
_LINE_START = r"(?:^|(?<=[\n\"{,(]))[ \t]*"
# Any capitalised word that is not a common word is a name after these.
# The cue patterns are lookaheads so that cues may overlap ("hi its christine": "hi" and "its").
_STRONG_NAME_CUE = re.compile(
    r"(?=(?:\b(?i:my\s+name\s+is|my\s+name['’]s|call\s+me|ich\s+hei(?:ß|ss)e|mein\s+name\s+ist"
    r"|je\s+m['’]appelle|mon\s+nom\s+est|je\s+me\s+nomme)\s+"
    rf"|\b(?:Mr|Mrs|Ms|Miss|Dr|Mx|Herr|Herrn|Frau|Monsieur|Madame|Mademoiselle|Mme|Mlle|M\.|Prof|Docteur)\.?[ \t]+"
    rf"(?:(?:Dr|Prof)\.?[ \t]+)?"
    rf"|{_LINE_START}(?i:full|first|last|customer|contact|guest|client)[ _](?i:name)\"?\s*[:=]\s*\"?)"
    + _NAME_SEQUENCE
    + ")",
    re.MULTILINE,
)
# The first word must be a known first name or surname after these.
_FIELD_NAME_CUE = re.compile(
    rf"(?=(?:{_LINE_START}(?i:name|nom|nom\s+complet|vorname|nachname|prénom)\"?[ \t]*[:=][ \t]*\"?"
    r"|\b(?i:name\s+on\s+the\s+account|acc(?:oun)?t\s+holder|kontoinhaber(?:in)?|titulaire(?:\s+du\s+compte)?"
    r"|contact|ansprechpartner(?:in)?|contact\s+person|my\s+details|details\s+for\s+the\s+refund"
    r"|bank\s+details|coordonnées|meine\s+daten|daten)[ \t]*:?[ \t]*"
    r"|\b(?i:name(?:\s+is)?|au\s+nom\s+de|auf\s+den\s+namen|bill\s+to|invoice|(?:my\s+)?friend"
    r"|(?:my\s+)?neighbou?r|nachbarn?|nachbarin|voisine?)[ \t]+)" + _NAME_SEQUENCE + ")",
    re.MULTILINE,
)
# The first word must be a known first name after these.
_WEAK_NAME_CUE = re.compile(
    r"(?=(?:\b(?i:I['’]m|I\s+am|this\s+is|it['’]?s|it\s+is|ask\s+for|(?:speak|talk)\s+(?:to|with)"
    r"|chef|ich\s+bin|bin|hier\s+ist|hier\s+spricht|c['’]est|je\s+suis)\s+"
    r"|\b(?i:hi|hiya|hello|hey|dear|thanks|thank\s+you|thx|cheers|regards|best|sincerely|warmly|hallo|moin"
    r"|servus|huhu|coucou|salut|bonjour|bonsoir|liebe|lieber|cher|chère|danke|merci|grüße|gruß|grüßen"
    r"|cordialement|bien\s+à\s+vous|à\s+bientôt|bises|amitiés)"
    r"[ \t]*[,!.]?\s*"
    r"|^[ \t]*[-–—~][ \t]*|[ \t][-–—][ \t]+(?=[^\n]*$))" + _NAME_SEQUENCE + ")",
    re.MULTILINE,
)
# A name written in lower case after a self-introduction ("my name is maria garcia").
_LOWERCASE_NAME_CUE = re.compile(
    r"\b(?i:my\s+name\s+is|my\s+name['’]s|call\s+me|ich\s+hei(?:ß|ss)e|mein\s+name\s+ist|je\s+m['’]appelle"
    rf"|mon\s+nom\s+est)\s+(?P<first>[{_LOWER}]+(?:-[{_LOWER}]+)?)(?:[ \t]+(?P<last>[{_LOWER}]+(?:-[{_LOWER}]+)?))?"
    r"(?![\w'’-])"
)
# Words one of which a text must hold for each cue pattern to be worth running.
_STRONG_TRIGGERS = _word_set(
    "name call heiße heisse appelle nom nomme mr mrs ms miss dr mx herr herrn frau monsieur madame mademoiselle "
    "mme mlle m prof docteur customer contact guest client full first last"
)
_FIELD_TRIGGERS = _word_set(
    "name nom vorname nachname prénom account acct holder kontoinhaber kontoinhaberin titulaire contact "
    "ansprechpartner ansprechpartnerin details coordonnées daten bill invoice friend neighbour neighbor nachbar "
    "nachbarn nachbarin voisin voisine"
)
_WEAK_TRIGGERS = _word_set(
    "i im this it its ask speak talk chef bin hier c est je hi hiya hello hey dear thanks thank thx cheers regards "
    "best sincerely warmly hallo moin servus huhu coucou salut bonjour bonsoir liebe lieber cher chère danke merci "
    "grüße gruß grüßen cordialement bien à bientôt bises amitiés"
)
_SIGNATURE_DASHES = frozenset("-–—~")
_LETTERS = re.compile(r"[^\W\d_]+")
# A known first name before "here" ("Kieran here", "Paul ici") or before "from our team".
_NAME_BEFORE_CUE = re.compile(
    rf"(?<![\w'’-])(?P<name>{_WORD}(?:[ \t]+{_WORD})?)[ \t]+"
    r"(?i:here|ici|hier|de\s+notre\s+équipe|aus\s+unserem\s+team|from\s+our\s+team)\b"
)
# A line holding only a name of two or more words ("Ciaran MacLeod" above an address).
_NAME_LINE = re.compile(rf"^[ \t]*{_NAME_SEQUENCE}[ \t]*$", re.MULTILINE)
# A name on its own at the end of a text, or before a phone number ("... Saturday? Susan +44 7555 ...").
_SIGNATURE_NAME = re.compile(
    rf"(?:(?<=[.!?])[ \t]+|^[ \t]*){_NAME_SEQUENCE}[ \t]*(?:\Z|,?[ \t]*(?=\+?\(?\d[\d ()./-]{{6,}}))",
    re.MULTILINE,
)
_PLACE_WORDS = _word_set(
    "san santa saint st los las el la new port fort mount lake palo grand north south east west"
)

_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Av|Road|Rd|Boulevard|Blvd|Drive|Dr|Lane|Ln|Court|Ct|Place|Pl|Way|Terrace|"
    r"Ter|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Square|Sq|Trail|Trl|Plaza|Plz|Alley|Aly|Loop|Freeway|Fwy|"
    r"Expressway|Expy|Pike|Row|Crescent|Cres|Turnpike|Tpke|Close|Gardens|Gdns|Grove|Mews|Hill|Rise|"
    r"Parade|Green|View|Vale|Wharf|Yard|Gate)"
)
_DIRECTION = r"(?i:N|S|E|W|NE|NW|SE|SW|North|South|East|West)"
# A flat or apartment written before the house number ("Flat 2, 194 Kings Road").
_UNIT_BEFORE = r"(?:(?i:flat|apartment|apt|appartement|appt|wohnung|whg)\.?[ \t]*\d{1,4}[A-Za-z]?,?[ \t]+)?"
_HOUSE_NUMBER = r"\d{1,6}(?:[ \t]?(?i:bis|ter|quater)\b|[A-Za-z](?![A-Za-z]))?"
_STREET = re.compile(
    rf"(?<![\w-]){_UNIT_BEFORE}{_HOUSE_NUMBER}(?:[ \t]+{_DIRECTION}\.?)?"
    rf"(?:[ \t]+(?:[A-Za-z][A-Za-z'’.-]*|\d+(?i:st|nd|rd|th))){{1,4}}[ \t]+(?i:{_STREET_SUFFIX})\b\.?"
    rf"(?:[ \t]+{_DIRECTION}\b\.?)?"
    r"(?:,?[ \t]*(?:(?i:apt|apartment|suite|ste|unit|fl|floor|rm|room)\.?[ \t]*#?|#)"
    r"[ \t]*[A-Za-z0-9-]*\d[A-Za-z0-9-]*)?"
)
_DE_STREET_TYPES = (
    r"(?:straße|strasse|str\.|weg|platz|allee|gasse|ring|damm|ufer|chaussee|steig|pfad|graben|markt|kamp|"
    r"stieg|zeile|promenade|wall)"
)
_DE_WORD = r"[A-Za-zÄÖÜäöü][\wäöüß]*"
_DE_STREET = re.compile(
    # "Hauptstraße 5", "Karl-Marx-Str. 143a", "Berliner Straße 12", "Am Markt 3", "Unter den Linden 77"
    rf"(?<![\w-])(?:(?:{_DE_WORD}-)+(?i:{_DE_STREET_TYPES})|(?:{_DE_WORD}-)*{_DE_WORD}(?i:{_DE_STREET_TYPES})"
    rf"|(?:(?:[A-ZÄÖÜ][\wäöüß-]*[ \t]+){{1,2}}|[a-zäöü][\wäöüß-]*[ \t]+)(?i:{_DE_STREET_TYPES})"
    r"|(?i:am|im|an[ \t]+der|an[ \t]+den|auf[ \t]+der|auf[ \t]+dem|in[ \t]+der|in[ \t]+den|zum|zur"
    r"|unter[ \t]+den|hinter[ \t]+der|vor[ \t]+dem|alte|alter)[ \t]+(?P<after>[A-Za-zÄÖÜäöü][\wäöüß-]+))"
    r"[ \t]+\d{1,4}(?:[ \t]?[a-zA-Z](?![\wäöüß]))?(?:[ \t]*[-/][ \t]*\d{1,4}[a-z]?)?(?![\d,.]\d)"
)
# Substrings one of which a German street holds (lower case): cheaper to test than the pattern.
_DE_STREET_HINTS = (
    "str",
    "weg",
    "platz",
    "allee",
    "gasse",
    "ring",
    "damm",
    "ufer",
    "chaussee",
    "steig",
    "pfad",
    "graben",
    "markt",
    "kamp",
    "stieg",
    "zeile",
    "promenade",
    "wall",
    "am ",
    "im ",
    "an de",
    "auf de",
    "in de",
    "zum ",
    "zur ",
    "unter den",
    "hinter der",
    "vor dem",
    "alte",
)
_FR_STREET_TYPES = (
    r"(?:rue|avenue|av\.|bd|boulevard|allée|allee|chemin|impasse|place|quai|cours|route|rte|square|passage|"
    r"voie|faubourg|fbg|rond-point|villa|sentier|esplanade|promenade|résidence|cité|hameau|lotissement|"
    r"parvis|ruelle|montée|traverse)"
)
_FR_PARTICLE = r"(?:(?i:de|du|des|la|le|les|aux?|à|sur|en|et|sous)[ \t]+|(?i:d|l)['’])"
_FR_STREET = re.compile(
    rf"(?<![\w-]){_UNIT_BEFORE}{_HOUSE_NUMBER},?[ \t]+(?i:{_FR_STREET_TYPES})(?![\w-])"
    rf"(?:(?:[ \t]+{_FR_PARTICLE}*[A-ZÀ-Þ][\wÀ-ÿ'’-]*){{1,5}}"
    rf"|(?:[ \t]+{_FR_PARTICLE}*[a-zà-ÿ][\wà-ÿ'’-]*){{1,2}})"
)
_UK_POSTCODE = r"(?i:[A-Z]{1,2}\d[A-Z\d]?[ \t]*\d[A-Z]{2})(?![\w-])"
_TOWN = r"(?:[A-Za-zÀ-ÿ][\wÀ-ÿ.'’-]*[ \t]+){0,2}[A-Za-zÀ-ÿ][\wÀ-ÿ.'’-]*"
# What may follow a street: town and postcode in the UK, postcode and town in Germany and France, town,
# state and ZIP code in the US.
_ADDRESS_TAILS = (
    re.compile(rf",?[ \t]*(?:{_TOWN},?[ \t]+)?{_UK_POSTCODE}"),
    re.compile(
        r",?[ \t]*\n?[ \t]*(?:[A-Z]-)?\d{5}[ \t]+[A-Za-zÀ-ÿ][\wÀ-ÿ'’-]*(?:[ \t]+(?:am|an[ \t]+der|im|sur|en|lès)"
        r"[ \t]+[A-Za-zÀ-ÿ][\wÀ-ÿ'’-]*|[ \t]+[A-ZÀ-Þ][\wÀ-ÿ'’-]*){0,2}(?:[ \t]+(?i:cedex)(?:[ \t]+\d{1,2})?)?"
    ),
    re.compile(rf",?[ \t]*{_TOWN},?[ \t]+[A-Za-z]{{2}}\.?[ \t]+\d{{5}}(?:-\d{{4}})?(?!\d)"),
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


def _case_view(text: str) -> str:
    """``text`` with every line written all in capitals or all in lower case capitalised word by word,
    so that the name rules, which look for capitalised words, read "JOHN MARTIN" and "john martin"."""
    if text.isupper() is False and text.islower() is False and "\n" not in text:
        return text
    lines = text.split("\n")
    changed = False
    for index, line in enumerate(lines):
        if (line.isupper() or line.islower()) and any(c.isalpha() for c in line):
            titled = "".join(
                c.upper() if i == 0 or not line[i - 1].isalpha() else c.lower() for i, c in enumerate(line)
            )
            if len(titled) == len(line):
                lines[index] = titled
                changed = True
    return "\n".join(lines) if changed else text


_STREET_ABBREVIATIONS = _word_set(
    "st ave av rd blvd dr ln ct pl ter pkwy hwy cir sq trl plz aly fwy expy cres tpke gdns n s e w ne nw se sw "
    "apt ste fl rm"
)


def _sentence_stop(street: str) -> int:
    """1 when ``street`` ends with a full stop after a whole word ("Meadow View."), not an
    abbreviation ("Main St.")."""
    match = re.search(r"(\w+)\.$", street)
    return 1 if match and match.group(1).casefold() not in _STREET_ABBREVIATIONS else 0


def _consistent_case(street: str) -> bool:
    words = [w for w in re.findall(r"[^\W\d_][\w'’.-]*", street) if len(w) > 2]
    return all(w[0].isupper() for w in words) or all(w[0].islower() for w in words)


def _trim_address(address: str) -> int:
    """The length of ``address`` without trailing lowercase words: pyap's rules read "or" as Oregon."""
    match = _TRAILING_LOWERCASE.search(address)
    return match.start() if match else len(address)


def _is_card(digits: str) -> bool:
    return digits.isdigit() and 13 <= len(digits) <= 19 and _luhn.is_valid(digits)


def _normalise(kind: str, value: str, regions: tuple[str, ...]) -> str:
    """The form under which two mentions of one value share a placeholder."""
    if kind == "PHONE":
        for code in regions:
            try:
                number = phonenumbers.parse(value, code)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number):
                return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        return re.sub(r"\D", "", value)
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

    ``region`` is the ISO country code of the business: phone numbers written without a country code
    are read in it first. ``regions`` are all the regions whose national numbers are recognised
    (default: ``region`` and :data:`DEFAULT_PHONE_REGIONS`); numbers in international form are
    recognised for every country. ``kinds`` limits detection to a subset of :data:`KINDS` (all by
    default).
    """

    def __init__(
        self,
        region: str = "US",
        kinds: Iterable[str] | None = None,
        regions: Iterable[str] | None = None,
        public: Iterable[str] = (),
    ) -> None:
        if isinstance(regions, str):
            raise TypeError("regions must be a list of ISO codes such as ['US', 'DE'], not a str")
        region = region.upper()
        wanted = [region, *(r.upper() for r in (DEFAULT_PHONE_REGIONS if regions is None else regions))]
        for code in wanted:
            if code not in phonenumbers.SUPPORTED_REGIONS:
                raise ValueError(f"unknown phone region {code!r}; use an ISO 3166 code such as 'US' or 'GB'")
        selected = tuple(kinds) if kinds is not None else KINDS
        unknown = sorted(set(selected) - set(KINDS))
        if unknown or not selected:
            raise ValueError(f"unknown PII kinds {unknown}; choose from {', '.join(KINDS)}")
        self.region = region
        self.regions = tuple(dict.fromkeys(wanted))
        self._trunk_prefixes = {
            code: phonenumbers.PhoneMetadata.metadata_for_region(code).national_prefix or ""
            for code in self.regions
        }
        self.kinds = frozenset(selected)
        # "KIND:normalised value" keys of the business's own published data (see public_values), kept as is.
        self.public = frozenset(public)
        self._known_state: tuple[Any, tuple[dict[str, str], frozenset[str]]] = (None, ({}, frozenset()))
        (
            self._first_names,
            self._surnames,
            self._common_words,
            self._core_first_names,
            self._all_surnames,
        ) = _name_lists()

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
        if self.public:
            chosen = [s for s in chosen if self.key(s.kind, s.text) not in self.public]
        return sorted(chosen, key=lambda s: s.start)

    def key(self, kind: str, value: str) -> str:
        """``"KIND:normalised value"``: two mentions of one value have the same key."""
        return f"{kind}:{_normalise(kind, value, self.regions)}"

    def public_values(
        self, df: pd.DataFrame, column: str = "messages", group: str = "conversation_id", min_conversations: int = 3
    ) -> dict[str, str]:
        """The business's own published contact data: ``{key: value as written}``.

        A phone number, e-mail address, street address or name counts as the business's own when the
        assistant volunteered it (the customer had not written it in that conversation) in at least
        ``min_conversations`` conversations: a shop's number or address given to many customers, its
        owner's name. It is information the model must learn, not a customer's data, so anonymisation
        keeps it. A customer's value repeated back to that customer never qualifies, however often they
        write; card, account and id numbers never do.
        """
        if min_conversations < 1:
            raise ValueError(f"min_conversations must be at least 1, got {min_conversations}")
        said: dict[Any, tuple[list[str], list[str]]] = {}
        for messages, conversation in zip(df[column].tolist(), df[group].tolist()):
            if not isinstance(messages, list):
                continue
            user, assistant = said.setdefault(conversation, ([], []))
            for message in messages:
                content = message.get("content") if isinstance(message, dict) else None
                if isinstance(content, str) and content:
                    (user if message.get("role") == "user" else assistant if message.get("role") == "assistant"
                     else []).append(content)
        counts: dict[str, set[Any]] = {}
        written: dict[str, str] = {}
        conversations = list(said.items())
        volunteered = (v for chunk in map_chunks(self._volunteered, conversations) for v in chunk)
        for (conversation, _), found in zip(conversations, volunteered):
            for key, text in found:
                counts.setdefault(key, set()).add(conversation)
                written.setdefault(key, text)
        return {key: written[key] for key, seen in sorted(counts.items()) if len(seen) >= min_conversations}

    def _volunteered(self, conversations: list[tuple[Any, tuple[list[str], list[str]]]]) -> list[list[tuple[str, str]]]:
        """Per conversation ``(user texts, assistant texts)``: the ``(key, text)`` of the public kinds the
        assistant wrote that the customer had not, in order."""
        cache: dict[str, list[PiiSpan]] = {}
        out = []
        for _, (user, assistant) in conversations:
            customer = {self.key(s.kind, s.text) for text in dict.fromkeys(user) for s in self._find_cached(text, cache)}
            found = []
            for text in dict.fromkeys(assistant):
                for span in self._find_cached(text, cache):
                    if span.kind in PUBLIC_KINDS:
                        key = self.key(span.kind, span.text)
                        if key not in customer:
                            found.append((key, span.text))
            out.append(found)
        return out

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
        if digits >= 10:
            for m in _IBAN_CANDIDATE.finditer(text):
                account = _digit_groups_prefix(m.group(), lambda v: _iban.is_valid(v.upper()))
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
            self._find_phones(text, add)
        self._find_names(text, add)
        return spans

    def _find_phones(self, text: str, add: Callable[[str, int, int], None]) -> None:
        for m in _PHONE_CANDIDATE.finditer(text):
            candidate = m.group()
            if _DATE_LIKE.match(candidate):
                continue
            # A longer run can hold a number and digits after it ("0151 23456789 30 guests").
            ends = [g.end() for g in _PHONE_GROUP_END.finditer(candidate)]
            for end in reversed(ends):
                if self._is_phone(candidate[:end].rstrip(" ./-"), text[max(0, m.start() - 40) : m.start()]):
                    add("PHONE", m.start(), m.start() + len(candidate[:end].rstrip(" ./-")))
                    break

    def _is_phone(self, candidate: str, before: str) -> bool:
        """A number valid in one of the regions (national form with its trunk prefix) or in
        international form; or, after a phone cue or in a phone layout, a number of possible length."""
        digits = sum(c.isdigit() for c in candidate.split("x")[0].split("X")[0])
        if not 7 <= digits <= 15 or _DATE_LIKE.match(candidate):
            return False
        international = candidate.startswith(("+", "00"))
        national_digits = candidate.lstrip("(").lstrip()
        possible = False
        for region in self.regions:
            prefix = self._trunk_prefixes[region]
            if not international and prefix and prefix != "1" and not national_digits.startswith(prefix):
                continue
            try:
                number = phonenumbers.parse(candidate, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number):
                return True
            possible = possible or phonenumbers.is_possible_number(number)
        if not possible:
            return False
        if international:
            return True
        return digits >= 9 and bool(_PHONE_LAYOUT.match(candidate) or _PHONE_CUE.search(before))

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
        # "5 miles of Gloucester Road" is not an address: the words of a street are all capitalised
        # or all in lower case.
        streets = [
            (m.start(), m.end() - _sentence_stop(m.group()))
            for m in _STREET.finditer(text)
            if _consistent_case(m.group())
        ]
        if streets:
            # pyap's rules add the city, state and ZIP code; they are slow, so only run them where a
            # street was seen.
            full = [
                (m.start(), m.start() + _trim_address(m.group())) for m in _PYAP_FULL_ADDRESS.finditer(text)
            ]
            for index, (start, end) in enumerate(streets):
                for full_start, full_end in full:
                    if full_start <= start < full_end:
                        streets[index] = (start, max(end, full_end))
        lowered = text.lower()
        for m in _DE_STREET.finditer(text) if any(h in lowered for h in _DE_STREET_HINTS) else ():
            after = m.group("after")
            if after is None or after.casefold() not in _STOP_WORDS:
                streets.append((m.start(), m.end()))
        streets.extend((m.start(), m.end()) for m in _FR_STREET.finditer(text))
        for start, end in streets:
            for tail in _ADDRESS_TAILS:
                extended = tail.match(text, end)
                if extended:
                    end = extended.end()
                    break
            add("ADDRESS", start, end)
        for m in _PO_BOX.finditer(text):
            add("ADDRESS", m.start(), m.end())

    def _find_names(self, text: str, add: Callable[[str, int, int], None]) -> None:
        view = _case_view(text)

        words_in_text = frozenset(_LETTERS.findall(view.lower()))
        for m in _STRONG_NAME_CUE.finditer(view) if words_in_text & _STRONG_TRIGGERS else ():
            self._add_name(view, m.start("name"), m.group("name"), add, tier="strong")
        for m in _FIELD_NAME_CUE.finditer(view) if words_in_text & _FIELD_TRIGGERS else ():
            self._add_name(view, m.start("name"), m.group("name"), add, tier="field")
        weak = words_in_text & _WEAK_TRIGGERS or not _SIGNATURE_DASHES.isdisjoint(view)
        for m in _WEAK_NAME_CUE.finditer(view) if weak else ():
            # "Thanks Mei!": a greeting right before "!" or "," takes any uncommon word.
            after = view[m.end("name") : m.end("name") + 1]
            tier = "greeting" if after in ("!", ",") and " " not in m.group("name") else "weak"
            self._add_name(view, m.start("name"), m.group("name"), add, tier=tier)
        if view is text:
            for m in _LOWERCASE_NAME_CUE.finditer(text) if words_in_text & _STRONG_TRIGGERS else ():
                first = m.group("first")
                if self._is_first_name(first) and first not in self._common_words:
                    last = m.group("last")
                    end = m.end("last") if last and self._is_surname(last) else m.end("first")
                    add("PERSON_NAME", m.start("first"), end)
        for m in _NAME_BEFORE_CUE.finditer(view):
            self._add_name(view, m.start("name"), m.group("name"), add, tier="field")
        for m in _SIGNATURE_NAME.finditer(view):
            # One word alone at the start of a line is too often an ordinary word ("Ring 020 ...").
            if " " in m.group("name") or view[m.start() - 1 : m.start()] not in ("", "\n"):
                self._add_name(view, m.start("name"), m.group("name"), add, tier="field")
        for m in _NAME_LINE.finditer(view):
            words = _NAME_WORD.findall(m.group("name"))
            if len(words) > 1 and words[0].casefold() not in _COMMON_WORD_NAMES:
                self._add_name(view, m.start("name"), m.group("name"), add, tier="field")
        words = list(_NAME_WORD.finditer(view))
        for first, last in itertools.pairwise(words):
            if view[first.end() : last.start()] not in (" ", "\t"):
                continue
            first_word, last_word = first.group().casefold(), last.group().casefold()
            if (
                first_word in self._core_first_names
                and first_word not in _COMMON_WORD_NAMES
                and first_word not in _PLACE_WORDS
                and (self._is_surname(last_word) or self._uncommon(last_word))
            ):
                add("PERSON_NAME", first.start(), last.end())

    def _uncommon(self, word: str) -> bool:
        """A capitalised word that is no common word, place or business word: after a known first name,
        most likely a surname Faker does not list ("Amélie Vasseur-Lindqvist")."""
        return (
            len(word) > 2
            and word not in self._common_words
            and word not in _STOP_WORDS
            and word not in _COMMON_WORD_NAMES
            and word not in _PLACE_WORDS
            and word not in self._first_names
        )

    def _is_surname(self, word: str, surnames: frozenset[str] | None = None) -> bool:
        surnames = self._surnames if surnames is None else surnames
        return word in surnames or ("-" in word and all(p in surnames for p in word.split("-")))

    def _is_first_name(self, word: str) -> bool:
        return word in self._first_names or (
            "-" in word and all(p in self._first_names for p in word.split("-"))
        )

    def _add_name(
        self, text: str, start: int, words_text: str, add: Callable[[str, int, int], None], tier: str
    ) -> None:
        """Keep the words of a cued name that look like a name: the first one by the cue's rules,
        the following ones unless they are common words (a known surname always counts).

        ``tier``: "strong" takes any uncommon word, "field" a known first name or surname,
        "weak" a known first name, "greeting" a known first name or any uncommon word.
        """
        words = list(_NAME_WORD.finditer(words_text))
        if not words:
            return
        first = words[0].group().casefold()
        if first in _STOP_WORDS and first not in _COMMON_WORD_NAMES:
            return
        is_first_name = self._is_first_name(first) or first in _COMMON_WORD_NAMES
        is_word = first in self._common_words or first in _COMMON_WORD_NAMES
        # After a cue a surname that is also a word counts ("Valentine Klein", "Annegret Vogel").
        second = words[1].group().casefold() if len(words) > 1 else ""
        surname_follows = second not in _STOP_WORDS and self._is_surname(second, self._all_surnames)
        if tier == "strong":
            accepted = is_first_name or not is_word or surname_follows
        elif tier == "greeting":
            accepted = (first not in self._common_words and first not in _CALENDAR_WORDS) or surname_follows
        elif tier == "field":
            accepted = (is_first_name or self._is_surname(first, self._all_surnames) or surname_follows) and (
                not is_word or surname_follows
            )
        else:
            accepted = is_first_name and (not is_word or surname_follows)
        if not accepted:
            return
        end = words[0].end()
        for word in words[1:]:
            lowered = word.group().casefold()
            if lowered in _STOP_WORDS or (
                lowered in self._common_words and lowered not in self._all_surnames
            ):
                break
            end = word.end()
        add("PERSON_NAME", start, start + end)

    # -- replacement ---------------------------------------------------------------------------------

    def anonymise_text(self, text: str, mapping: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
        """``text`` with every finding replaced by its placeholder, and the (updated) mapping.

        ``mapping`` maps ``"KIND:normalised value"`` to a placeholder (and, under ``"SEEN:"`` and
        ``"PART:"`` keys, the values as written and the parts of addresses, such as the city); pass
        the same dict for every text of one conversation so that a value keeps its placeholder and a
        value replaced in one text is replaced in the others too.
        """
        mapping = {} if mapping is None else mapping
        return self._anonymise_text(text, mapping, {}), mapping

    def _find_cached(self, text: str, cache: dict[str, list[PiiSpan]]) -> list[PiiSpan]:
        spans = cache.get(text)
        if spans is None:
            spans = cache[text] = self.find_pii(text)
        return spans

    def _anonymise_text(self, text: str, mapping: dict[str, str], cache: dict[str, list[PiiSpan]]) -> str:
        # A replacement can, rarely, put two pieces of text side by side that form a new finding;
        # a second pass settles it.
        for _ in range(3):
            found = self._find_cached(text, cache)
            replacements = [(s.start, s.end, self._placeholder(s.kind, s.text, mapping)) for s in found]
            taken = [(s.start, s.end) for s in found]
            for start, end, placeholder in self._known_value_spans(text, mapping, taken):
                replacements.append((start, end, placeholder))
                taken.append((start, end))
            replacements += [
                (s.start, s.end, self._placeholder(s.kind, s.text, mapping))
                for s in self._known_name_spans(text, mapping, taken)
            ]
            if not replacements:
                break
            pieces: list[str] = []
            cursor = 0
            for start, end, placeholder in sorted(replacements):
                pieces.append(text[cursor:start])
                pieces.append(placeholder)
                cursor = end
            pieces.append(text[cursor:])
            text = "".join(pieces)
        return text

    def _known_value_spans(
        self, text: str, mapping: dict[str, str], taken: list[tuple[int, int]]
    ) -> list[tuple[int, int, str]]:
        """Mentions of values replaced elsewhere in the conversation (as written, any case) and of
        parts of replaced addresses, outside ``taken``: (start, end, placeholder)."""
        known, _ = self._known(mapping)
        if not known:
            return []
        taken = taken + [(m.start(), m.end()) for m in PLACEHOLDER_RE.finditer(text)]
        spans = []
        for m in _known_values_pattern(frozenset(known)).finditer(text):
            # One word is only a town or a name when capitalised ("Nice", not "a nice day").
            if " " not in m.group() and (not m.group()[0].isupper() or _in_address_token(text, m)):
                continue
            if not any(m.start() < end and start < m.end() for start, end in taken):
                placeholder = known.get(_surface_key(m.group()))
                if placeholder is not None:
                    spans.append((m.start(), m.end(), placeholder))
        return spans

    def _known(self, mapping: dict[str, str]) -> tuple[dict[str, str], frozenset[str]]:
        """The values and address parts to find again (as written, up to case) with their
        placeholders, and the words of known names; recomputed only when the mapping grew."""
        state = self._known_state[0]
        if state is None or state[0] is not mapping or state[1] != len(mapping):
            known = {
                key.split(":", 1)[1]: placeholder
                for key, placeholder in mapping.items()
                if key.startswith(("SEEN:", "PART:"))
            }
            tokens = frozenset(
                token
                for key in mapping
                if key.startswith("PERSON_NAME:")
                for token in key.split(":", 1)[1].split()
                if len(token) > 2 and token not in self._common_words and token not in _COMMON_WORD_NAMES
            )
            self._known_state = ((mapping, len(mapping)), (known, tokens))
        return self._known_state[1]

    def _known_name_spans(
        self, text: str, mapping: dict[str, str], taken: list[tuple[int, int]]
    ) -> list[PiiSpan]:
        """Capitalised mentions of the words of names already in the mapping, outside ``taken``."""
        if "PERSON_NAME" not in self.kinds:
            return []
        _, tokens = self._known(mapping)
        if not tokens:
            return []
        taken = taken + [(m.start(), m.end()) for m in PLACEHOLDER_RE.finditer(text)]
        spans = []
        for m in _known_tokens_pattern(tokens).finditer(text):
            # Short names in lower case are too often words ("rob", "max").
            if (
                (m.group()[0].isupper() or len(m.group()) >= 4)
                and not _in_address_token(text, m)
                and not any(m.start() < end and start < m.end() for start, end in taken)
            ):
                spans.append(PiiSpan("PERSON_NAME", m.start(), m.end(), m.group()))
        return spans

    def _placeholder(self, kind: str, value: str, mapping: dict[str, str]) -> str:
        normalised = _normalise(kind, value, self.regions)
        key = f"{kind}:{normalised}"
        placeholder = mapping.get(key)
        if placeholder is None:
            if kind == "PERSON_NAME":
                placeholder = self._same_person(normalised, mapping)
            elif kind == "ADDRESS":
                placeholder = self._same_address(normalised, mapping)
            if placeholder is None:
                taken = {p for k, p in mapping.items() if k.startswith(kind + ":")}
                placeholder = f"[{kind}]" if not taken else f"[{kind}_{len(taken) + 1}]"
            mapping[key] = placeholder
        self._remember(kind, value, placeholder, mapping)
        return placeholder

    def _remember(self, kind: str, value: str, placeholder: str, mapping: dict[str, str]) -> None:
        """Keep the value as written, and an address's parts (street, town, postcode), so that other
        mentions of them in the conversation get the same placeholder."""
        surface = _surface_key(value)
        # A single word of a name is matched by the capitalised-token rule instead ("rob" is a verb).
        if len(surface) >= 4 and not (kind == "PERSON_NAME" and " " not in surface):
            mapping.setdefault(f"SEEN:{surface}", placeholder)
        if kind == "ADDRESS":
            for part in _address_parts(value):
                lowered = part.casefold()
                if lowered not in self._common_words and lowered not in _NOT_ADDRESS_PARTS:
                    mapping.setdefault(f"PART:{_surface_key(part)}", placeholder)

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
        person's name. A value replaced anywhere in the messages (or a part of it, such as the town of
        an address) gets the same placeholder wherever else it appears in them, in text and in
        tool-call arguments, so that an answer never holds what its prompt no longer shows.
        """
        if not isinstance(messages, list):
            raise TypeError(f"messages must be a list of dicts, got {type(messages).__name__}")
        mapping = {} if mapping is None else mapping
        for index, message in enumerate(messages):
            if not isinstance(message, dict):
                raise TypeError(f"message {index} must be a dict, got {type(message).__name__}")
        cache: dict[str, list[PiiSpan]] = {}
        # The first pass learns every value of the conversation; the second replaces them everywhere.
        self._learn(messages, mapping, cache)
        return self._anonymise_messages(messages, mapping, cache), mapping

    def _learn(self, messages: list[dict], mapping: dict[str, str], cache: dict[str, list[PiiSpan]]) -> None:
        """Give a placeholder to every value found in the messages, as anonymising them would."""
        for message in messages:
            content = message.get("content")
            if isinstance(content, (str, list)):
                self._learn_value(content, mapping, cache)
            for call in message.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                arguments = function.get("arguments") if isinstance(function, dict) else None
                if isinstance(arguments, str):
                    try:
                        arguments = json.loads(arguments)
                    except json.JSONDecodeError:
                        pass
                self._learn_value(arguments, mapping, cache)
            if message.get("role") == "user" and isinstance(message.get("name"), str):
                self._whole_value("PERSON_NAME", message["name"], mapping)

    def _learn_value(
        self, value: Any, mapping: dict[str, str], cache: dict[str, list[PiiSpan]], key: str = ""
    ) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                self._learn_value(v, mapping, cache, str(k))
        elif isinstance(value, list):
            for item in value:
                self._learn_value(item, mapping, cache, key)
        elif isinstance(value, str):
            kind = _KEY_KINDS.get(key.lower())
            if kind is None and key.lower() == "name" and self._starts_with_first_name(value):
                kind = "PERSON_NAME"
            if kind is not None and kind in self.kinds:
                self._whole_value(kind, value, mapping)
            else:
                for span in self._find_cached(value, cache):
                    self._placeholder(span.kind, span.text, mapping)

    def _anonymise_messages(
        self, messages: list[dict], mapping: dict[str, str], cache: dict[str, list[PiiSpan]]
    ) -> list[dict]:
        result = []
        for index, message in enumerate(messages):
            if not isinstance(message, dict):
                raise TypeError(f"message {index} must be a dict, got {type(message).__name__}")
            anonymised = dict(message)
            content = message.get("content")
            if isinstance(content, str):
                anonymised["content"] = self._anonymise_text(content, mapping, cache)
            elif isinstance(content, list):
                anonymised["content"] = [self._anonymise_value(part, mapping, cache) for part in content]
            if message.get("tool_calls"):
                anonymised["tool_calls"] = [
                    self._anonymise_tool_call(call, mapping, cache) for call in message["tool_calls"]
                ]
            if message.get("role") == "user" and isinstance(message.get("name"), str):
                anonymised["name"] = self._whole_value("PERSON_NAME", message["name"], mapping)
            result.append(anonymised)
        return result

    def _anonymise_tool_call(
        self, call: Any, mapping: dict[str, str], cache: dict[str, list[PiiSpan]]
    ) -> Any:
        if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
            return call
        function = dict(call["function"])
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                parsed = json.loads(arguments)
            except json.JSONDecodeError:
                function["arguments"] = self._anonymise_text(arguments, mapping, cache)
            else:
                anonymised = self._anonymise_value(parsed, mapping, cache)
                if anonymised != parsed:
                    function["arguments"] = json.dumps(anonymised, ensure_ascii=False)
        elif isinstance(arguments, (dict, list)):
            function["arguments"] = self._anonymise_value(arguments, mapping, cache)
        return {**call, "function": function}

    def _anonymise_value(
        self, value: Any, mapping: dict[str, str], cache: dict[str, list[PiiSpan]], key: str | None = None
    ) -> Any:
        """A JSON value with its strings anonymised; a string under a key naming a kind, or equal to a
        value (or address part) replaced elsewhere in the conversation, is replaced whole. Numbers,
        booleans and nulls keep their type so that the arguments still fit the tool's schema."""
        if isinstance(value, dict):
            return {k: self._anonymise_value(v, mapping, cache, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self._anonymise_value(item, mapping, cache, key) for item in value]
        if not isinstance(value, str):
            return value
        kind = _KEY_KINDS.get((key or "").lower())
        if kind is None and (key or "").lower() == "name" and self._starts_with_first_name(value):
            kind = "PERSON_NAME"
        if kind is not None and kind in self.kinds:
            return self._whole_value(kind, value, mapping)
        surface = _surface_key(value)
        known = mapping.get(f"SEEN:{surface}") or mapping.get(f"PART:{surface}")
        if known is not None:
            return known
        return self._anonymise_text(value, mapping, cache)

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
        ``group=None`` every row gets its own mapping. A value replaced in one row of a group is
        replaced in every row of the group.
        """
        if column not in df.columns:
            raise ValueError(
                f"column {column!r} not in the frame (columns: {', '.join(map(str, df.columns))})"
            )
        if group is not None and group not in df.columns:
            raise ValueError(f"group column {group!r} not in the frame")
        values = df[column].tolist()
        labels = df.index.tolist()
        if group is None:
            order, cuts = list(range(len(values))), None
            groups = [None] * len(values)
        else:
            # Rows of a group go to one worker: ordered by the group's first row, cut only between groups.
            groups = df[group].tolist()
            first: dict[Any, int] = {}
            ordinal = np.fromiter((first.setdefault(g, len(first)) for g in groups), dtype=np.int64, count=len(groups))
            order = np.argsort(ordinal, kind="stable").tolist()
            ranked = ordinal[order]
            cuts = (np.flatnonzero(ranked[1:] != ranked[:-1]) + 1).tolist()
        items = [(values[i], groups[i], labels[i]) for i in order]
        done = map_chunks(partial(self._anonymise_rows, column=column, grouped=group is not None), items, cuts=cuts)
        anonymised: list[Any] = [None] * len(values)
        for position, value in zip(order, (v for chunk in done for v in chunk)):
            anonymised[position] = values[position] if value is None else value
        out = df.copy()
        out[column] = pd.Series(anonymised, index=df.index, dtype=object)
        return out

    def _anonymise_rows(self, items: list[tuple[Any, Any, Any]], column: str, grouped: bool) -> list[Any]:
        """Anonymised values of ``(value, group, row label)`` items, a group's rows in order, one
        mapping per group (per row when not ``grouped``). A value that anonymisation left as it was
        comes back as None (the caller keeps its own), so that it is not copied back from a worker."""
        mappings: dict[Any, dict[str, str]] = {}
        rows = [(value, mappings.setdefault(key, {}) if grouped else {}, label) for value, key, label in items]
        # Rows of a conversation repeat its earlier messages: each distinct text is searched once.
        cache: dict[str, list[PiiSpan]] = {}
        for value, mapping, label in rows:
            if isinstance(value, list) and all(isinstance(m, dict) for m in value):
                self._learn(value, mapping, cache)
            elif isinstance(value, str):
                self._learn_value(value, mapping, cache)
            else:
                self._anonymise_cell(value, mapping, cache, label, column)  # checks the type
        out = []
        for value, mapping, label in rows:
            result = self._anonymise_cell(value, mapping, cache, label, column)
            out.append(None if result == value else result)
        return out

    def _anonymise_cell(
        self, value: Any, mapping: dict[str, str], cache: dict[str, list[PiiSpan]], row: Any, column: str
    ) -> Any:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return value
        if isinstance(value, str):
            return self._anonymise_text(value, mapping, cache)
        if isinstance(value, list):
            try:
                return self._anonymise_messages(value, mapping, cache)
            except TypeError as exc:
                raise ValueError(f"row {row!r} of column {column!r}: {exc}") from exc
        raise ValueError(
            f"row {row!r} of column {column!r}: expected a list of messages or a str, got {type(value).__name__}"
        )


@lru_cache(maxsize=4096)
def _known_values_pattern(values: frozenset[str]) -> re.Pattern[str]:
    alternatives = "|".join(
        sorted((r"[\s,]+".join(map(re.escape, v.split())) for v in values), key=len, reverse=True)
    )
    return re.compile(rf"(?<![\w'’-])(?:{alternatives})(?![\w'’-])", re.IGNORECASE)


def _in_address_token(text: str, match: re.Match[str]) -> bool:
    """Whether ``match`` sits inside an e-mail address or a URL ("maria" in "maria.garcia@x.com"): that
    is the detector's to decide, by kind."""
    start = max(text.rfind(" ", 0, match.start()), text.rfind("\n", 0, match.start())) + 1
    ends = [i for i in (text.find(" ", match.end()), text.find("\n", match.end())) if i != -1]
    token = text[start : min(ends) if ends else len(text)]
    return "@" in token or "/" in token


def _surface_key(value: str) -> str:
    """A value as written, up to case, spacing and commas ("Oakland, CA" and "oakland ca")."""
    return " ".join(value.replace(",", " ").split()).casefold()


_US_STATE_ZIP = re.compile(r"[ \t,]+(?:[A-Za-z]{2}\.?)?[ \t]*\d{5}(?:-\d{4})?$")
_TRAILING_ZIP = re.compile(rf"[ \t]+(?:\d{{5}}(?:-\d{{4}})?|{_UK_POSTCODE})$")
_POSTCODE_TOWN = re.compile(r"^(?:[A-Z]-)?(?P<code>\d{5})[ \t]+(?P<town>\S.*)$")
_NOT_ADDRESS_PARTS = _word_set(
    "usa us uk gb united kingdom england scotland wales germany deutschland france allemagne "
    "royaume-uni états-unis cedex apt suite unit flat"
)


def _address_parts(address: str) -> list[str]:
    """The parts of an address that may be written alone elsewhere: the street, the town with or
    without its state and postcode, the postcode and town ("7330 Cedar Lane, Oakland, CA 94611":
    "7330 Cedar Lane", "Cedar Lane", "Oakland, CA 94611", "Oakland, CA", "Oakland")."""
    segments = [s.strip() for s in re.split(r"[,\n]", address) if s.strip()]
    parts: set[str] = set()
    for index, segment in enumerate(segments):
        if index:
            parts.add(", ".join(segments[index:]))
        parts.add(segment)
        street = re.match(r"^\d+[A-Za-z]?(?:[ \t]+(?:bis|ter))?[ \t]+(?P<rest>[^\d].*)$", segment)
        if street:
            parts.add(street.group("rest"))
        town = _POSTCODE_TOWN.match(segment)
        if town:
            parts.update((town.group("town"), town.group("code")))
    for part in list(parts):
        for pattern in (_US_STATE_ZIP, _TRAILING_ZIP):
            trimmed = pattern.sub("", part).strip(" ,")
            if trimmed:
                parts.add(trimmed)
    return [p for p in parts if sum(c.isalpha() for c in p) >= 4 or (p.isdigit() and len(p) >= 5)]


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

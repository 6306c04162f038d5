"""PII values per locale, each a tuple of pieces so that only the identifying part is labelled.

A value such as "Frau Dr. Weiß" is ``(Piece("Frau Dr. "), Piece("Weiß", "PERSON_NAME", "title_last"))``: the
title is plain text, the surname is the labelled span. Phones are checked with ``phonenumbers`` (a real
customer's number is a valid one), cards pass Luhn and IBANs carry correct check digits, so that a detector
that validates them is not penalised for the set's own mistakes.
"""

from __future__ import annotations

import random
import string
import unicodedata
from dataclasses import dataclass

import phonenumbers
from faker import Faker
from stdnum import iban

LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR")
FAMILY = {"en_US": "en", "en_GB": "en", "de_DE": "de", "fr_FR": "fr"}
REGION = {"en_US": "US", "en_GB": "GB", "de_DE": "DE", "fr_FR": "FR"}


@dataclass(frozen=True)
class Piece:
    text: str
    kind: str | None = None  # None: plain text (a title, a separator)
    subtype: str = ""


Value = tuple[Piece, ...]


def plain(text: str) -> Value:
    return (Piece(text),)


# --- names ------------------------------------------------------------------------------------------------

# Romanised names of origins that the Faker locales used here do not cover, as customers in the four
# countries write them.
OTHER_ORIGINS: dict[str, tuple[list[str], list[str]]] = {
    "arabic": (
        ["Mohammed", "Fatima", "Ahmed", "Layla", "Youssef", "Amina", "Karim", "Nour", "Omar", "Salma", "Hassan"],
        ["Al-Sayed", "Haddad", "Benali", "El Amrani", "Mansour", "Khalil", "Bouzid", "Nasser", "Al-Masri"],
    ),
    "chinese": (
        ["Wei", "Li", "Xiaoming", "Mei", "Jun", "Yan", "Hui", "Jing", "Zhiwei", "Lin"],
        ["Zhang", "Wang", "Chen", "Liu", "Huang", "Zhao", "Wu", "Zhou", "Xu"],
    ),
    "vietnamese": (["Minh", "Thu", "Anh", "Quang", "Linh", "Huong", "Tuan"], ["Nguyen", "Tran", "Le", "Pham", "Hoang", "Vu"]),
    "indian": (
        ["Priya", "Rahul", "Ananya", "Vikram", "Deepa", "Arjun", "Sanjay", "Kavita", "Rohan", "Meera"],
        ["Sharma", "Patel", "Iyer", "Reddy", "Gupta", "Singh", "Chatterjee", "Nair", "Krishnamurthy"],
    ),
    "nigerian": (
        ["Chinedu", "Ngozi", "Oluwaseun", "Adaeze", "Emeka", "Folake", "Tunde", "Chiamaka"],
        ["Okafor", "Adeyemi", "Okonkwo", "Balogun", "Eze", "Oyelaran", "Nwosu"],
    ),
    "japanese": (["Yuki", "Haruto", "Sakura", "Kenji", "Aiko", "Takeshi"], ["Tanaka", "Suzuki", "Takahashi", "Watanabe", "Sato"]),
    "greek": (["Eleni", "Giorgos", "Dimitris", "Katerina", "Nikos"], ["Papadopoulos", "Georgiou", "Konstantinou", "Nikolaidis"]),
    "irish_scottish": (
        ["Siobhan", "Niamh", "Ciaran", "Aoife", "Padraig", "Eilidh", "Callum", "Fionnuala"],
        ["O'Connor", "McDonald", "O'Sullivan", "MacLeod", "Ní Bhriain", "Fitzgerald", "McAllister", "O'Neill"],
    ),
    "dutch_german_particles": (
        ["Maarten", "Sanne", "Friedrich", "Charlotte", "Joost", "Annelie"],
        ["van der Berg", "de Vries", "von Stein", "van Dijk", "zu Hohenlohe", "von der Heide", "ter Horst"],
    ),
    "french_particles": (
        ["Marie-Claire", "Jean-Baptiste", "Anne-Sophie", "Pierre-Louis", "Marie-Hélène", "Jean-Luc"],
        ["de La Fontaine", "Le Goff", "d'Arcy", "de Saint-Exupéry", "Du Pont", "Le Floch", "de Villiers"],
    ),
}
FAKER_ORIGINS = ("es_ES", "it_IT", "pl_PL", "pt_PT", "tr_TR", "nl_NL", "en_IE")

TITLES = {
    "en": (["Mr", "Mr.", "Mr"], ["Mrs", "Ms", "Miss", "Mrs."], ["Dr", "Dr."]),
    "de": (["Herr", "Herrn"], ["Frau"], ["Dr.", "Prof."]),
    "fr": (["M.", "Monsieur", "Mr"], ["Mme", "Madame", "Mlle"], ["Dr", "Docteur"]),
}


@dataclass(frozen=True)
class Person:
    first: str
    last: str
    female: bool
    origin: str


def _person(fakers: dict[str, Faker], locale: str, rng: random.Random) -> Person:
    female = rng.random() < 0.5
    roll = rng.random()
    if roll < 0.62:
        fake, origin = fakers[locale], locale
    elif roll < 0.82:
        origin = rng.choice(FAKER_ORIGINS)
        fake = fakers[origin]
    else:
        origin = rng.choice(sorted(OTHER_ORIGINS))
        firsts, lasts = OTHER_ORIGINS[origin]
        return Person(rng.choice(firsts), rng.choice(lasts), female, origin)
    first = fake.first_name_female() if female else fake.first_name_male()
    last = fake.last_name()
    if rng.random() < 0.08:  # double-barrelled surname
        last = f"{last}-{fake.last_name()}"
    return Person(first.strip(), last.strip(), female, origin)


def transliterate(text: str) -> str:
    """How people spell their name in an e-mail address: ß -> ss, ä -> ae in German, accents dropped."""
    text = text.replace("ß", "ss").replace("ä", "ae").replace("ö", "oe").replace("ü", "ue")
    text = text.replace("Ä", "Ae").replace("Ö", "Oe").replace("Ü", "Ue").replace("ı", "i").replace("ł", "l")
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c.isascii() and (c.isalnum() or c in "-. '"))


def name_value(person: Person, form: str, family: str, rng: random.Random) -> Value:
    """One way of writing a person's name; ``form``: full, first, title_last, last_first, lower, upper."""
    kind = "PERSON_NAME"
    if form == "first":
        return (Piece(person.first, kind, "first"),)
    if form == "title_last":
        males, females, doctors = TITLES[family]
        title = rng.choice(doctors) if rng.random() < 0.1 else rng.choice(females if person.female else males)
        if family == "de" and title in ("Dr.", "Prof."):
            title = ("Frau " if person.female else "Herr ") + title
        return (Piece(title + " "), Piece(person.last, kind, "title_last"))
    if form == "last_first":
        return (Piece(f"{person.last}, {person.first}", kind, "last_first"),)
    full = f"{person.first} {person.last}"
    if family == "en" and rng.random() < 0.08:
        full = f"{person.first} {rng.choice(string.ascii_uppercase)}. {person.last}"
    if form == "lower":
        return (Piece(full.lower(), kind, "lower"),)
    if form == "upper":
        return (Piece(full.upper(), kind, "upper"),)
    return (Piece(full, kind, "full"),)


# --- phones -----------------------------------------------------------------------------------------------

US_AREAS = ("212", "646", "917", "718", "415", "510", "408", "312", "773", "617", "206", "512", "303", "404",
            "713", "305", "702", "503", "612", "919", "202", "267", "215", "480", "602", "314", "816", "615")
GB_PREFIXES = ("74", "75", "77", "78", "79", "73", "20", "161", "121", "113", "141", "131", "117", "1223", "1865",
               "114", "151", "1632", "1273", "2890", "29")
DE_PREFIXES = ("151", "152", "157", "159", "160", "162", "163", "170", "171", "172", "173", "174", "175", "176", "177",
               "178", "179", "30", "40", "89", "69", "221", "711", "211", "341", "351", "511", "911", "761", "421")
FR_PREFIXES = ("6", "7", "1", "2", "3", "4", "5", "9")
PREFIXES = {"US": US_AREAS, "GB": GB_PREFIXES, "DE": DE_PREFIXES, "FR": FR_PREFIXES}
NSN_LENGTHS = {"US": (10,), "GB": (10,), "DE": (10, 11), "FR": (9,)}
COUNTRY_CODE = {"US": 1, "GB": 44, "DE": 49, "FR": 33}


def _valid_number(region: str, rng: random.Random) -> phonenumbers.PhoneNumber:
    for _ in range(500):
        prefix = rng.choice(PREFIXES[region])
        length = rng.choice(NSN_LENGTHS[region])
        if region == "DE" and prefix[0] != "1":
            length = rng.choice((len(prefix) + 7, len(prefix) + 8))
        rest = "".join(rng.choice(string.digits) for _ in range(length - len(prefix)))
        if region == "US" and (rest[0] in "01" or rest[:3] == "555"):
            continue
        number = phonenumbers.parse(f"+{COUNTRY_CODE[region]}{prefix}{rest}")
        if phonenumbers.is_valid_number(number):
            return number
    raise RuntimeError(f"no valid {region} number drawn in 500 tries")


def _is_mobile(number: phonenumbers.PhoneNumber) -> bool:
    return phonenumbers.number_type(number) in (phonenumbers.PhoneNumberType.MOBILE,
                                                phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)


def phone_value(locale: str, rng: random.Random) -> Value:
    """A valid number of the locale's country, written in one of the ways people there write numbers."""
    region = REGION[locale]
    number = _valid_number(region, rng)
    national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    intl = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    nsn = phonenumbers.national_significant_number(number)
    cc = str(COUNTRY_CODE[region])
    styles: dict[str, str]
    if region == "US":
        a, b, c = nsn[:3], nsn[3:6], nsn[6:]
        styles = {"paren": f"({a}) {b}-{c}", "dash": f"{a}-{b}-{c}", "dot": f"{a}.{b}.{c}", "digits": nsn,
                  "intl": f"+1 {a} {b} {c}", "intl_paren": f"+1 ({a}) {b}-{c}", "one_dash": f"1-{a}-{b}-{c}",
                  "e164": e164, "space": f"{a} {b} {c}", "intl_dash": f"+1-{a}-{b}-{c}"}
    elif region == "GB":
        rest_intl = intl.split(" ", 1)[1]
        styles = {"national": national, "compact": "0" + nsn, "intl": intl, "intl_zero": f"+44 (0){rest_intl}",
                  "double_zero": f"0044 {rest_intl}", "e164": e164}
        if _is_mobile(number):
            styles["mobile_533"] = f"0{nsn[:4]} {nsn[4:7]} {nsn[7:]}"
    elif region == "DE":
        area, _, subscriber = national.partition(" ")
        subscriber = subscriber.replace(" ", "")
        styles = {"national": f"{area} {subscriber}", "slash": f"{area}/{subscriber}", "dash": f"{area}-{subscriber}",
                  "paren": f"({area}) {subscriber}", "intl": f"+49 {area[1:]} {subscriber}",
                  "intl_zero": f"+49 (0){area[1:]} {subscriber}", "double_zero": f"0049 {area[1:]} {subscriber}",
                  "e164": e164, "compact": "0" + nsn}
        if len(subscriber) >= 7:
            pairs = " ".join(subscriber[i:i + 2] for i in range(0, len(subscriber), 2))
            styles["pairs"] = f"{area} {pairs}"
    else:
        pairs = [nsn[0]] + [nsn[i:i + 2] for i in range(1, 9, 2)]
        styles = {"national": "0" + " ".join(pairs), "dots": "0" + ".".join(pairs), "compact": "0" + nsn,
                  "dashes": "0" + "-".join(pairs), "intl": "+33 " + " ".join(pairs),
                  "intl_zero": "+33 (0)" + " ".join(pairs), "double_zero": "0033 " + " ".join(pairs), "e164": e164}
    style = rng.choice(sorted(styles))
    assert cc in e164
    return (Piece(styles[style], "PHONE", f"{region}_{style}"),)


# --- e-mails ----------------------------------------------------------------------------------------------

FREEMAIL = {
    "en_US": ("gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "aol.com", "comcast.net",
              "protonmail.com", "me.com"),
    "en_GB": ("gmail.com", "btinternet.com", "hotmail.co.uk", "yahoo.co.uk", "sky.com", "outlook.com",
              "virginmedia.com", "live.co.uk", "icloud.com"),
    "de_DE": ("web.de", "gmx.de", "gmx.net", "t-online.de", "gmail.com", "posteo.de", "freenet.de", "outlook.de",
              "mailbox.org", "icloud.com"),
    "fr_FR": ("orange.fr", "free.fr", "laposte.net", "gmail.com", "hotmail.fr", "sfr.fr", "wanadoo.fr", "yahoo.fr",
              "outlook.fr", "icloud.com"),
}


def email_value(person: Person, locale: str, fakers: dict[str, Faker], rng: random.Random) -> Value:
    first = transliterate(person.first).lower().replace(" ", "").replace("'", "")
    last = transliterate(person.last).lower().replace(" ", "").replace("'", "")
    year = str(rng.randint(1950, 2006))
    patterns = {
        "first.last": f"{first}.{last}", "f.last": f"{first[:1]}.{last}", "firstlast": f"{first}{last}",
        "first_last": f"{first}_{last}", "first.last.year": f"{first}.{last}{year[2:]}", "last.first": f"{last}.{first}",
        "first_year": f"{first}{year}", "flast": f"{first[:1]}{last}", "word": fakers[locale].user_name(),
        "first.last+tag": f"{first}.{last}+{rng.choice(['orders', 'shop', 'news', 'bakery'])}",
    }
    style = rng.choice(sorted(patterns))
    domain = rng.choice(FREEMAIL[locale]) if rng.random() < 0.8 else fakers[locale].domain_name()
    address = f"{patterns[style]}@{domain}"
    if rng.random() < 0.07:
        address = address[0].upper() + address[1:]
    return (Piece(address, "EMAIL", style.replace("+tag", "_tag") if domain in FREEMAIL[locale] else "company"),)


# --- street addresses -------------------------------------------------------------------------------------

US_STREETS = ("Main", "Oak", "Maple", "Cedar", "Elm", "Pine", "Washington", "Lake", "Hill", "Park", "2nd", "3rd",
              "5th", "W 46th", "N Broadway", "Sunset", "Mission", "Valencia", "Market", "Lincoln", "Jefferson",
              "Highland", "Spring", "Church", "River", "Amphitheatre", "E 14th", "Magnolia", "Peachtree", "Cherry")
US_SUFFIXES = ("St", "Street", "Ave", "Avenue", "Rd", "Road", "Blvd", "Dr", "Drive", "Ln", "Lane", "Ct", "Pkwy",
               "Way", "Pl", "St.", "Ave.")
US_CITIES = (("New York", "NY", "100"), ("Brooklyn", "NY", "112"), ("San Francisco", "CA", "941"),
             ("Mountain View", "CA", "940"), ("Los Angeles", "CA", "900"), ("Chicago", "IL", "606"),
             ("Boston", "MA", "021"), ("Seattle", "WA", "981"), ("Austin", "TX", "787"), ("Denver", "CO", "802"),
             ("Atlanta", "GA", "303"), ("Houston", "TX", "770"), ("Miami", "FL", "331"), ("Portland", "OR", "972"),
             ("Minneapolis", "MN", "554"), ("Raleigh", "NC", "276"), ("Phoenix", "AZ", "850"), ("Nashville", "TN", "372"),
             ("Philadelphia", "PA", "191"), ("Palo Alto", "CA", "943"))
GB_STREETS = ("High Street", "Station Road", "Church Lane", "Mill Lane", "Victoria Road", "Queen's Road",
              "Park Avenue", "Kings Road", "London Road", "Manor Way", "The Crescent", "Orchard Close", "Baker Street",
              "Albert Terrace", "Chapel Street", "Green Lane", "Elm Grove", "Springfield Drive", "Meadow View",
              "St John's Road", "Castle Street", "Westbourne Gardens", "Abbey Road", "Wellington Place")
GB_TOWNS = (("London", "NW1"), ("London", "SE15"), ("London", "E8"), ("Manchester", "M20"), ("Bristol", "BS8"),
            ("Leeds", "LS6"), ("Birmingham", "B13"), ("Glasgow", "G12"), ("Edinburgh", "EH9"), ("Cardiff", "CF24"),
            ("Brighton", "BN1"), ("Oxford", "OX4"), ("Cambridge", "CB1"), ("York", "YO10"), ("Bath", "BA2"),
            ("Norwich", "NR2"), ("Belfast", "BT7"), ("Sheffield", "S11"))
DE_STEMS = ("Haupt", "Bahnhof", "Schiller", "Goethe", "Linden", "Garten", "Kirch", "Berg", "Wald", "Schul", "Dorf",
            "Mühlen", "Rosen", "Birken", "Kant", "Beethoven", "Mozart", "Sonnen", "Feld", "Wiesen", "Ahorn", "Eichen",
            "Muster", "Tal", "Markt", "Heide", "Frieden", "Blumen")
DE_HYPHENATED = ("Friedrich-Ebert-", "Karl-Marx-", "Konrad-Adenauer-", "Willy-Brandt-", "Heinrich-Heine-",
                 "Otto-Hahn-", "Rosa-Luxemburg-")
DE_SUFFIXES = ("straße", "str.", "strasse", "weg", "allee", "platz", "ring", "gasse", "damm")
DE_PHRASES = ("Am Markt", "An der Kirche", "Im Winkel", "Zum Sportplatz", "Unter den Linden", "Alte Landstraße",
              "Neuer Weg", "Auf dem Berg", "In den Gärten", "Hinter der Mühle", "Am Stadtpark")
DE_CITIES = (("Berlin", 10115, 14199), ("Hamburg", 20095, 22769), ("München", 80331, 81929), ("Köln", 50667, 51149),
             ("Frankfurt am Main", 60306, 60599), ("Stuttgart", 70173, 70629), ("Düsseldorf", 40210, 40629),
             ("Leipzig", 4103, 4357), ("Dresden", 1067, 1328), ("Hannover", 30159, 30669), ("Nürnberg", 90402, 90491),
             ("Freiburg im Breisgau", 79098, 79117), ("Bremen", 28195, 28779), ("Münster", 48143, 48167),
             ("Heidelberg", 69115, 69126), ("Bonn", 53111, 53229), ("Mainz", 55116, 55131), ("Potsdam", 14467, 14482))
FR_TYPES = ("rue", "rue", "rue", "avenue", "av.", "Av.", "boulevard", "bd", "place", "allée", "impasse", "chemin",
            "quai", "route", "cours", "Rue", "Avenue")
FR_NAMES = ("de la Paix", "Victor Hugo", "Jean Jaurès", "de la République", "des Lilas", "du Général de Gaulle",
            "Pasteur", "des Écoles", "de la Gare", "du Moulin", "Saint-Michel", "des Champs-Élysées", "Gambetta",
            "Émile Zola", "de Verdun", "Foch", "des Tilleuls", "du Château", "Voltaire", "de Belleville",
            "des Acacias", "Lamartine", "de l'Église", "du Port")
FR_CITIES = (("Paris", 75001, 75020), ("Lyon", 69001, 69009), ("Marseille", 13001, 13016), ("Toulouse", 31000, 31500),
             ("Nice", 6000, 6300), ("Nantes", 44000, 44300), ("Strasbourg", 67000, 67200), ("Bordeaux", 33000, 33800),
             ("Lille", 59000, 59800), ("Rennes", 35000, 35700), ("Montpellier", 34000, 34090), ("Reims", 51100, 51100),
             ("Grenoble", 38000, 38100), ("Dijon", 21000, 21000), ("Angers", 49000, 49100))


def _gb_postcode(outward: str, rng: random.Random) -> str:
    return f"{outward} {rng.randint(1, 9)}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}"


def street_line(locale: str, rng: random.Random) -> str:
    if locale == "en_US":
        number = str(rng.choice((rng.randint(1, 99), rng.randint(100, 999), rng.randint(1000, 19999))))
        line = f"{number} {rng.choice(US_STREETS)} {rng.choice(US_SUFFIXES)}"
        if rng.random() < 0.25:
            line += rng.choice((f", Apt {rng.randint(1, 30)}{rng.choice('ABCD')}", f" #{rng.randint(2, 40)}",
                                f", Suite {rng.randint(1, 9)}00", f" Unit {rng.randint(1, 12)}"))
        return line
    if locale == "en_GB":
        number = str(rng.randint(1, 240)) + (rng.choice("ABC") if rng.random() < 0.1 else "")
        line = f"{number} {rng.choice(GB_STREETS)}"
        if rng.random() < 0.2:
            line = f"Flat {rng.randint(1, 24)}, {line}"
        return line
    if locale == "de_DE":
        number = str(rng.randint(1, 180)) + (rng.choice(("a", "b", " b", "c")) if rng.random() < 0.2 else "")
        roll = rng.random()
        if roll < 0.2:
            street = rng.choice(DE_PHRASES)
        elif roll < 0.35:
            street = rng.choice(DE_HYPHENATED) + rng.choice(("Straße", "Str.", "Allee", "Platz", "Ring"))
        else:
            street = rng.choice(DE_STEMS) + rng.choice(DE_SUFFIXES)
        return f"{street} {number}"
    number = str(rng.randint(1, 150)) + (rng.choice((" bis", " ter", "bis")) if rng.random() < 0.1 else "")
    comma = "," if rng.random() < 0.3 else ""
    line = f"{number}{comma} {rng.choice(FR_TYPES)} {rng.choice(FR_NAMES)}"
    if rng.random() < 0.12:
        line = f"{rng.choice(('appartement', 'appt', 'Bât. B,', 'apt'))} {rng.randint(1, 60)}, {line}"
    return line


def city_part(locale: str, rng: random.Random) -> str:
    if locale == "en_US":
        city, state, zip3 = rng.choice(US_CITIES)
        return f"{city}, {state} {zip3}{rng.randint(0, 99):02d}"
    if locale == "en_GB":
        town, outward = rng.choice(GB_TOWNS)
        return f"{town} {_gb_postcode(outward, rng)}" if rng.random() < 0.7 else f"{town}, {_gb_postcode(outward, rng)}"
    cities = DE_CITIES if locale == "de_DE" else FR_CITIES
    city, low, high = rng.choice(cities)
    return f"{rng.randint(low, high):05d} {city}"


def address_value(locale: str, rng: random.Random, full: bool | None = None) -> Value:
    """A street address: the street line alone, or with postcode and town (``full``)."""
    if full is None:
        full = rng.random() < 0.6
    line = street_line(locale, rng)
    if not full:
        return (Piece(line, "ADDRESS", "street"),)
    separator = rng.choice((", ", ", ", " ")) if locale != "en_US" else ", "
    return (Piece(f"{line}{separator}{city_part(locale, rng)}", "ADDRESS", "street_town"),)


# --- cards, IBANs, ids --------------------------------------------------------------------------------------

def luhn_complete(partial: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(partial)):
        digit = int(ch)
        if i % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return partial + str((10 - total % 10) % 10)


def card_value(rng: random.Random) -> Value:
    brand = rng.choice(("visa", "visa", "mastercard", "mastercard2", "amex", "discover"))
    prefix = {"visa": "4", "mastercard": str(rng.randint(51, 55)), "mastercard2": str(rng.randint(2221, 2720)),
              "amex": rng.choice(("34", "37")), "discover": "6011"}[brand]
    length = 15 if brand == "amex" else 16
    digits = luhn_complete(prefix + "".join(rng.choice(string.digits) for _ in range(length - 1 - len(prefix))))
    style = rng.choice(("spaces", "spaces", "dashes", "plain"))
    if style == "plain":
        text = digits
    else:
        groups = [digits[:4], digits[4:10], digits[10:]] if brand == "amex" else [digits[i:i + 4] for i in range(0, 16, 4)]
        text = (" " if style == "spaces" else "-").join(groups)
    return (Piece(text, "CARD_NUMBER", f"{brand.rstrip('2')}_{style}"),)


def _fr_rib_key(bank: str, branch: str, account: str) -> str:
    return f"{97 - (89 * int(bank) + 15 * int(branch) + 3 * int(account)) % 97:02d}"


def _bban(country: str, rng: random.Random) -> str:
    digits = lambda n: "".join(rng.choice(string.digits) for _ in range(n))
    lambda n: "".join(rng.choice(string.ascii_uppercase) for _ in range(n))
    if country == "GB":
        return rng.choice(("NWBK", "BARC", "LOYD", "HBUK", "MIDL", "NAIA")) + digits(14)
    if country == "DE":
        return digits(18)
    if country == "FR":
        bank, branch, account = digits(5), digits(5), digits(11)
        return bank + branch + account + _fr_rib_key(bank, branch, account)
    if country == "NL":
        return rng.choice(("ABNA", "INGB", "RABO", "SNSB", "TRIO")) + digits(10)
    if country == "BE":
        head = digits(10)
        check = int(head) % 97 or 97
        return f"{head}{check:02d}"
    if country == "AT":
        return digits(16)
    if country == "CH":
        return digits(17)
    if country == "IE":
        return rng.choice(("AIBK", "BOFI", "IPBS")) + digits(14)
    if country == "LU":
        return digits(3) + digits(13)
    raise ValueError(country)


def iban_check(country: str, bban: str) -> str:
    rearranged = bban + country + "00"
    numeric = "".join(str(int(c, 36)) for c in rearranged)
    return f"{98 - int(numeric) % 97:02d}"


IBAN_COUNTRIES = {"en_GB": ("GB", "GB", "GB", "GB", "IE", "NL", "DE", "FR"),
                  "de_DE": ("DE", "DE", "DE", "DE", "AT", "CH", "NL", "LU"),
                  "fr_FR": ("FR", "FR", "FR", "FR", "BE", "LU", "DE", "CH")}


def iban_value(locale: str, rng: random.Random) -> Value:
    country = rng.choice(IBAN_COUNTRIES[locale])
    for _ in range(1000):  # some countries' national checks (Belgian bank codes) reject random numbers
        bban = _bban(country, rng)
        compact = f"{country}{iban_check(country, bban)}{bban}"
        if iban.is_valid(compact):
            break
    else:
        raise RuntimeError(f"no valid {country} IBAN drawn in 1000 tries")
    style = rng.choice(("grouped", "grouped", "grouped", "compact", "lower_grouped"))
    grouped = " ".join(compact[i:i + 4] for i in range(0, len(compact), 4))
    text = {"grouped": grouped, "compact": compact, "lower_grouped": grouped.lower()}[style]
    return (Piece(text, "ACCOUNT_NUMBER", f"{country}_{style}"),)


def id_value(rng: random.Random, lower: bool = False) -> Value:
    """An order, booking or customer id as small businesses' systems print them."""
    alnum = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    shapes = {
        "digits5": lambda: str(rng.randint(10000, 99999)),
        "digits6": lambda: str(rng.randint(100000, 999999)),
        "digits8": lambda: str(rng.randint(10000000, 99999999)),
        "year_seq": lambda: f"{rng.randint(2022, 2026)}-{rng.randint(1, 9999):04d}",
        "prefix_digits": lambda: f"{rng.choice(('BK', 'ORD', 'RES', 'CMD', 'BST', 'TK', 'AUF', 'CU'))}-{rng.randint(1000, 99999)}",
        "prefix_year_seq": lambda: f"{rng.choice(('INV', 'RE', 'FAC', 'ORD'))}-{rng.randint(2023, 2026)}-{rng.randint(1, 9999):04d}",
        "alnum6": lambda: "".join(rng.choice(alnum) for _ in range(6)),
        "letter_digits": lambda: f"{rng.choice('KRAC')}{rng.randint(10000, 999999)}",
        "alnum_dashed": lambda: f"{''.join(rng.choice(alnum) for _ in range(3))}-{''.join(rng.choice(alnum) for _ in range(3))}",
    }
    shape = rng.choice(sorted(shapes))
    text = shapes[shape]()
    return (Piece(text.lower() if lower else text, "ID", shape),)

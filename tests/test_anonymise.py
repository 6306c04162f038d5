"""Anonymisation: what each detector catches and leaves alone, consistency, idempotence, speed."""

from __future__ import annotations

import copy
import itertools
import json

import pandas as pd
import pytest

from homegrown.data.anonymise import KINDS, Anonymiser, PiiSpan, find_pii


@pytest.fixture(scope="module")
def anonymiser() -> Anonymiser:
    return Anonymiser()


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("Write to maria.garcia@example.com today", "EMAIL", "maria.garcia@example.com"),
        ("mail: J.O'Neil+events@sub.my-hibachi.co.uk.", "EMAIL", "J.O'Neil+events@sub.my-hibachi.co.uk"),
        ("send it to 'maria@example.com'", "EMAIL", "maria@example.com"),
        ("Call me at (212) 555-0123 please", "PHONE", "(212) 555-0123"),
        ("my cell is 415.555.2671", "PHONE", "415.555.2671"),
        ("London office: +44 20 7946 0958.", "PHONE", "+44 20 7946 0958"),
        ("toll free 1-800-555-0199", "PHONE", "1-800-555-0199"),
        ("My card is 4111 1111 1111 1111 2 guests", "CARD_NUMBER", "4111 1111 1111 1111"),
        ("card 5500-0000-0000-0004 exp 12/28", "CARD_NUMBER", "5500-0000-0000-0004"),
        ("amex 3782 822463 10005", "CARD_NUMBER", "3782 822463 10005"),
        ("pay with 4012888888881881", "CARD_NUMBER", "4012888888881881"),
        ("IBAN DE89 3704 0044 0532 0130 00 please", "ACCOUNT_NUMBER", "DE89 3704 0044 0532 0130 00"),
        ("to GB82WEST12345698765432", "ACCOUNT_NUMBER", "GB82WEST12345698765432"),
        ("account number 12345678 at Chase", "ACCOUNT_NUMBER", "12345678"),
        ("routing # 021000021", "ACCOUNT_NUMBER", "021000021"),
        ("booking BK-48213 is confirmed", "ID", "BK-48213"),
        ("customer cust_9f8a7 asked", "ID", "cust_9f8a7"),
        ("see INV-2024-0012", "ID", "INV-2024-0012"),
        ("interaction int-000123 failed", "ID", "int-000123"),
        ("uuid 123e4567-e89b-12d3-a456-426614174000", "ID", "123e4567-e89b-12d3-a456-426614174000"),
        ("My SSN is 123-45-6789.", "ID", "123-45-6789"),
        ("your confirmation code: ABC123", "ID", "ABC123"),
        ("about order #A12345", "ID", "A12345"),
        ("server 192.168.1.20.", "IP_ADDRESS", "192.168.1.20"),
        ("from 2001:db8::8a2e:370:7334 at noon", "IP_ADDRESS", "2001:db8::8a2e:370:7334"),
        (
            "Please deliver to 225 E. John Carpenter Freeway, Suite 1500 Irving, Texas 75062 tomorrow",
            "ADDRESS",
            "225 E. John Carpenter Freeway, Suite 1500 Irving, Texas 75062",
        ),
        (
            "I live at 123 Main Street, Springfield, IL 62704.",
            "ADDRESS",
            "123 Main Street, Springfield, IL 62704",
        ),
        ("Party at 12 Oak Ave please", "ADDRESS", "12 Oak Ave"),
        (
            "For 12 people at 4500 Sunset Blvd Apt 3, Los Angeles CA 90027",
            "ADDRESS",
            "4500 Sunset Blvd Apt 3, Los Angeles CA 90027",
        ),
        ("Come to 350 5th Avenue", "ADDRESS", "350 5th Avenue"),
        ("send it to PO Box 4455", "ADDRESS", "PO Box 4455"),
        ("Hi, my name is Maria Garcia and I need help", "PERSON_NAME", "Maria Garcia"),
        ("my name's Zbigniew, party of 6", "PERSON_NAME", "Zbigniew"),
        ("I'm John, booking for Friday", "PERSON_NAME", "John"),
        ("Hi, this is Priya Sharma from the office", "PERSON_NAME", "Priya Sharma"),
        ("Hi Marcus, your booking is confirmed", "PERSON_NAME", "Marcus"),
        ("Thanks for everything!\n\nBest,\nSarah Connor", "PERSON_NAME", "Sarah Connor"),
        ("See you soon\n- Maria", "PERSON_NAME", "Maria"),
        ("It's Mr. Okonkwo here", "PERSON_NAME", "Okonkwo"),
        ("Name: Olga Kowalczyk", "PERSON_NAME", "Olga Kowalczyk"),
        ('{"customer_name": "Zbigniew Brzeczyszczykiewicz"}', "PERSON_NAME", "Zbigniew Brzeczyszczykiewicz"),
        ("Booking for Maria Garcia on Friday", "PERSON_NAME", "Maria Garcia"),
        ("please ask for Daniel at the door", "PERSON_NAME", "Daniel"),
        ("Chef Tom will cook", "PERSON_NAME", "Tom"),
        # a common-word first name counts when a surname follows
        ("this is June Carter speaking", "PERSON_NAME", "June Carter"),
        ("my name is Will", "PERSON_NAME", "Will"),
    ],
)
def test_finds_each_kind(text: str, kind: str, value: str) -> None:
    found = [(span.kind, span.text) for span in find_pii(text)]
    assert (kind, value) in found
    for span in find_pii(text):
        assert text[span.start : span.end] == span.text


@pytest.mark.parametrize(
    "text",
    [
        "Do you serve wagyu beef? Yes, wagyu at $80/person",
        "We serve Filet Mignon and Hibachi Chicken with Jasmine Rice",
        "Order 3 Filet Mignon and 2 Lobster Tails for the Chef",
        "Can we book for 5 people on May 3 at 7pm?",
        "this is June 5th, right?",
        "Is May 5 available? We have 15 people.",
        "Hello June, welcome!",  # a month alone is not taken as a name
        "Thanks, Will",
        "Grant Park in Chicago",
        "Dear Valued Customer, thank you",
        "Cheers,\nThe My Hibachi Team",
        "this is My Hibachi, how can I help?",
        "The total is $1,234.56 for 20 guests at 7:30 PM on 2026-06-05.",
        "We start at 10:30:00 sharp",
        "Version 1.2.3 of the menu, see ISO-8601 and SHA-256",
        "We can do mid-2026 or 2027, COVID-19 rules apply, gpt-4o wrote it",
        "Our 2 Main Course options and The Main Street location",
        "Table 4 at 7pm, iPhone 15 Pro, Room 101 Suite",
        "card 4111 1111 1111 1112 fails the Luhn check",
        "IBAN DE89 3704 0044 0532 0130 01 has a bad checksum",
        "999.168.1.20 is not an address",
        "call 555-0100",  # no area code: not a valid US number
        "Order #12 is ready",
        "I am Very happy with the food",
        "not-an-email@ and @handle",
    ],
)
def test_leaves_ordinary_text_alone(text: str) -> None:
    assert find_pii(text) == []


def test_placeholders_are_never_reported() -> None:
    text = " ".join(f"[{kind}] [{kind}_2] [{kind}_13]" for kind in KINDS)
    assert find_pii(text) == []
    assert find_pii("my name is [PERSON_NAME], call me at [PHONE_2], booking [ID]") == []


def test_find_pii_reports_spans_left_to_right_without_overlap() -> None:
    text = "Email maria@example.com, call (212) 555-0123, I'm Maria Garcia at 12 Oak Ave"
    spans = find_pii(text)
    assert [s.kind for s in spans] == ["EMAIL", "PHONE", "PERSON_NAME", "ADDRESS"]
    assert all(a.end <= b.start for a, b in itertools.pairwise(spans))
    assert isinstance(spans[0], PiiSpan)


def test_a_street_address_wins_over_the_name_inside_it() -> None:
    assert [s.kind for s in find_pii("Meet at 225 John Carpenter Freeway")] == ["ADDRESS"]


def test_anonymise_text_replaces_with_placeholders(anonymiser: Anonymiser) -> None:
    text, mapping = anonymiser.anonymise_text(
        "I'm Maria Garcia, email maria@example.com, card 4111 1111 1111 1111, booking BK-48213, IP 10.0.0.7"
    )
    assert text == "I'm [PERSON_NAME], email [EMAIL], card [CARD_NUMBER], booking [ID], IP [IP_ADDRESS]"
    assert mapping["EMAIL:maria@example.com"] == "[EMAIL]"


def test_consistent_within_a_conversation(anonymiser: Anonymiser) -> None:
    messages = [
        {"role": "system", "content": "You are the assistant of My Hibachi."},
        {"role": "user", "content": "Hi, I'm Maria Garcia. Reach me at maria@example.com or (212) 555-0123."},
        {"role": "assistant", "content": "Thanks Maria! I'll write to maria@example.com."},
        {
            "role": "user",
            "content": "Also my husband Carlos Lopez, carlos@example.com, and MARIA@EXAMPLE.COM is mine.",
        },
        {
            "role": "assistant",
            "content": "Noted, Maria. Carlos will get a copy; we call 212-555-0123 the day before.",
        },
    ]
    out, mapping = anonymiser.anonymise_messages(messages)
    assert out[0] == messages[0]
    assert out[1]["content"] == "Hi, I'm [PERSON_NAME]. Reach me at [EMAIL] or [PHONE]."
    assert out[2]["content"] == "Thanks [PERSON_NAME]! I'll write to [EMAIL]."
    assert out[3]["content"] == "Also my husband [PERSON_NAME_2], [EMAIL_2], and [EMAIL] is mine."
    assert (
        out[4]["content"]
        == "Noted, [PERSON_NAME]. [PERSON_NAME_2] will get a copy; we call [PHONE] the day before."
    )
    assert sorted(set(mapping.values())) == [
        "[EMAIL]",
        "[EMAIL_2]",
        "[PERSON_NAME]",
        "[PERSON_NAME_2]",
        "[PHONE]",
    ]


def test_a_page_json_answer_stays_valid_json(anonymiser: Anonymiser) -> None:
    page = {
        "title": "My Hibachi",
        "sections": [
            {"type": "hero", "name": "Hero", "heading": "Welcome, Maria Garcia!"},
            {
                "type": "contact",
                "address": "12 Oak Ave",
                "city": "Austin",
                "state": "TX",
                "text": "Visit 12 Oak Ave, Austin, TX 78701 or call (512) 555-0142",
            },
        ],
    }
    text, _ = anonymiser.anonymise_text(json.dumps(page))
    sections = json.loads(text)["sections"]
    assert sections[0] == {"type": "hero", "name": "Hero", "heading": "Welcome, [PERSON_NAME]!"}
    assert sections[1]["address"] == "[ADDRESS]"
    assert sections[1]["text"] == "Visit [ADDRESS] or call [PHONE]"


def test_mapping_carries_over_between_calls(anonymiser: Anonymiser) -> None:
    mapping: dict[str, str] = {}
    first, _ = anonymiser.anonymise_messages([{"role": "user", "content": "a@example.com"}], mapping)
    second, _ = anonymiser.anonymise_messages(
        [{"role": "user", "content": "b@example.com then a@example.com"}], mapping
    )
    fresh, _ = anonymiser.anonymise_messages([{"role": "user", "content": "b@example.com"}])
    assert first[0]["content"] == "[EMAIL]"
    assert second[0]["content"] == "[EMAIL_2] then [EMAIL]"
    assert fresh[0]["content"] == "[EMAIL]"


def test_tool_call_arguments_are_anonymised(anonymiser: Anonymiser) -> None:
    arguments = {
        "customer_name": "Zbigniew Brzeczyszczykiewicz",
        "name": "Maria Garcia",
        "email": "maria@example.com",
        "phone": "(212) 555-0123",
        "booking_id": "48213",
        "guests": 6,
        "notes": "Call Maria at 212-555-0123, gate code at 12 Oak Ave",
        "items": [{"name": "Filet Mignon", "qty": 2}],
    }
    messages = [
        {"role": "user", "content": "Book for Maria Garcia"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "create_booking", "arguments": json.dumps(arguments)},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": {"email": "maria@example.com"}},
                },
                {
                    "id": "call_3",
                    "type": "function",
                    "function": {"name": "note", "arguments": "not json: maria@example.com"},
                },
            ],
        },
    ]
    before = copy.deepcopy(messages)
    out, _ = anonymiser.anonymise_messages(messages)
    assert messages == before
    assert out[0]["content"] == "Book for [PERSON_NAME]"
    calls = out[1]["tool_calls"]
    assert [c["id"] for c in calls] == ["call_1", "call_2", "call_3"]
    parsed = json.loads(calls[0]["function"]["arguments"])
    assert parsed == {
        "customer_name": "[PERSON_NAME_2]",
        "name": "[PERSON_NAME]",
        "email": "[EMAIL]",
        "phone": "[PHONE]",
        "booking_id": "[ID]",
        "guests": 6,
        "notes": "Call [PERSON_NAME] at [PHONE], gate code at [ADDRESS]",
        "items": [{"name": "Filet Mignon", "qty": 2}],
    }
    assert calls[1]["function"]["arguments"] == {"email": "[EMAIL]"}
    assert calls[2]["function"]["arguments"] == "not json: [EMAIL]"


def test_tool_arguments_without_pii_keep_their_exact_text(anonymiser: Anonymiser) -> None:
    raw = '{"guests":6,  "date":"2026-02-01"}'
    call = {"id": "c", "type": "function", "function": {"name": "create_booking", "arguments": raw}}
    out, _ = anonymiser.anonymise_messages([{"role": "assistant", "content": None, "tool_calls": [call]}])
    assert out[0]["tool_calls"][0]["function"]["arguments"] == raw


def test_content_parts_and_user_name_field(anonymiser: Anonymiser) -> None:
    messages = [
        {"role": "user", "name": "maria_g", "content": [{"type": "text", "text": "mail maria@example.com"}]}
    ]
    out, _ = anonymiser.anonymise_messages(messages)
    assert out[0]["name"] == "[PERSON_NAME]"
    assert out[0]["content"] == [{"type": "text", "text": "mail [EMAIL]"}]


@pytest.mark.parametrize("bad", ["just a string", [{"role": "user", "content": "x"}, "oops"]])
def test_bad_messages_are_a_clear_error(anonymiser: Anonymiser, bad) -> None:
    with pytest.raises(TypeError, match="must be a"):
        anonymiser.anonymise_messages(bad)


PII_TEXTS = [
    "Mein Name ist Katharina Müller, Handy 0151 23456789, Hauptstraße 5, 10115 Berlin.",
    "Bonjour, je m'appelle Élodie Bernard, 06 12 34 56 78, 12 rue de la Paix, 75002 Paris.",
    "NAME: ASHLEY LOPEZ\nPHONE: 07700 900123\nADDRESS: Flat 2, 194 Kings Road, Bristol BS8 3HL",
    "Hi, my name is Maria Garcia, email maria.garcia@example.com, phone (212) 555-0123.",
    "Deliver to 225 E. John Carpenter Freeway, Suite 1500 Irving, Texas 75062, card 4111-1111-1111-1111.",
    "Booking BK-48213 for customer cust_9f8a7; IBAN DE89 3704 0044 0532 0130 00; IP 192.168.0.1",
    "Best,\nSarah Connor\n(415) 555-2671",
    "I'm John. My colleague is Jane Smith, jane@x.io, account number 12345678, SSN 123-45-6789",
    (
        "Name: Olga Kowalczyk\nAddress: 77 Mass Ave, Cambridge, MA 02139\n"
        "uuid 123e4567-e89b-12d3-a456-426614174000"
    ),
]


@pytest.mark.parametrize("text", PII_TEXTS)
def test_anonymising_is_idempotent(anonymiser: Anonymiser, text: str) -> None:
    once, _ = anonymiser.anonymise_text(text)
    twice, _ = anonymiser.anonymise_text(once)
    assert once != text
    assert twice == once
    assert find_pii(once) == []


def test_anonymise_frame_uses_one_mapping_per_conversation(anonymiser: Anonymiser) -> None:
    df = pd.DataFrame(
        {
            "conversation_id": ["c-1", "c-2", "c-1", "c-3"],
            "messages": [
                [{"role": "user", "content": "a@example.com"}],
                [{"role": "user", "content": "b@example.com"}],
                [{"role": "user", "content": "b@example.com and a@example.com"}],
                None,
            ],
            "ground_truth": ["Call Maria Garcia", None, "ok", "Maria Garcia"],
        },
        index=[10, 11, 12, 13],
    )
    before = copy.deepcopy(df.to_dict("records"))
    out = anonymiser.anonymise_frame(df)
    assert df.to_dict("records") == before
    assert list(out.index) == [10, 11, 12, 13]
    assert [m[0]["content"] if m else None for m in out["messages"]] == [
        "[EMAIL]",
        "[EMAIL]",
        "[EMAIL_2] and [EMAIL]",
        None,
    ]
    strings = anonymiser.anonymise_frame(df, column="ground_truth", group=None)["ground_truth"]
    assert [None if pd.isna(value) else value for value in strings] == [
        "Call [PERSON_NAME]",
        None,
        "ok",
        "[PERSON_NAME]",
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"column": "nope"}, "column 'nope' not in the frame"),
        ({"group": "nope"}, "group column 'nope' not in the frame"),
    ],
)
def test_anonymise_frame_rejects_unknown_columns(anonymiser: Anonymiser, kwargs: dict, message: str) -> None:
    df = pd.DataFrame({"conversation_id": ["c"], "messages": [[{"role": "user", "content": "hi"}]]})
    with pytest.raises(ValueError, match=message):
        anonymiser.anonymise_frame(df, **kwargs)


@pytest.mark.parametrize("value", [42, {"role": "user"}, ["not a message"]])
def test_anonymise_frame_names_the_bad_row(anonymiser: Anonymiser, value) -> None:
    df = pd.DataFrame({"conversation_id": ["c", "d"], "messages": [[], value]}, index=["ok", "bad"])
    with pytest.raises(ValueError, match="row 'bad' of column 'messages'"):
        anonymiser.anonymise_frame(df)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"region": "XX"}, "unknown phone region 'XX'"),
        ({"kinds": ["EMAIL", "SSN"]}, "unknown PII kinds"),
        ({"kinds": []}, "unknown PII kinds"),
        ({"regions": ["US", "XY"]}, "unknown phone region 'XY'"),
    ],
)
def test_bad_settings_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Anonymiser(**kwargs)


def test_regions_decide_national_phone_numbers() -> None:
    text = "ring 020 7946 0958"
    assert Anonymiser(regions=["US"]).find_pii(text) == []
    assert [(s.kind, s.text) for s in Anonymiser(region="GB", regions=[]).find_pii(text)] == [
        ("PHONE", "020 7946 0958")
    ]
    # GB is one of the default regions.
    assert [(s.kind, s.text) for s in find_pii(text)] == [("PHONE", "020 7946 0958")]


def test_regions_must_be_a_list() -> None:
    with pytest.raises(TypeError, match="regions must be a list"):
        Anonymiser(regions="DE")


def test_kinds_limit_what_is_replaced() -> None:
    text, _ = Anonymiser(kinds=["EMAIL"]).anonymise_text("I'm Maria Garcia, maria@example.com")
    assert text == "I'm Maria Garcia, [EMAIL]"


# --- other locales: phones, addresses and names written outside the US ----------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Ruf mich an: +49 151 23456789", "+49 151 23456789"),
        ("Handy +49 (0)151 23456789, bitte", "+49 (0)151 23456789"),
        ("tel +49-151-2345-6789", "+49-151-2345-6789"),
        ("Nummer 0049 151 23456789", "0049 151 23456789"),
        ("erreichbar unter 0151 23456789 für 30 Gäste", "0151 23456789"),
        ("oder 0151/23456789", "0151/23456789"),
        ("Festnetz 030 12345678", "030 12345678"),
        ("text me on 07700 900123", "07700 900123"),
        ("mobile +44 7700 900123", "+44 7700 900123"),
        ("call +44 (0)7700 900123", "+44 (0)7700 900123"),
        ("Appelez-moi au 06 12 34 56 78", "06 12 34 56 78"),
        ("portable 06.12.34.56.78", "06.12.34.56.78"),
        ("tél : +33 6 12 34 56 78", "+33 6 12 34 56 78"),
        ("au 0612345678 svp", "0612345678"),
        ("call (555) 123-4567 tonight", "(555) 123-4567"),  # fictional, but in a phone layout
    ],
)
def test_finds_phones_of_several_regions(text: str, value: str) -> None:
    assert [(s.kind, s.text) for s in find_pii(text)] == [("PHONE", value)]


@pytest.mark.parametrize(
    "text",
    [
        "Termin am 12.03.2026 um 19:30",
        "prix 1 250 000 € pour 20 personnes",
        "Le 06.12.2026 à 18h",
    ],
)
def test_dates_and_amounts_are_not_phones(text: str) -> None:
    assert [s for s in find_pii(text) if s.kind == "PHONE"] == []


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Deliver to 12 High Street, London SW1A 1AA please", "12 High Street, London SW1A 1AA"),
        ("Flat 2, 194 Kings Road, Bristol BS8 3HL", "Flat 2, 194 Kings Road, Bristol BS8 3HL"),
        ("it's above the chippy, 107 Meadow View.", "107 Meadow View"),
        ("at 7726 mission st, brooklyn, ny 11202 by noon", "7726 mission st, brooklyn, ny 11202"),
        ("Lieferung an Hauptstraße 5, 10115 Berlin bitte", "Hauptstraße 5, 10115 Berlin"),
        ("Adresse: Karl-Marx-Str. 143a 90454 Nürnberg", "Karl-Marx-Str. 143a 90454 Nürnberg"),
        ("wohnhaft Berliner Straße 12\n80331 München", "Berliner Straße 12\n80331 München"),
        ("Paket bitte zu Birkenweg 21 bringen", "Birkenweg 21"),
        (
            "wohnhaft Auf dem Berg 105, 79110 Freiburg im Breisgau",
            "Auf dem Berg 105, 79110 Freiburg im Breisgau",
        ),
        ("Livraison au 12 rue de la Paix, 75002 Paris merci", "12 rue de la Paix, 75002 Paris"),
        ("au 43bis chemin Gambetta, 2e étage", "43bis chemin Gambetta"),
        ("chez vous (92 avenue du Général de Gaulle) mercredi", "92 avenue du Général de Gaulle"),
        ("72, bd Saint-Germain\n59650 Lille", "72, bd Saint-Germain\n59650 Lille"),
    ],
)
def test_finds_uk_german_and_french_addresses(text: str, value: str) -> None:
    assert ("ADDRESS", value) in [(s.kind, s.text) for s in find_pii(text)]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Hallo, ich bin Jürgen und brauche Hilfe", "Jürgen"),
        ("Mein Name ist Katharina Müller.", "Katharina Müller"),
        ("Guten Tag Herr Schmidt, Ihre Bestellung ist da", "Schmidt"),
        ("bitte bei Frau de Vries abgeben", "de Vries"),
        ("Viele Grüße, Lukas", "Lukas"),
        ("Bonjour, je m'appelle Élodie Bernard", "Élodie Bernard"),
        ("Bonjour, c'est Margaux, je voudrais un fraisier", "Margaux"),
        ("Cordialement,\nThérèse Bouvet", "Thérèse Bouvet"),
        ("pour ma mère, Madame Lefèvre, qui arrive", "Lefèvre"),
        ("Monsieur Dupont a appelé", "Dupont"),
        ("Kieran here - deposit back please", "Kieran"),
        ("Hi, my name is maria garcia and I need help", "maria garcia"),
        ("NAME: ASHLEY LOPEZ\nPHONE: 617.701.1707", "ASHLEY LOPEZ"),
        ("hi its christine jackson again, still waiting", "christine jackson"),
        ("Name on the account: Kavita Chatterjee. Thanks", "Kavita Chatterjee"),
        ("Hiya, can I book for Saturday? Susan +447555338141", "Susan"),
        ("Thanks Şükrü! See you", "Şükrü"),
        ("Please invoice Kenneth Rogers-Barry, thanks", "Kenneth Rogers-Barry"),
        ("Thanks Mark! Your table is booked", "Mark"),
        ("Bitte an die alte Adresse. Merci, Pierre", "Pierre"),
        ("Cordialement,\nValentine Klein", "Valentine Klein"),
        ("Mit freundlichen Grüßen\nAnnegret Vogel", "Annegret Vogel"),
    ],
)
def test_finds_names_with_german_french_and_english_cues(text: str, value: str) -> None:
    assert ("PERSON_NAME", value) in [(s.kind, s.text) for s in find_pii(text)]


@pytest.mark.parametrize(
    "text",
    [
        "Hey there, Do u come to Palo Alto? Thank you.",
        "We cater across the Bay Area, including San Jose, Oakland, Walnut Creek and Santa Clara.",
        "Our collection service covers anywhere within 5 miles of Gloucester Road.",
        "do you have parts in stock? cheers mate",
        "Nous proposons la Tarte Tatin, le Paris-Brest et le Fraisier.",
        "Wir haben Schwarzwälder Kirschtorte und Apfelstrudel, Lieferung nach Berlin und Potsdam.",
        "Je suis disponible samedi, merci beaucoup !",
        "ich bin am Freitag 5 Minuten zu spät",
        "my name is not important",
    ],
)
def test_leaves_menus_places_and_everyday_words_alone(text: str) -> None:
    assert find_pii(text) == []


# --- consistency across a conversation and into tool-call arguments ---------------------------------


def _booking_call(arguments: dict) -> dict:
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "create_booking", "arguments": json.dumps(arguments)},
            }
        ],
    }


@pytest.mark.parametrize(
    ("address", "location", "expected"),
    [
        ("7330 Cedar Lane, Oakland, CA 94611", "Oakland, CA", "[ADDRESS]"),
        ("7330 Cedar Lane, Oakland, CA 94611", "Oakland", "[ADDRESS]"),
        ("7330 Cedar Lane, Oakland, CA 94611", "oakland, ca", "[ADDRESS]"),
        ("7330 Cedar Lane, Oakland, CA 94611", "7330 Cedar Lane", "[ADDRESS]"),
        ("Hauptstraße 5, 10115 Berlin", "Berlin", "[ADDRESS]"),
        ("12 rue de la Paix, 75002 Paris", "75002 Paris", "[ADDRESS]"),
        ("12 High Street, Bristol BS8 3HL", "Bristol", "[ADDRESS]"),
        # a town that is not part of the replaced address stays: the answer does not depend on it
        ("7330 Cedar Lane, Oakland, CA 94611", "San Jose", "San Jose"),
    ],
)
def test_tool_arguments_follow_the_replaced_address(
    anonymiser: Anonymiser, address: str, location: str, expected: str
) -> None:
    messages = [
        {"role": "user", "content": f"Please reserve a chef: 30 guests, March 7, {address}, salmon."},
        _booking_call({"date": "2026-03-07", "guests": 30, "location": location, "proteins": ["salmon"]}),
    ]
    out, _ = anonymiser.anonymise_messages(messages)
    assert out[0]["content"] == "Please reserve a chef: 30 guests, March 7, [ADDRESS], salmon."
    arguments = json.loads(out[1]["tool_calls"][0]["function"]["arguments"])
    # The other arguments keep their values and JSON types, so they still fit the tool's schema.
    assert arguments == {"date": "2026-03-07", "guests": 30, "location": expected, "proteins": ["salmon"]}


def test_a_replaced_value_is_replaced_everywhere_in_the_conversation(anonymiser: Anonymiser) -> None:
    messages = [
        {"role": "user", "content": "hi, zbigniew here. Do you deliver to Oakland?"},
        {"role": "assistant", "content": "Yes, we deliver to Oakland and San Jose."},
        {"role": "user", "content": "My name is Zbigniew. Deliver to 12 Oak Ave, Oakland, CA 94611."},
        _booking_call({"location": "Oakland, CA", "notes": "Ask for Zbigniew at the gate", "guests": 4}),
        {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "booked", "city": "Oakland"}'},
        {"role": "assistant", "content": "Done, Zbigniew: your chef comes to Oakland on Friday."},
    ]
    out, _ = anonymiser.anonymise_messages(messages)
    assert out[0]["content"] == "hi, [PERSON_NAME] here. Do you deliver to [ADDRESS]?"
    assert out[1]["content"] == "Yes, we deliver to [ADDRESS] and San Jose."
    assert out[2]["content"] == "My name is [PERSON_NAME]. Deliver to [ADDRESS]."
    arguments = json.loads(out[3]["tool_calls"][0]["function"]["arguments"])
    assert arguments == {"location": "[ADDRESS]", "notes": "Ask for [PERSON_NAME] at the gate", "guests": 4}
    assert json.loads(out[4]["content"]) == {"status": "booked", "city": "[ADDRESS]"}
    assert out[5]["content"] == "Done, [PERSON_NAME]: your chef comes to [ADDRESS] on Friday."


def test_a_town_in_lower_case_words_is_not_taken_for_a_part(anonymiser: Anonymiser) -> None:
    messages = [
        {"role": "user", "content": "Deliver to 8 rue Nationale, 37000 Tours."},
        {"role": "assistant", "content": "We run cooking tours too. Your order goes to Tours."},
    ]
    out, _ = anonymiser.anonymise_messages(messages)
    assert out[1]["content"] == "We run cooking tours too. Your order goes to [ADDRESS]."


def test_anonymise_frame_carries_parts_across_rows_of_a_conversation(anonymiser: Anonymiser) -> None:
    first = [{"role": "user", "content": "Can you come to 7330 Cedar Lane, Oakland, CA 94611?"}]
    second = [*first, _booking_call({"location": "Oakland, CA", "guests": 12})]
    other = [_booking_call({"location": "Oakland, CA", "guests": 12})]
    df = pd.DataFrame({"conversation_id": ["c-1", "c-1", "c-2"], "messages": [other, second, other]})
    df.loc[0, "conversation_id"] = "c-1"
    df.at[0, "messages"] = first
    out = anonymiser.anonymise_frame(df)
    assert out["messages"][0][0]["content"] == "Can you come to [ADDRESS]?"
    assert json.loads(out["messages"][1][1]["tool_calls"][0]["function"]["arguments"]) == {
        "location": "[ADDRESS]",
        "guests": 12,
    }
    # Another conversation never saw the address: its town stays.
    assert json.loads(out["messages"][2][0]["tool_calls"][0]["function"]["arguments"]) == {
        "location": "Oakland, CA",
        "guests": 12,
    }


def test_a_value_first_seen_in_tool_arguments_is_replaced_in_earlier_text(anonymiser: Anonymiser) -> None:
    messages = [
        {"role": "user", "content": "Book it for Zbigniew Brzeczyszczykiewicz, 6 guests"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "create_booking",
                        "arguments": {"customer_name": "Zbigniew Brzeczyszczykiewicz", "guests": 6},
                    },
                }
            ],
        },
        {"role": "assistant", "content": "Booked for Zbigniew Brzeczyszczykiewicz."},
    ]
    out, _ = anonymiser.anonymise_messages(messages)
    assert out[0]["content"] == "Book it for [PERSON_NAME], 6 guests"
    assert out[1]["tool_calls"][0]["function"]["arguments"] == {"customer_name": "[PERSON_NAME]", "guests": 6}
    assert out[2]["content"] == "Booked for [PERSON_NAME]."


def _conversation(cid: str, user: str, assistant: str) -> dict:
    return {"conversation_id": cid, "messages": [{"role": "user", "content": user},
                                                 {"role": "assistant", "content": assistant}]}


def test_the_business_s_own_published_data_is_kept_and_customers_data_is_not():
    shop = "Call us on 020 7946 0958 or come to 27 Baker Street, London NW1 6XE."
    rows = [_conversation(f"c{i}", "Where are you and what is your number?", shop) for i in range(3)]
    # a customer's number repeated back to that customer in many turns of one conversation stays personal
    rows += [_conversation("c9", "My number is 07700 900461, call me back",
                           f"Sure, we will call 07700 900461 (turn {i}).") for i in range(4)]
    # a value the assistant gave in only two conversations is not enough
    rows += [_conversation(f"d{i}", "Who runs the shop?", "Ask for Maria Garcia, our manager.") for i in range(2)]
    frame = pd.DataFrame(rows)
    anonymiser = Anonymiser(region="GB")
    public = anonymiser.public_values(frame, min_conversations=3)
    assert sorted(k.split(":")[0] for k in public) == ["ADDRESS", "PHONE"]
    kept = Anonymiser(region="GB", public=public).anonymise_frame(frame)
    assert kept["messages"][0][1]["content"] == shop
    assert "07700 900461" not in json.dumps(kept["messages"].tolist())
    assert "Maria Garcia" not in json.dumps(kept["messages"].tolist())
    with pytest.raises(ValueError, match="min_conversations"):
        anonymiser.public_values(frame, min_conversations=0)


def test_card_numbers_are_never_public():
    rows = [_conversation(f"c{i}", "How do I pay?", "Our test card is 4111 1111 1111 1111.") for i in range(5)]
    assert Anonymiser().public_values(pd.DataFrame(rows)) == {}


@pytest.mark.parametrize("text, name", [
    ("Amélie Quernezec passera chercher la commande demain.", "Amélie Quernezec"),
    ("Please put Jürgen Oberwexler on the list for Saturday.", "Jürgen Oberwexler"),
])
def test_a_known_first_name_before_an_unknown_capitalised_word_is_a_name(text, name):
    assert [s.text for s in find_pii(text) if s.kind == "PERSON_NAME"] == [name]


@pytest.mark.parametrize("text", ["We deliver along the Jordan River.", "Grace Church is next door."])
def test_a_first_name_that_is_a_common_word_needs_more(text):
    assert [s for s in find_pii(text) if s.kind == "PERSON_NAME"] == []

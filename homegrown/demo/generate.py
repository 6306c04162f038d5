"""The embedded demo: a day of logs from the AI assistant of "My Hibachi", a hibachi catering company.

``generate_demo_logs(out_dir)`` writes, in the interaction format (docs: interaction-format.md),
the kind of logs a real assistant leaves behind, dirt included:

- ``assistant-<day>.jsonl``: FAQ answers grounded in ``knowledge.json`` (varied phrasings), multi-turn
  conversations that end in a booking, teacher hallucinations with admin corrections, shadow
  teacher/student answers with a critic, rows in the ``prompt``/``response`` and
  ``instruction``/``input``/``output`` shapes, exact and near duplicates, rows superseded later by id,
  rows of an opted-out organisation and malformed lines.
- ``feedback-<day>.jsonl``: feedback that arrived later as ``feedback_for`` events.
- ``page-builder-<day>.parquet``: page-builder generations (page JSON, some invalid).
- ``bookings-<day>.csv``: ``create_booking`` / ``check_availability`` tool calls (nested fields as JSON).
- ``optout.json``: the opted-out organisations.

User messages carry PII (names, e-mails, phones, street addresses, card numbers, booking and customer
ids). The output is deterministic for a ``seed``; ``batch > 0`` writes a later day's logs with new ids.

Run ``python -m homegrown.demo.generate OUT_DIR [--seed N] [--batch N]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

DEMO_DIR = Path(__file__).resolve().parent
KNOWLEDGE_PATH = DEMO_DIR / "knowledge.json"
TOOLS_PATH = DEMO_DIR / "tools.json"

BASE_DAY = date(2026, 1, 5)
MAIN_ORG = "org-myhibachi"
SECOND_ORG = "org-myhibachi-sac"
OPTED_OUT_ORG = "org-myhibachi-reno"
INCUMBENT_MODELS = ["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet"]
STUDENT_MODEL = "homegrown:v0"

# How many interactions of each kind a batch holds at scale 1.0.
COUNTS = {
    "faq": 260,
    "faq_prompt_shape": 20,
    "conversations": 38,
    "hallucinations": 36,
    "shadow": 50,
    "exact_duplicates": 18,
    "near_duplicates": 18,
    "superseded": 20,
    "opted_out": 28,
    "pages": 100,
    "page_followups": 15,
    "pages_instruction_shape": 10,
    "bookings": 70,
    "availability": 15,
}

FIRST_NAMES = [
    "Jennifer",
    "Michael",
    "Priya",
    "Carlos",
    "Mei",
    "David",
    "Aisha",
    "Tom",
    "Sofia",
    "Kenji",
    "Rachel",
    "Marcus",
    "Elena",
    "Brian",
    "Nina",
    "Omar",
    "Grace",
    "Luis",
    "Hannah",
    "Derek",
]
LAST_NAMES = [
    "Lopez",
    "Nguyen",
    "Patel",
    "Johnson",
    "Kim",
    "Garcia",
    "Chen",
    "Williams",
    "Okafor",
    "Rossi",
    "Tanaka",
    "Miller",
    "Schmidt",
    "Brown",
    "Singh",
    "Davis",
    "Martinez",
    "Walker",
    "Ito",
    "Clark",
]
STREETS = [
    "Maple Street",
    "Oak Avenue",
    "Elm Drive",
    "Sunset Boulevard",
    "Cedar Lane",
    "Lakeview Court",
    "Willow Way",
    "Mission Street",
    "Pine Road",
    "Harbor Drive",
]
# Luhn-valid test card numbers, never real cards.
CARDS = ["4111 1111 1111 1111", "5555 5555 5555 4444", "4012 8888 8888 1881", "3782 822463 10005"]
AREA_CODES = {
    "San Francisco": "415",
    "Oakland": "510",
    "San Jose": "408",
    "Fremont": "510",
    "Palo Alto": "650",
    "Walnut Creek": "925",
    "Sacramento": "916",
    "Roseville": "916",
    "Davis": "530",
    "Elk Grove": "916",
}

GREETINGS = ["", "", "", "Hi! ", "Hello, ", "Hey there, ", "Quick question: ", "Hi there. ", "Good morning! "]
CLOSERS = ["", "", "", " Thanks!", " Thank you.", " thx", " Thanks in advance!"]
ANSWER_OPENERS = ["", "", "", "", "Great question! ", "Thanks for asking! ", "Happy to help. "]
ANSWER_CLOSERS = [
    "",
    "",
    "",
    "",
    " Anything else I can help with?",
    " Let me know if you'd like to book.",
    " Happy to answer any other questions.",
]

# What an incumbent model made up, per fact: the hallucinations an admin later corrected.
HALLUCINATIONS = {
    "menu-no-wagyu": [
        "Yes, wagyu at $80/person.",
        "Yes! A5 wagyu is available as a $25 per person upgrade.",
        "Absolutely, our Kobe beef upgrade is $30 per person.",
    ],
    "price-adult": ["It's $75 per adult, including two proteins.", "Our price is $55 per person."],
    "price-kids": ["Kids are $40 each.", "Children eat free up to age 12."],
    "price-minimum": ["Our minimum is $400.", "There is no minimum, you can book for any size party."],
    "menu-upgrades": [
        "Lobster is +$20 per person and filet mignon is +$12.",
        "Our premium upgrade is wagyu for +$15.",
    ],
    "policy-deposit": ["The deposit is $250 and it's non-refundable.", "No deposit is needed."],
    "policy-travel": ["Travel is always free, wherever you are!", "The travel fee is a flat $150."],
    "policy-notice": ["We can book same-day events anytime.", "We need two weeks notice for every booking."],
    "menu-proteins": ["Each guest picks three proteins, including duck and lamb."],
}
STUDENT_WEAK = [
    "I think we can help with that, please contact us for details.",
    "Please check our website for more information.",
    "I'm not sure, let me find out.",
]

PAGE_REQUESTS = [
    "Create a landing page for my hibachi catering business with {sections}.",
    "Build me a website homepage for My Hibachi. Include {sections}.",
    "I need a page for {occasion} with {sections}.",
    "Generate a {style} landing page for our private hibachi chef service: {sections}.",
    "Make a one-page site for hibachi at home, {style} style, with {sections}.",
    "Can you design a page for {occasion}? It should have {sections}.",
]
OCCASIONS = [
    "birthday parties",
    "corporate events",
    "backyard weddings",
    "graduation parties",
    "holiday parties",
    "family reunions",
]
STYLES = ["modern", "classic", "playful", "elegant", "bold"]
COLORS = ["#C0392B", "#E67E22", "#1F2937", "#B91C1C", "#0F766E", "#7C2D12"]
HEADLINES = [
    "Hibachi at Your Home",
    "Your Backyard, Our Grill",
    "A Private Chef Show for Your Party",
    "Sizzle, Flip, Celebrate",
    "Teppanyaki Comes to You",
]
SUBHEADLINES = [
    "A private hibachi chef cooks a dinner show for your guests, from $60 per adult.",
    "We bring the grill, the food and the fun across the Bay Area and Sacramento.",
    "Two proteins, fried rice and vegetables for every guest, cooked in front of you.",
]
TESTIMONIAL_QUOTES = [
    "The chef was amazing and the kids loved the onion volcano!",
    "Best birthday dinner we have ever hosted.",
    "Great food, great show, zero cleanup.",
    "Our team still talks about the shrimp toss.",
]
SECTION_EDITS = [
    "Make the hero more playful.",
    "Add a FAQ section.",
    "Change the main color to dark green.",
    "Add testimonials from customers.",
    "Put the pricing before the menu.",
]


@dataclass
class _Day:
    """The state of one generated day: random source, clock, ids and the lines of each file."""

    rng: random.Random
    day: date
    knowledge: dict
    tools: list[dict]
    assistant: list[Any] = field(default_factory=list)
    feedback: list[Any] = field(default_factory=list)
    pages: list[dict] = field(default_factory=list)
    bookings: list[dict] = field(default_factory=list)
    used_ids: set[str] = field(default_factory=set)

    def new_id(self, prefix: str = "int") -> str:
        while True:
            candidate = f"{prefix}-{self.rng.getrandbits(48):012x}"
            if candidate not in self.used_ids:
                self.used_ids.add(candidate)
                return candidate

    def when(self) -> datetime:
        start = datetime.combine(self.day, time(8, 0), tzinfo=UTC)
        return start + timedelta(seconds=self.rng.randrange(14 * 3600))

    def fact(self, fact_id: str | None = None) -> dict:
        facts = self.knowledge["facts"]
        if fact_id is None:
            return self.rng.choice(facts)
        return next(f for f in facts if f["id"] == fact_id)


def _ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _system(knowledge: dict) -> dict:
    return {"role": "system", "content": knowledge["business"]["system_prompt"]}


def _person(rng: random.Random) -> dict:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    city = rng.choice(list(AREA_CODES))
    return {
        "first": first,
        "name": f"{first} {last}",
        "email": f"{first.lower()}.{last.lower()}{rng.randrange(10, 99)}@{rng.choice(['gmail.com', 'yahoo.com', 'outlook.com'])}",
        "phone": f"({AREA_CODES[city]}) 555-01{rng.randrange(100):02d}",
        "city": city,
        "address": f"{rng.randrange(100, 9999)} {rng.choice(STREETS)}, {city}, CA",
        "card": rng.choice(CARDS),
        "booking_id": f"BK-{rng.randrange(10000, 99999)}",
        "customer_id": f"CUST-{rng.randrange(100000, 999999)}",
    }


def _with_pii(rng: random.Random, question: str, person: dict) -> str:
    """Wrap a question the way customers do, sometimes leaving personal data in it."""
    kind = rng.choices(
        ["none", "name", "email", "phone", "address", "booking", "customer", "card"],
        weights=[62, 8, 7, 7, 6, 4, 3, 3],
    )[0]
    if kind == "name":
        return f"Hi, this is {person['name']}. {question}"
    if kind == "email":
        return f"{question} You can email me at {person['email']}."
    if kind == "phone":
        return f"{question} Call me back at {person['phone']} please."
    if kind == "address":
        return f"{question} The party would be at {person['address']}."
    if kind == "booking":
        return f"I already have booking {person['booking_id']}. {question}"
    if kind == "customer":
        return f"{question} My customer id is {person['customer_id']}."
    if kind == "card":
        return f"{question} I'd pay with my card {person['card']}."
    return question


def _phrase(rng: random.Random, fact: dict, cities: list[str]) -> str:
    """One customer phrasing of a fact's question template."""
    question = rng.choice(fact["questions"]).replace("{city}", rng.choice(cities))
    style = rng.random()
    if style < 0.15:
        question = question.lower().rstrip("?") + ("" if rng.random() < 0.5 else "??")
    elif style < 0.22:
        question = question.replace("you ", "u ").replace("your ", "ur ")
    return f"{rng.choice(GREETINGS)}{question}{rng.choice(CLOSERS)}".strip()


def _answer(rng: random.Random, fact: dict, person: dict | None = None) -> str:
    opener = rng.choice(ANSWER_OPENERS)
    if person is not None and rng.random() < 0.15:
        opener = f"Hi {person['first']}! "
    return f"{opener}{fact['answer']}{rng.choice(ANSWER_CLOSERS)}"


def _good_feedback(rng: random.Random) -> dict:
    """Feedback that passes the default quality policy on its own or with a valid answer."""
    kind = rng.choices(["thumbs", "rating", "booking", "thumbs_rating"], weights=[55, 20, 10, 15])[0]
    if kind == "thumbs":
        return {"thumbs": 1}
    if kind == "rating":
        return {"customer_rating": rng.choice([4, 5, 5])}
    if kind == "booking":
        return {"led_to_booking": True}
    return {"thumbs": 1, "customer_rating": 5}


def _weak_feedback(rng: random.Random) -> dict:
    """Feedback that does not pass the default quality policy."""
    return rng.choice(
        [
            {},
            {},
            {"thumbs": -1},
            {"customer_rating": 2},
            {"outcome": "abandoned"},
            {"thumbs": -1, "customer_rating": 1},
        ]
    )


def _record(
    d: _Day,
    *,
    example_type: str,
    messages: list[dict],
    org: str = MAIN_ORG,
    conversation_id: str | None = None,
    at: datetime | None = None,
    **extra: Any,
) -> dict:
    record = {
        "id": d.new_id(),
        "conversation_id": conversation_id or d.new_id("conv"),
        "created_at": _ts(at or d.when()),
        "org_id": org,
        "example_type": example_type,
        "model": d.rng.choice(INCUMBENT_MODELS),
        "messages": messages,
    }
    record.update({key: value for key, value in extra.items() if value is not None})
    record.setdefault("metadata", {"channel": d.rng.choice(["web_chat", "web_chat", "sms", "instagram"])})
    return record


def _maybe_event(d: _Day, record: dict, feedback: dict, share: float = 0.12) -> None:
    """Attach feedback inline, or (for ``share`` of the rows) send it later as a feedback event."""
    if not feedback:
        return
    if d.rng.random() >= share:
        record["feedback"] = feedback
        return
    at = datetime.strptime(record["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    later = at + timedelta(minutes=d.rng.randrange(5, 600))
    if "thumbs" in feedback and d.rng.random() < 0.25:
        # The customer first voted the other way, then changed their mind: the newest event wins.
        d.feedback.append(
            {"feedback_for": record["id"], "created_at": _ts(later), "thumbs": -feedback["thumbs"]}
        )
        later += timedelta(minutes=d.rng.randrange(1, 90))
    d.feedback.append({"feedback_for": record["id"], "created_at": _ts(later), **feedback})


def _faq_rows(d: _Day, n: int, org: str = MAIN_ORG) -> list[dict]:
    cities = d.knowledge["business"]["service_area"]["cities"]
    rows = []
    for _ in range(n):
        fact, person = d.fact(), _person(d.rng)
        messages = [
            _system(d.knowledge),
            {"role": "user", "content": _with_pii(d.rng, _phrase(d.rng, fact, cities), person)},
            {"role": "assistant", "content": _answer(d.rng, fact, person)},
        ]
        record = _record(
            d,
            example_type="faq",
            messages=messages,
            org=org,
            metadata={"channel": d.rng.choice(["web_chat", "sms"]), "fact": fact["id"]},
        )
        good = d.rng.random() < 0.85
        _maybe_event(d, record, _good_feedback(d.rng) if good else _weak_feedback(d.rng))
        rows.append(record)
    return rows


def _prompt_shape_rows(d: _Day, n: int) -> list[dict]:
    cities = d.knowledge["business"]["service_area"]["cities"]
    rows = []
    for _ in range(n):
        fact = d.fact()
        record = {
            "id": d.new_id(),
            "created_at": _ts(d.when()),
            "org_id": SECOND_ORG,
            "example_type": "faq",
            "model": d.rng.choice(INCUMBENT_MODELS),
            "system": d.knowledge["business"]["system_prompt"],
            "prompt": _phrase(d.rng, fact, cities),
            "response": _answer(d.rng, fact),
            "feedback": _good_feedback(d.rng),
        }
        rows.append(record)
    return rows


def _shadow_rows(d: _Day, n: int) -> list[dict]:
    """Correct incumbent answers with a local student model in shadow and a critic's verdict."""
    cities = d.knowledge["business"]["service_area"]["cities"]
    rows = []
    for _ in range(n):
        fact, person = d.fact(), _person(d.rng)
        answer = _answer(d.rng, fact)
        student_good = d.rng.random() < 0.4
        student = fact["answer"] if student_good else d.rng.choice(STUDENT_WEAK)
        critic = {
            "best_response": "student" if student_good and d.rng.random() < 0.3 else "teacher",
            "quality_score": round(d.rng.uniform(0.91, 0.99), 2),
            "reason": "grounded in the menu and policies"
            if student_good
            else "teacher answered from the knowledge file; student was vague",
        }
        messages = [
            _system(d.knowledge),
            {"role": "user", "content": _with_pii(d.rng, _phrase(d.rng, fact, cities), person)},
            {"role": "assistant", "content": answer},
        ]
        rows.append(
            _record(
                d,
                example_type="faq",
                messages=messages,
                teacher_response=answer,
                student_response=student,
                critic=critic,
                metadata={"fact": fact["id"], "shadow": True},
            )
        )
    return rows


def _hallucination_rows(d: _Day, n: int) -> list[dict]:
    """Teacher answers with made-up menu items or prices; most got an admin correction."""
    cities = d.knowledge["business"]["service_area"]["cities"]
    rows = []
    for i in range(n):
        fact = d.fact(d.rng.choice(sorted(HALLUCINATIONS)))
        wrong = d.rng.choice(HALLUCINATIONS[fact["id"]])
        student = fact["answer"] if d.rng.random() < 0.5 else d.rng.choice(STUDENT_WEAK)
        messages = [
            _system(d.knowledge),
            {"role": "user", "content": _phrase(d.rng, fact, cities)},
            {"role": "assistant", "content": wrong},
        ]
        record = _record(
            d,
            example_type="faq",
            messages=messages,
            teacher_response=wrong,
            student_response=student,
            critic={
                "best_response": "student" if student == fact["answer"] else "neither",
                "quality_score": round(d.rng.uniform(0.05, 0.3), 2),
                "reason": "teacher stated a price or menu item that is not in the knowledge file",
            },
            ground_truth=fact["answer"],
            metadata={"fact": fact["id"], "hallucination": True},
        )
        corrected = i % 5 != 4
        feedback = {"thumbs": -1}
        if corrected:
            feedback["admin_correction"] = fact["answer"]
        _maybe_event(d, record, feedback, share=0.3)
        rows.append(record)
    return rows


def _booking_call(d: _Day, person: dict, invalid: bool) -> tuple[str, dict, str]:
    """A booking request in words, the matching ``create_booking`` call and its arguments JSON."""
    event_day = d.day + timedelta(days=d.rng.randrange(3, 120))
    guests = d.rng.randrange(6, 40)
    proteins = sorted(d.rng.sample(["chicken", "steak", "shrimp", "salmon", "scallops", "tofu"], 2))
    upgrades = d.rng.choice([[], [], ["filet_mignon"], ["lobster_tail"], ["filet_mignon", "lobster_tail"]])
    wants = " and ".join(proteins)
    if upgrades:
        wants += ", with " + " and ".join(u.replace("_", " ") for u in upgrades) + " upgrades"
    request = d.rng.choice(
        [
            "Can you book a hibachi chef for {guests} people on {day} at {address}? We'd like {wants}.",
            "I want to book {day} for {guests} guests. Address is {address}. Proteins: {wants}.",
            "Please reserve a chef: {guests} guests, {day}, {address}, {wants}.",
        ]
    ).format(guests=guests, day=f"{event_day:%A, %B} {event_day.day}", address=person["address"], wants=wants)
    args: dict[str, Any] = {
        "date": event_day.isoformat(),
        "guests": guests,
        "location": f"{person['city']}, CA",
        "proteins": proteins,
    }
    if upgrades:
        args["upgrades"] = upgrades
    if d.rng.random() < 0.2:
        args["time"] = d.rng.choice(["17:00", "18:00", "18:30", "19:00"])
    name = "create_booking"
    if invalid:
        flaw = d.rng.choice(["guests_text", "date_words", "no_location", "wagyu", "unknown_tool"])
        if flaw == "guests_text":
            args["guests"] = str(guests)
        elif flaw == "date_words":
            args["date"] = f"{event_day:%B} {event_day.day}"
        elif flaw == "no_location":
            del args["location"]
        elif flaw == "wagyu":
            args["proteins"] = ["wagyu"]
        else:
            name = "book_chef"
    return (
        request,
        {
            "id": f"call_{d.rng.getrandbits(40):010x}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)},
        },
        name,
    )


def _booking_rows(d: _Day, n_book: int, n_avail: int, org: str = MAIN_ORG) -> list[dict]:
    rows = []
    for i in range(n_book + n_avail):
        person = _person(d.rng)
        invalid = d.rng.random() < 0.1
        if i < n_book:
            request, call, _ = _booking_call(d, person, invalid)
            request = _with_pii(d.rng, request, person) if d.rng.random() < 0.3 else request
        else:
            event_day = d.day + timedelta(days=d.rng.randrange(3, 90))
            request = f"Are you available on {event_day:%B} {event_day.day} in {person['city']}?"
            args = {
                "date": event_day.isoformat() if not invalid else f"{event_day:%m/%d/%Y}",
                "location": person["city"],
            }
            call = {
                "id": f"call_{d.rng.getrandbits(40):010x}",
                "type": "function",
                "function": {"name": "check_availability", "arguments": json.dumps(args)},
            }
        messages = [
            _system(d.knowledge),
            {"role": "user", "content": request},
            {"role": "assistant", "content": "", "tool_calls": [call]},
        ]
        record = _record(d, example_type="tool_invocation", messages=messages, org=org, tools=d.tools)
        if invalid:
            feedback = d.rng.choice([{}, {"outcome": "regenerated"}, {"thumbs": -1}, {"thumbs": 1}])
        else:
            feedback = d.rng.choice(
                [
                    {"outcome": "accepted"},
                    {"led_to_booking": True},
                    {"thumbs": 1},
                    {"outcome": "accepted", "led_to_booking": True},
                    {"outcome": "accepted"},
                ]
            )
        _maybe_event(d, record, feedback, share=0.25)
        rows.append(record)
    return rows


def _conversation_rows(d: _Day, n: int) -> list[dict]:
    """Multi-turn chats: questions about the menu and policies that often end in a booking call."""
    cities = d.knowledge["business"]["service_area"]["cities"]
    chains = [
        ["price-adult", "menu-proteins", "menu-upgrades"],
        ["price-minimum", "price-kids"],
        ["service-area", "policy-travel", "policy-deposit"],
        ["menu-proteins", "policy-allergies"],
        ["event-setup", "event-indoors", "event-duration"],
        ["policy-deposit", "policy-cancellation"],
        ["menu-no-wagyu", "menu-upgrades"],
        ["event-group-size", "price-adult"],
    ]
    rows = []
    for _ in range(n):
        person = _person(d.rng)
        conversation_id = d.new_id("conv")
        history = [_system(d.knowledge)]
        at = d.when()
        chain = list(d.rng.choice(chains))
        books = d.rng.random() < 0.5
        for turn, fact_id in enumerate(chain):
            fact = d.fact(fact_id)
            question = _phrase(d.rng, fact, cities)
            if turn == 0:
                question = _with_pii(d.rng, question, person)
            history = history + [
                {"role": "user", "content": question},
                {"role": "assistant", "content": _answer(d.rng, fact, person)},
            ]
            last = turn == len(chain) - 1 and not books
            record = _record(
                d,
                example_type="faq",
                messages=copy.deepcopy(history),
                conversation_id=conversation_id,
                at=at,
                metadata={"fact": fact_id, "turn": turn},
            )
            _maybe_event(d, record, _good_feedback(d.rng) if (last or d.rng.random() < 0.5) else {})
            rows.append(record)
            at += timedelta(seconds=d.rng.randrange(30, 300))
        if books:
            request, call, _ = _booking_call(d, person, invalid=False)
            history = history + [
                {"role": "user", "content": request},
                {"role": "assistant", "content": "", "tool_calls": [call]},
            ]
            record = _record(
                d,
                example_type="tool_invocation",
                messages=copy.deepcopy(history),
                conversation_id=conversation_id,
                at=at,
                tools=d.tools,
                metadata={"turn": len(chain)},
            )
            _maybe_event(d, record, {"led_to_booking": True, "outcome": "accepted"})
            rows.append(record)
    return rows


def _duplicate_rows(d: _Day, source: list[dict], n_exact: int, n_near: int) -> list[dict]:
    """The same question answered again: identical copies and copies with trivial edits."""
    rows = []
    candidates = [r for r in source if r.get("feedback")]
    for i in range(n_exact + n_near):
        original = d.rng.choice(candidates)
        copy_row = copy.deepcopy(original)
        copy_row["id"] = d.new_id()
        copy_row["conversation_id"] = d.new_id("conv")
        copy_row["created_at"] = _ts(d.when())
        if i >= n_exact:
            answer = copy_row["messages"][-1]["content"]
            edit = d.rng.choice(
                [
                    lambda a: a.rstrip(".") + "!",
                    lambda a: "Sure! " + a,
                    lambda a: a + " :)",
                    lambda a: a.replace(". ", ".  ", 1),
                ]
            )
            copy_row["messages"][-1]["content"] = edit(answer)
        copy_row["feedback"] = _good_feedback(d.rng)
        rows.append(copy_row)
    return rows


def _superseded_rows(d: _Day, n: int) -> tuple[list[dict], list[dict]]:
    """Answers logged, then logged again under the same id once regenerated and rated: (first, later)."""
    cities = d.knowledge["business"]["service_area"]["cities"]
    firsts, seconds = [], []
    for _ in range(n):
        fact = d.fact(d.rng.choice(sorted(HALLUCINATIONS)))
        messages = [
            _system(d.knowledge),
            {"role": "user", "content": _phrase(d.rng, fact, cities)},
            {"role": "assistant", "content": d.rng.choice(HALLUCINATIONS[fact["id"]])},
        ]
        first = _record(
            d, example_type="faq", messages=messages, metadata={"fact": fact["id"], "revision": 1}
        )
        first["feedback"] = {"outcome": "regenerated"}
        second = copy.deepcopy(first)
        at = datetime.strptime(first["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        second["created_at"] = _ts(at + timedelta(seconds=d.rng.randrange(20, 240)))
        second["messages"][-1]["content"] = _answer(d.rng, fact)
        second["feedback"] = {"thumbs": 1}
        second["metadata"] = {"fact": fact["id"], "revision": 2}
        firsts.append(first)
        seconds.append(second)
    return firsts, seconds


def _page(d: _Day, sections: list[str], style: str, title: str) -> dict:
    """A page-builder page for My Hibachi, built from the knowledge file so prices are right."""
    k, rng = d.knowledge, d.rng
    prices = k["prices"]
    built: list[dict] = []
    for kind in sections:
        if kind == "hero":
            built.append(
                {
                    "type": "hero",
                    "headline": rng.choice(HEADLINES),
                    "subheadline": rng.choice(SUBHEADLINES),
                    "cta": {
                        "label": rng.choice(["Book your chef", "Check availability", "Get a quote"]),
                        "href": "#booking",
                    },
                }
            )
        elif kind == "about":
            built.append({"type": "about", "title": "About My Hibachi", "body": k["business"]["description"]})
        elif kind == "features":
            built.append(
                {
                    "type": "features",
                    "items": [
                        {
                            "title": "We bring the grill",
                            "description": "Grill, propane, food and utensils included.",
                        },
                        {
                            "title": "Two proteins per guest",
                            "description": "Chicken, steak, shrimp, salmon, scallops or tofu.",
                        },
                        {"title": "Bay Area & Sacramento", "description": "Free travel within 30 miles."},
                    ],
                }
            )
        elif kind == "menu":
            items = [m for m in k["menu_items"] if m["category"] in ("protein", "premium_upgrade", "add_on")]
            chosen = rng.sample(items, rng.randrange(4, len(items) + 1))
            built.append(
                {
                    "type": "menu",
                    "title": rng.choice(["Our Menu", "Menu", "What We Cook"]),
                    "items": [
                        {
                            "name": m["name"],
                            **({"price": m["price"], "unit": m["unit"]} if "price" in m else {}),
                        }
                        for m in chosen
                    ],
                }
            )
        elif kind == "pricing":
            built.append(
                {
                    "type": "pricing",
                    "title": "Pricing",
                    "plans": [
                        {
                            "name": "Adult",
                            "price": prices["adult_per_person"],
                            "unit": "per person",
                            "features": ["Two proteins", "Fried rice and vegetables", "Salad and sauces"],
                        },
                        {"name": "Kids (4-12)", "price": prices["child_per_person"], "unit": "per child"},
                        {"name": "Event minimum", "price": prices["event_minimum"], "unit": "per event"},
                    ],
                }
            )
        elif kind == "testimonials":
            built.append(
                {
                    "type": "testimonials",
                    "items": [
                        {
                            "quote": quote,
                            "author": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)[0]}.",
                            "rating": 5,
                        }
                        for quote in rng.sample(TESTIMONIAL_QUOTES, 2)
                    ],
                }
            )
        elif kind == "faq":
            facts = rng.sample(k["facts"], 3)
            built.append(
                {
                    "type": "faq",
                    "title": "FAQ",
                    "items": [
                        {"question": f["questions"][0].replace("{city}", "San Jose"), "answer": f["answer"]}
                        for f in facts
                    ],
                }
            )
        elif kind == "gallery":
            built.append(
                {
                    "type": "gallery",
                    "images": [
                        {
                            "src": "/images/hibachi-grill.jpg",
                            "alt": "Chef cooking at a backyard hibachi grill",
                        },
                        {"src": "/images/onion-volcano.jpg", "alt": "The onion volcano trick"},
                    ],
                }
            )
        elif kind == "booking_cta":
            built.append(
                {
                    "type": "booking_cta",
                    "headline": "Book your hibachi party",
                    "text": f"A ${prices['deposit']} deposit secures your date.",
                    "button_label": "Book now",
                    "href": "/book",
                }
            )
        elif kind == "contact":
            built.append(
                {
                    "type": "contact",
                    "title": "Get in touch",
                    "fields": ["name", "email", "phone", "date", "guests", "message"],
                }
            )
    return {
        "version": "1.0",
        "metadata": {"title": title, "theme": {"primary_color": rng.choice(COLORS), "style": style}},
        "sections": built,
    }


def _break_page(d: _Day, page: dict) -> str:
    """The ways page-builder answers go wrong: cut off, off-schema, or prose instead of JSON."""
    flaw = d.rng.choice(["truncated", "no_headline", "unknown_type", "price_text", "prose"])
    broken = copy.deepcopy(page)
    if flaw == "truncated":
        text = json.dumps(page, separators=(",", ":"))
        return text[: int(len(text) * d.rng.uniform(0.4, 0.9))]
    if flaw == "prose":
        return (
            "Sure! Your page will have a big hero image, a menu with all our proteins and a booking button."
        )
    pricing = [s for s in broken["sections"] if s["type"] == "pricing"]
    if flaw == "price_text" and pricing:
        pricing[0]["plans"][0]["price"] = "$60"
    elif flaw == "unknown_type":
        broken["sections"].append({"type": "carousel", "slides": ["/images/a.jpg", "/images/b.jpg"]})
    else:
        broken["sections"].insert(0, {"type": "hero", "subheadline": "Private chefs for your party"})
    return json.dumps(broken, separators=(",", ":"))


def _page_request(d: _Day) -> tuple[str, list[str], str]:
    optional = ["about", "features", "menu", "pricing", "testimonials", "faq", "gallery", "contact"]
    if d.rng.random() < 0.2:
        single = d.rng.choice(["menu", "pricing", "faq", "testimonials"])
        return (
            f"Create a {single} section for our hibachi catering website.",
            [single],
            d.rng.choice(STYLES),
        )
    sections = (
        ["hero"] + sorted(d.rng.sample(optional, d.rng.randrange(2, 5)), key=optional.index) + ["booking_cta"]
    )
    style = d.rng.choice(STYLES)
    named = ", ".join(s.replace("_", " ") for s in sections[:-1]) + " and a booking call to action"
    request = d.rng.choice(PAGE_REQUESTS).format(
        sections=named, occasion=d.rng.choice(OCCASIONS), style=style
    )
    return request, sections, style


def _apply_edit(sections: list[str], style: str, edit: str) -> tuple[list[str], str]:
    """The sections and style of a page after one of ``SECTION_EDITS``."""
    sections = list(sections)
    if edit == "Make the hero more playful.":
        return (sections if "hero" in sections else ["hero", *sections]), "playful"
    added = {"Add a FAQ section.": "faq", "Add testimonials from customers.": "testimonials"}.get(edit)
    if added and added not in sections:
        position = sections.index("booking_cta") if "booking_cta" in sections else len(sections)
        sections.insert(position, added)
    if edit == "Put the pricing before the menu." and {"pricing", "menu"} <= set(sections):
        sections.remove("pricing")
        sections.insert(sections.index("menu"), "pricing")
    return sections, style


def _page_rows(d: _Day, n: int, n_followups: int) -> list[dict]:
    rows = []
    for i in range(n):
        request, sections, style = _page_request(d)
        page = _page(
            d, sections, style, title=d.rng.choice(["My Hibachi", "My Hibachi - Private Hibachi Chef"])
        )
        valid = d.rng.random() >= 0.12
        answer = json.dumps(page, separators=(",", ":")) if valid else _break_page(d, page)
        messages = [
            {"role": "system", "content": "You are a page builder. Answer with page JSON only."},
            {"role": "user", "content": request},
            {"role": "assistant", "content": answer},
        ]
        record = _record(
            d,
            example_type="page_generation",
            messages=messages,
            metadata={"builder": "v2", "sections": sections},
        )
        if valid:
            feedback = d.rng.choices(
                [
                    {"outcome": "accepted"},
                    {"thumbs": 1},
                    {"thumbs": 1, "outcome": "accepted"},
                    {
                        "outcome": "accepted_with_edits",
                        "edit_ratio": round(d.rng.uniform(0.05, 0.3), 2),
                        "thumbs": 1,
                    },
                    {"outcome": "accepted_with_edits", "edit_ratio": round(d.rng.uniform(0.3, 0.7), 2)},
                    {"outcome": "abandoned"},
                ],
                weights=[40, 20, 10, 15, 10, 5],
            )[0]
        else:
            feedback = d.rng.choice(
                [{"outcome": "regenerated"}, {"outcome": "rejected"}, {"thumbs": -1}, {"thumbs": 1}]
            )
        _maybe_event(d, record, feedback, share=0.15)
        rows.append(record)
        if i < n_followups and valid:
            # The user keeps editing the page in the same conversation.
            edit = d.rng.choice(SECTION_EDITS)
            new_sections, new_style = _apply_edit(sections, style, edit)
            new_page = _page(d, new_sections, new_style, page["metadata"]["title"])
            if "green" in edit:
                new_page["metadata"]["theme"]["primary_color"] = "#166534"
            follow = _record(
                d,
                example_type="page_generation",
                conversation_id=record["conversation_id"],
                at=datetime.strptime(record["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
                + timedelta(minutes=d.rng.randrange(1, 15)),
                messages=messages
                + [
                    {"role": "user", "content": edit},
                    {"role": "assistant", "content": json.dumps(new_page, separators=(",", ":"))},
                ],
                metadata={"builder": "v2", "sections": new_sections},
            )
            follow["feedback"] = d.rng.choice([{"outcome": "accepted"}, {"thumbs": 1, "outcome": "accepted"}])
            rows.append(follow)
    return rows


def _instruction_rows(d: _Day, n: int) -> list[dict]:
    """Page-builder examples in the Alpaca ``instruction``/``input``/``output`` shape."""
    rows = []
    for _ in range(n):
        _, sections, style = _page_request(d)
        page = _page(d, sections, style, title="My Hibachi")
        rows.append(
            {
                "id": d.new_id(),
                "created_at": _ts(d.when()),
                "org_id": MAIN_ORG,
                "example_type": "page_generation",
                "model": "claude-3-5-sonnet",
                "instruction": f"Create a {style} landing page for a hibachi catering company.",
                "input": f"Business: My Hibachi. Sections: {', '.join(sections)}.",
                "output": json.dumps(page, separators=(",", ":")),
                "feedback": d.rng.choice([{"outcome": "accepted"}, {"thumbs": 1, "outcome": "accepted"}]),
            }
        )
    return rows


def _malformed_jsonl(d: _Day, sample: dict) -> list[str]:
    """Lines a real log collector leaves behind; ingestion must quarantine each with a reason."""

    def variant(**changes: Any) -> str:
        row = copy.deepcopy(sample)
        row["id"] = d.new_id()
        for key, value in changes.items():
            if value is None:
                row.pop(key, None)
            else:
                row[key] = value
        return json.dumps(row)

    return [
        json.dumps(sample)[:57],  # cut off mid-write
        "ERROR 2026-01-05 03:12:44 log rotation failed: disk full",  # not JSON at all
        json.dumps(["id", "int-0", "messages"]),  # JSON, but not an object
        variant(id=None),  # no id
        variant(created_at="yesterday around 5pm"),  # unparseable timestamp
        variant(created_at="2026-02-30T25:61:00Z"),  # impossible timestamp
        variant(messages=[]),  # empty conversation
        variant(messages=sample["messages"][:-1]),  # ends with the user, no answer
    ]


def _csv_frame(rows: list[dict]) -> pd.DataFrame:
    nested = ["messages", "tools", "critic", "feedback", "metadata"]
    columns = ["id", "conversation_id", "created_at", "org_id", "example_type", "model", *nested]
    frame = pd.DataFrame([{c: row.get(c) for c in columns} for row in rows], columns=columns)
    for column in nested:
        frame[column] = [json.dumps(v) if v is not None else None for v in frame[column]]
    return frame


def generate_demo_logs(out_dir: Path, seed: int = 0, batch: int = 0, *, scale: float = 1.0) -> dict:
    """Write one day of My Hibachi assistant logs to ``out_dir``; return a summary of what was written.

    Deterministic for ``(seed, batch)``. ``batch`` ``n`` is the logs of day ``n`` (new ids, new file
    names), so later batches can be added to the same folder to test retraining. ``scale`` multiplies
    the number of interactions (1.0: about 900 lines, about 600 of them good enough to train on).
    """
    if batch < 0:
        raise ValueError(f"batch must be >= 0, got {batch}")
    if not 0 < scale <= 10:
        raise ValueError(f"scale must be in (0, 10], got {scale}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {key: max(1, round(value * scale)) for key, value in COUNTS.items()}
    d = _Day(
        rng=random.Random(f"my-hibachi:{seed}:{batch}"),
        day=BASE_DAY + timedelta(days=batch),
        knowledge=json.loads(KNOWLEDGE_PATH.read_text(encoding="utf-8")),
        tools=json.loads(TOOLS_PATH.read_text(encoding="utf-8")),
    )

    faq = _faq_rows(d, counts["faq"])
    superseded, superseding = _superseded_rows(d, counts["superseded"])
    chat = (
        superseded
        + faq
        + _prompt_shape_rows(d, counts["faq_prompt_shape"])
        + _shadow_rows(d, counts["shadow"])
        + _hallucination_rows(d, counts["hallucinations"])
        + _conversation_rows(d, counts["conversations"])
        + _duplicate_rows(d, faq, counts["exact_duplicates"], counts["near_duplicates"])
        + _faq_rows(d, counts["opted_out"], org=OPTED_OUT_ORG)
        + _instruction_rows(d, counts["pages_instruction_shape"])
    )
    chat.sort(key=lambda row: row["created_at"])
    # Rows that supersede earlier ones come later in the file, with the same id and a later timestamp.
    chat += superseding
    malformed = _malformed_jsonl(d, faq[0])
    lines: list[str] = [json.dumps(row) for row in chat]
    for bad in malformed:
        lines.insert(d.rng.randrange(len(lines) + 1), bad)

    pages = _page_rows(d, counts["pages"], counts["page_followups"])
    bookings = _booking_rows(d, counts["bookings"], counts["availability"])
    bookings += _booking_rows(d, 3, 0, org=OPTED_OUT_ORG)
    bookings.sort(key=lambda row: row["created_at"])
    d.feedback.sort(key=lambda event: event["created_at"])
    feedback_lines = [json.dumps(event) for event in d.feedback]
    bad_events = [
        '{"feedback_for": "' + bookings[0]["id"] + '", "thumbs": ',
        json.dumps({"feedback_for": bookings[1]["id"], "created_at": "13/45/2026 25:00", "thumbs": 1}),
    ]
    for bad in bad_events:
        feedback_lines.insert(d.rng.randrange(len(feedback_lines) + 1), bad)

    csv_rows = _csv_frame(bookings)
    bad_csv = _csv_frame([bookings[2], bookings[3]])
    bad_csv.loc[0, "id"] = None  # no id
    bad_csv.loc[1, "id"] = d.new_id()
    bad_csv.loc[1, "messages"] = str(bookings[3]["messages"])  # Python repr, not JSON
    csv_rows = pd.concat([csv_rows, bad_csv], ignore_index=True)

    stamp = f"{d.day:%Y-%m-%d}"
    files = {
        f"assistant-{stamp}.jsonl": len(lines),
        f"feedback-{stamp}.jsonl": len(feedback_lines),
        f"page-builder-{stamp}.parquet": len(pages),
        f"bookings-{stamp}.csv": len(csv_rows),
    }
    (out_dir / f"assistant-{stamp}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out_dir / f"feedback-{stamp}.jsonl").write_text("\n".join(feedback_lines) + "\n", encoding="utf-8")
    _csv_frame(pages).to_parquet(out_dir / f"page-builder-{stamp}.parquet", index=False)
    csv_rows.to_csv(out_dir / f"bookings-{stamp}.csv", index=False)
    (out_dir / "optout.json").write_text(
        json.dumps({"opted_out_orgs": [OPTED_OUT_ORG]}, indent=2) + "\n", encoding="utf-8"
    )

    records = chat + pages + bookings
    by_type: dict[str, int] = {}
    for row in records:
        by_type[row["example_type"]] = by_type.get(row["example_type"], 0) + 1
    return {
        "out_dir": str(out_dir),
        "seed": seed,
        "batch": batch,
        "day": stamp,
        "files": files,
        "lines": sum(files.values()),
        "interactions": len(records),
        "unique_ids": len({row["id"] for row in records}),
        "feedback_events": len(d.feedback),
        "malformed": len(malformed) + len(bad_events) + len(bad_csv),
        "by_type": dict(sorted(by_type.items())),
        "opted_out_orgs": [OPTED_OUT_ORG],
    }


def main(argv: list[str] | None = None) -> None:
    """Command line: write the demo logs to a folder and print the summary as JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m homegrown.demo.generate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("out_dir", type=Path, help="folder to write the log files to")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=0, help="0 for the first day, n for day n (new ids)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the number of interactions")
    args = parser.parse_args(argv)
    print(
        json.dumps(
            generate_demo_logs(args.out_dir, seed=args.seed, batch=args.batch, scale=args.scale), indent=2
        )
    )


if __name__ == "__main__":
    main()

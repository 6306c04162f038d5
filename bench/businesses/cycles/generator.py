"""Business B: "Cadence Cycles", a bike repair workshop and shop on Gloucester Road, Bristol (UK).

~2,000 lines of logs: FAQ, troubleshooting support, multi-turn conversations, and tool calls in OpenAI's
shape (``book_repair``, ``check_repair_status``, ``check_order_status``, ``cancel_booking``) with ``tools``
offered and the ``tool`` results in the later turns. The website chat runs on gpt-4o with an LLM judge that
samples a quarter of the answers (``critic``), thumbs on the widget, a post-chat survey (``customer_rating``),
booking outcomes (``led_to_booking``, ``outcome``) and a manager who corrects some wrong answers. An older
helpdesk (e-mail replies drafted by the assistant, edited by staff) was exported as CSV in the
``prompt``/``response`` shape. UK names, mobile and Bristol landline numbers, e-mails and addresses appear
in the customers' messages. The owner wrote a ``knowledge.json`` from the shop's FAQ page.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.businesses.common import (
    Fact,
    LogBook,
    assistant,
    iso,
    tool_call_message,
    tool_result,
    uk_person,
    user,
    vary,
    write_csv,
    write_jsonl,
)

NAME = "cycles"
TITLE = "Cadence Cycles (Bristol bike workshop, mixed with tools, UK English, knowledge file)"
SYSTEM = ("You are the assistant of Cadence Cycles, a bike repair workshop and shop at 112 Gloucester Road, "
          "Bristol. Answer briefly, in British English, using only the shop's prices and policies. Use the tools "
          "to book repairs, check repair and order status and cancel bookings.")
GREETINGS = ["Hi,", "Hello,", "Hiya", "Hey", "Morning,", "Hi there,", "Good afternoon,", "Alright?"]
CLOSINGS = ["thanks", "Thanks!", "cheers", "ta", "thank you", "many thanks", "cheers mate"]
SERVICES = ["basic_service", "full_service", "ebike_service", "puncture_repair", "wheel_true", "brake_pads",
            "bike_fit"]
BIKE_TYPES = ["road", "mountain", "hybrid", "ebike", "cargo", "kids", "folding", "gravel"]

TOOLS = [
    {"type": "function", "function": {
        "name": "book_repair", "description": "Book a bike into the workshop.",
        "parameters": {"type": "object", "properties": {
            "date": {"type": "string", "description": "Drop-off date, YYYY-MM-DD"},
            "time": {"type": "string", "description": "Drop-off time, HH:MM (24h)"},
            "service": {"type": "string", "enum": SERVICES},
            "bike_type": {"type": "string", "enum": BIKE_TYPES},
            "name": {"type": "string"}, "phone": {"type": "string"}},
            "required": ["date", "time", "service", "bike_type", "name", "phone"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "check_repair_status", "description": "Look up a bike in the workshop by its job reference.",
        "parameters": {"type": "object", "properties": {"job_ref": {"type": "string", "pattern": "^CC-[0-9]{5}$"}},
                       "required": ["job_ref"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "check_order_status", "description": "Where a web shop order is.",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string", "pattern": "^[0-9]{6}$"}},
                       "required": ["order_id"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "cancel_booking", "description": "Cancel a workshop booking.",
        "parameters": {"type": "object", "properties": {"booking_ref": {"type": "string", "pattern": "^BK-[0-9]{5}$"}},
                       "required": ["booking_ref"], "additionalProperties": False}}},
]

FACTS: list[Fact] = [
    Fact("hours", [
        "What are your opening hours?", "When are you open?", "What time do you open?", "What time do you close?",
        "Are you open on Saturdays?", "What are the workshop hours?", "How late are you open today?",
        "When does the shop shut?", "Opening times please",
    ], [
        "We're open Monday to Friday 8:30am to 6pm and Saturday 9am to 5pm. We're closed on Sundays.",
        "Monday-Friday 8:30am-6pm, Saturday 9am-5pm, closed Sunday.",
        "Our hours are 8:30am to 6pm on weekdays and 9am to 5pm on Saturdays. We're closed on Sundays and bank holidays.",
    ], wrong_answers=["We're open every day from 9am to 7pm."],
        correction="We're open Monday to Friday 8:30am to 6pm and Saturday 9am to 5pm. Closed on Sundays."),
    Fact("sunday", [
        "Are you open on Sunday?", "Can I drop my bike off on a Sunday?", "Open Sundays?", "Do you work weekends?",
        "Is the shop open this Sunday?",
    ], [
        "We're closed on Sundays. On Saturdays we're open 9am to 5pm.",
        "Sorry, we're closed on Sundays. You can drop off on Saturday between 9am and 5pm, or on weekdays from 8:30am.",
    ]),
    Fact("basic_service", [
        "How much is a basic service?", "What does a basic service cost?", "Price for a basic service?",
        "What's included in the basic service?", "How much for a quick tune-up?", "Do you do a cheap service?",
        "How much to get my gears and brakes adjusted?",
    ], [
        "Our basic service is £45. It covers gear and brake adjustment, tyre pressures, a chain clean and lube and a full safety check.",
        "A basic service costs £45: gears and brakes adjusted, chain cleaned and lubed, and a safety check.",
    ], wrong_answers=["A basic service is £35."],
        correction="Our basic service is £45: gear and brake adjustment, chain clean and lube and a safety check."),
    Fact("full_service", [
        "How much is a full service?", "What's the price of a full service?", "What does the full service include?",
        "How much for a complete overhaul?", "Full service cost?", "What's the difference between basic and full service?",
    ], [
        "A full service is £95. We strip the drivetrain, deep-clean it, regrease the bearings, true the wheels and adjust everything. Parts are extra.",
        "Our full service costs £95 plus any parts: drivetrain stripped and cleaned, bearings regreased, wheels trued and everything adjusted.",
    ]),
    Fact("ebike_service", [
        "Do you service e-bikes?", "How much is an e-bike service?", "Can you fix electric bikes?",
        "Price for servicing an ebike?", "Do you work on Bosch e-bikes?",
    ], [
        "Yes, we service e-bikes. An e-bike service is £75, including a motor and battery diagnostic check.",
        "We do: an e-bike service costs £75 and includes a diagnostic check of the motor and battery.",
    ]),
    Fact("puncture", [
        "How much to fix a puncture?", "Can you repair a flat tyre?", "Puncture repair price?", "I've got a flat, how much?",
        "How much for a new inner tube fitted?", "Do you fix punctures while I wait?",
    ], [
        "A puncture repair is £12, or £18 with a new inner tube. We can usually do it while you wait, in about 30 minutes.",
        "Punctures are £12 to repair (£18 if you need a new inner tube) and usually take about 30 minutes while you wait.",
    ]),
    Fact("turnaround", [
        "How long does a service take?", "When will my bike be ready?", "How long do you keep the bike?",
        "What's the turnaround time?", "Can I get it back the same day?", "How many days for a full service?",
    ], [
        "Most services are finished within 48 hours of drop-off. We'll text you when it's ready to collect.",
        "We aim to have your bike back to you within 48 hours. You get a text as soon as it's ready.",
    ], wrong_answers=["Services are always done the same day."]),
    Fact("drop_off", [
        "When should I drop my bike off?", "What time do I bring the bike in?", "Drop off times?",
        "Can I drop my bike off in the afternoon?", "What time is drop-off on my booking day?",
    ], [
        "Please drop your bike off between 8:30am and 10am on your booking day, so we can start on it that morning.",
        "Drop-off is between 8:30am and 10am on the day of your booking.",
    ]),
    Fact("walk_in", [
        "Do I need to book for a puncture?", "Can I just walk in?", "Do you take walk-ins?",
        "Do I need an appointment for brake pads?",
    ], [
        "No booking is needed for small jobs like punctures and brake pads: just walk in and we'll do it while you wait. Services need a booking.",
        "Walk-ins are fine for punctures and brake pads. For services, please book a slot.",
    ]),
    Fact("first_service", [
        "Is the first service free if I bought the bike from you?", "Do new bikes get a free check?",
        "I bought my bike here, do I get a free service?", "Do you do a free six week check?",
    ], [
        "Yes, every bike bought from us gets a free first service within 6 weeks of purchase.",
        "Bikes bought from Cadence Cycles get a free first service within 6 weeks of purchase; just book it in.",
    ]),
    Fact("collection", [
        "Do you collect bikes?", "Can you pick my bike up from home?", "Do you do collection and delivery?",
        "How much is pick up and drop off?", "Can you collect from Horfield?",
    ], [
        "Yes, we collect and deliver within 5 miles of the shop for £20 return.",
        "Our collection and delivery service costs £20 return and covers anywhere within 5 miles of Gloucester Road.",
    ], wrong_answers=["Collection is free anywhere in Bristol."],
        correction="We collect and deliver within 5 miles of the shop for £20 return."),
    Fact("parts_lead_time", [
        "How long do parts take to arrive?", "If you need to order a part, how long?", "Do you have parts in stock?",
        "How long to get a Shimano part in?", "What if my bike needs parts you don't have?",
    ], [
        "We stock the common Shimano and SRAM parts. Anything we need to order usually arrives in 2 to 3 working days.",
        "Most parts are in stock; ordered parts usually take 2 to 3 working days.",
    ]),
    Fact("payment", [
        "Do you take card?", "Can I pay with Cyclescheme?", "What payment methods do you accept?",
        "Do you take cash?", "Can I use a cycle to work voucher?", "Do you take cheques?",
    ], [
        "We take cash, card and contactless, and Cyclescheme and Cycle Solutions vouchers for bikes. We don't accept cheques.",
        "Card, contactless and cash are fine, and we accept Cyclescheme and Cycle Solutions for new bikes. No cheques.",
    ]),
    Fact("hire", [
        "Do you hire bikes?", "Can I rent a bike?", "Do you do bike rental?", "Can I borrow a bike while mine is in?",
    ], [
        "Sorry, we don't do bike hire or rentals. We're a repair workshop and shop.",
        "We don't rent bikes, sorry, and we don't have loan bikes either.",
    ], wrong_answers=["Yes, we hire bikes from £25 a day."],
        correction="Sorry, we don't hire or rent bikes."),
    Fact("cancellation", [
        "Can I cancel my booking?", "What's your cancellation policy?", "Is there a fee if I cancel?",
        "I might need to move my appointment, is that ok?", "How late can I cancel?",
    ], [
        "You can cancel or move a booking free of charge up to 24 hours before. Later cancellations cost £10.",
        "Cancelling is free up to 24 hours before your slot; after that there's a £10 late cancellation fee.",
    ]),
    Fact("storage", [
        "How long can I leave my bike after it's fixed?", "Do you charge for storage?", "I can't collect for a while, is that ok?",
        "What if I can't pick it up for two weeks?",
    ], [
        "We keep finished bikes free for 14 days. After that, storage is £2 a day.",
        "Collection within 14 days is free; after 14 days we charge £2 per day for storage.",
    ]),
    Fact("warranty", [
        "Do you guarantee your work?", "Is there a warranty on repairs?", "What if the problem comes back?",
        "How long is your workmanship guarantee?",
    ], [
        "All our workmanship is guaranteed for 30 days. If something we adjusted isn't right, bring it back and we'll fix it free.",
        "Our repairs come with a 30-day workmanship guarantee.",
    ]),
    Fact("brake_pads", [
        "How much to fit brake pads?", "Brake pad replacement cost?", "Can you change my disc pads?",
        "My brakes are squealing, how much to replace the pads?",
    ], [
        "Fitting brake pads is £15 per wheel plus the pads (from £12 a pair).",
        "We charge £15 per wheel to fit brake pads, plus the pads themselves, from £12 a pair.",
    ]),
    Fact("wheel_true", [
        "How much to true a wheel?", "My wheel is buckled, can you fix it?", "Wheel truing price?",
        "Can you straighten a wobbly wheel?",
    ], [
        "Truing a wheel is £20. If a spoke needs replacing it's £5 per spoke on top.",
        "A wheel true costs £20, plus £5 per spoke if any need replacing.",
    ]),
    Fact("location", [
        "Where are you?", "What's your address?", "Where is the shop?", "Is there parking near you?",
        "How do I find you?",
    ], [
        "We're at 112 Gloucester Road, Bristol BS7 8BA. There are bike racks outside and pay-and-display parking on the side streets.",
        "Cadence Cycles is at 112 Gloucester Road, Bristol BS7 8BA, with bike racks right outside.",
    ]),
    Fact("bike_fit", [
        "Do you do bike fits?", "How much is a bike fitting?", "Can you set up my saddle height properly?",
        "How long does a bike fit take?",
    ], [
        "Yes, a professional bike fit is £120 and takes about 2 hours, by appointment.",
        "Our bike fit costs £120, takes around 2 hours and needs to be booked in advance.",
    ]),
]

SUPPORT = [
    ("My gears keep skipping", "Skipping gears usually mean a stretched cable or a worn chain. Our basic service (£45) includes gear indexing; if the chain and cassette are worn we'll quote before replacing them."),
    ("My chain keeps falling off", "A chain that drops is usually a limit-screw or derailleur hanger problem. Bring it in for a basic service (£45) and we'll set it up properly."),
    ("My brakes squeal really loudly", "Squealing brakes are often contaminated or worn pads. Fitting new pads is £15 per wheel plus the pads, and you can walk in for it."),
    ("My e-bike battery won't charge", "Please bring the bike in: our e-bike service (£75) includes a motor and battery diagnostic, and we'll tell you what we find before doing any work."),
    ("There's a clicking noise when I pedal", "Clicking when pedalling often comes from the bottom bracket or loose pedals. A full service (£95) includes regreasing the bearings; we'll check it over."),
    ("My back wheel wobbles", "A wobbly wheel needs truing: that's £20, plus £5 per spoke if any are broken."),
    ("My tyre keeps going flat", "Slow punctures are often a thorn still in the tyre. A puncture repair is £12 (£18 with a new tube) and we'll check the tyre too."),
    ("The brakes feel spongy on my hydraulic discs", "Spongy hydraulic brakes usually need bleeding. Book in for a basic service (£45) and mention it; we'll quote for the bleed."),
]
NOT_OFFERED_SMALL_TALK = [
    ("Do you sell second hand bikes?", "We don't sell second-hand bikes, only new ones. We can service a used bike you've bought elsewhere though."),
    ("Can you fix my motorbike?", "Sorry, we only work on bicycles, including e-bikes."),
    ("Do you repair scooters?", "We don't repair e-scooters, only bicycles and e-bikes."),
    ("thanks!", "You're welcome! Ride safe."), ("Cheers, that's helpful", "No problem, see you soon!"),
    ("ok great", "Great! Anything else I can help with?"),
]
REPAIR_STATUSES = [
    ({"status": "in_progress", "estimated_ready": None}, "Your bike ({ref}) is in the workshop now; we'll text you as soon as it's ready."),
    ({"status": "ready_for_collection"}, "Good news: your bike ({ref}) is ready to collect. We're open until 6pm on weekdays and 5pm on Saturdays."),
    ({"status": "waiting_for_parts"}, "Your bike ({ref}) is waiting for a part; ordered parts usually take 2 to 3 working days. We'll text you when it's done."),
]
ORDER_STATUSES = [
    ({"status": "dispatched", "carrier": "Royal Mail", "tracking": "TT{n}GB"}, "Your order {ref} has been dispatched with Royal Mail (tracking TT{n}GB)."),
    ({"status": "processing"}, "Your order {ref} is being packed and should go out within one working day."),
    ({"status": "ready_for_collection"}, "Your order {ref} is ready to collect from the shop at 112 Gloucester Road."),
]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
SERVICE_WORDS = {"basic_service": "a basic service", "full_service": "a full service", "ebike_service": "an e-bike service",
                 "wheel_true": "a wheel true", "bike_fit": "a bike fit", "brake_pads": "new brake pads",
                 "puncture_repair": "a puncture repair"}
BIKE_WORDS = {"road": "road bike", "mountain": "mountain bike", "hybrid": "hybrid", "ebike": "e-bike",
              "cargo": "cargo bike", "kids": "kid's bike", "folding": "Brompton", "gravel": "gravel bike"}


def _when(rng: random.Random, now: datetime) -> tuple[str, datetime]:
    """How a customer names a day (not a Sunday) and the date it is."""
    while True:
        offset = rng.randint(1, 9)
        day = now + timedelta(days=offset)
        if day.weekday() != 6:
            break
    if offset == 1:
        return "tomorrow", day
    if offset <= 6:
        return f"on {WEEKDAYS[day.weekday()]}", day
    return rng.choice([f"next {WEEKDAYS[day.weekday()]}", f"on the {day.day}{_suffix(day.day)}"]), day


def _suffix(n: int) -> str:
    return "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def _time(rng: random.Random, day: datetime) -> tuple[str, str]:
    latest = 16 if day.weekday() == 5 else 17
    hour = rng.randint(9, latest)
    minute = rng.choice([0, 0, 30])
    spoken = f"{hour if hour <= 12 else hour - 12}{':' + str(minute) if minute else ''}{'am' if hour < 12 else 'pm'}"
    return spoken, f"{hour:02d}:{minute:02d}"


def generate(out_dir: Path, seed: int = 0) -> dict[str, Any]:
    """Write the workshop's logs, the helpdesk CSV, feedback events and ``knowledge.json`` into ``out_dir``."""
    rng = random.Random(f"cycles:{seed}")
    book = LogBook(rng, org_id="org-cadence-cycles", start=datetime(2025, 3, 3, 8, 10), system_prompt=SYSTEM,
                   model="gpt-4o-2024-08-06", id_prefix="int", minutes_between=(2, 75))

    def ask(fact: Fact) -> str:
        return vary(rng.choice(fact.questions), rng, GREETINGS, CLOSINGS)

    def judged(score_lo: float = 0.82) -> dict[str, Any]:
        if rng.random() < 0.25:  # the LLM judge samples a quarter of the answers
            score = round(rng.uniform(score_lo, 1.0), 2)
            return {"critic": {"best_response": "teacher", "quality_score": score,
                               "reason": "accurate and grounded" if score > 0.9 else "correct but could be clearer"}}
        return {}

    def widget_feedback() -> dict[str, Any] | None:
        roll = rng.random()
        if roll < 0.11:
            return {"thumbs": 1}
        if roll < 0.13:
            return {"thumbs": -1}
        if roll < 0.19:
            return {"customer_rating": rng.choice([4, 5, 5, 3])}
        return None

    jobs: list[Any] = []
    weights = {"hours": 70, "sunday": 30, "basic_service": 70, "full_service": 60, "puncture": 55, "turnaround": 50,
               "ebike_service": 40, "collection": 35, "payment": 35, "location": 30, "drop_off": 30}
    for fact in FACTS:
        for _ in range(weights.get(fact.id, 24)):
            jobs.append(lambda f=fact: book.add([user(ask(f)), assistant(rng.choice(f.answers))], "faq",
                                                feedback=widget_feedback(), **judged()))

    def wrong(f: Fact) -> None:
        row = book.add([user(ask(f)), assistant(rng.choice(f.wrong_answers))], "faq",
                       feedback=rng.choice([{"thumbs": -1}, {"thumbs": -1}, {"outcome": "regenerated"}, None]),
                       **({"critic": {"best_response": "neither", "quality_score": round(rng.uniform(0.05, 0.4), 2),
                                      "reason": "contradicts the shop's published policy"}} if rng.random() < 0.5 else {}))
        if f.correction and rng.random() < 0.5:
            book.feedback_event(row, delay_hours=rng.uniform(2, 72), admin_correction=f.correction)
    for fact in [f for f in FACTS if f.wrong_answers]:
        jobs += [lambda f=fact: wrong(f)] * 7

    for problem, answer in SUPPORT:
        for _ in range(20):
            jobs.append(lambda p=problem, a=answer: book.add(
                [user(vary(p, rng, GREETINGS, CLOSINGS, p_closing=0.3)), assistant(a)], "support",
                feedback=widget_feedback(), **judged()))

    def faq_conversation() -> None:
        conversation_id = book.new_id("conv")
        turns: list[dict[str, Any]] = []
        for i, fact in enumerate(rng.sample(FACTS, rng.choice([2, 2, 3]))):
            turns = turns + [user(ask(fact)), assistant(rng.choice(fact.answers))]
            book.add(list(turns), "faq", conversation_id=conversation_id, feedback=widget_feedback(),
                     seconds_after=rng.uniform(15, 120) if i else None, **judged())
    jobs += [faq_conversation] * 45

    def booking(all_at_once: bool) -> None:
        conversation_id = book.new_id("conv")
        person = uk_person(rng)
        service = rng.choice(["basic_service", "basic_service", "full_service", "full_service", "ebike_service",
                              "wheel_true", "bike_fit"])
        bike = "ebike" if service == "ebike_service" else rng.choice(BIKE_TYPES[:4] + ["gravel", "folding"])
        book.tick()
        spoken_day, day = _when(rng, book.clock)
        spoken_time, time = _time(rng, day)
        want = (f"Can I book my {BIKE_WORDS[bike]} in for {SERVICE_WORDS[service]} {spoken_day}?")
        details = rng.choice([f"{spoken_time} please. It's {person['name']}, {person['phone']}",
                              f"{spoken_time} works. Name's {person['name']} and my number is {person['phone']}",
                              f"{person['name']}, {person['phone']}, {spoken_time} if possible"])
        turns: list[dict[str, Any]] = []
        if all_at_once:
            turns.append(user(f"{want[:-1]} at {spoken_time}? {person['name']}, mobile {person['phone']}"))
        else:
            turns.append(user(vary(want, rng, GREETINGS, CLOSINGS, p_typo=0.05, p_lower=0.15)))
            turns.append(assistant("Of course! What time would you like to drop it off, and can I take your name "
                                   "and a phone number for the booking?"))
            book.add(list(turns), "support", conversation_id=conversation_id, tools=TOOLS, seconds_after=0)
            turns.append(user(details))
        call = tool_call_message(rng, "book_repair", {"date": day.strftime("%Y-%m-%d"), "time": time,
                                                       "service": service, "bike_type": bike,
                                                       "name": person["name"], "phone": person["phone"]})
        turns.append(call)
        outcome = rng.random()
        call_row = book.add(list(turns), "tool_invocation", conversation_id=conversation_id, tools=TOOLS,
                            seconds_after=rng.uniform(20, 90),
                            feedback={"outcome": "accepted"} if outcome < 0.9 else {"outcome": "abandoned"},
                            **judged(0.9))
        if outcome >= 0.9:
            return
        ref = f"BK-{rng.randrange(10000, 100000)}"
        turns.append(tool_result(call, {"booking_ref": ref, "status": "confirmed"}))
        turns.append(assistant(f"You're booked in for {SERVICE_WORDS[service]} on {WEEKDAYS[day.weekday()]} "
                               f"{day.day} {day.strftime('%B')} (reference {ref}). Please drop the bike off between "
                               f"8:30am and 10am{'' if time <= '10:00' else ' if you can, or at ' + spoken_time}. "
                               "Free cancellation up to 24 hours before."))
        feedback: dict[str, Any] = {"led_to_booking": True}
        if rng.random() < 0.3:
            feedback["customer_rating"] = rng.choice([5, 5, 4, 4, 3])
        book.add(list(turns), "support", conversation_id=conversation_id, tools=TOOLS, seconds_after=2,
                 feedback=feedback)
        if rng.random() < 0.1:  # the survey answer comes later
            book.feedback_event(call_row, delay_hours=rng.uniform(1, 30), customer_rating=5)
    jobs += [lambda: booking(False)] * 95 + [lambda: booking(True)] * 40

    def lookup(tool: str, key: str, value: str, question: str, statuses: list, extra_name: bool) -> None:
        conversation_id = book.new_id("conv")
        person = uk_person(rng)
        text = question.format(ref=value, name=person["name"]) if extra_name else question.format(ref=value)
        turns: list[dict[str, Any]] = [user(vary(text, rng, GREETINGS, CLOSINGS, p_lower=0.1, p_typo=0.05))]
        call = tool_call_message(rng, tool, {key: value})
        turns.append(call)
        book.add(list(turns), "tool_invocation", conversation_id=conversation_id, tools=TOOLS,
                 feedback={"thumbs": 1} if rng.random() < 0.1 else None, **judged(0.9))
        result, template = rng.choice(statuses)
        n = rng.randrange(10**8, 10**9)
        result = json.loads(json.dumps(result).replace("{n}", str(n)))
        turns.append(tool_result(call, {key: value, **result}))
        turns.append(assistant(template.format(ref=value, n=n)))
        book.add(list(turns), "support", conversation_id=conversation_id, tools=TOOLS, seconds_after=2,
                 feedback=widget_feedback())

    repair_questions = ["Is my bike ready yet? Job ref {ref}", "Hi, can you check on my bike please, {ref}",
                        "Any update on {ref}? It's {name}", "How's my repair going? ref {ref}"]
    order_questions = ["Where's my order {ref}?", "Has order {ref} shipped yet?",
                       "Can you check order number {ref} please", "I ordered a helmet, order {ref}, when will it arrive?"]
    cancel_questions = ["I need to cancel my booking {ref}", "Please cancel {ref}, something came up",
                        "Can I cancel booking {ref}? I'm {name}"]
    for _ in range(70):
        jobs.append(lambda: lookup("check_repair_status", "job_ref", f"CC-{rng.randrange(10000, 100000)}",
                                   rng.choice(repair_questions), REPAIR_STATUSES, True))
    for _ in range(40):
        jobs.append(lambda: lookup("check_order_status", "order_id", f"{rng.randrange(100000, 1000000)}",
                                   rng.choice(order_questions), ORDER_STATUSES, False))
    cancelled = [({"status": "cancelled", "fee": 0}, "That's cancelled ({ref}), free of charge. Rebook any time."),
                 ({"status": "cancelled", "fee": 10}, "Booking {ref} is cancelled. As it's within 24 hours of the slot, a £10 late cancellation fee applies.")]
    for _ in range(22):
        jobs.append(lambda: lookup("cancel_booking", "booking_ref", f"BK-{rng.randrange(10000, 100000)}",
                                   rng.choice(cancel_questions), cancelled, True))

    def pii_question() -> None:  # customers paste contact details into plain questions
        person = uk_person(rng)
        fact = rng.choice(FACTS)
        text = rng.choice([f"{ask(fact)} I'm {person['name']}, {person['email']}",
                           f"Hi it's {person['first']} from {person['address']}. {ask(fact)}",
                           f"{ask(fact)} You can call me back on {person['phone']}"])
        book.add([user(text), assistant(rng.choice(fact.answers))], "faq", feedback=widget_feedback(), **judged())
    jobs += [pii_question] * 60

    for question, answer in NOT_OFFERED_SMALL_TALK:
        jobs += [lambda q=question, a=answer: book.add(
            [user(vary(q, rng, GREETINGS, CLOSINGS)), assistant(a)],
            "chat" if len(q) < 25 else "faq", feedback=widget_feedback())] * 7

    rng.shuffle(jobs)
    for job in jobs:
        job()

    # feedback that arrives later, and rows the widget re-sent with the same id once the survey came in
    for row in rng.sample([r for r in book.rows if "feedback" not in r], 80):
        book.feedback_event(row, delay_hours=rng.uniform(0.02, 48), **rng.choice(
            [{"thumbs": 1}, {"thumbs": 1}, {"customer_rating": 5}, {"customer_rating": 4}, {"thumbs": -1}]))
    resent = [dict(r, feedback={**(r.get("feedback") or {}), "customer_rating": rng.choice([4, 5])})
              for r in rng.sample([r for r in book.rows if r["example_type"] == "faq"], 25)]

    helpdesk = _helpdesk_rows(rng)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {f"chat-{month}.jsonl": [r for r in book.rows if r["created_at"].startswith(month)]
             for month in sorted({r["created_at"][:7] for r in book.rows})}
    files["chat-resent.jsonl"] = resent
    files["feedback-events.jsonl"] = sorted(book.later_feedback, key=lambda e: e["created_at"])
    lines = sum(write_jsonl(out_dir / name, rows) for name, rows in files.items() if rows)
    lines += write_csv(out_dir / "helpdesk-export-2025-02.csv", helpdesk,
                       ["id", "created_at", "org_id", "example_type", "model", "system", "prompt", "response",
                        "feedback", "metadata"])
    (out_dir / "knowledge.json").write_text(json.dumps(knowledge(), ensure_ascii=False, indent=1) + "\n")
    return {"business": NAME, "lines": lines, "interactions": len(book.rows) + len(helpdesk),
            "feedback_events": len(book.later_feedback), "resent": len(resent),
            "files": sorted([n for n, r in files.items() if r] + ["helpdesk-export-2025-02.csv", "knowledge.json"]),
            "rows": book.rows + helpdesk, "system_prompt": SYSTEM}


def _helpdesk_rows(rng: random.Random) -> list[dict[str, Any]]:
    """E-mail replies the old helpdesk drafted (prompt/response shape); staff edited some before sending."""
    rows = []
    clock = datetime(2025, 2, 3, 9, 0)
    system = "Draft a short, friendly e-mail reply for Cadence Cycles (Bristol bike workshop) to the customer's message."
    for _ in range(150):
        clock += timedelta(minutes=rng.uniform(30, 200))
        fact = rng.choice(FACTS)
        person = uk_person(rng)
        prompt = rng.choice([f"{vary(rng.choice(fact.questions), rng, GREETINGS, CLOSINGS, p_greeting=0.9)}\n\n{person['first']}",
                             f"{rng.choice(fact.questions)}\nThanks, {person['name']}\n{person['phone']}"])
        response = f"Hi {person['first']},\n\n{rng.choice(fact.answers)}\n\nBest wishes,\nCadence Cycles"
        roll = rng.random()
        feedback = ({"outcome": "accepted"} if roll < 0.6 else
                    {"outcome": "accepted_with_edits", "edit_ratio": round(rng.uniform(0.03, 0.3), 2)} if roll < 0.9 else
                    {"outcome": "rejected"})
        rows.append({"id": f"hd-{rng.getrandbits(40):010x}", "created_at": iso(clock), "org_id": "org-cadence-cycles",
                     "example_type": "support", "model": "gpt-4o-mini", "system": system, "prompt": prompt,
                     "response": response, "feedback": feedback,
                     "metadata": {"channel": "email", "ticket": f"T{rng.randrange(1000, 9999)}"}})
    return rows


def knowledge() -> dict[str, Any]:
    """The knowledge file the owner wrote from the shop's FAQ page (the demo's file format, this shop's content)."""
    return {
        "format": {"version": "1.0", "description": (
            "Cadence Cycles' knowledge file. 'prices' maps a price name to an amount in pounds sterling (GBP); "
            "'limits' holds the non-price numbers of the policies; 'menu_items' lists the workshop's services with "
            "aliases; 'not_offered' what customers ask for that the shop does not do; 'facts' are question/answer "
            "pairs from the FAQ page.")},
        "business": {"name": "Cadence Cycles", "org_id": "org-cadence-cycles",
                     "description": "Bike repair workshop and shop on Gloucester Road, Bristol.",
                     "website": "cadencecycles.example", "currency": "GBP",
                     "hours": "Mon-Fri 8:30am-6pm, Sat 9am-5pm, closed Sunday",
                     "service_area": {"region": "Bristol", "cities": ["Bishopston", "Horfield", "Redland",
                                                                       "Cotham", "St Andrews", "Montpelier"]},
                     "system_prompt": SYSTEM},
        "prices": {"basic_service": 45, "full_service": 95, "ebike_service": 75, "puncture_repair": 12,
                   "puncture_repair_with_tube": 18, "brake_pad_fitting_per_wheel": 15, "brake_pads_from": 12,
                   "wheel_true": 20, "spoke": 5, "collection_delivery_return": 20, "late_cancellation_fee": 10,
                   "storage_per_day": 2, "bike_fit": 120},
        "limits": {"turnaround_hours": 48, "collection_radius_miles": 5, "free_cancellation_hours": 24,
                   "free_storage_days": 14, "workmanship_guarantee_days": 30, "first_service_free_weeks": 6,
                   "parts_lead_time_working_days": "2-3", "bike_fit_hours": 2, "puncture_minutes": 30},
        "menu_items": [
            {"name": "Basic service", "category": "service", "included": False, "price": 45, "unit": "per bike",
             "aliases": ["basic service", "tune-up", "tune up"]},
            {"name": "Full service", "category": "service", "included": False, "price": 95, "unit": "per bike",
             "aliases": ["full service", "overhaul"]},
            {"name": "E-bike service", "category": "service", "included": False, "price": 75, "unit": "per bike",
             "aliases": ["e-bike service", "ebike service"]},
            {"name": "Puncture repair", "category": "repair", "included": False, "price": 12, "unit": "per wheel",
             "aliases": ["puncture", "flat tyre"]},
            {"name": "Wheel true", "category": "repair", "included": False, "price": 20, "unit": "per wheel",
             "aliases": ["wheel true", "truing"]},
            {"name": "Bike fit", "category": "service", "included": False, "price": 120, "unit": "per session",
             "aliases": ["bike fit", "bike fitting"]},
        ],
        "not_offered": ["Bike hire", "Second-hand bikes", "Motorbike repairs", "E-scooter repairs"],
        "facts": [{"id": f.id, "topic": f.topic, "fact": f.answers[0], "questions": f.questions[:4],
                   "answer": f.answers[0]} for f in FACTS],
    }

"""Valid-output checks: page JSON against page.json, tool calls against the offered tools, text answers."""

from __future__ import annotations

import copy
import json

import pytest

from homegrown.data.validity import check_output, validate_page, validate_tool_call
from homegrown.demo import generate

TOOLS = json.loads((generate.DEMO_DIR / "tools.json").read_text())

PAGE = {
    "version": "1.0",
    "metadata": {"title": "My Hibachi", "theme": {"primary_color": "#C0392B", "style": "bold"}},
    "sections": [
        {"type": "hero", "headline": "Hibachi at home", "cta": {"label": "Book", "href": "#book"}},
        {
            "type": "menu",
            "title": "Menu",
            "items": [{"name": "Chicken"}, {"name": "Filet Mignon", "price": 5}],
        },
        {
            "type": "pricing",
            "title": "Prices",
            "plans": [{"name": "Adult", "price": 60, "unit": "per person"}],
        },
        {"type": "faq", "items": [{"question": "Minimum?", "answer": "$600."}]},
        {"type": "booking_cta", "headline": "Ready?", "button_label": "Book now"},
    ],
}


def _page(mutate) -> dict:
    page = copy.deepcopy(PAGE)
    mutate(page)
    return page


def _call(name: str = "create_booking", arguments=None, **extra) -> dict:
    if arguments is None:
        arguments = {"date": "2026-03-14", "guests": 12, "location": "San Jose, CA"}
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": "call_1", "type": "function", "function": {"name": name, "arguments": args}, **extra}


def _chat(answer: str | None, tool_calls: list | None = None) -> list[dict]:
    assistant: dict = {"role": "assistant", "content": answer}
    if tool_calls is not None:
        assistant["tool_calls"] = tool_calls
    return [{"role": "user", "content": "hi"}, assistant]


def test_valid_page_has_no_errors():
    assert validate_page(PAGE) == []


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda p: p.pop("sections"), "'sections' is a required property"),
        (lambda p: p.update(version="2.0"), "version"),
        (lambda p: p.update(sections=[]), "sections"),
        (lambda p: p["sections"][0].pop("headline"), "sections/0: 'headline' is a required property"),
        (lambda p: p["sections"].append({"type": "carousel", "slides": []}), "sections/5/type"),
        (lambda p: p["sections"][2]["plans"][0].update(price="sixty"), "sections/2/plans/0/price"),
        (lambda p: p["sections"][1].update(items=[]), "sections/1/items"),
        (lambda p: p["metadata"]["theme"].update(primary_color="red"), "metadata/theme/primary_color"),
        (lambda p: p["sections"][0].update(headlnie="typo"), "Additional properties"),
        (lambda p: p["sections"][4].pop("button_label"), "button_label"),
    ],
)
def test_invalid_pages_are_reported_with_their_path(mutate, expected):
    errors = validate_page(_page(mutate))
    assert errors, "expected schema errors"
    assert any(expected in error for error in errors), errors


def test_validate_page_rejects_non_objects():
    assert validate_page([1, 2]) and validate_page("page")


def test_valid_tool_call():
    assert validate_tool_call(_call(), TOOLS) == []
    full = {
        "date": "2026-03-14",
        "time": "18:30",
        "guests": 12,
        "location": "Davis",
        "proteins": ["chicken", "steak"],
        "upgrades": ["lobster_tail"],
        "notes": "no shellfish for one guest",
    }
    assert validate_tool_call(_call(arguments=full), TOOLS) == []
    assert validate_tool_call(_call(arguments=json.loads(_call()["function"]["arguments"])), TOOLS) == []


@pytest.mark.parametrize(
    "call, tools, expected",
    [
        (_call(name="book_event"), TOOLS, "was not offered"),
        (_call(), None, "no tools were offered"),
        (_call(arguments='{"date": "2026-03-14", "guests": 12'), TOOLS, "not valid JSON"),
        (_call(arguments="[1, 2]"), TOOLS, "must be a JSON object"),
        (_call(arguments={"date": "2026-03-14", "guests": "twelve", "location": "Davis"}), TOOLS, "guests"),
        (_call(arguments={"date": "03/14/2026", "guests": 12, "location": "Davis"}), TOOLS, "date"),
        (
            _call(arguments={"date": "2026-02-30", "guests": 12, "location": "Davis"}),
            TOOLS,
            "is not a 'date'",
        ),
        (_call(arguments={"date": "2026-03-14", "guests": 12}), TOOLS, "'location' is a required property"),
        (_call(arguments={"date": "2026-03-14", "guests": 80, "location": "Davis"}), TOOLS, "guests"),
        (
            _call(arguments={"date": "2026-03-14", "guests": 8, "location": "Davis", "proteins": ["wagyu"]}),
            TOOLS,
            "proteins/0",
        ),
        (
            _call(arguments={"date": "2026-03-14", "guests": 8, "location": "Davis", "deposit": 100}),
            TOOLS,
            "Additional properties",
        ),
        (_call(type="code_interpreter"), TOOLS, "unsupported tool call type"),
        ({"id": "x", "type": "function"}, TOOLS, "no 'function' object"),
        ("create_booking()", TOOLS, "must be an object"),
    ],
)
def test_invalid_tool_calls(call, tools, expected):
    errors = validate_tool_call(call, tools)
    assert errors
    assert any(expected in error for error in errors), errors


@pytest.mark.parametrize(
    "example_type, messages, tools, valid, reason",
    [
        ("faq", _chat("Our price is $60 per adult."), None, True, "non-empty text"),
        ("chat", _chat("   "), None, False, "empty answer"),
        ("faq", _chat(None), None, False, "empty answer"),
        ("faq", _chat("Error: upstream model timed out"), None, False, "error message"),
        ("support", _chat("Internal Server Error"), None, False, "error message"),
        ("faq", _chat("I'm sorry, I can't help with that."), None, False, "only a refusal"),
        ("faq", _chat("Sorry, but I cannot assist with that request."), None, False, "only a refusal"),
        (
            "faq",
            _chat("I can't quote wagyu, but filet mignon is +$5 per person."),
            None,
            True,
            "non-empty text",
        ),
        ("faq", [{"role": "user", "content": "hello?"}], None, False, "last message is from 'user'"),
        ("faq", [], None, False, "no messages"),
        ("page_generation", _chat(json.dumps(PAGE)), None, True, "valid page JSON with 5 section(s)"),
        ("page_generation", _chat("```json\n" + json.dumps(PAGE) + "\n```"), None, True, "valid page JSON"),
        ("page_generation", _chat(json.dumps(PAGE)[:-20]), None, False, "not valid JSON"),
        ("page_generation", _chat("Here is your page: a hero and a menu."), None, False, "not valid JSON"),
        (
            "page_generation",
            _chat(json.dumps(_page(lambda p: p["sections"][0].pop("headline")))),
            None,
            False,
            "does not fit page.json",
        ),
        ("page_generation", _chat(""), None, False, "expected page JSON"),
        ("tool_invocation", _chat("", [_call()]), TOOLS, True, "valid tool call (create_booking)"),
        (
            "tool_invocation",
            _chat(None, [_call(), _call("check_availability", {"date": "2026-03-14"})]),
            TOOLS,
            True,
            "create_booking, check_availability",
        ),
        ("tool_invocation", _chat("", [_call()]), None, False, "no tools were offered"),
        ("tool_invocation", _chat("Booked!"), TOOLS, False, "no tool call"),
        (
            "tool_invocation",
            _chat("", [_call(arguments={"date": "tomorrow", "guests": 4, "location": "Davis"})]),
            TOOLS,
            False,
            "invalid tool call",
        ),
        ("faq", _chat("", [_call(name="refund")]), TOOLS, False, "was not offered"),
    ],
)
def test_check_output(example_type, messages, tools, valid, reason):
    got_valid, got_reason = check_output(example_type, messages, tools)
    assert got_valid is valid
    assert reason in got_reason


def test_tool_invocation_followed_by_tool_result_and_text():
    messages = [
        {"role": "user", "content": "Book 12 guests on 2026-03-14 in San Jose"},
        {"role": "assistant", "content": "", "tool_calls": [_call()]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"booking_id": "BK-1"}'},
        {"role": "assistant", "content": "You're booked for March 14!"},
    ]
    assert check_output("tool_invocation", messages, TOOLS) == (
        True,
        "valid tool call (create_booking) and a text answer",
    )
    messages[-1]["content"] = ""
    assert check_output("tool_invocation", messages, TOOLS) == (False, "empty answer")
    messages[1]["tool_calls"] = [_call(arguments={"guests": 12})]
    valid, reason = check_output("tool_invocation", messages, TOOLS)
    assert not valid and "'date' is a required property" in reason

"""Routing decisions and the unusable-answer check: pure functions, no model."""

from __future__ import annotations

import pytest

from homegrown.gateway.routing import (
    CHALLENGER,
    CHAMPION,
    NoRouteError,
    RouteDecision,
    canary_bucket,
    choose_route,
    fallback_chain,
    is_unusable,
    matched_keyword,
)
from homegrown.gateway.settings import FALLBACK, GatewaySettings

ALL = (CHAMPION, CHALLENGER, FALLBACK)
LOCAL = (CHAMPION, CHALLENGER)


def make_settings(**overrides) -> GatewaySettings:
    base = {
        "api_keys": ["k"],
        "log_db_url": "sqlite:////nonexistent/never-opened.sqlite",
        "models_file": "/nonexistent/models.json",
    }
    if overrides.get("default_role") == FALLBACK or overrides.pop("with_fallback", False):
        base.update(fallback_base_url="http://127.0.0.1:9/v1", fallback_model="premium")
    return GatewaySettings(**base, **overrides)


def key_in_bucket(below: float, above: float = 0.0) -> str:
    """A request id whose canary bucket lies in [above, below)."""
    for i in range(10_000):
        key = f"conv-{i}"
        if above <= canary_bucket(key) < below:
            return key
    raise AssertionError("no key found")


def test_canary_bucket_is_stable_and_in_range():
    values = [canary_bucket(f"id-{i}") for i in range(2000)]
    assert values == [canary_bucket(f"id-{i}") for i in range(2000)]
    assert all(0.0 <= v < 1.0 for v in values)
    share = sum(v < 0.2 for v in values) / len(values)
    assert 0.16 < share < 0.24


LOW = key_in_bucket(0.05)
HIGH = key_in_bucket(1.0, above=0.95)


@pytest.mark.parametrize(
    ("overrides", "available", "request_id", "prompt", "pinned", "expected"),
    [
        ({}, ALL, LOW, "hi", None, RouteDecision(CHAMPION, None, "champion")),
        ({"canary_share": 0.5}, ALL, LOW, "hi", None, RouteDecision(CHALLENGER, None, "canary")),
        ({"canary_share": 0.5}, ALL, HIGH, "hi", None, RouteDecision(CHAMPION, None, "champion")),
        ({"canary_share": 1.0}, (CHAMPION,), LOW, "hi", None, RouteDecision(CHAMPION, None, "champion")),
        (
            {"canary_share": 0.5, "shadow": True},
            ALL,
            LOW,
            "hi",
            None,
            RouteDecision(CHALLENGER, CHAMPION, "canary"),
        ),
        ({"shadow": True}, ALL, HIGH, "hi", None, RouteDecision(CHAMPION, CHALLENGER, "champion")),
        ({"shadow": True}, (CHAMPION, FALLBACK), HIGH, "hi", None, RouteDecision(CHAMPION, None, "champion")),
        (
            {"premium_keywords": ["refund"]},
            ALL,
            HIGH,
            "I want a Refund now",
            None,
            RouteDecision(FALLBACK, None, "rule:keyword:refund"),
        ),
        (
            {"premium_keywords": ["refund"]},
            ALL,
            HIGH,
            "refunded already",
            None,
            RouteDecision(CHAMPION, None, "champion"),
        ),
        (
            {"premium_keywords": ["refund"]},
            LOCAL,
            HIGH,
            "refund",
            None,
            RouteDecision(CHAMPION, None, "champion"),
        ),
        (
            {"premium_min_prompt_chars": 10},
            ALL,
            HIGH,
            "x" * 10,
            None,
            RouteDecision(FALLBACK, None, "rule:long_prompt"),
        ),
        (
            {"premium_min_prompt_chars": 10},
            ALL,
            HIGH,
            "x" * 9,
            None,
            RouteDecision(CHAMPION, None, "champion"),
        ),
        (
            {"default_role": FALLBACK, "shadow": True},
            ALL,
            HIGH,
            "hi",
            None,
            RouteDecision(FALLBACK, CHAMPION, "default:fallback"),
        ),
        (
            {"shadow": True, "premium_keywords": ["refund"]},
            (CHALLENGER, FALLBACK),
            HIGH,
            "refund",
            None,
            RouteDecision(FALLBACK, CHALLENGER, "rule:keyword:refund"),
        ),
        ({}, (CHALLENGER, FALLBACK), HIGH, "hi", None, RouteDecision(CHALLENGER, None, "no_champion")),
        ({}, (FALLBACK,), HIGH, "hi", None, RouteDecision(FALLBACK, None, "no_local_model")),
        (
            {"premium_keywords": ["refund"]},
            ALL,
            HIGH,
            "refund",
            CHALLENGER,
            RouteDecision(CHALLENGER, None, "pinned:challenger"),
        ),
    ],
)
def test_choose_route(overrides, available, request_id, prompt, pinned, expected):
    assert (
        choose_route(
            request_id,
            make_settings(with_fallback=True, **overrides),
            available,
            prompt=prompt,
            pinned=pinned,
        )
        == expected
    )


@pytest.mark.parametrize(("available", "pinned"), [((), None), ((CHAMPION,), CHALLENGER)])
def test_choose_route_without_a_backend_raises(available, pinned):
    with pytest.raises(NoRouteError):
        choose_route("id", make_settings(), available, pinned=pinned)


@pytest.mark.parametrize(
    ("primary", "available", "expected"),
    [
        (CHAMPION, ALL, [CHAMPION, FALLBACK]),
        (CHALLENGER, LOCAL, [CHALLENGER]),
        (FALLBACK, ALL, [FALLBACK, CHAMPION]),
        (FALLBACK, (FALLBACK,), [FALLBACK]),
    ],
)
def test_fallback_chain(primary, available, expected):
    assert fallback_chain(RouteDecision(primary, None, "x"), available) == expected


@pytest.mark.parametrize(
    ("prompt", "keywords", "expected"),
    [
        ("Can I get a REFUND?", ["refund"], "refund"),
        ("what about legal advice", ["legal advice"], "legal advice"),
        ("refunds", ["refund"], None),
        ("anything", [], None),
    ],
)
def test_matched_keyword(prompt, keywords, expected):
    assert matched_keyword(prompt, keywords) == expected


@pytest.mark.parametrize(
    ("text", "finish_reason", "asked", "expected"),
    [
        ("Yes, we are open from 10am to 10pm.", "stop", False, None),
        (
            "I'm sorry, we don't serve wagyu. Our premium options are filet mignon and lobster.",
            "stop",
            False,
            None,
        ),
        ("| a | b |\n|---|---|\n" + "-" * 40, "stop", False, None),
        ("Monday 10am. Tuesday 11am. Wednesday noon. Thursday 1pm. Friday 2pm.", "stop", False, None),
        ("", "stop", False, "empty"),
        ("   \n ", "stop", False, "empty"),
        (None, "stop", False, "empty"),
        ("", "tool_calls", False, None),
        ("We are open from", "length", False, "truncated"),
        ("We are open from", "length", True, None),
        ("the the the the the " * 6, "stop", False, "repetition"),
        ("Book now! " * 8, "stop", False, "repetition"),
        (
            "I love hibachi and I love hibachi and I love hibachi and I love hibachi and " * 2,
            "stop",
            False,
            "repetition",
        ),
        ("As an AI language model, I have no opinion on menus.", "stop", False, "refusal"),
        ("I'm sorry, but I can't help with that.", "stop", False, "refusal"),
        ("I cannot assist with that request.", "stop", False, "refusal"),
    ],
)
def test_is_unusable(text, finish_reason, asked, expected):
    assert is_unusable(text, finish_reason, max_tokens_requested=asked) == expected


# -- specialists ---------------------------------------------------------------------------------------------

from homegrown.gateway.settings import SPECIALIST


def test_declared_type_with_an_adapter_goes_to_the_specialist():
    roles = (CHAMPION, SPECIALIST)
    decision = choose_route("c1", make_settings(), roles, example_type="faq", specialist_types=["faq"])
    assert (decision.primary, decision.reason) == (SPECIALIST, "specialist:faq")
    assert fallback_chain(decision, roles) == [SPECIALIST, CHAMPION]  # the general model first
    assert fallback_chain(decision, (*roles, FALLBACK)) == [SPECIALIST, CHAMPION, FALLBACK]
    for example_type in ("support", None, ""):
        assert choose_route("c1", make_settings(), roles, example_type=example_type,
                            specialist_types=["faq"]).primary == CHAMPION
    # Without the specialist role loaded, its types mean nothing.
    assert choose_route("c1", make_settings(), (CHAMPION,), example_type="faq",
                        specialist_types=["faq"]).primary == CHAMPION


def test_specialist_yields_to_pins_rules_and_default_fallback_but_not_to_the_canary():
    roles = (CHAMPION, CHALLENGER, SPECIALIST, FALLBACK)
    kwargs = {"example_type": "faq", "specialist_types": ["faq"]}
    assert choose_route("c1", make_settings(with_fallback=True), roles, pinned=CHAMPION, **kwargs).primary == CHAMPION
    assert choose_route("c1", make_settings(premium_keywords=["refund"], with_fallback=True), roles,
                        prompt="a refund please", **kwargs).primary == FALLBACK
    assert choose_route("c1", make_settings(default_role=FALLBACK), roles, **kwargs).primary == FALLBACK
    everyone = make_settings(canary_share=1.0, with_fallback=True)
    assert choose_route("c1", everyone, roles, **kwargs).primary == SPECIALIST
    shadowed = choose_route("c1", make_settings(shadow=True, with_fallback=True), roles, **kwargs)
    assert (shadowed.primary, shadowed.shadow) == (SPECIALIST, CHAMPION)


def test_only_specialists_loaded_and_no_fallback_is_no_route():
    with pytest.raises(NoRouteError, match="no general model"):
        choose_route("c1", make_settings(), (SPECIALIST,), example_type="support", specialist_types=["faq"])

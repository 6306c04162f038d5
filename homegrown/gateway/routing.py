"""Routing decisions, as pure functions: which backend answers, which runs in shadow, when to fall back.

Roles: "champion" (the deployed model), "challenger" (the candidate: canary share or shadow) and
"fallback" (the premium OpenAI-compatible API).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection
from dataclasses import dataclass

from homegrown.gateway.settings import FALLBACK, SPECIALIST, GatewaySettings

CHAMPION = "champion"
CHALLENGER = "challenger"


class NoRouteError(LookupError):
    """No backend can take the request."""


@dataclass(frozen=True)
class RouteDecision:
    """``primary`` answers; ``shadow`` (if any) answers too, is logged, and is never returned."""

    primary: str
    shadow: str | None
    reason: str


def canary_bucket(key: str) -> float:
    """A stable number in [0, 1) for ``key``: the same key always lands in the same bucket."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def matched_keyword(prompt: str, keywords: Collection[str]) -> str | None:
    """The first configured keyword that occurs in ``prompt`` as a whole word (case-insensitive)."""
    lowered = prompt.lower()
    for keyword in keywords:
        if keyword and re.search(rf"(?<!\w){re.escape(keyword.lower())}(?!\w)", lowered):
            return keyword
    return None


def choose_route(
    request_id: str,
    settings: GatewaySettings,
    available: Collection[str],
    *,
    prompt: str = "",
    pinned: str | None = None,
    example_type: str | None = None,
    specialist_types: Collection[str] = (),
) -> RouteDecision:
    """Decide which role answers a request.

    ``request_id`` is the key of the canary split; pass the conversation id so that a whole conversation
    stays on one model. In order: a ``pinned`` role (the request named a model); the rule router (a
    configured keyword, or a prompt of at least ``premium_min_prompt_chars``) sends to the premium API;
    ``default_role=fallback`` sends there too; a request whose ``example_type`` is one of
    ``specialist_types`` goes to the specialist (one base with an adapter per type; the caller passes a type
    only when the request declared one or offered tools, so undeclared traffic stays with the champion and a
    staged rollout); otherwise the canary share goes to the challenger and the rest to the champion. With ``shadow`` on, a second model answers beside the primary: the challenger
    beside the champion, the champion beside the challenger or the premium API.

    ``settings.canary_share`` and ``settings.shadow`` are the live values: ``models.json`` overrides the
    environment's on every load and reload (:meth:`BackendPool.apply_traffic`), which is how a staged
    rollout moves the share (``homegrown.rollout``). A share of 1 sends every unpinned request to the
    challenger.
    """
    roles = set(available)
    if not roles:
        raise NoRouteError("no model is loaded and no fallback API is configured")
    primary: str
    if pinned is not None:
        if pinned not in roles:
            raise NoRouteError(f"the {pinned} model is not loaded")
        primary, reason = pinned, f"pinned:{pinned}"
    elif FALLBACK in roles and (keyword := matched_keyword(prompt, settings.premium_keywords)):
        primary, reason = FALLBACK, f"rule:keyword:{keyword}"
    elif (
        FALLBACK in roles
        and settings.premium_min_prompt_chars is not None
        and len(prompt) >= settings.premium_min_prompt_chars
    ):
        primary, reason = FALLBACK, "rule:long_prompt"
    elif settings.default_role == FALLBACK and FALLBACK in roles:
        primary, reason = FALLBACK, "default:fallback"
    elif SPECIALIST in roles and example_type and example_type in specialist_types:
        primary, reason = SPECIALIST, f"specialist:{example_type}"
    elif (
        CHALLENGER in roles
        and settings.canary_share > 0
        and canary_bucket(request_id) < settings.canary_share
    ):
        primary, reason = CHALLENGER, "canary"
    elif CHAMPION in roles:
        primary, reason = CHAMPION, "champion"
    elif CHALLENGER in roles:
        primary, reason = CHALLENGER, "no_champion"
    elif FALLBACK in roles:
        primary, reason = FALLBACK, "no_local_model"
    else:
        raise NoRouteError("no general model is loaded for this request (only specialists of other types) and "
                           "no fallback API is configured")

    shadow: str | None = None
    if settings.shadow:
        if primary == CHAMPION:
            candidates = [CHALLENGER]
        elif primary in (CHALLENGER, SPECIALIST):
            candidates = [CHAMPION]
        else:
            candidates = [CHAMPION, CHALLENGER]
        shadow = next((role for role in candidates if role in roles), None)
    return RouteDecision(primary=primary, shadow=shadow, reason=reason)


def fallback_chain(decision: RouteDecision, available: Collection[str]) -> list[str]:
    """The roles to try in order: the primary, then the premium API, and the champion behind the premium API.

    A specialist that fails falls back to the general champion first (the model that answers without
    specialists), then to the premium API.
    """
    chain = [decision.primary]
    if decision.primary == SPECIALIST and CHAMPION in available:
        chain.append(CHAMPION)
    if decision.primary != FALLBACK and FALLBACK in available:
        chain.append(FALLBACK)
    elif decision.primary == FALLBACK and CHAMPION in available:
        chain.append(CHAMPION)
    return chain


REFUSAL_PATTERNS = (
    r"\bas an ai(?: language)? model\b",
    r"\bi(?:'m| am) (?:sorry|afraid),? but i (?:can(?:no|')t|am unable to|'m unable to|won't)\b",
    r"^\s*i (?:can(?:no|')t|am unable to|'m unable to|won't) (?:help|assist|answer|provide|do that|comply)\b",
)
_REFUSALS = [re.compile(pattern, re.IGNORECASE) for pattern in REFUSAL_PATTERNS]
# A chunk of 4..200 characters repeated at least 5 times in a row: a generation loop.
_LOOP = re.compile(r"(.{4,200}?)\1{4,}", re.DOTALL)


def is_unusable(
    answer_text: str | None, finish_reason: str | None, *, max_tokens_requested: bool = False
) -> str | None:
    """Why an answer should not be returned (the gateway then asks the premium API), or None if it is usable.

    Reasons: ``empty``; ``truncated`` (stopped at the token limit the client did not ask for);
    ``repetition`` (the model looped); ``refusal`` (a canned refusal near the start).
    """
    if finish_reason == "tool_calls":
        return None
    text = answer_text or ""
    if not text.strip():
        return "empty"
    if finish_reason == "length" and not max_tokens_requested:
        return "truncated"
    if _is_loop(text):
        return "repetition"
    head = text[:300]
    if any(pattern.search(head) for pattern in _REFUSALS):
        return "refusal"
    return None


def _is_loop(text: str) -> bool:
    for match in _LOOP.finditer(text[-4000:]):
        if any(ch.isalnum() for ch in match.group(1)):
            return True
    words = text.lower().split()
    if len(words) >= 24:
        trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
        if len(set(trigrams)) / len(trigrams) < 0.35:
            return True
    return False

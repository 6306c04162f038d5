"""What the gateway decides itself rather than taking from the caller: the example type of a logged answer.

A caller may say what kind of request it sends (``X-Example-Type`` or ``metadata.example_type``), but that
label picks the validity check and the stratum of the split, so it is a hint the server checks: a request
that offers tools is ``tool_invocation`` whatever it says, a known label is taken, anything else is ``chat``.
"""

from __future__ import annotations

from typing import Any

EXAMPLE_TYPES = ("faq", "support", "page_generation", "tool_invocation", "design_choice", "section_edit", "chat")


def example_type_for(hint: str | None, tools: list[Any] | None) -> str:
    """The example type the server records for a request with this caller ``hint`` and these ``tools``."""
    if tools:
        return "tool_invocation"
    if hint in EXAMPLE_TYPES and hint != "tool_invocation":
        return hint
    return "chat"

"""Request limits: what a chat request may carry before any model sees it.

Each limit is a ``HOMEGROWN_*`` setting (see :class:`~homegrown.gateway.settings.GatewaySettings`); a
request over one gets 400 with a message naming the field and the limit. The JSON schemas a request brings
(``response_format`` and tool parameters) are also checked for what would make llama.cpp's grammar
compiler blow up (:mod:`homegrown.gateway.grammar_limits`), so a hostile schema is refused here instead of
taking the model worker down.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from homegrown.gateway.schemas import ChatCompletionRequest
from homegrown.gateway.settings import GatewaySettings


@dataclass
class LimitExceeded(Exception):
    message: str
    param: str
    code: str = "limit_exceeded"

    def __str__(self) -> str:
        return self.message


def _size(value: object) -> int:
    return len(json.dumps(value, ensure_ascii=False, default=str).encode("utf-8"))


def check_request(body: ChatCompletionRequest, settings: GatewaySettings) -> None:
    """Raise :class:`LimitExceeded` for the first limit ``body`` breaks."""
    s = settings
    if len(body.messages) > s.max_messages:
        raise LimitExceeded(f"at most {s.max_messages} messages per request, got {len(body.messages)}", "messages")
    total = 0
    for index, message in enumerate(body.messages):
        chars = len(message.text())
        if message.tool_calls:
            chars += _size(message.tool_calls)
        if chars > s.max_message_chars:
            raise LimitExceeded(
                f"messages[{index}] has {chars} characters; at most {s.max_message_chars} per message",
                f"messages[{index}].content")
        total += chars
    if total > s.max_prompt_chars:
        raise LimitExceeded(f"the messages have {total} characters; at most {s.max_prompt_chars} in all", "messages")

    for name in ("max_tokens", "max_completion_tokens"):
        value = getattr(body, name)
        if value is not None and value > s.max_tokens_limit:
            raise LimitExceeded(f"{name} must be at most {s.max_tokens_limit}", name, "invalid_value")

    for stop in body.stop_list():
        if len(stop) > s.max_stop_chars:
            raise LimitExceeded(f"each stop sequence may have at most {s.max_stop_chars} characters", "stop")

    if body.metadata:
        if len(body.metadata) > s.max_metadata_keys:
            raise LimitExceeded(f"metadata may have at most {s.max_metadata_keys} keys", "metadata")
        if _size(body.metadata) > s.max_metadata_bytes:
            raise LimitExceeded(f"metadata may take at most {s.max_metadata_bytes} bytes as JSON", "metadata")

    tools = body.tools or []
    if len(tools) > s.max_tools:
        raise LimitExceeded(f"at most {s.max_tools} tools per request, got {len(tools)}", "tools")
    for index, tool in enumerate(tools):
        if _size(tool) > s.max_tool_schema_bytes:
            raise LimitExceeded(
                f"tools[{index}] takes more than {s.max_tool_schema_bytes} bytes as JSON", f"tools[{index}]")

    from homegrown.gateway.grammar_limits import SchemaTooComplex, check_response_format, check_tools

    try:
        check_response_format(body.response_format.to_openai() if body.response_format else None)
    except SchemaTooComplex as exc:
        raise LimitExceeded(str(exc), "response_format", "schema_too_complex") from exc
    try:
        check_tools(body.tools)
    except SchemaTooComplex as exc:
        raise LimitExceeded(str(exc), "tools", "schema_too_complex") from exc

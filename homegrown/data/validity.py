"""Is an assistant answer a valid output for its task? The "valid output" part of the quality score.

- ``page_generation``: the answer is JSON that fits ``homegrown/schemas/page.json``.
- ``tool_invocation``: the answer's ``tool_calls`` name a tool that was offered and their arguments
  fit that tool's ``parameters`` JSON Schema.
- every other type: a non-empty text answer that is not an error message or a bare refusal.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError, ValidationError

PAGE_SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "page.json"

_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n(.*?)\n?```\s*$", re.DOTALL)
_ERROR_ANSWER = re.compile(
    r"^\s*(error\b|exception\b|traceback \(most recent call last\)|internal server error|"
    r"rate limit|request timed out|\{\s*\"error\")",
    re.IGNORECASE,
)
_REFUSAL = re.compile(
    r"^\s*(i'?m sorry|i am sorry|sorry|i apologi[sz]e|unfortunately)?[,.!\s]*"
    r"(but\s+)?(i\s+)?(can(?:'|no)?t|cannot|am unable to|am not able to|won'?t)\s+"
    r"(help|assist|answer|do that|provide|comply)",
    re.IGNORECASE,
)
# A refusal followed by real content (an alternative, a number) is an answer, not a bare refusal.
_BARE_REFUSAL_MAX_CHARS = 160
_REFUSAL_ALTERNATIVE = re.compile(r"\bbut\b|\bhowever\b|\binstead\b|\d", re.IGNORECASE)


@lru_cache(maxsize=1)
def page_schema() -> dict[str, Any]:
    """The project's page schema (``schemas/page.json``), read once; do not modify the returned dict."""
    return json.loads(PAGE_SCHEMA_PATH.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _page_validator() -> Draft202012Validator:
    return Draft202012Validator(page_schema(), format_checker=FormatChecker())


def _format_error(error: ValidationError) -> str:
    where = "/".join(str(part) for part in error.absolute_path) or "(root)"
    return f"{where}: {error.message}"


def validate_page(obj: Any) -> list[str]:
    """Schema errors of a page-builder page (a parsed JSON value); ``[]`` when it fits ``page.json``."""
    errors = sorted(_page_validator().iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    return [_format_error(error) for error in errors]


def _offered_functions(tools: list | None) -> dict[str, dict]:
    """Map tool name -> parameters schema for the OpenAI tool schemas offered in a turn."""
    offered: dict[str, dict] = {}
    for tool in tools or []:
        if not isinstance(tool, dict):
            continue
        function = tool.get("function") if tool.get("type", "function") == "function" else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            offered[function["name"]] = function.get("parameters") or {"type": "object"}
    return offered


def validate_tool_call(call: Any, tools: list | None) -> list[str]:
    """Errors of one OpenAI-shaped tool call against the offered tools; ``[]`` when it is valid.

    ``call`` is ``{"id", "type": "function", "function": {"name", "arguments"}}`` where ``arguments``
    is a JSON string (as OpenAI sends it) or an already parsed object.
    """
    if not isinstance(call, dict):
        return [f"tool call must be an object, got {type(call).__name__}"]
    if call.get("type", "function") != "function":
        return [f"unsupported tool call type {call.get('type')!r}; only 'function' is supported"]
    function = call.get("function")
    if not isinstance(function, dict):
        return ["tool call has no 'function' object"]
    name = function.get("name")
    offered = _offered_functions(tools)
    if not offered:
        return [f"tool {name!r} was called but no tools were offered"]
    if name not in offered:
        return [f"tool {name!r} was not offered (offered: {', '.join(sorted(offered))})"]

    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            return [f"{name}: arguments are not valid JSON ({exc.msg} at char {exc.pos})"]
    if not isinstance(arguments, dict):
        return [f"{name}: arguments must be a JSON object, got {type(arguments).__name__}"]

    try:
        validator = Draft202012Validator(offered[name], format_checker=FormatChecker())
        errors = sorted(validator.iter_errors(arguments), key=lambda e: list(map(str, e.absolute_path)))
    except SchemaError as exc:
        return [f"{name}: the offered parameters schema is invalid: {exc.message}"]
    return [f"{name}: {_format_error(error)}" for error in errors]


def _strip_fence(text: str) -> str:
    """The content of a single markdown code block around the whole answer, else the text itself."""
    match = _FENCE.match(text)
    return match.group(1) if match else text


def _text_problem(text: str) -> str | None:
    stripped = text.strip()
    if not stripped:
        return "empty answer"
    if _ERROR_ANSWER.match(stripped):
        return "the answer is an error message"
    refusal = _REFUSAL.match(stripped)
    if (
        refusal
        and len(stripped) <= _BARE_REFUSAL_MAX_CHARS
        and not _REFUSAL_ALTERNATIVE.search(stripped[refusal.end() :])
    ):
        return "the answer is only a refusal"
    return None


def _check_tool_calls(calls: list, tools: list | None) -> tuple[bool, str]:
    problems: list[str] = []
    for call in calls:
        problems.extend(validate_tool_call(call, tools))
    if problems:
        return False, "invalid tool call: " + "; ".join(problems)
    names = ", ".join(str((call.get("function") or {}).get("name")) for call in calls)
    return True, f"valid tool call ({names})"


def check_output(example_type: str, messages: list[dict], tools: list | None) -> tuple[bool, str]:
    """Whether the conversation's final assistant answer is a valid output for ``example_type``.

    Returns ``(valid, reason)`` with a human-readable reason either way.
    """
    if not messages:
        return False, "no messages"
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "assistant":
        role = last.get("role") if isinstance(last, dict) else type(last).__name__
        return False, f"the last message is from {role!r}, not the assistant"
    content = last.get("content")
    text = content if isinstance(content, str) else ""
    calls = last.get("tool_calls") or []

    if example_type == "page_generation":
        if not text.strip():
            return False, "empty answer, expected page JSON"
        try:
            page = json.loads(_strip_fence(text))
        except json.JSONDecodeError as exc:
            return False, f"the answer is not valid JSON ({exc.msg} at char {exc.pos})"
        errors = validate_page(page)
        if errors:
            shown = "; ".join(errors[:3]) + (f" (+{len(errors) - 3} more)" if len(errors) > 3 else "")
            return False, f"the page does not fit page.json: {shown}"
        return True, f"valid page JSON with {len(page['sections'])} section(s)"

    if example_type == "tool_invocation":
        if calls:
            return _check_tool_calls(calls, tools)
        # The call may sit in an earlier assistant turn of this exchange, followed by the tool's
        # result and a closing text answer.
        for message in reversed(messages[:-1]):
            if message.get("role") == "user":
                break
            if message.get("role") == "assistant" and message.get("tool_calls"):
                valid, reason = _check_tool_calls(message["tool_calls"], tools)
                if not valid:
                    return valid, reason
                problem = _text_problem(text)
                return (False, problem) if problem else (True, reason + " and a text answer")
        return False, "no tool call in the assistant answer"

    if calls:
        return _check_tool_calls(calls, tools)
    problem = _text_problem(text)
    if problem:
        return False, problem
    return True, "non-empty text answer"

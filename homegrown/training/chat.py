"""How an OpenAI-format conversation becomes the plain chat text the model is trained on and answers in.

The SmolLM2 chat template only renders ``role`` + string ``content``: it knows nothing of tool schemas or
``tool_calls``. So tools are described in the system message and a tool call is written into the assistant
text as ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``. Training, evaluation and serving all
go through :func:`to_training_messages` (and serving back through :func:`parse_tool_calls`), so the model
sees the same text at every stage.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

ROLES = ("system", "user", "assistant", "tool")
TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
_TOOL_CALL_RE = re.compile(re.escape(TOOL_CALL_OPEN) + r"\s*(.*?)\s*" + re.escape(TOOL_CALL_CLOSE), re.DOTALL)

TOOLS_PREAMBLE = (
    "You can call the following tools. To call one, answer with "
    '<tool_call>{"name": "<tool name>", "arguments": {<arguments as JSON>}}</tool_call>'
)
# Schema keywords that only constrain the form of a value: the serving grammar enforces them, so the prompt
# leaves them out (``format`` stays: "date" tells the model what to write).
_FORM_ONLY = ("pattern", "minLength", "maxLength", "uniqueItems", "additionalProperties", "minItems", "maxItems")


def _text(content: Any, where: str) -> str:
    """Message content as one string: a string, None (empty), or OpenAI text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise ValueError(f"{where}: only text content parts are supported, got {part!r}")
            texts.append(part["text"])
        return "".join(texts)
    raise ValueError(
        f"{where}: content must be a string, null or a list of text parts, got {type(content).__name__}"
    )


def render_tool_call(call: dict[str, Any]) -> str:
    """One OpenAI ``tool_calls`` entry as ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise ValueError(f"tool call needs function.name, got {call!r}")
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"tool call {function['name']!r}: arguments are not valid JSON: {exc}") from exc
    if not isinstance(arguments, dict):
        raise ValueError(f"tool call {function['name']!r}: arguments must be an object, got {arguments!r}")  # noqa: TRY004
    body = json.dumps({"name": function["name"], "arguments": arguments}, ensure_ascii=False)
    return f"{TOOL_CALL_OPEN}{body}{TOOL_CALL_CLOSE}"


def describe_type(schema: Any) -> str:
    """A JSON schema in a few words: ``integer 1-50``, ``list of chicken|steak``, ``{name: string, size?: integer}``.

    Used for the tool descriptions in the system prompt, which the model reads at every call: the compact
    form costs about half the tokens of the schema as JSON and keeps what the model needs to fill the
    arguments (types, required keys, allowed values, ranges, formats); the serving grammar enforces the
    rest. A schema this does not know (``$ref``, ``not``) is written as JSON without the form-only keywords.
    """
    if not isinstance(schema, dict):
        return json.dumps(schema, ensure_ascii=False)
    if "enum" in schema and isinstance(schema["enum"], list):
        return "|".join(v if isinstance(v, str) else json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"], ensure_ascii=False)
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            return " or ".join(describe_type(option) for option in schema[key])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(describe_type({**schema, "type": k}) for k in kind)
    if kind == "array":
        return f"list of {describe_type(schema.get('items', {}))}"
    if kind == "object" or "properties" in schema:
        required = set(schema.get("required") or [])
        fields = [f"{name}{'' if name in required else '?'}: {describe_type(sub)}"
                  for name, sub in (schema.get("properties") or {}).items()]
        return "{" + ", ".join(fields) + "}" if fields else "object"
    if kind in ("integer", "number"):
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and high is not None:
            return f"{kind} {low}-{high}"
        if low is not None or high is not None:
            return f"{kind} {'>=' if low is not None else '<='} {low if low is not None else high}"
        return kind
    if kind in ("string", "boolean", "null"):
        return str(schema["format"]) if kind == "string" and schema.get("format") else kind
    return json.dumps({k: v for k, v in schema.items() if k not in _FORM_ONLY and k != "description"},
                      ensure_ascii=False, sort_keys=True)


def render_tools(tools: list[dict[str, Any]]) -> str:
    """The system-prompt block that describes the offered tools: per tool a line ``- name: description``,
    then one line per argument ``  name (type, required): description``."""
    lines = [TOOLS_PREAMBLE, "<tools>"]
    for tool in tools:
        if not isinstance(tool, dict):
            raise ValueError(f"a tool schema must be an object, got {tool!r}")  # noqa: TRY004
        function = tool.get("function", tool)
        if not isinstance(function, dict):
            raise ValueError(f"a tool's function must be an object, got {function!r}")  # noqa: TRY004
        description = " ".join(str(function.get("description") or "").split())
        lines.append(f"- {function.get('name')}" + (f": {description}" if description else ""))
        parameters = function.get("parameters") if isinstance(function.get("parameters"), dict) else {}
        required = set(parameters.get("required") or [])
        for name, sub in (parameters.get("properties") or {}).items():
            note = " ".join(str(sub.get("description") or "").split()) if isinstance(sub, dict) else ""
            flag = ", required" if name in required else ""
            lines.append(f"  {name} ({describe_type(sub)}{flag})" + (f": {note}" if note else ""))
    lines.append("</tools>")
    return "\n".join(lines)


def to_training_messages(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
) -> list[dict[str, str]]:
    """OpenAI chat messages (+ tool schemas) as ``[{"role", "content": str}]`` the chat template can render.

    Assistant ``tool_calls`` become ``<tool_call>`` JSON lines after the assistant's text, tool schemas are
    appended to the system message (one is added when there is none), and extra keys (``name``,
    ``tool_call_id``) are dropped. Raises ValueError on an unknown role or malformed content.
    """
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list")
    out: list[dict[str, str]] = []
    for i, message in enumerate(messages):
        where = f"message {i}"
        if not isinstance(message, dict):
            raise ValueError(f"{where}: must be an object, got {type(message).__name__}")  # noqa: TRY004
        role = message.get("role")
        if role not in ROLES:
            raise ValueError(f"{where}: role must be one of {ROLES}, got {role!r}")
        text = _text(message.get("content"), where)
        calls = message.get("tool_calls") or []
        if calls and role != "assistant":
            raise ValueError(f"{where}: only assistant messages may carry tool_calls")
        if calls:
            rendered = "\n".join(render_tool_call(call) for call in calls)
            text = f"{text}\n{rendered}" if text else rendered
        out.append({"role": role, "content": text})
    if tools:
        block = render_tools(tools)
        if out[0]["role"] == "system":
            system = out[0]["content"]
            out[0] = {"role": "system", "content": f"{system}\n\n{block}" if system else block}
        else:
            out.insert(0, {"role": "system", "content": block})
    return out


def to_prompt_completion(row: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """A split row ``{"messages", "tools"?}`` as trl's conversational prompt–completion pair.

    The completion is the last (assistant) message, so the loss covers only the answer's tokens.
    """
    messages = row.get("messages") if isinstance(row, dict) else None
    if not isinstance(messages, list) or len(messages) < 2:
        raise ValueError("a training row needs 'messages' with at least a prompt message and the answer")
    if not isinstance(messages[-1], dict) or messages[-1].get("role") != "assistant":
        raise ValueError("the last message of a training row must be the assistant answer")
    rendered = to_training_messages(messages, row.get("tools"))
    if not rendered[-1]["content"].strip():
        raise ValueError("the assistant answer is empty")
    return {"prompt": rendered[:-1], "completion": rendered[-1:]}


def parse_tool_calls(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """Split generated text into (content, OpenAI ``tool_calls``); the inverse of :func:`render_tool_call`.

    A ``<tool_call>`` block whose body is not a JSON object with a ``name`` is left in the content as text.
    """
    calls: list[dict[str, Any]] = []
    kept: list[str] = []
    last = 0
    for match in _TOOL_CALL_RE.finditer(text):
        try:
            body = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            continue
        arguments = body.get("arguments", {})
        kept.append(text[last : match.start()])
        last = match.end()
        calls.append(
            {
                "id": new_tool_call_id(),
                "type": "function",
                "function": {"name": body["name"], "arguments": json.dumps(arguments, ensure_ascii=False)},
            }
        )
    kept.append(text[last:])
    content = "".join(kept).strip()
    return (content or None), calls


def new_tool_call_id() -> str:
    """An id for a generated tool call, unique across turns (``call_`` and 24 hex digits, as OpenAI's)."""
    return f"call_{uuid.uuid4().hex[:24]}"


def tool_choice_mode(
    tools: list[dict[str, Any]] | None, tool_choice: str | dict[str, Any] | None
) -> tuple[str, str | None]:
    """``(mode, function name)`` for an OpenAI ``tool_choice``: mode ``none``, ``auto`` or ``required``; a
    named function is ``("required", name)``. Without tools the mode is ``none``. Raises ValueError on a
    choice OpenAI would reject (unknown string, a function that is not offered, a choice without tools)."""
    names = [tool_name(tool) for tool in tools or []]
    if tool_choice is None:
        return ("auto", None) if names else ("none", None)
    if not names:
        raise ValueError("tool_choice is only allowed when tools are given")
    if isinstance(tool_choice, str):
        if tool_choice not in ("none", "auto", "required"):
            raise ValueError(f"tool_choice must be 'none', 'auto', 'required' or a function, got {tool_choice!r}")
        return tool_choice, None
    function = tool_choice.get("function") if isinstance(tool_choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if tool_choice.get("type") != "function" or not isinstance(name, str):
        raise ValueError('a named tool_choice must be {"type": "function", "function": {"name": ...}}')
    if name not in names:
        raise ValueError(f"tool_choice names {name!r}, which is not among the offered tools {names}")
    return "required", name


def tool_name(tool: Any) -> str:
    """The function name of an OpenAI tool schema; ValueError when it has none."""
    function = tool.get("function") if isinstance(tool, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(name, str) \
            or not name:
        raise ValueError(f'a tool must be {{"type": "function", "function": {{"name": ...}}}}, got {tool!r}')
    return name


def merge_tool_call_deltas(calls: list[dict[str, Any]], deltas: list[dict[str, Any]]) -> None:
    """Add streamed OpenAI tool-call deltas (``index``, ``id``, ``type``, ``function.name/arguments``) to
    ``calls``, the whole calls so far, as the OpenAI client accumulates them: fields set once are kept,
    name and argument fragments are appended."""
    for delta in deltas:
        index = delta.get("index", 0)
        if not isinstance(index, int) or index < 0:
            raise ValueError(f"a tool-call delta needs a non-negative integer index, got {delta!r}")
        while len(calls) <= index:
            calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        call = calls[index]
        if delta.get("id"):
            call["id"] = delta["id"]
        if delta.get("type"):
            call["type"] = delta["type"]
        function = delta.get("function") or {}
        if function.get("name"):
            call["function"]["name"] += function["name"]
        if function.get("arguments"):
            call["function"]["arguments"] += function["arguments"]


_CALL_HEAD_RE = re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*')


class ToolCallStream:
    """Text generated after ``<tool_call>`` as OpenAI tool-call deltas, while it is generated.

    It reads what the tool grammar lets the model write (``{"name": "X", "arguments": {...}}</tool_call>``,
    optionally ``\\n<tool_call>`` and another call): the first delta of a call carries its id, type and
    name, the next ones the arguments text as it grows. ``calls`` holds the whole calls; ``complete`` says
    whether every call opened was also closed.
    """

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self._buffer = ""
        self._state = "head"  # head -> args -> tail -> between -> head ...
        self._depth = 0
        self._in_string = False
        self._escaped = False

    @property
    def complete(self) -> bool:
        return bool(self.calls) and self._state == "between"

    def feed(self, text: str) -> list[dict[str, Any]]:
        deltas: list[dict[str, Any]] = []
        self._buffer += text
        while self._buffer:
            if self._state == "head":
                match = _CALL_HEAD_RE.match(self._buffer)
                if match is None:
                    return deltas
                name = json.loads(match.group(1))
                call = {"id": new_tool_call_id(), "type": "function", "function": {"name": name, "arguments": ""}}
                self.calls.append(call)
                deltas.append({"index": len(self.calls) - 1, "id": call["id"], "type": "function",
                               "function": {"name": name, "arguments": ""}})
                self._buffer = self._buffer[match.end():]
                self._state, self._depth, self._in_string, self._escaped = "args", 0, False, False
            elif self._state == "args":
                if not self.calls[-1]["function"]["arguments"]:
                    self._buffer = self._buffer.lstrip()
                    if not self._buffer:
                        return deltas
                taken = self._scan_arguments()
                fragment, self._buffer = self._buffer[:taken], self._buffer[taken:]
                if fragment:
                    self.calls[-1]["function"]["arguments"] += fragment
                    deltas.append({"index": len(self.calls) - 1, "function": {"arguments": fragment}})
                if self._state == "args":
                    return deltas
            elif self._state == "tail":
                end = self._buffer.find(TOOL_CALL_CLOSE)
                if end < 0:
                    return deltas
                self._buffer = self._buffer[end + len(TOOL_CALL_CLOSE):]
                self._state = "between"
            else:
                start = self._buffer.find(TOOL_CALL_OPEN)
                if start < 0:
                    return deltas
                self._buffer = self._buffer[start + len(TOOL_CALL_OPEN):]
                self._state = "head"
        return deltas

    def _scan_arguments(self) -> int:
        """How many characters of the buffer belong to the arguments value; moves to ``tail`` at its end."""
        for i, char in enumerate(self._buffer):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    self._state = "tail"
                    return i + 1
        return len(self._buffer)

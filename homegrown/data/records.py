"""Validation and normalisation of one input record (the interaction format, see the project docs).

Pure functions, no I/O. :func:`normalise_record` turns one parsed JSON object into either an
interaction row (the columns of ``INTERACTION_COLUMNS`` except ``source``) or a feedback event, and
raises :class:`RecordError` with a reason a person can act on for anything that does not fit.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

ROLES = ("system", "user", "assistant", "tool")
OUTCOMES = ("accepted", "accepted_with_edits", "rejected", "abandoned", "regenerated")
BEST_RESPONSES = ("teacher", "student", "neither")
FEEDBACK_FIELDS = ("thumbs", "outcome", "edit_ratio", "customer_rating", "led_to_booking", "admin_correction")

# Fields that hold lists/objects; CSV (and some Parquet writers) store them as JSON strings.
NESTED_FIELDS = ("messages", "tools", "critic", "feedback", "metadata")
# Scalar fields that are not strings; a CSV cell holds them as text ("1", "0.5", "true").
NON_STRING_SCALARS = ("thumbs", "edit_ratio", "customer_rating", "led_to_booking")

SHAPES = {
    "messages": ("messages",),
    "prompt/response": ("prompt", "response", "system"),
    "instruction/input/output": ("instruction", "input", "output"),
}
OPTIONAL_STRINGS = ("org_id", "model", "teacher_response", "student_response", "ground_truth")
KNOWN_FIELDS = (
    {"id", "created_at", "conversation_id", "example_type", "tools", "critic", "feedback", "metadata"}
    | set(OPTIONAL_STRINGS)
    | {key for keys in SHAPES.values() for key in keys}
)
# Keys a feedback event may carry besides its feedback fields; they identify or describe the event.
EVENT_ENVELOPE = ("feedback_for", "created_at", "id", "org_id", "conversation_id", "metadata", "feedback")

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
# Deeper lists/objects than this are refused: nothing in the format needs more than a handful of levels,
# and a record nested hundreds deep breaks every recursive step after ingestion (RecursionError).
MAX_NESTING_DEPTH = 64


class RecordError(ValueError):
    """A record that does not fit the interaction format; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class TimestampWindow:
    """The accepted range of ``created_at``: ``earliest <= created_at <= latest`` (both timezone-aware).

    "Newest wins" makes a far-future time win forever, and a time before the product existed is a broken
    clock; both are refused with a reason instead of being trusted.
    """

    earliest: datetime
    latest: datetime

    def __post_init__(self) -> None:
        if self.earliest.tzinfo is None or self.latest.tzinfo is None:
            raise ValueError("TimestampWindow bounds must be timezone-aware")
        if self.earliest > self.latest:
            raise ValueError(f"TimestampWindow is empty: earliest {self.earliest} is after latest {self.latest}")

    def check(self, moment: datetime, field: str) -> None:
        if moment < self.earliest:
            raise RecordError(f"{field} {_iso(moment)} is before the earliest accepted time {_iso(self.earliest)}")
        if moment > self.latest:
            raise RecordError(
                f"{field} {_iso(moment)} is after the latest accepted time {_iso(self.latest)} (in the future)"
            )


def normalise_timestamp(value: Any, field: str = "created_at", window: TimestampWindow | None = None) -> str:
    """An ISO-8601 string (or datetime) as UTC ``YYYY-MM-DDTHH:MM:SS.ffffffZ``; naive times are UTC.

    With a ``window``, a time outside it raises :class:`RecordError`; so does a time that cannot be
    expressed in UTC at all (``0001-01-01T00:00:00+01:00``).
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise RecordError(f"{field} is empty")
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise RecordError(f"{field} is not an ISO-8601 timestamp: {value!r}") from None
    else:
        raise RecordError(f"{field} must be an ISO-8601 string, got {type(value).__name__}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        moment = moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise RecordError(f"{field} is out of range once converted to UTC: {value!s}") from None
    if window is not None:
        window.check(moment, field)
    return moment.strftime(TIMESTAMP_FORMAT)


def _iso(moment: datetime) -> str:
    """A datetime as ISO-8601 with a four-digit year (``strftime("%Y")`` drops the zeros of year 1)."""
    return moment.isoformat().replace("+00:00", "Z")


def coerce_csv_row(row: dict[str, str | None]) -> dict[str, Any]:
    """A CSV row as a record: empty cells are absent, non-string scalars parsed from their text.

    Nested fields stay JSON strings here; :func:`normalise_record` parses them.
    """
    record: dict[str, Any] = {}
    for key, cell in row.items():
        if key is None or cell is None or cell == "":
            continue  # short rows / empty cells: the field is absent
        if key in NON_STRING_SCALARS:
            try:
                record[key] = json.loads(cell)
            except (ValueError, RecursionError):
                record[key] = cell  # left as text so validation reports the bad value
        else:
            record[key] = cell
    return record


def normalise_record(
    obj: Any, window: TimestampWindow | None = None, *, depth_checked: bool = False
) -> tuple[str, dict[str, Any]]:
    """Validate one record and normalise it.

    Returns ``("interaction", row)`` with every interaction column except ``source`` (messages always
    in OpenAI chat form, defaults filled in), or ``("feedback", event)`` for a
    ``{"feedback_for": id, "created_at": ..., <feedback fields>}`` row, with ``created_at`` normalised.
    Raises :class:`RecordError` when the record does not fit the interaction format, including a
    ``created_at`` outside ``window`` (when given) and lists/objects nested deeper than
    ``MAX_NESTING_DEPTH`` (``depth_checked``: the caller has already checked that, see :func:`check_depth`).
    """
    if not isinstance(obj, dict):
        raise RecordError(f"not a JSON object (got {_json_type(obj)})")
    if not depth_checked:
        check_depth(obj)
    record = {key: value for key, value in obj.items() if not _is_missing(value)}
    if "feedback_for" in record:
        return "feedback", _normalise_feedback_event(record, window)
    return "interaction", _normalise_interaction(record, window)


def check_depth(obj: Any, limit: int = MAX_NESTING_DEPTH) -> None:
    """Raise :class:`RecordError` when lists/objects nest deeper than ``limit`` (level by level: no recursion)."""
    level, depth = [obj], 1
    while level:
        if depth > limit:
            raise RecordError(f"record is nested deeper than {limit} levels of lists/objects")
        deeper = []
        for value in level:
            for item in value.values() if isinstance(value, dict) else value:
                if isinstance(item, (dict, list)):
                    deeper.append(item)
        level, depth = deeper, depth + 1


def normalise_feedback(value: Any, field: str = "feedback") -> dict[str, Any]:
    """Validate a feedback object; known fields are range-checked, unknown ones carried as they are."""
    value = _parse_nested(value, field)
    if not isinstance(value, dict):
        raise RecordError(f"{field} must be an object, got {_json_type(value)}")
    feedback: dict[str, Any] = {}
    for key, item in value.items():
        if _is_missing(item):
            continue
        feedback[key] = _check_feedback_field(key, item) if key in FEEDBACK_FIELDS else item
    return feedback


def _normalise_interaction(record: dict[str, Any], window: TimestampWindow | None) -> dict[str, Any]:
    interaction_id = _required_string(record, "id")
    created_at = normalise_timestamp(_required(record, "created_at"), window=window)
    messages = _conversation(record)

    row: dict[str, Any] = {
        "id": interaction_id,
        "conversation_id": _optional_string(record, "conversation_id") or interaction_id,
        "created_at": created_at,
        "org_id": _optional_string(record, "org_id"),
        "example_type": _optional_string(record, "example_type") or "chat",
        "model": _optional_string(record, "model"),
        "messages": messages,
        "tools": _tools(record.get("tools")),
        "teacher_response": _optional_string(record, "teacher_response"),
        "student_response": _optional_string(record, "student_response"),
        "critic": _critic(record.get("critic")),
        "ground_truth": _optional_string(record, "ground_truth"),
        "feedback": normalise_feedback(record["feedback"]) if "feedback" in record else {},
        "metadata": {},
    }
    metadata = _parse_nested(record.get("metadata", {}), "metadata")
    if not isinstance(metadata, dict):
        raise RecordError(f"metadata must be an object, got {_json_type(metadata)}")
    # Fields outside the format are carried in metadata so that nothing the business logged is lost.
    extra = {key: value for key, value in record.items() if key not in KNOWN_FIELDS}
    row["metadata"] = {**extra, **metadata}
    return row


def _normalise_feedback_event(record: dict[str, Any], window: TimestampWindow | None) -> dict[str, Any]:
    target = record["feedback_for"]
    if not isinstance(target, str) or not target:
        raise RecordError(f"feedback_for must be a non-empty string, got {_json_type(target)}")
    created_at = normalise_timestamp(_required(record, "created_at"), window=window)
    conversation_keys = sorted(record.keys() & {key for keys in SHAPES.values() for key in keys})
    if conversation_keys:
        raise RecordError(f"a feedback event must not carry a conversation (found {', '.join(conversation_keys)})")
    fields = {key: value for key, value in record.items() if key not in EVENT_ENVELOPE}
    if "feedback" in record:
        fields.update(normalise_feedback(record["feedback"]))
    fields = normalise_feedback(fields, "feedback event")
    if not fields:
        raise RecordError("feedback event carries no feedback fields")
    return {"feedback_for": target, "created_at": created_at, **fields}


def _check_feedback_field(key: str, value: Any) -> Any:
    if key == "thumbs":
        if not _is_number(value) or value not in (1, -1):
            raise RecordError(f"feedback.thumbs must be 1 or -1, got {value!r}")
        return int(value)
    if key == "outcome":
        if value not in OUTCOMES:
            raise RecordError(f"feedback.outcome must be one of {', '.join(OUTCOMES)}; got {value!r}")
        return value
    if key == "edit_ratio":
        if not _is_number(value) or not 0 <= value <= 1:
            raise RecordError(f"feedback.edit_ratio must be a number from 0 to 1, got {value!r}")
        return float(value)
    if key == "customer_rating":
        if not _is_number(value) or not 1 <= value <= 5:
            raise RecordError(f"feedback.customer_rating must be a number from 1 to 5, got {value!r}")
        return int(value) if float(value).is_integer() else float(value)
    if key == "led_to_booking":
        if not isinstance(value, bool):
            raise RecordError(f"feedback.led_to_booking must be true or false, got {value!r}")
        return value
    if key == "admin_correction":
        if not isinstance(value, str):
            raise RecordError(f"feedback.admin_correction must be a string, got {_json_type(value)}")
        return value
    raise AssertionError(f"unhandled feedback field {key}")


def _conversation(record: dict[str, Any]) -> list[dict[str, Any]]:
    present = [name for name, keys in SHAPES.items() if any(key in record for key in keys)]
    if not present:
        raise RecordError(
            "no conversation: expected messages, prompt + response, or instruction + input + output"
        )
    if len(present) > 1:
        raise RecordError(f"record mixes conversation shapes: {' and '.join(present)}")
    shape = present[0]
    if shape == "messages":
        return _messages(record["messages"])
    if shape == "prompt/response":
        prompt, response = _required_string(record, "prompt"), _required_string(record, "response")
        system = _optional_string(record, "system")
        messages = [{"role": "system", "content": system}] if system else []
        return _messages([*messages, {"role": "user", "content": prompt}, {"role": "assistant", "content": response}])
    instruction, output = _required_string(record, "instruction"), _required_string(record, "output")
    extra_input = _optional_string(record, "input")  # Alpaca rows often leave input empty
    prompt = f"{instruction}\n\n{extra_input}" if extra_input else instruction
    return _messages([{"role": "user", "content": prompt}, {"role": "assistant", "content": output}])


def _messages(value: Any) -> list[dict[str, Any]]:
    value = _parse_nested(value, "messages")
    if not isinstance(value, list):
        raise RecordError(f"messages must be a list, got {_json_type(value)}")
    if not value:
        raise RecordError("empty conversation: messages is an empty list")
    messages = [_message(index, message) for index, message in enumerate(value, start=1)]
    last = messages[-1]
    if last["role"] != "assistant":
        raise RecordError(f"the last message must be the assistant answer, but it is from {last['role']!r}")
    if not last.get("tool_calls") and not (last["content"] or "").strip():
        raise RecordError("the assistant answer (last message) is empty")
    return messages


def _message(index: int, value: Any) -> dict[str, Any]:
    where = f"message {index}"
    if not isinstance(value, dict):
        raise RecordError(f"{where} must be an object, got {_json_type(value)}")
    # Parquet structs fill absent keys with null; null means absent except for content.
    message = {key: item for key, item in value.items() if item is not None or key == "content"}
    role = message.get("role")
    if role not in ROLES:
        raise RecordError(f"{where} has bad role {role!r} (expected one of {', '.join(ROLES)})")
    if "tool_calls" in message:
        if role != "assistant":
            raise RecordError(f"{where}: only assistant messages may carry tool_calls")
        message["tool_calls"] = _tool_calls(where, message["tool_calls"])
    content = message.get("content")
    if content is None:
        if not message.get("tool_calls"):
            raise RecordError(f"{where} has no content (only an assistant message with tool_calls may omit it)")
        message["content"] = None
    elif not isinstance(content, str):
        raise RecordError(f"{where} content must be a string, got {_json_type(content)}")
    if "tool_call_id" in message and not isinstance(message["tool_call_id"], str):
        raise RecordError(f"{where} tool_call_id must be a string")
    return message


def _tool_calls(where: str, value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise RecordError(f"{where} tool_calls must be a list, got {_json_type(value)}")
    calls = []
    for number, call in enumerate(value, start=1):
        label = f"{where} tool call {number}"
        if not isinstance(call, dict):
            raise RecordError(f"{label} must be an object")
        if not isinstance(call.get("id"), str):
            raise RecordError(f"{label} needs a string id")
        if call.get("type", "function") != "function":
            raise RecordError(f"{label} type must be 'function', got {call.get('type')!r}")
        function = call.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise RecordError(f"{label} needs function.name")
        arguments = function.get("arguments", "{}")
        if isinstance(arguments, dict):
            arguments = json.dumps(arguments)  # OpenAI's shape carries arguments as a JSON string
        elif not isinstance(arguments, str):
            raise RecordError(f"{label} function.arguments must be a JSON string")
        calls.append({**call, "type": "function", "function": {**function, "arguments": arguments}})
    return calls


def _tools(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    value = _parse_nested(value, "tools")
    if not isinstance(value, list) or not all(isinstance(tool, dict) for tool in value):
        raise RecordError("tools must be a list of OpenAI tool schemas (objects)")
    return value


def _critic(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    value = _parse_nested(value, "critic")
    if not isinstance(value, dict):
        raise RecordError(f"critic must be an object, got {_json_type(value)}")
    critic = {key: item for key, item in value.items() if item is not None}
    if "best_response" in critic and critic["best_response"] not in BEST_RESPONSES:
        raise RecordError(
            f"critic.best_response must be one of {', '.join(BEST_RESPONSES)}; got {critic['best_response']!r}"
        )
    if "quality_score" in critic:
        score = critic["quality_score"]
        if not _is_number(score) or not 0 <= score <= 1:
            raise RecordError(f"critic.quality_score must be a number from 0 to 1, got {score!r}")
        critic["quality_score"] = float(score)
    if "reason" in critic and not isinstance(critic["reason"], str):
        raise RecordError("critic.reason must be a string")
    return critic


def _parse_nested(value: Any, field: str) -> Any:
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError as error:
            raise RecordError(f"{field} is a string that is not valid JSON ({error})") from None
        except RecursionError:
            raise RecordError(f"{field} is a JSON string nested too deeply to parse") from None
        if value.count("[") + value.count("{") > MAX_NESTING_DEPTH:  # else it cannot be too deep
            check_depth(parsed)  # a JSON string (a CSV cell) is checked like the record it sits in
        return parsed
    return value


def _required(record: dict[str, Any], field: str) -> Any:
    if field not in record:
        raise RecordError(f"missing required field {field!r}")
    return record[field]


def _required_string(record: dict[str, Any], field: str) -> str:
    value = _required(record, field)
    if not isinstance(value, str):
        raise RecordError(f"{field} must be a string, got {_json_type(value)}")
    if not value.strip():
        raise RecordError(f"{field} is empty")
    return value


def _optional_string(record: dict[str, Any], field: str) -> str | None:
    value = record.get(field)
    if value is not None and not isinstance(value, str):
        raise RecordError(f"{field} must be a string, got {_json_type(value)}")
    return value


def _is_missing(value: Any) -> bool:
    return value is None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)

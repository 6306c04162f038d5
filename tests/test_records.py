"""Unit tests of record normalisation: the three shapes, feedback events, and every quarantine reason."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from homegrown.data.columns import INTERACTION_COLUMNS
from homegrown.data.records import RecordError, coerce_csv_row, normalise_record, normalise_timestamp

BASE = {"id": "int-1", "created_at": "2026-01-20T10:11:12Z"}
CHAT = [{"role": "user", "content": "Do you serve wagyu?"}, {"role": "assistant", "content": "No, filet mignon."}]
TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "book", "arguments": '{"guests": 4}'}}


@pytest.mark.parametrize(
    ("fields", "expected_messages"),
    [
        ({"messages": CHAT}, CHAT),
        (
            {"prompt": "Do you serve wagyu?", "response": "No, filet mignon."},
            CHAT,
        ),
        (
            {"system": "You are the hibachi bot.", "prompt": "Do you serve wagyu?", "response": "No, filet mignon."},
            [{"role": "system", "content": "You are the hibachi bot."}, *CHAT],
        ),
        (
            {"instruction": "Translate to French", "input": "Good evening", "output": "Bonsoir"},
            [{"role": "user", "content": "Translate to French\n\nGood evening"}, {"role": "assistant", "content": "Bonsoir"}],
        ),
        (
            {"instruction": "Say hello", "input": "", "output": "Hello!"},
            [{"role": "user", "content": "Say hello"}, {"role": "assistant", "content": "Hello!"}],
        ),
        (
            {"messages": [{"role": "user", "content": "Book for 4"}, {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]}]},
            [{"role": "user", "content": "Book for 4"}, {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]}],
        ),
    ],
    ids=["messages", "prompt-response", "prompt-response-system", "alpaca", "alpaca-empty-input", "tool-call"],
)
def test_each_shape_becomes_messages(fields, expected_messages):
    kind, row = normalise_record({**BASE, **fields})
    assert kind == "interaction"
    assert row["messages"] == expected_messages
    assert set(row) == set(INTERACTION_COLUMNS) - {"source"}


def test_defaults_and_optional_fields():
    _, row = normalise_record({**BASE, "messages": CHAT})
    assert row["conversation_id"] == "int-1"
    assert row["example_type"] == "chat"
    assert row["feedback"] == {} and row["metadata"] == {}
    assert row["created_at"] == "2026-01-20T10:11:12.000000Z"
    assert row["org_id"] is None and row["critic"] is None and row["tools"] is None

    full = {
        **BASE, "messages": CHAT, "conversation_id": "c-42", "org_id": "org-7", "example_type": "faq",
        "model": "gpt-4o", "tools": [{"type": "function", "function": {"name": "book"}}],
        "teacher_response": "t", "student_response": "s", "ground_truth": "g",
        "critic": {"best_response": "neither", "quality_score": 0.2, "reason": "hallucinated"},
        "feedback": {"thumbs": -1, "outcome": "accepted_with_edits", "edit_ratio": 0.25, "customer_rating": 4,
                     "led_to_booking": False, "admin_correction": "We don't serve wagyu."},
        "metadata": {"channel": "web"}, "session": "abc",
    }
    _, row = normalise_record(full)
    assert row["conversation_id"] == "c-42" and row["org_id"] == "org-7" and row["model"] == "gpt-4o"
    assert row["critic"]["quality_score"] == 0.2
    assert row["feedback"]["thumbs"] == -1 and row["feedback"]["led_to_booking"] is False
    # A field outside the format is carried in metadata, never dropped.
    assert row["metadata"] == {"channel": "web", "session": "abc"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-20T10:11:12Z", "2026-01-20T10:11:12.000000Z"),
        ("2026-01-20T10:11:12", "2026-01-20T10:11:12.000000Z"),  # naive is UTC
        ("2026-01-20T12:11:12.5+02:00", "2026-01-20T10:11:12.500000Z"),
        ("2026-01-20 10:11:12.123456-05:00", "2026-01-20T15:11:12.123456Z"),
        ("2026-01-20", "2026-01-20T00:00:00.000000Z"),
        (datetime(2026, 1, 20, 11, 11, 12, tzinfo=timezone(timedelta(hours=1))), "2026-01-20T10:11:12.000000Z"),
    ],
)
def test_timestamps_normalise_to_utc(value, expected):
    assert normalise_timestamp(value) == expected


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (["not", "an", "object"], "not a JSON object (got array)"),
        ("a string", "not a JSON object"),
        ({"created_at": "2026-01-20T10:11:12Z", "messages": CHAT}, "missing required field 'id'"),
        ({**BASE, "id": 17, "messages": CHAT}, "id must be a string, got number"),
        ({**BASE, "id": "  ", "messages": CHAT}, "id is empty"),
        ({"id": "x", "messages": CHAT}, "missing required field 'created_at'"),
        ({**BASE, "created_at": 1737367872, "messages": CHAT}, "created_at must be an ISO-8601 string"),
        ({**BASE, "created_at": "yesterday", "messages": CHAT}, "created_at is not an ISO-8601 timestamp"),
        ({**BASE, "created_at": "2026-13-40T00:00:00Z", "messages": CHAT}, "not an ISO-8601 timestamp"),
        (BASE, "no conversation"),
        ({**BASE, "messages": CHAT, "prompt": "hi"}, "record mixes conversation shapes"),
        ({**BASE, "messages": []}, "empty conversation"),
        ({**BASE, "messages": {"role": "user"}}, "messages must be a list"),
        ({**BASE, "messages": "[{broken"}, "messages is a string that is not valid JSON"),
        ({**BASE, "messages": [{"role": "bot", "content": "hi"}]}, "message 1 has bad role 'bot'"),
        ({**BASE, "messages": [{"content": "hi"}]}, "message 1 has bad role None"),
        ({**BASE, "messages": [CHAT[1], CHAT[0]]}, "the last message must be the assistant answer, but it is from 'user'"),
        ({**BASE, "messages": [CHAT[0], {"role": "assistant", "content": "  "}]}, "the assistant answer (last message) is empty"),
        ({**BASE, "messages": [CHAT[0], {"role": "assistant", "content": ["a"]}]}, "message 2 content must be a string"),
        ({**BASE, "messages": [CHAT[0], {"role": "assistant", "content": None}]}, "message 2 has no content"),
        ({**BASE, "messages": [{"role": "user", "content": "x", "tool_calls": [TOOL_CALL]}, CHAT[1]]},
         "only assistant messages may carry tool_calls"),
        ({**BASE, "messages": [CHAT[0], {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}]},
         "tool call 1 needs function.name"),
        ({**BASE, "messages": [CHAT[0], {"role": "assistant", "content": None, "tool_calls": {"id": "c"}}]},
         "tool_calls must be a list"),
        ({**BASE, "prompt": "hi"}, "missing required field 'response'"),
        ({**BASE, "prompt": "hi", "response": 3}, "response must be a string"),
        ({**BASE, "instruction": "do it", "input": "x"}, "missing required field 'output'"),
        ({**BASE, "messages": CHAT, "org_id": 7}, "org_id must be a string"),
        ({**BASE, "messages": CHAT, "tools": {"name": "x"}}, "tools must be a list"),
        ({**BASE, "messages": CHAT, "metadata": [1]}, "metadata must be an object"),
        ({**BASE, "messages": CHAT, "feedback": {"thumbs": 0}}, "feedback.thumbs must be 1 or -1"),
        ({**BASE, "messages": CHAT, "feedback": {"thumbs": True}}, "feedback.thumbs must be 1 or -1"),
        ({**BASE, "messages": CHAT, "feedback": {"outcome": "loved"}}, "feedback.outcome must be one of"),
        ({**BASE, "messages": CHAT, "feedback": {"edit_ratio": 1.5}}, "feedback.edit_ratio must be a number from 0 to 1"),
        ({**BASE, "messages": CHAT, "feedback": {"edit_ratio": float("nan")}}, "feedback.edit_ratio"),
        ({**BASE, "messages": CHAT, "feedback": {"customer_rating": 6}}, "feedback.customer_rating must be a number from 1 to 5"),
        ({**BASE, "messages": CHAT, "feedback": {"customer_rating": "5"}}, "feedback.customer_rating"),
        ({**BASE, "messages": CHAT, "feedback": {"led_to_booking": "yes"}}, "feedback.led_to_booking must be true or false"),
        ({**BASE, "messages": CHAT, "feedback": {"admin_correction": 5}}, "feedback.admin_correction must be a string"),
        ({**BASE, "messages": CHAT, "feedback": "thumbs up"}, "feedback is a string that is not valid JSON"),
        ({**BASE, "messages": CHAT, "critic": {"quality_score": 1.2}}, "critic.quality_score must be a number from 0 to 1"),
        ({**BASE, "messages": CHAT, "critic": {"best_response": "both"}}, "critic.best_response must be one of"),
        ({"feedback_for": 12, "created_at": "2026-01-20T10:11:12Z", "thumbs": 1}, "feedback_for must be a non-empty string"),
        ({"feedback_for": "int-1", "thumbs": 1}, "missing required field 'created_at'"),
        ({"feedback_for": "int-1", "created_at": "2026-01-20T10:11:12Z"}, "feedback event carries no feedback fields"),
        ({"feedback_for": "int-1", "created_at": "2026-01-20T10:11:12Z", "thumbs": 2}, "feedback.thumbs must be 1 or -1"),
        ({"feedback_for": "int-1", "created_at": "2026-01-20T10:11:12Z", "thumbs": 1, "messages": CHAT},
         "a feedback event must not carry a conversation"),
    ],
)
def test_malformed_records_raise_with_reason(record, reason):
    with pytest.raises(RecordError) as raised:
        normalise_record(record)
    assert reason in raised.value.reason


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            {"feedback_for": "int-1", "created_at": "2026-01-21T00:00:00+01:00", "thumbs": 1},
            {"feedback_for": "int-1", "created_at": "2026-01-20T23:00:00.000000Z", "thumbs": 1},
        ),
        (
            {"feedback_for": "int-1", "created_at": "2026-01-21", "feedback": {"outcome": "accepted"}, "led_to_booking": True},
            {"feedback_for": "int-1", "created_at": "2026-01-21T00:00:00.000000Z", "outcome": "accepted", "led_to_booking": True},
        ),
        (
            {"feedback_for": "int-1", "created_at": "2026-01-21", "id": "evt-9", "customer_rating": 5.0, "org_id": "o"},
            {"feedback_for": "int-1", "created_at": "2026-01-21T00:00:00.000000Z", "customer_rating": 5},
        ),
    ],
)
def test_feedback_events(record, expected):
    assert normalise_record(record) == ("feedback", expected)


def test_csv_cells_hold_nested_fields_as_json_strings():
    cells = {
        "id": "int-9", "created_at": "2026-01-20T10:11:12Z", "conversation_id": "", "org_id": "org-1",
        "messages": json.dumps(CHAT), "tools": "", "critic": json.dumps({"quality_score": 0.95}),
        "feedback": json.dumps({"thumbs": 1, "admin_correction": "Fixed."}), "metadata": json.dumps({"k": [1]}),
        "prompt": "", "response": "", "thumbs": "",
    }
    kind, row = normalise_record(coerce_csv_row(cells))
    assert kind == "interaction"
    assert row["messages"] == CHAT
    assert row["critic"] == {"quality_score": 0.95}
    assert row["feedback"] == {"thumbs": 1, "admin_correction": "Fixed."}
    assert row["metadata"] == {"k": [1]}
    assert row["conversation_id"] == "int-9" and row["tools"] is None


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        ({"thumbs": "-1"}, {"thumbs": -1}),
        ({"edit_ratio": "0.5", "led_to_booking": "true"}, {"edit_ratio": 0.5, "led_to_booking": True}),
        ({"customer_rating": "4", "outcome": "accepted"}, {"customer_rating": 4, "outcome": "accepted"}),
    ],
)
def test_csv_feedback_event_scalars_are_parsed(cells, expected):
    row = {"feedback_for": "int-1", "created_at": "2026-01-20T10:00:00Z", "id": "", "messages": "", **cells}
    kind, event = normalise_record(coerce_csv_row(row))
    assert kind == "feedback"
    assert {key: value for key, value in event.items() if key not in ("feedback_for", "created_at")} == expected


def test_csv_bad_scalar_text_is_reported():
    with pytest.raises(RecordError, match="led_to_booking must be true or false, got 'yes'"):
        normalise_record(coerce_csv_row({"feedback_for": "int-1", "created_at": "2026-01-20", "led_to_booking": "yes"}))


def test_tool_call_arguments_object_becomes_json_string():
    call = {"id": "c1", "type": "function", "function": {"name": "book", "arguments": {"guests": 4}}}
    _, row = normalise_record({**BASE, "messages": [CHAT[0], {"role": "assistant", "content": None, "tool_calls": [call]}]})
    assert json.loads(row["messages"][-1]["tool_calls"][0]["function"]["arguments"]) == {"guests": 4}


def test_parquet_style_nulls_mean_absent():
    messages = [
        {"role": "user", "content": "hi", "tool_calls": None, "tool_call_id": None},
        {"role": "assistant", "content": "hello", "tool_calls": None, "tool_call_id": None},
    ]
    record = {**BASE, "messages": messages, "org_id": None, "feedback": {"thumbs": None, "outcome": "accepted"},
              "teacher_response": None}
    _, row = normalise_record(record)
    assert row["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert row["feedback"] == {"outcome": "accepted"}
    assert row["metadata"] == {}

"""Quality scoring: every rule of the policy, its edge cases, and the shape of the scored table."""

from __future__ import annotations

import copy
import json
import time

import pandas as pd
import pytest

from homegrown.data.columns import INTERACTION_COLUMNS, SCORED_COLUMNS
from homegrown.data.quality import QualityPolicy, apply_correction, score_interactions

BOOKING_TOOL = {
    "type": "function",
    "function": {
        "name": "create_booking",
        "parameters": {
            "type": "object",
            "properties": {"guests": {"type": "integer"}, "date": {"type": "string"}},
            "required": ["guests", "date"],
        },
    },
}


def interaction(i: int = 0, answer: str = "Yes, we serve filet mignon.", **fields) -> dict:
    row = {
        "id": f"int-{i}",
        "conversation_id": f"c-{i}",
        "created_at": "2026-01-20T10:11:12.000000Z",
        "org_id": "org-1",
        "example_type": "faq",
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are the assistant of My Hibachi."},
            {"role": "user", "content": "Do you serve filet mignon?"},
            {"role": "assistant", "content": answer},
        ],
        "tools": None,
        "teacher_response": None,
        "student_response": None,
        "critic": None,
        "ground_truth": None,
        "feedback": {},
        "metadata": {},
        "source": "logs.jsonl:1",
    }
    row.update(fields)
    return row


def frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=INTERACTION_COLUMNS)


def score_one(policy: QualityPolicy | None = None, **fields) -> pd.Series:
    """One row under the per-row rules; what the logs as a whole decide for unrated rows is tested apart."""
    return score_interactions(frame(interaction(**fields)), policy or QualityPolicy(unrated="drop")).iloc[0]


# --- unrated answers: decided from the approval rate of the judged ones ------------------------------------

def logs(approved: int, rejected: int, unrated: int, invalid_unrated: int = 0) -> pd.DataFrame:
    rows = [interaction(i, id=f"ok-{i}", feedback={"thumbs": 1}) for i in range(approved)]
    rows += [interaction(i, id=f"bad-{i}", feedback={"thumbs": -1}) for i in range(rejected)]
    rows += [interaction(i, id=f"un-{i}") for i in range(unrated)]
    rows += [interaction(i, id=f"inv-{i}", answer="") for i in range(invalid_unrated)]
    return frame(*rows)


def score_ids(scored: pd.DataFrame) -> list[str]:
    return [sources[0] for sources in scored["source_ids"]]


@pytest.mark.parametrize(
    ("approved", "rejected", "kept", "says"),
    [
        (0, 0, True, "no answer in the logs was approved or rejected"),
        (8, 2, True, "8 of 10 judged answers approved (80% >= 80%)"),
        (7, 3, False, None),  # 70%: where judged answers are often rejected an unrated one is no safer
    ],
)
def test_unrated_answers_follow_the_judged_ones(approved, rejected, kept, says):
    scored = score_interactions(logs(approved, rejected, unrated=3, invalid_unrated=1), QualityPolicy())
    sources = score_ids(scored)
    unrated = scored[[s.startswith("un-") for s in sources]]
    assert unrated["keep"].tolist() == [kept] * 3
    assert scored.attrs["unrated"].startswith(f"{'kept' if kept else 'dropped'} 3 valid unrated answers")
    if kept:
        assert all(r.startswith("kept: unrated valid answer, " + says) and r.endswith("score 3 (valid output +3)")
                   for r in unrated["reason"]), unrated["reason"].tolist()
    else:
        assert all(r == "dropped: score 3 < 5 (valid output +3)" for r in unrated["reason"])
    # an invalid answer is dropped whoever judged the rest, and judged rows keep their own reasons
    invalid = scored[[s.startswith("inv-") for s in sources]]
    assert not invalid["keep"].any() and invalid["reason"].str.startswith("dropped: invalid output").all()
    assert scored[[s.startswith("bad-") for s in sources]]["reason"].eq("dropped: thumbs down, no correction").all()


def test_unrated_keep_and_drop_override_the_logs():
    mostly_rejected = logs(approved=1, rejected=9, unrated=2)
    kept = score_interactions(mostly_rejected, QualityPolicy(unrated="keep"))
    assert kept[[s.startswith("un-") for s in score_ids(kept)]]["reason"].str.startswith(
        "kept: unrated valid answer, unrated=keep").all()
    dropped = score_interactions(logs(approved=0, rejected=0, unrated=2), QualityPolicy(unrated="drop"))
    assert not dropped["keep"].any()
    # a rating of 1-2 is a rejection; a middling rating or critic score is a judgement (never kept as unrated)
    # that the approval rate does not count
    judged = frame(interaction(1, feedback={"customer_rating": 2}), interaction(2, critic={"quality_score": 0.5}),
                   interaction(3, feedback={"customer_rating": 3}), interaction(4))
    scored = score_interactions(judged, QualityPolicy())
    assert scored["keep"].tolist() == [False, False, False, False]
    assert "0 of 1 judged answers approved" in scored.attrs["unrated"]
    # feedback the policy does not trust is not silence: never kept as unrated
    untrusted = {"provenance": {"source": "gateway", "role": "app"}}
    planted = frame(
        interaction(1, feedback={"thumbs": -1, "outcome": "rejected"}, metadata=untrusted),
        interaction(2, feedback={"admin_correction": "Yes, and wagyu too."}, metadata=untrusted),
        interaction(3))
    scored = score_interactions(planted, QualityPolicy(trusted_feedback_only=True))
    assert scored["keep"].tolist() == [False, False, True], scored["reason"].tolist()
    with pytest.raises(ValueError, match="unrated must be one of auto, keep, drop"):
        QualityPolicy(unrated="sometimes")
    with pytest.raises(ValueError, match="unrated_min_approval"):
        QualityPolicy(unrated_min_approval=1.5)


@pytest.mark.parametrize(
    ("fields", "score", "keep", "reason"),
    [
        ({}, 3, False, "dropped: score 3 < 5 (valid output +3)"),
        ({"feedback": {"thumbs": 1}}, 6, True, "kept: score 6 >= 5 (valid output +3, thumbs up +3)"),
        # exactly at the threshold keeps
        ({"feedback": {"outcome": "accepted"}}, 5, True, "kept: score 5 >= 5 (valid output +3, accepted +2)"),
        (
            {"feedback": {"outcome": "accepted_with_edits"}},
            4,
            False,
            "dropped: score 4 < 5 (valid output +3, accepted with edits +1)",
        ),
        (
            {"feedback": {"thumbs": 1, "outcome": "accepted"}},
            8,
            True,
            "kept: score 8 >= 5 (valid output +3, thumbs up +3, accepted +2)",
        ),
        ({"answer": "   "}, 0, False, "dropped: invalid output (empty answer)"),
        # an invalid answer is dropped even when its other signals reach the threshold
        (
            {"answer": "", "feedback": {"thumbs": 1, "outcome": "accepted"}},
            5,
            False,
            "dropped: invalid output (empty answer)",
        ),
        ({"feedback": {"thumbs": -1}}, 3, False, "dropped: thumbs down, no correction"),
        ({"feedback": {"outcome": "rejected"}}, 3, False, "dropped: outcome rejected, no correction"),
        ({"feedback": {"outcome": "abandoned"}}, 3, False, "dropped: outcome abandoned, no correction"),
        (
            {"feedback": {"outcome": "regenerated", "thumbs": 1}},
            6,
            False,
            "dropped: outcome regenerated, no correction",
        ),
        (
            {"critic": {"best_response": "neither", "quality_score": 0.95}},
            3,
            False,
            "dropped: critic preferred neither answer, no correction",
        ),
        (
            {"critic": {"best_response": "teacher", "quality_score": 0.95}},
            3,
            True,
            "kept: critic score 0.95 > 0.9; score 3 (valid output +3)",
        ),
        # critic exactly at critic_min does not keep by itself ...
        (
            {"critic": {"best_response": "teacher", "quality_score": 0.9}},
            3,
            False,
            "dropped: score 3 < 5 (valid output +3)",
        ),
        # ... but the score still can
        (
            {"critic": {"quality_score": 0.9}, "feedback": {"thumbs": 1}},
            6,
            True,
            "kept: score 6 >= 5 (valid output +3, thumbs up +3)",
        ),
        (
            {"feedback": {"led_to_booking": True}},
            3,
            True,
            "kept: led to a booking; score 3 (valid output +3)",
        ),
        ({"feedback": {"led_to_booking": False}}, 3, False, "dropped: score 3 < 5 (valid output +3)"),
        (
            {"feedback": {"customer_rating": 4}},
            3,
            True,
            "kept: customer rating 4 >= 4; score 3 (valid output +3)",
        ),
        ({"feedback": {"customer_rating": 3}}, 3, False, "dropped: score 3 < 5 (valid output +3)"),
        # a negative signal wins over a keep signal
        (
            {"feedback": {"thumbs": -1, "led_to_booking": True}},
            3,
            False,
            "dropped: thumbs down, no correction",
        ),
        (
            {"feedback": {"thumbs": -1, "admin_correction": "We don't serve wagyu."}},
            3,
            True,
            "kept: admin correction replaces the answer; score 3 (valid output +3)",
        ),
        (
            {
                "critic": {"best_response": "neither"},
                "feedback": {"admin_correction": "Filet mignon is +$5."},
            },
            3,
            True,
            "kept: admin correction replaces the answer; score 3 (valid output +3)",
        ),
        # a blank correction is no correction
        (
            {"feedback": {"thumbs": -1, "admin_correction": "  "}},
            3,
            False,
            "dropped: thumbs down, no correction",
        ),
    ],
)
def test_rules(fields: dict, score: float, keep: bool, reason: str) -> None:
    row = score_one(**fields)
    assert row["score"] == score
    assert bool(row["keep"]) is keep
    assert row["reason"] == reason


def test_admin_correction_replaces_the_answer() -> None:
    correction = "We don't serve wagyu. Our premium options are filet mignon (+$5) and lobster (+$10)."
    row = score_one(feedback={"thumbs": -1, "admin_correction": correction})
    assert row["messages"][-1] == {"role": "assistant", "content": correction}
    assert row["messages"][:2] == interaction()["messages"][:2]


def test_a_text_correction_of_a_tool_call_becomes_a_text_answer() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "create_booking", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "Book 4 people"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
    ]
    corrected = apply_correction(messages, "How many guests, and on which date?")
    assert corrected[-1] == {"role": "assistant", "content": "How many guests, and on which date?"}
    assert "tool_calls" not in corrected[-1]
    assert messages[-1]["tool_calls"] == [call]  # the input is untouched


def test_correction_is_appended_when_the_conversation_ends_without_an_answer() -> None:
    messages = [{"role": "user", "content": "Hi"}]
    assert apply_correction(messages, "Hello!") == [*messages, {"role": "assistant", "content": "Hello!"}]


@pytest.mark.parametrize(
    ("arguments", "offered", "valid"),
    [
        (json.dumps({"guests": 4, "date": "2026-02-01"}), [BOOKING_TOOL], True),
        (json.dumps({"guests": "four", "date": "2026-02-01"}), [BOOKING_TOOL], False),
        (json.dumps({"guests": 4, "date": "2026-02-01"}), None, False),
        ("{not json", [BOOKING_TOOL], False),
    ],
)
def test_tool_calls_are_checked_against_the_offered_tools(
    arguments: str, offered: list | None, valid: bool
) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "create_booking", "arguments": arguments},
    }
    row = score_one(
        example_type="tool_invocation",
        tools=offered,
        messages=[
            {"role": "user", "content": "Book 4 people on Feb 1"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
        ],
        feedback={"thumbs": 1},
    )
    assert row["keep"] == valid
    if valid:
        assert row["reason"] == "kept: score 6 >= 5 (valid output +3, thumbs up +3)"
    else:
        assert row["reason"].startswith("dropped: invalid output (invalid tool call")


def test_conversation_continued_needs_a_later_interaction() -> None:
    rows = frame(
        interaction(
            1,
            conversation_id="c-9",
            created_at="2026-01-20T10:00:00.000000Z",
            feedback={"outcome": "accepted_with_edits"},
        ),
        interaction(
            2,
            conversation_id="c-9",
            created_at="2026-01-20T10:05:00.000000Z",
            feedback={"outcome": "accepted_with_edits"},
        ),
        # same timestamps: neither is later than the other
        interaction(3, conversation_id="c-10", created_at="2026-01-20T10:00:00.000000Z"),
        interaction(4, conversation_id="c-10", created_at="2026-01-20T10:00:00.000000Z"),
    )
    scored = score_interactions(rows, QualityPolicy(unrated="drop"))
    assert scored["score"].tolist() == [5.0, 4.0, 3.0, 3.0]
    assert scored["keep"].tolist() == [True, False, False, False]
    assert (
        scored["reason"][0]
        == "kept: score 5 >= 5 (valid output +3, accepted with edits +1, conversation continued +1)"
    )


def test_scored_table_shape_and_lineage() -> None:
    rows = frame(interaction(1), interaction(2), interaction(3, org_id=None))
    scored = score_interactions(rows, QualityPolicy())
    assert list(scored.columns) == SCORED_COLUMNS
    assert scored["source_ids"].tolist() == [["int-1"], ["int-2"], ["int-3"]]
    assert scored["conversation_id"].tolist() == ["c-1", "c-2", "c-3"]
    assert not scored["synthetic"].any()
    assert scored["generator"].isna().all() and scored["source_fact"].isna().all()
    assert scored["score"].dtype == float and scored["keep"].dtype == bool
    assert scored["score"].between(0, 10).all()
    # same content, different interactions: distinct ids; the same input: the same ids
    assert scored["example_id"].is_unique
    assert scored["example_id"].tolist() == score_interactions(rows, QualityPolicy())["example_id"].tolist()


def test_example_id_follows_the_training_messages() -> None:
    plain = score_one()
    corrected = score_one(feedback={"admin_correction": "Yes, filet mignon is +$5."})
    assert plain["example_id"] != corrected["example_id"]


def test_input_frame_is_not_modified() -> None:
    rows = frame(interaction(1, feedback={"admin_correction": "Corrected."}))
    before = copy.deepcopy(rows.to_dict("records"))
    score_interactions(rows, QualityPolicy())
    assert rows.to_dict("records") == before


def test_empty_frame_gives_empty_table() -> None:
    scored = score_interactions(frame(), QualityPolicy())
    assert scored.empty and list(scored.columns) == SCORED_COLUMNS


def test_missing_columns_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match="missing columns: feedback"):
        score_interactions(frame(interaction()).drop(columns=["feedback"]), QualityPolicy())


def test_messages_that_are_not_a_list_are_a_clear_error() -> None:
    with pytest.raises(TypeError, match="int-0.*messages must be a list"):
        score_interactions(frame(interaction(messages="hello")), QualityPolicy())


@pytest.mark.parametrize(
    ("policy", "fields", "keep"),
    [
        (QualityPolicy(use_admin_corrections=False), {"feedback": {"admin_correction": "Fixed."}}, False),
        (QualityPolicy(critic_min=None), {"critic": {"quality_score": 0.99}}, False),
        (QualityPolicy(critic_min=0.5), {"critic": {"quality_score": 0.6}}, True),
        (QualityPolicy(keep_on_booking=False), {"feedback": {"led_to_booking": True}}, False),
        (QualityPolicy(rating_min=None), {"feedback": {"customer_rating": 5}}, False),
        (QualityPolicy(rating_min=3), {"feedback": {"customer_rating": 3}}, True),
        (QualityPolicy(drop_on_thumbs_down=False), {"feedback": {"thumbs": -1, "outcome": "accepted"}}, True),
        (
            QualityPolicy(drop_outcomes=("rejected",)),
            {"feedback": {"outcome": "abandoned", "thumbs": 1}},
            True,
        ),
        (
            QualityPolicy(drop_on_critic_neither=False),
            {"critic": {"best_response": "neither"}, "feedback": {"thumbs": 1}},
            True,
        ),
        (
            QualityPolicy(require_valid_output=False),
            {"answer": "", "feedback": {"thumbs": 1, "outcome": "accepted"}},
            True,
        ),
        (QualityPolicy(threshold=3), {}, True),
        (QualityPolicy(valid_output_weight=0, threshold=3), {"feedback": {"thumbs": 1}}, True),
        (QualityPolicy(valid_output_weight=0, threshold=3, unrated="drop"), {}, False),
    ],
)
def test_policy_settings_change_the_decision(policy: QualityPolicy, fields: dict, keep: bool) -> None:
    assert score_one(policy, **fields)["keep"] == keep


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"thumbs_up_weight": -1}, "thumbs_up_weight must be a finite number >= 0"),
        ({"accepted_weight": float("nan")}, "accepted_weight must be a finite number >= 0"),
        ({"valid_output_weight": 6}, "add up to 12, more than the maximum score 10"),
        ({"threshold": 11}, "threshold must be between 0 and 10"),
        ({"threshold": -1}, "threshold must be between 0 and 10"),
        ({"critic_min": 1.0}, "critic_min must be in"),
        ({"critic_min": -0.1}, "critic_min must be in"),
        ({"rating_min": 6}, "rating_min must be an integer from 1 to 5"),
        ({"drop_outcomes": ("accepted",)}, "cannot both earn points and drop the row"),
        ({"drop_outcomes": ("ignored",)}, "unknown outcomes in drop_outcomes"),
        (
            {
                "threshold": 10,
                "critic_min": None,
                "keep_on_booking": False,
                "rating_min": None,
                "use_admin_corrections": False,
            },
            "nothing would ever be kept",
        ),
    ],
)
def test_illegal_policies_are_rejected(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        QualityPolicy(**settings)


def test_a_single_outcome_string_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not a single string"):
        QualityPolicy(drop_outcomes="rejected")


def test_default_policy_matches_the_seeds() -> None:
    policy = QualityPolicy()
    assert (
        policy.valid_output_weight,
        policy.thumbs_up_weight,
        policy.accepted_weight,
        policy.accepted_with_edits_weight,
        policy.conversation_continued_weight,
    ) == (3, 3, 2, 1, 1)
    assert policy.threshold == 5 and policy.critic_min == 0.9 and policy.rating_min == 4
    assert policy.keep_on_booking and policy.use_admin_corrections and policy.keep_synthetic
    assert policy.max_score == 9


def test_throughput() -> None:
    n = 20_000
    rows = frame(
        *(
            interaction(
                i,
                conversation_id=f"c-{i // 4}",
                created_at=f"2026-01-20T10:00:{i % 4:02d}.000000Z",
                feedback={"thumbs": 1} if i % 2 else {"outcome": "rejected"},
            )
            for i in range(n)
        )
    )
    start = time.process_time()
    scored = score_interactions(rows, QualityPolicy())
    # CPU time of this process: other work on a shared machine does not make the test flaky.
    rate = n / (time.process_time() - start)
    print(f"score_interactions: {rate:,.0f} rows/s")
    assert len(scored) == n and scored["keep"].sum() == n // 2
    assert rate > 5_000

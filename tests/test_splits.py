"""Stable, stratified, conversation-grouped splits (homegrown.data.splits)."""

from __future__ import annotations

import json
import random
from collections import Counter

import pandas as pd
import pyarrow.parquet as pq
import pytest

from homegrown.data.columns import SPLITS
from homegrown.data.splits import (
    MIN_STRATIFIED,
    assign_splits,
    check_no_leakage,
    conversation_hash,
    conversation_types,
    dataset_version,
    write_splits,
)

TOOLS = [
    {"type": "function", "function": {"name": "book", "parameters": {"type": "object", "properties": {}}}}
]


def make_examples(
    counts: dict[str, int], *, turns: int = 1, prefix: str = "c", seed: int = 0
) -> pd.DataFrame:
    """``counts[type]`` conversations of each type, ``turns`` examples each, every answer distinct."""
    rng = random.Random(seed)
    rows = []
    for example_type, n in counts.items():
        for k in range(n):
            conversation = f"{prefix}-{example_type}-{k}"
            for t in range(turns):
                words = " ".join(f"w{rng.randrange(100_000)}" for _ in range(12))
                rows.append(
                    {
                        "example_id": f"{conversation}-t{t}",
                        "conversation_id": conversation,
                        "org_id": "org-1",
                        "example_type": example_type,
                        "messages": [
                            {"role": "user", "content": f"question {conversation} {t}"},
                            {"role": "assistant", "content": f"answer {words}"},
                        ],
                        "tools": TOOLS if example_type == "tool_invocation" else None,
                        "source_ids": [f"int-{conversation}-{t}"],
                        "synthetic": False,
                        "generator": None,
                        "source_fact": None,
                        "created_at": f"2026-01-01T00:00:{t:02d}.000000Z",
                    }
                )
    return pd.DataFrame(rows)


def shares(assignment: dict[str, str], conversations) -> dict[str, float]:
    counts = Counter(assignment[c] for c in conversations)
    total = sum(counts.values())
    return {s: counts[s] / total for s in SPLITS}


# --- assign_splits ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratios", [(0.8, 0.1, 0.1), (0.7, 0.15, 0.15), (0.5, 0.25, 0.25), (1.0, 0.0, 0.0)])
def test_every_conversation_gets_a_split_in_the_requested_shares(ratios) -> None:
    df = make_examples({"faq": 600, "support": 300, "page_generation": 100}, turns=2)
    assignment = assign_splits(df, {}, ratios)
    conversations = df["conversation_id"].unique()
    assert set(assignment) == set(conversations)
    for split, target in zip(SPLITS, ratios):
        assert shares(assignment, conversations)[split] == pytest.approx(target, abs=0.005)


@pytest.mark.parametrize("ratios", [(0.8, 0.1, 0.1), (0.6, 0.2, 0.2)])
def test_old_conversations_never_move_when_new_ones_arrive(ratios) -> None:
    old = make_examples({"faq": 500, "tool_invocation": 60, "chat": 6})
    first = assign_splits(old, {}, ratios)
    new = make_examples({"faq": 150, "tool_invocation": 18, "chat": 2}, prefix="new", seed=1)
    second = assign_splits(pd.concat([old, new], ignore_index=True), first, ratios)
    assert {c: second[c] for c in first} == first
    everything = set(first) | set(new["conversation_id"])
    assert set(second) == everything
    assert shares(second, everything)["test"] == pytest.approx(ratios[2], abs=0.02)
    assert shares(second, new["conversation_id"].unique())["test"] == pytest.approx(ratios[2], abs=0.04)


def test_previous_entries_absent_from_the_data_are_carried_and_keep_their_split() -> None:
    df = make_examples({"faq": 50})
    previous = {"gone-1": "test", "c-faq-0": "test"}
    assignment = assign_splits(df, previous)
    assert assignment["gone-1"] == "test" and assignment["c-faq-0"] == "test"


def test_stratification_gives_each_type_its_share() -> None:
    df = make_examples(
        {"faq": 400, "tool_invocation": 40, "design_choice": 20, "section_edit": MIN_STRATIFIED}
    )
    assignment = assign_splits(df, {})
    for example_type, n in {
        "faq": 400,
        "tool_invocation": 40,
        "design_choice": 20,
        "section_edit": 10,
    }.items():
        convs = df.loc[df["example_type"] == example_type, "conversation_id"].unique()
        counts = Counter(assignment[c] for c in convs)
        assert counts["test"] == round(0.1 * n), example_type
        assert counts["validation"] == round(0.1 * n), example_type
        assert counts["train"] == n - 2 * round(0.1 * n), example_type


def test_new_conversations_fill_the_split_that_is_short() -> None:
    df = make_examples({"faq": 20})
    convs = sorted(df["conversation_id"].unique())
    previous = {c: "train" for c in convs[:10]}  # 10 old conversations, all in train
    assignment = assign_splits(df, previous)
    counts = Counter(assignment[c] for c in convs)
    assert counts == {"train": 16, "validation": 2, "test": 2}


def test_small_types_use_plain_hash_thresholds() -> None:
    df = make_examples({"rare": MIN_STRATIFIED - 1})
    assignment = assign_splits(df, {}, salt="s")
    for conversation in df["conversation_id"].unique():
        h = conversation_hash(conversation, "s")
        expected = "train" if h < 0.8 else "validation" if h < 0.9 else "test"
        assert assignment[conversation] == expected


def test_a_conversations_type_is_that_of_its_first_example() -> None:
    df = pd.DataFrame(
        [
            {
                "conversation_id": "c1",
                "example_id": "c1-b",
                "example_type": "chat",
                "created_at": "2026-01-02T00:00:00.000000Z",
            },
            {
                "conversation_id": "c1",
                "example_id": "c1-a",
                "example_type": "faq",
                "created_at": "2026-01-01T00:00:00.000000Z",
            },
            {
                "conversation_id": "c2",
                "example_id": "c2-b",
                "example_type": "support",
                "created_at": "2026-01-01T00:00:00.000000Z",
            },
            {
                "conversation_id": "c2",
                "example_id": "c2-a",
                "example_type": "design_choice",
                "created_at": "2026-01-01T00:00:00.000000Z",
            },
            {
                "conversation_id": "c3",
                "example_id": "c3-a",
                "example_type": None,
                "created_at": "2026-01-01T00:00:00.000000Z",
            },
        ]
    )
    expected = {"c1": "faq", "c2": "design_choice", "c3": "chat"}  # earliest, then smallest example_id
    assert conversation_types(df).to_dict() == expected
    assert conversation_types(df.iloc[::-1]).to_dict() == expected


def test_assignment_does_not_depend_on_row_order_but_on_salt() -> None:
    df = make_examples({"faq": 200, "support": 30}, turns=3)
    assignment = assign_splits(df, {})
    assert assign_splits(df.sample(frac=1.0, random_state=3), {}) == assignment
    assert assign_splits(df, {}, salt="other") != assignment


@pytest.mark.parametrize(
    "ratios", [(0.8, 0.1), (0.8, 0.1, 0.2), (0.9, 0.2, -0.1), (0.0, 0.5, 0.5), (float("nan"), 0.5, 0.5)]
)
def test_bad_ratios_raise(ratios) -> None:
    with pytest.raises(ValueError, match="ratios|train"):
        assign_splits(make_examples({"faq": 3}), {}, ratios)


def test_bad_previous_and_missing_columns_raise() -> None:
    df = make_examples({"faq": 3})
    with pytest.raises(ValueError, match="unknown splits"):
        assign_splits(df, {"c-faq-0": "holdout"})
    with pytest.raises(ValueError, match="example_type"):
        assign_splits(df.drop(columns="example_type"), {})
    with pytest.raises(ValueError, match="conversation_id"):
        assign_splits(df.assign(conversation_id=None), {})


# --- dataset_version ----------------------------------------------------------------------------------


def test_dataset_version_ignores_row_order_and_follows_content() -> None:
    df = make_examples({"faq": 40}, turns=2)
    assignment = assign_splits(df, {})
    version = dataset_version(df, assignment)
    assert len(version) == 12 and int(version, 16) >= 0
    assert dataset_version(df.sample(frac=1.0, random_state=1), assignment) == version
    assert dataset_version(df.assign(split=df["conversation_id"].map(assignment))) == version
    moved = dict(assignment)
    moved["c-faq-0"] = "test" if assignment["c-faq-0"] != "test" else "train"
    assert dataset_version(df, moved) != version
    assert dataset_version(df.iloc[1:], assignment) != version
    with pytest.raises(ValueError, match="split"):
        dataset_version(df)


# --- write_splits -------------------------------------------------------------------------------------


def test_write_splits_files_counts_and_formats(tmp_path) -> None:
    df = make_examples({"faq": 60, "tool_invocation": 20}, turns=2)
    assignment = assign_splits(df, {})
    result = write_splits(df, assignment, tmp_path / "splits")
    assert result.version == dataset_version(df, assignment)
    assert sum(result.rows.values()) == len(df)
    assert result.per_type["test"] == {"faq": 12, "tool_invocation": 4}  # 6 and 2 conversations, 2 turns each
    manifest = json.loads((tmp_path / "splits" / "manifest.json").read_text())
    assert manifest == {"version": result.version, "rows": result.rows, "per_type": result.per_type}

    for split in SPLITS:
        table = pq.read_table(result.paths[split]["parquet"]).to_pandas()
        assert list(table.columns) == list(df.columns)
        assert table["example_id"].tolist() == sorted(table["example_id"])
        assert len(table) == result.rows[split]
        assert set(table["conversation_id"].map(assignment)) == {split}
        expected = df.set_index("example_id").loc[table["example_id"]]
        assert [json.loads(m) for m in table["messages"]] == expected["messages"].tolist()

        lines = result.paths[split]["jsonl"].read_text().splitlines()
        assert len(lines) == result.rows[split]
        for line, (_, row) in zip(lines, table.iterrows()):
            record = json.loads(line)
            assert record["messages"] == json.loads(row["messages"])
            if row["example_type"] == "tool_invocation":
                assert record["tools"] == TOOLS
            else:
                assert set(record) == {"messages"}


def test_written_files_are_byte_stable_under_row_order(tmp_path) -> None:
    df = make_examples({"faq": 50, "tool_invocation": 12}, turns=2)
    assignment = assign_splits(df, {})
    a = write_splits(df, assignment, tmp_path / "a")
    b = write_splits(df.sample(frac=1.0, random_state=5), assignment, tmp_path / "b")
    assert a.version == b.version
    for split in SPLITS:
        for kind in ("parquet", "jsonl"):
            assert a.paths[split][kind].read_bytes() == b.paths[split][kind].read_bytes()


def test_jsonl_is_what_datasets_reads_for_sft(tmp_path) -> None:
    from datasets import load_dataset

    df = make_examples({"faq": 20, "tool_invocation": 10})
    result = write_splits(df, assign_splits(df, {}), tmp_path / "splits")
    data = load_dataset(
        "json",
        data_files={s: str(p["jsonl"]) for s, p in result.paths.items()},
        cache_dir=str(tmp_path / "cache"),
    )
    assert data["train"].num_rows == result.rows["train"]
    assert data["train"][0]["messages"][-1]["role"] == "assistant"


def test_write_splits_refuses_unassigned_conversations(tmp_path) -> None:
    df = make_examples({"faq": 10})
    assignment = assign_splits(df, {})
    del assignment["c-faq-3"]
    with pytest.raises(ValueError, match="c-faq-3"):
        write_splits(df, assignment, tmp_path)
    assert not list(tmp_path.iterdir())


# --- check_no_leakage ---------------------------------------------------------------------------------


def _in_split(df: pd.DataFrame, assignment: dict[str, str], split: str) -> str:
    return next(c for c in df["conversation_id"] if assignment[c] == split)


def test_clean_splits_have_no_leakage() -> None:
    df = make_examples({"faq": 100, "support": 20}, turns=2)
    assert check_no_leakage(df, assign_splits(df, {})) == []


@pytest.mark.parametrize(
    ("first", "second"), [("train", "test"), ("train", "validation"), ("validation", "test")]
)
def test_planted_near_duplicate_example_across_splits_is_caught(first: str, second: str) -> None:
    df = make_examples({"faq": 100})
    assignment = assign_splits(df, {})
    first_row = df.index[df["conversation_id"] == _in_split(df, assignment, first)][0]
    second_row = df.index[df["conversation_id"] == _in_split(df, assignment, second)][0]
    question = [m for m in df.at[first_row, "messages"] if m["role"] == "user"][-1]["content"]
    leaked = df.at[first_row, "messages"][-1]["content"] + " today"
    df.at[second_row, "messages"] = [
        {"role": "user", "content": question},
        {"role": "assistant", "content": leaked},
    ]
    problems = check_no_leakage(df, assignment)
    assert len(problems) == 1
    assert f"{first} and {second}" in problems[0]
    assert df.at[first_row, "example_id"] in problems[0] and df.at[second_row, "example_id"] in problems[0]


def test_the_same_answer_to_a_different_question_is_not_a_leak() -> None:
    df = make_examples({"faq": 100})
    assignment = assign_splits(df, {})
    first_row = df.index[df["conversation_id"] == _in_split(df, assignment, "train")][0]
    second_row = df.index[df["conversation_id"] == _in_split(df, assignment, "test")][0]
    df.at[second_row, "messages"] = [
        {"role": "user", "content": "something else entirely, asked another way"},
        {"role": "assistant", "content": df.at[first_row, "messages"][-1]["content"]},
    ]
    assert check_no_leakage(df, assignment) == []


def test_short_answers_are_not_compared() -> None:
    df = make_examples({"faq": 100})
    assignment = assign_splits(df, {})
    for split, question in (("train", "Do you cater?"), ("test", "Do you cater weddings?")):
        row = df.index[df["conversation_id"] == _in_split(df, assignment, split)][0]
        df.at[row, "messages"] = [
            {"role": "user", "content": question},
            {"role": "assistant", "content": "Yes, we do cater."},
        ]
    assert check_no_leakage(df, assignment) == []


def test_an_exact_copy_is_caught_whatever_its_length() -> None:
    df = make_examples({"faq": 100})
    assignment = assign_splits(df, {})
    for split in ("train", "test"):
        row = df.index[df["conversation_id"] == _in_split(df, assignment, split)][0]
        df.at[row, "messages"] = [
            {"role": "user", "content": "Do you cater?"},
            {"role": "assistant", "content": "Yes, we do cater."},
        ]
    problems = check_no_leakage(df, assignment)
    assert len(problems) == 1 and problems[0].startswith("the same question and answer in train and test")


def test_conversation_and_example_in_two_splits_are_caught() -> None:
    df = make_examples({"faq": 20}, turns=2)
    assignment = assign_splits(df, {})
    with_split = df.assign(split=df["conversation_id"].map(assignment))
    with_split.loc[with_split["example_id"] == "c-faq-0-t1", "split"] = (
        "test" if assignment["c-faq-0"] != "test" else "train"
    )
    problems = check_no_leakage(with_split)
    assert any(p.startswith("conversation c-faq-0 is in several splits") for p in problems)
    duplicated = pd.concat(
        [with_split, with_split[with_split["example_id"] == "c-faq-1-t0"].assign(split="validation")]
    )
    assert any(p.startswith("example c-faq-1-t0 is in several splits") for p in check_no_leakage(duplicated))


def test_unassigned_rows_are_reported() -> None:
    df = make_examples({"faq": 10})
    assignment = assign_splits(df, {})
    del assignment["c-faq-2"]
    assert check_no_leakage(df, assignment) == ["example c-faq-2-t0 (conversation c-faq-2) has no split"]

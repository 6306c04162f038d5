"""Exact and near-duplicate collapsing (homegrown.data.dedup)."""

from __future__ import annotations

import json
import random
import time

import pandas as pd
import pytest

from homegrown.data.dedup import (
    DUPLICATE_COLUMNS,
    dedup_examples,
    jaccard,
    normalize_text,
    shingle_hashes,
    split_question_answer,
)

LONG_ANSWER = (
    "We do not serve wagyu beef. Our premium options are filet mignon for five dollars more and "
    "lobster tail for ten dollars more per person, both cooked at your table by our chef."
)


def example(
    example_id: str,
    question: str,
    answer: str | dict,
    *,
    score: float = 5.0,
    synthetic: bool = False,
    created_at: str = "2026-01-01T00:00:00.000000Z",
    context: list[dict] | None = None,
    system: str = "You are the assistant of My Hibachi.",
    source_ids: list[str] | None = None,
) -> dict:
    answer_message = answer if isinstance(answer, dict) else {"role": "assistant", "content": answer}
    messages = [
        {"role": "system", "content": system},
        *(context or []),
        {"role": "user", "content": question},
        answer_message,
    ]
    return {
        "example_id": example_id,
        "conversation_id": f"conv-{example_id}",
        "org_id": "org-1",
        "example_type": "faq",
        "messages": messages,
        "tools": None,
        "source_ids": [f"int-{example_id}"] if source_ids is None else source_ids,
        "synthetic": synthetic,
        "generator": "template" if synthetic else None,
        "source_fact": None,
        "created_at": created_at,
        "score": score,
    }


def tool_answer(name: str, arguments: dict) -> dict:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call-1",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }
        ],
    }


def frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


# --- pure functions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello,   World!", "hello world"),
        ("  Straße\tＦＵＬＬ-width ", "strasse full width"),
        ("snake_case [EMAIL]", "snake case email"),
        ("$80/person", "80 person"),
        ("", ""),
    ],
)
def test_normalize_text(text: str, expected: str) -> None:
    assert normalize_text(text) == expected


@pytest.mark.parametrize(
    ("text", "shingle", "count"),
    [
        ("one two three four five", 3, 3),
        ("one two", 3, 1),
        ("one two three", 3, 1),
        ("", 3, 0),
        ("a a a a a a", 2, 1),
        ("one two three four", 1, 4),
    ],
)
def test_shingle_hashes_counts(text: str, shingle: int, count: int) -> None:
    assert shingle_hashes(text, shingle).size == count


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("the cat sat on the mat", "the cat sat on the mat", 1.0),
        ("The cat sat on the mat!", "the cat sat on the mat", 1.0),
        ("the cat sat on the mat", "a dog ran in the park", 0.0),
        ("one two three four five", "one two three four six", 2 / 4),
        ("", "", 1.0),
        ("", "something here", 0.0),
    ],
)
def test_jaccard(a: str, b: str, expected: float) -> None:
    assert jaccard(shingle_hashes(a), shingle_hashes(b)) == pytest.approx(expected)


def test_question_leaves_out_system_prompt_and_splits_context() -> None:
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Do you cater?"},
        {"role": "assistant", "content": "Yes, for up to 50 guests."},
    ]
    last_user, context, answer = split_question_answer(messages)
    assert last_user == "Do you cater?"
    assert "You are helpful" not in context and "Hi" in context and "How can I help" in context
    assert answer == "Yes, for up to 50 guests."
    assert split_question_answer(json.dumps(messages)) == (last_user, context, answer)


def test_tool_call_answer_is_serialised_independent_of_argument_order() -> None:
    a = split_question_answer(
        [{"role": "user", "content": "book"}, tool_answer("book", {"date": "2026-02-01", "guests": 4})]
    )
    b = split_question_answer(
        [{"role": "user", "content": "book"}, tool_answer("book", {"guests": 4, "date": "2026-02-01"})]
    )
    assert a[2] == b[2]
    assert "book" in a[2] and "2026-02-01" in a[2]


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "user", "content": "Hi"}],
        [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}],
        "not json",
    ],
)
def test_split_question_answer_rejects_bad_conversations(messages) -> None:
    with pytest.raises(ValueError):
        split_question_answer(messages)


# --- dedup_examples -----------------------------------------------------------------------------------


def test_exact_duplicates_collapse_despite_case_punctuation_and_system_prompt() -> None:
    kept, dropped = dedup_examples(
        frame(
            example("a", "Do you serve wagyu?", LONG_ANSWER),
            example("b", "do you serve WAGYU", LONG_ANSWER.replace(".", "!"), system="Another system prompt"),
        )
    )
    assert kept["example_id"].tolist() == ["a"]
    assert dropped[["example_id", "duplicate_of", "match"]].values.tolist() == [["b", "a", "exact"]]
    assert dropped["jaccard"].tolist() == [1.0]


def test_near_duplicate_answer_to_the_same_question_collapses() -> None:
    near = LONG_ANSWER.replace("by our chef", "by our friendly chef")
    assert jaccard(shingle_hashes(LONG_ANSWER), shingle_hashes(near)) >= 0.8
    kept, dropped = dedup_examples(
        frame(
            example("a", "Do you serve wagyu?", LONG_ANSWER),
            example("b", "Do you serve wagyu?", near, score=6),
        )
    )
    assert kept["example_id"].tolist() == ["b"]
    row = dropped.iloc[0]
    assert (row["example_id"], row["duplicate_of"], row["match"]) == ("a", "b", "near")
    assert row["jaccard"] == pytest.approx(jaccard(shingle_hashes(LONG_ANSWER), shingle_hashes(near)))
    assert row["question_similarity"] == 1.0


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (
            ("Do you serve wagyu?", LONG_ANSWER),
            ("Can I bring my dog to the party?", LONG_ANSWER),
        ),  # other question
        (
            ("Do you serve wagyu?", LONG_ANSWER),
            ("Do you serve wagyu?", "Yes, wagyu is eighty dollars a person."),
        ),
        (("Do you serve wagyu?", "Yes."), ("Do you serve wagyu?", "No.")),
    ],
)
def test_different_question_or_answer_is_not_a_duplicate(first, second) -> None:
    kept, dropped = dedup_examples(frame(example("a", *first), example("b", *second)))
    assert sorted(kept["example_id"]) == ["a", "b"] and dropped.empty


def test_same_question_in_a_different_conversation_context_is_kept() -> None:
    context = [
        {"role": "user", "content": "I want to plan a birthday party for my daughter next month"},
        {"role": "assistant", "content": "Happy to help plan the birthday party, how many guests?"},
    ]
    kept, dropped = dedup_examples(
        frame(
            example("a", "Do you serve wagyu?", LONG_ANSWER),
            example("b", "Do you serve wagyu?", LONG_ANSWER, context=context),
        )
    )
    assert len(kept) == 2 and dropped.empty


def test_same_context_and_question_collapse() -> None:
    context = [
        {"role": "user", "content": "I want to plan a birthday party for my daughter next month"},
        {"role": "assistant", "content": "Happy to help plan the birthday party, how many guests?"},
    ]
    kept, dropped = dedup_examples(
        frame(
            example("a", "Do you serve wagyu?", LONG_ANSWER, context=context),
            example("b", "Do you serve wagyu?", LONG_ANSWER + " Thanks", context=context),
        )
    )
    assert len(kept) == 1 and dropped["match"].tolist() == ["near"]


@pytest.mark.parametrize(
    ("a_kwargs", "b_kwargs", "expected_kept"),
    [
        ({"score": 9.0}, {"score": 7.0}, "a"),
        ({"score": 7.0}, {"score": 9.0}, "b"),
        ({"synthetic": True}, {"synthetic": False}, "b"),
        ({"created_at": "2026-03-01T00:00:00.000000Z"}, {"created_at": "2026-01-01T00:00:00.000000Z"}, "a"),
        ({"score": 9.0, "synthetic": True}, {"score": 8.0}, "a"),  # score beats provenance
        ({"score": float("nan")}, {"score": 0.0}, "b"),
        ({}, {}, "a"),  # full tie: smallest example_id
    ],
)
def test_best_row_of_a_cluster_is_kept(a_kwargs, b_kwargs, expected_kept) -> None:
    kept, dropped = dedup_examples(
        frame(
            example("a", "Do you serve wagyu?", LONG_ANSWER, **a_kwargs),
            example("b", "Do you serve wagyu?", LONG_ANSWER, **b_kwargs),
        )
    )
    assert kept["example_id"].tolist() == [expected_kept]
    assert dropped["duplicate_of"].tolist() == [expected_kept]


def test_kept_row_gets_the_union_of_source_ids_and_frames_keep_their_columns() -> None:
    df = frame(
        example("a", "Do you serve wagyu?", LONG_ANSWER, source_ids=["i1", "i2"]),
        example("b", "Do you serve wagyu?", LONG_ANSWER + " Enjoy", source_ids=["i3"], score=8),
        example("c", "do you serve wagyu", LONG_ANSWER, source_ids=["i2", "i4"]),
        example("d", "What time do you open?", "We open at five in the evening every day of the week."),
    )
    kept, dropped = dedup_examples(df)
    assert kept["example_id"].tolist() == ["b", "d"]  # input order
    assert kept.set_index("example_id").loc["b", "source_ids"] == ["i1", "i2", "i3", "i4"]
    assert kept.set_index("example_id").loc["d", "source_ids"] == ["int-d"]
    assert list(kept.columns) == list(df.columns)
    assert list(dropped.columns) == list(df.columns) + DUPLICATE_COLUMNS
    assert set(dropped["duplicate_of"]) == {"b"}
    assert len(kept) + len(dropped) == len(df)
    assert df.loc[0, "source_ids"] == ["i1", "i2"]  # input not modified


def test_threshold_decides_borderline_pairs() -> None:
    words = [f"word{i}" for i in range(30)]
    a = " ".join(words)
    b = " ".join(words[:-3] + ["other", "words", "here"])
    score = jaccard(shingle_hashes(a), shingle_hashes(b))
    assert 0.8 < score < 0.9
    df = frame(example("a", "Tell me everything", a), example("b", "Tell me everything", b))
    assert len(dedup_examples(df, threshold=0.8)[0]) == 1
    assert len(dedup_examples(df, threshold=0.9)[0]) == 2
    exact_only = frame(example("a", "Tell me everything", a), example("b", "tell me EVERYTHING!", a))
    assert len(dedup_examples(exact_only, threshold=1.0)[0]) == 1


def test_tool_calls_collapse_only_with_the_same_arguments() -> None:
    df = frame(
        example(
            "a",
            "Book a table for four on February first",
            tool_answer("book", {"date": "2026-02-01", "guests": 4}),
        ),
        example(
            "b",
            "Book a table for four on February first",
            tool_answer("book", {"guests": 4, "date": "2026-02-01"}),
        ),
        example(
            "c",
            "Book a table for four on February first",
            tool_answer("book", {"date": "2026-02-09", "guests": 4}),
        ),
    )
    kept, dropped = dedup_examples(df)
    assert kept["example_id"].tolist() == ["a", "c"]
    assert dropped["example_id"].tolist() == ["b"]


def _random_text(rng: random.Random, vocab: list[str], low: int, high: int) -> str:
    return " ".join(rng.choices(vocab, k=rng.randint(low, high)))


def _planted(n_unique: int, n_dupes: int, seed: int = 0) -> tuple[pd.DataFrame, set[str]]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(3000)]
    rows = [
        example(
            f"u{i}",
            _random_text(rng, vocab, 6, 14),
            _random_text(rng, vocab, 30, 60),
            score=float(rng.randint(0, 10)),
        )
        for i in range(n_unique)
    ]
    dupes = set()
    for k in range(n_dupes):
        original = rows[rng.randrange(n_unique)]
        question, answer = original["messages"][1]["content"], original["messages"][2]["content"]
        answer = answer + " " + rng.choice(vocab) if k % 2 else answer.upper()  # one extra word or exact
        rows.append(example(f"d{k}", question, answer, score=-1.0))  # worse than every original
        dupes.add(f"d{k}")
    return pd.DataFrame(rows), dupes


def test_planted_duplicates_are_found_and_nothing_else() -> None:
    df, dupes = _planted(1500, 300)
    _, dropped = dedup_examples(df)
    assert set(dropped["example_id"]) == dupes
    assert dropped["duplicate_of"].str.startswith("u").all()
    assert (dropped["jaccard"] >= 0.8).all() and (dropped["question_similarity"] >= 0.8).all()
    assert set(dropped["match"]) == {"exact", "near"}


def test_result_does_not_depend_on_row_order() -> None:
    df, _ = _planted(300, 100, seed=1)
    kept, dropped = dedup_examples(df)
    shuffled = df.sample(frac=1.0, random_state=7).reset_index(drop=True)
    kept2, dropped2 = dedup_examples(shuffled)
    assert sorted(kept["example_id"]) == sorted(kept2["example_id"])
    key = ["example_id", "duplicate_of", "match"]
    assert (
        dropped[key].sort_values("example_id").values.tolist()
        == dropped2[key].sort_values("example_id").values.tolist()
    )


def test_empty_frame() -> None:
    df = frame(example("a", "q", "a")).iloc[0:0]
    kept, dropped = dedup_examples(df)
    assert kept.empty and dropped.empty and list(dropped.columns) == list(df.columns) + DUPLICATE_COLUMNS


@pytest.mark.parametrize(
    "kwargs", [{"threshold": 0.0}, {"threshold": 1.5}, {"shingle": 0}, {"shingle": 2.0}]
)
def test_unsupported_parameters_raise(kwargs) -> None:
    with pytest.raises(ValueError):
        dedup_examples(frame(example("a", "q", "a")), **kwargs)


def test_bad_input_raises_a_clear_error() -> None:
    with pytest.raises(ValueError, match="score"):
        dedup_examples(frame(example("a", "q", "a")).drop(columns="score"))
    with pytest.raises(ValueError, match="unique"):
        dedup_examples(frame(example("a", "q", "a"), example("a", "q2", "a2")))
    bad = example("bad-one", "q", "a")
    bad["messages"] = bad["messages"][:-1]
    with pytest.raises(ValueError, match="bad-one"):
        dedup_examples(frame(example("a", "q", "a"), bad))


@pytest.mark.slow
def test_throughput_at_100k_rows() -> None:
    df, dupes = _planted(80_000, 20_000, seed=5)
    started = time.perf_counter()
    _, dropped = dedup_examples(df)
    elapsed = time.perf_counter() - started
    print(f"dedup_examples: {len(df)} rows in {elapsed:.1f}s = {len(df) / elapsed:.0f} rows/s")
    assert set(dropped["example_id"]) == dupes
    assert elapsed < 120

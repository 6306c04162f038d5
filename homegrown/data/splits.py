"""Stable train/validation/test splits, grouped by conversation and stratified by example type.

A conversation is never split: every example of a conversation goes where the conversation goes. A
conversation keeps its split forever once assigned (pass the previous assignment back in), so model
versions trained months apart are compared on the same test conversations.

New conversations are placed by a salted SHA-256 hash of their ``conversation_id``. Within an example
type (the type of the conversation's first example) they are taken in hash order, and each goes to the
split furthest below its target share given everything already assigned in that type, old conversations
included. This keeps every type near the target ratios, and the result depends only on the data, not on
the row order. Types with fewer than ``MIN_STRATIFIED`` conversations are too small to stratify and fall
back to plain hash thresholds.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from homegrown.data.columns import SPLITS
from homegrown.data.dedup import example_features, near_duplicate_pairs, normalize_text, split_question_answer

MIN_STRATIFIED = 10
# Answers shorter than this many words ("Yes, we do.", "You're welcome!") recur across unrelated
# conversations, so the leakage check does not compare them.
MIN_LEAK_WORDS = 5
DEFAULT_RATIOS = (0.8, 0.1, 0.1)


@dataclass(frozen=True)
class SplitsResult:
    """What ``write_splits`` wrote: the dataset version, the files and the row counts."""

    version: str
    paths: dict[str, dict[str, Path]] = field(default_factory=dict)  # split -> {"parquet": .., "jsonl": ..}
    rows: dict[str, int] = field(default_factory=dict)  # split -> examples
    per_type: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> example_type -> examples


def conversation_hash(conversation_id: str, salt: str = "homegrown") -> float:
    """A uniform number in [0, 1) fixed by ``salt`` and ``conversation_id``."""
    digest = hashlib.sha256(f"{salt}\x1f{conversation_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    if len(ratios) != len(SPLITS):
        raise ValueError(f"ratios must give one share per split {SPLITS}, got {tuple(ratios)}")
    values = tuple(float(r) for r in ratios)
    if any(not np.isfinite(r) or r < 0 for r in values) or abs(sum(values) - 1.0) > 1e-9:
        raise ValueError(f"ratios must be non-negative and sum to 1, got {tuple(ratios)}")
    if values[0] == 0:
        raise ValueError("the train share must be positive")
    return values  # type: ignore[return-value]


def _check_assignment(assignment: Mapping[str, str], name: str) -> None:
    bad = {k: v for k, v in assignment.items() if v not in SPLITS}
    if bad:
        sample = dict(list(bad.items())[:5])
        raise ValueError(f"{name} maps conversations to unknown splits (expected one of {SPLITS}): {sample}")


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} needs columns {missing}; got {list(df.columns)}")
    if "conversation_id" in columns and df["conversation_id"].isna().any():
        raise ValueError(f"{what}: {int(df['conversation_id'].isna().sum())} rows have no conversation_id")


def conversation_types(df: pd.DataFrame) -> pd.Series:
    """conversation_id -> example_type of its first example (earliest created_at, then example_id)."""
    first = (
        df.assign(
            example_type=df["example_type"].fillna("chat").astype(str),
            _created=df["created_at"].fillna("").astype(str),
            _id=df["example_id"].astype(str),
        )
        .sort_values(["conversation_id", "_created", "_id"], kind="mergesort")
        .drop_duplicates("conversation_id")
    )
    return pd.Series(first["example_type"].to_numpy(), index=first["conversation_id"].astype(str).to_numpy())


def assign_splits(
    df: pd.DataFrame,
    previous: Mapping[str, str] | None = None,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    salt: str = "homegrown",
) -> dict[str, str]:
    """Map every ``conversation_id`` of ``df`` to ``"train"``, ``"validation"`` or ``"test"``.

    Conversations in ``previous`` keep their split; ``previous`` entries whose conversation is not in
    ``df`` are carried into the result too, so a conversation that leaves the data (filtered out, opted
    out) and comes back later returns to its old split. ``df`` needs ``conversation_id``,
    ``example_type``, ``created_at`` and ``example_id``.
    """
    ratios = _check_ratios(ratios)
    previous = dict(previous or {})
    _check_assignment(previous, "previous")
    _require(df, ["conversation_id", "example_type", "created_at", "example_id"], "assign_splits")

    assignment = dict(previous)
    types = conversation_types(df)
    for _, ids in sorted(types.groupby(types.to_numpy(), sort=False).groups.items()):
        conversations = [str(c) for c in ids]
        new = sorted((conversation_hash(c, salt), c) for c in conversations if c not in previous)
        if len(conversations) < MIN_STRATIFIED:
            for fraction, c in new:
                assignment[c] = _threshold_split(fraction, ratios)
            continue
        counts = Counter(previous[c] for c in conversations if c in previous)
        total = sum(counts.values())
        for _, c in new:
            # The split furthest below its target share once this conversation is added; ties go to the
            # earlier split in SPLITS.
            split = max(
                SPLITS, key=lambda s: (ratios[SPLITS.index(s)] * (total + 1) - counts[s], -SPLITS.index(s))
            )
            assignment[c] = split
            counts[split] += 1
            total += 1
    return assignment


def _threshold_split(fraction: float, ratios: tuple[float, float, float]) -> str:
    cumulative = 0.0
    for split, ratio in zip(SPLITS, ratios):
        cumulative += ratio
        if fraction < cumulative:
            return split
    return next(s for s, r in zip(reversed(SPLITS), reversed(ratios)) if r > 0)


def _with_split(df: pd.DataFrame, assignment: Mapping[str, str] | None) -> pd.DataFrame:
    """``df`` with a ``split`` column taken from ``assignment`` (or kept, when ``assignment`` is None)."""
    if assignment is None:
        if "split" not in df.columns:
            raise ValueError("df has no 'split' column and no assignment was given")
        return df
    _require(df, ["conversation_id"], "splits")
    _check_assignment(assignment, "assignment")
    splits = df["conversation_id"].astype(str).map(assignment)
    if splits.isna().any():
        missing = sorted(df.loc[splits.isna(), "conversation_id"].astype(str).unique())
        raise ValueError(f"{len(missing)} conversations have no split, e.g. {missing[:5]}")
    return df.assign(split=splits.to_numpy())


def dataset_version(df: pd.DataFrame, assignment: Mapping[str, str] | None = None) -> str:
    """12 hex characters of SHA-256 over the sorted ``example_id<TAB>split`` lines; row order does not matter.

    The split comes from the ``split`` column of ``df`` or, when given, from ``assignment``
    (conversation_id -> split).
    """
    frame = _with_split(df, assignment)
    _require(frame, ["example_id"], "dataset_version")
    lines = sorted(f"{e}\t{s}\n" for e, s in zip(frame["example_id"].astype(str), frame["split"].astype(str)))
    return hashlib.sha256("".join(lines).encode()).hexdigest()[:12]


def _plain(value: Any) -> Any:
    """Nested value as plain Python: arrays become lists, JSON strings stay strings."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _nested(value: Any) -> Any:
    """A nested column value as an object (parsing a JSON string); None stays None."""
    if isinstance(value, str):
        return json.loads(value)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return _plain(value)


def _to_parquet_frame(df: pd.DataFrame) -> pd.DataFrame:
    out = df.reset_index(drop=True).copy()
    for column in out.columns:
        if (
            out[column].dtype == object
            and out[column].map(lambda v: isinstance(v, (list, dict, tuple, np.ndarray))).any()
        ):
            out[column] = [
                json.dumps(_plain(v), ensure_ascii=False, sort_keys=True)
                if isinstance(v, (list, dict, tuple, np.ndarray))
                else v
                for v in out[column]
            ]
    return out


def _chat_record(messages: Any, tools: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"messages": _nested(messages)}
    tools = _nested(tools)
    if tools:
        record["tools"] = tools
    return record


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.Table.from_pandas(_to_parquet_frame(frame), preserve_index=False), tmp)
    os.replace(tmp, path)


def _write_text(text: str, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_splits(df: pd.DataFrame, assignment: Mapping[str, str], out_dir: str | Path) -> SplitsResult:
    """Write ``<split>.parquet`` and ``<split>.jsonl`` for every split, and ``manifest.json``, under ``out_dir``.

    Parquet keeps all columns of ``df`` (nested values as JSON strings); the JSONL file has one
    ``{"messages": [...]}`` a line, plus ``"tools"`` where the example offers tools, which is the chat
    format TRL's ``SFTTrainer`` reads. Rows are sorted by ``example_id``, so the same data gives the same
    bytes whatever its row order. Every conversation of ``df`` must be in ``assignment``.
    """
    frame = _with_split(df, assignment)
    _require(frame, ["example_id", "messages"], "write_splits")
    if frame["example_id"].duplicated().any():
        raise ValueError("example_id must be unique")
    version = dataset_version(frame)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = frame.sort_values("example_id", kind="mergesort")
    has_tools = "tools" in frame.columns
    has_type = "example_type" in frame.columns

    paths: dict[str, dict[str, Path]] = {}
    rows: dict[str, int] = {}
    per_type: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        part = frame[frame["split"] == split].drop(columns="split")
        parquet_path, jsonl_path = out / f"{split}.parquet", out / f"{split}.jsonl"
        _write_parquet(part, parquet_path)
        tools = part["tools"] if has_tools else [None] * len(part)
        lines = [
            json.dumps(_chat_record(m, t), ensure_ascii=False) + "\n" for m, t in zip(part["messages"], tools)
        ]
        _write_text("".join(lines), jsonl_path)
        paths[split] = {"parquet": parquet_path, "jsonl": jsonl_path}
        rows[split] = len(part)
        types = (
            part["example_type"].fillna("chat").astype(str)
            if has_type
            else pd.Series("chat", index=part.index)
        )
        per_type[split] = {t: int(n) for t, n in sorted(Counter(types).items())}

    manifest = {"version": version, "rows": rows, "per_type": per_type}
    _write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", out / "manifest.json")
    return SplitsResult(version=version, paths=paths, rows=rows, per_type=per_type)


def cross_split_duplicates(
    df: pd.DataFrame, assignment: Mapping[str, str] | None = None, threshold: float = 0.8
) -> list[tuple[str, str, str, str, float, float]]:
    """Near-duplicate examples in two splits: ``(example_a, split_a, example_b, split_b, answer_j, question_s)``.

    ``split_a`` comes before ``split_b`` in train, validation, test order. An example is a near-duplicate of
    another when its answer (``dedup.near_duplicate_pairs``) and its question (``dedup.question_similarity``,
    the measure de-duplication uses) both reach ``threshold``. The same approved answer to a differently
    worded question is not one. Answers under ``MIN_LEAK_WORDS`` words are not compared.
    """
    frame = df if "split" in df.columns else df.assign(
        split=df["conversation_id"].astype(str).map(assignment or {}).to_numpy())
    answers: dict[str, tuple[list[str], list[str]]] = {s: ([], []) for s in SPLITS}
    features: dict[str, Any] = {}
    for example_id, split, messages in zip(frame["example_id"].astype(str), frame["split"], frame["messages"]):
        try:
            answer = normalize_text(split_question_answer(messages)[2])
        except (ValueError, TypeError) as exc:
            raise ValueError(f"example {example_id!r}: {exc}") from exc
        if split in answers and len(answer.split()) >= MIN_LEAK_WORDS:
            answers[split][0].append(example_id)
            answers[split][1].append(answer)
            features[example_id] = example_features(list(messages))
    found = []
    # Each split is compared with all later splits at once, so every answer is hashed at most twice.
    for k, split_a in enumerate(SPLITS[:-1]):
        ids_a, texts_a = answers[split_a]
        later = [(split, example_id, text) for split in SPLITS[k + 1:] for example_id, text in zip(*answers[split])]
        for i, j, score in near_duplicate_pairs(texts_a, [text for _, _, text in later], threshold):
            split_b, id_b, _ = later[j]
            q = features[ids_a[i]].question_similarity(features[id_b])
            if q >= threshold:
                found.append((ids_a[i], split_a, id_b, split_b, float(score), float(q)))
    return found


def check_no_leakage(
    df: pd.DataFrame, assignment: Mapping[str, str] | None = None, threshold: float = 0.8
) -> list[str]:
    """Problems that would let test answers leak into training; an empty list when there are none.

    Reported: a conversation or an ``example_id`` in two splits, and a near-duplicate example in two
    splits (``cross_split_duplicates``): a near-duplicate answer to a near-duplicate question. The same approved answer to a differently worded question is not a leak: that is what a
    business's FAQ looks like, and holding whole facts out of training would test what the model was never
    taught. Answers under ``MIN_LEAK_WORDS`` words are not compared. The split of a row is its ``split`` column when
    ``df`` has one (e.g. the written files read back), else ``assignment[conversation_id]``; a row
    with neither is reported too.
    """
    _require(df, ["conversation_id", "example_id", "messages"], "check_no_leakage")
    if "split" in df.columns:
        splits = df["split"]
    elif assignment is not None:
        _check_assignment(assignment, "assignment")
        splits = df["conversation_id"].astype(str).map(assignment)
    else:
        raise ValueError("df has no 'split' column and no assignment was given")
    frame = df.assign(split=splits.to_numpy())
    problems = [
        f"example {e} (conversation {c}) has no split"
        for e, c in zip(
            frame.loc[frame["split"].isna(), "example_id"],
            frame.loc[frame["split"].isna(), "conversation_id"],
        )
    ]
    frame = frame[frame["split"].notna()]

    for key, what in (("conversation_id", "conversation"), ("example_id", "example")):
        spread = frame.groupby(frame[key].astype(str))["split"].agg(lambda s: sorted(set(s)))
        for value, in_splits in spread.items():
            if len(in_splits) > 1:
                problems.append(f"{what} {value} is in several splits: {', '.join(in_splits)}")

    for id_a, split_a, id_b, split_b, answer_j, question_s in cross_split_duplicates(frame, None, threshold):
        problems.append(
            f"near-duplicate examples in {split_a} and {split_b}: {id_a} ~ {id_b} "
            f"(answer jaccard {answer_j:.2f}, question similarity {question_s:.2f})"
        )
    return problems

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
from homegrown.data.dedup import ExampleSets, normalize_text, split_question_answer

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
    another when its answer's Jaccard index and its question's similarity (the measures de-duplication
    uses, ``homegrown.data.dedup``) both reach ``threshold``. The same approved answer to a differently
    worded question is not one. Answers under ``MIN_LEAK_WORDS`` words are not compared. Every such pair
    is found (an exact join, see ``ExampleSets.join_keys``), sorted by split, then row.
    """
    frame = df if "split" in df.columns else df.assign(
        split=df["conversation_id"].astype(str).map(assignment or {}).to_numpy())
    ids = frame["example_id"].astype(str).tolist()
    split_rank = [SPLITS.index(s) if s in SPLITS else -1 for s in frame["split"]]
    sets = ExampleSets.of(ids, frame["messages"].tolist())
    pairs, _ = _cross_split_pairs(sets, split_rank, threshold)
    pairs.sort(key=lambda p: (split_rank[p[0]], p[0], p[1]))
    return [
        (ids[i], SPLITS[split_rank[i]], ids[j], SPLITS[split_rank[j]], float(answer_j), float(question_s))
        for i, j, answer_j, question_s in pairs
    ]


def _cross_split_pairs(
    sets: ExampleSets, split_rank: Sequence[int], threshold: float
) -> tuple[list[tuple[int, int, float, float]], int]:
    """Verified near-duplicate pairs ``(i, j, answer_jaccard, question_similarity)`` with ``i`` in an
    earlier split than ``j`` (a rank of -1: no split, never compared) among rows whose answer has at least
    ``MIN_LEAK_WORDS`` words, and the number of candidate pairs verified.

    Candidates are the pairs that share a join key (``ExampleSets.join_keys``), which every pair above
    the threshold does, so none is missed; each is verified with exact Jaccard indexes.
    """
    ranks = np.asarray(split_rank, dtype=np.int64)
    eligible = np.flatnonzero((sets.answer_words >= MIN_LEAK_WORDS) & (ranks >= 0)) if len(ranks) else ranks
    if not len(eligible):
        return [], 0
    offsets, keys = sets.join_keys(threshold, eligible)
    last = len(SPLITS) - 1
    row_keys = [keys[offsets[k] : offsets[k + 1]].tolist() for k in range(len(eligible))]
    rows = eligible.tolist()
    index: dict[int, list[int]] = {}
    for i, keys_i in zip(rows, row_keys):
        if split_rank[i] > 0:
            for key in keys_i:
                index.setdefault(key, []).append(i)
    found, verified = [], 0
    for i, keys_i in zip(rows, row_keys):
        if split_rank[i] == last or not keys_i:
            continue
        candidates = {j for key in keys_i for j in index.get(key, ()) if split_rank[j] > split_rank[i]}
        for j in sorted(candidates):
            verified += 1
            similar = sets.similarity(i, j, threshold)
            if similar is not None:
                found.append((i, j, *similar))
    return found, verified


# ---------------------------------------------------------------------------------------------------------
# The leakage check: every cross-split pair, on the files as written


@dataclass(frozen=True)
class LeakageReport:
    """What the leakage check found (``problems``, empty when the splits are clean) and how much it compared."""

    problems: list[str] = field(default_factory=list)
    examples: int = 0  # rows compared, all splits together
    id_overlaps: int = 0  # conversations and example ids found in more than one split
    exact_matches: int = 0  # groups of examples with the same normalised question and answer in two splits
    near_duplicates: int = 0  # cross-split pairs verified above the threshold (exact matches not counted)
    candidate_pairs: int = 0  # cross-split pairs whose similarities were computed

    @property
    def passed(self) -> bool:
        return not self.problems


def check_no_leakage(
    df: pd.DataFrame, assignment: Mapping[str, str] | None = None, threshold: float = 0.8
) -> list[str]:
    """Problems that would let test answers leak into training; an empty list when there are none.

    See ``leakage_report``, which this returns the problems of.
    """
    return leakage_report(df, assignment, threshold).problems


def audit_split_files(paths: Mapping[str, Mapping[str, str | Path]], threshold: float = 0.8) -> LeakageReport:
    """The leakage check (``leakage_report``) on the split files as written, read back from disk.

    ``paths`` is ``SplitsResult.paths``. Both files of every split are read: training reads the JSONL,
    the evaluation the Parquet. A JSONL line that is not one of the Parquet file's examples is reported
    and compared as an example of its own (id ``<split>.jsonl:<line>``), so a row added to either file
    is caught.
    """
    _check_threshold(threshold)
    missing = [s for s in SPLITS if s not in paths]
    if missing:
        raise ValueError(f"no files for splits {missing}; got {sorted(paths)}")
    ids: list[str] = []
    conversations: list[str | None] = []
    splits: list[str] = []
    messages_of: list[Any] = []
    problems: list[str] = []
    for split in SPLITS:
        parquet_path, jsonl_path = Path(paths[split]["parquet"]), Path(paths[split]["jsonl"])
        table = pd.read_parquet(parquet_path, columns=["example_id", "conversation_id", "messages"])
        messages = [_nested(m) for m in table["messages"]]
        rows = list(zip(table["example_id"].astype(str), messages))
        ids += [e for e, _ in rows]
        conversations += table["conversation_id"].astype(str).tolist()
        splits += [split] * len(rows)
        messages_of += messages

        # write_splits writes the two files in the same order, so a line is first compared with the row
        # at its position, and only a line that differs from it is normalised and looked for elsewhere.
        unmatched: Counter = Counter()
        leftover: list[tuple[str, Any]] = []
        lines = 0
        with jsonl_path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    line_messages = json.loads(line)["messages"]
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise ValueError(f"{jsonl_path}:{number} is not a chat example: {exc}") from exc
                if lines < len(rows) and line_messages == rows[lines][1]:
                    lines += 1
                    continue
                if lines < len(rows):
                    unmatched[_normalised_parts(*rows[lines])] += 1
                    lines += 1
                leftover.append((f"{split}.jsonl:{number}", line_messages))
        unmatched.update(_normalised_parts(*row) for row in rows[lines:])
        extra = []
        for example_id, line_messages in leftover:
            key = _normalised_parts(example_id, line_messages)
            if unmatched[key] > 0:
                unmatched[key] -= 1
            else:
                extra.append(example_id)
                ids.append(example_id)
                conversations.append(None)
                splits.append(split)
                messages_of.append(line_messages)
        if extra:
            problems.append(f"{jsonl_path.name}: {len(extra)} lines are not examples of {parquet_path.name}: "
                            + ", ".join(extra[:5]))
        if sum(unmatched.values()):
            problems.append(f"{jsonl_path.name}: {sum(unmatched.values())} examples of {parquet_path.name} "
                            "are missing")
    return _report(ids, conversations, splits, messages_of, threshold, problems)


def leakage_report(
    df: pd.DataFrame, assignment: Mapping[str, str] | None = None, threshold: float = 0.8
) -> LeakageReport:
    """Every way a test or validation example can also be in an earlier split, checked exhaustively.

    Reported: a row with no split; a conversation or ``example_id`` in two splits; the same normalised
    (last user message, earlier turns, answer) in two splits, whatever its length; and near-duplicates
    in two splits: answers of ``MIN_LEAK_WORDS`` words or more whose Jaccard index reaches
    ``threshold`` and whose questions' similarity reaches it too. The measures are de-duplication's
    (``homegrown.data.dedup``: word 3-shingles of normalised text, the question weighted towards the
    last user message), so the same approved answer to a differently worded question is not a leak.

    No pair is sampled: candidates are all cross-split pairs that share a join key (a token of their
    answers' prefix filter, the rarest ``n - ceil(threshold * n) + 1`` of the ``n`` answer shingles,
    together with one of their last user messages'; see ``ExampleSets.join_keys``), which every pair
    above the threshold does, and each candidate is verified with exact Jaccard indexes. The split of a
    row is its ``split`` column when ``df`` has one, else ``assignment[conversation_id]``.
    """
    _check_threshold(threshold)
    _require(df, ["example_id", "messages"], "check_no_leakage")
    if "split" in df.columns:
        splits = df["split"]
    elif assignment is not None:
        _check_assignment(assignment, "assignment")
        _require(df, ["conversation_id"], "check_no_leakage")
        splits = df["conversation_id"].astype(str).map(assignment)
    else:
        raise ValueError("df has no 'split' column and no assignment was given")
    conversations = df["conversation_id"] if "conversation_id" in df.columns else pd.Series(None, index=df.index)
    no_split = (splits.isna() | ~splits.isin(SPLITS)).to_numpy()
    problems = [
        f"example {e} (conversation {c}) has no split"
        for e, c in zip(df["example_id"][no_split], conversations[no_split])
    ]
    ok = ~no_split
    ids = df["example_id"][ok].astype(str).tolist()
    conversation_ids = [None if pd.isna(c) else str(c) for c in conversations[ok]]
    return _report(ids, conversation_ids, splits[ok].tolist(), df["messages"][ok].tolist(), threshold, problems)


def _check_threshold(threshold: float) -> None:
    if not (isinstance(threshold, (int, float)) and 0.0 < threshold <= 1.0):
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")


def _report(
    ids: list[str],
    conversations: list[str | None],
    splits: list[str],
    messages: list[Any],
    threshold: float,
    problems: list[str],
) -> LeakageReport:
    id_overlaps = 0
    for keys, what in ((conversations, "conversation"), (ids, "example")):
        pairs = pd.DataFrame({"key": keys, "split": splits}).dropna().drop_duplicates()
        spread = pairs[pairs["key"].duplicated(keep=False)]
        for value, in_splits in spread.groupby("key", sort=True)["split"]:
            id_overlaps += 1
            ordered = sorted(in_splits)
            problems.append(f"{what} {value} is in several splits: {', '.join(ordered)}")

    split_rank = [SPLITS.index(s) for s in splits]
    sets = ExampleSets.of(ids, messages)
    exact: dict[bytes, list[int]] = {}
    for i, digest in enumerate(sets.digests):
        exact.setdefault(digest, []).append(i)
    exact_matches = 0
    for rows in exact.values():
        in_splits = sorted({split_rank[i] for i in rows})
        if len(in_splits) > 1:
            exact_matches += 1
            sample = ", ".join(f"{ids[i]} ({SPLITS[split_rank[i]]})" for i in rows[:6])
            problems.append(f"the same question and answer in {' and '.join(SPLITS[r] for r in in_splits)}: {sample}")

    pairs_found, candidates = _cross_split_pairs(sets, split_rank, threshold)
    # An exact match is reported above, once for its group, not again as near-duplicate pairs.
    pairs_found = [p for p in pairs_found if sets.digests[p[0]] != sets.digests[p[1]]]
    for i, j, answer_j, question_s in pairs_found:
        problems.append(
            f"near-duplicate examples in {SPLITS[split_rank[i]]} and {SPLITS[split_rank[j]]}: {ids[i]} ~ {ids[j]} "
            f"(answer jaccard {answer_j:.2f}, question similarity {question_s:.2f})"
        )
    return LeakageReport(problems=problems, examples=len(ids), id_overlaps=id_overlaps,
                         exact_matches=exact_matches, near_duplicates=len(pairs_found), candidate_pairs=candidates)


def _normalised_parts(example_id: str, messages: Any) -> tuple[str, str, str]:
    try:
        return tuple(normalize_text(t) for t in split_question_answer(_nested(messages)))  # type: ignore[return-value]
    except (ValueError, TypeError) as exc:
        raise ValueError(f"example {example_id!r}: {exc}") from exc

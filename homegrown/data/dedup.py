"""Collapse exact and near-duplicate training examples, and find near-duplicate answers across sets.

Two examples are duplicates when both their *question* and their *answer* are near-identical:

- The answer is the last message, which must come from the assistant. A tool call is compared through
  its serialised form (function name and arguments, keys sorted), after any text content.
- The question is the conversation before the answer, split into the last user message and the
  earlier turns (the context). The question similarity is the Jaccard similarity of the last user
  messages when neither example has earlier turns, and otherwise
  ``LAST_USER_WEIGHT * J(last user) + (1 - LAST_USER_WEIGHT) * J(context)``: the last user message
  weighs most, but the same question asked at a different point of a conversation is a different example.
- The system prompt is left out: a business usually sends the same one with every request, so it would
  make unrelated questions look alike, and where it differs the answer differs too.

Similarity is the Jaccard index of word shingles (``shingle`` consecutive words) of normalised text
(Unicode NFKC, case-folded, punctuation removed). Exact duplicates (identical normalised question and
answer) are collapsed first by hashing. Near-duplicate candidates come from an exact join rather than a
sample: prefix filtering (``ShingleSets.prefixes``) on the answer and on the last user message together,
so every pair that can reach the threshold is a candidate, and each candidate is checked with the exact
Jaccard indexes (``ExampleSets.similarity``). Requiring a shared token of the answer *and* of the question
keeps the candidates few where one approved answer is given to thousands of differently worded questions.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
import zlib
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any

import numpy as np
import pandas as pd

from homegrown.data.parallel import map_chunks

LAST_USER_WEIGHT = 0.75
# Rows whose shingle sets are kept as Python sets while candidates are verified (about 1 KiB a row and part).
_SET_CACHE_ROWS = 200_000
DUPLICATE_COLUMNS = ["duplicate_of", "jaccard", "question_similarity", "match"]
REQUIRED_COLUMNS = ["example_id", "messages", "source_ids", "synthetic", "created_at", "score"]

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
# Seeds of crc32 that keep the shingles of the three parts apart when they share one MinHash.
_TAG_LAST_USER = zlib.crc32(b"last-user")
_TAG_CONTEXT = zlib.crc32(b"context")
_TAG_ANSWER = zlib.crc32(b"answer")


# ---------------------------------------------------------------------------------------------------------
# Text features


def normalize_text(text: str) -> str:
    """Unicode NFKC, case-folded, punctuation and underscores turned into spaces, whitespace collapsed."""
    return " ".join(_NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).split())


def shingle_hashes(text: str, shingle: int = 3, seed: int = 0) -> np.ndarray:
    """Sorted unique 32-bit hashes of the word ``shingle``-grams of ``normalize_text(text)``.

    A text shorter than ``shingle`` words is one shingle; an empty text has none.
    """
    return _shingle_hashes(normalize_text(text), shingle, seed)


def _shingle_hashes(normalized: str, shingle: int, seed: int) -> np.ndarray:
    grams = _grams(normalized, shingle)
    return np.unique(
        np.fromiter((zlib.crc32(g.encode(), seed) for g in grams), dtype=np.uint32, count=len(grams))
    )


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard index of two sorted unique arrays; two empty sets are identical (1.0)."""
    if a.size == 0 and b.size == 0:
        return 1.0
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter)


def message_text(message: dict[str, Any]) -> str:
    """The comparable text of one chat message: its content, then its tool calls serialised."""
    content = message.get("content")
    if isinstance(content, list):  # OpenAI content parts
        content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    parts = [content] if isinstance(content, str) and content else []
    calls = message.get("tool_calls") or []
    if calls:
        parts.append(json.dumps([_canonical_call(c) for c in calls], sort_keys=True, ensure_ascii=False))
    return "\n".join(parts)


def _canonical_call(call: Any) -> Any:
    if not isinstance(call, dict):
        return str(call)
    function = call.get("function") if isinstance(call.get("function"), dict) else call
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            pass
    return {"name": function.get("name"), "arguments": arguments}


def split_question_answer(messages: list[dict[str, Any]] | str) -> tuple[str, str, str]:
    """``(last_user, context, answer)`` texts of a conversation whose last message is the answer.

    The system prompt is not part of any of them (see the module docstring). Raises ``ValueError`` when
    the conversation is empty or does not end with an assistant message.
    """
    if isinstance(messages, str):
        messages = json.loads(messages)
    if not isinstance(messages, (list, tuple, np.ndarray)) or len(messages) == 0:
        raise ValueError("messages must be a non-empty list of chat messages")
    *before, answer = list(messages)
    if not isinstance(answer, dict) or answer.get("role") != "assistant":
        raise ValueError("the last message must be the assistant answer")
    turns = [m for m in before if isinstance(m, dict) and m.get("role") != "system"]
    last_user_at = max((i for i, m in enumerate(turns) if m.get("role") == "user"), default=None)
    last_user = message_text(turns[last_user_at]) if last_user_at is not None else ""
    context = "\n".join(
        f"{m.get('role')}: {message_text(m)}" for i, m in enumerate(turns) if i != last_user_at
    )
    return last_user, context, message_text(answer)


# ---------------------------------------------------------------------------------------------------------
# Many rows at once: shingle sets in flat arrays, and an exact join of the pairs that can be similar


@dataclass(frozen=True)
class ShingleSets:
    """The shingle sets of many texts in two flat arrays: row ``i`` is ``values[offsets[i]:offsets[i + 1]]``,
    sorted and unique (the hashes ``shingle_hashes`` gives). A million rows' sets fit in tens of MiB this
    way, where a NumPy array (or a Python set) per row would take gigabytes."""

    values: np.ndarray  # uint32
    offsets: np.ndarray  # int64, one more than there are rows

    @classmethod
    def of(cls, normalized: Sequence[str], shingle: int, seed: int) -> ShingleSets:
        """The sets of texts already normalised with ``normalize_text``."""
        hashes = array("I")
        lengths = np.zeros(len(normalized), dtype=np.int64)
        for i, text in enumerate(normalized):
            grams = _grams(text, shingle)
            lengths[i] = len(grams)
            hashes.extend([zlib.crc32(g.encode(), seed) for g in grams])
        flat = np.frombuffer(hashes, dtype=np.uint32) if len(hashes) else np.zeros(0, dtype=np.uint32)
        rows = np.repeat(np.arange(len(normalized), dtype=np.uint64), lengths)
        keyed = np.unique((rows << np.uint64(32)) | flat.astype(np.uint64))
        counts = np.bincount((keyed >> np.uint64(32)).astype(np.int64), minlength=len(normalized))
        offsets = np.zeros(len(normalized) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return cls((keyed & np.uint64(0xFFFFFFFF)).astype(np.uint32), offsets)

    @classmethod
    def concat(cls, parts: Sequence[ShingleSets]) -> ShingleSets:
        """The rows of ``parts``, one after the other."""
        values = np.concatenate([p.values for p in parts]) if parts else np.zeros(0, dtype=np.uint32)
        offsets = [np.zeros(1, dtype=np.int64)]
        base = 0
        for part in parts:
            offsets.append(part.offsets[1:] + base)
            base += int(part.offsets[-1])
        return cls(values, np.concatenate(offsets))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, rows: np.ndarray) -> ShingleSets:
        """The sets of ``rows`` (positions), in that order."""
        sizes = self.sizes[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        within = np.arange(int(offsets[-1]), dtype=np.int64) - np.repeat(offsets[:-1], sizes)
        return ShingleSets(self.values[np.repeat(self.offsets[:-1][rows], sizes) + within], offsets)

    def prefixes(self, threshold: float) -> tuple[np.ndarray, np.ndarray, int]:
        """Every row's prefix for ``threshold``: ``(offsets, tokens, vocabulary size)``.

        Tokens are the row's shingles ranked rarest first over all rows (ties by hash); a row's prefix is
        its first ``n - ceil(threshold * n) + 1`` of ``n``. Two sets whose Jaccard index reaches
        ``threshold`` share a token of their prefixes (prefix filtering), so pairs that share none need
        not be compared. An empty set (similar only to another empty set) has the one token
        ``vocabulary size``.
        """
        sizes = self.sizes
        vocabulary, inverse, counts = np.unique(self.values, return_inverse=True, return_counts=True)
        rank = np.empty(len(vocabulary), dtype=np.int64)
        rank[np.argsort(counts, kind="stable")] = np.arange(len(vocabulary))
        rows = np.repeat(np.arange(len(self), dtype=np.int64), sizes)
        ranked = np.sort((rows << 32) | rank[inverse.reshape(-1)])
        position = np.arange(len(ranked), dtype=np.int64) - np.repeat(self.offsets[:-1], sizes)
        # The epsilon only ever lengthens a prefix (a rounding error must not shorten it).
        keep = np.maximum(sizes - np.ceil(threshold * sizes - 1e-9).astype(np.int64) + 1, 1)
        chosen = ranked[position < np.repeat(keep, sizes)] & 0xFFFFFFFF
        lengths = np.where(sizes > 0, np.minimum(keep, sizes), 1)
        offsets = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        tokens = np.full(int(offsets[-1]), len(vocabulary), dtype=np.int64)
        filled = np.ones(len(tokens), dtype=bool)
        filled[offsets[:-1][sizes == 0]] = False
        tokens[filled] = chosen
        return offsets, tokens, len(vocabulary)


def _grams(normalized: str, shingle: int) -> list[str]:
    words = normalized.split()
    if len(words) <= shingle:
        return [normalized] if words else []
    return [" ".join(words[i : i + shingle]) for i in range(len(words) - shingle + 1)]


def _set_jaccard(a: frozenset[int], b: frozenset[int]) -> float:
    if not a and not b:
        return 1.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


@dataclass(frozen=True)
class ExampleSets:
    """What the similarity of two examples needs, for many examples: the shingle sets of their last user
    message, earlier turns and answer, a digest of the three normalised texts (equal digests: the same
    question and answer), and the number of words of each answer."""

    last_user: ShingleSets
    context: ShingleSets
    answer: ShingleSets
    digests: list[bytes]
    answer_words: np.ndarray
    shingle: int = 3

    @classmethod
    def of(cls, example_ids: Sequence[str], messages: Sequence[Any], shingle: int = 3) -> ExampleSets:
        """The sets of every example, computed on every core (``homegrown.data.parallel``).

        Raises ``ValueError`` naming the example when a conversation does not end in an assistant answer.
        """
        parts = map_chunks(partial(_example_sets_chunk, shingle=shingle), list(zip(example_ids, messages)))
        if not parts:
            return _example_sets_chunk([], shingle)
        return cls(
            last_user=ShingleSets.concat([p.last_user for p in parts]),
            context=ShingleSets.concat([p.context for p in parts]),
            answer=ShingleSets.concat([p.answer for p in parts]),
            digests=[d for p in parts for d in p.digests],
            answer_words=np.concatenate([p.answer_words for p in parts]),
            shingle=shingle,
        )

    def __len__(self) -> int:
        return len(self.digests)

    def similarity(self, i: int, j: int, threshold: float) -> tuple[float, float] | None:
        """``(answer jaccard, question similarity)`` of rows ``i`` and ``j`` when both reach ``threshold``."""
        answer, last_user, context = self._python_sets
        a_i, a_j = answer(i), answer(j)
        if min(len(a_i), len(a_j)) < threshold * max(len(a_i), len(a_j)) - 1e-9:
            return None  # too different in size to reach the threshold
        answer_j = _set_jaccard(a_i, a_j)
        if answer_j < threshold:
            return None
        question_s = _set_jaccard(last_user(i), last_user(j))
        c_i, c_j = context(i), context(j)
        if c_i or c_j:
            question_s = LAST_USER_WEIGHT * question_s + (1 - LAST_USER_WEIGHT) * _set_jaccard(c_i, c_j)
        if question_s < threshold:
            return None
        return answer_j, question_s

    @cached_property
    def _python_sets(self) -> tuple[Callable[[int], frozenset[int]], ...]:
        """Row -> frozenset of its shingles, per part. A row compared once is often compared again (a
        leader meets every row of its cluster), so the sets of the rows seen last are kept."""

        def part(sets: ShingleSets) -> Callable[[int], frozenset[int]]:
            offsets, values = sets.offsets.tolist(), sets.values
            cache: dict[int, frozenset[int]] = {}

            def row(i: int) -> frozenset[int]:
                found = cache.get(i)
                if found is None:
                    if len(cache) >= _SET_CACHE_ROWS:
                        cache.clear()
                    found = cache[i] = frozenset(values[offsets[i] : offsets[i + 1]].tolist())
                return found

            return row

        return part(self.answer), part(self.last_user), part(self.context)

    def join_keys(self, threshold: float, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Keys such that two rows similar at ``threshold`` share one: ``(offsets, keys)``, row ``k`` of
        ``rows`` (default: all) having ``keys[offsets[k]:offsets[k + 1]]``.

        A key is a pair (answer prefix token, last-user prefix token) with a class of the answer's size: a
        near-duplicate's answer reaches ``threshold`` and its last user message reaches the least
        last-user similarity that can still give a question similarity of ``threshold``, so it shares a
        token of both prefixes, and its answer's size is within the threshold's ratio. Requiring all
        three is what keeps the join near linear where one answer is given to many different questions.
        Keys that only one row has are left out (they can pair nothing), and the rest are numbered
        densely.
        """
        rows = np.arange(len(self), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        answer_offsets, answer_tokens, _ = self.answer.take(rows).prefixes(threshold)
        question_threshold = min(threshold, (threshold - (1 - LAST_USER_WEIGHT)) / LAST_USER_WEIGHT)
        if question_threshold > 0:
            question_offsets, question_tokens, vocabulary = self.last_user.take(rows).prefixes(question_threshold)
        else:  # any last user message can reach the threshold through the earlier turns
            question_offsets, question_tokens, vocabulary = np.arange(len(rows) + 1), np.zeros(len(rows), np.int64), 0
        per_row_a, per_row_q = np.diff(answer_offsets), np.diff(question_offsets)
        # Every (answer token, question token) pair of a row: each answer token repeated once per question token.
        answer_row = np.repeat(np.arange(len(rows), dtype=np.int64), per_row_a)
        repeats = per_row_q[answer_row]
        a_index = np.repeat(np.arange(len(answer_tokens), dtype=np.int64), repeats)
        starts = np.zeros(len(repeats) + 1, dtype=np.int64)
        np.cumsum(repeats, out=starts[1:])
        within = np.arange(int(starts[-1]), dtype=np.int64) - np.repeat(starts[:-1], repeats)
        q_index = question_offsets[:-1][answer_row[a_index]] + within
        keys = answer_tokens[a_index] * (vocabulary + 1) + question_tokens[q_index]
        key_rows = answer_row[a_index]
        # Answers whose sizes are further apart than the threshold allows cannot be similar: with classes of
        # sizes whose logarithms lie ``-log(threshold)`` apart, such a pair's classes differ by at most one,
        # so every key is given under the row's class and the next one.
        sizes = np.maximum(self.answer.sizes[rows], 1)
        size_class = sizes if threshold >= 1 else np.floor(np.log(sizes) / -math.log(threshold)).astype(np.int64)
        classes = int(size_class.max(initial=0)) + 2
        keys = np.repeat(keys * classes + size_class[key_rows], 2) + np.tile(np.array([0, 1]), len(keys))
        key_rows = np.repeat(key_rows, 2)
        _, dense, counts = np.unique(keys, return_inverse=True, return_counts=True)
        dense = dense.reshape(-1)
        shared = counts[dense] > 1
        per_row = np.bincount(key_rows[shared], minlength=len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(per_row, out=offsets[1:])
        return offsets, dense[shared]


def _example_sets_chunk(rows: Sequence[tuple[str, Any]], shingle: int) -> ExampleSets:
    last_users, contexts, answers, digests = [], [], [], []
    for example_id, messages in rows:
        try:
            parts = tuple(normalize_text(t) for t in split_question_answer(messages))
        except (ValueError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"example {example_id!r}: {exc}") from exc
        last_users.append(parts[0])
        contexts.append(parts[1])
        answers.append(parts[2])
        digests.append(hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).digest())
    return ExampleSets(
        last_user=ShingleSets.of(last_users, shingle, _TAG_LAST_USER),
        context=ShingleSets.of(contexts, shingle, _TAG_CONTEXT),
        answer=ShingleSets.of(answers, shingle, _TAG_ANSWER),
        digests=digests,
        answer_words=np.fromiter((len(a.split()) for a in answers), dtype=np.int64, count=len(answers)),
        shingle=shingle,
    )


def _check_params(threshold: float, shingle: int) -> None:
    if not (isinstance(threshold, (int, float)) and 0.0 < threshold <= 1.0):
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    if not (isinstance(shingle, int) and 1 <= shingle <= 16):
        raise ValueError(f"shingle must be an integer in [1, 16], got {shingle!r}")


# ---------------------------------------------------------------------------------------------------------
# De-duplication of a table of examples


def dedup_examples(
    df: pd.DataFrame, *, threshold: float = 0.8, shingle: int = 3
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Collapse exact and near-duplicate examples; return ``(kept, dropped)``.

    ``df`` has the EXAMPLE columns plus ``score`` (see ``homegrown.data.columns``). Rows are duplicates
    when both the question similarity and the answer Jaccard index reach ``threshold`` (exact duplicates
    always). Of each cluster the best row is kept: highest ``score``, then non-synthetic, then newest
    ``created_at``, then smallest ``example_id``; it gets the sorted union of the cluster's ``source_ids``.
    Every dropped row is within ``threshold`` of the row it was collapsed into.

    ``kept`` has the columns of ``df`` in the input row order. ``dropped`` has them too, plus
    ``duplicate_of`` (the kept ``example_id``), ``jaccard`` (answer Jaccard to that row),
    ``question_similarity`` and ``match`` (``"exact"`` or ``"near"``).

    The result does not depend on the input row order. Raises ``ValueError`` on unsupported parameters,
    missing columns, repeated ``example_id`` or a conversation that does not end in an assistant answer.
    """
    _check_params(threshold, shingle)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"dedup_examples needs columns {missing}; got {list(df.columns)}")
    repeated = df["example_id"][df["example_id"].duplicated()].unique().tolist()
    if repeated:
        raise ValueError(f"example_id must be unique; repeated: {repeated[:5]}")
    n = len(df)

    example_ids = df["example_id"].astype(str).tolist()
    sets = ExampleSets.of(example_ids, df["messages"].tolist(), shingle)

    order = _priority_order(df)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)

    # Exact pass: identical normalised (last user, context, answer) collapse to the best of them.
    keeper_of = np.arange(n)  # row -> row it was collapsed into (itself when kept)
    similarity = np.ones((n, 2))  # row -> (answer jaccard, question similarity) to its keeper
    match = np.full(n, "exact", dtype=object)
    exact_rep: dict[bytes, int] = {}
    reps: list[int] = []
    for i in order:
        rep = exact_rep.setdefault(sets.digests[i], int(i))
        if rep == i:
            reps.append(int(i))
        else:
            keeper_of[i] = rep

    # Near pass over the exact representatives, best first: each row joins the most similar row already
    # kept (a "leader") or becomes a leader itself, so every cluster is a star around its best row.
    # Candidates are the leaders that share a join key with the row; rows without a shared key are leaders.
    reps_array = np.asarray(reps, dtype=np.int64)
    key_offsets, keys = sets.join_keys(threshold, reps_array)
    index: dict[int, list[int]] = {}
    for position, i in enumerate(reps):
        start, end = key_offsets[position], key_offsets[position + 1]
        if start == end:
            continue
        row_keys = keys[start:end].tolist()
        best: tuple[float, int] | None = None
        seen: set[int] = set()
        for key in row_keys:
            for leader in index.get(key, ()):
                if leader in seen:
                    continue
                seen.add(leader)
                found = sets.similarity(i, leader, threshold)
                if found is None:
                    continue
                candidate = (min(found), -int(rank[leader]))  # most similar, then the better one
                if best is None or candidate > best:
                    best = candidate
                    keeper_of[i] = leader
                    similarity[i] = found
                    match[i] = "near"
        if best is None:
            for key in row_keys:
                index.setdefault(key, []).append(i)

    # An exact copy of a representative that joined a leader joins that leader, with the same similarity.
    for i in range(n):
        rep = keeper_of[i]
        if rep != i and keeper_of[rep] != rep:
            keeper_of[i] = keeper_of[rep]
            similarity[i] = similarity[rep]
            match[i] = match[rep]
    kept_mask = keeper_of == np.arange(n)

    merged: dict[int, set[str]] = {}
    for i, sources in enumerate(df["source_ids"]):
        merged.setdefault(int(keeper_of[i]), set()).update(_as_list(sources))

    kept = df[kept_mask].copy()
    kept["source_ids"] = [sorted(merged[i]) for i in np.flatnonzero(kept_mask)]
    dropped_rows = np.flatnonzero(~kept_mask)
    dropped = df.iloc[dropped_rows].copy()
    dropped["duplicate_of"] = [example_ids[keeper_of[i]] for i in dropped_rows]
    dropped["jaccard"] = similarity[dropped_rows, 0]
    dropped["question_similarity"] = similarity[dropped_rows, 1]
    dropped["match"] = match[dropped_rows]
    return kept.reset_index(drop=True), dropped.reset_index(drop=True)


def _priority_order(df: pd.DataFrame) -> np.ndarray:
    """Row positions best first: highest score, non-synthetic, newest, then smallest example_id."""
    keys = pd.DataFrame(
        {
            "score": pd.to_numeric(df["score"], errors="coerce").fillna(-math.inf).to_numpy(dtype=float),
            "synthetic": df["synthetic"].fillna(False).astype(bool).to_numpy(),
            "created_at": df["created_at"].fillna("").astype(str).to_numpy(),
            "example_id": df["example_id"].astype(str).to_numpy(),
        }
    )
    keys = keys.sort_values(
        ["score", "synthetic", "created_at", "example_id"],
        ascending=[False, True, False, True],
        kind="mergesort",
    )
    return keys.index.to_numpy()


def _as_list(value: Any) -> list[str]:
    if not isinstance(value, (list, tuple, np.ndarray, str)) and pd.isna(value):
        return []
    if isinstance(value, str):
        value = json.loads(value) if value.startswith("[") else [value]
    return [str(v) for v in value]

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
answer) are collapsed first by hashing; only the remaining rows go through MinHash LSH (``datasketch``),
whose candidates are then checked with the exact Jaccard index of the shingle sets.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from datasketch import MinHash, MinHashLSH

LAST_USER_WEIGHT = 0.75
MINHASH_SEED = 1
# (false positive, false negative) weights for choosing the LSH bands: a false positive only costs one exact
# Jaccard check, a false negative leaves a duplicate in, so recall is favoured.
LSH_WEIGHTS = (0.05, 0.95)
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
    words = normalized.split()
    if len(words) <= shingle:
        grams = [normalized] if words else []
    else:
        grams = [" ".join(words[i : i + shingle]) for i in range(len(words) - shingle + 1)]
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


@dataclass(frozen=True)
class _Features:
    last_user: np.ndarray
    context: np.ndarray
    answer: np.ndarray

    @classmethod
    def of(cls, normalized: tuple[str, str, str], shingle: int) -> _Features:
        last_user, context, answer = normalized
        return cls(
            _shingle_hashes(last_user, shingle, _TAG_LAST_USER),
            _shingle_hashes(context, shingle, _TAG_CONTEXT),
            _shingle_hashes(answer, shingle, _TAG_ANSWER),
        )

    def question_similarity(self, other: _Features) -> float:
        last = jaccard(self.last_user, other.last_user)
        if self.context.size == 0 and other.context.size == 0:
            return last
        return LAST_USER_WEIGHT * last + (1 - LAST_USER_WEIGHT) * jaccard(self.context, other.context)

    def lsh_set(self) -> np.ndarray:
        """The set the LSH index sees: last user message and answer (the context is checked afterwards)."""
        return np.concatenate([self.last_user, self.answer])


def example_features(messages: list[dict[str, Any]], shingle: int = 3) -> _Features:
    """Shingle features of one example; ``a.question_similarity(b)`` is the measure ``dedup_examples`` uses."""
    return _Features.of(tuple(normalize_text(t) for t in split_question_answer(messages)), shingle)


def question_similarity(messages_a: list[dict[str, Any]], messages_b: list[dict[str, Any]], shingle: int = 3) -> float:
    """The question similarity ``dedup_examples`` uses (last user message, and earlier turns when present)."""
    return example_features(messages_a, shingle).question_similarity(example_features(messages_b, shingle))


def _minhash(hashes: np.ndarray, permutations: np.ndarray) -> MinHash:
    m = MinHash(
        num_perm=permutations.shape[1],
        seed=MINHASH_SEED,
        hashfunc=int,
        permutations=permutations,
        scheme="affine32",
    )
    if hashes.size:
        m.update_batch(hashes.tolist())
    return m


def _permutations(num_perm: int) -> np.ndarray:
    return MinHash(num_perm=num_perm, seed=MINHASH_SEED, scheme="affine32").permutations


def _lsh_index(threshold: float, num_perm: int) -> MinHashLSH:
    # Above 0.95 the optimal banding degenerates to one band, which datasketch rejects; a lower index
    # threshold only adds candidates, which the exact check removes.
    return MinHashLSH(threshold=min(max(threshold, 0.05), 0.95), num_perm=num_perm, weights=LSH_WEIGHTS)


def _check_params(threshold: float, num_perm: int, shingle: int) -> None:
    if not (isinstance(threshold, (int, float)) and 0.0 < threshold <= 1.0):
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    if not (isinstance(num_perm, int) and 16 <= num_perm <= 1024):
        raise ValueError(f"num_perm must be an integer in [16, 1024], got {num_perm!r}")
    if not (isinstance(shingle, int) and 1 <= shingle <= 16):
        raise ValueError(f"shingle must be an integer in [1, 16], got {shingle!r}")


# ---------------------------------------------------------------------------------------------------------
# De-duplication of a table of examples


def dedup_examples(
    df: pd.DataFrame, *, threshold: float = 0.8, num_perm: int = 64, shingle: int = 3
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
    _check_params(threshold, num_perm, shingle)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"dedup_examples needs columns {missing}; got {list(df.columns)}")
    repeated = df["example_id"][df["example_id"].duplicated()].unique().tolist()
    if repeated:
        raise ValueError(f"example_id must be unique; repeated: {repeated[:5]}")
    n = len(df)

    example_ids = df["example_id"].astype(str).tolist()
    normalized: list[tuple[str, str, str]] = []  # (last user, context, answer) per row
    for example_id, messages in zip(example_ids, df["messages"]):
        try:
            last_user, context, answer = split_question_answer(messages)
            normalized.append((normalize_text(last_user), normalize_text(context), normalize_text(answer)))
        except (ValueError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"example {example_id!r}: {exc}") from exc

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
        key = hashlib.blake2b("\x1f".join(normalized[i]).encode(), digest_size=16).digest()
        rep = exact_rep.setdefault(key, int(i))
        if rep == i:
            reps.append(int(i))
        else:
            keeper_of[i] = rep

    # Near pass over the exact representatives, best first: each row joins the most similar row already
    # kept (a "leader") or becomes a leader itself, so every cluster is a star around its best row.
    permutations = _permutations(num_perm)
    # The index sees only the last user message and the answer. Its threshold is lowered to the smallest
    # last-user similarity that can still reach `threshold` through the context, so no such pair is missed.
    lsh_threshold = (threshold - (1 - LAST_USER_WEIGHT)) / LAST_USER_WEIGHT
    lsh = _lsh_index(lsh_threshold, num_perm)
    # Shingle sets of leaders that met a candidate, recomputed on first use rather than kept for every row.
    leader_features: dict[int, _Features] = {}
    for i in reps:
        features = _Features.of(normalized[i], shingle)
        minhash = _minhash(features.lsh_set(), permutations)
        best: tuple[float, int] | None = None
        for leader in lsh.query(minhash):
            other = leader_features.get(leader)
            if other is None:
                other = leader_features[leader] = _Features.of(normalized[leader], shingle)
            answer_j = jaccard(features.answer, other.answer)
            if answer_j < threshold:
                continue
            question_s = features.question_similarity(other)
            if question_s < threshold:
                continue
            candidate = (min(answer_j, question_s), -int(rank[leader]))  # most similar, then the better one
            if best is None or candidate > best:
                best = candidate
                keeper_of[i] = leader
                similarity[i] = (answer_j, question_s)
                match[i] = "near"
        if best is None:
            lsh.insert(i, minhash, check_duplication=False)

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


# ---------------------------------------------------------------------------------------------------------
# Near-duplicate answers across two sets


def near_duplicate_pairs(
    answers_a: Sequence[str],
    answers_b: Sequence[str],
    threshold: float = 0.8,
    *,
    num_perm: int = 64,
    shingle: int = 3,
) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, jaccard)`` with ``jaccard(answers_a[i], answers_b[j]) >= threshold``, sorted by (i, j).

    The Jaccard index is over word shingles of normalised text, as in ``dedup_examples``; empty answers
    (no words) are never reported. Candidates come from MinHash LSH over ``answers_b`` and are then
    checked exactly, so a reported pair is always above the threshold.
    """
    _check_params(threshold, num_perm, shingle)
    permutations = _permutations(num_perm)
    lsh = _lsh_index(threshold, num_perm)
    sets_b: list[np.ndarray] = []
    for j, text in enumerate(answers_b):
        hashes = shingle_hashes(text, shingle)
        sets_b.append(hashes)
        if hashes.size:
            lsh.insert(j, _minhash(hashes, permutations), check_duplication=False)
    pairs = []
    for i, text in enumerate(answers_a):
        hashes = shingle_hashes(text, shingle)
        if hashes.size == 0:
            continue
        for j in lsh.query(_minhash(hashes, permutations)):
            score = jaccard(hashes, sets_b[j])
            if score >= threshold:
                pairs.append((i, int(j), score))
    return sorted(pairs)

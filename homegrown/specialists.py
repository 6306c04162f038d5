"""Specialists: one LoRA adapter per example type, trained on that type's slice of the same splits.

The seeds plan several adapters over one base (recipes, operations, nutrition...). Here a specialist is
the base model plus an adapter trained only on one ``example_type``'s train rows. It is evaluated on that
type's test rows beside the base and the general candidate (the merged, quantized model trained on every
row), gated as any candidate is (the general model plays the champion: the specialist must keep up with it),
and served by the gateway from one loaded base with the adapter applied per request
(:class:`homegrown.gateway.backends.LlamaCppBackend` with ``adapters``).

This module holds the pure parts: which types get a specialist, the slices, and the verdict against the
general model. The assets in ``assets/specialists.py`` train, evaluate and deploy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from homegrown.evaluation.metrics import HEADLINE_METRICS, LOWER_IS_BETTER
from homegrown.gateway.trust import EXAMPLE_TYPES

COLUMN = "example_type"
GENERAL_TYPE = "chat"  # what the gateway records for a request that declares no type


@dataclass(frozen=True)
class SliceCounts:
    """Rows of one example type per split, and whether (and why not) it gets a specialist."""

    example_type: str
    train: int
    validation: int
    test: int
    chosen: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_types(parquet_path: Path | str) -> list[str]:
    """The example type of every row of a split, in file order (the JSONL file has the same order)."""
    frame = pd.read_parquet(parquet_path, columns=[COLUMN])
    return frame[COLUMN].fillna("chat").astype(str).tolist()


def choose_types(counts: Mapping[str, Mapping[str, int]], wanted: Sequence[str], min_train_rows: int,
                 min_test_rows: int) -> list[SliceCounts]:
    """Which example types get a specialist. ``counts``: split -> type -> rows. ``wanted`` empty means every
    type with at least ``min_train_rows`` train and ``min_test_rows`` test rows; a type named in ``wanted``
    that falls short is reported, not trained (a specialist on a handful of rows would only overfit).
    ``chat`` (undeclared requests, the general model's) and types the gateway does not route are never
    chosen."""
    types = sorted({t for split in counts.values() for t in split} | set(wanted))
    out = []
    for example_type in types:
        train = counts.get("train", {}).get(example_type, 0)
        validation = counts.get("validation", {}).get(example_type, 0)
        test = counts.get("test", {}).get(example_type, 0)
        if wanted and example_type not in wanted:
            chosen, reason = False, "not in the configured types"
        elif example_type == GENERAL_TYPE:
            chosen, reason = False, "requests that declare no type are the general model's"
        elif example_type not in EXAMPLE_TYPES:
            chosen, reason = False, f"the gateway records and routes only {', '.join(EXAMPLE_TYPES)}"
        elif train < min_train_rows:
            chosen, reason = False, f"{train} train rows, fewer than min_train_rows={min_train_rows}"
        elif test < min_test_rows:
            chosen, reason = False, f"{test} test rows, fewer than min_test_rows={min_test_rows}"
        else:
            chosen, reason = True, "enough rows"
        out.append(SliceCounts(example_type, train, validation, test, chosen, reason))
    return out


def write_slice(jsonl_path: Path | str, types: Sequence[str], example_type: str, out_path: Path) -> int:
    """Write the lines of ``jsonl_path`` whose row has ``example_type`` to ``out_path``; returns how many."""
    lines = Path(jsonl_path).read_text(encoding="utf-8").splitlines(keepends=True)
    if len(lines) != len(types):
        raise ValueError(f"{jsonl_path} has {len(lines)} lines but its parquet has {len(types)} rows")
    kept = [line for line, row_type in zip(lines, types, strict=True) if row_type == example_type]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("".join(kept), encoding="utf-8")
    return len(kept)


def versus_general(diffs: Mapping[str, tuple[float, float, float]]) -> dict[str, Any]:
    """Does the specialist beat the general model on its slice? ``diffs``: metric -> paired bootstrap
    ``(mean, lo, hi)`` of specialist minus general over the same examples.

    ``better``/``worse``: metrics whose whole 95% interval is on that side of zero (a lower-is-better
    metric counts the other way); ``verdict``: ``better`` when some metric is better and none worse,
    ``worse`` when some is worse and none better, ``mixed`` with both, ``no difference beyond noise``
    with neither.
    """
    better, worse = [], []
    for metric, (_mean, lo, hi) in sorted(diffs.items()):
        if metric not in HEADLINE_METRICS and metric not in LOWER_IS_BETTER:
            continue
        sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
        low, high = sorted((sign * lo, sign * hi))
        if low > 0:
            better.append(metric)
        elif high < 0:
            worse.append(metric)
    if better and worse:
        verdict = "mixed"
    elif better:
        verdict = "better"
    elif worse:
        verdict = "worse"
    else:
        verdict = "no difference beyond noise"
    return {"verdict": verdict, "better": better, "worse": worse,
            "differences": {m: {"mean": d[0], "lo": d[1], "hi": d[2]} for m, d in sorted(diffs.items())}}


SHOWN_METRICS = ("fact_accuracy", "hallucination_rate", "token_f1", "json_validity", "tool_exact_match",
                 "latency_p50_s", "tokens_per_s")


def summary_table(specialists: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table: per type, specialist against general (and base) on the slice, and the verdicts."""
    head = ("| type | test rows | model | " + " | ".join(SHOWN_METRICS) + " | gate | vs general |\n"
            "|---|---:|---|" + "---:|" * len(SHOWN_METRICS) + "---|---|")
    rows = [head]
    for item in specialists:
        for model in ("specialist", "general", "base"):
            metrics = item["metrics"].get(model) or {}
            cells = ["-" if metrics.get(m) is None else f"{metrics[m]:.3g}" for m in SHOWN_METRICS]
            gate = ("passed" if item["gate_passed"] else "blocked") if model == "specialist" else ""
            versus = item["versus_general"]["verdict"] if model == "specialist" else ""
            rows.append(f"| {item['example_type']} | {item['test_rows']} | {model} | " + " | ".join(cells)
                        + f" | {gate} | {versus} |")
    return "\n".join(rows)


def read_summary(path: Path | str) -> dict[str, Any]:
    return json.loads(Path(path).read_text())

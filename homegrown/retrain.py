"""When to retrain: enough new, good examples since the champion's dataset, and not too soon after the last."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from homegrown.store import ArtifactStore, read_parquet


@dataclass(frozen=True)
class RetrainDecision:
    run: bool
    reason: str
    new_examples: int


def decide_retrain(new_examples: int, min_new: int, seconds_since_last: float | None, cooldown_s: float,
                   rollout_in_progress: str | None = None) -> RetrainDecision:
    """Pure rule: retrain once ``min_new`` new good examples arrived, at most once per ``cooldown_s``, and
    not while a staged rollout is deciding (``rollout_in_progress``: what is rolling out). A candidate
    deployed then would replace the challenger and throw away the live evidence gathered on it; the retrain
    waits until the rollout promotes or rolls back, and its examples are still counted then."""
    if min_new < 1:
        raise ValueError(f"min_new must be at least 1, got {min_new}")
    if rollout_in_progress and new_examples >= min_new:
        return RetrainDecision(False, f"{new_examples} new good examples, but a staged rollout of "
                                      f"{rollout_in_progress} is in progress; retraining waits for its "
                                      "promotion or rollback", new_examples)
    if new_examples < min_new:
        return RetrainDecision(False, f"{new_examples} new good examples since the champion's dataset; "
                                      f"waiting for {min_new}", new_examples)
    if seconds_since_last is not None and seconds_since_last < cooldown_s:
        return RetrainDecision(False, f"{new_examples} new good examples, but the last retrain was "
                                      f"{seconds_since_last:.0f} s ago (cooldown {cooldown_s:.0f} s)", new_examples)
    return RetrainDecision(True, f"{new_examples} new good examples >= {min_new}", new_examples)


def champion_example_ids(store: ArtifactStore, dataset_version: str | None) -> set[str]:
    """Example ids of the dataset the champion was trained on (all three splits)."""
    if not dataset_version:
        return set()
    folder = store.fetch("dataset_splits", dataset_version)
    ids: set[str] = set()
    for parquet in folder.glob("*.parquet"):
        ids.update(read_parquet(parquet)["example_id"])
    return ids


def count_new_good_examples(store: ArtifactStore, champion_dataset_version: str | None) -> tuple[int, str | None]:
    """Kept (policy-passing), non-synthetic examples of the latest scored dataset the champion never saw.

    Returns the count and the scored dataset version it was computed on (None when nothing is scored yet).
    """
    scored_info = store.latest("scored_dataset")
    if not scored_info or not Path(scored_info["path"]).exists():
        return 0, None
    scored = read_parquet(scored_info["path"])
    kept = scored[scored["keep"] & ~scored["synthetic"].astype(bool)]
    seen = champion_example_ids(store, champion_dataset_version)
    return int((~kept["example_id"].isin(seen)).sum()), scored_info["version"]

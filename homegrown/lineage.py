"""Lineage both ways: which datasets, models and deployments an interaction reached, and what a model saw."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from homegrown.store import ArtifactStore, read_parquet
from homegrown.tracking import Tracker


def _raw_state(store: ArtifactStore, interaction_id: str) -> dict[str, Any]:
    raw = store.latest("raw_interactions")
    if not raw or not Path(raw["db_path"]).exists():
        return {"status": "unknown", "reason": "raw_interactions has not been materialised"}
    with sqlite3.connect(raw["db_path"]) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "interactions" in tables:
            row = db.execute("SELECT source FROM interactions WHERE id = ?", (interaction_id,)).fetchone()
            if row:
                return {"status": "ingested", "source": row[0]}
        if "quarantine" in tables:
            rows = db.execute("SELECT file, line, reason FROM quarantine WHERE raw LIKE ?",
                              (f'%"{interaction_id}"%',)).fetchall()
            if rows:
                return {"status": "quarantined", "where": [{"file": f, "line": n, "reason": r} for f, n, r in rows]}
    return {"status": "not found", "reason": "no ingested row has this id"}


def _dataset_versions(store: ArtifactStore) -> list[Path]:
    return [store.fetch("dataset_splits", version) for version in store.versions("dataset_splits")]


def interaction_lineage(store: ArtifactStore, tracker: Tracker, interaction_id: str) -> dict[str, Any]:
    """Where one interaction went: ingestion, scoring (kept or why dropped), dataset versions, models, deployments."""
    out: dict[str, Any] = {"interaction": interaction_id, "raw": _raw_state(store, interaction_id)}
    scored_info = store.latest("scored_dataset")
    if scored_info:
        scored = read_parquet(scored_info["path"])
        hits = scored[scored["source_ids"].map(lambda ids: interaction_id in (ids or []))]
        out["scored"] = [{"example_id": r.example_id, "kept": bool(r.keep), "reason": r.reason,
                          "score": None if r.score != r.score else float(r.score)} for r in hits.itertuples()]
    datasets = []
    for folder in _dataset_versions(store):
        for parquet in sorted(folder.glob("*.parquet")):
            frame = read_parquet(parquet)
            hits = frame[frame["source_ids"].map(lambda ids: interaction_id in (ids or []))]
            if len(hits):
                datasets.append({"dataset_version": folder.name, "split": parquet.stem,
                                 "example_ids": hits["example_id"].tolist()})
    out["datasets"] = datasets
    versions = {d["dataset_version"] for d in datasets}
    models = [mv for mv in tracker.model_versions() if mv["tags"].get("dataset_version") in versions]
    out["models"] = [{"version": mv["version"], "dataset_version": mv["tags"].get("dataset_version"),
                      "aliases": mv["aliases"], "deployed": "champion" in mv["aliases"],
                      "split": next(d["split"] for d in datasets
                                    if d["dataset_version"] == mv["tags"].get("dataset_version"))}
                     for mv in models]
    if not datasets and out.get("scored"):
        out["why_not_trained"] = [s["reason"] for s in out["scored"] if not s["kept"]] or \
            ["kept after the latest dataset version was cut"]
    return out


def model_lineage(store: ArtifactStore, tracker: Tracker, version: str) -> dict[str, Any]:
    """The interactions a registered model version was trained (and validated/tested) on."""
    mv = tracker.model_version(version)
    dataset_version = mv["tags"].get("dataset_version")
    if not dataset_version:
        raise ValueError(f"model version {version} has no dataset_version tag")
    folder = store.fetch("dataset_splits", dataset_version)
    if not folder.exists():
        raise FileNotFoundError(f"dataset version {dataset_version} is no longer in {store.root}")
    splits: dict[str, Any] = {}
    for parquet in sorted(folder.glob("*.parquet")):
        frame = read_parquet(parquet)
        ids = sorted({i for ids in frame["source_ids"] for i in (ids or [])})
        splits[parquet.stem] = {"examples": len(frame), "synthetic": int(frame["synthetic"].astype(bool).sum()),
                                "interaction_ids": ids}
    return {"model_version": str(version), "dataset_version": dataset_version, "aliases": mv["aliases"],
            "tags": mv["tags"], "splits": splits}

"""The artifact store: large artifacts (tables, datasets, adapters, models) written by reference.

Each stage writes into its own versioned folder and then records a small JSON "latest" pointer, so a
failed stage never replaces what an earlier successful materialisation left behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from homegrown.data.columns import JSON_EXAMPLE_COLUMNS, JSON_INTERACTION_COLUMNS


class ArtifactStore:
    """A folder of artifacts: ``<root>/<stage>/<version>/...`` plus ``<root>/latest/<stage>.json``."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def stage_dir(self, stage: str, version: str) -> Path:
        path = self.root / stage / version
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_table(self, stage: str, version: str, name: str, df: pd.DataFrame) -> Path:
        """Write a DataFrame as Parquet; nested columns are stored as JSON strings."""
        path = self.stage_dir(stage, version) / f"{name}.parquet"
        to_parquet(df, path)
        return path

    def record_latest(self, stage: str, info: dict[str, Any]) -> Path:
        """Atomically point ``stage`` at its newest successful output."""
        info = {**info, "recorded_at": datetime.now(UTC).isoformat()}
        latest = self.root / "latest"
        latest.mkdir(parents=True, exist_ok=True)
        target = latest / f"{stage}.json"
        fd, tmp = tempfile.mkstemp(dir=latest, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh, indent=2, default=str)
        os.replace(tmp, target)
        return target

    def latest(self, stage: str) -> dict[str, Any] | None:
        target = self.root / "latest" / f"{stage}.json"
        if not target.exists():
            return None
        return json.loads(target.read_text())

    def require_latest(self, stage: str) -> dict[str, Any]:
        info = self.latest(stage)
        if info is None:
            raise FileNotFoundError(f"no successful materialisation of {stage!r} in {self.root}; materialise it first")
        return info


_NESTED = set(JSON_EXAMPLE_COLUMNS) | set(JSON_INTERACTION_COLUMNS)


def to_parquet(df: pd.DataFrame, path: Path) -> None:
    out = df.copy()
    for col in out.columns:
        if col in _NESTED:
            out[col] = out[col].map(lambda v: None if v is None else json.dumps(v, ensure_ascii=False))
    tmp = path.with_suffix(".parquet.tmp")
    out.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def read_parquet(path: Path | str) -> pd.DataFrame:
    df = pd.read_parquet(path)
    for col in df.columns:
        if df[col].dtype != bool and not pd.api.types.is_numeric_dtype(df[col]):
            df[col] = df[col].astype(object).where(df[col].notna(), None)
    for col in df.columns:
        if col in _NESTED:
            df[col] = pd.Series([json.loads(v) if isinstance(v, str) else None for v in df[col]],
                                index=df.index, dtype=object)
    return df

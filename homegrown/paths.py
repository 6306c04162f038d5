"""Where homegrown keeps its state: everything lives under one folder, ``HOMEGROWN_HOME``."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def home() -> Path:
    """The state folder (Dagster instance, MLflow store, artifacts); default ``.homegrown/`` in the project."""
    path = Path(os.environ.get("HOMEGROWN_HOME") or PROJECT_ROOT / ".homegrown").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def subdir(*parts: str) -> Path:
    path = home().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def demo_input_dir() -> Path:
    """Where the embedded demo logs are generated when no input location is configured."""
    return home() / "demo-input"


def input_location() -> str:
    """``HOMEGROWN_INPUT``: a folder or an ``s3://bucket/prefix``; the demo data by default."""
    configured = os.environ.get("HOMEGROWN_INPUT")
    if configured:
        return configured
    return str(demo_input_dir())


def environment() -> str:
    """``local`` (the embedded default) or ``production``: the one switch that picks the resource set."""
    env = os.environ.get("HOMEGROWN_ENV", "local").lower()
    if env not in {"local", "production"}:
        raise ValueError(f"HOMEGROWN_ENV must be 'local' or 'production', got {env!r}")
    return env

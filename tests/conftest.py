import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def hg_home(tmp_path, monkeypatch):
    """A fresh HOMEGROWN_HOME (and DAGSTER_HOME inside it) for one test."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOMEGROWN_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.delenv("HOMEGROWN_INPUT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home

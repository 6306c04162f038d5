"""Businesses for the any-business benchmark (``bench/bench_businesses.py``), generated apart from the
demo generator and from the code that curates them. Each is a package with ``generator.py`` (``NAME``,
``TITLE``, ``generate(out_dir, seed)``) and ``heldout.json`` (questions in phrasings not in its logs)."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
BUSINESSES = {"a": "boulangerie", "b": "cycles", "demo": "demo"}


def resolve(name: str) -> str:
    """A business's package name from its name or its letter (``a``, ``b``)."""
    name = BUSINESSES.get(name, name)
    if name not in BUSINESSES.values():
        raise ValueError(f"unknown business {name!r}; choose from {sorted(BUSINESSES) + sorted(BUSINESSES.values())}")
    return name


def generator(name: str) -> ModuleType:
    return importlib.import_module(f"bench.businesses.{resolve(name)}.generator")


def heldout_path(name: str) -> Path:
    return HERE / resolve(name) / "heldout.json"

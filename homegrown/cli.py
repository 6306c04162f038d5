"""The ``homegrown`` command: run the pipeline, inspect its state, serve and evaluate models."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from homegrown import paths
from homegrown.store import ArtifactStore


def _store() -> ArtifactStore:
    return ArtifactStore(paths.subdir("artifacts"))


def prepare_dagster_home() -> Path:
    """``DAGSTER_HOME`` under ``HOMEGROWN_HOME``, holding the project's dagster.yaml (SQLite instance)."""
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or paths.home() / "dagster")
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(paths.PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    return dagster_home


def status() -> dict[str, Any]:
    """What the latest materialisations produced (paths, versions, counts)."""
    store = _store()
    out: dict[str, Any] = {"home": str(paths.home())}
    splits = store.latest("dataset_splits")
    raw = store.latest("raw_interactions")
    scored = store.latest("scored_dataset")
    if splits or raw:
        out["dataset"] = {
            "version": splits and splits["version"],
            "splits": {s: p["jsonl"] for s, p in (splits or {}).get("paths", {}).items()},
            "rows": (splits or {}).get("rows", {}),
            "quarantined": (raw or {}).get("quarantined"),
            "input_lines": (raw or {}).get("input_lines"),
            "interactions": (raw or {}).get("interactions"),
            "superseded": (raw or {}).get("superseded"),
            "kept": (scored or {}).get("kept"),
        }
    return out


def run_pipeline(selection: str) -> None:
    """Materialise ``selection`` (a Dagster asset selection string) into the project's Dagster instance."""
    prepare_dagster_home()
    import dagster as dg

    from pipelines.definitions import defs

    assets = list(defs.assets)
    result = dg.materialize(assets, selection=selection, resources=defs.resources,
                            instance=dg.DagsterInstance.get(), raise_on_error=True)
    if not result.success:
        raise SystemExit("the pipeline run failed; see the Dagster run log")


def cmd_demo(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run_pipeline(args.select)
    info = status()
    print(json.dumps(info, indent=2))
    print(f"\nhomegrown demo finished in {time.perf_counter() - started:.0f} s")
    print("Dagster UI: `make ui` (or `homegrown ui`), then http://127.0.0.1:3000")
    print("MLflow UI:  `make mlflow-ui`, then http://127.0.0.1:5000")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    info = status()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key}: {json.dumps(value, indent=2) if isinstance(value, dict) else value}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    prepare_dagster_home()
    cmd = [sys.executable, "-m", "dagster", "dev", "-m", "pipelines.definitions", "-p", str(args.port)]
    return subprocess.call(cmd, cwd=paths.PROJECT_ROOT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="homegrown", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the whole pipeline on the embedded default")
    demo.add_argument("--select", default="*", help="Dagster asset selection (default: everything)")
    demo.set_defaults(func=cmd_demo)

    st = sub.add_parser("status", help="show the latest dataset, model, eval and endpoint")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(func=cmd_status)

    ui = sub.add_parser("ui", help="open the Dagster UI (dagster dev) on the project's instance")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=cmd_ui)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())

"""Command-line entry point for a training run, e.g. in a subprocess under ``accelerate launch``.

    python -m homegrown.training.entry --config run.json --result result.json
    accelerate launch --multi_gpu --num_processes 2 -m homegrown.training.entry --config run.json --result result.json

The second form also runs several CPU processes on a machine without CUDA: accelerate starts them with
torchrun and, because training then runs with ``use_cpu``, they join a gloo process group.
(``accelerate launch --cpu --num_processes N`` starts N processes only through an MPI hostfile.)

``run.json``::

    {"train_jsonl": "...", "validation_jsonl": "..." | null, "base": "smollm2-135m-instruct" | "<model folder>",
     "output_dir": "...", "config": {<TrainConfig fields>}}

Every process trains; only the main process (rank 0) writes the adapter and ``result.json`` (the
``TrainResult`` as JSON). Progress events go to stdout as ``PROGRESS {json}`` lines.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from homegrown.training.sft import TrainConfig, train

REQUIRED_KEYS = ("train_jsonl", "output_dir")
KNOWN_KEYS = {"train_jsonl", "validation_jsonl", "base", "output_dir", "config"}


def load_run_spec(path: Path) -> dict[str, Any]:
    """Read and check a run file; raises ValueError naming what is missing or unknown."""
    try:
        spec = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read run config {path}: {exc}") from exc
    if not isinstance(spec, dict):
        raise ValueError(f"run config {path} must be a JSON object")  # noqa: TRY004
    missing = [key for key in REQUIRED_KEYS if not spec.get(key)]
    unknown = sorted(set(spec) - KNOWN_KEYS)
    if missing or unknown:
        raise ValueError(f"run config {path}: missing {missing}, unknown {unknown}")
    return spec


def _emit(event: dict[str, Any]) -> None:
    print("PROGRESS " + json.dumps(event), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fine-tune a LoRA adapter from a JSON run config.")
    parser.add_argument("--config", required=True, type=Path, help="run config JSON (see module docstring)")
    parser.add_argument("--result", required=True, type=Path, help="where rank 0 writes the TrainResult JSON")
    args = parser.parse_args(argv)

    spec = load_run_spec(args.config)
    cfg = TrainConfig.from_dict(spec.get("config") or {})
    result = train(
        cfg,
        Path(spec["train_jsonl"]),
        Path(spec["validation_jsonl"]) if spec.get("validation_jsonl") else None,
        spec.get("base") or "smollm2-135m-instruct",
        Path(spec["output_dir"]),
        progress=_emit,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        args.result.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.result.with_suffix(args.result.suffix + ".tmp")
        tmp.write_text(json.dumps(result.to_dict(), indent=2, default=str))
        os.replace(tmp, args.result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

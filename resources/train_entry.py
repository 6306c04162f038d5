"""Training under ``accelerate launch`` (or in a remote container), reporting to Dagster through Pipes.

Every rank trains; rank 0 opens the Pipes channel, forwards progress to the Dagster run log and writes
the result JSON whose path the launching asset passed in the Pipes extras.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from homegrown.training.sft import TrainConfig, train


def main() -> None:
    rank = int(os.environ.get("RANK", "0"))
    if rank != 0 or "DAGSTER_PIPES_CONTEXT" not in os.environ:
        extras = json.loads(os.environ["HOMEGROWN_TRAIN_EXTRAS"])
        _run(extras, progress=None)
        return

    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        extras = pipes.extras

        def progress(event: dict) -> None:
            pipes.log.info("train progress " + json.dumps(event))

        result = _run(extras, progress=progress)
        pipes.log.info(f"adapter written to {result['adapter_dir']}")


def _run(extras: dict, progress) -> dict:
    cfg = TrainConfig.from_dict(extras["config"])
    result = train(cfg, Path(extras["train_jsonl"]), Path(extras["validation_jsonl"]), Path(extras["base_path"]),
                   Path(extras["output_dir"]), progress=progress)
    out = result.to_dict()
    if int(os.environ.get("RANK", "0")) == 0:
        Path(extras["result_path"]).write_text(json.dumps(out, default=str))
    return out


if __name__ == "__main__":
    main()

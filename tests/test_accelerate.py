"""Training under ``accelerate launch`` with two CPU processes (gloo): every rank trains, rank 0 writes.

In accelerate 1.15 ``--cpu --num_processes 2`` only starts several processes through an MPI hostfile
(``--mpirun_hostfile``); without MPI it runs a single process. ``--multi_gpu --num_processes 2`` starts the
processes with torchrun, and because the trainer runs with ``use_cpu`` on a machine without CUDA they form
a MULTI_CPU process group on the gloo backend, which is what this test checks.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ACCELERATE = Path(sys.executable).with_name("accelerate")


def _rows(n: int, seed: int) -> list[dict]:
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        dish, price = rnd.choice(["lobster", "chicken", "salmon", "shrimp"]), rnd.randint(5, 60)
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"How much is the {dish}?"},
                    {"role": "assistant", "content": f"The {dish} is ${price} per person."},
                ]
            }
        )
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU (gloo) multi-process path")
def test_two_cpu_processes_train_and_only_rank0_writes(tmp_path, tiny_llama_dir):
    base = tiny_llama_dir
    out = tmp_path / "run"
    run = {
        "train_jsonl": str(_write_jsonl(tmp_path / "train.jsonl", _rows(24, 0))),
        "validation_jsonl": str(_write_jsonl(tmp_path / "val.jsonl", _rows(4, 1))),
        "base": str(base),
        "output_dir": str(out),
        "config": {
            "max_steps": 3,
            "per_device_batch_size": 4,
            "gradient_accumulation": 1,
            "learning_rate": 1e-2,
            "logging_steps": 1,
            "bf16": False,
            "early_stopping_patience": 0,
            "max_seq_length": 128,
        },
    }
    config_path = tmp_path / "run.json"
    config_path.write_text(json.dumps(run))
    result_path = tmp_path / "result.json"

    env = {
        **os.environ,
        "HOMEGROWN_HOME": str(tmp_path / "home"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    command = [
        str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        "-m", "homegrown.training.entry", "--config", str(config_path), "--result", str(result_path),
    ]  # fmt: skip
    # A session of its own, so that on a timeout the launcher and both workers are stopped together.
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]

    result = json.loads(result_path.read_text())
    assert result["metrics"]["world_size"] == 2
    assert result["metrics"]["steps"] == 3
    assert Path(result["adapter_dir"]) == out / "adapter"
    assert (out / "adapter" / "adapter_model.safetensors").is_file()

    # Only rank 0 reports progress: one event per step, not one per process.
    events = [
        json.loads(line[len("PROGRESS ") :]) for line in stdout.splitlines() if line.startswith("PROGRESS ")
    ]
    assert [e["step"] for e in events if "loss" in e] == [1, 2, 3]
    assert not list(tmp_path.glob("result.json.tmp"))
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "checkpoints", "train_config.json"]

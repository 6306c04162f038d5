"""Which LoRA recipe teaches SmolLM2-135M the demo business in one epoch on 2 CPU cores?

Each arm trains one adapter on the latest dataset's train split (``homegrown.training.sft.train``, exactly
what ``lora_adapter`` runs), merges it and answers the first ``--examples`` test examples greedily with the
float model (``homegrown.evaluation``'s runner and metrics). It prints one JSON line per arm and, with
``--out``, writes a Markdown table. The baseline arm is the seeds' recipe the demo used before.

    .venv/bin/python bench/bench_recipe.py --arms seeds demo --out bench/results/demo_recipe.md

One arm takes 10-15 minutes here; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

from homegrown.evaluation.evaluate import load_test_examples
from homegrown.evaluation.facts import KnowledgeFacts
from homegrown.evaluation.metrics import evaluate_answers
from homegrown.evaluation.runner import run_model
from homegrown.store import open_store
from homegrown.training.base import resolve_base_model
from homegrown.training.merge import merge_adapter
from homegrown.training.sft import TrainConfig, train

COMMON = {"num_epochs": 1, "max_seq_length": 768, "early_stopping_patience": 0}
ATTENTION = {"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "lora_r": 16, "lora_alpha": 32}
ARMS = {
    # the seeds' recipe as the demo ran it before: attention only, r=16, 16-row optimiser steps
    "seeds": {**COMMON, **ATTENTION, "learning_rate": 5e-4, "per_device_batch_size": 4, "gradient_accumulation": 4},
    # attention only, 4-row steps at 1e-3
    "small_steps": {**COMMON, **ATTENTION, "learning_rate": 1e-3, "per_device_batch_size": 4,
                    "gradient_accumulation": 1},
    # the default recipe (homegrown/training/recipe.py) with nothing set: what a business with no config gets
    "default": {},
    # what pipelines/demo_config.yaml set before the recipe: all-linear, r=32, 2e-3, 4-row steps, one epoch
    "demo": {**COMMON, "learning_rate": 2e-3, "per_device_batch_size": 4, "gradient_accumulation": 1,
             "target_modules": "all-linear", "lora_r": 32, "lora_alpha": 64},
}
KNOWLEDGE = Path(__file__).resolve().parent.parent / "homegrown" / "demo" / "knowledge.json"


def run_arm(name: str, splits: dict, work: Path, examples: int) -> dict:
    cfg = TrainConfig.from_dict(ARMS[name])
    base = resolve_base_model()
    out = work / name
    evals: list[float] = []
    started = time.perf_counter()
    result = train(cfg, Path(splits["train"]["jsonl"]), Path(splits["validation"]["jsonl"]), base, out,
                   progress=lambda e: evals.append(e["eval_loss"]) if "eval_loss" in e else None)
    train_s = time.perf_counter() - started
    merge_adapter(base.path, out / "adapter", out / "merged", {"name": f"bench-{name}"})
    test = load_test_examples(splits["test"]["parquet"], examples)
    answers = run_model(str(out / "merged"), test, max_tokens=200)
    metrics = evaluate_answers(test, [a.text for a in answers], KnowledgeFacts.from_file(KNOWLEDGE)).headline()
    return {"arm": name, "config": ARMS[name], "train_s": round(train_s, 1),
            "train_metrics": result.metrics, "eval_loss": evals[-1] if evals else None,
            **{k: metrics[k] for k in ("fact_accuracy", "hallucination_rate", "token_f1")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", default=["seeds", "demo"], choices=sorted(ARMS))
    parser.add_argument("--examples", type=int, default=63, help="test examples answered per arm")
    parser.add_argument("--work", default="/tmp/homegrown-bench-recipe")
    parser.add_argument("--out", help="write the Markdown table here")
    args = parser.parse_args()
    splits = open_store().require_latest("dataset_splits")["paths"]
    rows = []
    for arm in args.arms:
        rows.append(run_arm(arm, splits, Path(args.work), args.examples))
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        base = rows[0]
        title = (f"# LoRA recipe on the demo data ({platform.processor() or platform.machine()}, "
                 f"{datetime.now(UTC):%Y-%m-%d})")
        lines = [title, "",
                 "| arm | train s | val loss | fact accuracy | ratio to first arm | hallucination | token F1 |",
                 "|---|---|---|---|---|---|---|"]
        for r in rows:
            ratio = r["fact_accuracy"] / base["fact_accuracy"] if base["fact_accuracy"] else float("nan")
            lines.append(f"| {r['arm']} | {r['train_s']} | {r['eval_loss']:.3f} | {r['fact_accuracy']:.3f} | "
                         f"{ratio:.1f}x | {r['hallucination_rate']:.3f} | {r['token_f1']:.3f} |")
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

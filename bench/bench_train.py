"""Benchmark of LoRA training on the CPU: homegrown's trainer against a plain peft loop, useful tokens/s.

Both arms fine-tune the same base model (the embedded SmolLM2-135M-Instruct) with the same LoRA adapter
(r=16, alpha=32, dropout 0.05 on q/k/v/o), on the same rows of the demo dataset's training split, with the
same batch size and the same number of optimizer steps. Each arm runs in a fresh subprocess with torch
using every core this process may run on:

- homegrown: ``homegrown.training.sft.build_trainer`` + ``trainer.train()``, i.e. exactly what
  ``homegrown.training.sft.train`` runs, with its defaults (length-grouped batches, bf16 autocast where
  the CPU has AVX512-BF16/AMX, trl's completion-only loss). Only ``train()``'s reading of the split
  (done the same way, with ``read_split``) and its writing of the adapter afterwards are outside.
- baseline: a hand-written torch loop over a peft model in float32, random-order batches padded to the
  longest row of each batch (``DataCollatorWithPadding`` style), loss on the answer tokens only.

The rows are a seeded sample of ``(warmup + steps) x batch x accumulation`` training rows, and each arm
makes exactly one pass over them, so both see the same rows, only in a different order. Useful tokens
are counted the same way in both: the sum of the attention masks (real prompt and answer tokens, no
padding) of the batches trained; the homegrown arm uses the Trainer's ``num_input_tokens_seen``, which
with ``include_num_input_tokens_seen="non_padding"`` is that sum. The first ``warmup`` optimizer steps are
left out of the time and the tokens.

Run ``.venv/bin/python bench/bench_train.py [--steps 12] [--repeats 2] [--out bench/results/train_cpu.md]``.
``bench/bench_gpu.py`` reuses this module's arms on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = PROJECT_ROOT / "bench" / "results" / "train_cpu.md"
TARGET_RATIO = 1.5
ARMS = ("homegrown", "baseline")
IGNORE_INDEX = -100


# ---------------------------------------------------------------------------------------------------------
# Shared by both arms (and by bench_gpu.py)


def cpu_threads() -> int:
    """The cores this process may run on (its CPU affinity), which is what torch should use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sample_rows(train_jsonl: Path, n: int, seed: int, out: Path) -> int:
    """Write a seeded sample of ``n`` lines of ``train_jsonl`` to ``out``; raise ValueError if it is too short."""
    lines = [line for line in Path(train_jsonl).read_text(encoding="utf-8").splitlines() if line.strip()]
    if n > len(lines):
        raise ValueError(
            f"{train_jsonl} has {len(lines)} rows, the run needs {n} "
            "((warmup + steps) x batch size x gradient accumulation); ask for fewer steps"
        )
    chosen = random.Random(seed).sample(lines, n)
    out.write_text("".join(line + "\n" for line in chosen), encoding="utf-8")
    return n


def tokenize_prompt_completion(tokenizer: Any, row: dict[str, Any], max_length: int) -> dict[str, list[int]]:
    """A prompt–completion row as ``input_ids`` and ``labels`` (-100 on the prompt), cut at ``max_length``.

    Mirrors trl's conversational prompt–completion tokenisation: the prompt rendered with the generation
    prompt, the whole conversation rendered, and the answer is what follows their common prefix.
    """
    prompt = tokenizer.apply_chat_template(
        row["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True
    )
    full = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True, return_dict=True)
    prompt_ids, ids = list(prompt["input_ids"]), list(full["input_ids"])
    common = 0
    while common < min(len(prompt_ids), len(ids)) and prompt_ids[common] == ids[common]:
        common += 1
    labels = [IGNORE_INDEX] * common + ids[common:]
    return {"input_ids": ids[:max_length], "labels": labels[:max_length]}


def pad_batch(examples: Sequence[dict[str, list[int]]], pad_token_id: int) -> dict[str, Any]:
    """Right-pad a batch to its longest row: ``input_ids``, ``attention_mask``, ``labels`` (-100 on padding)."""
    import torch

    longest = max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), longest), dtype=torch.long)
    labels = torch.full((len(examples), longest), IGNORE_INDEX, dtype=torch.long)
    for i, example in enumerate(examples):
        n = len(example["input_ids"])
        input_ids[i, :n] = torch.tensor(example["input_ids"])
        attention_mask[i, :n] = 1
        labels[i, :n] = torch.tensor(example["labels"])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def random_batches(n_rows: int, batch_size: int, seed: int) -> list[list[int]]:
    """Row indices in a seeded random order, cut into batches (the last one may be short)."""
    import torch

    order = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed)).tolist()
    return [order[i : i + batch_size] for i in range(0, n_rows, batch_size)]


def epoch_padding(lengths: Sequence[int], batch_size: int, seed: int) -> dict[str, float]:
    """Padding share of one epoch over rows of ``lengths``: length-grouped (the Trainer's sampler) vs random."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    def share(order: list[int]) -> float:
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        positions = sum(len(b) * max(lengths[i] for i in b) for b in batches)
        return round(1 - sum(lengths) / positions, 4)

    grouped = get_length_grouped_indices(
        list(lengths), batch_size, generator=torch.Generator().manual_seed(seed)
    )
    return {
        "group_by_length": share(grouped),
        "random": share([i for b in random_batches(len(lengths), batch_size, seed) for i in b]),
    }


@dataclass
class StepClock:
    """Wall time and useful tokens at the end of every optimizer step; the summary leaves out ``warmup``."""

    warmup: int
    sync: Callable[[], None] = lambda: None

    def __post_init__(self) -> None:
        self.started: float | None = None
        self.marks: list[tuple[int, float, int]] = []  # (step, perf_counter, cumulative useful tokens)

    def begin(self) -> None:
        """Call right before the first step."""
        self.sync()
        self.started = time.perf_counter()

    def mark(self, step: int, tokens: int) -> None:
        self.sync()
        self.marks.append((step, time.perf_counter(), int(tokens)))

    def summary(self) -> dict[str, Any]:
        if len(self.marks) <= self.warmup or self.warmup < 1 or self.started is None:
            raise ValueError(
                f"need begin() and more than warmup={self.warmup} (>= 1) steps, got {len(self.marks)} steps"
            )
        _, t0, tok0 = self.marks[self.warmup - 1]
        last_step, t1, tok1 = self.marks[-1]
        seconds, tokens = t1 - t0, tok1 - tok0
        timed = len(self.marks) - self.warmup
        return {
            "steps_total": last_step,
            "steps_timed": timed,
            "seconds_timed": round(seconds, 3),
            "s_per_step": round(seconds / timed, 3),
            "useful_tokens_timed": tokens,
            "tokens_per_s": round(tokens / seconds, 1),
            # The whole pass, warm-up included: the same rows, hence the same useful tokens, in every arm.
            "seconds_pass": round(t1 - self.started, 3),
            "useful_tokens_pass": tok1,
            "tokens_per_s_pass": round(tok1 / (t1 - self.started), 1),
            "step_seconds": [round(b[1] - a[1], 3) for a, b in zip(self.marks, self.marks[1:])],
        }


class CountingCollator:
    """Wraps a data collator and adds up, over every batch it makes, real tokens and padded positions."""

    def __init__(self, collator: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> None:
        self.collator = collator
        self.real_tokens = 0
        self.positions = 0
        self.loss_tokens = 0
        self.batches = 0

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(features)
        ids = batch["input_ids"]
        # Padding-free batches carry no attention mask: every position is a real token.
        mask = batch.get("attention_mask")
        self.real_tokens += int(mask.sum()) if mask is not None else ids.numel()
        self.positions += ids.numel()
        if "labels" in batch:
            self.loss_tokens += int((batch["labels"] != IGNORE_INDEX).sum())
        self.batches += 1
        return batch

    def totals(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "real_tokens": self.real_tokens,
            "positions": self.positions,
            "loss_tokens": self.loss_tokens,
            "padding_share": round(1 - self.real_tokens / self.positions, 4) if self.positions else None,
        }


def run_homegrown(
    cfg: Any,
    base_spec: str,
    rows_jsonl: Path,
    out_dir: Path,
    warmup: int,
    sync: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Train with homegrown's trainer (``build_trainer`` + ``trainer.train()``, what ``train()`` runs).

    ``cfg`` is a ``TrainConfig`` whose ``max_steps`` makes one pass over ``rows_jsonl``.
    """
    from transformers import TrainerCallback

    from homegrown.training.base import resolve_base_model
    from homegrown.training.sft import build_trainer, read_split

    clock = StepClock(warmup=warmup, sync=sync)

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            clock.begin()

        def on_step_end(self, args, state, control, **kwargs):
            clock.mark(state.global_step, state.num_input_tokens_seen)

    base = resolve_base_model(base_spec)
    rows = read_split(rows_jsonl)
    trainer = build_trainer(cfg, base, rows, [], out_dir / "checkpoints", [Clock()])
    counter = CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    row_tokens = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    output = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        **clock.summary(),
        "rows": len(rows),
        "row_tokens_total": sum(row_tokens),
        "row_tokens_max": max(row_tokens),
        "tokens_seen_total": int(trainer.state.num_input_tokens_seen),
        "collated": counter.totals(),
        "bf16": bool(trainer.args.bf16),
        "batching": cfg.batching,
        "precision": "bf16 autocast, float32 weights" if trainer.args.bf16 else "float32",
        "train_loss": float(output.training_loss),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
    }


def run_baseline(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    *,
    batch_size: int,
    accumulation: int,
    max_length: int,
    learning_rate: float,
    warmup: int,
    seed: int,
    device: str = "cpu",
    sync: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Train a peft ``model`` with a plain torch loop: one pass over ``rows`` in random order, padded batches.

    Every ``accumulation`` micro-batches make one AdamW step. Returns the timing summary and token counts.
    """
    import torch

    examples = [tokenize_prompt_completion(tokenizer, row, max_length) for row in rows]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batches = random_batches(len(examples), batch_size, seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    clock = StepClock(warmup=warmup, sync=sync)
    counter = CountingCollator(lambda features: pad_batch(features, pad_id))
    losses: list[float] = []
    model.train()
    useful = 0
    clock.begin()
    for step, start in enumerate(range(0, len(batches), accumulation), start=1):
        group = batches[start : start + accumulation]
        step_loss = 0.0
        for indices in group:
            batch = {k: v.to(device) for k, v in counter([examples[i] for i in indices]).items()}
            useful += int(batch["attention_mask"].sum())
            loss = model(**batch).loss / len(group)
            loss.backward()
            step_loss += float(loss.detach())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(step_loss)
        clock.mark(step, useful)
    row_tokens = [len(e["input_ids"]) for e in examples]
    return {
        **clock.summary(),
        "rows": len(rows),
        "row_tokens_total": sum(row_tokens),
        "row_tokens_max": max(row_tokens),
        "tokens_seen_total": useful,
        "collated": counter.totals(),
        "batching": "random order, padded to the longest row",
        "train_loss": sum(losses) / len(losses),
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }


# ---------------------------------------------------------------------------------------------------------
# CPU workers (one per subprocess)


def _worker(arm: str, spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    out_dir = Path(spec["work_dir"]) / f"{arm}-{spec['repeat']}"
    if arm == "homegrown":
        from homegrown.training.sft import TrainConfig

        cfg = TrainConfig(
            per_device_batch_size=spec["batch_size"],
            gradient_accumulation=spec["accumulation"],
            max_steps=spec["warmup"] + spec["steps"],
            num_epochs=1.0,
            early_stopping_patience=0,
            device="cpu",
            seed=spec["seed"],
        )
        result = run_homegrown(cfg, spec["base"], Path(spec["rows_jsonl"]), out_dir, spec["warmup"])
    elif arm == "baseline":
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from homegrown.training.sft import read_split

        tokenizer = AutoTokenizer.from_pretrained(spec["base"])
        model = AutoModelForCausalLM.from_pretrained(
            spec["base"], dtype=torch.float32, attn_implementation="sdpa"
        )
        lora = LoraConfig(
            r=16,
            lora_alpha=32,
            lora_dropout=0.05,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            bias="none",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
        result = run_baseline(
            model,
            tokenizer,
            read_split(Path(spec["rows_jsonl"])),
            batch_size=spec["batch_size"],
            accumulation=spec["accumulation"],
            max_length=1024,
            learning_rate=2e-4,
            warmup=spec["warmup"],
            seed=spec["seed"],
        )
        result["precision"] = "float32"
        result["bf16"] = False
    else:
        raise ValueError(f"unknown arm {arm!r}; expected one of {ARMS}")
    result["arm"] = arm
    result["threads"] = torch.get_num_threads()
    result["peak_rss_mib"] = round(peak_rss_mib(), 1)
    return result


# ---------------------------------------------------------------------------------------------------------
# Driver


def machine_info() -> dict[str, Any]:
    """CPU model, bf16/AMX flags, cores, memory, date, load average and library versions."""
    import importlib.metadata

    import psutil

    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("unknown", "x86_64", ""):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    versions = {}
    for name in ("torch", "transformers", "peft", "trl", "accelerate"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": model,
        "cores": cpu_threads(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "bf16_flags": sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile", "avx512f"}),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "versions": versions,
    }


def prepare_dataset(home: Path, timeout: float) -> Path:
    """Run the demo pipeline up to ``dataset_splits`` in ``home``; return the training split's JSONL path."""
    env = {**os.environ, "HOMEGROWN_HOME": str(home)}
    cli = Path(sys.executable).with_name("homegrown")
    command = [str(cli)] if cli.is_file() else [sys.executable, "-m", "homegrown.cli"]
    subprocess.run(
        [*command, "demo", "--select", "*dataset_splits"],
        env=env,
        check=True,
        timeout=timeout,
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
    )
    status = subprocess.run(
        [*command, "status", "--json"],
        env=env,
        check=True,
        timeout=timeout,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    return Path(json.loads(status.stdout)["dataset"]["splits"]["train"])


def run_arm(arm: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one arm in a fresh Python process and return its result."""
    work = Path(spec["work_dir"])
    spec_path = work / f"spec-{arm}-{spec['repeat']}.json"
    result_path = work / f"result-{arm}-{spec['repeat']}.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "HOMEGROWN_HOME": spec["home"], "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", arm, "--spec", str(spec_path), "--result", str(result_path)],
        env=env,
        timeout=timeout,
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{arm} arm failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(result_path.read_text())


def _row(r: dict[str, Any]) -> str:
    c = r["collated"]
    return (
        f"| {r['arm']} | {r['precision']} | {r['batching']} | {r['s_per_step']:.2f} "
        f"| {r['useful_tokens_timed']:,} | **{r['tokens_per_s']:,.0f}** | {r['seconds_pass']:.1f} "
        f"| **{r['tokens_per_s_pass']:,.0f}** | {100 * c['padding_share']:.1f}% | {r['peak_rss_mib']:,.0f} "
        f"| {', '.join(f'{x:.1f}' for x in r['step_seconds'])} |"
    )


def _range(values: list[float]) -> str:
    return f"{min(values):.2f}×" if len(values) == 1 else f"{min(values):.2f}×–{max(values):.2f}×"


def render(
    info: dict[str, Any],
    setup: dict[str, Any],
    repeats: list[dict[str, dict[str, Any]]],
    split_padding: dict[str, float] | None = None,
) -> str:
    """The results page as markdown."""
    timed = [r["homegrown"]["tokens_per_s"] / r["baseline"]["tokens_per_s"] for r in repeats]
    whole = [r["homegrown"]["tokens_per_s_pass"] / r["baseline"]["tokens_per_s_pass"] for r in repeats]
    v = info["versions"]
    lines = [
        "# Training benchmark (CPU)",
        "",
        (
            f"- Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB RAM, shared with other jobs "
            f"while measured; bf16-related CPU flags: {', '.join(info['bf16_flags']) or 'none'}"
        ),
        f"- Date: {info['date']}; load average at start (1/5/15 min): "
        + ", ".join(f"{x:.2f}" for x in info["load_average"]),
        (
            f"- Python {info['python']}, torch {v['torch']}, transformers {v['transformers']}, peft {v['peft']}, "
            f"trl {v['trl']}, accelerate {v['accelerate']}; torch threads = {setup['threads']}"
        ),
        (
            f"- Base: embedded SmolLM2-135M-Instruct (float32 safetensors). LoRA r=16, alpha=32, dropout 0.05 on "
            f"q/k/v/o in both arms. Data: {setup['rows']} rows sampled (seed {setup['seed']}) from the demo "
            f"dataset's training split ({setup['split_rows']} rows); each arm makes one pass over them: "
            f"{setup['warmup']} warm-up + {setup['steps']} timed optimizer steps of batch {setup['batch_size']} "
            f"x accumulation {setup['accumulation']}."
        ),
        (
            "- homegrown: `build_trainer` + `trainer.train()` (what `homegrown.training.sft.train` runs) with "
            '`TrainConfig` defaults: length-grouped batches, bf16 "auto", trl completion-only loss. Baseline: '
            "hand-written torch loop over a peft model, float32, random-order batches padded to the longest row, "
            "AdamW."
        ),
        (
            "- Useful tokens: sum of the attention masks (real prompt + answer tokens, no padding) of the batches "
            "trained, counted the same way in both arms. *Timed*: the steps after the warm-up (the two arms' "
            "windows hold different rows, since their orders differ). *Whole pass*: every step, warm-up "
            "included; both arms train exactly the same rows, so the same useful tokens, and only the time "
            "differs. Padding share: padded positions / all positions over the pass. Peak RSS: `ru_maxrss` of "
            "the arm's own fresh process (model load included)."
        ),
        "",
        "## Summary",
        "",
        (
            "| repeat | load avg before | homegrown tokens/s (timed / whole pass) | baseline tokens/s (timed / whole pass) "
            "| ratio timed | ratio whole pass |"
        ),
        "|---:|---|---:|---:|---:|---:|",
    ]
    for i, (r, a, b) in enumerate(zip(repeats, timed, whole), start=1):
        h, base = r["homegrown"], r["baseline"]
        lines.append(
            f"| {i} | {r['load_average'][0]:.1f} | {h['tokens_per_s']:,.0f} / {h['tokens_per_s_pass']:,.0f} "
            f"| {base['tokens_per_s']:,.0f} / {base['tokens_per_s_pass']:,.0f} | **{a:.2f}×** | **{b:.2f}×** |"
        )
    met = min(timed + whole) >= TARGET_RATIO
    lines += [
        "",
        f"homegrown / baseline useful tokens/s: {_range(timed)} timed, {_range(whole)} over the whole pass, "
        f"in {len(repeats)} repeats; "
        + (
            f"every figure meets the {TARGET_RATIO}× target."
            if met
            else f"at least one figure is below the {TARGET_RATIO}× target."
        ),
    ]
    if split_padding:
        lines += [
            "",
            (
                f"Padding share over one epoch of the whole training split ({setup['split_rows']} rows, batch "
                f"{setup['batch_size']}, the Trainer's own length-grouping function, no training): "
                f"length-grouped {100 * split_padding['group_by_length']:.1f}%, random "
                f"{100 * split_padding['random']:.1f}%. The sampler sorts rows within megabatches of about a "
                "quarter of the dataset (at most 50 batches), so on the small sample above it groups less well "
                "than in a real run over the whole split."
            ),
        ]
    for i, r in enumerate(repeats, start=1):
        lines += [
            "",
            f"## Repeat {i}",
            "",
            (
                "| arm | precision | batching | s/step (timed) | useful tokens (timed) | tokens/s (timed) "
                "| whole pass s | tokens/s (whole pass) | padding share | peak RSS MiB | seconds of each step after the first |"
            ),
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
            _row(r["homegrown"]),
            _row(r["baseline"]),
            "",
            (
                f"Useful tokens in the pass: homegrown {r['homegrown']['useful_tokens_pass']:,}, baseline "
                f"{r['baseline']['useful_tokens_pass']:,} (the same rows, tokenised by trl and by the baseline); "
                f"loss-bearing (answer) tokens {r['homegrown']['collated']['loss_tokens']:,} / "
                f"{r['baseline']['collated']['loss_tokens']:,}; load average before the repeat: "
                f"{', '.join(f'{x:.2f}' for x in r['load_average'])}."
            ),
        ]
    return "\n".join(lines) + "\n"


def split_padding_of(base_path: str, train_jsonl: Path, batch_size: int, seed: int) -> dict[str, float]:
    """Padding shares of a whole epoch over ``train_jsonl`` (see :func:`epoch_padding`)."""
    from transformers import AutoTokenizer

    from homegrown.training.sft import read_split

    tokenizer = AutoTokenizer.from_pretrained(base_path)
    lengths = [
        len(tokenize_prompt_completion(tokenizer, row, 1024)["input_ids"]) for row in read_split(train_jsonl)
    ]
    return epoch_padding(lengths, batch_size, seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="timed optimizer steps per arm (default 12)")
    parser.add_argument(
        "--warmup", type=int, default=2, help="optimizer steps left out of the timing (default 2)"
    )
    parser.add_argument("--batch-size", type=int, default=4, help="rows per micro-batch (default 4)")
    parser.add_argument(
        "--accumulation", type=int, default=1, help="micro-batches per optimizer step (default 1)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="times both arms run back to back (default 2)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the usable cores)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per subprocess (default 1800)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results page (default {DEFAULT_OUT})")
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="keep data and runs here (default: a temp dir)"
    )
    parser.add_argument("--worker", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        result = _worker(args.worker, json.loads(args.spec.read_text()))
        args.result.write_text(json.dumps(result, indent=2))
        return 0

    for name in ("steps", "warmup", "batch_size", "accumulation", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    info = machine_info()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="homegrown-bench-train-"))
    work.mkdir(parents=True, exist_ok=True)
    home = work / "home"
    print(f"work dir {work}; load average {info['load_average']}", flush=True)

    train_jsonl = prepare_dataset(home, args.timeout)
    split_rows = sum(1 for line in train_jsonl.read_text(encoding="utf-8").splitlines() if line.strip())
    n_rows = (args.warmup + args.steps) * args.batch_size * args.accumulation
    rows_jsonl = work / "rows.jsonl"
    sample_rows(train_jsonl, n_rows, args.seed, rows_jsonl)

    os.environ["HOMEGROWN_HOME"] = str(home)
    from homegrown.training.base import resolve_base_model

    base = resolve_base_model()
    setup = {
        "base": str(base.path),
        "home": str(home),
        "work_dir": str(work),
        "rows_jsonl": str(rows_jsonl),
        "rows": n_rows,
        "split_rows": split_rows,
        "steps": args.steps,
        "warmup": args.warmup,
        "batch_size": args.batch_size,
        "accumulation": args.accumulation,
        "seed": args.seed,
        "threads": args.threads or cpu_threads(),
    }
    repeats: list[dict[str, Any]] = []
    for repeat in range(1, args.repeats + 1):
        results: dict[str, Any] = {"load_average": [round(x, 2) for x in os.getloadavg()]}
        for arm in ARMS:
            results[arm] = run_arm(arm, {**setup, "repeat": repeat}, args.timeout)
            r = results[arm]
            print(
                f"repeat {repeat} {arm}: {r['tokens_per_s']:.0f} tokens/s, {r['s_per_step']:.2f} s/step, "
                f"peak RSS {r['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
        repeats.append(results)

    split_padding = split_padding_of(setup["base"], train_jsonl, args.batch_size, args.seed)
    page = render(info, setup, repeats, split_padding)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page, encoding="utf-8")
    (work / "results.json").write_text(
        json.dumps(
            {"machine": info, "setup": setup, "repeats": repeats, "split_padding": split_padding}, indent=2
        ),
        encoding="utf-8",
    )
    print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())

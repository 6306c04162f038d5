"""Benchmark of LoRA training on the CPU: homegrown's trainer against a plain padded peft loop, useful tokens/s.

Both arms fine-tune the same base model (the embedded SmolLM2-135M-Instruct) with the same LoRA adapter
(the recipe's choice for a 135M base, which the demo trains: r=32, alpha=64, dropout 0.05 on every linear
layer, learning rate 2e-3), on the same rows of the demo dataset's training split, with the same batch size
and the same number of optimizer steps. Each arm runs in a fresh subprocess (so that its peak memory is its
own) with torch using every core this process may run on; the arms alternate within one run of this script
(in the order of ``ARMS`` in odd repeats, reversed in even ones):

- homegrown: ``homegrown.training.sft.build_trainer`` + ``trainer.train()``, i.e. exactly what
  ``homegrown.training.sft.train`` runs, with its defaults (padding-free batches with per-row attention,
  bf16 base weights under bf16 autocast where the CPU has AVX512-BF16/AMX, logits only at the answer
  tokens, fused AdamW). Only ``train()``'s reading of the split (done the same way, with ``read_split``) and
  its writing of the adapter afterwards are outside.
- baseline: what a practitioner writes first: a torch loop over a peft model loaded in float32, every step
  under ``torch.autocast("cpu", dtype=torch.bfloat16)``, random-order batches padded to the longest row of
  each batch, the model's own loss on the answer tokens (-100 on the prompt and the padding), AdamW.
- baseline_fp32: the same loop without autocast. On a CPU without native bf16 it is the faster of the two
  plain loops, so the page gives homegrown's ratio to both.

The rows are a seeded sample of ``(warmup + steps) x batch x accumulation`` training rows, and each arm
makes exactly one pass over them, so both see the same rows, only in a different order. Useful tokens
are counted the same way in both: the real prompt and answer tokens (no padding) of the batches trained;
the homegrown arm uses the Trainer's ``num_input_tokens_seen``. The first ``warmup`` optimizer steps are
left out of the time and the tokens. Peak memory is ``ru_maxrss`` of the arm's own process (model load
included); the RSS right before the first step is reported beside it.

Run ``flock /tmp/homegrown-bench.lock .venv/bin/python bench/bench_train.py [--steps 12] [--repeats 2]``.
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
# "baseline" is the reference of the target; "baseline_fp32" is the same loop without autocast, the faster
# plain loop on a CPU without native bf16 (AVX512-BF16/AMX), where autocast's bf16 is emulated.
ARMS = ("homegrown", "baseline", "baseline_fp32")
IGNORE_INDEX = -100
# The adapter of every arm: what homegrown/training/recipe.py chooses for a 135M base (the demo's adapter).
LORA = {"r": 32, "lora_alpha": 64, "lora_dropout": 0.05, "target_modules": "all-linear"}
LEARNING_RATE = 2e-3


# ---------------------------------------------------------------------------------------------------------
# Shared by both arms (and by bench_gpu.py)


def cpu_threads() -> int:
    """The cores this process may run on (its CPU affinity), which is what torch should use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    """Current resident set size of this process, in MiB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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
    """Wall time, CPU time and useful tokens at the end of every optimizer step; the summary leaves out ``warmup``.

    CPU time (every thread of the process) is reported beside wall time because on a shared machine the wall
    time of a step swings with the other jobs' load far more than the work it does.
    """

    warmup: int
    sync: Callable[[], None] = lambda: None

    def __post_init__(self) -> None:
        self.started: float | None = None
        self.rss_at_start_mib: float | None = None
        # (step, perf_counter, CPU seconds, cumulative useful tokens)
        self.marks: list[tuple[int, float, float, int]] = []

    def begin(self) -> None:
        """Call right before the first step."""
        self.sync()
        self.rss_at_start_mib = rss_mib()
        self.started = time.perf_counter()

    def mark(self, step: int, tokens: int) -> None:
        self.sync()
        self.marks.append((step, time.perf_counter(), cpu_seconds(), int(tokens)))

    def summary(self) -> dict[str, Any]:
        if len(self.marks) <= self.warmup or self.warmup < 1 or self.started is None:
            raise ValueError(
                f"need begin() and more than warmup={self.warmup} (>= 1) steps, got {len(self.marks)} steps"
            )
        _, t0, c0, tok0 = self.marks[self.warmup - 1]
        last_step, t1, c1, tok1 = self.marks[-1]
        seconds, tokens = t1 - t0, tok1 - tok0
        timed = len(self.marks) - self.warmup
        return {
            "steps_total": last_step,
            "steps_timed": timed,
            "seconds_timed": round(seconds, 3),
            "s_per_step": round(seconds / timed, 3),
            "useful_tokens_timed": tokens,
            "tokens_per_s": round(tokens / seconds, 1),
            "cpu_seconds_timed": round(c1 - c0, 3),
            "tokens_per_cpu_s": round(tokens / (c1 - c0), 1) if c1 > c0 else None,
            # The whole pass, warm-up included: the same rows, hence the same useful tokens, in every arm.
            "seconds_pass": round(t1 - self.started, 3),
            "useful_tokens_pass": tok1,
            "tokens_per_s_pass": round(tok1 / (t1 - self.started), 1),
            "step_seconds": [round(b[1] - a[1], 3) for a, b in zip(self.marks, self.marks[1:])],
            "rss_at_start_mib": round(self.rss_at_start_mib or 0.0, 1),
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
        "precision": "bf16 base weights, float32 LoRA, bf16 autocast" if trainer.args.bf16 else "float32",
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
    autocast_bf16: bool = False,
) -> dict[str, Any]:
    """Train a peft ``model`` with a plain torch loop: one pass over ``rows`` in random order, padded batches.

    Every ``accumulation`` micro-batches make one AdamW step (torch's default implementation), each forward
    and backward under bf16 autocast when ``autocast_bf16``. Returns the timing summary and token counts.
    """
    import contextlib

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
            with torch.autocast(device, dtype=torch.bfloat16) if autocast_bf16 else contextlib.nullcontext():
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


def one_pass_config(lora: dict[str, Any], learning_rate: float, spec: dict[str, Any], **fields: Any) -> Any:
    """homegrown's ``TrainConfig`` for a bench arm: the arm's LoRA and rate, ``spec``'s batch size, warm-up +
    timed steps and seed, one pass, no evaluation or early stopping; ``fields`` set the rest."""
    from homegrown.training.sft import TrainConfig

    return TrainConfig(
        lora_r=lora["r"], lora_alpha=lora["lora_alpha"], lora_dropout=lora["lora_dropout"],
        target_modules=lora["target_modules"], learning_rate=learning_rate,
        per_device_batch_size=spec["batch_size"], max_steps=spec["warmup"] + spec["steps"], num_epochs=1.0,
        eval_steps=None, early_stopping_patience=0, seed=spec["seed"], **fields,
    )


def _worker(arm: str, spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    out_dir = Path(spec["work_dir"]) / f"{arm}-{spec['repeat']}"
    if arm == "homegrown":
        cfg = one_pass_config(LORA, LEARNING_RATE, spec, max_seq_length=spec["max_length"],
                              gradient_accumulation=spec["accumulation"], device="cpu")
        result = run_homegrown(cfg, spec["base"], Path(spec["rows_jsonl"]), out_dir, spec["warmup"])
    elif arm in ("baseline", "baseline_fp32"):
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from homegrown.training.sft import read_split

        tokenizer = AutoTokenizer.from_pretrained(spec["base"])
        model = AutoModelForCausalLM.from_pretrained(spec["base"], dtype=torch.float32)
        model = get_peft_model(model, LoraConfig(**LORA, bias="none", task_type="CAUSAL_LM"))
        result = run_baseline(
            model,
            tokenizer,
            read_split(Path(spec["rows_jsonl"])),
            batch_size=spec["batch_size"],
            accumulation=spec["accumulation"],
            max_length=spec["max_length"],
            learning_rate=LEARNING_RATE,
            warmup=spec["warmup"],
            seed=spec["seed"],
            autocast_bf16=arm == "baseline",
        )
        result["precision"] = "float32 weights, bf16 autocast" if arm == "baseline" else "float32"
        result["bf16"] = arm == "baseline"
    else:
        raise ValueError(f"unknown arm {arm!r}; expected one of {ARMS}")
    result["arm"] = arm
    result["threads"] = torch.get_num_threads()
    result["peak_rss_mib"] = round(peak_rss_mib(), 1)
    return result


def _profiled_worker(arm: str, spec: dict[str, Any]) -> dict[str, Any]:
    """:func:`_worker` under torch.profiler: the ops that take the pass's CPU time, most first (not timed)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = _worker(arm, spec)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    result["profile"] = [
        {"op": e.key, "calls": e.count, "self_cpu_s": round(e.self_cpu_time_total / 1e6, 2),
         "share": round(e.self_cpu_time_total / total, 3)}
        for e in top
    ]
    return result


def render_profile(results: dict[str, dict[str, Any]]) -> str:
    """The profiled passes as a markdown table per arm."""
    lines = [
        (
            "One more pass of each arm under `torch.profiler` (CPU activities; not part of the timings above): "
            "the operators with the most self CPU time over the arm's whole process, model loading included."
        ),
    ]
    for arm, r in results.items():
        lines += ["", f"**{arm}** ({r['seconds_pass']:.0f} s for the pass under the profiler)", "",
                  "| operator | calls | self CPU s | share |", "|---|---:|---:|---:|"]
        lines += [f"| `{p['op']}` | {p['calls']:,} | {p['self_cpu_s']:.2f} | {100 * p['share']:.1f}% |"
                  for p in r["profile"]]
    return "\n".join(lines)


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
    """Run the demo pipeline up to ``dataset_splits`` in ``home``; return a copy of the training split.

    The copy (``home/../train_split.jsonl``) is reused when it exists, so a ``--work-dir`` run again trains
    on the same split without re-running the pipeline.
    """
    copy = home.parent / "train_split.jsonl"
    if copy.is_file():
        return copy
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
    split = Path(json.loads(status.stdout)["dataset"]["splits"]["train"])
    copy.write_text(split.read_text(encoding="utf-8"), encoding="utf-8")
    return copy


def run_arm(arm: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one arm in a fresh Python process (profiled when ``spec["profile"]``) and return its result."""
    work = Path(spec["work_dir"])
    spec_path = work / f"spec-{arm}-{spec['repeat']}.json"
    result_path = work / f"result-{arm}-{spec['repeat']}.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "HOMEGROWN_HOME": spec["home"], "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": str(spec["threads"])}
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
    per_cpu = r.get("tokens_per_cpu_s")
    return (
        f"| {r['arm']} | {r['precision']} | {r['batching']} | {r['s_per_step']:.2f} "
        f"| {r['useful_tokens_timed']:,} | **{r['tokens_per_s']:,.0f}** | {per_cpu or 0:,.0f} | {r['seconds_pass']:.1f} "
        f"| **{r['tokens_per_s_pass']:,.0f}** | {100 * c['padding_share']:.1f}% | {r['rss_at_start_mib']:,.0f} "
        f"| **{r['peak_rss_mib']:,.0f}** | {', '.join(f'{x:.1f}' for x in r['step_seconds'])} |"
    )


def _range(values: list[float]) -> str:
    return f"{min(values):.2f}×" if len(values) == 1 else f"{min(values):.2f}×–{max(values):.2f}×"


def render(
    info: dict[str, Any],
    setup: dict[str, Any],
    repeats: list[dict[str, dict[str, Any]]],
    split_padding: dict[str, float] | None = None,
    profile: str | None = None,
) -> str:
    """The results page as markdown."""
    timed = [r["homegrown"]["tokens_per_s"] / r["baseline"]["tokens_per_s"] for r in repeats]
    whole = [r["homegrown"]["tokens_per_s_pass"] / r["baseline"]["tokens_per_s_pass"] for r in repeats]
    memory = [r["baseline"]["peak_rss_mib"] / r["homegrown"]["peak_rss_mib"] for r in repeats]
    fp32_timed = [r["homegrown"]["tokens_per_s"] / r["baseline_fp32"]["tokens_per_s"] for r in repeats]
    fp32_whole = [r["homegrown"]["tokens_per_s_pass"] / r["baseline_fp32"]["tokens_per_s_pass"] for r in repeats]
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
            f"- Base: embedded SmolLM2-135M-Instruct. LoRA r={LORA['r']}, alpha={LORA['lora_alpha']}, dropout "
            f"{LORA['lora_dropout']} on every linear layer, learning rate {LEARNING_RATE:g} (the recipe's choice "
            f"for this base, what the demo trains) in every arm. Data: {setup['rows']} rows sampled (seed "
            f"{setup['seed']}) from the demo dataset's training split ({setup['split_rows']} rows), rows cut at "
            f"{setup['max_length']} tokens; each arm makes one pass over them: {setup['warmup']} warm-up + "
            f"{setup['steps']} timed optimizer steps of batch {setup['batch_size']} x accumulation "
            f"{setup['accumulation']}. Each arm runs in its own fresh process; the arms alternate (the order "
            "is in the summary)."
        ),
        (
            "- homegrown: `build_trainer` + `trainer.train()` (what `homegrown.training.sft.train` runs) with "
            "`TrainConfig` defaults: padding-free batches (rows concatenated, position ids restarting per row, "
            "attention row by row), bf16 base weights with float32 LoRA under bf16 autocast where the CPU has "
            "native bf16 (AVX512-BF16/AMX; float32 otherwise), logits only at the answer tokens, fused AdamW. Baseline: the plain loop a practitioner writes first: a peft model in "
            "float32 under `torch.autocast(\"cpu\", dtype=torch.bfloat16)`, random-order batches padded to the "
            "longest row, the model's own loss on the answer tokens, `torch.optim.AdamW` defaults. baseline_fp32: "
            "the same loop without autocast."
        ),
        (
            "- Useful tokens: real prompt + answer tokens (no padding) of the batches trained, counted the same "
            "way in both arms. *Timed*: the steps after the warm-up (the two arms' windows hold different rows, "
            "since their orders differ). *Whole pass*: every step, warm-up included; both arms train exactly the "
            "same rows, so the same useful tokens, and only the time differs. Tokens per CPU-second: useful "
            "tokens of the timed steps / CPU time (user + system, all threads) of the arm's process over them, "
            "less swayed by the other jobs on the machine than wall time. Padding share: padded positions / all "
            "positions over the pass. Peak RSS: `ru_maxrss` of the arm's own fresh process (model load "
            "included); RSS at start: the process's resident memory right before the first step."
        ),
        "",
        "## Summary",
        "",
        (
            "| repeat | order | load avg before | homegrown tokens/s (timed / whole pass) | baseline tokens/s "
            "(timed / whole pass) | ratio timed | ratio whole pass | ratio per CPU-second | baseline_fp32 "
            "tokens/s (timed / whole pass) | ratio to fp32 (timed / whole pass) | peak RSS MiB homegrown / "
            "baseline / baseline_fp32 |"
        ),
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, (r, a, b, fa, fb) in enumerate(zip(repeats, timed, whole, fp32_timed, fp32_whole), start=1):
        h, base, f32 = r["homegrown"], r["baseline"], r["baseline_fp32"]
        per_cpu = (
            f"{h['tokens_per_cpu_s'] / base['tokens_per_cpu_s']:.2f}×"
            if h.get("tokens_per_cpu_s") and base.get("tokens_per_cpu_s")
            else "n/a"
        )
        lines.append(
            f"| {i} | {' then '.join(r['order'])} | {r['load_average'][0]:.1f} "
            f"| {h['tokens_per_s']:,.0f} / {h['tokens_per_s_pass']:,.0f} "
            f"| {base['tokens_per_s']:,.0f} / {base['tokens_per_s_pass']:,.0f} | **{a:.2f}×** | **{b:.2f}×** "
            f"| {per_cpu} | {f32['tokens_per_s']:,.0f} / {f32['tokens_per_s_pass']:,.0f} | {fa:.2f}× / {fb:.2f}× "
            f"| {h['peak_rss_mib']:,.0f} / {base['peak_rss_mib']:,.0f} / {f32['peak_rss_mib']:,.0f} |"
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
        )
        + f" Peak memory: the baseline's process peaks at {_range(memory)} homegrown's. Against the float32 "
        f"loop: {_range(fp32_timed)} timed, {_range(fp32_whole)} over the whole pass.",
    ]
    if split_padding:
        lines += [
            "",
            (
                f"Padding share of random padded batches over one epoch of the whole training split "
                f"({setup['split_rows']} rows, batch {setup['batch_size']}, no training): "
                f"{100 * split_padding['random']:.1f}% (length-grouped batches: "
                f"{100 * split_padding['group_by_length']:.1f}%; padding-free: none)."
            ),
        ]
    if profile:
        lines += ["", "## Where a step goes", "", profile.strip()]
    for i, r in enumerate(repeats, start=1):
        lines += [
            "",
            f"## Repeat {i}",
            "",
            (
                "| arm | precision | batching | s/step (timed) | useful tokens (timed) | tokens/s (timed) "
                "| tokens per CPU-s | whole pass s | tokens/s (whole pass) | padding share | RSS at start MiB "
                "| peak RSS MiB | seconds of each step after the first |"
            ),
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
            _row(r["homegrown"]),
            _row(r["baseline"]),
            _row(r["baseline_fp32"]),
            "",
            (
                f"Useful tokens in the pass: homegrown {r['homegrown']['useful_tokens_pass']:,}, baseline "
                f"{r['baseline']['useful_tokens_pass']:,} (the same rows, tokenised by trl and by the baseline); "
                f"loss-bearing (answer) tokens {r['homegrown']['collated']['loss_tokens']:,} / "
                f"{r['baseline']['collated']['loss_tokens']:,}; training loss over the pass (first step → last) "
                f"homegrown {r['homegrown']['first_loss']:.3f} → {r['homegrown']['last_loss']:.3f}, baseline "
                f"{r['baseline']['first_loss']:.3f} → {r['baseline']['last_loss']:.3f}; load average before "
                f"the repeat: {', '.join(f'{x:.2f}' for x in r['load_average'])}."
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
    parser.add_argument("--max-length", type=int, default=1024, help="rows cut at this many tokens (default 1024)")
    parser.add_argument(
        "--profile", action="store_true", help="after the timed repeats, one pass of each arm under torch.profiler"
    )
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
        spec = json.loads(args.spec.read_text())
        result = (_profiled_worker if spec.get("profile") else _worker)(args.worker, spec)
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
        "max_length": args.max_length,
        "threads": args.threads or cpu_threads(),
    }
    repeats: list[dict[str, Any]] = []
    for repeat in range(1, args.repeats + 1):
        order = ARMS if repeat % 2 else tuple(reversed(ARMS))
        results: dict[str, Any] = {"load_average": [round(x, 2) for x in os.getloadavg()], "order": order}
        for arm in order:
            results[arm] = run_arm(arm, {**setup, "repeat": repeat}, args.timeout)
            r = results[arm]
            print(
                f"repeat {repeat} {arm}: {r['tokens_per_s']:.0f} tokens/s, {r['s_per_step']:.2f} s/step, "
                f"peak RSS {r['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
        repeats.append(results)
    profiled = (
        {arm: run_arm(arm, {**setup, "repeat": "profile", "profile": True}, args.timeout) for arm in ARMS}
        if args.profile
        else {}
    )

    split_padding = split_padding_of(setup["base"], train_jsonl, args.batch_size, args.seed)
    page = render(info, setup, repeats, split_padding, render_profile(profiled) if profiled else None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page, encoding="utf-8")
    (work / "results.json").write_text(
        json.dumps(
            {"machine": info, "setup": setup, "repeats": repeats, "split_padding": split_padding,
             "profiled": profiled},
            indent=2,
        ),
        encoding="utf-8",
    )
    print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())

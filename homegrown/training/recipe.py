"""The default training recipe, chosen from the train split and the hardware the run trains on.

A business that points homegrown at its own logs runs with no config at all, so the defaults must learn on
data of any size: 60 de-duplicated FAQ rows as well as 5,000 mixed rows. What decides whether a small model
learns a business's facts is mostly how many small optimiser steps it takes over them, which LoRA targets
it adapts and a learning rate that suits the model's size (``bench/results/demo_recipe.md``: on the demo,
16-row steps at 2e-4 on q/k/v/o barely moved SmolLM2-135M; 4-row steps at 2e-3 on every linear layer
reached fact accuracy 0.73 in one epoch). So the recipe

- adapts every linear layer (``all-linear``: the MLP holds facts), rank 32 under a billion parameters and
  16 above, alpha = 2 x rank;
- picks the learning rate from the model's size (2e-3 under 0.5B parameters down to 1e-4 above 10B:
  LoRA on a small model tolerates a much larger step);
- makes steps small enough that even a tiny split gets a few dozen of them per epoch (at most 4 rows a
  step on a CPU, 16 on a GPU; fewer when the split is small);
- runs enough epochs to reach about ``TARGET_STEPS`` optimiser steps (at least one, at most
  ``MAX_EPOCHS``), evaluates on the validation split a few times per run, stops early after two
  evaluations without a lower validation loss and keeps the best checkpoint, not the last (when the
  validation split has at least ``MIN_VALIDATION_ROWS`` rows; on fewer its loss is noise, and the run
  keeps its last checkpoint);
- cuts the number of epochs (then the steps) to fit ``time_budget_s`` from a throughput estimate for the
  hardware, and the trainer stops at the budget all the same if the estimate was optimistic.

Every field set explicitly in the :class:`~homegrown.training.sft.TrainConfig` wins; the reasons say which
values were chosen and why, and travel with the run (MLflow params, Dagster metadata, the adapter folder).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from homegrown.training.sft import TrainConfig

# About this many optimiser steps make a small model learn a few dozen facts in their paraphrases
# (127 4-row steps reached 0.73 fact accuracy on the demo; 15 steps on 58 rows reached 0.27).
TARGET_STEPS = 300
# Even a split of 20 rows should not be seen more often than this: past it the model parrots the split.
MAX_EPOCHS = 8
# A split should give at least this many steps per epoch, so small data gets small steps.
MIN_STEPS_PER_EPOCH = 30
CPU_MAX_ROWS_PER_STEP = 4  # length-grouped batches; more rows a step only makes fewer steps on 2-8 cores
GPU_MAX_ROWS_PER_STEP = 16
# Below this many validation rows the validation loss is too noisy to pick a checkpoint by (5 rows of other
# questions rose while a bakery's 43 train rows were still being learned): train the planned steps, keep the last.
MIN_VALIDATION_ROWS = 20
# Validation-loss evaluations over a run (each also writes a checkpoint): two an epoch, 3 to 8 in all. A
# validation pass costs about a thirtieth of a training epoch (a tenth of the rows, forward only).
MIN_EVALS, MAX_EVALS = 3, 8
EVAL_OVERHEAD = 0.08  # share of the training time spent evaluating the validation split
# Measured throughput of all-linear LoRA on SmolLM2-135M (2 AMD EPYC cores, bf16 autocast: ~200 tokens/s)
# and of Llama-3.1-8B on an H100 (plain transformers + peft: ~6,000 tokens/s); both scale roughly with
# 1 / parameters, and the CPU figure with the cores.
CPU_TOKENS_PER_S_135M_2_CORES = 200.0
GPU_TOKENS_PER_S_8B = 6000.0
GPU_MAX_TOKENS_PER_S = 60000.0


@dataclass(frozen=True)
class DataProfile:
    """What the recipe needs to know about the train split."""

    rows: int
    tokens: int  # prompt + answer tokens of every row, as the trainer sees them (chat template applied)
    answer_tokens: int
    p99_row_tokens: int
    max_row_tokens: int
    validation_rows: int
    example_types: dict[str, int] = field(default_factory=dict)
    tool_rows: int = 0


@dataclass(frozen=True)
class Hardware:
    """Where the run trains."""

    device: str  # "cpu" | "cuda"
    cpus: int
    memory_gib: float
    gpu_name: str | None = None
    gpu_memory_gib: float | None = None
    gpus: int = 0


@dataclass
class Recipe:
    """A fully resolved config, why each value was chosen, and what the run is expected to cost."""

    config: TrainConfig
    reasons: dict[str, str]
    profile: DataProfile
    hardware: Hardware
    base_params: int
    estimate: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "reasons": dict(self.reasons),
            "profile": asdict(self.profile),
            "hardware": asdict(self.hardware),
            "base_params": self.base_params,
            "estimate": dict(self.estimate),
        }


def detect_hardware(device: str = "auto") -> Hardware:
    """The CPU cores, memory and (when ``device`` allows) CUDA GPUs of this machine."""
    import psutil
    import torch

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    memory = psutil.virtual_memory().total / 2**30
    if device != "cpu" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return Hardware("cuda", cpus, round(memory, 1), props.name, round(props.total_memory / 2**30, 1),
                        torch.cuda.device_count())
    return Hardware("cpu", cpus, round(memory, 1))


def profile_rows(prompt_completion_rows: list[dict[str, Any]], validation_rows: int, tokenizer: Any,
                 example_types: dict[str, int] | None = None) -> DataProfile:
    """Token counts of trl prompt-completion rows under the tokenizer's chat template."""
    if not prompt_completion_rows:
        raise ValueError("the train split has no rows")
    lengths, answers, tool_rows = [], 0, 0
    for row in prompt_completion_rows:
        prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        completion = row["completion"][-1]["content"]
        prompt_n = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        answer_n = len(tokenizer(completion, add_special_tokens=False)["input_ids"]) + 1  # + end of turn
        lengths.append(prompt_n + answer_n)
        answers += answer_n
        tool_rows += "<tool_call>" in completion
    lengths.sort()
    p99 = lengths[min(len(lengths) - 1, math.ceil(0.99 * len(lengths)) - 1)]
    return DataProfile(rows=len(lengths), tokens=sum(lengths), answer_tokens=answers, p99_row_tokens=p99,
                       max_row_tokens=lengths[-1], validation_rows=validation_rows,
                       example_types=dict(example_types or {}), tool_rows=tool_rows)


def count_parameters(model_dir: str | os.PathLike) -> int:
    """Parameters of the model in ``model_dir``, counted on the meta device (nothing is loaded)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def estimate_tokens_per_s(hardware: Hardware, base_params: int) -> float:
    """A rough training throughput for all-linear LoRA (see the constants above)."""
    if hardware.device == "cuda":
        per_gpu = min(GPU_TOKENS_PER_S_8B * 8e9 / base_params, GPU_MAX_TOKENS_PER_S)
        return per_gpu * max(hardware.gpus, 1)
    return CPU_TOKENS_PER_S_135M_2_CORES * (hardware.cpus / 2) * (135e6 / base_params)


def _learning_rate(params: int) -> float:
    if params < 5e8:
        return 2e-3
    if params < 2e9:
        return 1e-3
    if params < 1e10:
        return 2e-4
    return 1e-4


def choose_recipe(cfg: TrainConfig, profile: DataProfile, hardware: Hardware, base_params: int,
                  model_max_length: int | None = None) -> Recipe:
    """Fill every ``None`` field of ``cfg`` from the data and the hardware; explicit values are kept."""
    reasons: dict[str, str] = {}
    values: dict[str, Any] = {}

    def pick(name: str, value: Any, why: str) -> Any:
        explicit = getattr(cfg, name)
        if explicit is not None:
            reasons[name] = "set by the run config"
            values[name] = explicit
            return explicit
        reasons[name] = why
        values[name] = value
        return value

    billion = base_params / 1e9
    pick("target_modules", "all-linear", "every linear layer: the MLP is where a transformer keeps facts")
    rank = pick("lora_r", 32 if base_params < 1e9 else 16,
                f"{'32' if base_params < 1e9 else '16'} for a {billion:.2g}B-parameter base")
    pick("lora_alpha", 2 * rank, "2 x rank")
    pick("learning_rate", _learning_rate(base_params),
         f"{_learning_rate(base_params):g} for a {billion:.2g}B-parameter base (LoRA on a small model takes larger steps)")

    longest = profile.p99_row_tokens
    seq_cap = model_max_length or 4096
    seq = min(max(256, 64 * math.ceil(longest / 64)), seq_cap, 4096)
    pick("max_seq_length", seq, f"the 99th percentile row ({longest} tokens) fits; {profile.max_row_tokens} is the longest")

    max_rows = GPU_MAX_ROWS_PER_STEP if hardware.device == "cuda" else CPU_MAX_ROWS_PER_STEP
    rows_per_step = max(1, min(max_rows, profile.rows // MIN_STEPS_PER_EPOCH))
    # On a GPU the rows of a step go through in one pass; on a CPU bigger passes are no faster per row.
    per_device = pick("per_device_batch_size", rows_per_step,
                      f"{rows_per_step} rows a step: {profile.rows} train rows, at least {MIN_STEPS_PER_EPOCH} "
                      f"steps an epoch, at most {max_rows} rows a step on {hardware.device}")
    pick("gradient_accumulation", max(1, rows_per_step // per_device),
         "one forward pass a step" if per_device >= rows_per_step else f"{rows_per_step} rows a step")
    world = max(hardware.gpus, 1) if hardware.device == "cuda" else int(os.environ.get("WORLD_SIZE", "1"))
    step_rows = values["per_device_batch_size"] * values["gradient_accumulation"] * world
    steps_per_epoch = math.ceil(profile.rows / step_rows)

    tokens_per_s = estimate_tokens_per_s(hardware, base_params)
    epoch_s = profile.tokens / tokens_per_s * (1 + EVAL_OVERHEAD)
    wanted = min(MAX_EPOCHS, max(1, math.ceil(TARGET_STEPS / steps_per_epoch)))
    why = (f"{wanted} x {steps_per_epoch} steps reaches ~{TARGET_STEPS} optimiser steps"
           if wanted < MAX_EPOCHS else f"capped at {MAX_EPOCHS} epochs of {steps_per_epoch} steps")
    if wanted == 1 and steps_per_epoch >= TARGET_STEPS:
        why = f"one epoch is already {steps_per_epoch} steps"
    epochs: float = wanted
    max_steps = cfg.max_steps
    budget = cfg.time_budget_s
    if budget is not None and cfg.num_epochs is None and max_steps <= 0 and wanted * epoch_s > budget:
        fit = budget / epoch_s
        if fit >= 1:
            epochs = float(math.floor(fit * 4) / 4)  # quarter epochs
            why = f"{epochs:g} epochs fit the time budget of {budget:.0f} s (~{epoch_s:.0f} s an epoch estimated)"
        else:
            epochs = 1.0
            max_steps = max(10, int(steps_per_epoch * fit))
            why = f"{max_steps} steps (less than an epoch) fit the time budget of {budget:.0f} s"
    pick("num_epochs", epochs, why)
    values["max_steps"] = max_steps

    total_steps = max_steps if max_steps > 0 else math.ceil(steps_per_epoch * values["num_epochs"])
    evaluations = min(MAX_EVALS, max(MIN_EVALS, math.ceil(2 * total_steps / steps_per_epoch)))
    eval_every = max(1, math.ceil(total_steps / evaluations))
    pick("eval_steps", eval_every, f"{evaluations} validation evaluations over {total_steps} steps (the best is kept)")

    if profile.validation_rows >= MIN_VALIDATION_ROWS:
        pick("early_stopping_patience", 2, "stop after 2 evaluations without a lower validation loss; keep the best")
    else:
        pick("early_stopping_patience", 0,
             f"off: {profile.validation_rows} validation rows are too few to choose a checkpoint by "
             f"(< {MIN_VALIDATION_ROWS}); the planned steps run and the last checkpoint is kept")

    resolved = replace(cfg, **values)
    estimate = {
        "tokens_per_s": round(tokens_per_s, 1),
        "epoch_s": round(epoch_s, 1),
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "train_s": round(epoch_s * (total_steps / steps_per_epoch), 1),
    }
    return Recipe(resolved, reasons, profile, hardware, base_params, estimate)

"""LoRA / QLoRA supervised fine-tuning of the base model on the chat splits (transformers + peft + trl).

``train(cfg, train_jsonl, validation_jsonl, base, output_dir)`` is the one entry point: the Dagster asset,
the CLI and ``accelerate launch`` (see ``entry.py``) all call it. Each split row ``{"messages", "tools"?}``
becomes trl's conversational prompt–completion pair (prompt = every message but the last, completion = the
assistant answer), so the loss covers the answer tokens only: SmolLM2's chat template has no
``{% generation %}`` markers for trl's assistant-only mask.

How a step is made cheap on a CPU (``bench/results/train_cpu.md`` measures it against a plain padded peft loop):
the rows of a batch are concatenated into one padding-free sequence whose ``position_ids`` restart at every
row, and attention runs row by row (:func:`_register_row_attention`), so no compute goes to padding or to
attention across rows; the frozen base is held in bf16 where the CPU computes in bf16 natively (the LoRA
weights stay float32 under autocast); logits are computed only where the loss is (the answer tokens,
:func:`answer_loss`), which also keeps the ``(tokens x vocabulary)`` logits out of memory; AdamW is the
fused kernel; torch uses every core this process may run on (or ``OMP_NUM_THREADS``).

Layout of ``output_dir``: ``checkpoints/checkpoint-<step>/`` (Trainer checkpoints, resumed from
automatically), ``adapter/`` (the final LoRA adapter + tokenizer + ``homegrown_adapter.json``, never a copy
of the base weights) and ``train_config.json``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from homegrown.training.base import BaseModel, resolve_base_model
from homegrown.training.chat import to_prompt_completion
from homegrown.training.recipe import Recipe, choose_recipe, count_parameters, detect_hardware, profile_rows

ADAPTER_INFO = "homegrown_adapter.json"
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
BATCHING = ("padding_free", "group_by_length", "packing", "padded")
# Attention implementation registered with transformers by _register_row_attention(): SDPA one row at a time
# inside a padding-free batch.
ROW_ATTENTION = "homegrown_row_sdpa"
IGNORE_INDEX = -100
# Fields the recipe (homegrown/training/recipe.py) chooses when they are left at None.
AUTO_FIELDS = ("lora_r", "lora_alpha", "target_modules", "learning_rate", "num_epochs", "max_seq_length",
               "per_device_batch_size", "gradient_accumulation", "eval_steps", "early_stopping_patience")
# Legal stand-ins so that validate() can check the other fields of a config that is not resolved yet.
_PLACEHOLDER = {"lora_r": 8, "lora_alpha": 16, "target_modules": "all-linear", "learning_rate": 1e-3,
                "num_epochs": 1.0, "max_seq_length": 512, "per_device_batch_size": 2,
                "gradient_accumulation": 1, "eval_steps": None, "early_stopping_patience": 0}
# Fields that change what the adapter is; resuming a checkpoint written under other values is refused.
_RESUME_KEYS = ("lora_r", "lora_alpha", "lora_dropout", "target_modules", "qlora", "max_seq_length", "seed")
# Liger's kernels that liger_kernels=True applies: its fused cross-entropy is left out, since answer_loss computes
# the logits of the answer tokens only and trl refuses it with its own loss head.
LIGER_KERNELS = {"rope": True, "rms_norm": True, "swiglu": True, "cross_entropy": False,
                 "fused_linear_cross_entropy": False}


@dataclass
class TrainConfig:
    """Everything that decides a fine-tuning run.

    Fields left at ``None`` are chosen at the start of :func:`train` by ``homegrown.training.recipe`` from
    the train split and the hardware the run trains on (the resolved values and the reasons are recorded
    with the run); a value set here always wins.
    """

    # Adapter rank: higher gives more capacity to learn the business's answers, more parameters and memory.
    lora_r: int | None = None
    # Scale of the LoRA update (alpha / r); higher moves further from the base per step.
    lora_alpha: int | None = None
    # Regularises small datasets; 0 trains slightly faster.
    lora_dropout: float = 0.05
    # Attention projections only (q/k/v/o) are cheap and enough for style; "all-linear" adds the MLP, where
    # facts live: ~3x the trainable parameters, slower on CPU.
    target_modules: tuple[str, ...] | str | None = None
    # LoRA tolerates a much higher rate than full fine-tuning; lower it if the eval loss rises after epoch 1.
    learning_rate: float | None = None
    # More epochs fit a small dataset better until it is memorised; early stopping guards the end.
    num_epochs: float | None = None
    # Longer keeps long conversations whole (SmolLM2 reads 8k) at quadratic attention cost; longer rows are
    # truncated, keeping their start.
    max_seq_length: int | None = None
    # Rows per forward pass; larger uses the cores better and needs more memory.
    per_device_batch_size: int | None = None
    # Effective batch = per_device_batch_size x gradient_accumulation x processes; larger is smoother, fewer steps.
    gradient_accumulation: int | None = None
    seed: int = 42
    # How batches avoid computing on padding. "padding_free" (default): rows in random order, each batch's
    # rows concatenated into one sequence with position_ids restarting per row and attention computed row by
    # row, so nothing is spent on padding or on attention across rows (on 2 CPU cores the fastest mode, see
    # bench/results/train_cpu.md). "group_by_length": rows of similar length share a padded batch (a little
    # padding, a less random order). "packing": trl's best-fit-decreasing packing of rows into sequences of
    # max_seq_length (fewer, fuller steps; changes how many rows a step holds). "padded": plain random
    # batches padded to their longest row.
    batching: str = "padding_free"
    # "auto": bf16 where the hardware runs it natively (CUDA with bf16, CPUs with AVX512-BF16/AMX), float32
    # otherwise: the frozen base weights are held in bf16 and the step runs under bf16 autocast, while the LoRA
    # weights and their optimiser state stay float32. True forces it (ValueError where unsupported), False is
    # float32 throughout.
    bf16: bool | str = "auto"
    # CUDA only: 4-bit NF4 base (bitsandbytes) + paged 8-bit AdamW; a quarter of the memory, slightly worse.
    qlora: bool = False
    # Recomputes activations in the backward pass: less memory, ~20-30% slower. Rarely needed at 135M.
    gradient_checkpointing: bool = False
    # With gradient_checkpointing: this many decoder layers (the last ones) keep their activations instead of
    # recomputing them in the backward pass. Each one saves about 1/num_layers of the recompute (a third of a
    # checkpointed LoRA step's compute in all) and costs one layer's activations of memory; 0 recomputes them all.
    uncheckpointed_layers: int = 0
    # CUDA only: Liger's Triton kernels for RMSNorm, RoPE and SwiGLU (the liger-kernel package), patched into the
    # model when training starts: fewer passes over memory and smaller saved activations (see LIGER_KERNELS).
    liger_kernels: bool = False
    # Evaluate (and checkpoint) every N optimiser steps; the best checkpoint by validation loss is kept.
    eval_steps: int | None = None
    # Stop after this many evaluations without improvement of the validation loss and keep the best
    # checkpoint; 0 disables both (the last checkpoint is kept).
    early_stopping_patience: int | None = None
    # Cap on optimiser steps (overrides num_epochs when > 0); for tests and smoke runs.
    max_steps: int = -1
    # Wall-clock cap on the training loop in seconds: the recipe picks fewer epochs to fit it, and the run
    # stops (keeping the best checkpoint so far) when it is reached anyway. None: no cap.
    time_budget_s: float | None = None
    warmup_ratio: float = 0.05
    lr_scheduler: str = "cosine"
    weight_decay: float = 0.0
    logging_steps: int = 5
    # Trainer checkpoints kept on disk (the best one is always kept as well).
    save_total_limit: int = 2
    # "auto" uses CUDA when present; "cpu" forces the CPU.
    device: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, list):
            self.target_modules = tuple(self.target_modules)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a JSON-like dict; unknown keys raise ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training config keys: {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if isinstance(self.target_modules, tuple):
            out["target_modules"] = list(self.target_modules)
        return out

    def uses_cuda(self) -> bool:
        import torch

        return self.device != "cpu" and torch.cuda.is_available()

    def resolved_bf16(self) -> bool:
        """Whether training runs in bf16 (bf16 base weights, bf16 autocast) on this machine."""
        import torch

        if self.bf16 is False:
            return False
        if self.uses_cuda():
            supported = torch.cuda.is_bf16_supported()
        else:
            # Not torch.ops.mkldnn._is_mkldnn_bf16_supported(): it is true on any AVX-512 CPU, where oneDNN
            # emulates bf16 and a bf16 matmul ran 4x slower than float32 (an Ice Lake Xeon, 2 cores).
            supported = bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        if self.bf16 is True and not supported:
            where = "this GPU" if self.uses_cuda() else "this CPU (needs AVX512-BF16 or AMX)"
            raise ValueError(f"bf16=True but {where} does not support bf16; use bf16='auto' or False")
        return supported

    def unresolved(self) -> list[str]:
        """The fields the recipe still has to choose."""
        return [name for name in AUTO_FIELDS if getattr(self, name) is None]

    def validate(self, resolved: bool = False) -> None:
        """Raise ValueError for an illegal value or combination, before anything is loaded.

        ``None`` fields (chosen by the recipe) pass unless ``resolved`` is set.
        """
        missing = self.unresolved()
        if resolved and missing:
            raise ValueError(f"training config fields {missing} are not chosen yet (train() resolves them)")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ValueError(f"time_budget_s must be positive or None, got {self.time_budget_s!r}")
        given = replace(self, **{name: _PLACEHOLDER[name] for name in missing})
        given._validate_values()

    def _validate_values(self) -> None:
        if not isinstance(self.lora_r, int) or self.lora_r < 1:
            raise ValueError(f"lora_r must be a positive integer, got {self.lora_r!r}")
        if not isinstance(self.lora_alpha, (int, float)) or self.lora_alpha <= 0:
            raise ValueError(f"lora_alpha must be positive, got {self.lora_alpha!r}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if isinstance(self.target_modules, str):
            if self.target_modules != "all-linear":
                raise ValueError(
                    f"target_modules must be 'all-linear' or a list of module names, got {self.target_modules!r}"
                )
        elif not self.target_modules or not all(isinstance(m, str) and m for m in self.target_modules):
            raise ValueError(
                f"target_modules must be a non-empty list of module names, got {self.target_modules!r}"
            )
        elif "lm_head" in self.target_modules:
            raise ValueError(
                "target_modules may not include lm_head (tied to the embeddings; trl cannot train it)"
            )
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate!r}")
        if not self.num_epochs > 0:
            raise ValueError(f"num_epochs must be positive, got {self.num_epochs!r}")
        if not isinstance(self.max_seq_length, int) or self.max_seq_length < 16:
            raise ValueError(f"max_seq_length must be an integer >= 16, got {self.max_seq_length!r}")
        for name in ("per_device_batch_size", "gradient_accumulation", "logging_steps", "save_total_limit"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.uncheckpointed_layers, int) or self.uncheckpointed_layers < 0:
            raise ValueError(f"uncheckpointed_layers must be an integer >= 0, got {self.uncheckpointed_layers!r}")
        if self.uncheckpointed_layers and not self.gradient_checkpointing:
            raise ValueError(
                "uncheckpointed_layers needs gradient_checkpointing=True (without it every layer keeps its activations)"
            )
        if self.batching not in BATCHING:
            raise ValueError(f"batching must be one of {BATCHING}, got {self.batching!r}")
        if self.bf16 not in (True, False, "auto"):
            raise ValueError(f"bf16 must be true, false or 'auto', got {self.bf16!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.eval_steps is not None and (not isinstance(self.eval_steps, int) or self.eval_steps < 1):
            raise ValueError(f"eval_steps must be a positive integer or None, got {self.eval_steps!r}")
        if self.early_stopping_patience is not None and (
            not isinstance(self.early_stopping_patience, int) or self.early_stopping_patience < 0
        ):
            raise ValueError(
                f"early_stopping_patience must be an integer >= 0 or None, got {self.early_stopping_patience!r}"
            )
        if not isinstance(self.max_steps, int) or self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(
                f"max_steps must be -1 (use num_epochs) or a positive integer, got {self.max_steps!r}"
            )
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if self.lr_scheduler not in ("cosine", "linear", "constant", "constant_with_warmup"):
            raise ValueError(
                f"lr_scheduler must be cosine, linear, constant or constant_with_warmup, got {self.lr_scheduler!r}"
            )
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' but no CUDA device is available")
        if self.qlora:
            if not self.uses_cuda():
                raise ValueError(
                    "qlora needs a CUDA GPU (bitsandbytes 4-bit); use plain LoRA (qlora=False) on CPU"
                )
            try:
                import bitsandbytes  # noqa: F401
            except ImportError as exc:
                raise ValueError("qlora needs the bitsandbytes package (pip install bitsandbytes)") from exc
            if self.bf16 is False:
                raise ValueError("qlora computes in bf16; it cannot be combined with bf16=False")
        if self.liger_kernels:
            if not self.uses_cuda():
                raise ValueError("liger_kernels needs a CUDA GPU (Liger's kernels are Triton kernels)")
            if importlib.util.find_spec("liger_kernel") is None:
                raise ValueError("liger_kernels needs the liger-kernel package (pip install liger-kernel)")
        self.resolved_bf16()


@dataclass
class TrainResult:
    """What a run produced: the adapter folder, summary metrics, the logged history, the checkpoint resumed."""

    adapter_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: str | None = None
    # The resolved config, why each value was chosen, the data profile and hardware (recipe.Recipe.to_dict()).
    recipe: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "adapter_dir": str(self.adapter_dir),
            "metrics": self.metrics,
            "history": self.history,
            "resumed_from": self.resumed_from,
            "recipe": self.recipe,
        }


def read_split(path: Path) -> list[dict[str, list[dict[str, str]]]]:
    """A chat-format JSONL split as prompt–completion rows; a bad line raises ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"split file {path} does not exist")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rows.append(to_prompt_completion(json.loads(line)))
            except (ValueError, json.JSONDecodeError) as exc:
                raise ValueError(f"{path}:{number}: {exc}") from exc
    return rows


def _progress_callback(progress: Callable[[dict], None] | None, history: list[dict[str, Any]]):
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        """Turns the Trainer's logs into ``{"step","loss","tokens_per_s","eta_s","epoch"}`` progress events."""

        def __init__(self) -> None:
            self.start: float | None = None
            self.start_step = 0
            self.last_time = 0.0
            self.last_tokens = 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = self.last_time = time.perf_counter()
            self.start_step = state.global_step
            self.last_tokens = state.num_input_tokens_seen or 0

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs or self.start is None:
                return
            now = time.perf_counter()
            tokens = state.num_input_tokens_seen or 0
            elapsed = now - self.last_time
            event: dict[str, Any] = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
            if "loss" in logs:
                event["loss"] = float(logs["loss"])
                event["tokens_per_s"] = (
                    round((tokens - self.last_tokens) / elapsed, 1) if elapsed > 0 else None
                )
                done = state.global_step - self.start_step
                left = state.max_steps - state.global_step
                event["eta_s"] = round((now - self.start) / done * left, 1) if done > 0 else None
                self.last_time, self.last_tokens = now, tokens
            elif "eval_loss" in logs:
                event["eval_loss"] = float(logs["eval_loss"])
            else:
                return
            history.append(event)
            if progress is not None:
                progress(event)

    return ProgressCallback()


def resolve_recipe(
    cfg: TrainConfig, train_rows: list[dict[str, Any]], eval_rows: list[dict[str, Any]], base: BaseModel
) -> Recipe:
    """The recipe for this split on this machine: ``cfg`` with every ``None`` field chosen, and why."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base.path)
    profile = profile_rows(train_rows, len(eval_rows), tokenizer)
    hardware = detect_hardware("cpu" if cfg.device == "cpu" else "auto")
    limit = getattr(tokenizer, "model_max_length", None)
    limit = limit if isinstance(limit, int) and limit < 1_000_000 else None
    return choose_recipe(cfg, profile, hardware, count_parameters(base.path), model_max_length=limit)


def _time_budget_callback(budget_s: float):
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        """Stops training once ``budget_s`` seconds have passed, evaluating and saving first so that the
        best checkpoint (by validation loss) is what the run keeps."""

        def __init__(self) -> None:
            self.start = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if time.perf_counter() - self.start >= budget_s:
                control.should_training_stop = True
                if args.eval_strategy != "no":
                    control.should_evaluate = True
                control.should_save = True
            return control

    return TimeBudget()


def _uncheckpointed_layers_callback(layers: int):
    from transformers import TrainerCallback
    from transformers.modeling_layers import GradientCheckpointingLayer

    class UncheckpointedLayers(TrainerCallback):
        """Turns checkpointing off for the last ``layers`` decoder layers (``TrainConfig.uncheckpointed_layers``).

        ``Trainer.train()`` turns it on for every layer (transformers' own ``every_n_layers`` can only keep one
        layer in n, a half at least) right before this event; a layer's flag is read at each forward.
        """

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            blocks = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
            for block in blocks[len(blocks) - min(layers, len(blocks)) :]:
                block.gradient_checkpointing = False

    return UncheckpointedLayers()


def _config_digest(cfg: TrainConfig, base: BaseModel) -> dict[str, Any]:
    values = {key: cfg.to_dict()[key] for key in _RESUME_KEYS}
    values["base_template_fingerprint"] = base.template_fingerprint
    values["base_name"] = base.name
    return values


def _check_resume(output_dir: Path, digest: dict[str, Any]) -> None:
    """Refuse to resume checkpoints that were written for another adapter shape or base."""
    record = output_dir / "train_config.json"
    if record.is_file():
        previous = json.loads(record.read_text()).get("resume_digest", {})
        changed = sorted(k for k in set(previous) | set(digest) if previous.get(k) != digest.get(k))
        if changed:
            raise ValueError(
                f"{output_dir} holds checkpoints of a run with different {changed}; "
                "use a new output_dir or delete its checkpoints/"
            )


def _step_of(checkpoint: str | None) -> int | None:
    """The optimiser step of a ``checkpoint-<step>`` folder (the one loaded back as the best)."""
    if not checkpoint:
        return None
    tail = Path(checkpoint).name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _tokens_at(checkpoint: str) -> int:
    """Input tokens already counted in a checkpoint's trainer state."""
    state = Path(checkpoint) / "trainer_state.json"
    return int(json.loads(state.read_text()).get("num_input_tokens_seen", 0)) if state.is_file() else 0


def _register_row_attention() -> None:
    """Register :data:`ROW_ATTENTION` with transformers (idempotent).

    A padding-free batch is one sequence holding several rows. transformers' own SDPA path masks it with a
    block-diagonal mask, which is correct but computes attention over the whole batch length (the square of
    the sum of the rows' lengths) and repeats the key/value heads. This implementation runs SDPA causally on
    each row's slice instead (the boundaries come from the collator's ``cu_seq_lens_q``), so attention costs
    the sum of the squares of the rows' lengths, as in an ordinary padded batch without the padding. Batches
    without boundaries (padded ones, generation) go to the standard SDPA function with their mask.
    """
    import torch
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    def row_sdpa(module, query, key, value, attention_mask, cu_seq_lens_q=None, **kwargs):
        if cu_seq_lens_q is None or query.shape[0] != 1:
            return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
        kwargs.pop("is_causal", None)
        bounds = cu_seq_lens_q.tolist()
        rows = [
            sdpa_attention_forward(
                module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None, is_causal=True, **kwargs
            )[0]
            for a, b in itertools.pairwise(bounds)
            if b > a
        ]
        return torch.cat(rows, dim=1), None

    AttentionInterface.register(ROW_ATTENTION, row_sdpa)
    AttentionMaskInterface.register(ROW_ATTENTION, sdpa_mask)


def _load_model(cfg: TrainConfig, base: BaseModel, use_bf16: bool):
    import torch
    from transformers import AutoModelForCausalLM

    _register_row_attention()
    # The frozen base in bf16 when the step computes in bf16 anyway: half the memory, and autocast no longer
    # casts every weight at every step. peft keeps the LoRA weights it adds in float32.
    kwargs: dict[str, Any] = {
        "dtype": torch.bfloat16 if use_bf16 else torch.float32,
        "attn_implementation": ROW_ATTENTION if cfg.batching in ("padding_free", "packing") else "sdpa",
    }
    if cfg.qlora:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["dtype"] = torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(base.path, **kwargs)
    if cfg.qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    return model


def answer_loss(model, inputs: dict[str, Any], num_items_in_batch: Any = None):
    """Mean cross-entropy over the answer tokens of a batch, computing logits at those positions only.

    ``inputs`` is a collated batch with ``labels`` (``IGNORE_INDEX`` on prompt, padding and row starts). The
    model's ``logits_to_keep`` boolean mask makes the LM head project only the positions whose next token
    is an answer token, so the ``(positions x vocabulary)`` logits of the prompt are never built; the loss
    is then the one transformers computes from the full logits. Divided by ``num_items_in_batch`` (the answer
    tokens of every micro-batch of the optimiser step) when given, as the Trainer's gradient accumulation
    expects, else by this batch's answer tokens.
    """
    import torch
    import torch.nn.functional as F

    labels = inputs["labels"]
    targets = labels[:, 1:]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = targets != IGNORE_INDEX
    model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
    logits = model(**model_inputs, logits_to_keep=keep, use_cache=False).logits  # (answer tokens, vocabulary)
    loss = F.cross_entropy(logits.float(), targets[keep[:, :-1]], reduction="sum")
    count = keep.sum() if num_items_in_batch is None else num_items_in_batch
    return loss / torch.as_tensor(count, device=loss.device).clamp(min=1)


def _trainer_class():
    """trl's ``SFTTrainer`` with :func:`answer_loss` as its loss.

    trl's own loss scores every position on a CPU (its compact path needs Triton) and computes the entropy
    and top-1 accuracy of every position at every step for its logs; this one builds the answer positions'
    logits only and keeps nothing per step but the loss.
    """
    from trl import SFTTrainer

    class AnswerLossSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs:
                raise ValueError("homegrown's trainer computes the loss only (prediction_loss_only)")
            loss = answer_loss(model, inputs, num_items_in_batch)
            # As trl and Trainer do: num_items_in_batch counts every rank's tokens and DDP averages gradients.
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            return loss

    return AnswerLossSFTTrainer


def build_trainer(
    cfg: TrainConfig,
    base: BaseModel,
    train_rows: list[dict[str, Any]],
    eval_rows: list[dict[str, Any]],
    checkpoint_dir: Path,
    callbacks: list[Any] | tuple[Any, ...] = (),
):
    """The trainer for a run (trl's ``SFTTrainer`` with :func:`answer_loss`): base model + LoRA config +
    tokenised prompt–completion datasets + the batching of ``cfg.batching``.

    ``train`` is the normal way in; this is public so that tests and notebooks can inspect the prepared
    datasets (labels) and parameters before training. Fields left to the recipe are chosen here too.
    """
    if cfg.unresolved():
        cfg = resolve_recipe(cfg, train_rows, eval_rows, base).config
    cfg.validate(resolved=True)
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer, EarlyStoppingCallback, PrinterCallback, set_seed
    from trl import SFTConfig
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    set_seed(cfg.seed)
    use_bf16 = cfg.resolved_bf16()
    use_cpu = not cfg.uses_cuda()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if use_cpu:
        _use_every_core(world_size)
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    model = _load_model(cfg, base, use_bf16)

    target_modules: str | list[str] = (
        cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
    )
    peft_config = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    has_eval = bool(eval_rows)
    flattened = cfg.batching in ("padding_free", "packing")
    strategy = "steps" if cfg.eval_steps else "epoch"
    early_stopping = has_eval and bool(cfg.early_stopping_patience)
    args = SFTConfig(
        output_dir=str(checkpoint_dir),
        seed=cfg.seed,
        data_seed=cfg.seed,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_batch_size,
        per_device_eval_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        max_length=cfg.max_seq_length,
        packing=cfg.batching == "packing",
        # "padding_free" uses trl's padding-free collator, passed below: trl's own switch refuses max_length.
        padding_free=False,
        train_sampling_strategy="group_by_length" if cfg.batching == "group_by_length" else "random",
        completion_only_loss=True,
        prediction_loss_only=True,
        bf16=use_bf16,
        use_cpu=use_cpu,
        # transformers 5 name of gradient checkpointing (the old name is a deprecated alias)
        activation_checkpointing=cfg.gradient_checkpointing,
        use_liger_kernel=cfg.liger_kernels,
        liger_kernel_config=dict(LIGER_KERNELS) if cfg.liger_kernels else None,
        # One fused kernel over every LoRA tensor instead of a loop of small ops per tensor (CPU and CUDA).
        optim="paged_adamw_8bit" if cfg.qlora else "adamw_torch_fused",
        eval_strategy=strategy if has_eval else "no",
        eval_steps=cfg.eval_steps,
        save_strategy=strategy,
        save_steps=cfg.eval_steps or 500,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=early_stopping,
        metric_for_best_model="eval_loss" if early_stopping else None,
        greater_is_better=False if early_stopping else None,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        # A padding-free or packed batch holds no padding, and its end-of-turn tokens equal the pad token, which
        # "non_padding" would leave out: every position counts there.
        include_num_input_tokens_seen="all" if flattened else "non_padding",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        ddp_backend="gloo" if use_cpu and world_size > 1 else None,
        ddp_find_unused_parameters=False,
    )
    callbacks = list(callbacks)
    if early_stopping:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    if cfg.time_budget_s is not None:
        callbacks.append(_time_budget_callback(cfg.time_budget_s))
    if cfg.uncheckpointed_layers:
        callbacks.append(_uncheckpointed_layers_callback(cfg.uncheckpointed_layers))

    collator = None
    if cfg.batching == "padding_free":
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        # One sequence per batch; labels are IGNORE_INDEX at each row start, and cu_seq_lens_q gives the row
        # boundaries to _register_row_attention's attention.
        collator = DataCollatorForLanguageModeling(pad_token_id=pad_id, padding_free=True)
    trainer = _trainer_class()(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if has_eval else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    # disable_tqdm swaps the progress bar for a callback that prints every log dict; progress() replaces it.
    trainer.remove_callback(PrinterCallback)
    return trainer


def _use_every_core(world_size: int) -> None:
    """Give torch every core this process may run on (split between the ranks of a multi-process run).

    torch's default is the machine's physical core count, which over-subscribes a container or a
    ``taskset`` limited to fewer cores and leaves hyper-threads or extra affinity unused elsewhere. An
    explicit ``OMP_NUM_THREADS`` wins: on a machine whose cores are busy with other work, fewer threads are
    faster (torch's threads wait for each other at every operator, and a descheduled one stalls them all).
    """
    import torch

    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, cores // max(1, world_size)))


def train(
    cfg: TrainConfig,
    train_jsonl: Path,
    validation_jsonl: Path | None,
    base: BaseModel | Path | str,
    output_dir: Path,
    progress: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Fine-tune a LoRA adapter on ``train_jsonl``, evaluating on ``validation_jsonl`` every epoch.

    Resumes from the newest checkpoint in ``output_dir/checkpoints`` when there is one. Under several
    processes (``accelerate launch``) every rank trains and only the main process writes the adapter.
    ``progress`` receives ``{"step","loss","tokens_per_s","eta_s","epoch"}`` at every log step (and
    ``{"step","epoch","eval_loss"}`` after each evaluation).
    """
    cfg.validate()
    from transformers.trainer_utils import get_last_checkpoint

    if not isinstance(base, BaseModel):
        base = resolve_base_model(str(base))
    output_dir = Path(output_dir)
    checkpoint_dir = output_dir / "checkpoints"
    adapter_dir = output_dir / "adapter"

    train_rows = read_split(Path(train_jsonl))
    if not train_rows:
        raise ValueError(f"the training split {train_jsonl} has no rows")
    eval_rows = read_split(Path(validation_jsonl)) if validation_jsonl is not None else []

    recipe = resolve_recipe(cfg, train_rows, eval_rows, base)
    cfg = recipe.config
    cfg.validate(resolved=True)
    main_process = int(os.environ.get("RANK", "0")) == 0
    digest = _config_digest(cfg, base)
    last_checkpoint = get_last_checkpoint(str(checkpoint_dir)) if checkpoint_dir.is_dir() else None
    if last_checkpoint:
        _check_resume(output_dir, digest)
    if main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        record = {"config": cfg.to_dict(), "base": base.to_dict(), "resume_digest": digest,
                  "recipe": recipe.to_dict()}
        (output_dir / "train_config.json").write_text(json.dumps(record, indent=2))

    history: list[dict[str, Any]] = []
    trainer = build_trainer(
        cfg, base, train_rows, eval_rows, checkpoint_dir, [_progress_callback(progress, history)]
    )
    if len(trainer.train_dataset) == 0:
        raise ValueError(
            f"none of the {len(train_rows)} rows of {train_jsonl} keeps an answer token within "
            f"max_seq_length={cfg.max_seq_length} (the prompts are longer): raise max_seq_length")
    use_bf16 = bool(trainer.args.bf16)
    has_eval = bool(eval_rows)
    early_stopping = bool(trainer.args.load_best_model_at_end)
    trainable, total = trainer.model.get_nb_trainable_parameters()

    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=last_checkpoint)
    runtime = time.perf_counter() - started
    # Tokens of this session only (a resumed run's state already counts the earlier ones).
    session_tokens = trainer.state.num_input_tokens_seen - (
        _tokens_at(last_checkpoint) if last_checkpoint else 0
    )

    eval_loss: float | None = None
    if early_stopping and trainer.state.best_metric is not None:
        eval_loss = float(trainer.state.best_metric)  # the best checkpoint was loaded back at the end
    elif has_eval:
        # From the trainer state, which every rank shares: evaluate() is collective, so all ranks must agree.
        evals = [
            h
            for h in trainer.state.log_history
            if "eval_loss" in h and h["step"] == trainer.state.global_step
        ]
        eval_loss = evals[-1]["eval_loss"] if evals else float(trainer.evaluate()["eval_loss"])

    train_losses = [h["loss"] for h in history if "loss" in h]
    metrics: dict[str, Any] = {
        "train_loss": float(output.training_loss),
        "first_loss": train_losses[0] if train_losses else None,
        "last_loss": train_losses[-1] if train_losses else None,
        "eval_loss": eval_loss,
        "steps": trainer.state.global_step,
        "epochs": float(trainer.state.epoch or 0.0),
        "train_rows": len(train_rows),
        "validation_rows": len(eval_rows),
        "tokens_seen": int(trainer.state.num_input_tokens_seen),
        "tokens_per_s": round(session_tokens / runtime, 1) if runtime > 0 else None,
        "train_runtime_s": round(runtime, 2),
        "trainable_params": int(trainable),
        "total_params": int(total),
        "trainable_percent": round(100.0 * trainable / total, 4),
        "bf16": use_bf16,
        "device": "cuda" if cfg.uses_cuda() else "cpu",
        "world_size": trainer.args.world_size,
        "stopped_early": bool(
            early_stopping and cfg.max_steps < 0 and trainer.state.global_step < trainer.state.max_steps
        ),
        "time_budget_reached": bool(cfg.time_budget_s is not None and runtime >= cfg.time_budget_s),
        "best_step": _step_of(trainer.state.best_model_checkpoint),
    }
    if trainer.is_world_process_zero():
        trainer.save_model(str(adapter_dir))
        info = {
            "base_name": base.name,
            "base_path": str(base.path),
            "base_source": base.source,
            "template_fingerprint": base.template_fingerprint,
            "config": cfg.to_dict(),
            "recipe": recipe.to_dict(),
            "metrics": metrics,
            "resumed_from": last_checkpoint,
        }
        (adapter_dir / ADAPTER_INFO).write_text(json.dumps(info, indent=2))
    trainer.accelerator.wait_for_everyone()
    return TrainResult(
        adapter_dir=adapter_dir, metrics=metrics, history=history, resumed_from=last_checkpoint,
        recipe=recipe.to_dict(),
    )


def adapter_info(adapter_dir: Path) -> dict[str, Any]:
    """The ``homegrown_adapter.json`` written beside a trained adapter (base name/path, fingerprint, metrics)."""
    path = Path(adapter_dir) / ADAPTER_INFO
    if not path.is_file():
        raise ValueError(f"{adapter_dir} is not a homegrown adapter folder (no {ADAPTER_INFO})")
    return json.loads(path.read_text())


def config_hash(cfg: TrainConfig) -> str:
    """A short stable hash of the whole config, for run names and cache keys."""
    text = json.dumps(cfg.to_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def estimate_steps(rows: int, cfg: TrainConfig, world_size: int = 1) -> int:
    """Optimiser steps a run over ``rows`` training rows will take (before early stopping)."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    return math.ceil(
        math.ceil(rows / (cfg.per_device_batch_size * world_size))
        / cfg.gradient_accumulation
        * cfg.num_epochs
    )

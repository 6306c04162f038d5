"""Preference tuning of the SFT adapter on what reviewers said was wrong: DPO on corrections, KTO on thumbs.

Supervised fine-tuning only learns from answers that were right. Feedback also says which answers were
wrong, and that is the direct lever on hallucinations:

- every trusted correction is a preference pair for the same prompt: the logged answer is ``rejected``, the
  correction ``chosen`` (DPO). Trusted means what the quality policy trusts to replace an answer
  (``QualityPolicy.correction_roles``): a correction sent with an app key makes no pair, as it replaces no
  answer in the SFT data either;
- without pairs, thumbs up and thumbs down are unpaired positives and negatives (KTO); they count as the
  quality policy counts them (``trusted_feedback_only``).

Only train-split conversations give pairs: an interaction counts when its conversation was assigned to the
train split, or when it was merged (as a near-duplicate) into a train example, and never when either says
validation or test. A pair whose question and chosen answer near-duplicate a validation or test example is
dropped too (the leakage rule of ``homegrown.data.splits``). Prompts and answers are anonymised with the
same anonymiser, per conversation, as the SFT data, and rendered like SFT rows (tools described in the
system message, see ``homegrown.training.chat``).

Tuning starts from the SFT adapter and keeps it as the reference policy (trl copies it into a frozen
``ref`` adapter). :func:`compare` answers the test split with the SFT adapter and with the tuned one and
says in words whether the hallucination rate fell without a loss of fact accuracy beyond noise.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from homegrown.data.quality import (
    QualityPolicy,
    _as_dict,
    _correction,
    _number,
    apply_correction,
    trusted_feedback,
)
from homegrown.training.chat import to_prompt_completion

ADAPTER_INFO = "homegrown_adapter.json"
METHODS = ("dpo", "kto")
HELD_OUT = ("validation", "test")
# The metrics the comparison reports; both are text-answer metrics of homegrown.evaluation.metrics.
COMPARED = ("hallucination_rate", "fact_accuracy")


@dataclass
class PreferenceConfig:
    """How (and whether) the SFT adapter is preference-tuned."""

    # "auto": DPO when there are at least ``min_pairs`` pairs, else KTO when there are at least
    # ``min_unpaired`` thumbs (with both kinds among them), else off. True: the same choice, but a run
    # without enough data is an error. False: off, the SFT adapter is used as it is.
    enabled: bool | str = "auto"
    min_pairs: int = 8
    min_unpaired: int = 16
    # Strength of the pull back to the SFT adapter: lower lets the policy move further from it.
    beta: float = 0.1
    # Preference tuning moves a trained adapter: a small step keeps what SFT learned.
    learning_rate: float = 5e-5
    num_epochs: float = 2.0
    per_device_batch_size: int = 4
    gradient_accumulation: int = 1
    # Prompt + answer tokens; longer rows keep their start.
    max_length: int = 1024
    # Cap on optimiser steps (> 0 overrides num_epochs); for tests and smoke runs.
    max_steps: int = -1
    # Wall-clock cap on the training loop: the run stops at it and keeps the adapter as it is then.
    time_budget_s: float | None = None
    seed: int = 42
    # "auto": bf16 autocast where the hardware runs it natively (as SFT does); True forces it, False is float32.
    bf16: bool | str = "auto"
    device: str = "auto"
    logging_steps: int = 1

    def validate(self) -> None:
        """Raise ValueError for an illegal value, before anything is loaded."""
        if self.enabled not in (True, False, "auto"):
            raise ValueError(f"enabled must be true, false or 'auto', got {self.enabled!r}")
        for name in ("min_pairs", "min_unpaired", "per_device_batch_size", "gradient_accumulation", "logging_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.beta, (int, float)) and 0 < self.beta <= 10):
            raise ValueError(f"beta must be in (0, 10], got {self.beta!r}")
        if not (isinstance(self.learning_rate, (int, float)) and 0 < self.learning_rate < 1):
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate!r}")
        if not self.num_epochs > 0:
            raise ValueError(f"num_epochs must be positive, got {self.num_epochs!r}")
        if not isinstance(self.max_length, int) or self.max_length < 32:
            raise ValueError(f"max_length must be an integer >= 32, got {self.max_length!r}")
        if not isinstance(self.max_steps, int) or self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be -1 (use num_epochs) or a positive integer, got {self.max_steps!r}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ValueError(f"time_budget_s must be positive or None, got {self.time_budget_s!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.bf16 not in (True, False, "auto"):
            raise ValueError(f"bf16 must be true, false or 'auto', got {self.bf16!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------------ the data


@dataclass
class PreferenceData:
    """Pairs for DPO, unpaired labelled answers for KTO, and what was counted on the way."""

    # {"prompt": [messages], "chosen": [answer], "rejected": [answer], "interaction_id", "conversation_id"}
    pairs: list[dict[str, Any]] = field(default_factory=list)
    # {"prompt": [messages], "completion": [answer], "label": bool, "interaction_id", "conversation_id"}
    unpaired: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def positives(self) -> int:
        return sum(1 for row in self.unpaired if row["label"])

    @property
    def negatives(self) -> int:
        return sum(1 for row in self.unpaired if not row["label"])


def split_membership(
    split_frames: Mapping[str, pd.DataFrame], assignment: Mapping[str, str] | None = None
) -> tuple[dict[str, str], dict[str, set[str]]]:
    """``(conversation -> split, interaction id -> splits)`` from the split tables (and the remembered
    assignment of every conversation ever split, which wins for a conversation).

    An interaction's splits are those of the examples it is a source of: de-duplication merges an
    interaction into an example of another conversation, whose split it then shares.
    """
    conversations: dict[str, str] = {}
    sources: dict[str, set[str]] = {}
    for split, frame in split_frames.items():
        for conversation, source_ids in zip(frame["conversation_id"].tolist(), frame["source_ids"].tolist()):
            conversations.setdefault(str(conversation), split)
            for source in [] if source_ids is None or isinstance(source_ids, str) else list(source_ids):
                sources.setdefault(str(source), set()).add(split)
    conversations.update({str(k): v for k, v in (assignment or {}).items()})
    return conversations, sources


def _placement(interaction_id: str, conversation_id: str, conversations: Mapping[str, str],
               sources: Mapping[str, set[str]]) -> str:
    """``train`` when some split says train and none says validation or test; ``held_out`` when one does;
    ``unassigned`` when the interaction is in no split (a dropped row of a conversation never split)."""
    found = set(sources.get(interaction_id, set()))
    if conversation_id in conversations:
        found.add(conversations[conversation_id])
    if found & set(HELD_OUT):
        return "held_out"
    return "train" if "train" in found else "unassigned"


def _answer_message(message: Any) -> dict[str, Any] | None:
    """The logged answer when the conversation ends in one, else None."""
    if isinstance(message, dict) and message.get("role") == "assistant":
        return dict(message)
    return None


def _render(prompt: list[dict[str, Any]], answer: dict[str, Any], tools: Any) -> dict[str, list[dict[str, str]]]:
    """``{"prompt", "completion"}`` rendered exactly as an SFT row is."""
    return to_prompt_completion({"messages": [*prompt, answer], "tools": tools if isinstance(tools, list) else None})


def build_preference_data(
    interactions: pd.DataFrame,
    split_frames: Mapping[str, pd.DataFrame],
    policy: QualityPolicy | None = None,
    *,
    assignment: Mapping[str, str] | None = None,
    opted_out_orgs: Iterable[str] = (),
    region: str = "US",
    public_min_conversations: int = 3,
    leakage_threshold: float = 0.8,
) -> PreferenceData:
    """Preference pairs and unpaired thumbs from the ingested ``interactions`` (``load_interactions``).

    ``split_frames`` maps ``train``/``validation``/``test`` to the split tables (``conversation_id``,
    ``source_ids``, and ``messages``/``example_id`` for the leakage check); ``assignment`` is the
    remembered conversation -> split map. ``policy`` decides whose corrections and thumbs count. The
    stats count every correction and thumb seen and why each was or was not used.
    """
    from homegrown.data.anonymise import Anonymiser

    policy = policy or QualityPolicy()
    conversations, sources = split_membership(split_frames, assignment)
    opted_out = set(opted_out_orgs)
    stats = {key: 0 for key in (
        "corrections", "corrections_untrusted", "corrections_not_used_by_policy", "corrections_held_out",
        "corrections_unassigned", "corrections_without_answer", "corrections_same_as_answer", "pairs",
        "pairs_leaking_held_out", "thumbs_up", "thumbs_down", "thumbs_held_out", "thumbs_unassigned",
        "thumbs_without_answer", "opted_out")}
    candidates: list[dict[str, Any]] = []
    for row in interactions.itertuples(index=False):
        interaction_id, conversation_id = str(row.id), str(row.conversation_id)
        raw_feedback = _as_dict(row.feedback)
        feedback, note = trusted_feedback(policy, raw_feedback, row.metadata)
        correction = _correction(feedback)
        thumbs = _number(feedback.get("thumbs"))
        if note is not None:
            stats["corrections_untrusted"] += 1
        if correction is None and thumbs not in (1.0, -1.0):
            continue
        if row.org_id in opted_out:
            stats["opted_out"] += 1
            continue
        placement = _placement(interaction_id, conversation_id, conversations, sources)
        messages = row.messages if isinstance(row.messages, list) else []
        answer = _answer_message(messages[-1]) if messages else None
        if correction is not None:
            stats["corrections"] += 1
            if not policy.use_admin_corrections:
                stats["corrections_not_used_by_policy"] += 1
            elif placement != "train":
                stats[f"corrections_{placement}"] += 1
            elif answer is None or len(messages) < 2:
                stats["corrections_without_answer"] += 1
            elif (answer.get("content") or "").strip() == correction.strip() and not answer.get("tool_calls"):
                stats["corrections_same_as_answer"] += 1
            else:
                chosen = apply_correction(messages, correction)[-1]
                candidates.append({"kind": "pair", "id": interaction_id, "conversation": conversation_id,
                                   "prompt": list(messages[:-1]), "chosen": chosen, "rejected": answer,
                                   "tools": row.tools})
            continue
        stats["thumbs_up" if thumbs == 1 else "thumbs_down"] += 1
        if placement != "train":
            stats[f"thumbs_{placement}"] += 1
        elif answer is None or len(messages) < 2:
            stats["thumbs_without_answer"] += 1
        else:
            candidates.append({"kind": "thumb", "id": interaction_id, "conversation": conversation_id,
                               "prompt": list(messages[:-1]), "completion": answer, "label": thumbs == 1,
                               "tools": row.tools})

    candidates = _anonymised(candidates, Anonymiser, region, public_min_conversations)
    data = PreferenceData(stats=stats)
    for candidate in candidates:
        if candidate["kind"] == "pair":
            chosen = _render(candidate["prompt"], candidate["chosen"], candidate["tools"])
            rejected = _render(candidate["prompt"], candidate["rejected"], candidate["tools"])
            data.pairs.append({"prompt": chosen["prompt"], "chosen": chosen["completion"],
                               "rejected": rejected["completion"], "interaction_id": candidate["id"],
                               "conversation_id": candidate["conversation"],
                               "_messages": [*candidate["prompt"], candidate["chosen"]]})
        else:
            rendered = _render(candidate["prompt"], candidate["completion"], candidate["tools"])
            data.unpaired.append({"prompt": rendered["prompt"], "completion": rendered["completion"],
                                  "label": bool(candidate["label"]), "interaction_id": candidate["id"],
                                  "conversation_id": candidate["conversation"]})
    leaking = _leaking_pairs(data.pairs, split_frames, leakage_threshold)
    stats["pairs_leaking_held_out"] = len(leaking)
    data.pairs = [{k: v for k, v in pair.items() if k != "_messages"}
                  for pair in data.pairs if pair["interaction_id"] not in leaking]
    stats["pairs"] = len(data.pairs)
    return data


def _anonymised(candidates: list[dict[str, Any]], anonymiser_cls: Any, region: str,
                public_min_conversations: int) -> list[dict[str, Any]]:
    """The candidates with prompt and answers anonymised together, one mapping per conversation, keeping the
    business's own contact data as the SFT data keeps it (``Anonymiser.public_values``)."""
    if not candidates:
        return candidates
    answers = lambda c: [c["chosen"], c["rejected"]] if c["kind"] == "pair" else [c["completion"]]
    public: dict[str, str] = {}
    if public_min_conversations > 0:
        frame = pd.DataFrame({"messages": [[*c["prompt"], *answers(c)] for c in candidates],
                              "conversation_id": [c["conversation"] for c in candidates]})
        public = anonymiser_cls(region=region).public_values(frame, min_conversations=public_min_conversations)
    anonymiser = anonymiser_cls(region=region, public=public)
    mappings: dict[str, dict[str, str]] = {}
    out = []
    for candidate in candidates:
        mapping = mappings.setdefault(candidate["conversation"], {})
        said = answers(candidate)
        messages, _ = anonymiser.anonymise_messages([*candidate["prompt"], *said], mapping)
        prompt, done = messages[: len(candidate["prompt"])], messages[len(candidate["prompt"]):]
        if candidate["kind"] == "pair":
            out.append({**candidate, "prompt": prompt, "chosen": done[0], "rejected": done[1]})
        else:
            out.append({**candidate, "prompt": prompt, "completion": done[0]})
    return out


def _leaking_pairs(pairs: list[dict[str, Any]], split_frames: Mapping[str, pd.DataFrame],
                   threshold: float) -> set[str]:
    """Interaction ids of pairs whose question and chosen answer near-duplicate a validation/test example."""
    from homegrown.data.splits import cross_split_duplicates

    held = [frame[["example_id", "messages"]].assign(split=split)
            for split, frame in split_frames.items() if split in HELD_OUT and len(frame)]
    if not pairs or not held:
        return set()
    mine = pd.DataFrame({"example_id": [f"pair-{p['interaction_id']}" for p in pairs],
                         "messages": [p["_messages"] for p in pairs], "split": "train"})
    found = cross_split_duplicates(pd.concat([mine, *held], ignore_index=True), threshold=threshold)
    return {a.removeprefix("pair-") for a, split_a, _, _, _, _ in found if split_a == "train"}


def choose_method(cfg: PreferenceConfig, data: PreferenceData) -> tuple[str | None, str]:
    """``(method, why)``: ``"dpo"``, ``"kto"`` or ``None`` (the SFT adapter passes through unchanged)."""
    cfg.validate()
    if cfg.enabled is False:
        return None, "preference tuning is off (enabled=false)"
    if len(data.pairs) >= cfg.min_pairs:
        return "dpo", f"{len(data.pairs)} correction pairs from train conversations (>= {cfg.min_pairs}): DPO"
    if len(data.unpaired) >= cfg.min_unpaired and data.positives and data.negatives:
        return "kto", (f"{len(data.pairs)} correction pairs (< {cfg.min_pairs}) but {data.positives} thumbs up "
                       f"and {data.negatives} thumbs down from train conversations: KTO")
    why = (f"too few preferences: {len(data.pairs)} correction pairs (need {cfg.min_pairs}) and "
           f"{data.positives} thumbs up / {data.negatives} thumbs down (need {cfg.min_unpaired} with both kinds)")
    if cfg.enabled is True:
        raise ValueError(f"preference tuning was asked for (enabled=true) but there are {why}")
    return None, why


# ------------------------------------------------------------------------------------------------ tuning


@dataclass
class PreferenceResult:
    """What a tuning run produced."""

    adapter_dir: Path
    method: str
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"adapter_dir": str(self.adapter_dir), "method": self.method, "metrics": self.metrics,
                "history": self.history}


def load_policy(base_path: Path | str, adapter_dir: Path | str, trainable: bool = False):
    """The float32 base with an adapter on top (``trainable``: its LoRA weights require gradients)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise ValueError(f"{adapter_dir} is not a peft adapter folder (no adapter_config.json)")
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32, attn_implementation="sdpa")
    return PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=trainable)


def _sequence_log_prob(model, tokenizer, prompt: list[dict[str, str]], answer: list[dict[str, str]]) -> float:
    """Sum of the log-probabilities of the answer's tokens after the prompt (as trl's DPO scores them)."""
    import torch

    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template([*prompt, *answer], tokenize=False)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
    input_ids = torch.tensor([ids], device=model.device)
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits[0, :-1].float()
    targets = input_ids[0, 1:]
    log_probs = torch.log_softmax(logits, dim=-1).gather(1, targets[:, None])[:, 0]
    return float(log_probs[len(prompt_ids) - 1:].sum())


def log_prob_margins(model, tokenizer, pairs: Sequence[dict[str, Any]]) -> list[float]:
    """Per pair, ``log p(chosen | prompt) - log p(rejected | prompt)`` under ``model``."""
    was_training = model.training
    model.eval()
    try:
        return [_sequence_log_prob(model, tokenizer, p["prompt"], p["chosen"])
                - _sequence_log_prob(model, tokenizer, p["prompt"], p["rejected"]) for p in pairs]
    finally:
        model.train(was_training)


def _use_bf16(cfg: PreferenceConfig) -> bool:
    from homegrown.training.sft import TrainConfig

    return TrainConfig(bf16=cfg.bf16, device=cfg.device).resolved_bf16()


def _uses_cuda(cfg: PreferenceConfig) -> bool:
    import torch

    return cfg.device != "cpu" and torch.cuda.is_available()


def _history_callback(progress: Callable[[dict], None] | None, history: list[dict[str, Any]]):
    from transformers import TrainerCallback

    class History(TrainerCallback):
        """Keeps the trainer's loss and reward logs as ``{"step", "loss", "rewards/margins", ...}`` events."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return
            event = {"step": state.global_step, "epoch": round(float(state.epoch or 0.0), 3)}
            event.update({k: float(v) for k, v in logs.items()
                          if isinstance(v, (int, float)) and (k == "loss" or k.startswith(("rewards/", "logps/")))})
            history.append(event)
            if progress is not None:
                progress(event)

    return History()


def _trainer_args(cfg: PreferenceConfig, method: str, checkpoint_dir: Path):
    common = {
        "output_dir": str(checkpoint_dir), "seed": cfg.seed, "data_seed": cfg.seed,
        "learning_rate": cfg.learning_rate, "num_train_epochs": cfg.num_epochs, "max_steps": cfg.max_steps,
        "per_device_train_batch_size": cfg.per_device_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation, "lr_scheduler_type": "linear",
        "warmup_steps": 0.1, "beta": cfg.beta, "max_length": cfg.max_length, "bf16": _use_bf16(cfg),
        "use_cpu": not _uses_cuda(cfg), "activation_checkpointing": False, "logging_steps": cfg.logging_steps,
        "logging_first_step": True, "save_strategy": "no", "eval_strategy": "no", "report_to": "none",
        "disable_tqdm": True, "dataloader_num_workers": 0,
    }
    if method == "dpo":
        from trl import DPOConfig

        return DPOConfig(**common)
    from trl import KTOConfig

    return KTOConfig(**common)


def build_trainer(cfg: PreferenceConfig, method: str, rows: list[dict[str, Any]], base_path: Path | str,
                  sft_adapter_dir: Path | str, checkpoint_dir: Path, callbacks: Sequence[Any] = ()):
    """The trl ``DPOTrainer`` (``method="dpo"``, rows with prompt/chosen/rejected) or ``KTOTrainer`` (rows with
    prompt/completion/label) over the SFT adapter; trl keeps a frozen copy of the adapter as the reference."""
    cfg.validate()
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not rows:
        raise ValueError("preference tuning needs at least one row")
    if method == "kto" and cfg.per_device_batch_size < 2:
        raise ValueError("KTO estimates its KL term within a batch: per_device_batch_size must be at least 2")
    from datasets import Dataset
    from transformers import AutoTokenizer, PrinterCallback, set_seed

    from homegrown.training.sft import _time_budget_callback

    set_seed(cfg.seed)
    keys = ("prompt", "chosen", "rejected") if method == "dpo" else ("prompt", "completion", "label")
    dataset = Dataset.from_list([{k: row[k] for k in keys} for row in rows])
    tokenizer = AutoTokenizer.from_pretrained(sft_adapter_dir if (Path(sft_adapter_dir) / "tokenizer_config.json")
                                              .is_file() else base_path)
    model = load_policy(base_path, sft_adapter_dir, trainable=True)
    callbacks = list(callbacks)
    if cfg.time_budget_s is not None:
        callbacks.append(_time_budget_callback(cfg.time_budget_s))
    args = _trainer_args(cfg, method, checkpoint_dir)
    if method == "dpo":
        from trl import DPOTrainer as Trainer
    else:
        from trl import KTOTrainer as Trainer
    trainer = Trainer(model=model, ref_model=None, args=args, train_dataset=dataset, processing_class=tokenizer,
                      callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)
    return trainer


def tune(
    cfg: PreferenceConfig,
    data: PreferenceData,
    method: str,
    base_path: Path | str,
    sft_adapter_dir: Path | str,
    output_dir: Path | str,
    progress: Callable[[dict], None] | None = None,
    base_info: Mapping[str, Any] | None = None,
) -> PreferenceResult:
    """Tune the SFT adapter with ``method`` on ``data`` and write it to ``output_dir/adapter``.

    The folder is laid out like the SFT adapter's (peft adapter + tokenizer + ``homegrown_adapter.json``),
    so the merge reads it the same way. Metrics include the mean chosen-minus-rejected log-probability
    margin on the pairs before and after (DPO), and the trainer's last reward margin.
    """
    output_dir = Path(output_dir)
    rows = data.pairs if method == "dpo" else data.unpaired
    history: list[dict[str, Any]] = []
    trainer = build_trainer(cfg, method, rows, base_path, sft_adapter_dir, output_dir / "checkpoints",
                            [_history_callback(progress, history)])
    tokenizer = trainer.processing_class
    margin_rows = data.pairs[:32]
    before = log_prob_margins(trainer.model, tokenizer, margin_rows) if margin_rows else []
    started = time.perf_counter()
    output = trainer.train()
    runtime = time.perf_counter() - started
    after = log_prob_margins(trainer.model, tokenizer, margin_rows) if margin_rows else []

    mean = lambda values: round(sum(values) / len(values), 4) if values else None
    last_margin = next((h["rewards/margins"] for h in reversed(history) if "rewards/margins" in h), None)
    metrics: dict[str, Any] = {
        "method": method, "pairs": len(data.pairs), "thumbs_up": data.positives, "thumbs_down": data.negatives,
        "rows": len(rows), "train_loss": float(output.training_loss), "steps": trainer.state.global_step,
        "epochs": float(trainer.state.epoch or 0.0), "train_runtime_s": round(runtime, 2),
        "log_prob_margin_before": mean(before), "log_prob_margin_after": mean(after),
        "reward_margin_last": last_margin, "beta": cfg.beta, "learning_rate": cfg.learning_rate,
        "bf16": bool(trainer.args.bf16),
        "time_budget_reached": bool(cfg.time_budget_s is not None and runtime >= cfg.time_budget_s),
    }
    adapter_dir = output_dir / "adapter"
    # Only the tuned adapter: trl's frozen "ref" copy is the SFT adapter, which is already saved.
    trainer.model.save_pretrained(str(adapter_dir), selected_adapters=["default"])
    tokenizer.save_pretrained(str(adapter_dir))
    sft_info_path = Path(sft_adapter_dir) / ADAPTER_INFO
    sft_info = json.loads(sft_info_path.read_text()) if sft_info_path.is_file() else {}
    info = {**{k: sft_info[k] for k in ("base_name", "base_path", "base_source", "template_fingerprint")
               if k in sft_info}, **dict(base_info or {}),
            "preference": {"config": cfg.to_dict(), "method": method, "sft_adapter_dir": str(sft_adapter_dir),
                           "metrics": metrics, "data": data.stats},
            "metrics": metrics}
    (adapter_dir / ADAPTER_INFO).write_text(json.dumps(info, indent=2, default=str))
    return PreferenceResult(adapter_dir=adapter_dir, method=method, metrics=metrics, history=history)


# ------------------------------------------------------------------------------------------------ comparison


def comparison_examples(examples: Sequence[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` test examples (by example id) with a text reference answer: the examples whose
    hallucination rate and fact accuracy can be measured."""
    from homegrown.evaluation.metrics import task_kind

    chosen = []
    for example in sorted(examples, key=lambda e: str(e.get("example_id"))):
        try:
            text = task_kind(example) == "text"
        except ValueError:
            continue
        if text:
            chosen.append(example)
        if len(chosen) >= limit:
            break
    return chosen


def generate_answers(model, tokenizer, examples: Sequence[dict[str, Any]], max_new_tokens: int) -> list[str]:
    """Greedy answers to each example's prompt, rendered as for training (``runner.render_prompt``)."""
    import torch

    from homegrown.evaluation.runner import render_prompt

    model.eval()
    answers = []
    for example in examples:
        text = tokenizer.apply_chat_template(render_prompt(example), add_generation_prompt=True, tokenize=False)
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                    eos_token_id=tokenizer.eos_token_id,
                                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        answers.append(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return answers


def compare(
    base_path: Path | str,
    sft_adapter_dir: Path | str,
    preference_adapter_dir: Path | str,
    examples: Sequence[dict[str, Any]],
    *,
    knowledge_path: Path | str | None = None,
    max_examples: int = 40,
    max_new_tokens: int = 64,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """SFT-only against SFT+preference on up to ``max_examples`` text test examples: hallucination rate and
    fact accuracy with bootstrap intervals, paired differences, and the verdict in words.

    Both adapters sit on one copy of the base (peft named adapters), answer greedily with transformers, and
    are scored by ``homegrown.evaluation.metrics`` (against the knowledge file when there is one).
    """
    from transformers import AutoTokenizer

    from homegrown.evaluation.facts import KnowledgeFacts
    from homegrown.evaluation.metrics import evaluate_answers, paired_bootstrap_diff

    chosen = comparison_examples(examples, max_examples)
    if not chosen:
        return {"examples": 0, "verdict": "Not compared: the test split has no text examples with a reference answer.",
                "improved": None}
    knowledge = (KnowledgeFacts.from_file(Path(knowledge_path))
                 if knowledge_path is not None and Path(knowledge_path).is_file() else None)
    tokenizer = AutoTokenizer.from_pretrained(sft_adapter_dir if (Path(sft_adapter_dir) / "tokenizer_config.json")
                                              .is_file() else base_path)
    model = load_policy(base_path, sft_adapter_dir)
    model.load_adapter(str(preference_adapter_dir), adapter_name="preference")
    results = {}
    started = time.perf_counter()
    for name, adapter in (("sft", "default"), ("sft+preference", "preference")):
        model.set_adapter(adapter)
        answers = generate_answers(model, tokenizer, chosen, max_new_tokens)
        results[name] = evaluate_answers(chosen, answers, knowledge, n_boot=n_boot)
    del model
    out: dict[str, Any] = {"examples": len(chosen), "max_new_tokens": max_new_tokens,
                           "fact_source": results["sft"].fact_source, "models": {}, "differences": {},
                           "runtime_s": round(time.perf_counter() - started, 1)}
    for name, result in results.items():
        overall = result.aggregates.get("overall", {})
        out["models"][name] = {metric: overall.get(metric) for metric in COMPARED}
    for metric in COMPARED:
        tuned = [row.get(metric) for row in results["sft+preference"].rows]
        sft = [row.get(metric) for row in results["sft"].rows]
        mean, lo, hi = paired_bootstrap_diff(tuned, sft, n=n_boot)
        out["differences"][metric] = {"mean": mean, "lo": lo, "hi": hi}
    out["answers"] = [{"example_id": example.get("example_id"), "sft": a["answer"], "sft+preference": b["answer"]}
                      for example, a, b in zip(chosen, results["sft"].rows, results["sft+preference"].rows)][:20]
    out["improved"], out["verdict"] = verdict(out)
    return out


def _interval(d: Mapping[str, float]) -> str:
    return f"{d['mean']:+.3f} [95% CI {d['lo']:+.3f}, {d['hi']:+.3f}]"


def verdict(comparison: Mapping[str, Any]) -> tuple[bool | None, str]:
    """``(improved, sentence)``: improved when the hallucination rate fell and fact accuracy did not fall
    beyond noise (its paired 95% interval is not wholly below zero)."""
    diffs = comparison.get("differences") or {}
    hall, fact = diffs.get("hallucination_rate"), diffs.get("fact_accuracy")
    models = comparison.get("models") or {}
    if not hall or hall.get("mean") is None or math.isnan(hall["mean"]):
        return None, "Not compared: no test example measured the hallucination rate."
    rates = [(models.get(m, {}).get("hallucination_rate") or {}).get("mean") for m in ("sft", "sft+preference")]
    where = f"on {comparison.get('examples')} test examples"
    hall_text = f"hallucination rate {rates[0]:.3f} -> {rates[1]:.3f}, paired difference {_interval(hall)}"
    fact_ok = not fact or fact.get("mean") is None or math.isnan(fact["mean"]) or not fact["hi"] < 0
    fact_text = "fact accuracy not measured" if not fact or fact.get("mean") is None or math.isnan(fact["mean"]) \
        else f"fact accuracy difference {_interval(fact)}"
    fell = hall["mean"] < 0
    if fell and fact_ok:
        noise = " (the fall itself is within noise)" if hall["hi"] >= 0 else ""
        return True, (f"The hallucination rate fell without a loss of fact accuracy beyond noise{noise} "
                      f"{where}: {hall_text}; {fact_text}.")
    if fell:
        return False, (f"The hallucination rate fell, but fact accuracy fell beyond noise {where}: "
                       f"{hall_text}; {fact_text}.")
    if rates[0] == 0:
        return False, (f"The hallucination rate did not fall {where}: SFT alone already showed none to remove "
                       f"({hall_text}; {fact_text}).")
    return False, f"The hallucination rate did not fall {where}: {hall_text}; {fact_text}."

"""Benchmark of LoRA training on one GPU at the shape of Llama-3.1-8B, with random weights and synthetic chats.

Every arm runs in a fresh subprocess (so that its peak memory is its own) on the same synthetic chat rows
(lengths drawn between ``--min-len`` and ``--seq-len`` tokens, loss on the answer only), with the same LoRA
adapter (r=16, alpha=32, dropout 0.05 on every linear layer: issue 12's "all-linear LoRA r16"), learning rate,
batch size (4) and number of optimizer steps, in this order:

- ``baseline``: the plain stack issue 12 measured (5,984 tokens/s on an H100 at 4 x 2,048 tokens): the model
  in bf16, peft's LoRA (float32 adapter), gradient checkpointing, SDPA attention, a hand-written torch loop
  over random-order batches padded to the longest row, the model's own loss over the full logits, AdamW
  (``bench_train.run_baseline``).
- ``homegrown``: homegrown's own trainer (``build_trainer`` + ``trainer.train()``, what
  ``homegrown.training.sft.train`` runs) with ``TrainConfig`` defaults on CUDA: padding-free batches with
  attention row by row (``homegrown_row_sdpa``: torch's SDPA, which on an H100/H200 in bf16 runs its
  FlashAttention-2 kernel, once per row), bf16 base weights with a float32 adapter under bf16 autocast,
  logits at the answer tokens only, fused AdamW; plus ``gradient_checkpointing=True``, which an 8B model
  needs at this length within 40 GiB.
- ``homegrown_liger``: the same plus ``liger_kernels=True`` (Liger's RMSNorm, RoPE and SwiGLU kernels).
- ``qlora``: ``homegrown`` with ``qlora=True``: 4-bit NF4 base (bitsandbytes, double quantisation, bf16
  compute) and paged 8-bit AdamW.
- ``homegrown_liger_partial``: ``homegrown_liger`` with ``uncheckpointed_layers=--uncheckpointed-layers``:
  the last decoder layers keep their activations instead of recomputing them (selective checkpointing).

Nothing is downloaded: the model is initialised at random from a ``LlamaConfig``, the tokenizer is a
byte-level one built here (one token per byte, a ChatML template), and the homegrown arms read the model
from a folder written once per run. Useful tokens/s counts real prompt + answer tokens (no padding),
leaving out ``--warmup`` steps; MFU is useful tokens/s x 6 x the non-embedding parameters over the GPU's
dense bf16 peak; peak memory is ``torch.cuda.max_memory_allocated`` of the arm's process, load included.

    python bench/bench_gpu.py                                  # every arm, writes bench/results/train_gpu.md
    python bench/bench_gpu.py --deadline 420 --out o.md --json-out o.json   # what bench/gpu_run.sh runs
    python bench/bench_gpu.py --arms qlora --json-out q.json   # one arm; merge with --report later
    python bench/bench_gpu.py --report a.json q.json --out bench/results/train_gpu.md
    python bench/bench_gpu.py --dry-run                        # tiny model on the CPU: checks the code paths

An arm whose packages are missing (``homegrown_liger`` without liger-kernel and Triton, ``qlora`` without
bitsandbytes) or that cannot run on this device (both on the CPU) is skipped with the reason; the others
still run. ``bench/gpu_run.sh`` is the one device call that installs the carried wheels and runs this.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(PROJECT_ROOT))

import bench_train

DEFAULT_OUT = BENCH_DIR / "results" / "train_gpu.md"
# In the order they run: the baseline first, so that every later arm has its ratio even if time runs out.
ARMS = ("baseline", "homegrown", "homegrown_liger", "qlora", "homegrown_liger_partial")
HOMEGROWN_ARMS = ARMS[1:]
BASE_PACKAGES = ("torch", "transformers", "peft", "accelerate")
TRAINER_PACKAGES = (*BASE_PACKAGES, "trl", "datasets")
REQUIRES = {
    "baseline": BASE_PACKAGES,
    "homegrown": TRAINER_PACKAGES,
    "homegrown_liger": (*TRAINER_PACKAGES, "liger_kernel", "triton"),
    "qlora": (*TRAINER_PACKAGES, "bitsandbytes"),
    "homegrown_liger_partial": (*TRAINER_PACKAGES, "liger_kernel", "triton"),
}
DESCRIPTION = {
    "baseline": "transformers + peft, bf16 weights, float32 LoRA, full checkpointing, padded random batches, "
    "full logits, AdamW",
    "homegrown": "padding-free, per-row SDPA, bf16 base + float32 LoRA under autocast, answer-only logits, "
    "fused AdamW, full checkpointing",
    "homegrown_liger": "homegrown + Liger RMSNorm/RoPE/SwiGLU",
    "qlora": "homegrown with an NF4 base, bf16 compute, paged 8-bit AdamW",
    "homegrown_liger_partial": "homegrown_liger, last {k} layers not checkpointed",
}
# Issue 12's targets: LoRA at >= 2x the plain stack's 5,984 tokens/s (H100) within 40 GiB; QLoRA within 20 GiB.
REFERENCE_TOKENS_PER_S = 5984
LORA_TARGET_TOKENS_PER_S = 12000
LORA_TARGET_GIB = 40.0
QLORA_TARGET_GIB = 20.0
# Dense bf16 peak of the SXM parts (the vendor's datasheet); the H200 has the H100's arithmetic.
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4}
# Llama-3.1-8B's shape.
LLAMA_8B = {
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 14336,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}
# A model small enough to run every CPU-capable arm in seconds (--dry-run).
TINY = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 512,
    "max_position_embeddings": 1024,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear"}
LEARNING_RATE = 2e-4


def missing_packages(arm: str) -> list[str]:
    """Packages ``arm`` needs that this interpreter cannot import."""
    return [name for name in REQUIRES[arm] if importlib.util.find_spec(name) is None]


def non_embedding_parameters(shape: dict[str, Any]) -> int:
    """Parameters that take part in a matrix product per token: the decoder layers, final norm and LM head."""
    d, inter = shape["hidden_size"], shape["intermediate_size"]
    kv = shape["num_key_value_heads"] * (d // shape["num_attention_heads"])
    layer = 2 * d * d + 2 * d * kv + 3 * d * inter + 2 * d
    return shape["num_hidden_layers"] * layer + d + shape["vocab_size"] * d


def peak_tflops(gpu_name: str) -> float | None:
    """Dense bf16 peak of a known GPU (SXM parts; a PCIe H100 is slower and gets None), else None."""
    if "PCIe" in gpu_name:
        return None
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in gpu_name), None)


def byte_tokenizer() -> Any:
    """A byte-level tokenizer (one token per UTF-8 byte + ChatML specials) with a ChatML chat template.

    Its pre-tokenizer is Qwen2's (homegrown's base check accepts only pre-tokenizers that llama.cpp knows);
    without merges, every byte is still one token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from homegrown.training.export import _QWEN2_PRE_TOKENIZER

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.decoder = decoders.ByteLevel()
    spec = json.loads(tok.to_str())
    spec["pre_tokenizer"] = _QWEN2_PRE_TOKENIZER
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.chat_template = CHATML
    return tokenizer


def synthetic_rows(tokenizer: Any, n: int, min_len: int, max_len: int, seed: int) -> list[dict[str, Any]]:
    """``n`` chat rows (system, user, assistant) whose rendered length is drawn uniformly in [min_len, max_len].

    About a third of each row is prompt, the rest the answer; text is random lowercase words (one token
    per character under :func:`byte_tokenizer`).
    """
    if not 64 <= min_len <= max_len:
        raise ValueError(f"need 64 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
    rng = random.Random(seed)

    def text(chars: int) -> str:
        words, size = [], 0
        while size < chars:
            word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
            words.append(word)
            size += len(word) + 1
        return " ".join(words)[:chars]

    empty = [
        {"role": "system", "content": ""},
        {"role": "user", "content": ""},
        {"role": "assistant", "content": ""},
    ]
    overhead = len(tokenizer.apply_chat_template(empty, tokenize=True, return_dict=True)["input_ids"])
    rows = []
    for _ in range(n):
        body = rng.randint(min_len, max_len) - overhead
        prompt = body // 3
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": text(prompt // 4)},
                    {"role": "user", "content": text(prompt - prompt // 4)},
                    {"role": "assistant", "content": text(body - prompt)},
                ]
            }
        )
    return rows


def model_config(shape: dict[str, Any], tokenizer: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        **shape,
        head_dim=shape["hidden_size"] // shape["num_attention_heads"],
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=False,
    )


def random_model(spec: dict[str, Any], tokenizer: Any) -> Any:
    """The model at random initialisation, in bf16, built directly on the arm's device."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(spec["seed"])
    with torch.device(spec["device"]):
        return AutoModelForCausalLM.from_config(
            model_config(spec["shape"], tokenizer), dtype=torch.bfloat16, attn_implementation="sdpa"
        )


def homegrown_config(arm: str, spec: dict[str, Any]) -> Any:
    """The ``TrainConfig`` of a homegrown arm: one pass over the rows, the baseline's adapter and rate."""
    liger = arm in ("homegrown_liger", "homegrown_liger_partial")
    return bench_train.one_pass_config(
        LORA, LEARNING_RATE, spec,
        max_seq_length=spec["seq_len"],
        gradient_accumulation=1,
        gradient_checkpointing=True,
        uncheckpointed_layers=spec["uncheckpointed_layers"] if arm == "homegrown_liger_partial" else 0,
        liger_kernels=liger,
        batching=spec["batching"],
        qlora=arm == "qlora",
        device=spec["device"],
    )


def skip_reason(arm: str, device: str, spec: dict[str, Any]) -> str | None:
    """Why ``arm`` cannot run here (missing packages, or a config this device refuses), or None."""
    if device == "cpu" and arm == "qlora":
        missing = []  # refused on the CPU whatever is installed; the config says so below
    else:
        missing = missing_packages(arm)
    if missing:
        return f"needs {', '.join(missing)}, which this Python cannot import"
    if arm in HOMEGROWN_ARMS:
        try:
            homegrown_config(arm, spec).validate()
        except ValueError as exc:
            return str(exc)
    return None


# ---------------------------------------------------------------------------------------------------------
# Workers (one per subprocess)


def _sync(device: str):
    import torch

    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def _prepare(spec: dict[str, Any]) -> dict[str, Any]:
    """Write the random model + tokenizer as a Hugging Face folder for the homegrown arms."""
    from transformers import AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer_dir"])
    model = random_model(spec, tokenizer)
    # Written aside and renamed, so that a folder that exists is complete (a later run reuses it).
    target = Path(spec["model_dir"])
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    os.replace(partial, target)
    return {"seconds": round(time.perf_counter() - started, 1), "parameters": model.num_parameters()}


def _worker(arm: str, spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    device = spec["device"]
    cuda = device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:
        torch.set_num_threads(bench_train.cpu_threads())
    started = time.perf_counter()
    out_dir = Path(spec["work_dir"]) / f"run-{arm}"
    if arm == "baseline":
        from peft import LoraConfig, get_peft_model
        from transformers import AutoTokenizer

        from homegrown.training.sft import read_split

        tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer_dir"])
        model = random_model(spec, tokenizer)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model = get_peft_model(model, LoraConfig(**LORA, bias="none", task_type="CAUSAL_LM"))
        result = bench_train.run_baseline(
            model,
            tokenizer,
            read_split(Path(spec["rows_jsonl"])),
            batch_size=spec["batch_size"],
            accumulation=1,
            max_length=spec["seq_len"],
            learning_rate=LEARNING_RATE,
            warmup=spec["warmup"],
            seed=spec["seed"],
            device=device,
            sync=_sync(device),
        )
        result["precision"] = "bf16 weights, float32 LoRA"
    elif arm in HOMEGROWN_ARMS:
        cfg = homegrown_config(arm, spec)
        result = bench_train.run_homegrown(
            cfg, spec["model_dir"], Path(spec["rows_jsonl"]), out_dir, spec["warmup"], sync=_sync(device)
        )
        if arm == "qlora":
            result["precision"] = "NF4 base, bf16 compute, paged 8-bit AdamW"
        result["uncheckpointed_layers"] = cfg.uncheckpointed_layers
        if cfg.liger_kernels:
            # Evidence that the Trainer patched Liger in: its RoPE replaces a module-level function.
            from liger_kernel.transformers.rope import liger_rotary_pos_emb
            from transformers.models.llama import modeling_llama

            if modeling_llama.apply_rotary_pos_emb is not liger_rotary_pos_emb:
                raise RuntimeError("liger_kernels=True but Liger's RoPE was not patched into the Llama model")
    else:
        raise ValueError(f"unknown arm {arm!r}; expected one of {ARMS}")
    result["arm"] = arm
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    result["peak_rss_mib"] = round(bench_train.peak_rss_mib(), 1)
    if cuda:
        result["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result["max_memory_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    return result


def _run_child(mode: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    work = Path(spec["work_dir"])
    spec_path, result_path = work / f"spec-{mode}.json", work / f"result-{mode}.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HOMEGROWN_HOME": str(work / "home")}
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", mode, "--spec", str(spec_path), "--result", str(result_path)],
        env=env,
        timeout=timeout,
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        check=False,
    )
    (work / f"log-{mode}.txt").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(result_path.read_text())


# ---------------------------------------------------------------------------------------------------------
# Report


def environment(device: str) -> dict[str, Any]:
    """GPU, its memory, library versions (None: not installed), load average and date."""
    import torch

    versions = {}
    for name in (
        "torch",
        "transformers",
        "peft",
        "accelerate",
        "trl",
        "datasets",
        "bitsandbytes",
        "liger-kernel",
        "triton",
        "flash-attn",
    ):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    info: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "versions": versions,
        "device": device,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    else:
        info["gpu"] = "none (CPU dry run)"
    return info


def _fmt(value: Any, spec: str = ",.0f") -> str:
    return "–" if value is None else format(value, spec)


def render(payload: dict[str, Any]) -> str:
    """The results page for one or more runs' JSON payloads (``{"env", "setup", "arms"}``)."""
    env, setup = payload["env"], payload["setup"]
    arms: dict[str, dict[str, Any]] = payload["arms"]
    v = env["versions"]
    shape = setup["shape"]
    cuda = env["device"] == "cuda"
    params = non_embedding_parameters(shape)
    peak = setup.get("peak_tflops")
    base = arms.get("baseline")
    base_tps = base["tokens_per_s"] if base and "error" not in base else None
    lines = [
        "# Training benchmark (GPU)" + ("" if cuda else " — dry run on the CPU, tiny model"),
        "",
        f"- Device: {env['gpu']}" + (f", {env['gpu_memory_gib']} GiB, CUDA {env['cuda']}" if cuda else ""),
        f"- Date: {env['date']}; load average at start {', '.join(f'{x:.2f}' for x in env['load_average'])}; "
        f"Python {env['python']}; "
        + ", ".join(f"{k} {val}" for k, val in v.items() if val)
        + "; not installed: "
        + (", ".join(k for k, val in v.items() if not val) or "none"),
        (
            f"- Model: Llama shape with random weights: hidden {shape['hidden_size']}, {shape['num_hidden_layers']} "
            f"layers, {shape['num_attention_heads']} heads, {shape['num_key_value_heads']} KV heads, intermediate "
            f"{shape['intermediate_size']}, vocab {shape['vocab_size']} ({params:,} non-embedding parameters). "
            f"LoRA r={LORA['r']}, alpha={LORA['lora_alpha']}, dropout {LORA['lora_dropout']} on every "
            f"linear layer, learning rate {LEARNING_RATE:g}, in every arm."
        ),
        (
            f"- Data: {setup['rows']} synthetic chat rows of {setup['min_len']}–{setup['seq_len']} tokens "
            f"(byte-level tokenizer, a third prompt, loss on the answer), batch {setup['batch_size']}, "
            f"{setup['warmup']} warm-up + {setup['steps']} timed optimizer steps, one pass over the rows in every arm."
        ),
        (
            "- Useful tokens/s: real prompt + answer tokens (no padding) of the timed steps / their wall time. "
            "MFU: useful tokens/s x 6 x non-embedding parameters / "
            + (
                f"{peak:g} TFLOP/s (dense bf16 peak)"
                if peak
                else "the GPU's dense bf16 peak (unknown here: –)"
            )
            + "; attention FLOPs are not counted, the LM head is counted at every position. Peak memory: "
            "`torch.cuda.max_memory_allocated` (reserved in brackets) of the arm's own process, model load included."
        ),
        "",
        (
            "| arm | what it runs | s/step | useful tokens/s | × baseline | MFU | peak allocated GiB (reserved) "
            "| padding share | loss first → last | arm wall s |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for name in ARMS:
        r = arms.get(name)
        if r is None:
            continue
        what = DESCRIPTION[name].format(k=r.get("uncheckpointed_layers", setup.get("uncheckpointed_layers")))
        if "error" in r:
            lines.append(f"| {name} | {what} | not run: {r['error']} | | | | | | | |")
            continue
        memory = (
            f"{r['max_memory_allocated_gib']:.1f} ({r['max_memory_reserved_gib']:.1f})"
            if "max_memory_allocated_gib" in r
            else f"CPU: peak RSS {r['peak_rss_mib']:,.0f} MiB"
        )
        mfu = f"{100 * r['tokens_per_s'] * 6 * params / (peak * 1e12):.1f}%" if peak else "–"
        ratio = f"{r['tokens_per_s'] / base_tps:.2f}×" if base_tps else "–"
        lines.append(
            f"| {name} | {what} | {r['s_per_step']:.2f} | **{_fmt(r['tokens_per_s'])}** | {ratio} | {mfu} "
            f"| {memory} | {100 * r['collated']['padding_share']:.1f}% | {r['first_loss']:.2f} → "
            f"{r['last_loss']:.2f} | {r['wall_seconds']} |"
        )
    notes = []
    if base_tps:
        positions = base_tps / (1 - base["collated"]["padding_share"])
        notes.append(
            f"The baseline computes on {positions:,.0f} positions/s, padding included (issue 12's reference, "
            f"{REFERENCE_TOKENS_PER_S:,} tokens/s on an H100, had no padding: 4 x 2,048-token rows)."
        )
    if cuda:
        for name in ("homegrown", "homegrown_liger", "homegrown_liger_partial"):
            r = arms.get(name)
            if not r or "error" in r:
                continue
            fast = r["tokens_per_s"] >= LORA_TARGET_TOKENS_PER_S
            fits = r["max_memory_allocated_gib"] <= LORA_TARGET_GIB
            twice = base_tps is not None and r["tokens_per_s"] >= 2 * base_tps
            notes.append(
                f"{name}: {r['tokens_per_s']:,.0f} tokens/s in {r['max_memory_allocated_gib']:.1f} GiB — "
                f"{'meets' if fast and fits else 'misses'} the LoRA target (≥ {LORA_TARGET_TOKENS_PER_S:,} "
                f"tokens/s in ≤ {LORA_TARGET_GIB:.0f} GiB); {'at least' if twice else 'under'} 2x the baseline "
                "of this run."
            )
        qlora = arms.get("qlora")
        if qlora and "error" not in qlora:
            peak_gib = qlora["max_memory_allocated_gib"]
            verdict = "meets" if peak_gib <= QLORA_TARGET_GIB else "misses"
            notes.append(
                f"qlora: peak {peak_gib:.1f} GiB: {verdict} the ≤ {QLORA_TARGET_GIB:.0f} GiB target."
            )
    if "prepare_seconds" in setup:
        notes.append(
            f"Writing the random model folder for the homegrown arms took {setup['prepare_seconds']} s."
        )
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def merge(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs' payloads (one arm each, say) as one; the later payload wins for an arm run twice."""
    if not payloads:
        raise ValueError("nothing to merge")
    merged = {"env": payloads[0]["env"], "setup": dict(payloads[0]["setup"]), "arms": {}}
    for payload in payloads:
        if payload["setup"]["shape"] != merged["setup"]["shape"]:
            raise ValueError("cannot merge runs of different model shapes")
        merged["arms"].update(payload["arms"])
        merged["setup"].update({k: v for k, v in payload["setup"].items() if k == "prepare_seconds"})
    return merged


# ---------------------------------------------------------------------------------------------------------
# Driver


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {','.join(ARMS)}")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per arm (default 10)")
    parser.add_argument(
        "--warmup", type=int, default=2, help="optimizer steps left out of the timing (default 2)"
    )
    parser.add_argument("--batch-size", type=int, default=4, help="rows per optimizer step (default 4)")
    parser.add_argument(
        "--seq-len", type=int, default=2048, help="longest row and max_seq_length (default 2048)"
    )
    parser.add_argument("--min-len", type=int, default=512, help="shortest row in tokens (default 512)")
    parser.add_argument(
        "--batching",
        default="padding_free",
        help="TrainConfig.batching of the homegrown arms (default padding_free)",
    )
    # 8 of 32: about 10 GiB more than full checkpointing at the longest step of the default rows (6,260 tokens,
    # about 210 KB of saved activations per token and layer with Liger), within the 40 GiB target.
    parser.add_argument(
        "--uncheckpointed-layers",
        type=int,
        default=8,
        help="TrainConfig.uncheckpointed_layers of the homegrown_liger_partial arm (default 8)",
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="dense bf16 peak for MFU (default: by GPU)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per subprocess (default 900)")
    parser.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="seconds for the whole run: an arm that would start past it is skipped (default: none)",
    )
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a temp dir, removed afterwards")
    parser.add_argument("--out", type=Path, default=None, help=f"results page (default {DEFAULT_OUT})")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the raw results as JSON")
    parser.add_argument("--dry-run", action="store_true", help="tiny model, CPU, every arm that runs there")
    parser.add_argument("--report", type=Path, nargs="+", help="only render --out from these JSON results")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        spec = json.loads(args.spec.read_text())
        result = _prepare(spec) if args.worker == "prepare" else _worker(args.worker, spec)
        args.result.write_text(json.dumps(result, indent=2))
        return 0

    if args.report:
        page = render(merge([json.loads(p.read_text()) for p in args.report]))
        out = args.out or DEFAULT_OUT
        out.write_text(page, encoding="utf-8")
        print(page)
        return 0

    started = time.monotonic()
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown or not arms:
        parser.error(f"--arms: unknown {unknown}; choose from {', '.join(ARMS)}")
    arms = [a for a in ARMS if a in arms]
    if args.dry_run:
        args.steps, args.warmup, args.batch_size, args.seq_len, args.min_len = 2, 1, 2, 128, 64
        args.uncheckpointed_layers = min(args.uncheckpointed_layers, TINY["num_hidden_layers"] - 1)
    for name in ("steps", "warmup", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")

    import torch

    device = "cpu" if args.dry_run else "cuda"
    if not args.dry_run and not torch.cuda.is_available():
        print(
            "bench_gpu.py needs a CUDA GPU and torch.cuda.is_available() is False here; "
            "run `python bench/bench_gpu.py --dry-run` to check the code paths on a CPU.",
            file=sys.stderr,
        )
        return 2

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="homegrown-bench-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    out = args.out or (work / "train_gpu.md" if args.dry_run else DEFAULT_OUT)
    out.parent.mkdir(parents=True, exist_ok=True)
    env = environment(device)
    print(f"work dir {work}; {env['gpu']}; load average {env['load_average']}", flush=True)
    tokenizer = byte_tokenizer()
    tokenizer.save_pretrained(work / "tokenizer")
    n_rows = (args.warmup + args.steps) * args.batch_size
    rows = synthetic_rows(tokenizer, n_rows, args.min_len, args.seq_len, args.seed)
    rows_jsonl = work / "rows.jsonl"
    rows_jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    setup: dict[str, Any] = {
        "shape": TINY if args.dry_run else LLAMA_8B,
        "device": device,
        "rows": n_rows,
        "steps": args.steps,
        "warmup": args.warmup,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "min_len": args.min_len,
        "batching": args.batching,
        "uncheckpointed_layers": args.uncheckpointed_layers,
        "peak_tflops": args.peak_tflops or (peak_tflops(env["gpu"]) if device == "cuda" else None),
        "seed": args.seed,
        "work_dir": str(work),
        "tokenizer_dir": str(work / "tokenizer"),
        "model_dir": str(work / "model"),
        "rows_jsonl": str(rows_jsonl),
    }
    results: dict[str, dict[str, Any]] = {}

    def write_page() -> None:
        """The page and JSON as they stand: written after every arm, so a run cut short still leaves them."""
        payload = {"env": env, "setup": setup, "arms": results}
        out.write_text(render(payload), encoding="utf-8")
        if args.json_out:
            args.json_out.write_text(json.dumps(payload, indent=2), encoding="utf-8")

    def seconds_left() -> float:
        return float("inf") if args.deadline is None else args.deadline - (time.monotonic() - started)

    skipped = {arm: skip_reason(arm, device, setup) for arm in arms}
    for arm, reason in skipped.items():
        if reason:
            results[arm] = {"error": f"skipped: {reason}"}
            print(f"{arm}: skipped: {reason}", flush=True)
    runnable = [arm for arm in arms if not skipped[arm]]
    if set(runnable) & set(HOMEGROWN_ARMS) and not (work / "model" / "config.json").is_file():
        prepared = _run_child("prepare", setup, min(args.timeout, seconds_left()))
        setup["prepare_seconds"] = prepared["seconds"]
        print(
            f"model folder written in {prepared['seconds']} s ({prepared['parameters']:,} parameters)",
            flush=True,
        )
    longest = 0.0
    for arm in runnable:
        # An arm takes about as long as the longest so far (model load dominates); do not start one that
        # would be killed at the deadline, so that the page still comes back with what did run.
        if seconds_left() < max(longest, 60.0):
            results[arm] = {
                "error": f"out of time: {seconds_left():.0f} s left of --deadline {args.deadline:g}"
            }
            print(f"{arm}: {results[arm]['error']}", flush=True)
            write_page()
            continue
        arm_started = time.monotonic()
        try:
            results[arm] = _run_child(arm, setup, min(args.timeout, seconds_left()))
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            results[arm] = {"error": str(exc).strip().splitlines()[-1][:300]}
            print(f"{arm}: FAILED\n{exc}", file=sys.stderr, flush=True)
        longest = max(longest, time.monotonic() - arm_started)
        write_page()
        r = results[arm]
        if "error" in r:
            continue
        memory = r.get("max_memory_allocated_gib")
        print(
            f"{arm}: {r['tokens_per_s']:.0f} useful tokens/s, {r['s_per_step']:.2f} s/step"
            + (
                f", peak {memory:.1f} GiB"
                if memory is not None
                else f", peak RSS {r['peak_rss_mib']:.0f} MiB"
            )
            + f", {r['wall_seconds']} s",
            flush=True,
        )

    write_page()
    print(out.read_text(encoding="utf-8"))
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    # On the CPU, the arms that need CUDA are expected to be skipped; anywhere else every arm must have run.
    failed = [a for a, r in results.items() if "error" in r and not (args.dry_run and skipped.get(a))]
    if failed:
        print(f"arms not run or failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

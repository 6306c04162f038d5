"""Benchmark of LoRA training on one GPU at the shape of Llama-3.1-8B, with random weights and synthetic chats.

Three arms, each in a fresh subprocess, on the same synthetic chat rows (lengths drawn between
``--min-len`` and ``--seq-len`` tokens, loss on the answer only), the same LoRA adapter (r=16, alpha=32,
dropout 0.05 on q/k/v/o), batch size and number of optimizer steps:

- ``baseline``: plain transformers + peft: the model in bf16, gradient checkpointing, SDPA attention,
  a hand-written torch loop over random-order batches padded to the longest row, AdamW
  (``bench_train.run_baseline``).
- ``homegrown``: homegrown's own trainer (``build_trainer`` + ``trainer.train()``, what
  ``homegrown.training.sft.train`` runs) with ``TrainConfig`` defaults on CUDA (length-grouped batches,
  SDPA, float32 weights under bf16 autocast) plus ``gradient_checkpointing=True``, which an 8B model
  needs at this sequence length.
- ``qlora``: the same with ``qlora=True``: 4-bit NF4 base (bitsandbytes, double quantisation, bf16
  compute) and paged 8-bit AdamW.

Nothing is downloaded: the model is initialised at random from a ``LlamaConfig``, the tokenizer is a
byte-level one built here (one token per byte, a ChatML template), and the homegrown arms read the model
from a folder written once per run. Useful tokens/s counts real prompt + answer tokens (attention mask
sums), leaving out ``--warmup`` steps; peak memory is ``torch.cuda.max_memory_allocated`` of the arm's
process, model load included.

    python bench/bench_gpu.py                                  # all arms, writes bench/results/train_gpu.md
    python bench/bench_gpu.py --arms qlora --json-out q.json   # one arm; merge with --report later
    python bench/bench_gpu.py --report a.json q.json --out bench/results/train_gpu.md
    python bench/bench_gpu.py --dry-run                        # tiny model on the CPU: checks the code paths

Needs torch with CUDA, transformers, peft and accelerate; the homegrown arms also trl and datasets, and
``qlora`` bitsandbytes.
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
ARMS = ("baseline", "homegrown", "qlora")
REQUIRES = {
    "baseline": ("torch", "transformers", "peft", "accelerate"),
    "homegrown": ("torch", "transformers", "peft", "accelerate", "trl", "datasets"),
    "qlora": ("torch", "transformers", "peft", "accelerate", "trl", "datasets", "bitsandbytes"),
}
QLORA_TARGET_GIB = 20.0
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
LORA = {
    "r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
}


def missing_packages(arms: list[str]) -> list[str]:
    """Packages the chosen arms need that this interpreter cannot import."""
    needed = sorted({name for arm in arms for name in REQUIRES[arm]})
    return [name for name in needed if importlib.util.find_spec(name) is None]


def byte_tokenizer() -> Any:
    """A byte-level tokenizer (one token per UTF-8 byte + ChatML specials) with a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
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
            learning_rate=2e-4,
            warmup=spec["warmup"],
            seed=spec["seed"],
            device=device,
            sync=_sync(device),
        )
        result["precision"] = "bf16 weights"
        result["gradient_checkpointing"] = True
    elif arm in ("homegrown", "qlora"):
        from homegrown.training.sft import TrainConfig

        cfg = TrainConfig(
            lora_r=LORA["r"],
            lora_alpha=LORA["lora_alpha"],
            lora_dropout=LORA["lora_dropout"],
            target_modules=tuple(LORA["target_modules"]),
            max_seq_length=spec["seq_len"],
            per_device_batch_size=spec["batch_size"],
            gradient_accumulation=1,
            gradient_checkpointing=True,
            max_steps=spec["warmup"] + spec["steps"],
            num_epochs=1.0,
            early_stopping_patience=0,
            batching=spec["batching"],
            qlora=arm == "qlora",
            device=device,
            seed=spec["seed"],
        )
        result = bench_train.run_homegrown(
            cfg, spec["model_dir"], Path(spec["rows_jsonl"]), out_dir, spec["warmup"], sync=_sync(device)
        )
        if arm == "qlora":
            result["precision"] = "NF4 base, bf16 compute, paged 8-bit AdamW"
        result["gradient_checkpointing"] = True
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
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(result_path.read_text())


# ---------------------------------------------------------------------------------------------------------
# Report


def environment(device: str) -> dict[str, Any]:
    """GPU, driver-visible memory, library versions and date."""
    import torch

    versions = {}
    for name in ("torch", "transformers", "peft", "accelerate", "trl", "datasets", "bitsandbytes"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    info: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "versions": versions,
        "device": device,
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
    lines = [
        "# Training benchmark (GPU)"
        + (" — dry run on the CPU, tiny model" if env["device"] != "cuda" else ""),
        "",
        f"- Device: {env['gpu']}"
        + (f", {env['gpu_memory_gib']} GiB, CUDA {env['cuda']}" if "cuda" in env else ""),
        f"- Date: {env['date']}; Python {env['python']}; "
        + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        (
            f"- Model: Llama shape with random weights: hidden {shape['hidden_size']}, {shape['num_hidden_layers']} "
            f"layers, {shape['num_attention_heads']} heads, {shape['num_key_value_heads']} KV heads, intermediate "
            f"{shape['intermediate_size']}, vocab {shape['vocab_size']}. LoRA r=16, alpha=32, dropout 0.05 on q/k/v/o."
        ),
        (
            f"- Data: {setup['rows']} synthetic chat rows of {setup['min_len']}–{setup['seq_len']} tokens "
            f"(byte-level tokenizer, loss on the answer), batch {setup['batch_size']}, {setup['warmup']} warm-up + "
            f"{setup['steps']} timed optimizer steps, one pass over the rows in every arm."
        ),
        (
            "- Useful tokens/s: real (attention-mask) tokens of the timed steps / their wall time. Peak memory: "
            "`torch.cuda.max_memory_allocated` (reserved in brackets) of the arm's own process, load included."
        ),
        "",
        (
            "| arm | precision | batching | s/step | useful tokens/s | peak allocated GiB (reserved) | padding share "
            "| loss first → last | arm wall s |"
        ),
        "|---|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for name in ARMS:
        r = arms.get(name)
        if r is None:
            continue
        if "error" in r:
            lines.append(f"| {name} | not run: {r['error']} | | | | | | | |")
            continue
        padding = r["collated"]["padding_share"]
        memory = (
            f"{r['max_memory_allocated_gib']:.1f} ({r['max_memory_reserved_gib']:.1f})"
            if "max_memory_allocated_gib" in r
            else f"CPU: peak RSS {r['peak_rss_mib']:,.0f} MiB"
        )
        lines.append(
            f"| {name} | {r['precision']} | {r['batching']} | {r['s_per_step']:.2f} | **{_fmt(r['tokens_per_s'])}** "
            f"| {memory} | {100 * padding:.1f}% | {r['first_loss']:.2f} → {r['last_loss']:.2f} | {r['wall_seconds']} |"
        )
    base, home, qlora = arms.get("baseline"), arms.get("homegrown"), arms.get("qlora")
    notes = []
    if base and home and "error" not in base and "error" not in home:
        notes.append(
            f"homegrown / baseline useful tokens/s: **{home['tokens_per_s'] / base['tokens_per_s']:.2f}×**."
        )
    if qlora and "error" not in qlora and "max_memory_allocated_gib" in qlora:
        peak = qlora["max_memory_allocated_gib"]
        verdict = "meets" if peak < QLORA_TARGET_GIB else "misses"
        notes.append(f"QLoRA peak {peak:.1f} GiB: {verdict} the < {QLORA_TARGET_GIB:.0f} GiB target.")
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
        "--batching", default="group_by_length", help="TrainConfig.batching of the homegrown arms"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1500, help="seconds per subprocess (default 1500)")
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

    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown or not arms:
        parser.error(f"--arms: unknown {unknown}; choose from {', '.join(ARMS)}")
    if args.dry_run:
        args.steps, args.warmup, args.batch_size, args.seq_len, args.min_len = 2, 1, 2, 128, 64
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
    # On the CPU the qlora arm only checks that homegrown refuses it, which needs no bitsandbytes.
    missing = missing_packages([a for a in arms if not (args.dry_run and a == "qlora")])
    if missing:
        print(
            f"the arms {arms} need {missing}, which this Python cannot import; install them (e.g. from wheels: "
            "pip install --no-index --no-deps --target /tmp/site <wheels>) or choose other --arms.",
            file=sys.stderr,
        )
        return 2

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="homegrown-bench-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
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
        "seed": args.seed,
        "work_dir": str(work),
        "tokenizer_dir": str(work / "tokenizer"),
        "model_dir": str(work / "model"),
        "rows_jsonl": str(rows_jsonl),
    }
    results: dict[str, dict[str, Any]] = {}
    if {"homegrown", "qlora"} & set(arms) and not (work / "model" / "config.json").is_file():
        prepared = _run_child("prepare", setup, args.timeout)
        setup["prepare_seconds"] = prepared["seconds"]
        print(
            f"model folder written in {prepared['seconds']} s ({prepared['parameters']:,} parameters)",
            flush=True,
        )
    for arm in arms:
        if arm == "qlora" and device != "cuda":
            from homegrown.training.sft import TrainConfig

            try:
                TrainConfig(qlora=True, device="cpu").validate()
            except ValueError as exc:
                results[arm] = {"error": f"needs CUDA ({exc})"}
                print(f"{arm}: skipped on the CPU: {exc}", flush=True)
                continue
        try:
            results[arm] = _run_child(arm, setup, args.timeout)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            results[arm] = {"error": str(exc).strip().splitlines()[-1][:300]}
            print(f"{arm}: FAILED\n{exc}", file=sys.stderr, flush=True)
            continue
        r = results[arm]
        memory = r.get("max_memory_allocated_gib")
        print(
            f"{arm}: {r['tokens_per_s']:.0f} useful tokens/s, {r['s_per_step']:.2f} s/step"
            + (
                f", peak {memory:.1f} GiB"
                if memory is not None
                else f", peak RSS {r['peak_rss_mib']:.0f} MiB"
            ),
            flush=True,
        )

    payload = {"env": environment(device), "setup": setup, "arms": results}
    page = render(payload)
    out = args.out or (work / "train_gpu.md" if args.dry_run else DEFAULT_OUT)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    if args.json_out:
        args.json_out.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    print(page)
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return (
        0
        if all("error" not in r for name, r in results.items() if not (name == "qlora" and device != "cuda"))
        else 1
    )


if __name__ == "__main__":
    sys.exit(main())

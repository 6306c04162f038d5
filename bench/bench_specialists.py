"""Specialists against the general model: quality on each type's slice, and serving speed through the gateway.

Run after ``homegrown specialists`` (which trains, exports, evaluates and gates them on the current
``HOMEGROWN_HOME``). Quality comes from that run's per-slice eval (base, general candidate, specialist on the
same test rows, paired bootstrap). Speed is measured here, in one process, through the gateway's own
llama.cpp backend (what serves traffic), one request at a time, greedy, the same requests for every arm:

- ``general``: the merged, quantized general candidate (``q4_k_m``) answering each type's test prompts;
- ``base file alone``: the base GGUF the adapters apply to, without any (it is another quantization type
  than the general candidate's, so this separates the file's speed from the adapters' cost);
- ``specialist``: one backend holding the base GGUF and every adapter, the type's adapter applied per request,
  requests grouped by type (an adapter switch only between groups);
- ``specialist, alternating``: the same backend with the types interleaved, so every request switches the
  adapter and cannot reuse the previous request's cached prompt.

Each arm answers every prompt with the same token cap; latency is the request's wall time, tokens per second
is completion tokens over the arm's total time.

    flock /tmp/homegrown-bench.lock .venv/bin/python bench/bench_specialists.py --out bench/results/specialists.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np


def _requests(test_parquet: str, example_type: str, limit: int) -> list[dict[str, Any]]:
    from homegrown.evaluation.evaluate import load_test_examples
    from homegrown.evaluation.metrics import example_tools
    from homegrown.evaluation.runner import prompt_messages, response_format_for

    examples = [e for e in load_test_examples(test_parquet) if str(e.get("example_type") or "chat") == example_type]
    return [{"type": example_type, "messages": prompt_messages(e), "tools": example_tools(e),
             "response_format": response_format_for(e)} for e in examples[:limit]]


def _answer(backend: Any, request: dict[str, Any], max_tokens: int) -> tuple[float, int]:
    from homegrown.gateway.schemas import ChatCompletionRequest

    body = ChatCompletionRequest(model="bench", messages=request["messages"], tools=request["tools"],
                                 response_format=request["response_format"], max_tokens=max_tokens,
                                 temperature=0.0, seed=0, metadata={"example_type": request["type"]})
    started = time.perf_counter()
    completion = backend.complete(body)
    return time.perf_counter() - started, int(completion.completion_tokens or 0)


def _arm(backend: Any, requests: list[dict[str, Any]], max_tokens: int) -> dict[str, float]:
    _answer(backend, requests[0], 8)  # warm-up: the first request pays for page faults and thread start
    latencies, tokens = [], 0
    for request in requests:
        seconds, produced = _answer(backend, request, max_tokens)
        latencies.append(seconds)
        tokens += produced
    total = sum(latencies)
    return {"requests": len(requests), "total_s": total, "p50_s": float(np.percentile(latencies, 50)),
            "p95_s": float(np.percentile(latencies, 95)), "tokens": tokens, "tokens_per_s": tokens / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench/results/specialists.md")
    parser.add_argument("--per-type", type=int, default=10, help="test prompts per type")
    parser.add_argument("--max-tokens", type=int, default=96, help="token cap of every answer")
    args = parser.parse_args()

    from homegrown.gateway.backends import LlamaCppBackend
    from homegrown.specialists import summary_table
    from homegrown.store import open_store

    store = open_store()
    trained = store.latest("specialist_adapters")
    if not trained:
        raise SystemExit("no specialist_adapters yet: run `homegrown specialists` first")
    splits = store.require_latest("dataset_splits")
    types = [s["example_type"] for s in trained["specialists"]]
    by_type = {t: _requests(splits["paths"]["test"]["parquet"], t, args.per_type) for t in types}
    grouped = [r for t in types for r in by_type[t]]
    alternating = [r for group in zip(*by_type.values(), strict=False) for r in group]
    threads = len(os.sched_getaffinity(0))
    load = os.getloadavg()

    arms: dict[str, dict[str, float]] = {}
    general = LlamaCppBackend(trained["general_gguf"], n_ctx=4096, n_threads=threads, timeout_s=3600)
    try:
        arms["general (merged q4_k_m)"] = _arm(general, grouped, args.max_tokens)
        arms["general, alternating order"] = _arm(general, alternating, args.max_tokens)
    finally:
        general.close()
    plain = LlamaCppBackend(trained["base_gguf"], n_ctx=4096, n_threads=threads, timeout_s=3600)
    try:
        arms["base file alone (no adapter)"] = _arm(plain, grouped, args.max_tokens)
    finally:
        plain.close()
    shared = LlamaCppBackend(trained["base_gguf"], n_ctx=4096, n_threads=threads, timeout_s=3600,
                             adapters={s["example_type"]: s["lora_gguf"] for s in trained["specialists"]})
    try:
        arms["specialist (base + LoRA per request)"] = _arm(shared, grouped, args.max_tokens)
        arms["specialist, alternating types"] = _arm(shared, alternating, args.max_tokens)
    finally:
        shared.close()

    reference = arms["general (merged q4_k_m)"]
    rows = ["| arm | requests | total s | p50 s | p95 s | tokens | tokens/s | time vs general |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, arm in arms.items():
        rows.append(f"| {name} | {arm['requests']} | {arm['total_s']:.1f} | {arm['p50_s']:.2f} | {arm['p95_s']:.2f} "
                    f"| {arm['tokens']} | {arm['tokens_per_s']:.1f} | {arm['total_s'] / reference['total_s']:.2f}x |")
    sizes = ", ".join(f"{s['example_type']} {s['lora_mb']} MB" for s in trained["specialists"])
    verdicts = "\n".join(
        f"- **{s['example_type']}** ({s['train_rows']} train rows, {s['test_rows']} test rows): gate "
        f"{'passed' if s['gate_passed'] else 'blocked'}"
        + ("" if s["gate_passed"] else f" ({'; '.join((s['gate'] or {}).get('failures', [])[:3])})")
        + f"; against the general model: **{s['versus_general']['verdict']}**"
        + (f" (better: {', '.join(s['versus_general']['better'])})" if s["versus_general"]["better"] else "")
        + (f" (worse: {', '.join(s['versus_general']['worse'])})" if s["versus_general"]["worse"] else "")
        for s in trained["specialists"])
    text = f"""# Specialists against the general model

- Machine: {platform.processor() or platform.machine()}, {threads} cores; load average at start {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}
- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC
- Data: the demo day's splits (dataset {trained['dataset_version']}); general candidate: model version {trained['general_model_version']}
  (LoRA on every type, merged, `q4_k_m`); specialists: the base GGUF ({Path(trained['base_gguf']).name}) with one
  LoRA file per type ({sizes}), trained by `homegrown specialists` (`pipelines/specialists_config.yaml`).

## Quality on each type's own test rows

From the `specialist_adapters` run: every model answered the same test rows of the type (the eval's budgets,
greedy, page tasks under the page schema, tools offered); the gate is the pipeline's own, with the general model
as the champion; "against the general model" reads the paired bootstrap of specialist minus general.

{summary_table(trained['specialists'])}

{verdicts}

## Serving speed through the gateway's llama.cpp backend

Command: `flock /tmp/homegrown-bench.lock .venv/bin/python bench/bench_specialists.py`. Up to {args.per_type} test
prompts per type, each answered once per arm with at most {args.max_tokens} tokens, one request at a time on
{threads} threads; the same prompts in every arm (answers differ, so token counts do too: compare tokens/s).
A specialist multiplies each adapted matrix by the LoRA factors on top of the base (`W x + B (A x)`), which a
merged model does not; "base file alone" is the same base without adapters.

{chr(10).join(rows)}

Raw figures: `{json.dumps({k: {m: round(v, 3) for m, v in a.items()} for k, a in arms.items()})}`
"""
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()

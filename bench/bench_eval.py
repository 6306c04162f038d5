"""How long the eval takes to answer the demo's test split: one request at a time vs batched.

The test split is built as the pipeline builds it: one demo day of logs (``homegrown.demo.generate``),
ingested, the knowledge file's synthetic examples added, curated, split and leak-checked (the data assets'
calls, without Dagster). Two GGUF models answer it with the eval's budgets (``runner.answer_budget``,
1024 tokens for pages, greedy, pages under the page schema, tools offered):

- ``base``: the embedded SmolLM2-135M-Instruct GGUF (Q4_1), what ``eval_report`` evaluates as the base;
- ``candidate``: the same weights through the candidate's export path (float model -> f16 GGUF ->
  ``q4_k_m``, ``homegrown.training.export``), i.e. a candidate whose adapter learnt nothing. It answers at
  least as long as a trained one would (an untrained model runs to its budget more often).

Each model answers through ``runner.run_model`` twice in the same process: ``sequential=True`` (the old
path, the gateway's llama.cpp backend one request at a time) and the default batched path. The eval answers
its models one after another, so the whole eval's answering time is the sum over its models: 2 models are
base + candidate, 3 add a champion, which is another ``q4_k_m`` file of the candidate's size (timed as the
candidate). Answers of the two paths are compared text for text. The eval's answer cache
(``homegrown.evaluation.answer_cache``, which lets a retrain skip the base's and the champion's answers it
already has) is off here: every figure is generation.

    flock /tmp/homegrown-bench.lock .venv/bin/python bench/bench_eval.py --out bench/results/eval.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

NOTES = """Answers that differ: the base (Q4_1) is multiplied row by row, so a token's logits do not depend on
the batch and every answer is the sequential one. The candidate's `q4_k_m` weights are repacked by llama.cpp
on a CPU without AMX, and a batch of 4+ rows goes through a GEMM kernel whose sums round differently from the
one-row kernel the sequential path uses; greedy decoding of a 135M model then parts ways at near-ties (with
`parallel=1` the batched path gives the sequential answers, checked on 9 examples). Throughput: Q4_1 has no
batched kernel on x86, so batching saves little for the base; the candidate gains from the repacked GEMM.
Timings are from a shared 2-core VM with other work running (load average in the header)."""


def build_test_split(work: Path, days: int = 1, previous: dict[str, str] | None = None
                     ) -> tuple[Path, dict[str, str]]:
    """The demo's test split after ``days`` days of logs, built with the data assets' calls (splits kept from
    ``previous`` as ``dataset_splits`` keeps them); returns the test Parquet path and the split assignment."""
    from homegrown.data.curate import curate
    from homegrown.data.ingest import ingest, load_interactions, load_optout
    from homegrown.data.pii_audit import canary_frame
    from homegrown.data.quality import QualityPolicy
    from homegrown.data.splits import assign_splits, cross_split_duplicates, write_splits
    from homegrown.data.synthetic import generate_synthetic
    from homegrown.demo.generate import KNOWLEDGE_PATH, generate_demo_logs

    for batch in range(days):
        generate_demo_logs(work / "logs", seed=0, batch=batch)
    ingest(work / "logs", work / "interactions.sqlite")
    interactions = load_interactions(work / "interactions.sqlite")
    opted_out = set(load_optout(work / "interactions.sqlite"))
    synthetic = generate_synthetic(KNOWLEDGE_PATH, seed=0, per_fact=3, opted_out_orgs=opted_out)
    kept = curate(interactions, synthetic, QualityPolicy(), opted_out, canaries=canary_frame()).kept
    assignment = assign_splits(kept, previous or {})
    missed = cross_split_duplicates(kept, assignment)
    if missed:
        kept = kept[~kept["example_id"].isin({m[2] for m in missed})].reset_index(drop=True)
    return Path(write_splits(kept, assignment, work / "splits").paths["test"]["parquet"]), assignment


def candidate_gguf(work: Path) -> Path:
    """The base weights exported and quantized the way ``quantized_model`` writes a candidate."""
    from homegrown.training.base import resolve_base_model
    from homegrown.training.export import export_gguf, quantize_gguf

    out = work / "candidate-q4_k_m.gguf"
    if not out.exists():
        base = resolve_base_model(cache_dir=work / "models")
        f16 = export_gguf(base.path, work / "candidate-f16.gguf", "f16")
        quantize_gguf(f16, out, "q4_k_m")
    return out


def time_model(spec: str, examples: list[dict], max_tokens: int) -> dict:
    from homegrown.evaluation.runner import run_model

    row: dict = {}
    for path, sequential in (("sequential", True), ("batched", False)):
        started = time.perf_counter()
        answers = run_model(spec, examples, max_tokens=max_tokens, sequential=sequential)
        seconds = time.perf_counter() - started
        tokens = sum(a.completion_tokens or 0 for a in answers)
        row[path] = {"seconds": round(seconds, 1), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1),
                     "texts": [a.text for a in answers]}
        print(json.dumps({"model": Path(spec).name, "path": path, **{k: v for k, v in row[path].items()
                                                                      if k != "texts"}}), flush=True)
    pairs = list(zip(row["sequential"].pop("texts"), row["batched"].pop("texts"), strict=True))
    row["identical"] = sum(a == b for a, b in pairs)
    row["answers"] = len(pairs)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=0, help="first N test examples (0: all)")
    parser.add_argument("--max-tokens", type=int, default=1024, help="eval_report's max_tokens")
    parser.add_argument("--work", default="/tmp/homegrown-bench-eval")
    parser.add_argument("--out", help="write the Markdown table here")
    args = parser.parse_args()
    os.environ["HOMEGROWN_ANSWER_CACHE"] = "0"  # time generation, never answers read back from an earlier run

    from homegrown.evaluation.evaluate import load_test_examples
    from homegrown.evaluation.metrics import task_kind
    from homegrown.training.base import embedded_gguf_path

    load = os.getloadavg()[0]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    examples = load_test_examples(build_test_split(work)[0], args.examples or None)
    kinds = {kind: sum(task_kind(e) == kind for e in examples) for kind in ("text", "tool", "json")}
    models = {"base": str(embedded_gguf_path()), "candidate": str(candidate_gguf(work))}
    rows = {name: time_model(spec, examples, args.max_tokens) for name, spec in models.items()}

    def total(path: str, champion: bool) -> float:
        seconds = rows["base"][path]["seconds"] + rows["candidate"][path]["seconds"]
        return seconds + (rows["candidate"][path]["seconds"] if champion else 0.0)

    lines = [
        (f"# Eval answering time on the demo's test split ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)"), "",
        (f"Command: `flock /tmp/homegrown-bench.lock .venv/bin/python bench/bench_eval.py"
        f"{f' --examples {args.examples}' if args.examples else ''} --out bench/results/eval.md`. "
        f"Load average at start: {load:.2f}. {len(examples)} test examples ({kinds['text']} text, "
        f"{kinds['tool']} tool, {kinds['json']} page JSON), max_tokens {args.max_tokens}, greedy."), "",
        "| model | path | seconds | tokens | tokens/s | answers identical to sequential |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        for path in ("sequential", "batched"):
            r = row[path]
            same = f"{row['identical']}/{row['answers']}" if path == "batched" else ""
            lines.append(f"| {name} | {path} | {r['seconds']} | {r['tokens']} | {r['tokens_per_s']} | {same} |")
    lines += ["", "| whole eval (answering) | sequential s | batched s | speed-up |", "|---|---:|---:|---:|"]
    for label, champion in (("2 models (base + candidate)", False), ("3 models (+ champion)", True)):
        old, new = total("sequential", champion), total("batched", champion)
        lines.append(f"| {label} | {old:.0f} | {new:.0f} | {old / new:.2f}x |")
    lines += ["", NOTES]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()

"""Does a pipeline run with no config learn *any* business? Issue 9's "Done when" measurement.

For each business (``bench/businesses/``: ``a`` the Lyon bakery, ``b`` the Bristol bike workshop, ``demo``),
its logs are written to a fresh input folder, ``HOMEGROWN_INPUT`` points at it and ``HOMEGROWN_HOME`` at a
fresh state folder, and the whole pipeline (``*``: ingestion to ``deployed_endpoint``) runs with **no run
config** in a subprocess, through ``homegrown.cli.run_pipeline`` (there is no CLI command that runs the
pipeline without a config on one's own input: ``homegrown demo`` always passes the demo's config). When a
model was deployed, the business's held-out questions (phrasings not in its logs) go to the deployed
endpoint through the official ``openai`` client at temperature 0, with the system prompt the business's
logs use, and are scored by ``bench/businesses/scoring.py``: right when every expected fact is stated and
no wrong one. The table goes to ``--out``.

    .venv/bin/python bench/bench_businesses.py --businesses a b demo --out bench/results/businesses.md

One business takes as long as a full pipeline run (tens of minutes on 2 cores); run it on an idle machine.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.businesses import generator, heldout_path, resolve
from bench.businesses.scoring import bootstrap_ci, judge, load_heldout

TARGET = 0.85


def logged_system_prompt(folder: Path) -> str | None:
    """The system prompt the business's own assistant runs with: the most common one in its JSONL logs."""
    counts: collections.Counter[str] = collections.Counter()
    for path in folder.glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            messages = row.get("messages") if isinstance(row, dict) else None
            if messages and isinstance(messages, list) and messages[0].get("role") == "system":
                counts[messages[0]["content"]] += 1
    return counts.most_common(1)[0][0] if counts else None


def worker(name: str, questions_path: str, system: str, out_path: str) -> int:
    """In a fresh process whose env names the input and home: run the pipeline, ask the held-out questions."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from homegrown.cli import LOOP_SELECTION, _store, failed_steps, run_pipeline, status
    from homegrown.gateway.server import stop_background

    out: dict[str, Any] = {"business": name}
    started = time.perf_counter()
    questions = json.loads(Path(questions_path).read_text())["questions"]

    def messages_for(question: str) -> list[dict[str, str]]:
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]

    try:
        # what `homegrown run` materialises: ingestion to deployed_endpoint (the specialists are a job of their own)
        result = run_pipeline(LOOP_SELECTION, None, raise_on_error=False)
        out["pipeline_s"] = time.perf_counter() - started
        out["failed_steps"] = failed_steps(result)
        out["failed_checks"] = [c.check_name for c in result.get_asset_check_evaluations() if not c.passed]
        store = _store()
        out["latest"] = {stage: store.latest(stage) for stage in (
            "raw_interactions", "scored_dataset", "dataset_splits", "lora_adapter", "eval_report", "deployed_endpoint")}
        info = status()
        endpoint = info.get("endpoint") or {}
        deployed = out["latest"]["deployed_endpoint"]
        out["deployed"] = bool(deployed and "deployed_endpoint" not in out["failed_steps"] and endpoint.get("healthy"))
        out["answers"] = []
        if out["deployed"]:
            from openai import OpenAI

            client = OpenAI(base_url=f"{endpoint['url'].rstrip('/')}/v1", api_key=endpoint["api_key"], timeout=180,
                            max_retries=1)
            for q in questions:
                t0 = time.perf_counter()
                response = client.chat.completions.create(model=endpoint.get("model") or "champion",
                                                          messages=messages_for(q["question"]),
                                                          temperature=0, max_tokens=160)
                out["answers"].append({"id": q["id"], "answer": response.choices[0].message.content or "",
                                       "served_by": response.model, "latency_s": time.perf_counter() - t0})
        elif (out["latest"]["eval_report"] or {}).get("promoted") is False:
            # Not deployed (the gate blocked it): what the blocked candidate knows, asked through the backend the
            # gateway serves it with (same prompt rendering, greedy). Reported apart, never as the deployed figure.
            from homegrown.evaluation.runner import load_backend

            backend = load_backend(out["latest"]["eval_report"]["candidate_gguf"])
            try:
                for q in questions:
                    answer = backend.generate(messages_for(q["question"]), max_tokens=160)
                    out["answers"].append({"id": q["id"], "answer": answer.text, "served_by": "blocked candidate",
                                           "latency_s": answer.latency_s})
            finally:
                backend.close()
    finally:
        stop_background()
        out["wall_s"] = time.perf_counter() - started
        Path(out_path).write_text(json.dumps(out, indent=1, default=str))
    return 0


def optimiser_steps(adapter: dict[str, Any] | None) -> int | None:
    """Optimiser steps of the trained adapter, from what ``lora_adapter`` recorded (metrics, else its history)."""
    if not adapter:
        return None
    metrics = adapter.get("metrics") or {}
    for key in ("optimizer_steps", "optimiser_steps", "global_step", "train_steps", "steps"):
        if isinstance(metrics.get(key), (int, float)):
            return int(metrics[key])
    steps = [int(e["step"]) for e in adapter.get("history") or [] if isinstance(e.get("step"), (int, float))]
    return max(steps) if steps else None


def run_business(name: str, work: Path, seed: int, timeout_s: int, use_system: bool) -> dict[str, Any]:
    input_dir, home = work / "input", work / "home"
    summary = generator(name).generate(input_dir, seed=seed)
    questions = load_heldout(heldout_path(name))
    system = logged_system_prompt(input_dir) if use_system else None
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "HOMEGROWN_API_KEYS")}
    # a free port, so a gateway another user runs on 8080 is left alone; not a run config
    env.update({"HOMEGROWN_INPUT": str(input_dir), "HOMEGROWN_HOME": str(home), "HOMEGROWN_PORT": "0",
                "HF_HUB_OFFLINE": "1"})
    out_path = work / "worker.json"
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "_worker", name, str(heldout_path(name)), system or "",
                           str(out_path)], check=False, cwd=ROOT, env=env, timeout=timeout_s, capture_output=True, text=True)
    (work / "worker.log").write_text(proc.stdout + proc.stderr)
    if not out_path.exists():
        raise RuntimeError(f"{name}: the pipeline worker wrote no result (exit {proc.returncode}); "
                           f"see {work / 'worker.log'}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    result = json.loads(out_path.read_text())
    latest = result.get("latest") or {}
    answers = {a["id"]: a for a in result.get("answers", [])}
    judged = [judge(q, answers[q.id]["answer"]) | {"question": q.question, "answer": answers[q.id]["answer"]}
              for q in questions if q.id in answers]
    rights = [1.0 if j["right"] else 0.0 for j in judged]
    report = latest.get("eval_report") or {}
    gate = report.get("gate") or {}
    return {
        "business": name, "title": generator(name).TITLE, "rows_in": summary.get("lines"),
        "interactions": (latest.get("raw_interactions") or {}).get("interactions"),
        "quarantined": (latest.get("raw_interactions") or {}).get("quarantined"),
        "kept": (latest.get("scored_dataset") or {}).get("kept"),
        "split_rows": (latest.get("dataset_splits") or {}).get("rows"),
        "optimiser_steps": optimiser_steps(latest.get("lora_adapter")),
        "deployed": result.get("deployed", False), "failed_steps": result.get("failed_steps"),
        "failed_checks": result.get("failed_checks"), "gate_failures": gate.get("failures"),
        "fact_accuracy": sum(rights) / len(rights) if rights else None,
        "ci95": bootstrap_ci(rights) if rights else None, "n": len(rights), "n_questions": len(questions),
        "system_prompt": bool(system), "judged": judged, "wall_s": time.perf_counter() - started,
        "pipeline_s": result.get("pipeline_s"),
    }


def machine() -> str:
    import psutil

    return f"{platform.machine()} {psutil.cpu_count(logical=True)} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB"


def write_table(results: list[dict[str, Any]], out: Path) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Any business, no config: held-out fact accuracy through the deployed endpoint",
        "",
        (f"`bench/bench_businesses.py`, {stamp}, {machine()}. Each business: a fresh `HOMEGROWN_HOME`, its logs "
        "in a fresh `HOMEGROWN_INPUT`, the whole pipeline with no run config, then its held-out questions "
        "(phrasings not in its logs) through the `openai` client at temperature 0 against the deployed endpoint. "
        f"Right = every expected fact stated and no wrong one (`bench/businesses/scoring.py`). Target: >= {TARGET}."),
        "",
        "| business | rows in | kept / train rows | optimiser steps | deployed? | held-out fact accuracy [95% CI] | n | wall time |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in results:
        train = (r.get("split_rows") or {}).get("train")
        if r["deployed"]:
            deployed = "yes"
        else:
            reasons = r.get("gate_failures") or r.get("failed_checks") or r.get("failed_steps") or r.get("error")
            deployed = f"no: {json.dumps(reasons, default=str)[:300]}"
        acc = (f"{r['fact_accuracy']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"
               if r.get("fact_accuracy") is not None else "—")
        if r.get("fact_accuracy") is not None and not r["deployed"]:
            acc = f"— (the blocked candidate, asked directly: {acc})"
        lines.append(f"| {r.get('title', r['business'])} | {r.get('rows_in') or '—'} | {r.get('kept') or '—'} / "
                     f"{train or '—'} | {r.get('optimiser_steps') or '—'} | {deployed} | {acc} | {r.get('n', 0)} | "
                     f"{(r.get('wall_s') or 0) / 60:.0f} min |")
    lines += ["", "## Wrong answers", ""]
    for r in results:
        for j in r.get("judged", []):
            if not j["right"]:
                lines.append(f"- {r['business']} `{j['id']}` {j['question']!r} -> {j['answer'][:200]!r} "
                             f"(missing {j['missing']}, wrong {j['wrong']})")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_worker":
        return worker(*argv[1:5])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--businesses", nargs="+", default=["a", "b", "demo"], help="a, b, demo (or their names)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "businesses.md"))
    parser.add_argument("--keep", action="store_true", help="keep each business's input, home and worker log")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=int, default=4 * 3600, help="seconds per business")
    parser.add_argument("--no-system", action="store_true", help="ask without the business's system prompt")
    args = parser.parse_args(argv)
    names = [resolve(b) for b in args.businesses]
    results = []
    for name in names:
        work = Path(tempfile.mkdtemp(prefix=f"bench-business-{name}-"))
        try:
            result = run_business(name, work, args.seed, args.timeout, not args.no_system)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            result = {"business": name, "title": generator(name).TITLE, "deployed": False, "error": str(exc)[-500:]}
        result["work_dir"] = str(work) if args.keep else None
        print(json.dumps({k: v for k, v in result.items() if k != "judged"}, default=str), flush=True)
        results.append(result)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    write_table(results, out)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark of the data half: from raw assistant logs to train/validation/test splits.

For each size N the benchmark writes about N input lines of the demo business's logs (the My Hibachi
demo of ``homegrown.demo.generate``, one day per batch, plus re-logged duplicates and malformed lines
so the mix is about 10% duplicates and 1% malformed lines), then runs, in a fresh subprocess so that
peak memory is per size:

- the real pipeline, stage by stage as the Dagster assets call it: ``ingest`` into SQLite,
  ``load_interactions``, ``curate`` (quality score, anonymisation, de-duplication), the scored table
  written to and read back from Parquet, the ``no_pii_left`` check, ``assign_splits``, the cross-split
  near-duplicate scan, ``write_splits`` and the ``no_leakage`` check on the written files;
- a plain pandas baseline on the same files: read each file, drop rows without an id,
  ``drop_duplicates`` on the (question, answer) text, a hash split, three JSONL files. It does far
  less (no validation, quarantine, feedback merge, scoring, anonymisation or near-duplicate search), so
  the ratio column is the cost of doing the real work, not an overhead to be optimised away.

Run ``.venv/bin/python bench/bench_data.py [--sizes 10000 100000 1000000] [--out bench/results/data.md]`` (the
default is all three sizes). The report ends each size's stage table with the plain baseline measured in the
same run, and adds a paper estimate for 100M lines from the per-stage scaling between the two largest sizes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import pandas as pd
import psutil

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = PROJECT_ROOT / "bench" / "results" / "data.md"
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
PAPER_SIZE = 100_000_000  # the size of the paper estimate, from the scaling measured between the two largest sizes

# Extra dirt added to each day so the mix is about 10% duplicates and 1% malformed lines: the demo alone
# has ~4% exact/near duplicates, ~2% superseded rows and ~0.1% malformed lines.
RELOGGED_SHARE = 0.06  # of a day's chat lines, logged twice by a retrying client under a new id
MALFORMED_SHARE = 0.015  # of a day's chat lines
# A demo day at scale 1.0 is about this many input lines, dirt included (10.0 is the demo's largest scale).
LINES_PER_SCALE = 934
MAX_DEMO_SCALE = 10.0
SAMPLE_INTERVAL_S = 0.05


# ---------------------------------------------------------------------------------------------------------
# Input data


def generate_logs(out_dir: Path, lines: int, seed: int = 0) -> dict[str, Any]:
    """Write about ``lines`` input lines of demo logs to ``out_dir``; return what was written.

    One demo day per batch at the demo's largest scale, the last day scaled down to land near ``lines``.
    Each day also gets ``relogged-<day>.jsonl``: exact re-sends of its chat lines under new ids and
    malformed lines (truncated writes, non-JSON, rows with no answer).
    """
    from homegrown.demo.generate import generate_demo_logs

    if lines < 1000:
        raise ValueError(f"lines must be at least 1000 (one demo day at a small scale), got {lines}")
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"bench-data:{seed}")
    written = {"lines": 0, "malformed": 0, "relogged": 0, "days": 0, "bytes": 0}
    batch = 0
    while written["lines"] < lines:
        remaining = lines - written["lines"]
        scale = min(MAX_DEMO_SCALE, max(0.5, remaining / LINES_PER_SCALE))
        summary = generate_demo_logs(out_dir, seed=seed, batch=batch, scale=scale)
        extra = _dirt(out_dir, summary["day"], rng, batch)
        written["lines"] += summary["lines"] + extra["relogged"] + extra["malformed"]
        written["malformed"] += summary["malformed"] + extra["malformed"]
        written["relogged"] += extra["relogged"]
        written["days"] += 1
        batch += 1
    written["bytes"] = sum(p.stat().st_size for p in out_dir.iterdir())
    return written


def _dirt(out_dir: Path, day: str, rng: random.Random, batch: int) -> dict[str, int]:
    chat_lines = (out_dir / f"assistant-{day}.jsonl").read_text(encoding="utf-8").splitlines()
    rows = []
    for line in chat_lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "id" in row and "messages" in row:
            rows.append(row)
    relogged = rng.sample(rows, k=min(len(rows), round(len(rows) * RELOGGED_SHARE)))
    out = []
    for n, row in enumerate(relogged):
        copy = dict(row, id=f"relog-{batch}-{n}", conversation_id=f"relog-{batch}-{n}")
        out.append(json.dumps(copy))
    n_bad = round(len(chat_lines) * MALFORMED_SHARE)
    for n in range(n_bad):
        row = rng.choice(rows)
        kind = n % 4
        if kind == 0:
            bad = json.dumps(row)[: rng.randrange(20, 200)]  # cut off mid-write
        elif kind == 1:
            bad = f"WARN {day}T03:12:{n % 60:02d} upstream timeout after 30s"  # not JSON
        elif kind == 2:
            bad = json.dumps(dict(row, id=f"bad-{batch}-{n}", messages=row["messages"][:-1]))  # no answer
        else:
            bad = json.dumps(dict(row, id=f"bad-{batch}-{n}", created_at="last tuesday"))  # bad timestamp
        out.insert(rng.randrange(len(out) + 1), bad)
    (out_dir / f"relogged-{day}.jsonl").write_text("\n".join(out) + "\n", encoding="utf-8")
    return {"relogged": len(relogged), "malformed": n_bad}


# ---------------------------------------------------------------------------------------------------------
# Measurement


@dataclass
class Stage:
    """One timed stage: ``rows`` is what it was given, ``peak_rss_mb`` the process peak while it ran."""

    name: str
    seconds: float
    rows: int
    peak_rss_mb: float
    note: str = ""

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


@dataclass
class RunResult:
    """What one subprocess measured: its stages, end-to-end time, peak memory and some counts."""

    kind: str
    input_lines: int
    stages: list[Stage] = field(default_factory=list)
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    start_rss_mb: float = 0.0  # after imports, before the first stage
    counts: dict[str, Any] = field(default_factory=dict)


class MemorySampler:
    """Samples this process's resident memory in a background thread; ``peak(t0, t1)`` per window."""

    def __init__(self, interval: float = SAMPLE_INTERVAL_S) -> None:
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), _tree_rss(self._process)))
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def overall_peak_mb(self) -> float:
        return max((rss for _, rss in self.samples), default=0) / 2**20

    def peak_mb(self, start: float, end: float) -> float:
        """Largest sample in [start, end] (or the one just after ``start`` for a window shorter than a tick)."""
        inside = [rss for t, rss in self.samples if start <= t <= end]
        if not inside:
            inside = [rss for t, rss in self.samples if t >= start][:1] or [_tree_rss(self._process)]
        return max(inside) / 2**20


class Timer:
    """Runs stages, recording time and peak memory of each."""

    def __init__(self, sampler: MemorySampler) -> None:
        self.sampler = sampler
        self.stages: list[Stage] = []

    @contextmanager
    def stage(self, name: str, rows: int, note: str = "") -> Iterator[None]:
        start = time.perf_counter()
        yield
        end = time.perf_counter()
        self.stages.append(Stage(name, end - start, rows, self.sampler.peak_mb(start, end), note))


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def _tree_rss(process: psutil.Process) -> int:
    """Resident bytes of ``process`` and its worker processes together: its own resident set, plus what
    each forked worker holds of its own (USS; the pages it still shares with the parent are already
    counted in the parent's)."""
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_full_info().uss
        except psutil.AccessDenied:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def _max_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


# ---------------------------------------------------------------------------------------------------------
# The real pipeline


def run_pipeline(input_dir: Path, work_dir: Path, input_lines: int) -> RunResult:
    """Run the data half on ``input_dir`` the way the assets do, timing every stage."""
    from homegrown.data.curate import curate
    from homegrown.data.ingest import ingest, load_interactions, load_optout
    from homegrown.data.pii_audit import canary_frame, scan_examples, surviving_canaries
    from homegrown.data.quality import QualityPolicy
    from homegrown.data.splits import assign_splits, audit_split_files, cross_split_duplicates, write_splits
    from homegrown.store import read_parquet, to_parquet

    db_path = work_dir / "interactions.sqlite"
    result = RunResult(kind="pipeline", input_lines=input_lines, start_rss_mb=_rss_mb())
    started = time.perf_counter()
    with MemorySampler() as sampler:
        timer = Timer(sampler)
        with timer.stage("ingest → SQLite", input_lines):
            ingested = ingest(input_dir, db_path)
        if not ingested.balanced:
            raise RuntimeError(f"ingestion lost lines: {ingested}")
        with timer.stage("load_interactions", ingested.interactions):
            interactions = load_interactions(db_path)
            opted_out = load_optout(db_path)

        synthetic = pd.DataFrame(columns=["example_id", "org_id", "generator"])
        curate_start = time.perf_counter()
        curated = curate(interactions, synthetic, QualityPolicy(), opted_out, canaries=canary_frame())
        curate_end = time.perf_counter()
        stats = curated.stats
        canaries = curated.canaries
        # curate reports its own step timings; the memory windows follow them.
        score_end = curate_start + stats["score_s"]
        dedup_start = curate_end - stats["dedup_s"]
        n_table = len(curated.table)
        n_scored_kept = stats["kept"] + stats["duplicates"]
        for name, seconds, rows, window in (
            ("curate: score", stats["score_s"], len(interactions), (curate_start, score_end)),
            ("curate: anonymise", stats["anonymise_s"], n_table, (score_end, dedup_start)),
            ("curate: dedup", stats["dedup_s"], n_scored_kept, (dedup_start, curate_end)),
        ):
            timer.stages.append(Stage(name, seconds, rows, sampler.peak_mb(*window)))
        timer.stages.append(
            Stage(
                "curate (total)",
                curate_end - curate_start,
                len(interactions),
                sampler.peak_mb(curate_start, curate_end),
                note="sum of the three above plus glue",
            )
        )
        del interactions

        scored_path = work_dir / "scored.parquet"
        with timer.stage("scored table → Parquet → read back", n_table):
            to_parquet(curated.table, scored_path)
            del curated
            scored = read_parquet(scored_path)
            kept = scored[scored["keep"]].reset_index(drop=True)
            del scored

        with timer.stage("no_pii_left check (Presidio + canaries)", len(kept)):
            pii_hits = len(scan_examples(kept["example_id"], kept["messages"])) + len(surviving_canaries(canaries))

        with timer.stage("assign_splits", len(kept)):
            assignment = assign_splits(kept, {})
        with timer.stage("cross_split_duplicates", len(kept)):
            missed = cross_split_duplicates(kept, assignment)
            if missed:
                kept = kept[~kept["example_id"].isin({m[2] for m in missed})].reset_index(drop=True)
        with timer.stage("write_splits", len(kept)):
            splits = write_splits(kept, assignment, work_dir / "splits")
        with timer.stage("no_leakage check (split files read back)", len(kept)):
            problems = audit_split_files(splits.paths).problems

    result.seconds = time.perf_counter() - started
    result.stages = timer.stages
    result.peak_rss_mb = max(_max_rss_mb(), sampler.overall_peak_mb())
    result.counts = {
        "interactions": ingested.interactions,
        "superseded": ingested.superseded,
        "quarantined": ingested.quarantined,
        "feedback_events": ingested.feedback_events,
        "opted_out": stats["opted_out"],
        "kept_before_dedup": n_scored_kept,
        "duplicates": stats["duplicates"],
        "kept": stats["kept"],
        "cross_split_removed": len(missed),
        "pii_hits_left": pii_hits,
        "leakage_problems": len(problems),
        "split_rows": splits.rows,
        "sqlite_mb": round(db_path.stat().st_size / 2**20, 1),
    }
    return result


# ---------------------------------------------------------------------------------------------------------
# The plain pandas baseline


def _read_file(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        frame = pd.read_csv(path, dtype=str)
        if "messages" in frame:
            frame["messages"] = [_loads_or_none(v) for v in frame["messages"]]
        return frame
    try:
        return pd.read_json(path, lines=True, dtype=False)
    except ValueError:
        # read_json has no way to skip a bad line; fall back to json.loads per line.
        records = [
            r
            for r in map(_loads_or_none, path.read_text(encoding="utf-8").splitlines())
            if isinstance(r, dict)
        ]
        return pd.DataFrame.from_records(records)


def _loads_or_none(text: Any) -> Any:
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _question_answer(row: dict[str, Any]) -> tuple[str | None, str | None]:
    messages = row.get("messages")
    if isinstance(messages, str):
        messages = _loads_or_none(messages)
    if isinstance(messages, list) and messages:
        users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        last = messages[-1]
        answer = last.get("content") if isinstance(last, dict) else None
        if not answer and isinstance(last, dict) and last.get("tool_calls"):
            answer = json.dumps(last["tool_calls"], sort_keys=True)
        return (users[-1] if users else None), answer
    for question, answer in (("prompt", "response"), ("instruction", "output")):
        if isinstance(row.get(question), str) and isinstance(row.get(answer), str):
            return row[question], row[answer]
    return None, None


def run_baseline(input_dir: Path, work_dir: Path, input_lines: int) -> RunResult:
    """Read, drop exact (question, answer) duplicates, hash-split and write JSONL with plain pandas."""
    result = RunResult(kind="baseline", input_lines=input_lines, start_rss_mb=_rss_mb())
    started = time.perf_counter()
    with MemorySampler() as sampler:
        timer = Timer(sampler)
        with timer.stage("read files (pandas)", input_lines):
            frames = [
                _read_file(p)
                for p in sorted(input_dir.iterdir())
                if p.suffix in {".jsonl", ".csv", ".parquet"}
            ]
            frame = pd.concat(frames, ignore_index=True)
            del frames
            frame = frame[frame["id"].notna()].reset_index(drop=True)
        with timer.stage("question/answer + drop_duplicates", len(frame)):
            pairs = [_question_answer(row) for row in frame.to_dict("records")]
            frame["question"] = [q for q, _ in pairs]
            frame["answer"] = [a for _, a in pairs]
            frame = frame.dropna(subset=["question", "answer"])
            frame = frame.drop_duplicates(subset=["question", "answer"]).reset_index(drop=True)
        with timer.stage("hash split + write JSONL", len(frame)):
            group = frame["conversation_id"].fillna(frame["id"]).astype(str)
            bucket = [int(hashlib.sha256(g.encode()).hexdigest()[:8], 16) % 10 for g in group]
            frame["split"] = ["train" if b < 8 else "validation" if b == 8 else "test" for b in bucket]
            out = work_dir / "baseline"
            out.mkdir(parents=True, exist_ok=True)
            for split, part in frame.groupby("split"):
                part[["question", "answer"]].to_json(out / f"{split}.jsonl", orient="records", lines=True)
    result.seconds = time.perf_counter() - started
    result.stages = timer.stages
    result.peak_rss_mb = max(_max_rss_mb(), sampler.overall_peak_mb())
    result.counts = {"rows_out": len(frame), **frame["split"].value_counts().to_dict()}
    return result


# ---------------------------------------------------------------------------------------------------------
# Orchestration: one fresh subprocess per size and per pipeline, so peaks do not carry over


def _worker(kind: str, input_dir: Path, work_dir: Path, input_lines: int, result_path: Path) -> None:
    runner: Callable[[Path, Path, int], RunResult] = run_pipeline if kind == "pipeline" else run_baseline
    result = runner(input_dir, work_dir, input_lines)
    data = asdict(result)
    result_path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")


def _run_subprocess(args: list[str], timeout: float) -> None:
    command = [sys.executable, str(Path(__file__).resolve()), *args]
    completed = subprocess.run(
        command, check=False, timeout=timeout, cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args[:2])} failed ({completed.returncode}):\n{completed.stderr[-4000:]}"
        )


def _load(path: Path) -> RunResult:
    data = json.loads(path.read_text(encoding="utf-8"))
    data["stages"] = [Stage(**s) for s in data["stages"]]
    return RunResult(**data)


def bench_size(size: int, timeout: float, keep: bool = False) -> dict[str, Any]:
    """Generate ``size`` lines, then measure the pipeline and the baseline on them in fresh subprocesses."""
    root = Path(tempfile.mkdtemp(prefix=f"homegrown-bench-{size}-"))
    try:
        input_dir, generated_json = root / "input", root / "generated.json"
        _run_subprocess(
            ["--_generate", str(size), "--_input", str(input_dir), "--_result", str(generated_json)], timeout
        )
        generated = json.loads(generated_json.read_text(encoding="utf-8"))
        results = {}
        for kind in ("pipeline", "baseline"):
            work = root / kind
            work.mkdir()
            out = root / f"{kind}.json"
            print(f"[{size}] {kind} on {generated['lines']} lines ...", file=sys.stderr, flush=True)
            _run_subprocess(
                [
                    "--_worker",
                    kind,
                    "--_input",
                    str(input_dir),
                    "--_work",
                    str(work),
                    "--_lines",
                    str(generated["lines"]),
                    "--_result",
                    str(out),
                ],
                timeout,
            )
            results[kind] = _load(out)
            print(f"[{size}] {kind}: {results[kind].seconds:.1f} s", file=sys.stderr, flush=True)
        return {"size": size, "generated": generated, **results}
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, load average and versions, for the header of the results."""
    model = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], check=False, capture_output=True, text=True, timeout=10).stdout
        model = next(
            (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")),
            model,
        )
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average": os.getloadavg(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "pandas": pd.__version__,
        "workers": _workers(),
    }


def _workers() -> int:
    from homegrown.data.parallel import workers

    return workers()


# ---------------------------------------------------------------------------------------------------------
# Report


def _fmt_rate(rate: float) -> str:
    return f"{rate:,.0f}" if rate != float("inf") else "—"


def paper_estimate(runs: list[dict[str, Any]], size: int = PAPER_SIZE) -> list[str]:
    """Markdown lines estimating each stage at ``size`` input lines from the two largest sizes measured.

    Per stage, the exponent ``k`` of ``seconds ~ rows^k`` between the two sizes, and the time at ``size``
    both linearly (``k = 1``) and at the measured ``k`` (a ``k`` under 1 is start-up cost, so the
    estimate takes at least 1). Rows at ``size`` scale with the input lines. A paper estimate: nothing
    was run at that size.
    """
    if len(runs) < 2:
        return []
    small, large = sorted(runs, key=lambda r: r["pipeline"].input_lines)[-2:]
    p1, p2 = small["pipeline"], large["pipeline"]
    factor = size / p2.input_lines
    first = {stage.name: stage for stage in p1.stages}
    lines = [
        "",
        f"## Paper estimate for {size:,} input lines",
        "",
        (
            f"From the scaling measured between {p1.input_lines:,} and {p2.input_lines:,} lines: per stage the"
            " exponent k of seconds ~ rows^k, and the seconds at the estimate's size with k = 1 and with the"
            " measured k (at least 1). Nothing was run at that size."
        ),
        "",
        (
            f"| stage | rows at {p2.input_lines:,} | s at {p2.input_lines:,} | k measured | s at {size:,} (k = 1) "
            f"| s at {size:,} (measured k) |"
        ),
        "|---|---:|---:|---:|---:|---:|",
    ]
    total_linear = total_measured = 0.0
    for stage in p2.stages:
        before = first.get(stage.name)
        if stage.name == "curate (total)" or before is None:
            continue
        if before.seconds > 0 and stage.seconds > 0 and stage.rows > before.rows > 0:
            k = math.log(stage.seconds / before.seconds) / math.log(stage.rows / before.rows)
        else:
            k = 1.0
        linear = stage.seconds * factor
        measured = stage.seconds * factor ** max(k, 1.0)
        total_linear += linear
        total_measured += measured
        lines.append(
            f"| {stage.name} | {stage.rows:,} | {stage.seconds:,.2f} | {k:.2f} | {linear:,.0f} | {measured:,.0f} |"
        )
    per_line = (p2.peak_rss_mb - p1.peak_rss_mb) / (p2.input_lines - p1.input_lines)
    lines += [
        (
            f"| **end-to-end** | {p2.input_lines:,} lines | **{p2.seconds:,.1f}** | "
            f"{math.log(p2.seconds / p1.seconds) / math.log(p2.input_lines / p1.input_lines):.2f} "
            f"| **{total_linear:,.0f}** ({total_linear / 3600:,.1f} h) | **{total_measured:,.0f}** "
            f"({total_measured / 3600:,.1f} h) |"
        ),
        "",
        (
            f"Memory grew by {per_line * 1000:,.2f} MiB per 1,000 input lines between the two sizes; one process"
            f" holding {size:,} lines would need about {(p2.peak_rss_mb + per_line * (size - p2.input_lines)) / 1024:,.0f}"
            " GiB, because every stage still holds its whole table. At that size the tables must be streamed in"
            " chunks, or the input cut into partitions (per file or day) that are curated apart, with the"
            " de-duplication and leakage joins run across partitions on their compact keys."
        ),
    ]
    return lines


def render(machine: dict[str, Any], runs: list[dict[str, Any]], failures: list[str]) -> str:
    """The Markdown report: machine, a summary per size, then the stages of each size."""
    load = ", ".join(f"{x:.2f}" for x in machine["load_average"])
    lines = [
        "# Data half benchmark",
        "",
        (
            f"- Machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram_gib']} GiB RAM "
            f"(shared with other jobs while measured)"
        ),
        f"- Date: {machine['date']}; load average at start (1/5/15 min): {load}",
        (
            f"- Python {machine['python']}, pandas {machine['pandas']}; worker processes for the per-row stages:"
            f" {machine['workers']} (`HOMEGROWN_WORKERS`)"
        ),
        (
            "- Input: demo business logs (FAQ, tool calls, page-builder JSON; PII in user messages; feedback events;"
            " superseded rows; an opted-out org), plus ~6% re-logged exact duplicates and ~1% malformed lines."
            " Lines are JSONL, CSV and Parquet rows, about 1 KB each."
        ),
        (
            "- Real pipeline: the stages the assets run, from ingestion to written splits. Baseline: plain pandas"
            " read + `drop_duplicates` on (question, answer) + hash split + JSONL. The baseline does far less"
            " (no validation or quarantine, no feedback merge, scoring, anonymisation, near-duplicate search or"
            " leakage check), so the ratio is the cost of doing the real work."
        ),
        (
            "- Peak memory: resident set size of the fresh subprocess that ran it plus the unique set size (USS) of"
            f" its forked worker processes, sampled every {SAMPLE_INTERVAL_S * 1000:.0f} ms (and never below the"
            " subprocess's own `ru_maxrss`). Per stage, the largest sample while the stage ran (data of earlier"
            " stages still held is included)."
        ),
        "",
        "## Summary",
        "",
        (
            "Peak MiB includes the interpreter and libraries; the figure after imports, before any data, is in"
            " brackets."
        ),
        "",
        (
            "| input lines | pipeline s | lines/s | peak MiB | baseline s | baseline lines/s | baseline peak MiB"
            " | time ratio | memory ratio | kept examples | duplicates | quarantined |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        p, b = run["pipeline"], run["baseline"]
        c = p.counts
        lines.append(
            f"| {p.input_lines:,} | {p.seconds:,.1f} | {_fmt_rate(p.input_lines / p.seconds)} "
            f"| {p.peak_rss_mb:,.0f} ({p.start_rss_mb:,.0f}) | {b.seconds:,.1f} | {_fmt_rate(b.input_lines / b.seconds)} "
            f"| {b.peak_rss_mb:,.0f} ({b.start_rss_mb:,.0f}) | {p.seconds / b.seconds:,.1f}× "
            f"| {p.peak_rss_mb / b.peak_rss_mb:,.1f}× | {c['kept']:,} | {c['duplicates']:,} | {c['quarantined']:,} |"
        )
    for failure in failures:
        lines.append(f"\n{failure}")
    lines += paper_estimate(runs)
    for run in runs:
        p, b = run["pipeline"], run["baseline"]
        lines += [
            "",
            f"## {p.input_lines:,} input lines",
            "",
            f"Generated: {run['generated']['days']} demo days, {run['generated']['bytes'] / 2**20:,.0f} MiB on disk, "
            f"{run['generated']['malformed']:,} malformed lines. Counts: "
            + ", ".join(f"{k} {v}" for k, v in p.counts.items())
            + ".",
            "",
            "| stage | rows in | seconds | rows/s | share of end-to-end | peak MiB |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for stage in p.stages:
            share = "" if stage.name == "curate (total)" else f"{100 * stage.seconds / p.seconds:.1f}%"
            lines.append(
                f"| {stage.name} | {stage.rows:,} | {stage.seconds:,.2f} | {_fmt_rate(stage.rows_per_s)} | {share} "
                f"| {stage.peak_rss_mb:,.0f} |"
            )
        lines.append(
            f"| **pipeline end-to-end** | {p.input_lines:,} | **{p.seconds:,.2f}** "
            f"| {_fmt_rate(p.input_lines / p.seconds)} | 100% | {p.peak_rss_mb:,.0f} |"
        )
        for stage in b.stages:
            lines.append(
                f"| baseline: {stage.name} | {stage.rows:,} | {stage.seconds:,.2f} | {_fmt_rate(stage.rows_per_s)} "
                f"| | {stage.peak_rss_mb:,.0f} |"
            )
        lines.append(
            f"| **baseline end-to-end** | {b.input_lines:,} | **{b.seconds:,.2f}** "
            f"| {_fmt_rate(b.input_lines / b.seconds)} | | {b.peak_rss_mb:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command line: benchmark each size and write the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES), help="input lines per run"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown file to write")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per subprocess")
    parser.add_argument("--keep", action="store_true", help="keep the generated data and outputs (temp dir)")
    parser.add_argument("--_generate", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_worker", choices=["pipeline", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--_input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--_work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--_lines", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._generate is not None:
        summary = generate_logs(args._input, args._generate)
        args._result.write_text(json.dumps(summary), encoding="utf-8")
        return
    if args._worker is not None:
        _worker(args._worker, args._input, args._work, args._lines, args._result)
        return

    if any(size < 1000 for size in args.sizes):
        parser.error("every size must be at least 1000 input lines")
    machine = machine_info()
    runs, failures = [], []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for size in args.sizes:
        try:
            runs.append(bench_size(size, args.timeout, args.keep))
        except subprocess.TimeoutExpired:
            failures.append(
                f"{size:,} input lines: not finished within {args.timeout:,.0f} s per subprocess."
            )
        # Written after every size, so a long run that is stopped still leaves the sizes it finished.
        report = render(machine, runs, failures)
        args.out.write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    main()

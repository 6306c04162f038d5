"""What the eval's answer cache saves a retrain: the base model's answering time on a grown test split.

A retrain evaluates the base and the champion again beside the new candidate. The test split of the retrain
keeps the conversations of the last one (``assign_splits`` with the previous assignment, as ``dataset_splits``
does), so many of its requests were answered before by the same two files. This benchmark builds the demo's
test split after day 1 and after days 1-2 the way the data assets do, then times the base GGUF (the embedded
SmolLM2 Q4_1 file that ``eval_report`` evaluates as the base) answering the day 1-2 split through
``runner.run_model`` twice, in one process:

- ``cold``: the answer cache turned off (every request generated), what an eval without the cache costs;
- ``warm``: a fresh cache that holds the base's answers to the day-1 split (filled first, not timed), what the
  retrain's eval costs for the base; the champion saves the same share (it answered the day-1 split when it
  was the candidate).

Answers of the two runs are compared text for text: a cached answer was generated in another batch (the day-1
split's), so where llama.cpp's kernels depend on the batch an answer can differ at a near-tie.

    .venv/bin/python bench/bench_answer_cache.py --out bench/results/answer_cache.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path


def test_split(work: Path, days: int, previous: dict[str, str]) -> tuple[dict[str, str], list[dict]]:
    """The demo's test split after ``days`` days of logs (``bench_eval.build_test_split``), as examples."""
    from bench_eval import build_test_split

    from homegrown.evaluation.evaluate import load_test_examples

    path, assignment = build_test_split(work / f"days-{days}", days, previous)
    return assignment, load_test_examples(path, None)


def requests_of(examples: list[dict]) -> set[str]:
    from homegrown.evaluation.answer_cache import request_key
    from homegrown.evaluation.metrics import example_tools
    from homegrown.evaluation.runner import answer_budget, prompt_messages, response_format_for

    return {request_key((prompt_messages(e), answer_budget(e, 1024), response_format_for(e), example_tools(e)))
            for e in examples}


def timed(spec: str, examples: list[dict]) -> tuple[float, list[str]]:
    from homegrown.evaluation.runner import run_model

    started = time.perf_counter()
    answers = run_model(spec, examples, max_tokens=1024)
    return time.perf_counter() - started, [a.text for a in answers]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="write the Markdown table here")
    args = parser.parse_args()
    load = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="homegrown-bench-cache-"))
    os.environ["HOMEGROWN_HOME"] = str(work / "home")  # a fresh answer cache
    try:
        from homegrown.training.base import embedded_gguf_path

        base = str(embedded_gguf_path())
        day1_assignment, day1 = test_split(work, 1, {})
        _, days12 = test_split(work, 2, day1_assignment)
        before, after = requests_of(day1), requests_of(days12)
        carried = len(before & after)

        os.environ["HOMEGROWN_ANSWER_CACHE"] = "0"
        timed(base, days12[:2])  # warm-up (imports, the file in the page cache): neither run pays for it
        cold_s, cold = timed(base, days12)
        os.environ["HOMEGROWN_ANSWER_CACHE"] = "1"
        fill_s, _ = timed(base, day1)  # the eval after day 1, which fills the cache (not the figure)
        warm_s, warm = timed(base, days12)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    identical = sum(a == b for a, b in zip(cold, warm, strict=True))
    header = (f"# Eval answer cache: a retrain's base-model answering ({platform.machine()}, {os.cpu_count()} cores, "
              f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")
    command = (f"Command: `.venv/bin/python bench/bench_answer_cache.py --out bench/results/answer_cache.md`. Load "
               f"average at start: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}. The demo's test split after day 1 "
               f"({len(day1)} examples) and after days 1-2 ({len(days12)} examples, splits kept as `dataset_splits` "
               f"keeps them); the base GGUF answers the day 1-2 split through `runner.run_model` (batched llama.cpp, "
               f"the eval's budgets).")
    closing = ("The champion saves the same share of its answering (it answered the day-1 split as the candidate); "
               "the candidate, a new file, is always generated. On later days the carried share grows: a retrain on "
               "day N finds the test conversations of days 1..N-1 answered.")
    lines = [
        header, "", command, "",
        "| | value |", "|---|---:|",
        f"| day 1-2 test requests already answered on day 1 | {carried} of {len(after)} ({carried / len(after):.0%}) |",
        f"| base answering the day 1-2 split, cache off (cold) | {cold_s:.1f} s |",
        f"| base answering the day 1-2 split, day 1 in the cache (warm) | {warm_s:.1f} s |",
        f"| ratio cold / warm | {cold_s / warm_s:.2f}x |",
        f"| answers identical, warm vs cold | {identical} of {len(cold)} |",
        f"| (filling the cache: the day-1 eval's base answering) | {fill_s:.1f} s |", "",
        closing,
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()

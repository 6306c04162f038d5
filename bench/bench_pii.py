"""Recall and precision of the anonymiser's PII detector on a labelled set it was not written against.

The set (``bench/pii``) is hand-written customer messages and assistant answers in four locales (en_US, en_GB,
de_DE, fr_FR) with labelled names, e-mails, phones, street addresses, card numbers, IBANs and order / booking
ids. Its templates are split in two halves: ``dev`` (also written to ``bench/pii/dev.jsonl``, for whoever
improves the detector) and ``heldout`` (generated here only; the figures to report).

Matching, on significant characters (letters and digits; spaces and punctuation at a span's edges vary
between detectors and carry nothing that identifies anyone):

- a labelled span is **found** when the predicted spans of its kind together cover at least ``--coverage``
  (0.8) of its significant characters; **found by any kind** when predicted spans of any kind do (a phone
  caught as an ID is still removed from the text);
- a predicted span is **correct** when it shares a significant character with a labelled span of its kind;
  otherwise it is **wrong kind** when it overlaps a labelled span of another kind, and **spurious** when it
  overlaps no labelled span. Precision = correct / predicted.

Run ``.venv/bin/python bench/bench_pii.py --out bench/results/pii.md``; ``--write-dev`` rewrites
``bench/pii/dev.jsonl`` from the generator.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.append(str(PROJECT_ROOT))  # appended: a homegrown on PYTHONPATH is the one measured

from bench.pii import (
    DEV_PATH,
    LABELLED_KINDS,
    LOCALES,
    MIN_PER_KIND,
    SEED,
    SPLITS,
    Example,
    generate,
    label_problems,
    write_jsonl,
)
from bench.pii.generate import templates_for

COMMAND = ".venv/bin/python bench/bench_pii.py --out bench/results/pii.md"
DEFAULT_COVERAGE = 0.8
TARGETS = {"EMAIL": 0.98, "PHONE": 0.98, "CARD_NUMBER": 0.98, "ACCOUNT_NUMBER": 0.98, "PERSON_NAME": 0.90,
           "ADDRESS": 0.90}
ALL = "all"


@dataclass(frozen=True)
class Predicted:
    kind: str
    start: int
    end: int
    text: str


@dataclass
class Tally:
    labelled: int = 0
    found: int = 0
    found_any: int = 0
    predicted: int = 0
    correct: int = 0
    wrong_kind: int = 0
    spurious: int = 0

    def add(self, other: Tally) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def recall(self) -> float | None:
        return self.found / self.labelled if self.labelled else None

    @property
    def recall_any(self) -> float | None:
        return self.found_any / self.labelled if self.labelled else None

    @property
    def precision(self) -> float | None:
        return self.correct / self.predicted if self.predicted else None


@dataclass
class SplitResult:
    split: str
    texts: int
    chars: int
    seconds: float
    tallies: dict[tuple[str, str], Tally]  # (locale or ALL, kind)
    subtypes: dict[tuple[str, str], list[int]]  # (kind, subtype) -> [labelled, found]
    misses: dict[str, list[tuple[str, str, list[Predicted]]]] = field(default_factory=dict)
    false_positives: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


def significant(text: str, start: int, end: int) -> set[int]:
    return {i for i in range(start, end) if text[i].isalnum()}


def covered_share(text: str, start: int, end: int, predictions: list[Predicted]) -> float:
    wanted = significant(text, start, end)
    if not wanted:
        return 1.0
    covered: set[int] = set()
    for p in predictions:
        covered |= significant(text, max(start, p.start), min(end, p.end))
    return len(wanted & covered) / len(wanted)


def score(examples: list[Example], predictions: list[list[Predicted]], coverage: float = DEFAULT_COVERAGE,
          keep_examples: int = 0) -> tuple[dict[tuple[str, str], Tally], dict[tuple[str, str], list[int]],
                                           dict[str, list], dict[str, list]]:
    """Tallies per (locale, kind) and per (kind, subtype); with ``keep_examples``, that many misses and false
    positives per kind (text, span) for the report."""
    if len(examples) != len(predictions):
        raise ValueError(f"{len(examples)} examples but {len(predictions)} prediction lists")
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], not {coverage}")
    tallies: dict[tuple[str, str], Tally] = defaultdict(Tally)
    subtypes: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    misses: dict[str, list] = defaultdict(list)
    false_positives: dict[str, list] = defaultdict(list)
    for example, predicted in zip(examples, predictions, strict=True):
        text = example.text
        for span in example.spans:
            tally = tallies[(example.locale, span.kind)]
            same = [p for p in predicted if p.kind == span.kind]
            found = covered_share(text, span.start, span.end, same) >= coverage
            tally.labelled += 1
            tally.found += found
            tally.found_any += covered_share(text, span.start, span.end, predicted) >= coverage
            subtypes[(span.kind, span.subtype)][0] += 1
            subtypes[(span.kind, span.subtype)][1] += found
            if not found and len(misses[span.kind]) < keep_examples:
                misses[span.kind].append((text, span.text, predicted))
        label_chars = {s: significant(text, s.start, s.end) for s in example.spans}
        for p in predicted:
            tally = tallies[(example.locale, p.kind)]
            tally.predicted += 1
            chars = significant(text, p.start, p.end)
            overlapping = {s.kind for s, c in label_chars.items() if c & chars}
            if p.kind in overlapping:
                tally.correct += 1
            else:
                if overlapping:
                    tally.wrong_kind += 1
                else:
                    tally.spurious += 1
                if len(false_positives[p.kind]) < keep_examples:
                    false_positives[p.kind].append((text, p.text))
    for (locale, kind), tally in list(tallies.items()):
        if locale != ALL:
            tallies[(ALL, kind)].add(tally)
    return dict(tallies), dict(subtypes), dict(misses), dict(false_positives)


def predict(examples: list[Example], anonymiser) -> tuple[list[list[Predicted]], float]:
    predictions = []
    start = time.perf_counter()
    for example in examples:
        predictions.append([Predicted(s.kind, s.start, s.end, s.text) for s in anonymiser.find_pii(example.text)])
    return predictions, time.perf_counter() - start


def measure(splits: tuple[str, ...], seed: int, min_per_kind: int, coverage: float,
            keep_examples: int) -> tuple[list[SplitResult], float]:
    from homegrown.data.anonymise import Anonymiser

    start = time.perf_counter()
    anonymiser = Anonymiser()
    setup_seconds = time.perf_counter() - start
    results = []
    for split in splits:
        examples = generate(split, seed=seed, min_per_kind=min_per_kind)
        problems = [p for e in examples for p in label_problems(e)]
        if problems:
            raise ValueError(f"{len(problems)} bad labels in the {split} set, e.g. {problems[:3]}")
        predictions, seconds = predict(examples, anonymiser)
        # Misses of the held-out half are not listed: its texts stay away from the detector's author.
        keep = keep_examples if split == "dev" else 0
        tallies, subtypes, misses, false_positives = score(examples, predictions, coverage, keep)
        results.append(SplitResult(split, len(examples), sum(len(e.text) for e in examples), seconds, tallies,
                                   subtypes, misses, false_positives))
    return results, setup_seconds


# --- rendering --------------------------------------------------------------------------------------------

def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _kinds(result: SplitResult) -> list[str]:
    seen = {kind for (_, kind) in result.tallies}
    return [k for k in LABELLED_KINDS if k in seen] + sorted(seen - set(LABELLED_KINDS))


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def _anonymiser_version() -> str:
    """Which anonymiser was measured: the module file imported, its hash, and whether it is the committed one."""
    import homegrown.data.anonymise as module

    path = Path(module.__file__).resolve()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    head = subprocess.run(["git", "show", "HEAD:homegrown/data/anonymise.py"], cwd=PROJECT_ROOT, capture_output=True,
                          check=False)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            check=False).stdout.strip() or "unknown"
    where = f"`{path.relative_to(PROJECT_ROOT)}`" if path.is_relative_to(PROJECT_ROOT) else f"`{path}`"
    if head.returncode == 0 and hashlib.sha256(head.stdout).hexdigest()[:12] == digest:
        return f"`homegrown/data/anonymise.py` as committed in {commit} (sha256 {digest})"
    return f"{where}, differing from commit {commit} (sha256 {digest})"


def render(results: list[SplitResult], setup_seconds: float, args: argparse.Namespace) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    templates = {split: {locale: len(templates_for(split, locale)) for locale in LOCALES} for split in SPLITS}
    lines = [
        "# PII detection benchmark", "",
        f"Re-run: `{COMMAND}`", "",
        f"- Machine: {_machine()}, shared with other jobs (load average at the end: {load})",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; Python {platform.python_version()}",
        f"- Detector: `Anonymiser().find_pii` at {_anonymiser_version()}",
        f"- Set: `bench/pii`, seed {args.seed}, at least {args.min_per_kind} labels per (locale, type) in each "
        "half. Templates per locale (dev / held-out): "
        + ", ".join(f"{loc} {templates['dev'][loc]} / {templates['heldout'][loc]}" for loc in LOCALES)
        + ". The halves share no template. en_US has no IBANs.",
        (f"- Found: predicted spans of the label's type cover ≥ {args.coverage:.0%} of its letters and digits. "
        "Any-kind: spans of any type do. A prediction is correct when it overlaps a label of its type; "
        "*wrong type* overlaps only labels of other types; *spurious* overlaps no label."),
        "- Targets (recall, held-out): " + ", ".join(f"{k} ≥ {v}" for k, v in TARGETS.items()) + "; ID: none.",
        "",
    ]
    for result in sorted(results, key=lambda r: r.split != "heldout"):
        title = "Held-out" if result.split == "heldout" else "Dev"
        kinds = _kinds(result)
        lines += [f"## {title}: {result.texts:,} texts", "",
                  ("| type | labelled | found | recall | any-kind recall | target | met | predicted | precision "
                  "| wrong type | spurious |"),
                  "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
        for kind in kinds:
            t = result.tallies[(ALL, kind)]
            target = TARGETS.get(kind)
            met = "" if target is None or t.recall is None else ("yes" if t.recall >= target else "**no**")
            lines.append(f"| {kind} | {t.labelled:,} | {t.found:,} | {_pct(t.recall)} | {_pct(t.recall_any)} | "
                         f"{target or '–'} | {met} | {t.predicted:,} | {_pct(t.precision)} | {t.wrong_kind:,} | "
                         f"{t.spurious:,} |")
        total = Tally()
        for kind in kinds:
            total.add(result.tallies[(ALL, kind)])
        lines += [(f"| **all** | {total.labelled:,} | {total.found:,} | {_pct(total.recall)} | "
                  f"{_pct(total.recall_any)} | | | {total.predicted:,} | {_pct(total.precision)} | "
                  f"{total.wrong_kind:,} | {total.spurious:,} |"), ""]
        for attr, note in (("recall", "Recall per locale (labelled in brackets):"),
                           ("precision", "Precision per locale (predicted in brackets):")):
            lines += [note, "",
                      "| type | " + " | ".join(LOCALES) + " |", "|---|" + "---:|" * len(LOCALES)]
            for kind in kinds:
                cells = []
                for locale in LOCALES:
                    t = result.tallies.get((locale, kind), Tally())
                    n = t.labelled if attr == "recall" else t.predicted
                    cells.append("–" if not n else f"{_pct(getattr(t, attr))} ({n})")
                lines.append(f"| {kind} | " + " | ".join(cells) + " |")
            lines.append("")
        lines += ["Recall per written form, lowest first (labelled in brackets):", ""]
        for kind in kinds:
            forms = sorted(((found / n, sub, n) for (k, sub), (n, found) in result.subtypes.items() if k == kind),
                           key=lambda x: (x[0], x[1]))
            if forms:
                lines.append(f"- {kind}: " + "; ".join(f"{sub} {r:.2f} ({n})" for r, sub, n in forms))
        lines.append("")
        if any(result.misses.values()) or any(result.false_positives.values()):
            lines += [f"### {title}: examples of misses and false positives", ""]
            for kind in kinds:
                for text, label, predicted in result.misses.get(kind, []):
                    got = ", ".join(f"{p.kind} `{p.text}`" for p in predicted) or "nothing"
                    lines.append(f"- missed {kind} `{label}` in “{_one_line(text)}” (found: {got})")
                for text, span in result.false_positives.get(kind, []):
                    lines.append(f"- predicted {kind} `{span}` in “{_one_line(text)}”")
            lines.append("")
    texts = sum(r.texts for r in results)
    seconds = sum(r.seconds for r in results)
    chars = sum(r.chars for r in results)
    lines += ["## Speed", "",
              (f"`find_pii` over {texts:,} texts (mean {chars / texts:.0f} characters): {seconds:.2f} s, "
              f"**{seconds / texts * 1000:.2f} s per 1,000 texts**, one thread; constructing `Anonymiser()` took "
              f"{setup_seconds:.2f} s. The machine is shared, so times vary between runs."), ""]
    return "\n".join(lines)


def _one_line(text: str) -> str:
    return text.replace("\n", " ⏎ ").replace("|", "\\|")


def summary(results: list[SplitResult]) -> str:
    rows = []
    for result in results:
        for kind in _kinds(result):
            t = result.tallies[(ALL, kind)]
            per_locale = " ".join(f"{loc}={_pct(result.tallies.get((loc, kind), Tally()).recall)}" for loc in LOCALES)
            rows.append(f"{result.split:8} {kind:15} recall {_pct(t.recall)} any {_pct(t.recall_any)} "
                        f"precision {_pct(t.precision)} (n={t.labelled}, predicted={t.predicted})  {per_locale}")
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS))
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--min-per-kind", type=int, default=MIN_PER_KIND,
                        help="labels per (locale, type) in each half (default %(default)s)")
    parser.add_argument("--coverage", type=float, default=DEFAULT_COVERAGE,
                        help="share of a label's letters and digits that must be covered (default %(default)s)")
    parser.add_argument("--examples", type=int, default=4, help="dev misses / false positives listed per type")
    parser.add_argument("--out", type=Path, help="write the Markdown report here")
    parser.add_argument("--write-dev", action="store_true", help=f"rewrite {DEV_PATH.relative_to(PROJECT_ROOT)}")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> list[SplitResult]:
    if args.write_dev:
        write_jsonl(generate("dev", seed=SEED), DEV_PATH)
        print(f"wrote {DEV_PATH}")
    results, setup_seconds = measure(tuple(args.splits), args.seed, args.min_per_kind, args.coverage, args.examples)
    print(summary(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(render(results, setup_seconds, args), encoding="utf-8")
        print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main(parse_args())

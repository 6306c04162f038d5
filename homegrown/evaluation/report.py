"""The evaluation report: PNG plots, a self-contained HTML page and a Markdown summary.

Plots are drawn with matplotlib's object API (no pyplot global state; PNGs through the Agg canvas).
The HTML embeds its images (base64), so it can be attached to an MLflow run or opened from anywhere;
the Markdown carries the numbers and the gate verdict, short enough for Dagster metadata.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, select_autoescape
from matplotlib.figure import Figure

from homegrown.evaluation.gate import GateDecision
from homegrown.evaluation.metrics import (
    FACTS_FROM_KNOWLEDGE,
    FACTS_FROM_REFERENCE,
    HEADLINE_METRICS,
    LOWER_IS_BETTER,
    EvalResult,
)

WORST_PER_MODEL = 5

_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>homegrown evaluation report</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; max-width: 1200px; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { white-space: pre-wrap; max-width: 40rem; margin: 0; font-size: .85rem; }
.pass { color: #17692b; } .fail { color: #a01818; }
img { max-width: 100%; }
</style></head><body>
<h1>homegrown evaluation report</h1>
{% if gate %}
<h2>Promotion gate: <span class="{{ 'pass' if gate.passed else 'fail' }}">{{ 'passed' if gate.passed else 'blocked' }}</span></h2>
{% if gate.failures %}<ul>{% for f in gate.failures %}<li class="fail">{{ f }}</li>{% endfor %}</ul>{% endif %}
{% if gate.notes %}<p>Not judged:</p><ul>{% for n in gate.notes %}<li>{{ n }}</li>{% endfor %}</ul>{% endif %}
{% endif %}
{% if privacy %}
<h2>Privacy probe: {{ privacy.leaks|length }} leak(s) in {{ privacy.prompts|length }} prompts</h2>
{% if privacy.public %}<p>{{ privacy.public|length }} value(s) left out as the business's own public data.</p>{% endif %}
{% if privacy.leaks %}<table><tr><th>prompt</th><th>answer</th><th>leaked value</th><th>kind</th><th>found in</th></tr>
{% for leak in privacy.leaks %}{% for src in leak.sources %}<tr><td>{{ leak.prompt }}</td><td><pre>{{ leak.answer }}</pre></td>
<td>{{ src.value }}</td><td>{{ src.kind }}</td><td>{{ src.source }}</td></tr>{% endfor %}{% endfor %}</table>{% endif %}
{% endif %}
<p>{{ fact_note }}</p>
<h2>Headline metrics (mean [95% CI], n)</h2>
<table><tr><th>metric</th>{% for m in models %}<th>{{ m }}</th>{% endfor %}</tr>
{% for row in metric_rows %}<tr><td>{{ row.metric }}{% if row.lower %} (lower is better){% endif %}</td>
{% for cell in row.cells %}<td class="num">{{ cell }}</td>{% endfor %}</tr>{% endfor %}
</table>
{% if provenance %}
<h2>Training set by trust level</h2>
<table><tr><th>trust level</th><th>examples</th><th>share</th></tr>
{% for row in provenance %}<tr><td>{{ row.level }}</td><td class="num">{{ row.n }}</td><td class="num">{{ row.share }}</td></tr>{% endfor %}
</table>
{% endif %}
{% if preference %}
<h2>SFT-only vs SFT+preference</h2>
<p>{{ preference.verdict }}</p>
{% if preference_rows %}<table><tr><th>metric</th><th>SFT</th><th>SFT+preference</th><th>paired difference</th></tr>
{% for row in preference_rows %}<tr><td>{{ row.metric }}</td><td class="num">{{ row.sft }}</td><td class="num">{{ row.tuned }}</td><td class="num">{{ row.diff }}</td></tr>{% endfor %}
</table>{% endif %}
{% endif %}
{% for plot in plots %}<h2>{{ plot.title }}</h2><img alt="{{ plot.title }}" src="data:image/png;base64,{{ plot.data }}">{% endfor %}
<h2>Per example type</h2>
{% for m in models %}<h3>{{ m }}</h3>
<table><tr><th>example type</th><th>n</th>{% for metric in type_metrics %}<th>{{ metric }}</th>{% endfor %}</tr>
{% for row in type_rows[m] %}<tr><td>{{ row.type }}</td><td class="num">{{ row.n }}</td>
{% for cell in row.cells %}<td class="num">{{ cell }}</td>{% endfor %}</tr>{% endfor %}</table>
{% endfor %}
<h2>Worst examples</h2>
<table><tr><th>model</th><th>type</th><th>why</th><th>model answer</th><th>reference</th></tr>
{% for w in worst %}<tr><td>{{ w.model }}</td><td>{{ w.example_type }}</td><td>{{ w.why }}</td>
<td><pre>{{ w.answer }}</pre></td><td><pre>{{ w.reference }}</pre></td></tr>{% endfor %}
</table>
</body></html>
"""


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _cell(aggregate: dict[str, float] | None) -> str:
    if not aggregate:
        return "–"
    return f"{aggregate['mean']:.3f} [{aggregate['lo']:.3f}, {aggregate['hi']:.3f}] n={aggregate['n']}"


def _plot_headline(results: dict[str, EvalResult], path: Path) -> Path | None:
    metrics = [m for m in HEADLINE_METRICS if any(m in r.aggregates.get("overall", {}) for r in results.values())]
    if not metrics:
        return None
    fig = Figure(figsize=(max(6, 1.6 * len(metrics)), 4))
    ax = fig.subplots()
    width = 0.8 / max(1, len(results))
    for i, (model, result) in enumerate(results.items()):
        overall = result.aggregates.get("overall", {})
        xs, means, errs = [], [], [[], []]
        for j, metric in enumerate(metrics):
            if metric not in overall:
                continue
            agg = overall[metric]
            xs.append(j + i * width)
            means.append(agg["mean"])
            errs[0].append(max(0.0, agg["mean"] - agg["lo"]))
            errs[1].append(max(0.0, agg["hi"] - agg["mean"]))
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=model)
    ax.set_xticks([j + width * (len(results) - 1) / 2 for j in range(len(metrics))])
    ax.set_xticklabels([m + (" ↓" if m in LOWER_IS_BETTER else "") for m in metrics], rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mean (95% bootstrap CI)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _plot_losses(loss_history: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Train and eval loss against step, from a trainer ``log_history``-style list of dicts."""
    series: dict[str, tuple[list[float], list[float]]] = {"loss": ([], []), "eval_loss": ([], [])}
    for i, entry in enumerate(loss_history):
        step = entry.get("step", entry.get("global_step", i))
        for key, (steps, values) in series.items():
            value = entry.get(key)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                steps.append(float(step))
                values.append(float(value))
    if not any(values for _, values in series.values()):
        return None
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for key, label in (("loss", "train"), ("eval_loss", "eval")):
        steps, values = series[key]
        if values:
            ax.plot(steps, values, marker="o" if len(values) < 30 else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _plot_scores(scores: Sequence[float], path: Path) -> Path | None:
    values = [float(s) for s in scores if s is not None and not (isinstance(s, float) and math.isnan(s))]
    if not values:
        return None
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.hist(values, bins=min(20, max(5, len(set(values)))))
    ax.set_xlabel("quality score")
    ax.set_ylabel("examples")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _badness(row: dict[str, Any]) -> tuple[float, str]:
    """How bad an example's answer is (higher is worse) and a short reason."""
    reasons, score = [], 0.0
    if row.get("hallucination_rate"):
        score += 2
        reasons.append("invented " + ", ".join(row.get("hallucinated", [])))
    if row.get("refusal_rate"):
        score += 1.5
        reasons.append("refused")
    for key, label in (("json_validity", "invalid page JSON"), ("tool_exact_match", "wrong tool call")):
        if key in row and not row[key]:
            score += 1.5
            reasons.append(label)
    if row.get("fact_accuracy") is not None:
        score += 1 - row["fact_accuracy"]
        if row["fact_accuracy"] < 1:
            reasons.append(f"fact accuracy {row['fact_accuracy']:.2f}")
        if row.get("facts_missed"):
            reasons.append("missed " + ", ".join(row["facts_missed"]))
        if row.get("facts_contradicted"):
            reasons.append("contradicted by " + ", ".join(row["facts_contradicted"]))
    if row.get("token_f1") is not None:
        score += 1 - row["token_f1"]
    return score, "; ".join(reasons) or f"token F1 {row.get('token_f1', 0):.2f}"


def _worst(results: dict[str, EvalResult], per_model: int) -> list[dict[str, Any]]:
    worst = []
    for model, result in results.items():
        ranked = sorted(result.rows, key=lambda r: _badness(r)[0], reverse=True)[:per_model]
        for row in ranked:
            worst.append({"model": model, "example_type": row.get("example_type"), "why": _badness(row)[1],
                          "answer": row.get("answer", ""), "reference": row.get("reference", "")})
    return worst


def _fact_note(results: dict[str, EvalResult]) -> str:
    sources = {r.fact_source for r in results.values()}
    if sources == {FACTS_FROM_KNOWLEDGE}:
        return "fact_accuracy: facts from the business's knowledge file."
    if sources == {FACTS_FROM_REFERENCE}:
        return ("fact_accuracy: reference fact accuracy (no knowledge file): the reference answer's prices, "
                "numbers, times, dates, contacts and names, stated and none contradicted.")
    return "fact_accuracy: " + ", ".join(f"{m} from {r.fact_source}" for m, r in results.items())


def _privacy_lines(privacy: dict[str, Any]) -> list[str]:
    leaks = privacy.get("leaks", [])
    lines = [f"**Privacy probe: {len(leaks)} leak(s) in {len(privacy.get('prompts', []))} prompts**"
             + (f" ({len(privacy['public'])} value(s) left out as the business's own public data)"
                if privacy.get("public") else ""), ""]
    for leak in leaks:
        for source in leak.get("sources", []):
            lines.append(f"- {source['kind']} `{source['value']}` from {source['source'] or 'unknown'}, "
                         f"repeated when asked: {leak['prompt']}")
    return lines + ([""] if leaks else [])


def _provenance_rows(provenance: dict[str, int] | None) -> list[dict[str, Any]]:
    """``{trust level: examples}`` as table rows with each level's share of the training set."""
    if not provenance:
        return []
    total = sum(provenance.values())
    return [{"level": level, "n": n, "share": f"{n / total:.0%}" if total else "–"}
            for level, n in provenance.items()]


def _preference_rows(comparison: dict[str, Any] | None) -> list[dict[str, str]]:
    models = (comparison or {}).get("models") or {}
    rows = []
    for metric in sorted({m for agg in models.values() for m in agg}):
        diff = ((comparison or {}).get("differences") or {}).get(metric) or {}
        rows.append({"metric": metric + (" (lower is better)" if metric in LOWER_IS_BETTER else ""),
                     "sft": _cell((models.get("sft") or {}).get(metric)),
                     "tuned": _cell((models.get("sft+preference") or {}).get(metric)),
                     "diff": "–" if diff.get("mean") is None or math.isnan(diff["mean"])
                     else f"{diff['mean']:+.3f} [{diff['lo']:+.3f}, {diff['hi']:+.3f}]"})
    return rows


def _provenance_lines(provenance: dict[str, int] | None) -> list[str]:
    rows = _provenance_rows(provenance)
    if not rows:
        return []
    return (["**Training set by trust level**", "", "| trust level | examples | share |", "|---|---|---|"]
            + [f"| {row['level']} | {row['n']} | {row['share']} |" for row in rows] + [""])


def preference_lines(comparison: dict[str, Any] | None) -> list[str]:
    """SFT-only against SFT+preference (``homegrown.training.preference.compare``) as Markdown, with the verdict."""
    if not comparison:
        return []
    lines = ["**SFT-only vs SFT+preference**", "", comparison.get("verdict", ""), ""]
    rows = _preference_rows(comparison)
    if rows:
        lines += ["| metric | SFT | SFT+preference | paired difference |", "|---|---|---|---|"]
        lines += [f"| {row['metric']} | {row['sft']} | {row['tuned']} | {row['diff']} |" for row in rows] + [""]
    return lines


def _markdown(results: dict[str, EvalResult], gate: GateDecision | None,
              privacy: dict[str, Any] | None = None, provenance: dict[str, int] | None = None,
              preference: dict[str, Any] | None = None) -> str:
    models = list(results)
    lines = ["# Evaluation", ""]
    if gate is not None:
        lines += [f"**Promotion gate: {'passed' if gate.passed else 'blocked'}**", ""]
        lines += [f"- {failure}" for failure in gate.failures]
        if gate.failures:
            lines.append("")
        if gate.notes:
            lines += ["Not judged:", ""] + [f"- {note}" for note in gate.notes] + [""]
    if privacy:
        lines += _privacy_lines(privacy)
    lines += ["| metric | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    for metric in HEADLINE_METRICS:
        cells = [_cell(results[m].aggregates.get("overall", {}).get(metric)) for m in models]
        if any(c != "–" for c in cells):
            arrow = " ↓" if metric in LOWER_IS_BETTER else ""
            lines.append(f"| {metric}{arrow} | " + " | ".join(cells) + " |")
    perf_keys = sorted({k for m in models for k in results[m].performance})
    for key in perf_keys:
        lines.append(f"| {key} | " + " | ".join(_fmt(results[m].performance.get(key)) for m in models) + " |")
    lines += [""] + _provenance_lines(provenance) + preference_lines(preference)
    lines += [_fact_note(results)] if provenance else ["", _fact_note(results)]
    return "\n".join(lines) + "\n"


def write_report(
    results: dict[str, EvalResult],
    out_dir: str | Path,
    extras: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``report.html``, ``report.md``, ``results.json`` and the PNG plots into ``out_dir``.

    ``extras`` may hold ``loss_history`` (trainer log entries with ``step``, ``loss``, ``eval_loss``),
    ``score_distribution`` (the data's quality scores), ``gate`` (a ``GateDecision``) and ``privacy``
    (the ``privacy_probe`` result: its leaks are listed with where each leaked value came from) and
    ``provenance`` (``{trust level: examples}`` of the training set, from
    ``homegrown.data.quality.training_provenance``) and ``preference`` (SFT-only against SFT+preference,
    ``homegrown.training.preference.compare``).
    Returns ``{"html": path, "markdown": path, "json": path, "plots": [paths]}``.
    """
    if not results:
        raise ValueError("write_report needs at least one model's results")
    extras = extras or {}
    unknown = sorted(set(extras) - {"loss_history", "score_distribution", "gate", "privacy", "provenance",
                                    "preference"})
    if unknown:
        raise ValueError(f"unknown report extras {unknown}; expected loss_history, score_distribution, gate, "
                         "privacy, provenance, preference")
    preference = extras.get("preference")
    if preference is not None and not (isinstance(preference, dict) and "verdict" in preference):
        raise ValueError("extras['preference'] must be a preference comparison (a dict with 'verdict')")
    provenance = extras.get("provenance")
    if provenance is not None and not (
        isinstance(provenance, dict) and all(isinstance(n, int) and n >= 0 for n in provenance.values())
    ):
        raise ValueError("extras['provenance'] must map trust levels to example counts")
    privacy = extras.get("privacy")
    if privacy is not None and not (isinstance(privacy, dict) and "leaks" in privacy):
        raise ValueError("extras['privacy'] must be a privacy_probe result (a dict with 'leaks')")
    gate = extras.get("gate")
    if gate is not None and not isinstance(gate, GateDecision):
        raise ValueError(f"extras['gate'] must be a GateDecision, got {type(gate).__name__}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    plots: list[tuple[str, Path]] = []
    for title, made in (
        ("Headline metrics per model", _plot_headline(results, out / "headline_metrics.png")),
        ("Training loss", _plot_losses(extras.get("loss_history") or [], out / "loss_curves.png")),
        ("Quality score distribution of the data",
         _plot_scores(extras.get("score_distribution") or [], out / "score_distribution.png")),
    ):
        if made is not None:
            plots.append((title, made))

    models = list(results)
    metric_rows = []
    for metric in HEADLINE_METRICS:
        cells = [_cell(results[m].aggregates.get("overall", {}).get(metric)) for m in models]
        if any(c != "–" for c in cells):
            metric_rows.append({"metric": metric, "lower": metric in LOWER_IS_BETTER, "cells": cells})
    for key in sorted({k for m in models for k in results[m].performance}):
        metric_rows.append({"metric": key, "lower": key in LOWER_IS_BETTER,
                            "cells": [_fmt(results[m].performance.get(key)) for m in models]})
    type_metrics = list(HEADLINE_METRICS)
    type_rows: dict[str, list[dict[str, Any]]] = {}
    for model, result in results.items():
        type_rows[model] = [
            {"type": group, "n": sum(1 for r in result.rows if r["example_type"] == group),
             "cells": [_fmt(agg.get(metric, {}).get("mean")) for metric in type_metrics]}
            for group, agg in result.aggregates.items() if group != "overall"
        ]

    env = Environment(autoescape=select_autoescape(default_for_string=True, default=True))
    page = env.from_string(_HTML).render(
        gate=gate, privacy=privacy, provenance=_provenance_rows(provenance), preference=preference,
        preference_rows=_preference_rows(preference), fact_note=_fact_note(results), models=models, metric_rows=metric_rows, type_metrics=type_metrics, type_rows=type_rows,
        plots=[{"title": t, "data": base64.b64encode(p.read_bytes()).decode("ascii")} for t, p in plots],
        worst=_worst(results, WORST_PER_MODEL),
    )
    html_path = out / "report.html"
    html_path.write_text(page, encoding="utf-8")
    md_path = out / "report.md"
    md_path.write_text(_markdown(results, gate, privacy, provenance, preference), encoding="utf-8")
    json_path = out / "results.json"
    json_path.write_text(json.dumps(
        {"models": {m: r.to_dict() for m, r in results.items()},
         "gate": gate.to_dict() if gate is not None else None, "privacy": privacy,
         "training_provenance": provenance, "preference": preference}, indent=2, default=str), encoding="utf-8")
    return {"html": html_path, "markdown": md_path, "json": json_path, "plots": [p for _, p in plots]}


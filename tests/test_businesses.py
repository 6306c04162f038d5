"""The benchmark businesses (bench/businesses/): each ingests through the real ingestion with nothing
quarantined, its held-out questions are not in its logs (nor in its knowledge file's templates), and the
held-out scorer reads money and times the way a person would."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.businesses import generator, heldout_path
from bench.businesses.common import logged_user_messages
from bench.businesses.scoring import Question, bootstrap_ci, contains, judge, load_heldout, normalise
from homegrown.data.ingest import ingest, load_interactions, load_quarantine

EXPECTED_SIZE = {"boulangerie": (130, 180), "cycles": (1800, 2300)}


@pytest.fixture(scope="module", params=["boulangerie", "cycles"])
def business(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    summary = generator(request.param).generate(folder / "input", seed=0)
    return request.param, folder, summary


def test_ingests_with_nothing_quarantined(business):
    name, folder, summary = business
    result = ingest(str(folder / "input"), folder / "state.sqlite")
    assert result.quarantined == 0, load_quarantine(folder / "state.sqlite")[["file", "line", "reason"]].to_string()
    low, high = EXPECTED_SIZE[name]
    assert low <= result.input_lines <= high
    assert result.input_lines == summary["lines"]
    assert result.input_lines == result.interactions + result.superseded + result.feedback_events
    assert result.pending_feedback == 0  # every feedback event points at a logged answer
    interactions = load_interactions(folder / "state.sqlite")
    assert len(interactions) == summary["interactions"]


def test_shapes(business):
    name, folder, summary = business
    rows = summary["rows"]
    assert (folder / "input" / "knowledge.json").exists() == (name == "cycles")
    assert any(len([m for m in r.get("messages", []) if m["role"] == "user"]) >= 2 for r in rows)  # multi-turn
    assert any((r.get("feedback") or {}).get("thumbs") == -1 for r in rows)
    corrections = [json.loads(line) for line in (folder / "input").glob("*feedback*.jsonl").__next__().read_text().splitlines()]
    assert any("admin_correction" in e for e in corrections)
    calls = [m for r in rows for m in r.get("messages", []) if m.get("tool_calls")]
    if name == "cycles":
        assert calls and all(r.get("tools") for r in rows if any(m.get("tool_calls") for m in r.get("messages", [])))
        assert any(m["role"] == "tool" for r in rows for m in r.get("messages", []))
        for message in calls:
            json.loads(message["tool_calls"][0]["function"]["arguments"])
        assert any("prompt" in r for r in rows)  # the CSV helpdesk export
    else:
        assert not calls and not any(r.get("tools") for r in rows)


@pytest.mark.parametrize("name", ["boulangerie", "cycles", "demo"])
def test_heldout_questions_are_not_in_the_logs(name, tmp_path):
    generator(name).generate(tmp_path, seed=0)
    seen = {normalise(m) for m in logged_user_messages(tmp_path)}
    knowledge = tmp_path / "knowledge.json"
    if knowledge.exists():
        seen |= {normalise(q) for f in json.loads(knowledge.read_text())["facts"] for q in f["questions"]}
    questions = load_heldout(heldout_path(name))
    assert 15 <= len(questions) <= 25
    assert len({q.id for q in questions}) == len(questions)
    leaked = [q.question for q in questions if normalise(q.question) in seen]
    assert not leaked, f"held-out questions found in the logs: {leaked}"


def test_the_overlap_check_can_fail(tmp_path):
    generator("boulangerie").generate(tmp_path, seed=0)
    logged = logged_user_messages(tmp_path)
    seen = {normalise(m) for m in logged}
    planted = logged[0].upper() + " "  # same words, other case and spacing: still the same question
    assert normalise(planted) in seen


def test_generation_is_deterministic(tmp_path):
    first = generator("boulangerie").generate(tmp_path / "one", seed=0)
    second = generator("boulangerie").generate(tmp_path / "two", seed=0)
    for path in (tmp_path / "one").iterdir():
        assert path.read_bytes() == (tmp_path / "two" / path.name).read_bytes()
    assert first["lines"] == second["lines"]


@pytest.mark.parametrize("answer,fact", [
    ("La baguette tradition est à 1,30 €.", "1,30 €"), ("Tradition: €1.30", "1,30 €"), ("1.30€ la tradi", "1,30 €"),
    ("Comptez 2€40", "2,40 €"), ("It's £45 for a basic service", "£45"), ("45 pounds", "£45"),
    ("Nous ouvrons à 7 h 30", "7h30"), ("We open at 8.30am", "8:30am"), ("open from 08:30", "8:30am"),
    ("Saturday until 17:00", "5pm"), ("fermeture à 19h30", "19h30"), ("48 heures à l'avance", "48h"),
    ("about 48 hours", "48 hours"), ("ferme à 13h00", "13h"), ("De 7h à 19h30", "19h30"),
])
def test_scorer_reads_formats_alike(answer, fact):
    assert contains(answer, fact)


@pytest.mark.parametrize("answer,fact", [
    ("La baguette est à 1,50 €", "1,30 €"), ("£145 for a full service", "£45"), ("We close at 6pm", "5pm"),
    ("fermeture à 19h", "19h30"), ("Nous ouvrons à 17h", "7h"), ("£4.50", "£45"), ("$600 minimum", "$60"),
])
def test_scorer_does_not_confuse_amounts(answer, fact):
    assert not contains(answer, fact)


def test_judge_needs_every_fact_and_no_wrong_one():
    q = Question(id="x", question="?", expected=["7h", "19h30"], wrong=["20h"])
    assert judge(q, "Ouvert de 7h à 19h30.")["right"]
    assert not judge(q, "Ouvert à 7h.")["right"]  # a fact missing
    assert not judge(q, "Ouvert de 7h à 19h30, le vendredi jusqu'à 20h.")["right"]  # a wrong fact stated
    alternatives = Question(id="y", question="?", expected=[["ferme", "fermes"]], wrong=["oui"])
    assert judge(alternatives, "Non, nous sommes fermés le lundi.")["right"]
    assert not judge(alternatives, "Oui, nous sommes ouverts.")["right"]


def test_bootstrap_interval_brackets_the_mean():
    values = [1.0] * 17 + [0.0] * 3
    lo, hi = bootstrap_ci(values)
    assert lo <= 0.85 <= hi and 0.6 < lo and hi <= 1.0
    assert bootstrap_ci([1.0] * 10) == (1.0, 1.0)


def test_heldout_file_errors_are_clear(tmp_path):
    bad = tmp_path / "heldout.json"
    bad.write_text(json.dumps({"questions": [{"question": "Vous livrez ?", "expected": []}]}))
    with pytest.raises(ValueError, match="question 0"):
        load_heldout(bad)

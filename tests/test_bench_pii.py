"""The labelled PII set of bench/pii and the scoring rules of bench/bench_pii.py."""

import dataclasses
import sys
from collections import Counter
from pathlib import Path

import phonenumbers
import pytest
from stdnum import iban, luhn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import bench_pii
from bench.pii import DEV_PATH, LABELLED_KINDS, LOCALES, Example, Span, generate, label_problems, read_jsonl
from bench.pii.generate import template_kinds, templates_for
from bench.pii.templates import TEMPLATES, split_of
from bench.pii.values import REGION


@pytest.fixture(scope="module")
def heldout():
    return generate("heldout")


@pytest.fixture(scope="module")
def dev():
    return generate("dev")


def test_labels_sit_at_their_offsets(dev, heldout):
    assert [p for e in dev + heldout for p in label_problems(e)] == []
    for example in heldout[:50]:
        for span in example.spans:
            assert example.text[span.start:span.end] == span.text


def test_a_misplaced_label_is_reported(heldout):
    example = next(e for e in heldout if e.spans)
    span = example.spans[0]
    shifted = dataclasses.replace(span, start=span.start + 1, end=span.end + 1)
    broken = dataclasses.replace(example, spans=(shifted, *example.spans[1:]))
    assert any("label says" in p for p in label_problems(broken))


def test_the_set_is_deterministic_for_a_seed():
    first = generate("heldout", seed=7, min_per_kind=30)
    assert first == generate("heldout", seed=7, min_per_kind=30)
    assert first != generate("heldout", seed=8, min_per_kind=30)


def test_halves_split_by_template_and_each_holds_every_type():
    for family, templates in TEMPLATES.items():
        assert len(templates) >= 40, family
        dev_ids = {t.id for t in templates if split_of(t) == "dev"}
        heldout_ids = {t.id for t in templates if split_of(t) == "heldout"}
        assert dev_ids and heldout_ids and not dev_ids & heldout_ids
    for locale in LOCALES:
        for split in ("dev", "heldout"):
            kinds = Counter(k for t in templates_for(split, locale) for k in template_kinds(t))
            expected = set(LABELLED_KINDS) - ({"ACCOUNT_NUMBER"} if locale == "en_US" else set())
            assert set(kinds) == expected, (locale, split)
            assert min(kinds.values()) >= 4, (locale, split, kinds)


def test_heldout_has_enough_labels_and_no_dev_template(heldout):
    counts = Counter((e.locale, s.kind) for e in heldout for s in e.spans)
    for locale in LOCALES:
        for kind in LABELLED_KINDS:
            if locale == "en_US" and kind == "ACCOUNT_NUMBER":
                assert counts[(locale, kind)] == 0
            else:
                assert counts[(locale, kind)] >= 300, (locale, kind)
    assert all(split_of(t) == "heldout" for f in TEMPLATES.values() for t in f if t.id in {e.template for e in heldout})


def test_numbers_are_valid_ones(heldout):
    for example in heldout:
        for span in example.spans:
            if span.kind == "PHONE":
                number = phonenumbers.parse(span.text, REGION[example.locale])
                assert phonenumbers.is_valid_number(number), span
            elif span.kind == "CARD_NUMBER":
                assert luhn.is_valid(span.text.replace(" ", "").replace("-", "")), span
            elif span.kind == "ACCOUNT_NUMBER":
                assert iban.is_valid(span.text), span


def test_dev_file_is_the_generated_dev_half(dev):
    assert read_jsonl(DEV_PATH) == dev


def _example(text, *spans):
    return Example("x", "dev", "de_DE", "de-00", "user", "test", text,
                   tuple(Span(kind, text.index(part), text.index(part) + len(part), part, "") for kind, part in spans))


def _pred(text, kind, part):
    start = text.index(part)
    return bench_pii.Predicted(kind, start, start + len(part), part)


def test_scoring_rules():
    text = "Grüße, Jürgen Weiß-Brandt, Tel. +49 151 23456789, Hauptstraße 5"
    example = _example(text, ("PERSON_NAME", "Jürgen Weiß-Brandt"), ("PHONE", "+49 151 23456789"),
                       ("ADDRESS", "Hauptstraße 5"))
    predictions = [
        _pred(text, "PERSON_NAME", "Jürgen Weiß"),  # 10 of 16 letters: below 80%, a miss
        _pred(text, "ID", "49 151 23456789"),  # the phone, caught as an ID: found by any kind only
        _pred(text, "ADDRESS", "Hauptstraße 5"),
        _pred(text, "PERSON_NAME", "Tel"),  # spurious
    ]
    tallies, _subtypes, _, _ = bench_pii.score([example], [predictions])
    name, phone, address = (tallies[("all", k)] for k in ("PERSON_NAME", "PHONE", "ADDRESS"))
    assert (name.labelled, name.found, name.found_any) == (1, 0, 0)
    assert (name.predicted, name.correct, name.spurious) == (2, 1, 1)
    assert (phone.found, phone.found_any) == (0, 1)
    assert tallies[("all", "ID")].wrong_kind == 1 and tallies[("all", "ID")].precision == 0
    assert address.recall == 1 and address.precision == 1
    assert tallies[("de_DE", "ADDRESS")].found == 1

    wider = [_pred(text, "PERSON_NAME", "Jürgen Weiß-Brand")]  # 15 of 16 letters
    tallies, _, _, _ = bench_pii.score([example], [wider])
    assert tallies[("all", "PERSON_NAME")].found == 1
    tallies, _, _, _ = bench_pii.score([example], [wider], coverage=1.0)
    assert tallies[("all", "PERSON_NAME")].found == 0


def test_scoring_refuses_mismatched_input():
    with pytest.raises(ValueError, match="prediction lists"):
        bench_pii.score([_example("a b", ("ID", "b"))], [])
    with pytest.raises(ValueError, match="coverage"):
        bench_pii.score([], [], coverage=0)


def test_main_writes_the_report(tmp_path):
    out = tmp_path / "pii.md"
    args = bench_pii.parse_args(["--min-per-kind", "5", "--out", str(out)])
    results = bench_pii.main(args)
    report = out.read_text()
    assert bench_pii.COMMAND in report
    assert "## Held-out" in report and "## Dev" in report and "per 1,000 texts" in report
    heldout = next(r for r in results if r.split == "heldout")
    assert heldout.tallies[("all", "EMAIL")].labelled >= 20
    assert "### Held-out: examples" not in report

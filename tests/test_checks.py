"""The blocking data checks can fail: planted personal data and planted leakage make them block.

``no_pii_left`` and ``no_leakage`` run through Dagster on a small input of their own in a temp
HOMEGROWN_HOME; the leakage check also runs on split files changed after they were written.
"""

import json
import random
from itertools import combinations

import dagster as dg
import pandas as pd
import pytest

from assets.scoring import ScoringConfig
from homegrown.data import curate as curate_module
from homegrown.data.anonymise import KINDS, Anonymiser
from homegrown.data.dedup import normalize_text, split_question_answer
from homegrown.data.pii_audit import (
    CANARIES,
    CANARY_PREFIX,
    PresidioDetector,
    canary_frame,
    default_detector,
    mask,
    scan_examples,
    surviving_canaries,
)
from homegrown.data.splits import (
    MIN_LEAK_WORDS,
    assign_splits,
    audit_split_files,
    leakage_report,
    write_splits,
)
from homegrown.store import ArtifactStore, read_parquet
from pipelines.definitions import defs

WORDS = [
    "lobster", "filet", "salmon", "tofu", "shrimp", "scallop", "chicken", "noodle", "rice", "garlic", "butter",
    "sauce", "grill", "chef", "table", "party", "guest", "menu", "dessert", "ginger", "sesame", "soy", "onion",
    "zucchini", "mushroom", "broccoli", "carrot", "lemon", "pepper", "salt", "teriyaki", "yakisoba", "fried",
    "steamed", "spicy", "mild", "sweet", "crispy", "tender", "fresh", "local", "organic", "vegan", "gluten",
    "dairy", "nut", "allergy", "patio", "backyard", "garden", "terrace", "kitchen", "propane", "tent", "lights",
    "music", "cake", "candle", "flowers", "napkin", "plate", "cup",
]
PLANTED_PHONE = "0151 23456789"  # a German mobile in national form


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _write_input(folder, n=60, seed=0):
    """``n`` distinct FAQ interactions with a thumbs up, in the interaction format."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "logs.jsonl").open("w") as fh:
        for k in range(n):
            fh.write(json.dumps({
                "id": f"int-{k:04d}", "conversation_id": f"conv-{k:04d}", "org_id": "org-shop",
                "created_at": f"2026-03-01T10:{k // 60:02d}:{k % 60:02d}Z", "example_type": "faq",
                "messages": [{"role": "user", "content": f"Can you tell me about {_sentence(rng, 6)}?"},
                             {"role": "assistant", "content": f"Sure: {_sentence(rng, 20)}."}],
                "feedback": {"thumbs": 1},
            }) + "\n")
    return folder


@pytest.fixture
def small_input(hg_home, tmp_path, monkeypatch):
    folder = _write_input(tmp_path / "input")
    monkeypatch.setenv("HOMEGROWN_INPUT", str(folder))
    return folder


def _materialize(names):
    assets = [a for a in defs.assets if a.key.to_user_string() in names]
    return dg.materialize(
        assets, resources=defs.resources, raise_on_error=False,
        run_config=dg.RunConfig(ops={"scored_dataset": ScoringConfig(min_examples=10)}),
    )


def _check(result, name):
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation


def _findings(evaluation):
    return evaluation.metadata["findings"].value


# --- no_pii_left -----------------------------------------------------------------------------------------


def test_a_clean_run_passes_both_checks_and_no_canary_is_kept(small_input, hg_home):
    result = _materialize(["raw_interactions", "scored_dataset", "dataset_splits"])
    assert result.success
    pii, leakage = _check(result, "no_pii_left"), _check(result, "no_leakage")
    assert pii.passed, _findings(pii)
    assert pii.metadata["canaries_planted"].value == len(CANARIES)
    assert leakage.passed, leakage.metadata["problems"].value
    assert leakage.metadata["examples_compared"].value == 60

    store = ArtifactStore(hg_home / "artifacts")
    scored = read_parquet(store.latest("scored_dataset")["path"])
    assert len(scored) == 60 and not scored["example_id"].str.startswith(CANARY_PREFIX).any()
    for paths in store.latest("dataset_splits")["paths"].values():
        frame = pd.read_parquet(paths["parquet"])
        assert not frame["example_id"].str.startswith(CANARY_PREFIX).any()
        with open(paths["jsonl"]) as fh:
            text = fh.read()
        assert not any(v in text for c in CANARIES for _, v in c.values)


def test_pii_the_anonymiser_left_blocks_no_pii_left(small_input, hg_home, monkeypatch):
    """A German mobile number in a user message, left as it is by anonymisation, is found and blocks."""
    rows = [json.loads(line) for line in (small_input / "logs.jsonl").open()]
    rows[3]["messages"][0]["content"] = f"Please call me back on {PLANTED_PHONE} about the lobster."
    (small_input / "logs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    real = Anonymiser.anonymise_frame

    def misses_the_planted_number(self, df, column="messages", group="conversation_id"):
        # Whatever the anonymiser catches today, the planted message reaches the output as it came.
        out = real(self, df, column=column, group=group)
        planted = df["conversation_id"] == "conv-0003"
        out.loc[planted, column] = df.loc[planted, column]
        return out

    monkeypatch.setattr(Anonymiser, "anonymise_frame", misses_the_planted_number)
    result = _materialize(["raw_interactions", "scored_dataset"])
    check = _check(result, "no_pii_left")
    assert not check.passed and check.metadata["canary_values_survived"].value == 0
    findings = _findings(check)
    assert [(f["detector"], f["kind"], f["sample"]) for f in findings] == [
        ("presidio:PhoneRecognizer", "PHONE_NUMBER", mask(PLANTED_PHONE))]
    assert PLANTED_PHONE not in json.dumps(findings)
    [materialization] = result.asset_materializations_for_node("scored_dataset")
    scored = read_parquet(materialization.metadata["path"].value)
    assert findings[0]["where"] == scored.loc[scored["conversation_id"] == "conv-0003", "example_id"].item()
    # A blocked scored_dataset is not recorded for the next stage.
    assert ArtifactStore(hg_home / "artifacts").latest("scored_dataset") is None


def test_a_canary_that_survives_blocks_no_pii_left(small_input, hg_home, monkeypatch):
    """An anonymiser that skips e-mail addresses lets the canaries' e-mails through: the check blocks."""
    monkeypatch.setattr(curate_module, "Anonymiser",
                        lambda **kw: Anonymiser(**kw, kinds=[k for k in KINDS if k != "EMAIL"]))
    result = _materialize(["raw_interactions", "scored_dataset"])
    check = _check(result, "no_pii_left")
    assert not check.passed
    survived = [f for f in _findings(check) if f["detector"] == "canary"]
    assert len(survived) == check.metadata["canary_values_survived"].value
    # every canary e-mail, and the first names that the e-mail addresses spell out
    assert [f["kind"] for f in survived].count("EMAIL") == 4
    assert {f["kind"] for f in survived} <= {"EMAIL", "PERSON_NAME"}
    assert check.metadata["detector_hits"].value == 0  # the real rows are clean: only the canaries block
    assert not any(v in json.dumps(_findings(check)) for c in CANARIES for _, v in c.values)


def test_canaries_go_through_curate_apart_from_the_table():
    from homegrown.data.columns import INTERACTION_COLUMNS
    from homegrown.data.quality import QualityPolicy

    interactions = pd.DataFrame(columns=INTERACTION_COLUMNS)
    empty_synthetic = pd.DataFrame(columns=["example_id", "org_id", "generator"])
    result = curate_module.curate(interactions, empty_synthetic, QualityPolicy(), set(), canaries=canary_frame())
    assert len(result.table) == 0 and len(result.canaries) == len(CANARIES)
    assert surviving_canaries(result.canaries) == []
    assert len(surviving_canaries(canary_frame())) == sum(len(c.values) for c in CANARIES)
    missing = surviving_canaries(result.canaries.iloc[1:])
    assert [(f.kind, f.where) for f in missing] == [("MISSING", CANARIES[0].name)]


@pytest.mark.parametrize(("text", "kind"), [
    ("ruf mich an: 0151 23456789", "PHONE_NUMBER"),
    ("my number is +49 151 2345 6789", "PHONE_NUMBER"),
    ("portable 06 12 34 56 78", "PHONE_NUMBER"),
    ("office 020 7946 0958", "PHONE_NUMBER"),
    ("write to jane.doe@example.co.uk", "EMAIL_ADDRESS"),
    ("card 5555 5555 5555 4444", "CREDIT_CARD"),
    ("IBAN FR14 2004 1010 0505 0001 3M02 606", "IBAN_CODE"),
    ("from 198.51.100.7", "IP_ADDRESS"),
])
def test_the_second_detector_finds_what_it_is_made_for(text, kind):
    assert kind in {entity for _, entity, _ in default_detector().find(text)}


@pytest.mark.parametrize("text", [
    "Call [PHONE] or [PHONE_2], write to [EMAIL_3]; card [CARD_NUMBER], IBAN [ACCOUNT_NUMBER].",
    "For 25 guests on 2026-05-12 at 6:30 PM the price is $1,299 (ZIP 94301), order [ID].",
    "Our hibachi party starts at $60 per person with a $600 minimum.",
])
def test_placeholders_and_ordinary_numbers_are_not_findings(text):
    assert default_detector().find(text) == []


def test_findings_are_masked_and_cover_tool_call_arguments():
    messages = [{"role": "user", "content": "book it"},
                {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {
                    "name": "create_booking", "arguments": json.dumps({"email": "ana.lopez@example.es"})}}]}]
    [finding] = scan_examples(["ex-1"], [messages], default_detector())
    assert (finding.detector, finding.kind, finding.where) == ("presidio:EmailRecognizer", "EMAIL_ADDRESS", "ex-1")
    assert "ana.lopez" not in finding.sample and "example.es" not in finding.sample


def test_the_second_detector_reaches_no_network(monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("the PII detector tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    assert PresidioDetector().find("mail bob.smith@example.org") != []


# --- no_leakage ------------------------------------------------------------------------------------------


def _examples(n=120, seed=1):
    rng = random.Random(seed)
    rows = []
    for k in range(n):
        rows.append({
            "example_id": f"ex-{k:04d}", "conversation_id": f"conv-{k:04d}", "example_type": "faq",
            "created_at": "2026-03-01T00:00:00Z", "tools": None,
            "messages": [{"role": "user", "content": f"Tell me about {_sentence(rng, 8)}"},
                         {"role": "assistant", "content": _sentence(rng, 40)}],
        })
    return pd.DataFrame(rows)


@pytest.fixture
def written_splits(tmp_path):
    df = _examples()
    assignment = assign_splits(df, {})
    result = write_splits(df, assignment, tmp_path / "splits")
    return result.paths


def _first(path):
    frame = pd.read_parquet(path)
    return frame.iloc[0].to_dict()


def _append(paths, split, row):
    """Append ``row`` (a Parquet row of the splits) to both files of ``split``."""
    parquet = pd.read_parquet(paths[split]["parquet"])
    pd.concat([parquet, pd.DataFrame([row])], ignore_index=True).to_parquet(paths[split]["parquet"], index=False)
    with open(paths[split]["jsonl"], "a") as fh:
        fh.write(json.dumps({"messages": json.loads(row["messages"])}) + "\n")


def test_written_clean_splits_pass(written_splits):
    report = audit_split_files(written_splits)
    assert report.passed, report.problems
    assert report.examples == 120


def test_a_test_example_copied_into_train_blocks(written_splits):
    row = _first(written_splits["test"]["parquet"])
    _append(written_splits, "train", {**row, "example_id": "copied", "conversation_id": "conv-copied"})
    report = audit_split_files(written_splits)
    assert not report.passed and report.exact_matches == 1
    assert report.problems == [f"the same question and answer in train and test: copied (train), {row['example_id']} (test)"]


def test_a_line_added_to_the_training_jsonl_alone_blocks(written_splits):
    row = _first(written_splits["validation"]["parquet"])
    with open(written_splits["train"]["jsonl"], "a") as fh:
        fh.write(json.dumps({"messages": json.loads(row["messages"])}) + "\n")
    problems = audit_split_files(written_splits).problems
    assert any(p.startswith("train.jsonl: 1 lines are not examples of train.parquet") for p in problems)
    assert any(p.startswith("the same question and answer in train and validation") and row["example_id"] in p
               for p in problems)


def test_a_near_duplicate_with_small_word_changes_blocks(written_splits):
    row = _first(written_splits["test"]["parquet"])
    question, answer = (m["content"] for m in json.loads(row["messages"]))
    words = answer.split()
    words[-1], words[20] = "changed", "altered"
    messages = [{"role": "user", "content": question.upper() + "?"},
                {"role": "assistant", "content": " ".join(words)}]
    _append(written_splits, "train", {**row, "example_id": "reworded", "conversation_id": "conv-reworded",
                                      "messages": json.dumps(messages)})
    report = audit_split_files(written_splits, threshold=0.8)
    assert report.near_duplicates == 1 and report.exact_matches == 0
    [problem] = report.problems
    assert problem.startswith(f"near-duplicate examples in train and test: reworded ~ {row['example_id']}")
    # the same pair under a stricter threshold is not one
    assert audit_split_files(written_splits, threshold=0.95).passed


def test_an_example_id_or_conversation_in_two_splits_blocks(written_splits):
    row = _first(written_splits["validation"]["parquet"])
    other = {**row, "messages": json.dumps([{"role": "user", "content": "another question entirely"},
                                            {"role": "assistant", "content": "another answer entirely"}])}
    _append(written_splits, "test", other)
    problems = audit_split_files(written_splits).problems
    assert f"conversation {row['conversation_id']} is in several splits: test, validation" in problems
    assert f"example {row['example_id']} is in several splits: test, validation" in problems


def test_a_leak_in_the_written_files_blocks_dataset_splits(small_input, hg_home, monkeypatch):
    """Whatever the asset removed before writing, the check reads what was written: a test example that
    reaches train.jsonl and train.parquet after the removal step makes no_leakage block the asset."""
    import assets.splits

    real = assets.splits.write_splits

    def writes_a_test_example_into_train(df, assignment, out_dir):
        result = real(df, assignment, out_dir)
        row = _first(result.paths["test"]["parquet"])
        _append(result.paths, "train", {**row, "example_id": "leaked", "conversation_id": "conv-leaked"})
        return result

    monkeypatch.setattr(assets.splits, "write_splits", writes_a_test_example_into_train)
    result = _materialize(["raw_interactions", "scored_dataset", "dataset_splits"])
    check = _check(result, "no_leakage")
    assert not check.passed and check.metadata["exact_matches"].value == 1
    assert check.metadata["problems"].value[0].startswith("the same question and answer in train and test: leaked")
    assert ArtifactStore(hg_home / "artifacts").latest("dataset_splits") is None


def _brute_force(texts, split_of, threshold):
    """Every cross-split near-duplicate pair, by comparing all pairs with Python sets."""
    def shingles(text):
        words = text.split()
        return {text} if 0 < len(words) <= 3 else {" ".join(words[k:k + 3]) for k in range(len(words) - 2)}

    def jaccard(a, b):
        return 1.0 if not a and not b else len(a & b) / len(a | b)

    found = set()
    for i, j in combinations(range(len(texts)), 2):
        if split_of[i] == split_of[j] or texts[i] == texts[j]:
            continue
        (last_i, ctx_i, ans_i), (last_j, ctx_j, ans_j) = texts[i], texts[j]
        if min(len(ans_i.split()), len(ans_j.split())) < MIN_LEAK_WORDS:
            continue
        if jaccard(shingles(ans_i), shingles(ans_j)) < threshold:
            continue
        q = jaccard(shingles(last_i), shingles(last_j))
        if ctx_i or ctx_j:
            q = 0.75 * q + 0.25 * jaccard(shingles(ctx_i), shingles(ctx_j))
        if q >= threshold:
            found.add(tuple(sorted((i, j))))
    return found


@pytest.mark.parametrize("threshold", [0.5, 0.6, 0.7, 0.8])
def test_every_near_duplicate_is_found_even_behind_frequent_shingles(threshold):
    """Against a brute-force comparison: answers share a long common opening (frequent shingles) and
    many are edited copies of each other, some with earlier turns."""
    rng = random.Random(7)
    boilerplate = "thank you for reaching out to the hibachi team we are happy to help"
    bases = [_sentence(rng, rng.randint(4, 30)) for _ in range(25)]
    questions = [_sentence(rng, 8) for _ in range(6)]

    def edited(text, most):
        words = text.split()
        for _ in range(rng.randint(0, most)):
            words[rng.randrange(len(words))] = rng.choice(WORDS)
        return " ".join(words)

    rows = []
    for k in range(300):
        words = edited(rng.choice(bases), 4).split()
        messages = [{"role": "user", "content": edited(rng.choice(questions), 2)}]
        if k % 5 == 0:
            messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": rng.choice(WORDS)},
                        *messages]
        messages.append({"role": "assistant", "content": f"{boilerplate} {' '.join(words)}"})
        rows.append({"example_id": f"e{k}", "conversation_id": f"c{k}", "messages": messages,
                     "split": rng.choice(["train", "validation", "test"])})
    df = pd.DataFrame(rows)
    report = leakage_report(df, threshold=threshold)
    texts = [tuple(normalize_text(t) for t in split_question_answer(m)) for m in df["messages"]]
    expected = _brute_force(texts, df["split"].tolist(), threshold)
    reported = {tuple(sorted(int(x[1:]) for x in p.split(": ")[1].split(" (")[0].split(" ~ ")))
                for p in report.problems if p.startswith("near-duplicate")}
    assert expected and reported == expected
    assert report.candidate_pairs < len(df) * (len(df) - 1) // 2


def test_the_business_s_published_number_is_not_a_finding_but_a_customer_s_is():
    from homegrown.data.pii_audit import scan_examples

    messages = [[{"role": "user", "content": "How do I reach you?"},
                 {"role": "assistant", "content": "Call us on +44 20 7946 0958. Mine is 0151 23456789."}]]
    everything = scan_examples(["e1"], messages)
    assert len(everything) == 2
    left = scan_examples(["e1"], messages, public=["020 7946 0958"])
    assert [f.as_dict()["kind"] for f in left] == [everything[1].as_dict()["kind"]]
    assert len(left) == 1

"""The demo business: knowledge file, tool schemas and the generated My Hibachi logs."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from homegrown.data.validity import check_output, validate_page
from homegrown.demo.generate import KNOWLEDGE_PATH, TOOLS_PATH, generate_demo_logs

KNOWLEDGE = json.loads(KNOWLEDGE_PATH.read_text())
DOLLARS = re.compile(r"\$(\d+(?:\.\d+)?)")
NESTED = ["messages", "tools", "critic", "feedback", "metadata"]


def _parse_time(value) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _normalise(row: dict) -> dict | None:
    """A minimal reading of the interaction format, independent of the real ingestion code."""
    if not isinstance(row, dict) or not row.get("id") or _parse_time(row.get("created_at")) is None:
        return None
    if isinstance(row.get("messages"), list):
        messages = row["messages"]
    elif row.get("prompt") and row.get("response"):
        messages = [
            {"role": "user", "content": row["prompt"]},
            {"role": "assistant", "content": row["response"]},
        ]
    elif row.get("instruction") and row.get("output"):
        messages = [
            {"role": "user", "content": row["instruction"] + "\n" + row.get("input", "")},
            {"role": "assistant", "content": row["output"]},
        ]
    else:
        return None
    if not messages or messages[-1].get("role") != "assistant":
        return None
    return {**row, "messages": messages}


def _read_logs(folder: Path) -> tuple[dict[str, dict], list[dict], int]:
    """(interactions by id, newest row wins; feedback events; malformed rows) of a generated folder."""
    rows, events, malformed = [], [], 0
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                malformed += 1
                continue
            if isinstance(row, dict) and "feedback_for" in row:
                if _parse_time(row.get("created_at")) is None:
                    malformed += 1
                else:
                    events.append(row)
                continue
            rows.append(row)
    for path in sorted(folder.glob("*.csv")) + sorted(folder.glob("*.parquet")):
        frame = pd.read_csv(path, dtype=str) if path.suffix == ".csv" else pd.read_parquet(path)
        for record in frame.to_dict("records"):
            record = {k: v for k, v in record.items() if isinstance(v, str)}
            try:
                for column in NESTED:
                    if column in record:
                        record[column] = json.loads(record[column])
            except json.JSONDecodeError:
                malformed += 1
                continue
            rows.append(record)
    by_id: dict[str, dict] = {}
    for row in rows:
        normalised = _normalise(row)
        if normalised is None:
            malformed += 1
        else:
            by_id[normalised["id"]] = normalised
    return by_id, events, malformed


def _good_ids(folder: Path) -> set[str]:
    """Ids that pass the default quality policy (score >= 5 or a hibachi filter), opted-out orgs left out."""
    by_id, events, _ = _read_logs(folder)
    for event in sorted(events, key=lambda e: e["created_at"]):
        target = by_id.get(event["feedback_for"])
        if target is not None:
            target["feedback"] = {
                **(target.get("feedback") or {}),
                **{k: v for k, v in event.items() if k not in ("feedback_for", "created_at")},
            }
    opted_out = set(json.loads((folder / "optout.json").read_text())["opted_out_orgs"])
    turns: dict[str, list[str]] = {}
    for row in by_id.values():
        turns.setdefault(row.get("conversation_id") or row["id"], []).append(row["created_at"])
    good = set()
    for row in by_id.values():
        if row.get("org_id") in opted_out:
            continue
        feedback = row.get("feedback") or {}
        valid, _ = check_output(row.get("example_type", "chat"), row["messages"], row.get("tools"))
        continued = any(t > row["created_at"] for t in turns[row.get("conversation_id") or row["id"]])
        score = (
            3 * valid
            + 3 * (feedback.get("thumbs") == 1)
            + 2 * (feedback.get("outcome") == "accepted")
            + (feedback.get("outcome") == "accepted_with_edits")
            + continued
        )
        critic = row.get("critic") or {}
        if (
            score >= 5
            or (critic.get("quality_score") or 0) > 0.9
            or feedback.get("led_to_booking")
            or (feedback.get("customer_rating") or 0) >= 4
            or feedback.get("admin_correction")
        ):
            good.add(row["id"])
    return good


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("demo")
    return folder, generate_demo_logs(folder, seed=0)


# --- the knowledge file ------------------------------------------------------------------------------


def test_knowledge_facts_are_complete_and_unique():
    ids = [fact["id"] for fact in KNOWLEDGE["facts"]]
    assert len(ids) == len(set(ids)) >= 20
    for fact in KNOWLEDGE["facts"]:
        assert {"id", "topic", "fact", "questions", "answer"} <= set(fact), fact["id"]
        assert len(fact["questions"]) >= 4 and fact["answer"].strip()
        assert len(re.findall(r"[.!?](\s|$)", fact["answer"])) <= 3, f"{fact['id']}: keep answers short"


def test_every_dollar_amount_in_the_knowledge_is_a_known_price():
    prices = {float(v) for v in KNOWLEDGE["prices"].values()}
    for fact in KNOWLEDGE["facts"]:
        for text in (fact["fact"], fact["answer"]):
            assert {float(a) for a in DOLLARS.findall(text)} <= prices, fact["id"]
    assert {60, 30, 600, 5, 10} <= prices


def test_menu_is_checkable_and_has_no_wagyu():
    names = {item["name"].lower() for item in KNOWLEDGE["menu_items"]}
    assert {"chicken", "ny strip steak", "shrimp", "salmon", "tofu", "filet mignon", "lobster tail"} <= names
    assert not any("wagyu" in name for name in names)
    assert "Wagyu beef" in KNOWLEDGE["not_offered"]
    upgrades = {
        item["name"]: item["price"]
        for item in KNOWLEDGE["menu_items"]
        if item["category"] == "premium_upgrade"
    }
    assert upgrades == {"Filet Mignon": 5, "Lobster Tail": 10}


def test_tools_are_openai_function_schemas():
    tools = json.loads(TOOLS_PATH.read_text())
    by_name = {tool["function"]["name"]: tool["function"] for tool in tools}
    assert set(by_name) == {"create_booking", "check_availability"}
    assert all(tool["type"] == "function" for tool in tools)
    assert by_name["create_booking"]["parameters"]["required"] == ["date", "guests", "location"]


# --- the generated logs ------------------------------------------------------------------------------


def test_summary_and_files(demo):
    folder, summary = demo
    names = {p.name for p in folder.iterdir()}
    assert names == set(summary["files"]) | {"optout.json"}
    assert {Path(n).suffix for n in summary["files"]} == {".jsonl", ".csv", ".parquet"}
    assert sum(n.endswith(".jsonl") for n in names) >= 2
    assert 800 <= summary["lines"] <= 1000
    assert summary["malformed"] == 12
    assert summary["opted_out_orgs"] == json.loads((folder / "optout.json").read_text())["opted_out_orgs"]
    assert set(summary["by_type"]) == {"faq", "page_generation", "tool_invocation"}


def test_an_independent_reader_finds_the_malformed_rows(demo):
    folder, summary = demo
    by_id, events, malformed = _read_logs(folder)
    assert malformed == summary["malformed"]
    assert len(by_id) == summary["unique_ids"]
    assert len(events) == summary["feedback_events"]


def test_several_hundred_interactions_pass_the_default_policy(demo):
    folder, _ = demo
    good = _good_ids(folder)
    assert 500 <= len(good) <= 700


def test_pages_are_mostly_valid_and_sometimes_broken(demo):
    folder, _ = demo
    frame = pd.read_parquet(next(folder.glob("*.parquet")))
    answers = [json.loads(m)[-1]["content"] for m in frame["messages"]]
    valid = [check_output("page_generation", [{"role": "assistant", "content": a}], None)[0] for a in answers]
    assert 0.8 <= sum(valid) / len(valid) < 0.97
    first_valid = json.loads(answers[valid.index(True)])
    assert validate_page(first_valid) == []


def test_tool_calls_use_the_openai_shape(demo):
    folder, _ = demo
    by_id, _, _ = _read_logs(folder)
    rows = [r for r in by_id.values() if r["example_type"] == "tool_invocation"]
    assert len(rows) >= 80
    results = [check_output("tool_invocation", r["messages"], r["tools"])[0] for r in rows]
    assert 0.8 <= sum(results) / len(results) < 1.0
    call = rows[0]["messages"][-1]["tool_calls"][0]
    assert call["type"] == "function" and isinstance(call["function"]["arguments"], str)


def test_logs_are_dirty_like_real_logs(demo):
    folder, _ = demo
    by_id, events, _ = _read_logs(folder)
    rows = list(by_id.values())
    user_text = " ".join(m["content"] for r in rows for m in r["messages"] if m["role"] == "user")
    assert re.search(r"[\w.]+@[\w]+\.com", user_text)
    assert re.search(r"\(\d{3}\) 555-01\d\d", user_text)
    assert re.search(r"\d{3,4} \w+ (Street|Avenue|Drive|Boulevard|Lane|Court|Way|Road)", user_text)
    assert re.search(
        r"4111 1111 1111 1111|5555 5555 5555 4444|4012 8888 8888 1881|3782 822463 10005", user_text
    )
    assert "BK-" in user_text and "CUST-" in user_text

    hallucinations = [r for r in rows if (r.get("metadata") or {}).get("hallucination")]
    assert any("wagyu" in r["messages"][-1]["content"].lower() for r in hallucinations)
    corrected_ids = {r["id"] for r in hallucinations if (r.get("feedback") or {}).get("admin_correction")}
    corrected_ids |= {e["feedback_for"] for e in events if e.get("admin_correction")}
    assert 0.6 <= len(corrected_ids) / len(hallucinations) < 1.0

    assert (
        sum(1 for r in rows if r.get("teacher_response") and r.get("student_response") and r.get("critic"))
        >= 50
    )
    conversations: dict[str, int] = {}
    for r in rows:
        conversations[r.get("conversation_id") or r["id"]] = (
            conversations.get(r.get("conversation_id") or r["id"], 0) + 1
        )
    assert sum(1 for n in conversations.values() if n >= 2) >= 40
    answers = [(r["messages"][-2]["content"], r["messages"][-1]["content"]) for r in rows]
    assert len(answers) - len(set(answers)) >= 15, "expected exact duplicates"
    assert any("prompt" in r for r in rows) and any("instruction" in r for r in rows)
    assert any(r.get("org_id") == "org-myhibachi-reno" for r in rows)


def test_later_rows_supersede_earlier_ones_and_newest_feedback_wins(demo):
    folder, _ = demo
    lines = [
        json.loads(line)
        for line in next(folder.glob("assistant-*.jsonl")).read_text().splitlines()
        if line.startswith("{") and line.endswith("}")
    ]
    seen: dict[str, dict] = {}
    superseded = 0
    for row in lines:
        if isinstance(row, dict) and row.get("id") in seen:
            superseded += 1
            assert row["created_at"] > seen[row["id"]]["created_at"]
            assert row["messages"][-1]["content"] != seen[row["id"]]["messages"][-1]["content"]
        if isinstance(row, dict) and row.get("id"):
            seen[row["id"]] = row
    assert superseded >= 15
    _, events, _ = _read_logs(folder)
    targets = [e["feedback_for"] for e in events]
    assert len(targets) - len(set(targets)) >= 5, "expected targets with several feedback events"


def test_faq_answers_are_grounded_except_the_hallucinations(demo):
    folder, _ = demo
    by_id, _, _ = _read_logs(folder)
    prices = {float(v) for v in KNOWLEDGE["prices"].values()}
    for row in by_id.values():
        if row["example_type"] != "faq" or (row.get("metadata") or {}).get("hallucination"):
            continue
        answer = row["messages"][-1]["content"]
        if "wagyu" in answer.lower() and "don't serve" not in answer:
            assert row["feedback"].get("outcome") == "regenerated"  # a superseded original
            continue
        assert {float(a) for a in DOLLARS.findall(answer)} <= prices, answer


def test_deterministic_for_a_seed_and_new_ids_for_a_later_batch(tmp_path, demo):
    folder, summary = demo
    again = generate_demo_logs(tmp_path / "again", seed=0)
    for name in summary["files"]:
        if not name.endswith(".parquet"):
            assert (folder / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    parquet = next(iter(n for n in summary["files"] if n.endswith(".parquet")))
    pd.testing.assert_frame_equal(
        pd.read_parquet(folder / parquet), pd.read_parquet(tmp_path / "again" / parquet)
    )
    assert {k: v for k, v in again.items() if k != "out_dir"} == {
        k: v for k, v in summary.items() if k != "out_dir"
    }

    other_seed = generate_demo_logs(tmp_path / "seed1", seed=1)
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()
    name = next(n for n in summary["files"] if n.startswith("assistant"))
    assert digest(folder / name) != digest(tmp_path / "seed1" / name)
    assert other_seed["lines"] > 0

    ids_day0 = set(_read_logs(tmp_path / "again")[0])
    later = generate_demo_logs(tmp_path / "again", seed=0, batch=1)
    assert later["day"] > summary["day"] and not set(later["files"]) & set(summary["files"])
    ids_both = set(_read_logs(tmp_path / "again")[0])
    assert ids_day0 < ids_both and len(ids_both - ids_day0) == later["unique_ids"]


def test_scale_and_invalid_arguments(tmp_path):
    small = generate_demo_logs(tmp_path, seed=3, scale=0.2)
    assert 100 <= small["lines"] < 300
    with pytest.raises(ValueError, match="batch"):
        generate_demo_logs(tmp_path, batch=-1)
    with pytest.raises(ValueError, match="scale"):
        generate_demo_logs(tmp_path, scale=0)


def test_command_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "homegrown.demo.generate",
            str(tmp_path / "out"),
            "--seed",
            "2",
            "--scale",
            "0.1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    summary = json.loads(result.stdout)
    assert summary["seed"] == 2 and (tmp_path / "out" / "optout.json").exists()
    assert all((tmp_path / "out" / name).exists() for name in summary["files"])

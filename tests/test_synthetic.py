"""Synthetic examples from the knowledge file: offline templates and a teacher behind a real HTTP API."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI, Request

from homegrown.data.columns import EXAMPLE_COLUMNS
from homegrown.data.synthetic import TeacherSettings, generate_synthetic
from homegrown.data.validity import check_output
from homegrown.demo.generate import KNOWLEDGE_PATH

KNOWLEDGE = json.loads(KNOWLEDGE_PATH.read_text())
N_FACTS = len(KNOWLEDGE["facts"])


# --- a tiny, deterministic OpenAI-compatible teacher --------------------------------------------------


def _teacher_reply(prompt: str) -> str:
    """Pairs built from the prompt, plus the failure modes of real teachers for some facts."""
    approved = re.search(r"Approved answer: (.*)", prompt).group(1)
    count = int(re.search(r"Write (\d+) new customer questions", prompt).group(1))
    examples = re.findall(r"^- (.*)$", prompt, flags=re.MULTILINE)
    pairs = [
        {"question": f"Teacher asks #{i}: {examples[i % len(examples)]}", "answer": approved}
        for i in range(count)
    ]
    if "Kobe beef" in prompt:  # the no-wagyu fact: the teacher goes off the rails
        return "Sorry, here you go: not JSON at all"
    if "Adults cost $60" in prompt:
        pairs[0] = {"question": "How much per adult?", "answer": "It is $75 per adult."}
        pairs[1] = {"question": "Is wagyu included?", "answer": "Yes, wagyu comes with every adult meal."}
    return "```json\n" + json.dumps({"pairs": pairs}) + "\n```"


def _teacher_app(calls: list[dict]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def completions(request: Request) -> dict:
        body = await request.json()
        calls.append({"body": body, "auth": request.headers.get("authorization")})
        content = _teacher_reply(body["messages"][-1]["content"])
        return {
            "id": f"chatcmpl-{len(calls)}",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    return app


@pytest.fixture(scope="module")
def teacher_server() -> Iterator[tuple[str, list[dict]]]:
    calls: list[dict] = []
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_teacher_app(calls), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("teacher test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1", calls
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# --- template expansion ------------------------------------------------------------------------------


def test_template_examples_follow_the_contract():
    frame = generate_synthetic(KNOWLEDGE_PATH, seed=0, per_fact=3)
    assert list(frame.columns) == EXAMPLE_COLUMNS
    assert len(frame) == 3 * N_FACTS
    assert frame["example_id"].is_unique
    assert frame["synthetic"].all() and (frame["generator"] == "template").all()
    assert (frame["example_type"] == "faq").all() and frame["tools"].isna().all()
    assert all(ids == [] for ids in frame["source_ids"])
    assert set(frame["source_fact"]) == {fact["id"] for fact in KNOWLEDGE["facts"]}
    assert (frame["org_id"] == KNOWLEDGE["business"]["org_id"]).all()
    answers = {fact["id"]: fact["answer"] for fact in KNOWLEDGE["facts"]}
    for row in frame.itertuples():
        assert [m["role"] for m in row.messages] == ["system", "user", "assistant"]
        assert row.messages[-1]["content"] == answers[row.source_fact]
        assert "{city}" not in row.messages[1]["content"]
        assert check_output("faq", row.messages, None)[0]
    assert frame.attrs["stats"] == {
        "facts": N_FACTS,
        "teacher_pairs": 0,
        "teacher_rejected": 0,
        "template": 3 * N_FACTS,
    }


def test_templates_are_deterministic_per_seed_and_ids_are_content_hashes():
    first = generate_synthetic(KNOWLEDGE_PATH, seed=7, per_fact=4)
    again = generate_synthetic(KNOWLEDGE_PATH, seed=7, per_fact=4)
    other = generate_synthetic(KNOWLEDGE_PATH, seed=8, per_fact=4)
    assert first["example_id"].tolist() == again["example_id"].tolist()
    assert set(first["example_id"]) != set(other["example_id"])
    # The same content in another seed's output keeps its id.
    shared = set(first["example_id"]) & set(other["example_id"])
    by_id = {row.example_id: row.messages for row in other.itertuples()}
    assert all(by_id[i] == m for i, m in zip(first["example_id"], first["messages"]) if i in shared)


@pytest.mark.parametrize("per_fact", [1, 6, 20])
def test_phrasings_are_varied_and_distinct(per_fact):
    frame = generate_synthetic(KNOWLEDGE_PATH, seed=1, per_fact=per_fact)
    assert len(frame) == per_fact * N_FACTS
    for _, group in frame.groupby("source_fact"):
        questions = [m[1]["content"] for m in group["messages"]]
        assert len(set(questions)) == len(questions)


@pytest.mark.parametrize("path", [None, Path("/nonexistent/knowledge.json")])
def test_no_knowledge_file_gives_an_empty_frame(path):
    frame = generate_synthetic(path)
    assert frame.empty and list(frame.columns) == EXAMPLE_COLUMNS


def test_opted_out_business_gives_no_examples():
    frame = generate_synthetic(KNOWLEDGE_PATH, opted_out_orgs={KNOWLEDGE["business"]["org_id"]})
    assert frame.empty and list(frame.columns) == EXAMPLE_COLUMNS
    assert len(generate_synthetic(KNOWLEDGE_PATH, opted_out_orgs={"org-someone-else"}, per_fact=1)) == N_FACTS


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"facts": "no"}), "'facts' list"),
        (json.dumps({"facts": [{"id": "a", "fact": "x", "questions": ["q?"]}]}), "lacks answer"),
        (
            json.dumps({"facts": [{"id": "a", "fact": "x", "questions": "q?", "answer": "y"}]}),
            "list of strings",
        ),
        (
            json.dumps({"facts": [{"id": "a", "fact": "x", "questions": ["q?"], "answer": "y"}] * 2}),
            "duplicate",
        ),
    ],
)
def test_bad_knowledge_files_raise_a_clear_error(tmp_path, content, message):
    path = tmp_path / "knowledge.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        generate_synthetic(path)


def test_minimal_knowledge_file_without_business(tmp_path):
    path = tmp_path / "knowledge.json"
    path.write_text(
        json.dumps(
            {
                "facts": [
                    {
                        "id": "hours",
                        "fact": "Open 9-5.",
                        "questions": ["When are you open?"],
                        "answer": "We're open 9am to 5pm.",
                    }
                ]
            }
        )
    )
    frame = generate_synthetic(path, per_fact=2)
    assert len(frame) == 2 and frame["org_id"].isna().all()
    assert frame["messages"][0][0]["content"] == "You are the assistant of the business."


@pytest.mark.parametrize("per_fact", [0, -1, 51])
def test_per_fact_out_of_range(per_fact):
    with pytest.raises(ValueError, match="per_fact"):
        generate_synthetic(KNOWLEDGE_PATH, per_fact=per_fact)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"base_url": "localhost:8000", "model": "m"}, "base_url"),
        ({"base_url": "http://x/v1", "model": " "}, "model"),
        ({"base_url": "http://x/v1", "model": "m", "temperature": 3.0}, "temperature"),
        ({"base_url": "http://x/v1", "model": "m", "timeout_s": 0}, "timeout_s"),
    ],
)
def test_teacher_settings_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TeacherSettings(**kwargs)


# --- the teacher -------------------------------------------------------------------------------------


def test_teacher_writes_grounded_examples(teacher_server):
    base_url, calls = teacher_server
    calls.clear()
    teacher = TeacherSettings(base_url=base_url, model="tiny-teacher", api_key="sk-test", temperature=0.2)
    frame = generate_synthetic(KNOWLEDGE_PATH, teacher=teacher, seed=3, per_fact=3)

    assert len(calls) == N_FACTS
    assert calls[0]["body"]["model"] == "tiny-teacher" and calls[0]["body"]["temperature"] == 0.2
    assert calls[0]["auth"] == "Bearer sk-test"
    assert len(frame) == 3 * N_FACTS and frame["example_id"].is_unique
    assert list(frame.columns) == EXAMPLE_COLUMNS

    by_fact = {fact_id: group for fact_id, group in frame.groupby("source_fact")}
    # An ordinary fact: every example from the teacher.
    deposit = by_fact["policy-deposit"]
    assert (deposit["generator"] == "openai:tiny-teacher").all()
    assert all(m[1]["content"].startswith("Teacher asks #") for m in deposit["messages"])
    # Ungrounded answers ($75, wagyu) are dropped and filled from templates.
    adult = by_fact["price-adult"]
    assert sorted(adult["generator"]) == ["openai:tiny-teacher", "template", "template"]
    assert not any("$75" in m[-1]["content"] or "wagyu" in m[-1]["content"] for m in adult["messages"])
    # An unparseable teacher answer falls back to templates for that fact.
    assert (by_fact["menu-no-wagyu"]["generator"] == "template").all()

    stats = frame.attrs["stats"]
    assert stats["teacher_rejected"] == 2
    assert stats["teacher_pairs"] + stats["template"] == len(frame)
    assert stats["template"] == 2 + 3


def test_teacher_unreachable_is_a_clear_error():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens on this port now
    teacher = TeacherSettings(base_url=f"http://127.0.0.1:{port}/v1", model="m", timeout_s=2)
    with pytest.raises(RuntimeError, match="unreachable"):
        generate_synthetic(KNOWLEDGE_PATH, teacher=teacher, per_fact=1)


def test_teacher_http_error_is_a_clear_error(teacher_server):
    base_url, _ = teacher_server
    teacher = TeacherSettings(base_url=base_url.removesuffix("/v1") + "/wrong", model="m", timeout_s=5)
    with pytest.raises(RuntimeError, match="HTTP 404"):
        generate_synthetic(KNOWLEDGE_PATH, teacher=teacher, per_fact=1)


# --- which knowledge file a run uses ---------------------------------------------------------------------


def test_knowledge_file_is_the_inputs_own_and_the_demos_only_for_the_demo(hg_home, monkeypatch, tmp_path):
    from resources import DEMO_KNOWLEDGE, TeacherResource

    assert TeacherResource().knowledge_path() == DEMO_KNOWLEDGE  # no HOMEGROWN_INPUT: the embedded demo

    business = tmp_path / "business-logs"
    business.mkdir()
    monkeypatch.setenv("HOMEGROWN_INPUT", str(business))
    assert TeacherResource().knowledge_source() is None  # its own input, no knowledge.json: none, not the demo's
    assert TeacherResource().knowledge_path() is None

    (business / "knowledge.json").write_text(DEMO_KNOWLEDGE.read_text(encoding="utf-8"), encoding="utf-8")
    assert TeacherResource().knowledge_path() == business / "knowledge.json"
    explicit = tmp_path / "elsewhere.json"
    assert TeacherResource(knowledge_file=str(explicit)).knowledge_path() == explicit


def test_synthetic_asset_without_a_knowledge_file_beside_the_input_writes_no_examples(hg_home, monkeypatch, tmp_path):
    import dagster as dg

    from pipelines.definitions import defs

    monkeypatch.setenv("HOMEGROWN_INPUT", str(tmp_path))
    assets = [a for a in defs.assets if a.key.to_user_string() == "synthetic_examples"]
    result = dg.materialize(assets, resources=defs.resources, raise_on_error=True)
    metadata = result.asset_materializations_for_node("synthetic_examples")[0].metadata
    assert metadata["rows"].value == 0
    assert metadata["knowledge_file"].value.startswith("none")

"""Tool calls end to end: rendering as for training, the tool grammar, the streamed-call parser, and real
gateways on 127.0.0.1 (the SmolLM2 GGUF on llama.cpp, a fake OpenAI-compatible upstream) called with the
official ``openai`` client and with ``langchain-openai``."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from loopback import serve_app as serve
from openai import OpenAI
from pydantic import ValidationError

from homegrown.data.records import normalise_record
from homegrown.gateway.app import create_app, training_defect
from homegrown.gateway.backends import BackendPool, LlamaCppBackend, find_base_gguf, open_prefix_length
from homegrown.gateway.logstore import LogStore
from homegrown.gateway.schemas import ChatCompletionRequest
from homegrown.gateway.settings import GatewaySettings
from homegrown.training.chat import (
    ToolCallStream,
    merge_tool_call_deltas,
    render_tool_call,
    to_training_messages,
    tool_choice_mode,
)
from homegrown.training.llama_cpp_util import (
    ChatPromptRenderer,
    check_tool_prompt_parity,
    grammar_for_tool_calls,
    load_llama,
)

KEY = "tool-key"
PARAMETERS = {
    "type": "object",
    "properties": {
        "date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
        "guests": {"type": "integer", "minimum": 1, "maximum": 50},
        "location": {"type": "string", "minLength": 2, "maxLength": 30},
    },
    "required": ["date", "guests", "location"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "create_booking", "description": "Book a chef.",
                                      "parameters": PARAMETERS}},
    {"type": "function", "function": {"name": "check_availability", "description": "Is a chef free?",
                                      "parameters": {"type": "object", "properties": {"date": {"type": "string"}},
                                                     "required": ["date"]}}},
]
ASK = [{"role": "user", "content": "Book a chef for 12 guests on 2026-06-01 in Oakland."}]
NAMED = {"type": "function", "function": {"name": "create_booking"}}


# -- rendering, parsing, grammar (fast) ----------------------------------------------------------------------


@pytest.mark.parametrize("piece", [1, 3, 1000])
def test_tool_call_stream_reads_calls_in_any_pieces(piece: int):
    first = {"function": {"name": "create_booking", "arguments": {"date": "2026-06-01", "notes": 'a "}" b'}}}
    second = {"function": {"name": "check_availability", "arguments": {"date": "2026-06-02"}}}
    text = render_tool_call(first)[len("<tool_call>"):] + "\n" + render_tool_call(second)
    stream = ToolCallStream()
    deltas = []
    for start in range(0, len(text), piece):
        deltas += stream.feed(text[start:start + piece])
    assert stream.complete
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in stream.calls] == [
        ("create_booking", {"date": "2026-06-01", "notes": 'a "}" b'}), ("check_availability", {"date": "2026-06-02"})]
    assert deltas[0]["id"].startswith("call_") and deltas[0]["type"] == "function"
    assert deltas[0]["function"] == {"name": "create_booking", "arguments": ""}
    merged: list[dict] = []
    merge_tool_call_deltas(merged, deltas)
    assert merged == stream.calls
    assert stream.calls[0]["id"] != stream.calls[1]["id"]


def test_an_unfinished_call_is_not_complete():
    stream = ToolCallStream()
    stream.feed('{"name": "create_booking", "arguments": {"date": "2026')
    assert not stream.complete and stream.calls[0]["function"]["arguments"] == '{"date": "2026'


@pytest.mark.parametrize(("choice", "expected"), [
    (None, ("auto", None)), ("none", ("none", None)), ("required", ("required", None)),
    (NAMED, ("required", "create_booking")),
])
def test_tool_choice_modes(choice, expected):
    assert tool_choice_mode(TOOLS, choice) == expected


@pytest.mark.parametrize(("tools", "choice", "message"), [
    (TOOLS, "sometimes", "must be 'none'"),
    (TOOLS, {"type": "function", "function": {"name": "delete_everything"}}, "not among the offered tools"),
    (None, "required", "only allowed when tools"),
    ([{"type": "function", "function": {}}], None, "a tool must be"),
])
def test_bad_tool_requests_are_rejected(tools, choice, message):
    with pytest.raises(ValidationError, match=message):
        ChatCompletionRequest(model="m", messages=ASK, tools=tools, tool_choice=choice)


def test_a_tool_with_an_invalid_schema_is_rejected():
    bad = [{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}]
    with pytest.raises(ValidationError, match="not a valid JSON schema"):
        ChatCompletionRequest(model="m", messages=ASK, tools=bad)


def test_tool_grammar_names_only_the_offered_tools():
    both = grammar_for_tool_calls(TOOLS)._grammar
    assert '"\\"create_booking\\""' in both and '"\\"check_availability\\""' in both
    assert both.startswith('root ::= tool-call "</tool_call>" ("\\n" "<tool_call>"')
    named = grammar_for_tool_calls(TOOLS, "create_booking")._grammar
    assert "check_availability" not in named and "\\n" not in named.splitlines()[0]
    # minimum/maximum of a small integer range hold through an enum
    assert '"50"' in named and '"51"' not in named
    with pytest.raises(ValueError, match="no offered tool"):
        grammar_for_tool_calls(TOOLS, "missing")


@pytest.mark.parametrize(("answer", "defect"), [
    ({"role": "assistant", "content": ""}, "empty answer"),
    ({"role": "assistant", "content": "  "}, "empty answer"),
    ({"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"date": "20'}}]}, "not a JSON object"),
    ({"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, None),
    ({"role": "assistant", "content": "Hello"}, None),
])
def test_answers_that_cannot_teach_are_not_training_examples(answer, defect):
    found = training_defect({"messages": [*ASK, answer]})
    assert (found is None) if defect is None else (defect in found)


def test_open_tag_prefix_is_held_back():
    assert open_prefix_length("Sure <tool") == len("<tool")
    assert open_prefix_length("Sure <") == 1
    assert open_prefix_length("Sure!") == 0


CONVERSATION = [
    {"role": "system", "content": "You book chefs."},
    *ASK,
    {"role": "assistant", "content": None, "tool_calls": [{"id": "call_a", "type": "function", "function": {
        "name": "create_booking", "arguments": '{"date": "2026-06-01", "guests": 12, "location": "Oakland"}'}}]},
    {"role": "tool", "tool_call_id": "call_a", "content": '{"status": "confirmed"}'},
]


def test_the_served_prompt_is_the_training_prompt(tiny_llama_dir: Path):
    from transformers import AutoTokenizer

    llm = load_llama(find_base_gguf(), vocab_only=True)
    try:
        served, _ = ChatPromptRenderer(llm).render(CONVERSATION, TOOLS)
    finally:
        llm.close()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    trained = tokenizer.apply_chat_template(to_training_messages(CONVERSATION, TOOLS), tokenize=False,
                                            add_generation_prompt=True)
    assert served == trained
    assert '"name": "create_booking"' in served and "<|im_start|>tool\n" in served


def test_tool_prompt_parity_check_passes_and_catches_a_changed_template(tiny_llama_dir: Path, tmp_path: Path):
    ok, details = check_tool_prompt_parity(tiny_llama_dir, find_base_gguf())
    assert ok, details
    assert details["prompts"] == 2 and details["tool_call_answers"] == [{"cut": 2, "round_trip": True}]

    changed = tmp_path / "changed"
    shutil.copytree(tiny_llama_dir, changed)
    config_path = changed / "tokenizer_config.json"
    template_path = changed / "chat_template.jinja"
    if template_path.exists():
        template_path.write_text(template_path.read_text().replace("<|im_start|>", "<|im_start|> "))
    else:
        config = json.loads(config_path.read_text())
        config["chat_template"] = config["chat_template"].replace("<|im_start|>", "<|im_start|> ")
        config_path.write_text(json.dumps(config))
    ok, details = check_tool_prompt_parity(changed, find_base_gguf())
    assert not ok and details["token_mismatches"]


# -- real servers ----------------------------------------------------------------------------------------------


def settings_for(folder: Path, **overrides) -> GatewaySettings:
    values = {"api_keys": [KEY], "log_db_url": f"sqlite:///{folder / 'log.sqlite'}",
              "models_file": folder / "models.json", "default_to_base_model": False, "n_threads": 2, "n_ctx": 1024}
    return GatewaySettings(**{**values, **overrides})


@pytest.fixture(scope="module")
def local_gateway(tmp_path_factory) -> Iterator[tuple[str, LogStore]]:
    folder = tmp_path_factory.mktemp("tools")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOMEGROWN_HOME", str(folder))
        backend = LlamaCppBackend(find_base_gguf(), n_ctx=1024, n_threads=2, name="homegrown:tools", timeout_s=300)
        settings = settings_for(folder)
        store = LogStore(settings.log_db_url)
        app = create_app(settings, pool=BackendPool({"champion": backend}), store=store)
        with serve(app) as url:
            yield url, store
        store.close()
        backend.close()


def openai_client(url: str) -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=300)


def assert_valid_booking(name: str, arguments: str | dict) -> dict:
    assert name == "create_booking"
    args = json.loads(arguments) if isinstance(arguments, str) else arguments
    jsonschema.validate(args, PARAMETERS)
    return args


def logged(store: LogStore, response_id: str) -> dict:
    """The stored record; a streamed answer is logged just after its last event, so poll (with a limit)."""
    deadline = time.monotonic() + 30
    while (record := store.get_interaction(response_id)) is None:
        assert time.monotonic() < deadline, f"{response_id} was not logged within 30 s"
        time.sleep(0.05)
    return record


def assert_logged_call(store: LogStore, response_id: str, arguments: str) -> None:
    record = logged(store, response_id)
    answer = record["messages"][-1]
    assert answer["content"] is None
    assert answer["tool_calls"][0]["function"]["arguments"] == arguments
    assert record["tools"] == TOOLS and record["metadata"]["finish_reason"] == "tool_calls"
    assert "error" not in record["metadata"]
    kind, normalised = normalise_record(json.loads(json.dumps(record)))  # what ingestion reads back
    assert kind == "interaction" and normalised["messages"][-1]["tool_calls"][0]["function"]["name"] == "create_booking"


def test_openai_client_gets_a_schema_valid_call(local_gateway):
    url, store = local_gateway
    response = openai_client(url).chat.completions.create(
        model="homegrown:tools", messages=ASK, tools=TOOLS, tool_choice=NAMED, max_tokens=120, temperature=0)
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert_valid_booking(call.function.name, call.function.arguments)
    assert_logged_call(store, response.id, call.function.arguments)


def test_openai_client_streams_tool_call_deltas(local_gateway):
    url, store = local_gateway
    stream = openai_client(url).chat.completions.create(
        model="homegrown:tools", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=320, temperature=0,
        stream=True)  # the untrained base repeats its call under "required": room for all of them to end
    deltas, finish, response_id = [], None, None
    for event in stream:
        response_id = event.id
        for choice in event.choices:
            deltas += [d.model_dump(exclude_none=True) for d in choice.delta.tool_calls or []]
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert set(deltas[0]) == {"index", "id", "type", "function"} and deltas[0]["function"]["arguments"] == ""
    starts = [d for d in deltas if "id" in d]
    assert [d["index"] for d in starts] == list(range(len(starts)))  # parallel calls get the next index
    assert all(set(d) == {"index", "function"} for d in deltas if "id" not in d) and len(deltas) > 2
    calls: list[dict] = []
    merge_tool_call_deltas(calls, deltas)
    assert len(calls) >= 1
    json.loads(calls[0]["function"]["arguments"])
    if calls[0]["function"]["name"] == "create_booking":
        assert_valid_booking("create_booking", calls[0]["function"]["arguments"])
    record = logged(store, response_id)
    assert record["messages"][-1]["tool_calls"] == calls and record["messages"][-1]["content"] is None


def test_langchain_openai_gets_calls_streaming_and_not(local_gateway):
    from langchain_openai import ChatOpenAI

    url, _ = local_gateway
    chat = ChatOpenAI(model="homegrown:tools", base_url=f"{url}/v1", api_key=KEY, temperature=0, max_tokens=120,
                      max_retries=0, timeout=300)
    bound = chat.bind_tools(TOOLS, tool_choice="create_booking")
    message = bound.invoke(ASK[0]["content"])
    assert len(message.tool_calls) == 1 and message.invalid_tool_calls == []
    assert_valid_booking(message.tool_calls[0]["name"], message.tool_calls[0]["args"])

    gathered = None
    for chunk in bound.stream(ASK[0]["content"]):
        gathered = chunk if gathered is None else gathered + chunk
    assert gathered is not None and len(gathered.tool_calls) == 1 and gathered.invalid_tool_calls == []
    assert_valid_booking(gathered.tool_calls[0]["name"], gathered.tool_calls[0]["args"])
    assert gathered.response_metadata.get("finish_reason") == "tool_calls"


def test_multi_turn_with_a_tool_result(local_gateway):
    url, store = local_gateway
    client = openai_client(url)
    first = client.chat.completions.create(model="homegrown:tools", messages=ASK, tools=TOOLS, tool_choice=NAMED,
                                           max_tokens=120, temperature=0)
    call = first.choices[0].message.tool_calls[0]
    history = [*ASK, first.choices[0].message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": '{"status": "confirmed", "booking_id": "B-17"}'}]
    final = client.chat.completions.create(model="homegrown:tools", messages=history, tools=TOOLS, tool_choice="none",
                                           max_tokens=40, temperature=0)
    assert final.choices[0].message.tool_calls is None
    assert final.choices[0].message.content and "<tool_call>" not in final.choices[0].message.content
    messages = logged(store, final.id)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[1]["tool_calls"][0]["id"] == call.id and messages[2]["tool_call_id"] == call.id
    _, normalised = normalise_record(json.loads(json.dumps(logged(store, final.id))))
    assert normalised["messages"][2]["role"] == "tool"


# -- an OpenAI-compatible upstream that streams tool-call deltas ------------------------------------------------


UPSTREAM_DELTAS = [
    {"index": 0, "id": "call_up1", "type": "function", "function": {"name": "create_booking", "arguments": ""}},
    {"index": 0, "function": {"arguments": '{"date": "2026-06-01", '}},
    {"index": 0, "function": {"arguments": '"guests": 12, "location": "Oakland"}'}},
]


@pytest.fixture
def upstream() -> Iterator[str]:
    """A real HTTP server speaking the chat completions protocol; "empty" in the prompt gets an empty answer."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        empty = "empty" in body["messages"][-1]["content"]

        def chunk(delta: dict, finish: str | None = None) -> str:
            return "data: " + json.dumps({"id": "up-1", "object": "chat.completion.chunk", "created": 0,
                                          "model": body["model"], "choices": [
                                              {"index": 0, "delta": delta, "finish_reason": finish}]}) + "\n\n"

        def events():
            yield chunk({"role": "assistant", "content": None})
            if not empty:
                for delta in UPSTREAM_DELTAS:
                    yield chunk({"tool_calls": [delta]})
            yield chunk({}, "stop" if empty else "tool_calls")
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    with serve(app) as url:
        yield url


def test_upstream_tool_call_deltas_pass_through_and_are_logged(upstream: str, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HOMEGROWN_HOME", str(tmp_path))
    settings = settings_for(tmp_path, fallback_base_url=f"{upstream}/v1", fallback_model="premium",
                            fallback_pin_keys=[KEY])  # this key may ask for the premium model by name
    store = LogStore(settings.log_db_url)
    app = create_app(settings, pool=BackendPool.from_settings(settings), store=store)
    try:
        with serve(app) as url:
            client = openai_client(url)
            stream = client.chat.completions.create(model="premium", messages=ASK, tools=TOOLS, stream=True)
            deltas, finish, response_id = [], None, None
            for event in stream:
                response_id = event.id
                for choice in event.choices:
                    deltas += [d.model_dump(exclude_none=True) for d in choice.delta.tool_calls or []]
                    finish = choice.finish_reason or finish
            assert deltas == UPSTREAM_DELTAS and finish == "tool_calls"
            record = logged(store, response_id)
            assert record["messages"][-1] == {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_up1", "type": "function", "function": {
                    "name": "create_booking", "arguments": '{"date": "2026-06-01", "guests": 12, "location": "Oakland"}'}}]}

            empty = client.chat.completions.create(
                model="premium", messages=[{"role": "user", "content": "empty please"}], stream=True)
            empty_id = [event.id for event in empty][-1]
        assert logged(store, empty_id)["metadata"]["error"] == "empty answer"
        exported = (store.export_jsonl(tmp_path / "export")).read_text().splitlines()
        ids = [json.loads(line)["id"] for line in exported]
        assert response_id in ids and empty_id not in ids
    finally:
        store.close()

"""The caps that keep a caller's JSON schema from crashing or stalling llama.cpp (grammar_limits).

Every hostile schema is refused fast, on both paths a schema reaches llama.cpp (``response_format`` and tool
``parameters``); the schemas the product ships still pass; and the GBNF check agrees with llama.cpp's own
parser, which is asked safely (it returns no sampler rather than crashing when nothing uses the result).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hostile_schemas import HOSTILE_SCHEMAS

from homegrown.gateway.grammar_limits import (
    MAX_STRING_LENGTH_BOUND,
    NATIVE_REPETITION_THRESHOLD,
    SchemaTooComplex,
    check_grammar,
    check_json_schema,
    check_response_format,
    check_tools,
)
from homegrown.training.llama_cpp_util import grammar_for_response_format, grammar_for_tool_calls

REPO = Path(__file__).resolve().parents[1]
DEMO_TOOLS = json.loads((REPO / "homegrown" / "demo" / "tools.json").read_text())
PAGE_SCHEMA = json.loads((REPO / "homegrown" / "schemas" / "page.json").read_text())
SMALL_OBJECT = {
    "type": "object",
    "properties": {"answer": {"type": "string", "maxLength": 200}, "confidence": {"type": "number"},
                   "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5}},
    "required": ["answer"],
    "additionalProperties": False,
}


def as_response_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def as_tools(schema: dict) -> list[dict]:
    return [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"query": schema}, "required": ["query"]}}}]


def test_there_are_at_least_eleven_hostile_schemas_including_the_reported_one():
    assert len(HOSTILE_SCHEMAS) >= 11
    assert ("maxLength 2000", {"type": "string", "maxLength": 2000}, "crash") in HOSTILE_SCHEMAS


@pytest.mark.parametrize(("label", "schema", "effect"), HOSTILE_SCHEMAS, ids=[h[0] for h in HOSTILE_SCHEMAS])
def test_hostile_schema_is_refused_quickly_as_response_format_and_as_tool_parameters(label, schema, effect):
    started = time.monotonic()
    with pytest.raises(ValueError) as refused:
        check_response_format(as_response_format(schema))
    assert "response_format" in str(refused.value)
    with pytest.raises(ValueError):
        check_tools(as_tools(schema))
    assert time.monotonic() - started < 1.0


def test_the_message_names_the_keyword_and_the_limit():
    with pytest.raises(SchemaTooComplex) as refused:
        check_response_format(as_response_format({"type": "string", "maxLength": 2000}))
    assert refused.value.keyword == "maxLength" and refused.value.limit == MAX_STRING_LENGTH_BOUND
    assert "maxLength is 2000" in str(refused.value) and str(MAX_STRING_LENGTH_BOUND) in str(refused.value)
    with pytest.raises(SchemaTooComplex, match="tool 'lookup' parameters: maxItems is 5000"):
        check_tools(as_tools({"type": "array", "maxItems": 5000}))


def test_the_backends_grammar_builders_refuse_on_their_own():
    """No path reaches llama.cpp unchecked: the builders the model backend calls apply the same caps."""
    with pytest.raises(SchemaTooComplex):
        grammar_for_response_format(as_response_format({"type": "string", "maxLength": 2000}))
    with pytest.raises(SchemaTooComplex):
        grammar_for_tool_calls(as_tools({"type": "string", "maxLength": 2000}))
    with pytest.raises(SchemaTooComplex, match="left-recursive"):
        grammar_for_response_format(as_response_format({"type": "string", "pattern": "^(|a)+$"}))


def test_the_shipped_and_ordinary_schemas_pass():
    check_tools(DEMO_TOOLS)
    check_response_format(as_response_format(PAGE_SCHEMA))
    check_response_format(as_response_format(SMALL_OBJECT))
    check_response_format({"type": "json_object"})
    check_response_format({"type": "text"})
    check_response_format(None)
    check_tools(None)
    check_tools(as_tools(SMALL_OBJECT))
    check_response_format(as_response_format({"type": "string", "maxLength": MAX_STRING_LENGTH_BOUND}))
    check_json_schema({"$defs": {"a": {"type": "string"}}, "type": "object",
                       "properties": {"x": {"$ref": "#/$defs/a"}, "y": {"$ref": "#/$defs/a"}}}, "x")


def test_recursive_and_external_refs_are_refused():
    with pytest.raises(SchemaTooComplex, match="refers to itself"):
        check_json_schema({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"anyOf": [{"$ref": "#/$defs/a"}]}},
                           "$ref": "#/$defs/a"}, "x")
    with pytest.raises(SchemaTooComplex, match="must point inside the schema"):
        check_json_schema({"$ref": "https://example.com/schema.json"}, "x")


@pytest.fixture(scope="module")
def llama_vocab():
    from homegrown.gateway.backends import find_base_gguf
    from homegrown.training.llama_cpp_util import load_llama

    llm = load_llama(find_base_gguf(), vocab_only=True)
    yield llm._model.vocab
    llm.close()


def llama_cpp_accepts(vocab, grammar: str) -> bool:
    """llama.cpp's own parser; it returns NULL (and prints why) for a grammar it refuses."""
    import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


NEAR_THE_LIMITS = [
    {"type": "string", "maxLength": 900},
    {"type": "string", "maxLength": 1000},
    {"type": "string", "maxLength": 1100},
    {"type": "string", "minLength": 300, "maxLength": 1400},
    {"type": "array", "items": {"type": "string", "maxLength": 100}, "maxItems": 990},
    {"type": "array", "items": {"type": "string", "maxLength": 100}, "maxItems": 1200},
    {"type": "object", "additionalProperties": {"type": "string", "maxLength": 1500}},
    {"type": "string", "pattern": "^(ab){0,999}$"},
    {"type": "string", "pattern": "^((ab){0,40}c){0,40}$"},
    {"type": "string", "pattern": "^(a?)*$"},
    {"type": "string", "pattern": "^(|a)+$"},
    {"type": "string", "pattern": "^(a|)*b$"},
    {"type": "string", "pattern": "^()*$"},
    {"type": "string", "pattern": "^(|a)?$"},
]


@pytest.mark.parametrize("schema", NEAR_THE_LIMITS, ids=[json.dumps(s)[:60] for s in NEAR_THE_LIMITS])
def test_the_grammar_check_agrees_with_llama_cpp_at_its_own_threshold(schema, llama_vocab, monkeypatch):
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    from homegrown.gateway import grammar_limits

    grammar = json_schema_to_gbnf(json.dumps(schema))
    monkeypatch.setattr(grammar_limits, "MAX_REPETITION_COST", NATIVE_REPETITION_THRESHOLD)
    try:
        check_grammar(grammar, "x")
        ours = True
    except SchemaTooComplex:
        ours = False
    assert ours == llama_cpp_accepts(llama_vocab, grammar)

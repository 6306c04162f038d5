"""JSON schemas that crash llama.cpp (through llama-cpp-python) or stall it, for tests of the gateway's caps.

Each entry is ``(label, schema, what it did before the caps)``. Measured with llama-cpp-python 0.3.36 on
the SmolLM2-135M GGUF: "crash" means llama.cpp refused the grammar and the process died on the null
sampler; "slow" means generation several to a hundred times slower per token (20,000 enum values: 19 s
for 8 tokens); "converter" means the Python schema converter overflowed its recursion; "recursive" means a
schema that refers to itself; "huge grammar" means hundreds of kilobytes to megabytes of grammar text, and
"unfinishable answer" one that no ``max_tokens`` can complete.
"""

from __future__ import annotations

from typing import Any


def _nested_objects(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


def _nested_arrays(depth: int, max_items: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema} | ({"maxItems": max_items} if max_items else {})
    return schema


HOSTILE_SCHEMAS: list[tuple[str, dict[str, Any], str]] = [
    ("maxLength 2000", {"type": "string", "maxLength": 2000}, "crash"),
    ("maxLength 1500", {"type": "string", "maxLength": 1500}, "crash"),
    ("minLength 100000", {"type": "string", "minLength": 100_000}, "huge grammar, unfinishable answer"),
    ("maxItems 5000", {"type": "array", "items": {"type": "integer"}, "maxItems": 5000}, "crash"),
    ("minItems 100000", {"type": "array", "items": {"type": "integer"}, "minItems": 100_000},
     "huge grammar, unfinishable answer"),
    ("additionalProperties maxLength 1500",
     {"type": "object", "additionalProperties": {"type": "string", "maxLength": 1500}}, "crash"),
    ("nested arrays with maxItems 1500", _nested_arrays(3, max_items=1500), "crash"),
    ("objects nested 200 deep", _nested_objects(200), "huge grammar"),
    ("5000 optional properties",
     {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(5000)}}, "converter"),
    ("enum of 20000 values", {"enum": [f"value-{i}" for i in range(20_000)]}, "slow"),
    ("enum of 1000 values", {"enum": [f"value-{i}" for i in range(1000)]}, "slow"),
    ("anyOf with 200 branches",
     {"anyOf": [{"type": "object", "properties": {f"k{i}": {"type": "integer"}}, "required": [f"k{i}"]}
                for i in range(200)]}, "slow"),
    ("anyOf inside anyOf, 1024 alternatives",
     {"anyOf": [{"anyOf": [{"const": f"{i}-{j}"} for j in range(32)]} for i in range(32)]}, "slow"),
    ("anyOf with 2000 branches",
     {"anyOf": [{"type": "object", "properties": {f"k{i}": {"type": "integer"}}, "required": [f"k{i}"]}
                for i in range(2000)]}, "slow"),
    ("recursive $ref", {"$defs": {"node": {"type": "object", "properties": {
        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}}, "$ref": "#/$defs/node"},
     "recursive"),
    ("$ref to the root", {"type": "object", "properties": {"next": {"$ref": "#"}}}, "recursive"),
    ("giant pattern alternation",
     {"type": "string", "pattern": "^(" + "|".join(f"w{i}" for i in range(20_000)) + ")$"}, "slow"),
    ("pattern repeated 1500 times", {"type": "string", "pattern": "^a{0,1500}$"}, "crash"),
    ("pattern with 3000 nested groups", {"type": "string", "pattern": "^" + "(" * 3000 + "a" + ")" * 3000 + "$"},
     "converter"),
    ("pattern repeating an empty alternative", {"type": "string", "pattern": "^(|a)+$"}, "crash"),
    ("pattern repeating an empty group", {"type": "string", "pattern": "^()*$"}, "crash"),
    ("two-megabyte const", {"const": "x" * 2_000_000}, "huge grammar"),
]

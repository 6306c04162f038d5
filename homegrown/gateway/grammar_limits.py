"""Size and complexity caps on the JSON schemas a caller can turn into a llama.cpp grammar.

A request's ``response_format`` schema and its tools' ``parameters`` become a GBNF grammar that llama.cpp
parses when generation starts. When llama.cpp rejects a grammar it returns no sampler, and llama-cpp-python
then dereferences the null pointer: the whole process dies. Some grammars it accepts still cost seconds per
token. What was measured with llama-cpp-python 0.3.36 (SmolLM2-135M vocabulary):

- ``{"type": "string", "maxLength": 1500}`` (and anything above about 1000): the converter writes 1500
  nested optional groups, and llama.cpp's ``MAX_REPETITION_THRESHOLD`` (2000 rules created inside a
  repeated group) rejects it -> crash. The same for ``maxItems``, ``additionalProperties`` with a long
  ``maxLength``, and ``{m,n}`` in a ``pattern``.
- a repetition of something that can be empty (``pattern: "^(|a)+$"``, ``"^()*$"``) is left-recursive in
  llama.cpp's expansion -> rejected -> crash.
- 20,000 enum values, or a 20,000-way alternation in a pattern, parse but take about 19 s for 8 tokens;
  2,000 ``anyOf`` branches 1.5 s.
- 5,000 optional properties, or a pattern with 3,000 nested groups, overflow the Python converter's
  recursion; an object nested 300 deep makes a 380 kB grammar.

:func:`check_json_schema` rejects such schemas before any grammar is built (:class:`SchemaTooComplex`, a
``ValueError`` naming the keyword and the limit), and :func:`check_grammar` checks the generated GBNF text
the way llama.cpp's parser will see it. :func:`check_response_format` and :func:`check_tools` run both on
a request's fields, along the same code path the model backend uses, without calling into llama.cpp.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# Caps on the schema. Each is well inside what llama.cpp and the converter handle (see the module docstring).
MAX_SCHEMA_CHARS = 64 * 1024  # the schema as compact JSON
MAX_SCHEMA_DEPTH = 16  # subschemas inside subschemas
MAX_JSON_DEPTH = 64  # dicts and lists inside each other, anywhere in the schema
MAX_STRING_LENGTH_BOUND = 500  # minLength / maxLength
MAX_ITEMS_BOUND = 256  # minItems / maxItems
MAX_PROPERTIES_BOUND = 64  # minProperties / maxProperties
MAX_PROPERTIES_PER_OBJECT = 128
MAX_PROPERTIES_TOTAL = 512
MAX_ENUM_VALUES = 256  # per enum
MAX_ENUM_VALUES_TOTAL = 1024
MAX_BRANCHES = 32  # per anyOf / oneOf / allOf
MAX_BRANCHES_TOTAL = 128
MAX_PREFIX_ITEMS = 64
MAX_PATTERN_CHARS = 512
MAX_PATTERN_GROUP_DEPTH = 32
# Caps on the generated grammar.
# llama.cpp itself copes with large grammars (100 strings of maxLength 480: 430 kB, 0.05 s to parse); these
# bound the memory and the time of the check.
MAX_GRAMMAR_CHARS = 512 * 1024
MAX_GRAMMAR_SYMBOLS = 131_072  # named rules plus the ones llama.cpp generates for groups and repetitions
# llama.cpp rejects a repetition when (rules created inside the repeated item) x (repetitions) reaches 2000
# (MAX_REPETITION_THRESHOLD in llama-grammar.cpp); the margin covers differences between llama.cpp versions.
NATIVE_REPETITION_THRESHOLD = 2000
MAX_REPETITION_COST = 1500

_BOUNDS = {
    "minLength": MAX_STRING_LENGTH_BOUND,
    "maxLength": MAX_STRING_LENGTH_BOUND,
    "minItems": MAX_ITEMS_BOUND,
    "maxItems": MAX_ITEMS_BOUND,
    "minContains": MAX_ITEMS_BOUND,
    "maxContains": MAX_ITEMS_BOUND,
    "minProperties": MAX_PROPERTIES_BOUND,
    "maxProperties": MAX_PROPERTIES_BOUND,
}
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_VALUES = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
                  "unevaluatedItems", "unevaluatedProperties", "additionalItems")


class SchemaTooComplex(ValueError):
    """A schema (or the grammar made from it) is over one of the caps; ``keyword`` and ``limit`` say which."""

    def __init__(self, where: str, keyword: str, message: str, limit: int | None = None):
        self.where = where
        self.keyword = keyword
        self.limit = limit
        super().__init__(f"{where}: {message}")


def check_response_format(response_format: dict[str, Any] | None) -> None:
    """Raise ``ValueError`` (:class:`SchemaTooComplex` for a cap) unless the grammar for this OpenAI
    ``response_format`` dict (``ResponseFormat.to_openai()``) is safe to hand to llama.cpp; None is fine.

    Builds the grammar text exactly as the model backend will (pure Python; llama.cpp parses it only when
    generation starts), so the check and the backend cannot disagree.
    """
    from homegrown.training.llama_cpp_util import grammar_for_response_format

    grammar_for_response_format(response_format)


def check_tools(tools: list[dict[str, Any]] | None) -> None:
    """Raise ``ValueError`` (:class:`SchemaTooComplex` for a cap) unless the tool-call grammar for these
    OpenAI tools is safe to hand to llama.cpp; None or an empty list is fine.

    Checks the grammar for all tools with parallel calls, which contains every grammar a ``tool_choice``
    can select.
    """
    if not tools:
        return
    from homegrown.training.llama_cpp_util import grammar_for_tool_calls

    grammar_for_tool_calls(tools)


def check_json_schema(schema: Any, where: str) -> None:
    """Raise :class:`SchemaTooComplex` when ``schema`` is over a cap; ``where`` (e.g. ``"response_format"``)
    starts the message. Walks the schema without recursion, so even a hostile depth cannot overflow."""
    _check_json_depth(schema, where)
    size = len(json.dumps(schema, separators=(",", ":")))
    if size > MAX_SCHEMA_CHARS:
        raise SchemaTooComplex(where, "size", f"the schema is {size} characters of JSON; the limit is "
                               f"{MAX_SCHEMA_CHARS}", MAX_SCHEMA_CHARS)
    totals = {"properties": 0, "enum": 0, "branches": 0}
    for node, path, depth in _subschemas(schema):
        if depth > MAX_SCHEMA_DEPTH:
            raise SchemaTooComplex(where, "depth", f"subschemas are nested more than {MAX_SCHEMA_DEPTH} deep "
                                   f"(at {path})", MAX_SCHEMA_DEPTH)
        _check_node(node, path, where, totals)
    _check_refs(schema, where)


def check_grammar(grammar: str, where: str) -> None:
    """Raise :class:`SchemaTooComplex` unless llama.cpp will accept this GBNF text, quickly.

    Follows llama.cpp's parser (``llama_grammar_parser::parse``): the symbols it creates for groups and
    repetitions, its repetition threshold, undefined rules, and left recursion (its parser rejects those,
    which llama-cpp-python turns into a crash).
    """
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise SchemaTooComplex(where, "grammar", f"the grammar for this schema is {len(grammar)} characters; "
                               f"the limit is {MAX_GRAMMAR_CHARS}; simplify the schema", MAX_GRAMMAR_CHARS)
    parsed = _GbnfParser(grammar, where).parse()
    undefined = sorted(parsed.referenced - set(parsed.rules))
    if undefined:
        raise SchemaTooComplex(where, "grammar", f"the grammar refers to undefined rules {undefined[:5]}")
    _check_left_recursion(parsed, where)


# ------------------------------------------------------------------------------------------------------------
# schema walk


def _check_json_depth(value: Any, where: str) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise SchemaTooComplex(where, "depth", f"the schema nests objects and arrays more than "
                                   f"{MAX_JSON_DEPTH} deep", MAX_JSON_DEPTH)
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def _subschemas(schema: Any) -> Iterator[tuple[dict[str, Any], str, int]]:
    """Every subschema (dict) with its JSON pointer and nesting depth (the root is 1)."""
    stack: list[tuple[Any, str, int]] = [(schema, "#", 1)]
    while stack:
        node, path, depth = stack.pop()
        if not isinstance(node, dict):
            continue
        yield node, path, depth
        for key in _SCHEMA_MAPS:
            children = node.get(key)
            if isinstance(children, dict):
                stack.extend((child, f"{path}/{key}/{_escape(name)}", depth + 1)
                             for name, child in children.items())
        for key in _SCHEMA_LISTS:
            children = node.get(key)
            if isinstance(children, list):
                stack.extend((child, f"{path}/{key}/{i}", depth + 1) for i, child in enumerate(children))
        for key in _SCHEMA_VALUES:
            child = node.get(key)
            if isinstance(child, list):  # draft-4 style tuple "items"
                stack.extend((c, f"{path}/{key}/{i}", depth + 1) for i, c in enumerate(child))
            elif isinstance(child, dict):
                stack.append((child, f"{path}/{key}", depth + 1))


def _escape(name: str) -> str:
    return str(name).replace("~", "~0").replace("/", "~1")


def _check_node(node: dict[str, Any], path: str, where: str, totals: dict[str, int]) -> None:
    for keyword, limit in _BOUNDS.items():
        if keyword not in node:
            continue
        value = node[keyword]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SchemaTooComplex(where, keyword, f"{keyword} at {path} must be a non-negative integer")
        if value > limit:
            raise SchemaTooComplex(where, keyword, f"{keyword} is {value} at {path}; the limit is {limit} "
                                   "(a grammar cannot enforce longer bounds)", limit)
    properties = node.get("properties")
    if isinstance(properties, dict):
        if len(properties) > MAX_PROPERTIES_PER_OBJECT:
            raise SchemaTooComplex(where, "properties", f"{len(properties)} properties at {path}; the limit "
                                   f"is {MAX_PROPERTIES_PER_OBJECT} per object", MAX_PROPERTIES_PER_OBJECT)
        totals["properties"] += len(properties)
        if totals["properties"] > MAX_PROPERTIES_TOTAL:
            raise SchemaTooComplex(where, "properties", f"more than {MAX_PROPERTIES_TOTAL} properties in "
                                   "the whole schema", MAX_PROPERTIES_TOTAL)
    enum = node.get("enum")
    if isinstance(enum, list):
        if len(enum) > MAX_ENUM_VALUES:
            raise SchemaTooComplex(where, "enum", f"{len(enum)} enum values at {path}; the limit is "
                                   f"{MAX_ENUM_VALUES}", MAX_ENUM_VALUES)
        totals["enum"] += len(enum)
        if totals["enum"] > MAX_ENUM_VALUES_TOTAL:
            raise SchemaTooComplex(where, "enum", f"more than {MAX_ENUM_VALUES_TOTAL} enum values in the "
                                   "whole schema", MAX_ENUM_VALUES_TOTAL)
    for keyword in ("anyOf", "oneOf", "allOf"):
        branches = node.get(keyword)
        if not isinstance(branches, list):
            continue
        if len(branches) > MAX_BRANCHES:
            raise SchemaTooComplex(where, keyword, f"{len(branches)} {keyword} branches at {path}; the limit "
                                   f"is {MAX_BRANCHES}", MAX_BRANCHES)
        totals["branches"] += len(branches)
        if totals["branches"] > MAX_BRANCHES_TOTAL:
            raise SchemaTooComplex(where, keyword, f"more than {MAX_BRANCHES_TOTAL} anyOf/oneOf/allOf "
                                   "branches in the whole schema", MAX_BRANCHES_TOTAL)
    prefix = node.get("prefixItems")
    if isinstance(prefix, list) and len(prefix) > MAX_PREFIX_ITEMS:
        raise SchemaTooComplex(where, "prefixItems", f"{len(prefix)} prefixItems at {path}; the limit is "
                               f"{MAX_PREFIX_ITEMS}", MAX_PREFIX_ITEMS)
    pattern = node.get("pattern")
    if pattern is not None:
        _check_pattern(pattern, path, where)


def _check_pattern(pattern: Any, path: str, where: str) -> None:
    if not isinstance(pattern, str):
        raise SchemaTooComplex(where, "pattern", f"pattern at {path} must be a string")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise SchemaTooComplex(where, "pattern", f"the pattern at {path} is {len(pattern)} characters; the "
                               f"limit is {MAX_PATTERN_CHARS}", MAX_PATTERN_CHARS)
    depth = deepest = 0
    escaped = in_class = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    if deepest > MAX_PATTERN_GROUP_DEPTH:
        raise SchemaTooComplex(where, "pattern", f"the pattern at {path} nests groups {deepest} deep; the "
                               f"limit is {MAX_PATTERN_GROUP_DEPTH}", MAX_PATTERN_GROUP_DEPTH)


def _check_refs(schema: Any, where: str) -> None:
    """Reject a ``$ref`` that leaves the document or leads back to itself (a recursive schema)."""
    refs: dict[str, str] = {}  # JSON pointer of a subschema -> the $ref it holds
    for node, path, _ in _subschemas(schema):
        ref = node.get("$ref")
        if ref is None:
            continue
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise SchemaTooComplex(where, "$ref", f"$ref at {path} must point inside the schema (\"#/...\"), "
                                   f"got {ref!r}")
        refs[path] = ref

    def refs_inside(pointer: str) -> list[str]:
        return [ref for path, ref in refs.items() if pointer == "#" or path == pointer or path.startswith(pointer + "/")]

    cycle = _find_cycle({ref: refs_inside(ref) for ref in set(refs.values())})
    if cycle is not None:
        raise SchemaTooComplex(where, "$ref", f"$ref {cycle!r} refers to itself (recursive schemas are not "
                               "supported)")


def _find_cycle(edges: dict[str, list[str]]) -> str | None:
    """A node on a cycle of this directed graph, or None; depth-first without recursion."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start, first in edges.items():
        if state.get(start):
            continue
        state[start] = 1
        stack = [(start, iter(first))]
        while stack:
            current, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[current] = 2
                stack.pop()
            elif state.get(child) == 1:
                return child
            elif not state.get(child):
                state[child] = 1
                stack.append((child, iter(edges.get(child, []))))
    return None


# ------------------------------------------------------------------------------------------------------------
# GBNF, read the way llama.cpp reads it


@dataclass
class _Terminal:
    empty: bool  # the empty literal ""


@dataclass
class _Ref:
    rule: str


@dataclass
class _Repeat:
    item: Any
    min: int
    max: int | None  # None: unbounded


@dataclass
class _Grammar:
    rules: dict[str, list[list[Any]]]  # rule name (groups get generated names) -> alternatives -> items
    referenced: set[str]


class _GbnfParser:
    """A small, non-recursive reading of GBNF that mirrors llama.cpp's ``parse_sequence`` bookkeeping."""

    def __init__(self, text: str, where: str):
        self.text = text
        self.where = where
        self.symbols: set[str] = set()
        self.generated = 0
        self.rules: dict[str, list[list[Any]]] = {}
        self.referenced: set[str] = set()

    def fail(self, message: str, limit: int | None = None) -> SchemaTooComplex:
        return SchemaTooComplex(self.where, "grammar", message, limit)

    def n_symbols(self) -> int:
        return len(self.symbols) + self.generated

    def new_symbol(self, count: int = 1) -> str:
        self.generated += count
        if self.n_symbols() > MAX_GRAMMAR_SYMBOLS:
            raise self.fail(f"the grammar for this schema needs more than {MAX_GRAMMAR_SYMBOLS} rules; simplify "
                            "the schema (fewer properties, shorter length bounds)", MAX_GRAMMAR_SYMBOLS)
        return f"#{self.generated}"

    def space(self, pos: int, newline_ok: bool) -> int:
        text, n = self.text, len(self.text)
        while pos < n:
            char = text[pos]
            if char in " \t" or (newline_ok and char in "\r\n"):
                pos += 1
            elif char == "#":
                while pos < n and text[pos] not in "\r\n":
                    pos += 1
            else:
                break
        return pos

    def name_end(self, pos: int) -> int:
        text, n = self.text, len(self.text)
        while pos < n and (text[pos].isascii() and (text[pos].isalnum() or text[pos] == "-")):
            pos += 1
        return pos

    def quoted_end(self, pos: int, close: str) -> int:
        """Index just past the closing ``close`` of a literal or character class starting at ``pos``."""
        text, n = self.text, len(self.text)
        while pos < n and text[pos] != close:
            pos += 2 if text[pos] == "\\" else 1
        if pos >= n:
            raise self.fail("the grammar has an unterminated literal")
        return pos + 1

    def parse(self) -> _Grammar:
        text, n = self.text, len(self.text)
        pos = self.space(0, True)
        while pos < n:
            end = self.name_end(pos)
            if end == pos:
                raise self.fail(f"the grammar has no rule name at offset {pos}")
            name = text[pos:end]
            self.symbols.add(name)
            pos = self.space(end, False)
            if not text.startswith("::=", pos):
                raise self.fail(f"the grammar expects ::= at offset {pos}")
            pos = self.parse_alternates(name, self.space(pos + 3, True))
            if pos < n and text[pos] in "\r\n":
                pos += 1
            elif pos < n:
                raise self.fail(f"the grammar expects a newline at offset {pos}")
            pos = self.space(pos, True)
        return _Grammar(self.rules, self.referenced)

    def parse_alternates(self, rule: str, pos: int) -> int:
        text, n = self.text, len(self.text)
        # One frame per open group: its generated name, alternatives, symbols before it, outer state.
        frames: list[dict[str, Any]] = []
        alternatives: list[list[Any]] = [[]]
        n_prev = 1
        nested = False
        while pos < n:
            char = text[pos]
            sequence = alternatives[-1]
            if char == '"':
                end = self.quoted_end(pos + 1, '"')
                sequence.append(_Terminal(empty=end == pos + 2))
                n_prev = 1
                pos = self.space(end, nested)
            elif char == "[":
                sequence.append(_Terminal(empty=False))
                n_prev = 1
                pos = self.space(self.quoted_end(pos + 1, "]"), nested)
            elif char == ".":
                sequence.append(_Terminal(empty=False))
                n_prev = 1
                pos = self.space(pos + 1, nested)
            elif char.isascii() and (char.isalnum() or char == "-"):
                end = self.name_end(pos)
                name = text[pos:end]
                self.symbols.add(name)
                self.referenced.add(name)
                sequence.append(_Ref(name))
                n_prev = 1
                pos = self.space(end, nested)
            elif char == "(":
                before = self.n_symbols()
                group = self.new_symbol()
                frames.append({"group": group, "alternatives": alternatives, "before": before, "nested": nested})
                alternatives = [[]]
                nested = True
                pos = self.space(pos + 1, True)
            elif char == "|":
                alternatives.append([])
                n_prev = 1
                pos = self.space(pos + 1, True)
            elif char == ")":
                if not frames:
                    break
                frame = frames.pop()
                self.rules[frame["group"]] = alternatives
                alternatives = frame["alternatives"]
                alternatives[-1].append(_Ref(frame["group"]))
                n_prev = max(1, self.n_symbols() - frame["before"])
                nested = frame["nested"]
                pos = self.space(pos + 1, nested)
            elif char in "*+?{":
                low, high, pos = self.repetition(pos, nested)
                if not sequence:
                    raise self.fail(f"the grammar has a repetition with nothing before it at offset {pos}")
                total = high if high not in (None, 0) else (low or 1)
                if n_prev * total >= MAX_REPETITION_COST:
                    raise self.fail(
                        f"the grammar for this schema repeats a group of {n_prev} rules up to {total} time(s), "
                        f"cost {n_prev * total}; the limit is {MAX_REPETITION_COST} (llama.cpp refuses "
                        f"{NATIVE_REPETITION_THRESHOLD}); lower maxLength, maxItems or the repetitions in a "
                        "pattern", MAX_REPETITION_COST)
                self.new_symbol(1 if high is None else max(high - low, 0))
                n_prev *= total
                sequence[-1] = _Repeat(sequence[-1], low, high)
            else:
                break
        if frames:
            raise self.fail("the grammar has an unclosed group")
        self.rules[rule] = alternatives
        return pos

    def repetition(self, pos: int, nested: bool) -> tuple[int, int | None, int]:
        char = self.text[pos]
        if char != "{":
            low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}[char]
            return low, high, self.space(pos + 1, nested)
        close = self.text.find("}", pos)
        if close < 0:
            raise self.fail("the grammar has an unclosed {m,n}")
        low_text, comma, high_text = self.text[pos + 1:close].partition(",")
        try:
            low = int(low_text)
            high = (int(high_text) if high_text.strip() else None) if comma else low
        except ValueError:
            raise self.fail(f"the grammar has a malformed repetition {self.text[pos:close + 1]!r}") from None
        if low > NATIVE_REPETITION_THRESHOLD or (high is not None and high > NATIVE_REPETITION_THRESHOLD):
            raise self.fail(f"the grammar repeats something {max(low, high or 0)} times; llama.cpp refuses more "
                            f"than {NATIVE_REPETITION_THRESHOLD}", NATIVE_REPETITION_THRESHOLD)
        return low, high, self.space(close + 1, nested)


def _check_left_recursion(grammar: _Grammar, where: str) -> None:
    """Refuse what ``llama_grammar_detect_left_recursion`` refuses.

    llama.cpp expands a repetition ``S*`` into ``S' ::= S S' |`` (``S?`` and ``S{m,n}`` into non-recursive
    rules with an empty alternative), then follows each rule's leftmost references, and past a reference
    whose rule has an empty alternative. A cycle there (e.g. from a pattern like ``(|a)+`` or ``()*``) makes
    it reject the grammar."""
    expanded: dict[str, list[list[str | None]]] = {}  # rule -> alternatives -> elements (None: a terminal)
    counter = 0

    def elements(item: Any) -> list[str | None]:
        nonlocal counter
        if isinstance(item, _Terminal):
            return [] if item.empty else [None]
        if isinstance(item, _Ref):
            return [item.rule]
        inner = elements(item.item)
        out = inner * item.min
        if item.max is None or item.max > item.min:
            counter += 1
            name = f"#repeat{counter}"
            expanded[name] = [inner + ([name] if item.max is None else []), []]
            out.append(name)
        return out

    for name, alternatives in grammar.rules.items():
        expanded[name] = [[e for item in alternative for e in elements(item)] for alternative in alternatives]
    may_be_empty = {name: any(not alt for alt in alternatives) for name, alternatives in expanded.items()}
    edges: dict[str, list[str]] = {}
    for name, alternatives in expanded.items():
        targets: list[str] = []
        for alternative in alternatives:
            for element in alternative:
                if element is None:
                    break
                targets.append(element)
                if not may_be_empty.get(element, False):
                    break
        edges[name] = targets
    if _find_cycle(edges) is not None:
        raise SchemaTooComplex(where, "grammar", "the grammar is left-recursive (a repetition of something that "
                               "can be empty, e.g. a pattern like '(|a)+' or '()*'), which llama.cpp refuses; "
                               "rewrite the schema or pattern")

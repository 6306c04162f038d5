"""Small helpers around llama.cpp (llama-cpp-python) and GGUF files shared by export and serving checks."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from homegrown.data.parallel import usable_cpus

# general.file_type values (llama.cpp's llama_ftype) that homegrown writes or reads, by their usual name.
FILE_TYPE_NAMES: dict[int, str] = {
    int(gguf.LlamaFileType.ALL_F32): "f32",
    int(gguf.LlamaFileType.MOSTLY_F16): "f16",
    int(gguf.LlamaFileType.MOSTLY_BF16): "bf16",
    int(gguf.LlamaFileType.MOSTLY_Q4_1): "q4_1",
    int(gguf.LlamaFileType.MOSTLY_Q8_0): "q8_0",
    int(gguf.LlamaFileType.MOSTLY_Q4_K_M): "q4_k_m",
}


def default_threads() -> int:
    """Threads for llama.cpp: half the CPUs this process may use, 1 to 4.

    A small model gains nothing from more, and llama.cpp's threads spin-wait on each other: when every core is
    also busy with other work, using all of them makes generation many times slower, not faster.
    """
    return max(1, min(4, usable_cpus() // 2))


@lru_cache(maxsize=1)
def cpu_has_amx() -> bool:
    """Whether llama.cpp detected Intel AMX on this CPU (its AMX kernels then serve quantized weights)."""
    import llama_cpp

    return b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info()


_default_params_lock = threading.Lock()


@contextmanager
def _extra_buffer_types_disabled() -> Iterator[None]:
    """Load models without llama.cpp's "extra buffer types" (AMX / repacked weights) inside this block.

    ``Llama`` does not expose ``use_extra_bufts``, so the default model parameters it starts from are swapped
    for the duration of the load. llama.cpp's AMX matmul crashes (SIGSEGV in ggml_backend_amx_mul_mat) on some
    AMX machines for Q4/Q8 weights; plain CPU kernels are correct everywhere and little slower for small models.
    """
    import llama_cpp.llama as llama_module

    original = llama_module.llama_cpp.llama_model_default_params

    def without_extra_buffer_types():
        params = original()
        params.use_extra_bufts = False
        return params

    with _default_params_lock:
        llama_module.llama_cpp.llama_model_default_params = without_extra_buffer_types
        try:
            yield
        finally:
            llama_module.llama_cpp.llama_model_default_params = original


def load_llama(
    gguf_path: Path | str,
    *,
    vocab_only: bool = False,
    logits_all: bool = False,
    n_ctx: int = 2048,
    n_threads: int | None = None,
    seed: int = 0,
    extra_buffer_types: bool | None = None,
) -> Any:
    """Open a GGUF file with llama-cpp-python, quietly; raises FileNotFoundError when the file is missing.

    ``vocab_only=True`` loads the tokenizer alone (fast, no weights); ``logits_all=True`` keeps the logits of
    every evaluated position in ``.scores`` (needed for perplexity). ``extra_buffer_types`` lets llama.cpp
    repack weights for AMX / wide SIMD; by default it is off on AMX CPUs, where those kernels can crash.
    """
    from llama_cpp import Llama

    path = Path(gguf_path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    if extra_buffer_types is None:
        extra_buffer_types = not cpu_has_amx()
    threads = n_threads or default_threads()
    kwargs = {
        "model_path": str(path),
        "vocab_only": vocab_only,
        "logits_all": logits_all,
        "n_ctx": n_ctx,
        "n_batch": min(n_ctx, 512),
        "n_threads": threads,
        "n_threads_batch": threads,
        "seed": seed,
        "verbose": False,
    }
    if extra_buffer_types:
        return Llama(**kwargs)
    with _extra_buffer_types_disabled():
        return Llama(**kwargs)


def grammar_for_response_format(response_format: dict[str, Any] | None) -> Any | None:
    """The llama.cpp grammar an OpenAI ``response_format`` asks for, or None for plain text.

    ``{"type": "json_object"}`` constrains decoding to any JSON object; ``{"type": "json_schema",
    "json_schema": {"schema": {...}}}`` (or llama-cpp-python's ``{"type": "json_object", "schema": {...}}``)
    to that schema's structure. llama.cpp's converter covers types, required and optional properties,
    enums, ``$ref``/``$defs``, ``oneOf``/``anyOf`` and string patterns; what it cannot express (``if``/
    ``then`` and most numeric bounds) is still checked after generation by whoever validates the answer.
    Raises ValueError for an unknown type or a schema the converter rejects, and
    :class:`~homegrown.gateway.grammar_limits.SchemaTooComplex` (a ValueError) for a schema or grammar over
    the caps that keep llama.cpp from crashing or stalling on it.
    """
    if not response_format or response_format.get("type", "text") == "text":
        return None
    kind = response_format.get("type")
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise ValueError("response_format json_schema needs json_schema.schema (an object)")
    elif kind == "json_object":
        schema = response_format.get("schema")
    else:
        raise ValueError(f"response_format type must be text, json_object or json_schema, got {kind!r}")
    if schema is not None:
        from homegrown.gateway.grammar_limits import check_json_schema

        check_json_schema(schema, "response_format")
    # Key order matters: the grammar emits properties in the schema's order, which should be the order the
    # model learned, so the schema is not re-sorted.
    return _grammar(json.dumps(_tagged_unions_as_one_of(schema)) if schema is not None else None)


def _tagged_unions_as_one_of(node: Any) -> Any:
    """The schema with every tagged union written as ``allOf: [{if: {type: const X}, then: S_X}, ...]``
    rewritten as ``oneOf: [S_X, ...]``.

    Both say "the fields depend on the tag", but llama.cpp's converter ignores ``if``/``then``: it would allow
    only the tag and no other field. Each ``then`` schema must describe the whole object (as the page
    schema's section types do), since the rewrite drops the object's own properties."""
    if isinstance(node, list):
        return [_tagged_unions_as_one_of(item) for item in node]
    if not isinstance(node, dict):
        return node
    branches = node.get("allOf")
    if isinstance(branches, list) and branches and all(
            isinstance(b, dict) and set(b) == {"if", "then"} for b in branches):
        out = {k: v for k, v in node.items() if k in ("description", "title", "$defs")}
        out["oneOf"] = [_tagged_unions_as_one_of(b["then"]) for b in branches]
        return _tagged_unions_as_one_of(out) if "$defs" in out else out
    return {key: _tagged_unions_as_one_of(value) for key, value in node.items()}


@lru_cache(maxsize=32)
def _grammar(schema_json: str | None) -> Any:
    from llama_cpp import LlamaGrammar
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    from homegrown.gateway.grammar_limits import check_grammar

    if schema_json is None:
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    try:
        text = json_schema_to_gbnf(schema_json)
    except Exception as exc:  # the converter raises plain Exceptions for unsupported constructs
        raise ValueError(f"cannot turn the response_format schema into a grammar: {exc}") from exc
    check_grammar(text, "response_format")  # llama.cpp parses it only at generation, and crashes if it cannot
    return LlamaGrammar.from_string(text, verbose=False)


def read_metadata(gguf_path: Path | str) -> dict[str, Any]:
    """The key/value metadata of a GGUF file as plain Python values (arrays as lists), read without llama.cpp."""
    reader = gguf.GGUFReader(str(gguf_path))
    metadata: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        metadata[key] = field.contents()
    return metadata


def tensor_types(gguf_path: Path | str) -> dict[str, str]:
    """Tensor name -> GGML type name (``F32``, ``F16``, ``Q8_0``, ...) of a GGUF file."""
    reader = gguf.GGUFReader(str(gguf_path))
    return {tensor.name: tensor.tensor_type.name for tensor in reader.tensors}


def file_type_name(gguf_path: Path | str) -> str:
    """The file's ``general.file_type`` as a name such as ``q8_0`` (``ftype-N`` when unknown)."""
    value = read_metadata(gguf_path).get("general.file_type")
    if value is None:
        return "unknown"
    return FILE_TYPE_NAMES.get(int(value), f"ftype-{int(value)}")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of a 2-D float array, numerically stable."""
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def llama_cpp_logits(llm: Any, token_ids: list[int]) -> np.ndarray:
    """Logits for every position of ``token_ids`` from a model loaded with ``logits_all=True``; shape (n, vocab)."""
    if len(token_ids) > llm.n_ctx():
        raise ValueError(f"{len(token_ids)} tokens do not fit the context of {llm.n_ctx()}")
    llm.reset()
    llm.eval(token_ids)
    return np.array(llm.scores[: len(token_ids), :], dtype=np.float32)


# --------------------------------------------------------------------------------------------------------------
# Tool calls: the prompt a GGUF model is served, and the grammar its calls are decoded under


class ChatPromptRenderer:
    """The prompt text a GGUF model is served, exactly as training rendered it.

    :func:`homegrown.training.chat.to_training_messages` first (tools into the system message, earlier
    ``tool_calls`` as ``<tool_call>`` text, ``tool`` results as their own turn), then the chat template stored
    in the GGUF with the generation prompt: the text ``tokenizer.apply_chat_template(...,
    add_generation_prompt=True)`` gives on the merged model (:func:`check_tool_prompt_parity` checks it).
    """

    def __init__(self, llm: Any):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError("the GGUF file carries no chat template (tokenizer.chat_template)")
        eos_id, bos_id = llm.token_eos(), llm.token_bos()
        self.eos = llm._model.token_get_text(eos_id) if eos_id != -1 else ""
        bos = llm._model.token_get_text(bos_id) if bos_id != -1 else ""
        self._formatter = Jinja2ChatFormatter(template=template, eos_token=self.eos, bos_token=bos,
                                              stop_token_ids=[eos_id])

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> tuple[str, bool]:
        """``(prompt text, whether the template already wrote the BOS token)``; ValueError on bad messages."""
        from homegrown.training.chat import to_training_messages

        rendered = self._formatter(messages=to_training_messages(messages, tools))
        return rendered.prompt, bool(rendered.added_special)


def tool_parameters(tool: dict[str, Any]) -> dict[str, Any]:
    """The ``parameters`` JSON schema of an OpenAI tool (any object when it has none)."""
    from homegrown.training.chat import tool_name

    parameters = tool["function"].get("parameters") or {"type": "object"}
    if not isinstance(parameters, dict):
        raise ValueError(f"tool {tool_name(tool)!r}: parameters must be a JSON schema object")  # noqa: TRY004
    return parameters


MAX_PARALLEL_CALLS = 4
_MAX_ENUM_RANGE = 256


def grammar_for_tool_calls(tools: list[dict[str, Any]], name: str | None = None, parallel: bool = True) -> Any:
    """The llama.cpp grammar for what follows ``<tool_call>``: ``{"name": N, "arguments": A}</tool_call>``
    where N is one of the offered tools (only ``name`` when given) and A follows that tool's ``parameters``,
    and with ``parallel`` up to three more ``\\n<tool_call>`` calls; after the last the model can only end
    its turn.

    The arguments object has its required properties first (in the schema's order), then the optional ones
    in any order, each value following its own schema: the model may write optional fields in the order
    it learned, which a fixed order would forbid. Small integer ranges become enums so that ``minimum`` and
    ``maximum`` hold too; what llama.cpp's converter cannot express (``uniqueItems``, wide numeric bounds)
    is left to validation after decoding. ValueError when a schema cannot be turned into a grammar, and
    :class:`~homegrown.gateway.grammar_limits.SchemaTooComplex` (a ValueError) when a schema or the grammar
    is over the caps that keep llama.cpp from crashing or stalling on it."""
    from homegrown.gateway.grammar_limits import check_json_schema
    from homegrown.training.chat import tool_name

    chosen = [tool for tool in tools if name is None or tool_name(tool) == name]
    if not chosen:
        raise ValueError(f"no offered tool is named {name!r}" if name else "no tools to call")
    offered = [(tool_name(tool), tool_parameters(tool)) for tool in chosen]
    for tool_id, parameters in offered:
        check_json_schema(parameters, f"tool {tool_id!r} parameters")
    return _tool_grammar(json.dumps(offered), parallel and name is None)


def _integer_ranges_as_enums(node: Any) -> Any:
    if isinstance(node, list):
        return [_integer_ranges_as_enums(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _integer_ranges_as_enums(value) for key, value in node.items()}
    items = out.get("items")
    if out.get("type") == "array" and out.get("uniqueItems") and isinstance(items, dict) \
            and isinstance(items.get("enum"), list) and "maxItems" not in out:
        out["maxItems"] = len(items["enum"])  # unique items from an enum: never more than the enum has
    if out.get("type") == "integer" and ("minimum" in out or "exclusiveMinimum" in out) \
            and ("maximum" in out or "exclusiveMaximum" in out):
        low = out["minimum"] if "minimum" in out else out["exclusiveMinimum"] + 1
        high = out["maximum"] if "maximum" in out else out["exclusiveMaximum"] - 1
        if isinstance(low, int) and isinstance(high, int) and 0 <= high - low < _MAX_ENUM_RANGE:
            return {key: value for key, value in out.items() if key == "description"} | {
                "enum": list(range(low, high + 1))}
    return out


@lru_cache(maxsize=32)
def _tool_grammar(offered_json: str, parallel: bool) -> Any:
    from llama_cpp import LlamaGrammar
    from llama_cpp.llama_grammar import SchemaConverter

    from homegrown.gateway.grammar_limits import check_grammar
    from homegrown.training.chat import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

    converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)

    def literal(text: str) -> str:
        return converter._format_literal(text)

    bodies = []
    try:
        for index, (tool_id, parameters) in enumerate(json.loads(offered_json)):
            schema = converter.resolve_refs(_integer_ranges_as_enums(_tagged_unions_as_one_of(parameters)),
                                            f"tool-{index}")
            prefix = f"tool-{index}-args"
            properties = schema.get("properties")
            if schema.get("type", "object") == "object" and isinstance(properties, dict) and properties \
                    and schema.get("additionalProperties") in (None, False) and not \
                    {"oneOf", "anyOf", "allOf", "$ref"} & set(schema):
                required = [key for key in properties if key in set(schema.get("required") or [])]
                optional = [key for key in properties if key not in required]
                kv = {key: converter._add_rule(
                    f"{prefix}-{key}-kv",
                    f'{literal(json.dumps(key))} space ":" space {converter.visit(properties[key], f"{prefix}-{key}")}')
                    for key in properties}
                rule = '"{" space ' + ' "," space '.join(kv[key] for key in required)
                if optional:
                    choice = " | ".join(kv[key] for key in optional)
                    more = f'( "," space ( {choice} ) ){{0,{len(optional) - (0 if required else 1)}}}'
                    rule += f" {more}" if required else f" ( ( {choice} ) {more} )?"
                arguments = converter._add_rule(prefix, rule + ' "}" space')
            else:
                arguments = converter.visit(schema, prefix)
            bodies.append(converter._add_rule(
                f"tool-{index}-call",
                f'"{{" space {literal(json.dumps("name"))} space ":" space {literal(json.dumps(tool_id))} space '
                f'"," space {literal(json.dumps("arguments"))} space ":" space {arguments} "}}" space'))
    except Exception as exc:  # the converter raises plain Exceptions for unsupported constructs
        raise ValueError(f"cannot turn the tool schemas into a grammar: {exc}") from exc
    body = converter._add_rule("tool-call", " | ".join(bodies))
    close = literal(TOOL_CALL_CLOSE)
    root = f"{body} {close}"
    if parallel:
        root += f' ("\\n" {literal(TOOL_CALL_OPEN)} {body} {close}){{0,{MAX_PARALLEL_CALLS - 1}}}'
    text = f"root ::= {root}\n{converter.format_grammar()}"
    check_grammar(text, "tools")  # llama.cpp parses it only at generation, and crashes if it cannot
    return LlamaGrammar.from_string(text, verbose=False)


TOOL_PARITY_TOOLS: list[dict[str, Any]] = [{
    "type": "function",
    "function": {
        "name": "create_booking",
        "description": "Book an event.",
        "parameters": {
            "type": "object",
            "properties": {"date": {"type": "string"}, "guests": {"type": "integer"},
                           "location": {"type": "string"}},
            "required": ["date", "guests"],
        },
    },
}]

TOOL_PARITY_CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "You are the booking assistant of a caterer."},
    {"role": "user", "content": "Please book 12 guests on 2026-06-01 in Oakland."},
    {"role": "assistant", "content": None, "tool_calls": [{
        "id": "call_parity0", "type": "function",
        "function": {"name": "create_booking",
                     "arguments": '{"date": "2026-06-01", "guests": 12, "location": "Oakland"}'}}]},
    {"role": "tool", "tool_call_id": "call_parity0", "content": '{"status": "confirmed", "booking_id": "B-17"}'},
    {"role": "assistant", "content": "Your booking B-17 for 12 guests on June 1 in Oakland is confirmed."},
]


def check_tool_prompt_parity(
    hf_dir: Path | str,
    gguf_path: Path | str,
    conversation: list[dict[str, Any]] | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> tuple[bool, dict[str, Any]]:
    """Train/serve parity for tool conversations: does the gateway serve the prompt training rendered?

    ``conversation`` (default :data:`TOOL_PARITY_CONVERSATION`: tools, a tool-call answer, a ``tool`` result
    and a final answer) is cut before each assistant turn. Each prompt is rendered as the gateway renders it
    (:class:`ChatPromptRenderer` on the GGUF's template, tokenized by llama.cpp as the backend does) and as
    training did (``to_training_messages`` then the Hugging Face tokenizer's ``apply_chat_template`` with the
    generation prompt), and the token ids must be equal. Every tool-call answer's training text must also
    read back, through the parser the gateway streams with, as the same calls (name and arguments).
    """
    from transformers import AutoTokenizer

    from homegrown.training.chat import TOOL_CALL_OPEN, ToolCallStream, to_training_messages

    conversation = conversation or TOOL_PARITY_CONVERSATION
    tools = tools if tools is not None else TOOL_PARITY_TOOLS
    cuts = [i for i, message in enumerate(conversation) if message.get("role") == "assistant" and i > 0]
    if not cuts:
        raise ValueError("the parity conversation needs an assistant answer after the first message")
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    llm = load_llama(gguf_path, vocab_only=True)
    try:
        renderer = ChatPromptRenderer(llm)
        mismatches, calls = [], []
        for cut in cuts:
            served, added_special = renderer.render(conversation[:cut], tools)
            served_ids = llm.tokenize(served.encode("utf-8"), add_bos=not added_special, special=True)
            trained = tokenizer.apply_chat_template(
                to_training_messages(conversation[:cut], tools), tokenize=False, add_generation_prompt=True)
            trained_ids = tokenizer.encode(trained, add_special_tokens=False)
            if served_ids != trained_ids:
                at = next((i for i, (a, b) in enumerate(zip(served_ids, trained_ids)) if a != b),
                          min(len(served_ids), len(trained_ids)))
                mismatches.append({"cut": cut, "first_difference": at, "served_ids": served_ids[at:at + 8],
                                   "trained_ids": trained_ids[at:at + 8]})
            expected = conversation[cut].get("tool_calls") or []
            if expected:
                answer = to_training_messages(conversation[:cut + 1], tools)[-1]["content"]
                stream = ToolCallStream()
                start = answer.find(TOOL_CALL_OPEN)
                stream.feed(answer[start + len(TOOL_CALL_OPEN):] if start >= 0 else "")
                got = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in stream.calls]
                want = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in expected]
                calls.append({"cut": cut, "round_trip": stream.complete and got == want})
    finally:
        llm.close()
    ok = not mismatches and all(c["round_trip"] for c in calls)
    return ok, {"prompts": len(cuts), "token_mismatches": mismatches, "tool_call_answers": calls}

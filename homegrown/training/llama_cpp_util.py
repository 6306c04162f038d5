"""Small helpers around llama.cpp (llama-cpp-python) and GGUF files shared by export and serving checks."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import gguf
import numpy as np

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
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        available = os.cpu_count() or 1
    return max(1, min(4, available // 2))


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
    Raises ValueError for an unknown type or a schema the converter rejects.
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
    from llama_cpp.llama_grammar import JSON_GBNF

    try:
        if schema_json is None:
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        return LlamaGrammar.from_json_schema(schema_json, verbose=False)
    except Exception as exc:  # the converter raises plain Exceptions for unsupported constructs
        raise ValueError(f"cannot turn the response_format schema into a grammar: {exc}") from exc


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

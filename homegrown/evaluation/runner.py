"""Answers from a model for the test examples, with latency and throughput.

A model is named by a spec string:

- a ``.gguf`` file (or a folder holding exactly one and no ``config.json``): llama.cpp on CPU; a base GGUF
  with a llama.cpp LoRA file applied is ``<base.gguf>?lora=<adapter.gguf>`` (:func:`lora_spec`), how a
  specialist is served;
- a Hugging Face model folder (``config.json`` + tokenizer): transformers ``generate``;
- an ``http(s)://`` URL of an OpenAI-compatible API, ``#model-name`` appended to pick the model
  (default ``"default"``); the key comes from the argument, ``HOMEGROWN_EVAL_API_KEY`` or ``OPENAI_API_KEY``;
- ``"incumbent"``: the answers the logged assistant gave, read from each example's ``logged_answer``.

Decoding is greedy everywhere. Every model gets the same request: the example's messages but the last, and
the example's ``tools`` offered as OpenAI tools (``tool_choice: auto``). A GGUF file answers through the
gateway's own llama.cpp backend (:class:`homegrown.gateway.backends.LlamaCppBackend`), so the eval sees what
served traffic gets: the prompt rendered as for training, tool calls decoded under the tools' grammar and
returned as OpenAI ``tool_calls``. A model folder renders the prompt as for training (``render_prompt``) and
writes calls as text; an API gets the tools natively. Calls come back into the answer text as
``<tool_call>{...}</tool_call>``, the form the metrics read.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from homegrown.evaluation.metrics import example_tools, reference_message, task_kind

INCUMBENT = "incumbent"
INCUMBENT_KEY = "logged_answer"


@dataclass
class Answer:
    """One generated answer; ``latency_s`` and ``completion_tokens`` are ``None`` for logged answers."""

    text: str
    latency_s: float | None = None
    completion_tokens: int | None = None


class Backend(Protocol):
    def generate(self, messages: list[dict[str, Any]], max_tokens: int,
                 response_format: dict[str, Any] | None = None,
                 tools: list[dict[str, Any]] | None = None) -> Answer: ...

    def close(self) -> None: ...


def _tool_call_text(name: str, arguments: str) -> str:
    """An OpenAI tool call returned by an API, written as the fine-tuned model writes one."""
    from homegrown.training.chat import render_tool_call

    try:
        return render_tool_call({"function": {"name": name, "arguments": arguments}})
    except ValueError:
        # Keep what the API sent, so the metrics see a call with unusable arguments, not no call at all.
        return f'<tool_call>{{"name": {json.dumps(name)}, "arguments": {json.dumps(arguments)}}}</tool_call>'


def with_tool_calls(content: str | None, tool_calls: list[dict[str, Any]] | None) -> str:
    """An answer's text and OpenAI ``tool_calls`` as one string, calls written as the model writes them."""
    text = content or ""
    for call in tool_calls or []:
        function = call.get("function") or {}
        text += _tool_call_text(function.get("name") or "", function.get("arguments") or "")
    return text


def prompt_messages(example: dict[str, Any]) -> list[dict[str, Any]]:
    """The request an example makes: its OpenAI messages but the last (the reference answer)."""
    messages = example.get("messages")
    if isinstance(messages, str):
        messages = json.loads(messages)
    if not messages or len(messages) < 2:
        raise ValueError(f"example {example.get('example_id', '?')} needs a prompt and an answer message")
    render_prompt(example)  # the same errors for a malformed example as training gives
    return [dict(message) for message in messages[:-1]]


def render_prompt(example: dict[str, Any]) -> list[dict[str, str]]:
    """The prompt messages for an example: all messages but the last, rendered exactly as for training
    (``homegrown.training.chat``: tools described in the system message, earlier tool calls as
    ``<tool_call>`` text), so every model, local or behind an API, sees the same text."""
    from homegrown.training.chat import to_prompt_completion

    messages = example.get("messages")
    if isinstance(messages, str):
        messages = json.loads(messages)
    if not messages or len(messages) < 2:
        raise ValueError(f"example {example.get('example_id', '?')} needs a prompt and an answer message")
    return to_prompt_completion({"messages": list(messages), "tools": example_tools(example)})["prompt"]


class GGUFBackend:
    """A GGUF file through the gateway's llama.cpp backend: the same rendering, grammar and tool-call parsing
    as served traffic, greedy. With ``lora``, that adapter is applied as the gateway's specialist applies it."""

    _ADAPTER = "eval"

    def __init__(self, path: Path, n_ctx: int = 4096, n_threads: int | None = None, lora: Path | None = None):
        from homegrown.gateway.backends import ADAPTER_KEY, LlamaCppBackend

        self.backend = LlamaCppBackend(path, n_ctx=n_ctx, n_threads=n_threads, name=path.stem, timeout_s=3600,
                                       adapters={self._ADAPTER: lora} if lora is not None else None)
        self.metadata = {ADAPTER_KEY: self._ADAPTER} if lora is not None else None

    def generate(self, messages: list[dict[str, Any]], max_tokens: int,
                 response_format: dict[str, Any] | None = None,
                 tools: list[dict[str, Any]] | None = None) -> Answer:
        from homegrown.gateway.schemas import ChatCompletionRequest

        request = ChatCompletionRequest(
            model=self.backend.name, messages=messages, max_tokens=max_tokens, temperature=0.0, seed=0,
            tools=tools, response_format=response_format, metadata=self.metadata)
        start = time.perf_counter()
        completion = self.backend.complete(request)
        latency = time.perf_counter() - start
        return Answer(text=with_tool_calls(completion.text, completion.tool_calls), latency_s=latency,
                      completion_tokens=completion.completion_tokens)

    def close(self) -> None:
        self.backend.close()


class HFBackend:
    """A transformers model folder, greedy ``generate`` on CPU (or the first GPU when there is one)."""

    def __init__(self, folder: Path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        if self.tokenizer.chat_template is None:
            raise ValueError(f"the tokenizer in {folder} has no chat template")
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(self.device)
        self.model.eval()

    def generate(self, messages: list[dict[str, Any]], max_tokens: int,
                 response_format: dict[str, Any] | None = None,
                 tools: list[dict[str, Any]] | None = None) -> Answer:
        # transformers has no grammar-constrained decoding: ``response_format`` and the tool grammar are not
        # applied here, so a float model folder's JSON validity is its unconstrained one.
        from homegrown.training.chat import to_training_messages

        prompt = self.tokenizer.apply_chat_template(
            to_training_messages(messages, tools), add_generation_prompt=True, tokenize=False)
        inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(self.device)
        start = time.perf_counter()
        with self.torch.no_grad():
            output = self.model.generate(
                **inputs, max_new_tokens=max_tokens, do_sample=False,
                eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id
                or self.tokenizer.eos_token_id,
            )
        latency = time.perf_counter() - start
        new_tokens = output[0, inputs["input_ids"].shape[1]:]
        text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        completion_tokens = int((new_tokens != self.tokenizer.eos_token_id).sum())
        return Answer(text=text.strip(), latency_s=latency, completion_tokens=completion_tokens)

    def close(self) -> None:
        del self.model


class EndpointBackend:
    """Any OpenAI-compatible chat completions API, through the official ``openai`` client."""

    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 120.0):
        from openai import OpenAI

        base_url, _, model = url.partition("#")
        self.model = model or "default"
        key = api_key or os.environ.get("HOMEGROWN_EVAL_API_KEY") or os.environ.get("OPENAI_API_KEY")
        # Local OpenAI-compatible servers accept any key; the client insists on having one.
        self.client = OpenAI(base_url=base_url, api_key=key or "not-needed", timeout=timeout_s, max_retries=2)

    def generate(self, messages: list[dict[str, Any]], max_tokens: int,
                 response_format: dict[str, Any] | None = None,
                 tools: list[dict[str, Any]] | None = None) -> Answer:
        start = time.perf_counter()
        extra: dict[str, Any] = {"response_format": response_format} if response_format else {}
        if tools:
            extra["tools"] = tools
        response = self.client.chat.completions.create(
            model=self.model, messages=messages, max_tokens=max_tokens, temperature=0.0, **extra,
        )
        latency = time.perf_counter() - start
        message = response.choices[0].message
        text = with_tool_calls(message.content, [call.model_dump() for call in message.tool_calls or []])
        tokens = response.usage.completion_tokens if response.usage is not None else None
        return Answer(text=text, latency_s=latency, completion_tokens=tokens)

    def close(self) -> None:
        self.client.close()


LORA_SEPARATOR = "?lora="


def lora_spec(base_gguf: Path | str, lora_gguf: Path | str) -> str:
    """The model spec of a base GGUF with a llama.cpp LoRA file applied (a specialist)."""
    return f"{base_gguf}{LORA_SEPARATOR}{lora_gguf}"


def gguf_and_lora(spec: str) -> tuple[Path | None, Path | None]:
    """The GGUF file a spec names (see :func:`gguf_file`) and the LoRA file applied to it, if any."""
    if spec.startswith(("http://", "https://")):
        return None, None
    if LORA_SEPARATOR in spec:
        base, lora = spec.split(LORA_SEPARATOR, 1)
        gguf = gguf_file(base)
        if gguf is None:
            raise ValueError(f"{spec!r}: a LoRA file needs a base GGUF file, not {base!r}")
        if not Path(lora).is_file():
            raise ValueError(f"{spec!r}: the LoRA file {lora} does not exist")
        return gguf, Path(lora)
    return gguf_file(spec), None


def gguf_file(spec: str) -> Path | None:
    """The GGUF file a model spec names: a ``.gguf`` file, or a folder holding exactly one and no
    ``config.json`` or ``adapter_config.json`` (None for anything else); ``ValueError`` for a folder holding
    several."""
    path = Path(spec)
    if path.is_file() and path.suffix == ".gguf":
        return path
    if not path.is_dir() or (path / "config.json").exists() or (path / "adapter_config.json").exists():
        return None
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) > 1:
        raise ValueError(f"{path} holds several GGUF files; name one: {[g.name for g in ggufs]}")
    return ggufs[0] if ggufs else None


def load_backend(spec: str, api_key: str | None = None) -> Backend:
    """The backend a model spec names (see the module docstring); ``ValueError`` when it names none."""
    if spec == INCUMBENT:
        raise ValueError("the incumbent has no backend: its answers come from the data (run_model)")
    if spec.startswith(("http://", "https://")):
        return EndpointBackend(spec, api_key=api_key)
    gguf, lora = gguf_and_lora(spec)
    if gguf is not None:
        return GGUFBackend(gguf, lora=lora)
    path = Path(spec)
    if path.is_dir():
        if (path / "config.json").exists():
            return HFBackend(path)
        if (path / "adapter_config.json").exists():
            raise ValueError(f"{path} is a LoRA adapter; evaluate the merged model folder instead")
    raise ValueError(
        f"unknown model spec {spec!r}: expected a .gguf file, a Hugging Face model folder, an http(s) "
        f"URL of an OpenAI-compatible API, or {INCUMBENT!r}")


def answer_budget(example: dict[str, Any], max_tokens: int) -> int:
    """How many tokens a model may generate for ``example``: half the reference answer's length in
    characters (about 1.5x its tokens, at ~3 characters a token) plus 48, never more than ``max_tokens``.

    Every model gets the same budget per example, so the comparison stays fair, and a model that rambles
    past the answer it should give stops there instead of costing the evaluation ``max_tokens`` each time.
    JSON (page) tasks get ``max_tokens`` whole.
    """
    if task_kind(example) == "json":
        return max_tokens  # a JSON answer cut short is no answer at all: page tasks get the whole cap
    reference = reference_message(example)
    text = reference.get("content") or ""
    if reference.get("tool_calls"):
        text += json.dumps(reference["tool_calls"], ensure_ascii=False)
    return max(1, min(max_tokens, 48 + len(text) // 2))


@lru_cache(maxsize=1)
def page_response_format() -> dict[str, Any]:
    """The ``response_format`` a page-builder app sends: JSON following the project's page schema."""
    from homegrown.data.validity import page_schema

    return {"type": "json_schema", "json_schema": {"name": "page", "schema": page_schema()}}


def response_format_for(example: dict[str, Any]) -> dict[str, Any] | None:
    """Page tasks ask for JSON in the page schema, as the page builder does when it calls the endpoint;
    every other task gets free text. All models get the same request, so the comparison stays fair."""
    return page_response_format() if task_kind(example) == "json" else None


def run_model(
    spec: str,
    examples: Sequence[dict[str, Any]],
    max_tokens: int = 1024,
    api_key: str | None = None,
    prompt_fn: Callable[[dict[str, Any]], list[dict[str, Any]]] = prompt_messages,
    *,
    sequential: bool = False,
) -> list[Answer]:
    """One greedy answer per example from the model ``spec`` names, timed; each answer is limited to
    ``answer_budget(example, max_tokens)`` tokens, page tasks ask for the page schema
    (``response_format_for``) and the example's tools are offered.

    A GGUF model answers all examples together (:class:`homegrown.evaluation.batched.BatchedGGUF`: the
    gateway backend's semantics, many answers per llama.cpp step); ``sequential=True`` sends them one at a
    time through the gateway's backend instead (the reference the batched path is checked against). A
    batched answer's ``latency_s`` is its share of the decoding time, so that tokens per second stays the
    model's throughput."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if spec == INCUMBENT:
        missing = [e.get("example_id", i) for i, e in enumerate(examples) if e.get(INCUMBENT_KEY) is None]
        if missing:
            raise ValueError(
                f"{len(missing)} of {len(examples)} examples have no {INCUMBENT_KEY!r} "
                f"(first: {missing[:3]}); evaluate the incumbent on the examples that have one")
        return [Answer(text=str(e[INCUMBENT_KEY])) for e in examples]
    prompts = [prompt_fn(e) for e in examples]
    requests = [(p, answer_budget(e, max_tokens), response_format_for(e), example_tools(e))
                for p, e in zip(prompts, examples, strict=True)]
    gguf, lora = (None, None) if sequential else gguf_and_lora(spec)
    if gguf is not None:
        return _answer_batched(gguf, requests, lora)
    backend = load_backend(spec, api_key=api_key)
    try:
        return [backend.generate(*request) for request in requests]
    finally:
        backend.close()


def _answer_batched(gguf: Path, requests: list[tuple], lora: Path | None = None) -> list[Answer]:
    """Batched answers, the ones this file already gave to the same requests taken from the answer cache."""
    from homegrown.evaluation.answer_cache import cached_answers
    from homegrown.evaluation.batched import BatchedGGUF, Request

    def generate(todo: list[tuple]) -> list[Answer]:
        model = BatchedGGUF(gguf, lora=lora)
        try:
            return model.answer([Request(*request) for request in todo])
        finally:
            model.close()

    return cached_answers(Path(gguf), Path(lora) if lora else None, requests, generate)


def answer_prompts(spec: str, prompts: Sequence[str], max_tokens: int = 128,
                   api_key: str | None = None) -> list[str]:
    """One-turn answers to ``prompts`` (each the user message), e.g. for ``privacy_probe``; a GGUF model
    answers them all together, as in :func:`run_model`."""
    requests = [([{"role": "user", "content": prompt}], max_tokens, None, None) for prompt in prompts]
    gguf, lora = gguf_and_lora(spec)
    if gguf is not None:
        return [answer.text for answer in _answer_batched(gguf, requests, lora)]
    backend = load_backend(spec, api_key=api_key)
    try:
        return [backend.generate(*request).text for request in requests]
    finally:
        backend.close()


def latency_summary(answers: Sequence[Answer]) -> dict[str, float]:
    """``latency_p50_s``, ``latency_p95_s`` and ``tokens_per_s`` over the timed answers ({} when none)."""
    timed = [a for a in answers if a.latency_s is not None]
    if not timed:
        return {}
    latencies = np.array([a.latency_s for a in timed], dtype=float)
    out = {"latency_p50_s": float(np.percentile(latencies, 50)),
           "latency_p95_s": float(np.percentile(latencies, 95))}
    counted = [a for a in timed if a.completion_tokens is not None]
    total_time = sum(a.latency_s for a in counted)
    if counted and total_time > 0:
        out["tokens_per_s"] = sum(a.completion_tokens for a in counted) / total_time
    return out

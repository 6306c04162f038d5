"""Many greedy answers from one GGUF model at once: the eval's fast path through llama.cpp.

:class:`homegrown.gateway.backends.LlamaCppBackend` answers one request at a time, which is right for served
traffic; the eval, which asks each model for a few thousand tokens, spent minutes on it. :class:`BatchedGGUF`
answers a whole list of requests instead:

- up to ``parallel`` answers are in flight in one llama.cpp context, each in its own sequence and KV stream,
  and one ``llama_decode`` computes the next token of all of them (K-quant weights such as the candidate's
  ``q4_k_m`` have batched kernels: 8-16 answers cost a few times one; the base's Q4_1 gains less);
- ``workers`` such contexts (one per CPU) each answer a share on one thread: llama.cpp's own threads
  spin-wait on each other, which on a busy 2-core machine made a 2-thread context slower than 1 thread;
- the longest budgets start first, so the last answers to finish are short ones;
- a new answer takes the KV cache of the prompt prefix it shares with any slot (the system prompts that
  describe the tools), copied from that slot, instead of evaluating it again;
- greedy under a grammar is the highest logit among the tokens the grammar allows: the unconstrained best
  token is checked first and, when the grammar allows it, it is the answer (no allowed token can score
  higher); only when it is refused is the whole vocabulary filtered, as llama-cpp-python does every token.

Each answer follows the backend's semantics step for step, built from the same helpers:

- the prompt is rendered by :class:`ChatPromptRenderer` (as for training) and tokenized as the backend does;
- the budget is ``min(max_tokens, n_ctx - prompt tokens)`` with the backend's ``n_ctx``;
- decoding is greedy; a ``response_format`` is decoded under :func:`grammar_for_response_format`;
- with tools offered (``tool_choice`` auto) the model starts freely and, the moment its text holds
  ``<tool_call>``, the rest is re-tokenized after that prefix and decoded under
  :func:`grammar_for_tool_calls` with what is left of the budget; calls are read by
  :class:`ToolCallStream`; without tools ``<tool_call>`` is a stop string;
- generation stops at an end-of-generation token, at a stop string (``<|im_end|>``, the model's end
  token; the text is cut there) or at the budget, checked as llama-cpp-python checks them.

Whether the answers are the sequential backend's, token for token, depends on llama.cpp's kernels. With
kernels that compute each token's row alone (the base's Q4_1 here) a token's logits do not depend on which
sequences share its batch, and the answers are identical (``tests/test_batched_eval.py``; 60 of 60 on the
demo split in ``bench/results/eval.md``), with one exception the decoder avoids (see
:meth:`_Decoder._decode`). Weights llama.cpp repacks for batched kernels (``q4_k_m`` on a CPU without AMX)
are multiplied by a GEMM over 4 rows at a time whose sums round differently from the one-row path the
sequential backend uses, and a greedy 135M model follows such differences into other answers (9 of 60
identical; with ``parallel=1`` all identical). Smaller gaps: the backend counts streamed chunks as tokens
and holds back text that may start a stop string, so around a multi-byte character split over tokens the
budget left for a call, or the whitespace before it, can differ.
"""

from __future__ import annotations

import ctypes
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from homegrown.data.parallel import usable_cpus
from homegrown.evaluation.runner import Answer, with_tool_calls
from homegrown.gateway.backends import IM_END, apply_lora, load_lora, open_prefix_length
from homegrown.training.chat import TOOL_CALL_OPEN, ToolCallStream, tool_choice_mode
from homegrown.training.llama_cpp_util import (
    ChatPromptRenderer,
    grammar_for_response_format,
    grammar_for_tool_calls,
    load_llama,
)

BATCH_TOKENS = 512  # tokens per llama_decode call (prompt chunks and one token per answer in flight)
# A slot copies another slot's cache when that gives it this many more prompt tokens: a copy moves the whole
# KV stream (a few MB), cheaper than evaluating a few dozen tokens on a CPU.
COPY_MIN_TOKENS = 32


@dataclass
class Request:
    """One answer to generate: what :meth:`GGUFBackend.generate` takes."""

    messages: list[dict[str, Any]]
    max_tokens: int
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None


@dataclass
class _Sequence:
    """An answer in flight in one slot (llama.cpp sequence id) of the context."""

    index: int  # position of the request in the caller's list
    prompt: list[int]  # the tokens this phase decodes after (the rendered prompt; in the call phase + prefix)
    budget: int  # tokens the answer may still produce in this phase
    stops: list[bytes]
    call_grammar: Any  # the tool grammar to switch to on ``<tool_call>`` (None: no switch)
    grammar: Any = None  # llama_sampler for the grammar this phase decodes under (None: free)
    phase: str = "free"  # "free" text (maybe under a response_format), then "call" after ``<tool_call>``
    pending: list[int] = field(default_factory=list)  # tokens to evaluate before the next sample
    generated: list[int] = field(default_factory=list)  # tokens produced in this phase
    data: bytes = b""  # their text
    produced: int = 0  # tokens produced in earlier phases
    before: str = ""  # free text written before the calls
    next_token: int = -1  # the token just sampled
    multibyte_fix: int = 0  # llama-cpp-python's countdown of tokens not checked around a split character
    seconds: float = 0.0  # this answer's share of the decode time

    def drop_sampler(self, lib: Any) -> None:
        if self.grammar is not None:
            lib.llama_sampler_free(self.grammar)
            self.grammar = None


class BatchedGGUF:
    """A GGUF model answering lists of requests (see the module docstring).

    ``workers`` contexts (default: one per CPU this process may use) each decode a share of the requests on
    one thread, with up to ``parallel`` answers in flight. Single-threaded contexts never wait on each
    other: llama.cpp's threads spin-wait at every operation, which on a busy 2-core machine makes one
    2-thread context many times slower than one thread, while two 1-thread contexts share the cores the
    way the OS hands them out. ``n_ctx`` is the context the sequential backend gives one request (4096 in
    the eval): budgets are cut to it the same way.
    """

    def __init__(self, gguf_path: Path | str, *, parallel: int = 8, workers: int | None = None,
                 n_ctx: int = 4096, lora: Path | str | None = None):
        import llama_cpp

        if parallel < 1:
            raise ValueError(f"parallel must be at least 1, got {parallel}")
        self.lib = llama_cpp
        self.path = Path(gguf_path)
        self.parallel = min(parallel, llama_cpp.llama_max_parallel_sequences())
        self.workers = max(1, workers or usable_cpus())
        self.n_ctx = n_ctx
        # The loader's own context only tokenizes; answers are decoded in the workers' contexts.
        self.llm = load_llama(self.path, n_ctx=256, n_threads=1)
        # A LoRA file (a specialist) is loaded once beside the model and applied in every worker's context.
        try:
            self.lora = load_lora(self.llm, Path(lora)) if lora is not None else None
        except ValueError:
            self.llm.close()
            raise
        self.renderer = ChatPromptRenderer(self.llm)
        self.vocab = self.llm._model.vocab
        self.n_vocab = self.llm.n_vocab()
        self.stops = [s.encode("utf-8") for s in {IM_END, self.renderer.eos} if s]
        self._pieces: dict[int, bytes] = {}

    def close(self) -> None:
        self.llm.close()

    def answer(self, requests: Sequence[Request]) -> list[Answer]:
        """One greedy answer per request, in the requests' order."""
        sequences = [self._start(i, r) for i, r in enumerate(requests)]
        if not sequences:
            return []
        # The longest answers first, each to the least loaded worker: the last to finish are short ones.
        sequences.sort(key=lambda s: -s.budget)
        shares: list[list[_Sequence]] = [[] for _ in range(min(self.workers, len(sequences)))]
        loads = [0] * len(shares)
        for sequence in sequences:
            least = loads.index(min(loads))
            shares[least].append(sequence)
            loads[least] += sequence.budget
        # A stream holds the prompt, the answer and the few tokens the call prefix may re-tokenize to.
        cells = max(len(s.prompt) + s.budget for s in sequences) + 16
        answers: dict[int, Answer] = {}
        try:
            with ThreadPoolExecutor(len(shares)) as pool:
                for done in pool.map(lambda share: _Decoder(self, cells).run(share), shares):
                    answers.update(done)
        finally:
            for sequence in sequences:
                sequence.drop_sampler(self.lib)
        return [answers[i] for i in range(len(sequences))]

    def _start(self, index: int, request: Request) -> _Sequence:
        """The first phase of a request, set up as :meth:`LlamaCppBackend._generate` sets it up."""
        tools = request.tools or None
        mode, forced = tool_choice_mode(tools, None)
        prompt, added_special = self.renderer.render(request.messages, tools)
        tokens = self.llm.tokenize(prompt.encode("utf-8"), add_bos=not added_special, special=True)
        room = self.n_ctx - len(tokens)
        if room < 1:
            raise ValueError(f"{self.path.name}: the prompt has {len(tokens)} tokens; the context is {self.n_ctx}")
        call_grammar = grammar_for_tool_calls(tools, forced) if mode != "none" else None
        stops = self.stops + ([TOOL_CALL_OPEN.encode("utf-8")] if mode == "none" else [])
        sequence = _Sequence(index=index, prompt=tokens,
                             budget=min(request.max_tokens, room), stops=stops, call_grammar=call_grammar)
        sequence.grammar = self.sampler(grammar_for_response_format(request.response_format))
        return sequence

    def sampler(self, grammar: Any) -> Any:
        """A llama.cpp grammar sampler for a ``LlamaGrammar`` (None for None)."""
        if grammar is None:
            return None
        return self.lib.llama_sampler_init_grammar(
            self.vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8"))

    def piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self.llm.detokenize([token])
        return piece


class _Decoder:
    """One llama.cpp context on one thread: ``parallel`` slots (sequence ids, each its own KV stream)
    answering a share of the requests."""

    def __init__(self, model: BatchedGGUF, cells: int):
        self.model = model
        self.lib = lib = model.lib
        self.parallel = model.parallel
        cells = min(model.n_ctx, -(-cells // 256) * 256)
        params = lib.llama_context_params.from_buffer_copy(model.llm.context_params)
        params.n_ctx = cells * self.parallel
        params.n_batch = params.n_ubatch = BATCH_TOKENS
        params.n_seq_max = self.parallel
        params.n_threads = params.n_threads_batch = 1
        params.kv_unified = False  # one stream per slot: each answer attends to its own tokens only
        self.ctx = lib.llama_init_from_model(model.llm._model.model, params)
        if not self.ctx:
            raise RuntimeError(f"{model.path}: llama.cpp could not make a context of {params.n_ctx} tokens")
        if model.lora is not None and not apply_lora(self.ctx, model.lora):
            lib.llama_free(self.ctx)
            raise RuntimeError(f"{model.path}: llama.cpp could not apply the LoRA adapter")
        self.memory = lib.llama_get_memory(self.ctx)
        self.batch = lib.llama_batch_init(BATCH_TOKENS, 0, 1)
        self.cached: list[list[int]] = [[] for _ in range(self.parallel)]  # the tokens in each slot's cache
        # Reused buffers: one candidate (the fast grammar check) and the whole vocabulary (the slow one).
        self._one = (lib.llama_token_data * 1)()
        self._all = (lib.llama_token_data * model.n_vocab)()
        self._all_view = np.ctypeslib.as_array(self._all)

    def run(self, waiting: list[_Sequence]) -> dict[int, Answer]:
        """Answer ``waiting`` (admitted in that order), by request index."""
        slots: list[_Sequence | None] = [None] * self.parallel
        answers: dict[int, Answer] = {}
        try:
            while waiting or any(slots):
                for slot, held in enumerate(slots):
                    if held is None and waiting:
                        slots[slot] = self._admit(slot, waiting.pop(0))
                for slot, sequence in self._decode(slots):
                    if self._advance(slot, sequence):
                        answers[sequence.index] = self._finish(sequence)
                        slots[slot] = None
        finally:
            self.lib.llama_batch_free(self.batch)
            self.lib.llama_free(self.ctx)
        return answers

    def _admit(self, slot: int, sequence: _Sequence) -> _Sequence:
        """Start ``sequence`` in ``slot``, its prompt's prefix taken from the cache that shares most of it."""
        own = _common_prefix(self.cached[slot], sequence.prompt)
        donor = max(range(self.parallel), key=lambda s: _common_prefix(self.cached[s], sequence.prompt))
        if _common_prefix(self.cached[donor], sequence.prompt) > own + COPY_MIN_TOKENS:
            # Streams are copied whole (llama.cpp's rule); the donor's tokens past the prefix are dropped below.
            self.lib.llama_memory_seq_cp(self.memory, donor, slot, -1, -1)
            self.cached[slot] = list(self.cached[donor])
        self._rewind(slot, sequence.prompt)
        sequence.pending = sequence.prompt[len(self.cached[slot]):]
        return sequence

    def _rewind(self, slot: int, tokens: list[int]) -> None:
        """Keep the slot's cache for the prefix it shares with ``tokens``, leaving at least one token to
        evaluate (the next sample needs fresh logits), as llama-cpp-python does."""
        keep = min(_common_prefix(self.cached[slot], tokens), len(tokens) - 1)
        self.lib.llama_memory_seq_rm(self.memory, slot, keep, -1)
        del self.cached[slot][keep:]

    def _decode(self, slots: list[_Sequence | None]) -> list[tuple[int, _Sequence]]:
        """One ``llama_decode``: a chunk of one slot's prompt when a slot has one to evaluate, else the next
        token of every answer in flight. Returns the slots whose pending tokens are all evaluated, with their
        next token sampled.

        A prompt chunk is never decoded together with other slots' tokens: in llama.cpp 0.3.36 (split KV
        streams) a batch holding one sequence's many tokens and several other sequences' single tokens
        gives the long one wrong logits (off by up to 0.7; ``tests/test_batched_eval.py`` checks it stays
        avoided)."""
        prompting = [(slot, s) for slot, s in enumerate(slots) if s is not None and len(s.pending) > 1][:1]
        chosen = prompting or [(slot, s) for slot, s in enumerate(slots) if s is not None]
        batch, n = self.batch, 0
        ready: list[tuple[int, _Sequence, int]] = []
        for slot, sequence in chosen:
            take = sequence.pending[:BATCH_TOKENS - n]
            base = len(self.cached[slot])
            for offset, token in enumerate(take):
                batch.token[n] = token
                batch.pos[n] = base + offset
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = slot
                batch.logits[n] = False
                n += 1
            self.cached[slot].extend(take)
            del sequence.pending[:len(take)]
            if not sequence.pending:
                batch.logits[n - 1] = True
                ready.append((slot, sequence, n - 1))
        batch.n_tokens = n
        started = time.perf_counter()
        status = self.lib.llama_decode(self.ctx, batch)
        if status != 0:
            raise RuntimeError(f"{self.model.path.name}: llama_decode failed with status {status}")
        for _, sequence in chosen:
            sequence.seconds += (time.perf_counter() - started) / len(chosen)
        out = []
        for slot, sequence, row in ready:
            sequence.next_token = self._greedy(row, sequence.grammar)
            out.append((slot, sequence))
        return out

    def _greedy(self, row: int, grammar: Any) -> int:
        """The highest-logit token the grammar allows (the first one on a tie, as llama.cpp's greedy)."""
        lib = self.lib
        logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(self.ctx, row), shape=(self.model.n_vocab,))
        token = int(np.argmax(logits))
        if grammar is None:
            return token
        one = self._one
        one[0].id, one[0].logit, one[0].p = token, float(logits[token]), 0.0
        lib.llama_sampler_apply(grammar, ctypes.byref(
            lib.llama_token_data_array(data=one, size=1, selected=-1, sorted=False)))
        if math.isinf(one[0].logit):  # refused: filter the whole vocabulary
            view = self._all_view
            view["id"] = np.arange(self.model.n_vocab)
            view["logit"] = logits
            view["p"] = 0.0
            lib.llama_sampler_apply(grammar, ctypes.byref(
                lib.llama_token_data_array(data=self._all, size=self.model.n_vocab, selected=-1, sorted=False)))
            token = int(np.argmax(view["logit"]))
        if not lib.llama_vocab_is_eog(self.model.vocab, token):
            lib.llama_sampler_accept(grammar, token)
        return token

    def _advance(self, slot: int, sequence: _Sequence) -> bool:
        """Take the sampled token: True when the answer is done, else the token is queued for decoding."""
        token = sequence.next_token
        if self.lib.llama_vocab_is_eog(self.model.vocab, token):
            return True
        previous = sequence.data
        sequence.generated.append(token)
        sequence.data += self.model.piece(token)
        sequence.multibyte_fix = _multibyte_fix(sequence.data, sequence.multibyte_fix)
        if sequence.multibyte_fix > 0:
            # llama-cpp-python checks neither stops nor the budget while a character may be split
            sequence.multibyte_fix -= 1
            sequence.pending = [token]
            return False
        found = [sequence.data.index(stop) for stop in sequence.stops if stop in sequence.data]
        if found:
            sequence.data = sequence.data[:min(found)]
            return True
        if sequence.phase == "free" and sequence.call_grammar is not None:
            text = sequence.data.decode("utf-8", errors="ignore")
            opened = text.find(TOOL_CALL_OPEN)
            if opened >= 0:
                return self._open_call(slot, sequence, text, opened, previous.decode("utf-8", errors="ignore"))
        if len(sequence.generated) >= sequence.budget:
            return True
        sequence.pending = [token]
        return False

    def _open_call(self, slot: int, sequence: _Sequence, text: str, opened: int, previous: str) -> bool:
        """The model wrote ``<tool_call>``: decode the calls under the tool grammar after that prefix."""
        # The backend streams free text as it comes, holding back a tail that could start ``<tool_call>``;
        # what it had sent before this token stays, the rest of the text before the call is right-stripped.
        safe = len(previous) - open_prefix_length(previous)
        sent = safe if previous[:safe].strip() else 0
        sequence.before = text[:sent] + text[sent:opened].rstrip() if text[:opened].strip() else ""
        sequence.produced = len(sequence.generated)
        prefix = text[:opened + len(TOOL_CALL_OPEN)]
        tokens = sequence.prompt + self.model.llm.tokenize(prefix.encode("utf-8"), add_bos=False, special=False)
        left = min(sequence.budget - sequence.produced, self.model.n_ctx - len(tokens))
        sequence.phase = "call"
        sequence.generated, sequence.data = [], b""
        if left < 1:
            return True
        sequence.drop_sampler(self.lib)
        sequence.grammar = self.model.sampler(sequence.call_grammar)
        sequence.prompt, sequence.budget, sequence.stops = tokens, left, self.model.stops
        self._rewind(slot, tokens)
        sequence.pending = tokens[len(self.cached[slot]):]
        return False

    def _finish(self, sequence: _Sequence) -> Answer:
        text = sequence.data.decode("utf-8", errors="ignore")
        if sequence.phase == "call":
            stream = ToolCallStream()
            stream.feed(text)
            text = with_tool_calls(sequence.before, stream.calls)
        sequence.drop_sampler(self.lib)
        return Answer(text=text, latency_s=sequence.seconds,
                      completion_tokens=sequence.produced + len(sequence.generated))


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _multibyte_fix(data: bytes, fix: int) -> int:
    """llama-cpp-python's count of tokens to pass unchecked after the text ends in a multi-byte character's
    lead byte (``Llama._create_completion``, ported as it is so that stops and budgets fall where they do
    there)."""
    for k, char in enumerate(data[-3:]):
        k = 3 - k
        for num, pattern in ((2, 192), (3, 224), (4, 240)):
            if num > k and pattern & char == pattern:
                fix = num - k
    return fix

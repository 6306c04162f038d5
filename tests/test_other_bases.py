"""Other base architectures (Llama, Mistral, Qwen2): resolve as a base, LoRA, merge, GGUF export, llama.cpp parity.

Each test model is a tiny random one (2 layers, hidden 64) with the SmolLM2 vocabulary and ChatML template; the
Qwen2 one gets Qwen2's pre-tokenizer (the regex llama.cpp calls ``qwen2``) and random q/k/v biases, so a bias or
a rotary layout the export got wrong changes the logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from homegrown.training import export, llama_cpp_util
from homegrown.training.base import embedded_gguf_path, resolve_base_model
from homegrown.training.merge import max_logit_difference, merge_adapter

CONVERSATIONS = [
    [
        {"role": "system", "content": "You are the assistant of My Hibachi."},
        {"role": "user", "content": "Book a table for 4 on Sunday at 7pm — price per person? 🍣"},
    ],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "What's the refund policy for   cancelled\tbookings?\n\nThanks 1234567"},
    ],
    [
        {
            "role": "user",
            "content": "Kann ich am 12.05. um 18:30 Uhr für 6 Personen reservieren? I'll pay $49.99.",
        }
    ],
]
# architecture -> (transformers config class, llama.cpp architecture, tied embeddings)
ARCHITECTURES = {
    "LlamaForCausalLM": ("LlamaConfig", "llama", True),
    "MistralForCausalLM": ("MistralConfig", "llama", False),
    "Qwen2ForCausalLM": ("Qwen2Config", "qwen2", True),
}


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from transformers import AutoTokenizer

    gguf_file = embedded_gguf_path()
    return AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)


def save_tiny_base(folder: Path, architecture: str, tokenizer, **overrides) -> Path:
    """A random 2-layer model of ``architecture`` with the given tokenizer, saved as a Hugging Face folder."""
    import torch
    import transformers

    config_class, _, tied = ARCHITECTURES.get(architecture, (None, None, True))
    config_class = getattr(transformers, config_class or overrides.pop("config_class"))
    torch.manual_seed(0)
    settings = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "tie_word_embeddings": tied,
        "rms_norm_eps": 1e-5,
        "initializer_range": 0.2,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        **overrides,
    }
    config = config_class(**settings)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(".bias"):  # Qwen2's q/k/v biases start at zero; make them matter
                parameter.normal_(0.0, 0.5)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if architecture == "Qwen2ForCausalLM":
        spec = json.loads((folder / "tokenizer.json").read_text())
        spec["pre_tokenizer"] = export._QWEN2_PRE_TOKENIZER
        (folder / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    return folder


def _attach_random_lora(base_dir: Path, adapter_dir: Path) -> None:
    """A LoRA adapter on every linear layer with random (non-zero) A and B, as training would leave it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        init_lora_weights=False,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    get_peft_model(model, config).save_pretrained(adapter_dir)


def _hf_logits(folder: Path, ids: list[int]) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0].float().numpy()


@pytest.mark.slow
@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_base_merge_export_and_parity(tmp_path, smollm2_tokenizer, architecture):
    base_dir = save_tiny_base(tmp_path / "base", architecture, smollm2_tokenizer)
    base = resolve_base_model(str(base_dir))
    assert base.path == base_dir.resolve()

    adapter_dir = tmp_path / "adapter"
    _attach_random_lora(base.path, adapter_dir)
    merged = merge_adapter(base.path, adapter_dir, tmp_path / "merged", model_card={"name": "tiny"})
    assert max_logit_difference(base.path, adapter_dir, merged, ["Hello there"]) < 1e-3
    assert not np.allclose(  # the adapter changed the model, so the export is of merged weights
        _hf_logits(base.path, [1, 2, 3]), _hf_logits(merged, [1, 2, 3]), atol=1e-3
    )

    gguf_path = export.export_gguf(merged, tmp_path / "merged-f32.gguf", "f32")
    _, llama_cpp_arch, tied = ARCHITECTURES[architecture]
    metadata = llama_cpp_util.read_metadata(gguf_path)
    assert metadata["general.architecture"] == llama_cpp_arch
    assert metadata["tokenizer.ggml.pre"] == ("qwen2" if architecture == "Qwen2ForCausalLM" else "smollm")
    types = llama_cpp_util.tensor_types(gguf_path)
    assert ("output.weight" in types) is not tied
    assert ("blk.0.attn_q.bias" in types) is (architecture == "Qwen2ForCausalLM")

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged)
    ids = tokenizer.encode(
        tokenizer.apply_chat_template(CONVERSATIONS[0], tokenize=False, add_generation_prompt=True),
        add_special_tokens=False,
    )
    expected = _hf_logits(merged, ids)
    got = llama_cpp_util.llama_cpp_logits(
        llama_cpp_util.load_llama(gguf_path, logits_all=True, n_ctx=256), ids
    )
    assert np.abs(expected).max() > 4  # far from uniform: a wrong layout or a lost bias would show
    assert np.abs(got - expected).max() < 0.05
    assert (got.argmax(-1) == expected.argmax(-1)).mean() >= 0.95

    ok, details = export.check_template_parity(merged, gguf_path, CONVERSATIONS)
    assert ok, details


def test_qwen2_export_without_its_biases_disagrees(tmp_path, monkeypatch, smollm2_tokenizer):
    """The logit comparison above would catch a Qwen2 export that dropped the q/k/v biases."""
    folder = save_tiny_base(tmp_path / "qwen2", "Qwen2ForCausalLM", smollm2_tokenizer)
    original = export._gguf_tensors

    def without_biases(*args, **kwargs):
        for name, array, qtype in original(*args, **kwargs):
            yield name, (np.zeros_like(array) if name.endswith(".bias") else array), qtype

    monkeypatch.setattr(export, "_gguf_tensors", without_biases)
    gguf_path = export.export_gguf(folder, tmp_path / "no-bias.gguf", "f32")
    ids = smollm2_tokenizer.encode("Hello, how are you today? 12345", add_special_tokens=False)
    got = llama_cpp_util.llama_cpp_logits(
        llama_cpp_util.load_llama(gguf_path, logits_all=True, n_ctx=64), ids
    )
    assert np.abs(got - _hf_logits(folder, ids)).max() > 1.0


# ---------------------------------------------------------------------------------------------------------------
# Refused before any training starts


def _refused(folder: Path) -> str:
    with pytest.raises(ValueError, match="not supported") as raised:
        resolve_base_model(str(folder))
    return str(raised.value)


def test_unsupported_architecture_is_refused(tmp_path, smollm2_tokenizer):
    folder = save_tiny_base(
        tmp_path / "phi3", "Phi3ForCausalLM", smollm2_tokenizer, config_class="Phi3Config"
    )
    message = _refused(folder)
    assert "Phi3ForCausalLM" in message
    for name in ARCHITECTURES:
        assert name in message


def test_qwen2_with_sliding_window_is_refused(tmp_path, smollm2_tokenizer):
    folder = save_tiny_base(
        tmp_path / "qwen2", "Qwen2ForCausalLM", smollm2_tokenizer, use_sliding_window=True
    )
    assert "use_sliding_window" in _refused(folder)


@pytest.fixture
def llama_base(tmp_path, smollm2_tokenizer) -> Path:
    return save_tiny_base(tmp_path / "llama", "LlamaForCausalLM", smollm2_tokenizer)


def test_byte_fallback_tokenizer_is_refused(tmp_path, llama_base):
    spec = json.loads((llama_base / "tokenizer.json").read_text())
    spec["model"]["byte_fallback"] = True
    (llama_base / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    assert "byte-level BPE" in _refused(llama_base)


def test_unknown_pre_tokenizer_is_refused(tmp_path, llama_base):
    spec = json.loads((llama_base / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = {
        "type": "ByteLevel",
        "add_prefix_space": True,
        "trim_offsets": True,
        "use_regex": True,
    }
    (llama_base / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    assert "pre-tokenizer" in _refused(llama_base)


def test_non_chatml_template_is_refused(tmp_path, llama_base):
    (llama_base / "chat_template.jinja").write_text(
        "{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + "
        "' [/INST]' }}{% else %}{{ message['content'] }}{% endif %}{% endfor %}"
    )
    assert "not ChatML" in _refused(llama_base)

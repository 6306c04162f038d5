"""GGUF export, llama.cpp quantization, Ollama Modelfiles, and the checks that the served model is the trained one.

The merged model is a Hugging Face folder (``config.json`` of a ``LlamaForCausalLM``, ``MistralForCausalLM`` or
``Qwen2ForCausalLM``, safetensors, ``tokenizer.json``, ``tokenizer_config.json``, the chat template). ``export_gguf``
writes it as a GGUF file the way llama.cpp's own ``convert_hf_to_gguf.py`` (llama-cpp-python 0.3.36's vendored copy,
with gguf-py 0.19.0) does for these architectures: hyper-parameters, a GPT-2 style BPE vocabulary, and the tensors
(for Llama and Mistral, which llama.cpp runs as ``llama``, with the q/k rows permuted for its interleaved rotary
embedding; Qwen2 keeps Hugging Face's layout and its q/k/v biases). ``quantize_gguf`` runs llama.cpp's quantizer.

The parity checks compare what llama.cpp will serve with the Hugging Face model it came from: the same prompt
tokens, the same chat template, a stop at ``<|im_end|>``, and perplexity / next-token agreement per quantization.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import re
import time
from collections.abc import Iterable, Sequence
from hashlib import sha256
from pathlib import Path
from typing import Any, Literal

import gguf
import numpy as np

from homegrown.training import llama_cpp_util

OutType = Literal["f32", "f16", "bf16"]
QuantType = Literal["q8_0", "q4_k_m"]

OUTTYPES: dict[str, tuple[gguf.GGMLQuantizationType, gguf.LlamaFileType]] = {
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
}
QUANT_TYPES: dict[str, gguf.LlamaFileType] = {
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    "q4_k_m": gguf.LlamaFileType.MOSTLY_Q4_K_M,
}

# llama.cpp picks its BPE pre-tokenizer (the regex that splits text before merges) by name. convert_hf_to_gguf.py
# identifies it by hashing the token ids of this text; the hashes below are the ones it lists.
_PRE_TOKENIZER_PROBE = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 3 33 "
    "333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= "
    "нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not "
    "sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
_KNOWN_PRE_TOKENIZERS = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # HuggingFaceTB/SmolLM(2)
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen/Qwen1.5, Qwen2, Qwen2.5
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen/Qwen3
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # meta-llama/Meta-Llama-3
}
# The same split written out: a tokenizer.json whose pre-tokenizer is exactly Qwen2's regex + byte-level mapping
# is what llama.cpp's "qwen2" pre-tokenizer implements, whatever its vocabulary (the hash above also depends on it).
_QWEN2_PRE_TOKENIZER = {
    "type": "Sequence",
    "pretokenizers": [
        {
            "type": "Split",
            "pattern": {
                "Regex": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+"
            },
            "behavior": "Isolated",
            "invert": False,
        },
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
    ],
}

# The Hugging Face architectures export_gguf writes, and llama.cpp's architecture for each (as its converter maps
# them: Mistral is run as llama).
SUPPORTED_ARCHITECTURES: dict[str, gguf.MODEL_ARCH] = {
    "LlamaForCausalLM": gguf.MODEL_ARCH.LLAMA,
    "MistralForCausalLM": gguf.MODEL_ARCH.LLAMA,
    "Qwen2ForCausalLM": gguf.MODEL_ARCH.QWEN2,
}

# Agreement between a GGUF file and the float Hugging Face model it was exported from, on answer tokens of chat
# conversations: perplexity may rise by at most `max_ppl_change` (relative) and the greedy next token must match on
# at least `min_top1_agreement` of the positions, each judged with its bootstrap interval. The limits are meant to
# pass any sound export of a well-trained model and to stop broken or over-quantized files:
# - llama.cpp reports Q8_0 as near-lossless (Llama 3 8B: PPL +0.09%, same top token ~99%; Qwen2 0.5B-72B:
#   +0.0-0.1%) and Q4_K_M at +1-3% (Llama 2 70B +1.2%, Qwen2 0.5B/1.5B/7B +1.7%/+1.7%/+1.1%), Q2_K at +9-33%.
# - Small models lose more: SmolLM2-135M's 576-wide rows do not fit 256-wide K-quant blocks and fall back to
#   Q5_0/Q4_0. Measured here on 4,300 answer tokens of 39 demo conversations with the SmolLM2 base: Q8_0 +1.4%
#   (interval +1.1 to +1.6%), top-1 0.965 (0.958-0.973); Q4_K_M +9.2% (+6.4 to +12.4%), 0.866 (0.850-0.883);
#   "Q2_K" (mostly Q4_0/Q3_K fallbacks) +44% (+40 to +48%), 0.657 (0.621-0.701). Fine-tuned small-business models
#   measured up to +2.2% (Q8_0) and +24% / 0.78 (Q4_K_M) on plain text.
# So Q8_0 gets about three times the worst sound loss seen, Q4_K_M a limit above every sound file and below Q2_K.
# f32/f16/bf16 are exact up to rounding; their limits catch a wrong export rather than precision loss.
DEFAULT_TOLERANCES: dict[str, dict[str, float]] = {
    "f32": {"max_ppl_change": 0.001, "min_top1_agreement": 0.99},
    "f16": {"max_ppl_change": 0.005, "min_top1_agreement": 0.98},
    "bf16": {"max_ppl_change": 0.01, "min_top1_agreement": 0.97},
    "q8_0": {"max_ppl_change": 0.05, "min_top1_agreement": 0.92},
    "q4_k_m": {"max_ppl_change": 0.30, "min_top1_agreement": 0.78},
}


# --------------------------------------------------------------------------------------------------------------
# Export


def export_gguf(
    hf_dir: Path,
    out_path: Path,
    outtype: OutType = "f16",
    *,
    name: str | None = None,
    tokenizer_pre: str | None = None,
) -> Path:
    """Write the Hugging Face model in ``hf_dir`` (Llama, Mistral or Qwen2) as a GGUF file at ``out_path``.

    ``outtype`` is the type of the 2-D weight matrices (``f32``, ``f16`` or ``bf16``); norms and biases stay
    float32. ``tokenizer_pre`` names llama.cpp's pre-tokenizer when the tokenizer is not one it recognises.
    The file is written next to ``out_path`` first and moved into place only once complete.
    """
    hf_dir = Path(hf_dir)
    out_path = Path(out_path)
    if outtype not in OUTTYPES:
        raise ValueError(f"outtype must be one of {sorted(OUTTYPES)}, got {outtype!r}")
    config, arch = read_export_config(hf_dir)
    tensor_qtype, file_type = OUTTYPES[outtype]

    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".partial")
    writer = gguf.GGUFWriter(partial, gguf.MODEL_ARCH_NAMES[arch])
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(name or hf_dir.name)
        _add_hparams(writer, config, arch, file_type)
        _add_vocab(writer, hf_dir, config["vocab_size"], tokenizer_pre)
        for gguf_name, array, qtype in _gguf_tensors(hf_dir, config, arch, tensor_qtype):
            writer.add_tensor(gguf_name, array, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    writer.close()
    os.replace(partial, out_path)
    return out_path


def read_export_config(hf_dir: Path) -> tuple[dict[str, Any], gguf.MODEL_ARCH]:
    """The model's ``config.json`` and llama.cpp architecture; ValueError for what ``export_gguf`` cannot write."""
    hf_dir = Path(hf_dir)
    config_path = hf_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"no config.json in {hf_dir}: not a Hugging Face model folder")
    config = json.loads(config_path.read_text())
    architectures = config.get("architectures") or []
    supported = [name for name in architectures if name in SUPPORTED_ARCHITECTURES]
    if len(architectures) != 1 or not supported:
        raise ValueError(
            f"{hf_dir} is a {architectures or config.get('model_type')!r} model; homegrown can merge, export to "
            f"GGUF and serve only {sorted(SUPPORTED_ARCHITECTURES)} (one architecture in config.json)"
        )
    hf_arch = supported[0]
    arch = SUPPORTED_ARCHITECTURES[hf_arch]
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"):
        if key not in config:
            raise ValueError(f"{config_path} lacks {key!r}")
    if arch == gguf.MODEL_ARCH.LLAMA and (config.get("attention_bias") or config.get("mlp_bias")):
        raise ValueError(f"{hf_arch} with attention or MLP biases is not supported by export_gguf")
    if hf_arch == "Qwen2ForCausalLM" and config.get("use_sliding_window"):
        # llama.cpp's qwen2 attends over the whole context; the Hugging Face model would not.
        raise ValueError("Qwen2 models with use_sliding_window=true are not supported by export_gguf")
    # Mistral's sliding_window (4096 in v0.1, none from v0.2) is ignored, as llama.cpp's converter does: both
    # runtimes agree on sequences up to the window, longer than anything homegrown trains or serves.
    n_head = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    if head_dim * n_head != config["hidden_size"]:
        raise ValueError(f"{hf_arch} with head_dim * num_attention_heads != hidden_size is not supported")
    _rope_settings(config)
    return config, arch


def _rope_settings(config: dict[str, Any]) -> tuple[float, str, float | None]:
    """(rope base, scaling type, scaling factor) from a transformers 5 ``rope_parameters`` or older config."""
    params = config.get("rope_parameters") or {}
    theta = params.get("rope_theta", config.get("rope_theta", 10000.0))
    scaling = params if params.get("rope_type") else (config.get("rope_scaling") or {})
    rope_type = scaling.get("rope_type") or scaling.get("type") or "default"
    if rope_type == "default":
        return float(theta), "none", None
    if rope_type == "linear":
        return float(theta), "linear", float(scaling["factor"])
    raise ValueError(f"RoPE scaling {rope_type!r} is not supported by export_gguf (only default and linear)")


def _add_hparams(
    writer: gguf.GGUFWriter, config: dict[str, Any], arch: gguf.MODEL_ARCH, file_type: gguf.LlamaFileType
) -> None:
    n_head = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    rope_base, rope_scaling, rope_factor = _rope_settings(config)

    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(config.get("num_key_value_heads") or n_head)
    writer.add_rope_freq_base(rope_base)
    if rope_scaling == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope_factor)
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
    writer.add_file_type(file_type)
    if arch == gguf.MODEL_ARCH.LLAMA:  # what llama.cpp's converter adds for llama only
        writer.add_vocab_size(config["vocab_size"])
        writer.add_rope_dimension_count(head_dim)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def read_bpe_tokenizer_spec(hf_dir: Path) -> dict[str, Any]:
    """``tokenizer.json`` of ``hf_dir``; ValueError unless it is a byte-level BPE tokenizer (what the export writes)."""
    tokenizer_json = Path(hf_dir) / "tokenizer.json"
    if not tokenizer_json.is_file():
        raise FileNotFoundError(f"no tokenizer.json in {hf_dir}")
    spec = json.loads(tokenizer_json.read_text())
    model_spec = spec.get("model") or {}
    if (
        model_spec.get("type") != "BPE"
        or model_spec.get("byte_fallback")
        or (spec.get("decoder") or {}).get("type") != "ByteLevel"
    ):
        raise ValueError(
            f"the tokenizer in {hf_dir} is not byte-level BPE (GPT-2 style); export_gguf writes only those "
            "(SentencePiece / byte-fallback tokenizers such as Llama 2's or Mistral's are not supported)"
        )
    return spec


def pre_tokenizer_name(tokenizer: Any, spec: dict[str, Any]) -> str:
    """llama.cpp's name for the tokenizer's BPE pre-tokenizer; ValueError when llama.cpp would not know it."""
    digest = sha256(str(tokenizer.encode(_PRE_TOKENIZER_PROBE)).encode()).hexdigest()
    if digest in _KNOWN_PRE_TOKENIZERS:
        return _KNOWN_PRE_TOKENIZERS[digest]
    if _without_offsets(spec.get("pre_tokenizer")) == _without_offsets(_QWEN2_PRE_TOKENIZER):
        return "qwen2"
    raise ValueError(
        f"unrecognised BPE pre-tokenizer (hash {digest}); known: {sorted(set(_KNOWN_PRE_TOKENIZERS.values()))}"
        " (pass tokenizer_pre= with llama.cpp's name for it)"
    )


def _without_offsets(node: Any) -> Any:
    """A tokenizer.json component without ``trim_offsets``, which changes character offsets, never token ids."""
    if isinstance(node, dict):
        return {key: _without_offsets(value) for key, value in node.items() if key != "trim_offsets"}
    if isinstance(node, list):
        return [_without_offsets(item) for item in node]
    return node


def _looks_special(token: str) -> bool:
    return token.startswith("<|") and token.endswith("|>")


def _add_vocab(writer: gguf.GGUFWriter, hf_dir: Path, vocab_size: int, tokenizer_pre: str | None) -> None:
    """The tokenizer as llama.cpp's ``gpt2`` (byte-level BPE) vocabulary, with merges, special ids and template."""
    from transformers import AutoTokenizer

    spec = read_bpe_tokenizer_spec(hf_dir)
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    vocab: dict[str, int] = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise ValueError(
            f"tokenizer has ids up to {max(vocab.values())} but the model's vocab_size is {vocab_size}"
        )

    if tokenizer_pre is None:
        tokenizer_pre = pre_tokenizer_name(tokenizer, spec)

    reverse = {token_id: token for token, token_id in vocab.items()}
    added = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    token_types: list[int] = []
    for token_id in range(vocab_size):
        token = reverse.get(token_id)
        if token is None:
            tokens.append(f"[PAD{token_id}]")
            token_types.append(gguf.TokenType.UNUSED)
        elif token_id in added:
            tokens.append(token)
            special = added[token_id].special or _looks_special(token)
            token_types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            token_types.append(gguf.TokenType.NORMAL)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(tokenizer_pre)
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_add_space_prefix(False)

    special = gguf.SpecialVocab(hf_dir, load_merges=True, n_vocab=vocab_size)
    # Whether the tokenizer itself adds BOS/EOS decides llama.cpp's add_bos/add_eos, whatever the config says.
    plain = tokenizer.encode("a", add_special_tokens=False)
    with_special = tokenizer.encode("a", add_special_tokens=True)
    bos_id, eos_id = special.special_token_ids.get("bos"), special.special_token_ids.get("eos")
    special.add_special_token["bos"] = (
        bos_id is not None and with_special[:1] == [bos_id] and plain[:1] != [bos_id]
    )
    special.add_special_token["eos"] = (
        eos_id is not None and with_special[-1:] == [eos_id] and plain[-1:] != [eos_id]
    )
    if special.chat_template is None and getattr(tokenizer, "chat_template", None):
        special.chat_template = tokenizer.chat_template
    special.add_to_gguf(writer, quiet=True)


def _permute_for_llama_cpp(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q/k projection rows from Hugging Face's rotate-half RoPE layout to llama.cpp's interleaved one."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _safetensors_files(hf_dir: Path) -> list[Path]:
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [hf_dir / shard for shard in shards]
    files = sorted(hf_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors weights in {hf_dir}")
    return files


def _gguf_tensors(
    hf_dir: Path, config: dict[str, Any], arch: gguf.MODEL_ARCH, matrix_qtype: gguf.GGMLQuantizationType
):
    """Yield (gguf name, numpy array, ggml type) for every weight of the model, converted for llama.cpp."""
    from safetensors import safe_open

    n_blocks = config["num_hidden_layers"]
    n_head = config["num_attention_heads"]
    n_head_kv = config.get("num_key_value_heads") or n_head
    tied = bool(config.get("tie_word_embeddings", False))
    name_map = gguf.get_tensor_name_map(arch, n_blocks)
    # llama.cpp's llama rotates interleaved pairs; its qwen2 uses the rotate-half (NEOX) layout Hugging Face has.
    permute = arch == gguf.MODEL_ARCH.LLAMA

    seen: set[str] = set()
    for file in _safetensors_files(hf_dir):
        with safe_open(file, framework="pt") as handle:
            for hf_name in handle.keys():  # noqa: SIM118 - safe_open is not iterable
                if hf_name.endswith(".rotary_emb.inv_freq"):
                    continue
                if hf_name == "lm_head.weight" and tied:
                    continue
                gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if gguf_name is None:
                    raise ValueError(f"tensor {hf_name!r} has no llama.cpp counterpart")
                data = handle.get_tensor(hf_name).float().numpy()
                if permute and hf_name.endswith("q_proj.weight"):
                    data = _permute_for_llama_cpp(data, n_head)
                elif permute and hf_name.endswith("k_proj.weight"):
                    data = _permute_for_llama_cpp(data, n_head_kv)
                seen.add(gguf_name)
                if data.ndim == 1 or matrix_qtype == gguf.GGMLQuantizationType.F32:
                    yield gguf_name, data.astype(np.float32), gguf.GGMLQuantizationType.F32
                elif matrix_qtype == gguf.GGMLQuantizationType.F16:
                    yield gguf_name, data.astype(np.float16), gguf.GGMLQuantizationType.F16
                else:
                    yield gguf_name, gguf.quants.quantize(data, matrix_qtype), matrix_qtype
    if "token_embd.weight" not in seen:
        raise ValueError(f"{hf_dir} has no token embedding (model.embed_tokens.weight)")
    if not tied and "output.weight" not in seen:
        raise ValueError(f"{hf_dir} has untied embeddings but no lm_head.weight")


# --------------------------------------------------------------------------------------------------------------
# Quantization


def quantize_gguf(src: Path, dst: Path, qtype: QuantType, *, n_threads: int | None = None) -> Path:
    """Quantize the float GGUF file ``src`` to ``dst`` with llama.cpp (``q8_0`` or ``q4_k_m``).

    Tensors whose rows do not fit the K-quant block size fall back to a type that does (llama.cpp's rule).
    """
    src, dst = Path(src), Path(dst)
    if qtype not in QUANT_TYPES:
        raise ValueError(f"qtype must be one of {sorted(QUANT_TYPES)}, got {qtype!r}")
    if not src.is_file():
        raise FileNotFoundError(f"GGUF file not found: {src}")
    source_type = llama_cpp_util.file_type_name(src)
    if source_type not in OUTTYPES:
        raise ValueError(f"quantize from a float GGUF (f32/f16/bf16); {src} is {source_type}")
    if src.resolve() == dst.resolve():
        raise ValueError("quantize_gguf needs a destination different from its source")

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(QUANT_TYPES[qtype])
    params.nthread = n_threads or llama_cpp_util.default_threads()
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = dst.with_name(dst.name + ".partial")
    status = llama_cpp.llama_model_quantize(str(src).encode(), str(partial).encode(), ctypes.byref(params))
    if status != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"llama.cpp failed to quantize {src} to {qtype} (status {status})")
    os.replace(partial, dst)
    return dst


# --------------------------------------------------------------------------------------------------------------
# Ollama Modelfile


def _render_jinja(chat_template: str, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env.globals["raise_exception"] = raise_exception
    return env.from_string(chat_template).render(
        messages=messages, add_generation_prompt=add_generation_prompt, bos_token="", eos_token=""
    )


def _chatml(messages: list[dict[str, str]], default_system: str | None) -> str:
    """ChatML with a generation prompt: what the Ollama template below renders, written in Python."""
    text = ""
    if default_system is not None and (not messages or messages[0]["role"] != "system"):
        text += f"<|im_start|>system\n{default_system}<|im_end|>\n"
    for message in messages:
        text += f"<|im_start|>{message['role']}\n{message['content']}<|im_end|>\n"
    return text + "<|im_start|>assistant\n"


def chatml_default_system(chat_template: str) -> str | None:
    """Check that a Jinja chat template is ChatML and return the system prompt it adds when none is given.

    Raises ValueError when the template renders anything other than ChatML (then it cannot be expressed as the
    Go template ``write_modelfile`` writes).
    """
    probe_user = [{"role": "user", "content": "PROBE-USER-1"}]
    rendered = _render_jinja(chat_template, probe_user, add_generation_prompt=True)
    match = re.match(r"<\|im_start\|>system\n(.*?)<\|im_end\|>\n", rendered, flags=re.DOTALL)
    default_system = match.group(1) if match else None
    probes = [
        probe_user,
        [
            {"role": "system", "content": "PROBE-SYSTEM"},
            {"role": "user", "content": "PROBE-USER-1"},
            {"role": "assistant", "content": "PROBE-ASSISTANT"},
            {"role": "user", "content": "PROBE-USER-2"},
        ],
    ]
    for messages in probes:
        if _render_jinja(chat_template, messages, add_generation_prompt=True) != _chatml(
            messages, default_system
        ):
            raise ValueError(
                "the chat template is not ChatML; write_modelfile can only translate ChatML templates"
            )
    return default_system


def ollama_chatml_template(default_system: str | None) -> str:
    """The Go template (Ollama's TEMPLATE) that renders the same text as the SmolLM2 / ChatML Jinja template."""
    if default_system is not None and '"""' in default_system:
        raise ValueError('the default system prompt contains """, which a Modelfile cannot quote')
    head = ""
    if default_system is not None:
        head = (
            '{{- if or (not .Messages) (ne (index .Messages 0).Role "system") }}<|im_start|>system\n'
            f"{default_system}<|im_end|>\n"
            "{{ end }}"
        )
    return (
        head
        + "{{- range .Messages }}<|im_start|>{{ .Role }}\n"
        + "{{ .Content }}<|im_end|>\n"
        + "{{ end }}<|im_start|>assistant\n"
    )


def write_modelfile(
    gguf_path: Path,
    out_path: Path,
    chat_template: str,
    stop_tokens: Sequence[str],
    system: str | None = None,
    parameters: dict[str, float | int | str] | None = None,
) -> Path:
    """Write an Ollama Modelfile for ``gguf_path``: FROM, the chat template in Go syntax, stops and parameters.

    ``chat_template`` is the model's Jinja template (it must be ChatML); ``system`` sets Ollama's SYSTEM prompt.
    FROM is relative when the Modelfile sits beside the GGUF file, so the folder can be moved as a whole.
    """
    gguf_path, out_path = Path(gguf_path), Path(out_path)
    if not stop_tokens:
        raise ValueError("at least one stop token is needed (e.g. <|im_end|>)")
    for text in [*stop_tokens, *(str(value) for value in (parameters or {}).values())]:
        if '"' in text or "\n" in text:
            raise ValueError(f"Modelfile parameter values cannot contain quotes or newlines: {text!r}")
    if system is not None and '"""' in system:
        raise ValueError('the system prompt contains """, which a Modelfile cannot quote')
    template = ollama_chatml_template(chatml_default_system(chat_template))

    if gguf_path.resolve().parent == out_path.resolve().parent:
        source = f"./{gguf_path.name}"
    else:
        source = str(gguf_path.resolve())
    lines = [f"FROM {source}", f'TEMPLATE """{template}"""']
    if system is not None:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f'PARAMETER stop "{token}"' for token in stop_tokens]
    lines += [
        f'PARAMETER {key} "{value}"' if isinstance(value, str) else f"PARAMETER {key} {value}"
        for key, value in (parameters or {}).items()
    ]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("\n".join(lines) + "\n")
    return out_path


# --------------------------------------------------------------------------------------------------------------
# Parity checks


def _prompt_messages(conversation: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages a serving request carries: the conversation without its final assistant answer."""
    messages = list(conversation)
    if messages and messages[-1].get("role") == "assistant":
        messages = messages[:-1]
    if not messages:
        raise ValueError("a conversation needs at least one message before the answer")
    return messages


def _first_difference(left: Sequence[int], right: Sequence[int]) -> int | None:
    for index, (a, b) in enumerate(zip(left, right)):
        if a != b:
            return index
    return None if len(left) == len(right) else min(len(left), len(right))


def check_template_parity(
    hf_dir: Path, gguf_path: Path, sample_conversations: Sequence[Sequence[dict[str, Any]]]
) -> tuple[bool, dict[str, Any]]:
    """Does llama.cpp see the same prompt as the Hugging Face model?

    For every conversation, the prompt rendered by the HF tokenizer's chat template (with the generation prompt,
    the final assistant answer left out) must tokenize to the same ids with the HF tokenizer and with llama.cpp's
    tokenizer on the GGUF file, and the chat template embedded in the GGUF must equal the HF one.
    """
    from transformers import AutoTokenizer

    if not sample_conversations:
        raise ValueError("check_template_parity needs at least one sample conversation")
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    llm = llama_cpp_util.load_llama(gguf_path, vocab_only=True)
    embedded = llm.metadata.get("tokenizer.chat_template")
    mismatches = []
    for index, conversation in enumerate(sample_conversations):
        prompt = tokenizer.apply_chat_template(
            _prompt_messages(conversation), tokenize=False, add_generation_prompt=True
        )
        hf_ids = tokenizer.encode(prompt, add_special_tokens=False)
        gguf_ids = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        difference = _first_difference(hf_ids, gguf_ids)
        if difference is not None:
            mismatches.append(
                {
                    "conversation": index,
                    "first_difference": difference,
                    "hf_ids": hf_ids[difference : difference + 8],
                    "gguf_ids": gguf_ids[difference : difference + 8],
                }
            )
    template_equal = embedded == tokenizer.chat_template
    details = {
        "conversations": len(sample_conversations),
        "token_mismatches": mismatches,
        "template_equal": template_equal,
    }
    return template_equal and not mismatches, details


def check_stops(
    gguf_path: Path, prompt: str, max_tokens: int = 128, stop_token: str = "<|im_end|>"
) -> tuple[bool, dict[str, Any]]:
    """Does greedy generation with llama.cpp end on the EOS token ``stop_token`` before ``max_tokens``?

    ``prompt`` is a rendered chat prompt (ending with the generation prompt); its special tokens are parsed.
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    llm = llama_cpp_util.load_llama(gguf_path, n_ctx=2048)
    eos = llm.token_eos()
    eos_piece = llm.detokenize([eos], special=True).decode("utf-8", errors="replace")
    prompt_ids = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
    if len(prompt_ids) + max_tokens > llm.n_ctx():
        raise ValueError(f"prompt ({len(prompt_ids)} tokens) plus max_tokens does not fit the context")

    generated: list[int] = []
    for token in llm.generate(prompt_ids, temp=0.0, repeat_penalty=1.0, reset=True):
        generated.append(int(token))
        if token == eos or len(generated) >= max_tokens:
            break
    stopped = bool(generated) and generated[-1] == eos
    details = {
        "eos_id": eos,
        "eos_piece": eos_piece,
        "stopped_at_eos": stopped,
        "generated_tokens": len(generated),
        "text": llm.detokenize(generated[:-1] if stopped else generated).decode("utf-8", errors="replace"),
    }
    return stopped and eos_piece == stop_token, details


def _answer_span(tokenizer: Any, conversation: Sequence[dict[str, Any]]) -> tuple[list[int], int, int]:
    """Token ids of the conversation rendered with the chat template, and the [start, end) of its final answer.

    The answer runs from the end of the generation prompt to the end-of-turn token included (where a served
    answer stops); the template's text after that token is not scored.
    """
    if not conversation or conversation[-1].get("role") != "assistant":
        raise ValueError("every conversation must end with the assistant answer")
    prompt = tokenizer.apply_chat_template(
        _prompt_messages(conversation), tokenize=False, add_generation_prompt=True
    )
    full = tokenizer.apply_chat_template(list(conversation), tokenize=False)
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    ids = tokenizer.encode(full, add_special_tokens=False)
    start = len(prompt_ids)
    if ids[:start] != prompt_ids or len(ids) <= start:
        raise ValueError("the chat template does not render the prompt as a prefix of the whole conversation")
    end = len(ids)
    eos = tokenizer.eos_token_id
    if eos is not None and eos in ids[start:]:
        end = ids.index(eos, start) + 1
    return ids[:end], start, end


def _bootstrap_interval(
    numerator: np.ndarray, denominator: np.ndarray, confidence: float, draws: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile interval of sum(numerator) / sum(denominator) over conversations drawn with replacement."""
    picks = rng.integers(0, len(numerator), size=(draws, len(numerator)))
    ratios = numerator[picks].sum(axis=1) / denominator[picks].sum(axis=1)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return float(low), float(high)


def check_quantization_agreement(
    hf_dir: Path,
    gguf_paths: dict[str, Path],
    conversations: Iterable[Sequence[dict[str, Any]]],
    *,
    tolerances: dict[str, dict[str, float]] | None = None,
    answer_token_budget: int = 4000,
    max_conversation_tokens: int = 2048,
    confidence: float = 0.95,
    bootstrap_draws: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Perplexity and greedy next-token agreement of each GGUF file against the float HF model, as served.

    Each conversation (``[{"role", "content": str}]`` ending with the assistant answer, tools already rendered
    by ``to_training_messages``) is rendered with the model's chat template and only its answer tokens are
    scored: the tokens a served model generates. Conversations are taken in order until
    ``answer_token_budget`` answer tokens are reached (or they run out); longer ones than
    ``max_conversation_tokens`` are skipped. Every file sees exactly the HF tokenizer's ids, so the numbers
    measure the weights, not tokenization.

    Each file is judged by the tolerance of its type (``DEFAULT_TOLERANCES``, overridable per type through
    ``tolerances``) with its sampling error: a bootstrap over conversations gives a ``confidence`` interval of
    the perplexity change and of the top-1 agreement, and a file fails only when an interval lies wholly beyond
    its limit. Returns ``{"reference": {...}, "files": {label: {...}}, "failures": [str], "ok": bool}``.
    """
    from transformers import AutoTokenizer

    if not gguf_paths:
        raise ValueError("check_quantization_agreement needs at least one GGUF file")
    if not 0.5 <= confidence < 1:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
    limits = {**DEFAULT_TOLERANCES, **(tolerances or {})}
    file_types = {label: llama_cpp_util.file_type_name(path) for label, path in gguf_paths.items()}
    unknown = sorted({kind for kind in file_types.values() if kind not in limits})
    if unknown:
        raise ValueError(f"no tolerance for GGUF file type(s) {unknown}; pass tolerances=")

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    spans: list[tuple[list[int], int, int]] = []
    skipped_long, answer_tokens = 0, 0
    for conversation in conversations:
        ids, start, end = _answer_span(tokenizer, conversation)
        if len(ids) > max_conversation_tokens:
            skipped_long += 1
            continue
        spans.append((ids, start, end))
        answer_tokens += end - start
        if answer_tokens >= answer_token_budget:
            break
    if not spans:
        raise ValueError(
            f"no conversation to measure quantization on ({skipped_long} longer than {max_conversation_tokens} tokens)"
        )

    started = time.perf_counter()
    hf_logprob, hf_top1 = _hf_answer_stats(Path(hf_dir), spans)
    counts = np.array([end - start for _, start, end in spans], dtype=np.float64)
    hf_sums = np.array([values.sum() for values in hf_logprob])
    reference_ppl = math.exp(-hf_sums.sum() / counts.sum())
    report: dict[str, Any] = {
        "reference": {
            "perplexity": reference_ppl,
            "answer_tokens": int(counts.sum()),
            "conversations": len(spans),
            "skipped_too_long": skipped_long,
            "token_budget": answer_token_budget,
            "seconds": time.perf_counter() - started,
        },
        "confidence": confidence,
        "files": {},
        "failures": [],
    }

    rng = np.random.default_rng(seed)
    n_ctx = max(len(ids) for ids, _, _ in spans) + 8
    for label, path in gguf_paths.items():
        started = time.perf_counter()
        llm = llama_cpp_util.load_llama(path, logits_all=True, n_ctx=n_ctx)
        sums, agreed = np.zeros(len(spans)), np.zeros(len(spans))
        for index, ((ids, start, end), reference_top1) in enumerate(zip(spans, hf_top1)):
            logits = llama_cpp_util.llama_cpp_logits(llm, ids)[start - 1 : end - 1]
            scores = llama_cpp_util.log_softmax(logits)
            sums[index] = scores[np.arange(end - start), ids[start:end]].sum()
            agreed[index] = (logits.argmax(axis=-1) == reference_top1).sum()
        del llm
        # log(PPL(Q) / PPL(base)) per answer token, then the change and the agreement over all answer tokens.
        log_ratio = hf_sums - sums
        change = math.expm1(log_ratio.sum() / counts.sum())
        agreement = float(agreed.sum() / counts.sum())
        log_low, log_high = _bootstrap_interval(log_ratio, counts, confidence, bootstrap_draws, rng)
        agree_low, agree_high = _bootstrap_interval(agreed, counts, confidence, bootstrap_draws, rng)
        change_interval = [math.expm1(log_low), math.expm1(log_high)]
        limit = limits[file_types[label]]
        reasons = []
        if change_interval[0] > limit["max_ppl_change"]:
            reasons.append(
                f"perplexity {change:+.1%} (interval {change_interval[0]:+.1%} to {change_interval[1]:+.1%}) is "
                f"beyond the limit {limit['max_ppl_change']:+.1%}"
            )
        if agree_high < limit["min_top1_agreement"]:
            reasons.append(
                f"top-1 agreement {agreement:.3f} (interval {agree_low:.3f} to {agree_high:.3f}) is below the "
                f"limit {limit['min_top1_agreement']:.2f}"
            )
        if reasons:
            report["failures"].append(
                f"{label} ({Path(path).name}, {file_types[label]}) is out of tolerance on {int(counts.sum())} "
                f"answer tokens of {len(spans)} conversations: " + "; ".join(reasons)
            )
        report["files"][label] = {
            "file": str(path),
            "file_type": file_types[label],
            "perplexity": reference_ppl * math.exp(log_ratio.sum() / counts.sum()),
            "perplexity_change": change,
            "perplexity_change_interval": change_interval,
            "top1_agreement": agreement,
            "top1_agreement_interval": [agree_low, agree_high],
            "tolerance": limit,
            "ok": not reasons,
            "reasons": reasons,
            "size_bytes": Path(path).stat().st_size,
            "seconds": time.perf_counter() - started,
        }
    report["ok"] = not report["failures"]
    return report


def deployable_file(
    report: dict[str, Any], preference: Sequence[str], *, allow_fallback: bool = True
) -> str | None:
    """The label of the file to serve from an agreement ``report``: the first of ``preference`` in tolerance.

    Without ``allow_fallback`` only the first preference may be served. None when no allowed file passed.
    """
    if not preference:
        raise ValueError("preference needs at least one file label")
    candidates = preference if allow_fallback else preference[:1]
    for label in candidates:
        entry = report["files"].get(label)
        if entry is not None and entry["ok"]:
            return label
    return None


def _hf_answer_stats(
    hf_dir: Path, spans: list[tuple[list[int], int, int]]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per conversation: the float HF model's log-probability of each answer token, and its greedy choice there."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    model.eval()
    logprobs, top1 = [], []
    with torch.inference_mode():
        for ids, start, end in spans:
            logits = model(torch.tensor([ids])).logits[0, start - 1 : end - 1].float().numpy()
            scores = llama_cpp_util.log_softmax(logits)
            logprobs.append(scores[np.arange(end - start), ids[start:end]])
            top1.append(logits.argmax(axis=-1))
    return logprobs, top1

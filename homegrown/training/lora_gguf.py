"""A peft LoRA adapter as a llama.cpp LoRA file, so that one base GGUF serves several adapters.

llama.cpp loads adapters beside a model (``llama_adapter_lora_init``) and applies the chosen one per context
(``llama_set_adapters_lora``) as ``W x + scale * B (A x)``, ``scale = alpha / rank``: the base stays as it is
(even quantized) and each adapter is a few MB. This writes the format llama.cpp's own
``convert_lora_to_gguf.py`` writes: ``general.type = adapter``, ``adapter.type = lora``,
``adapter.lora.alpha``, and per adapted matrix ``<gguf name>.lora_a`` (rank x in) and ``.lora_b``
(out x rank), with the q/k rows of ``B`` permuted to llama.cpp's rotary layout exactly as the full weights are
(:func:`homegrown.training.export._permute_for_llama_cpp`).

Only plain LoRA is supported (no DoRA, no rsLoRA scaling, no per-module ranks or alphas); anything else is
refused with a message rather than written wrong.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from homegrown.training import export

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
_PEFT_PREFIX = "base_model.model."


def read_adapter_config(adapter_dir: Path) -> dict[str, Any]:
    """The adapter's ``adapter_config.json``, checked to be a plain LoRA that llama.cpp can apply."""
    path = Path(adapter_dir) / ADAPTER_CONFIG
    if not path.is_file():
        raise ValueError(f"{adapter_dir} is not a peft adapter folder (no {ADAPTER_CONFIG})")
    config = json.loads(path.read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{adapter_dir}: only LoRA adapters can be served by llama.cpp, not {config['peft_type']}")
    for flag in ("use_dora", "use_rslora"):
        if config.get(flag):
            raise ValueError(f"{adapter_dir}: {flag} is not supported by llama.cpp's LoRA format")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ValueError(f"{adapter_dir}: per-module ranks or alphas are not supported")
    if config.get("modules_to_save"):
        raise ValueError(f"{adapter_dir}: modules_to_save (fully trained layers) cannot be a LoRA file")
    return config


def _lora_tensors(adapter_dir: Path, base_config: dict[str, Any], arch: Any):
    """Yield (gguf name, float32 array) for every A and B matrix of the adapter."""
    import gguf
    from safetensors import safe_open

    weights_path = Path(adapter_dir) / ADAPTER_WEIGHTS
    if not weights_path.is_file():
        raise ValueError(f"{adapter_dir} has no {ADAPTER_WEIGHTS}")
    with safe_open(weights_path, framework="pt") as handle:  # torch reads bf16 adapters too; numpy cannot
        weights = {key: handle.get_tensor(key).float().numpy() for key in handle.keys()}  # noqa: SIM118
    name_map = gguf.get_tensor_name_map(arch, base_config["num_hidden_layers"])
    n_head = base_config["num_attention_heads"]
    n_head_kv = base_config.get("num_key_value_heads") or n_head
    permute = arch == gguf.MODEL_ARCH.LLAMA
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in weights.items():
        for part, suffix in (("a", ".lora_A.weight"), ("b", ".lora_B.weight")):
            if key.endswith(suffix):
                module = key[: -len(suffix)].removeprefix(_PEFT_PREFIX)
                pairs.setdefault(module, {})[part] = value.astype(np.float32)
                break
        else:
            raise ValueError(f"{adapter_dir}: tensor {key!r} is not a LoRA A or B matrix")
    if not pairs:
        raise ValueError(f"{adapter_dir}: the adapter has no LoRA matrices")
    for module, parts in sorted(pairs.items()):
        if set(parts) != {"a", "b"}:
            raise ValueError(f"{adapter_dir}: {module} lacks its lora_A or lora_B matrix")
        gguf_name = name_map.get_name(f"{module}.weight", try_suffixes=(".weight",))
        if gguf_name is None:
            raise ValueError(f"{adapter_dir}: {module} has no llama.cpp counterpart")
        lora_a, lora_b = parts["a"], parts["b"]
        if lora_a.shape[0] != lora_b.shape[1]:
            raise ValueError(f"{adapter_dir}: {module} has A {lora_a.shape} and B {lora_b.shape} of other ranks")
        if permute and module.endswith("q_proj"):
            lora_b = export._permute_for_llama_cpp(lora_b, n_head)
        elif permute and module.endswith("k_proj"):
            lora_b = export._permute_for_llama_cpp(lora_b, n_head_kv)
        yield f"{gguf_name}.lora_a", np.ascontiguousarray(lora_a)
        yield f"{gguf_name}.lora_b", np.ascontiguousarray(lora_b)


def export_lora_gguf(adapter_dir: Path | str, base_dir: Path | str, out_path: Path | str,
                     outtype: str = "f16") -> Path:
    """Write the peft adapter at ``adapter_dir`` (trained on the Hugging Face base at ``base_dir``) as a
    llama.cpp LoRA file at ``out_path`` (``f16`` or ``f32``). Written beside and renamed into place."""
    import gguf

    adapter_dir, base_dir, out_path = Path(adapter_dir), Path(base_dir), Path(out_path)
    if outtype not in ("f16", "f32"):
        raise ValueError(f"outtype must be f16 or f32, got {outtype!r}")
    config = read_adapter_config(adapter_dir)
    base_config, arch = export.read_export_config(base_dir)
    alpha = float(config.get("lora_alpha") or config.get("r") or 0)
    dtype = np.float16 if outtype == "f16" else np.float32
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, suffix=".gguf.tmp")
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch])
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        writer.add_name(adapter_dir.name)
        for name, data in _lora_tensors(adapter_dir, base_config, arch):
            writer.add_tensor(name, data.astype(dtype))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out_path

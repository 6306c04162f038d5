"""Merge a LoRA adapter into its base model in full precision, and check that the merge changed nothing.

The merged folder is an ordinary Hugging Face model (float32 safetensors + tokenizer + generation config
with ``<|im_end|>`` as end of sequence + a README.md model card): the GGUF export and any server load it
without peft.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from homegrown.training.base import template_fingerprint

EOS_TOKEN = "<|im_end|>"
LICENSE = "apache-2.0"
MERGE_INFO = "homegrown_merge.json"


def _load_base(base_path: Path):
    import torch
    from transformers import AutoModelForCausalLM

    config_path = Path(base_path) / "config.json"
    if not config_path.is_file():
        raise ValueError(f"base model folder {base_path} has no config.json")
    if "quantization_config" in json.loads(config_path.read_text()):
        raise ValueError(f"{base_path} is a quantized model; merge needs the full-precision base")
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    model.eval()
    return model


def _load_adapted(base_path: Path, adapter_dir: Path):
    from peft import PeftModel

    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise ValueError(f"{adapter_dir} is not a peft adapter folder (no adapter_config.json)")
    model = PeftModel.from_pretrained(_load_base(base_path), str(adapter_dir))
    model.eval()
    return model


def merge_adapter(base_path: Path, adapter_dir: Path, out_dir: Path, model_card: dict[str, Any]) -> Path:
    """Merge ``adapter_dir`` into the float32 base at ``base_path`` and save the result to ``out_dir``.

    ``model_card`` fills README.md: ``name``, ``base_model``, ``dataset_version``, ``metrics`` (dict) and
    ``description`` are used when present; everything is also kept in ``homegrown_merge.json``. The folder
    is written beside ``out_dir`` and renamed into place, so a failed merge leaves nothing half-written.
    """
    from transformers import AutoTokenizer, GenerationConfig

    base_path, adapter_dir, out_dir = Path(base_path), Path(adapter_dir), Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(
        adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base_path
    )
    if EOS_TOKEN not in tokenizer.get_vocab():
        raise ValueError(f"the tokenizer has no {EOS_TOKEN!r} token; expected a ChatML (SmolLM2) tokenizer")
    merged = _load_adapted(base_path, adapter_dir).merge_and_unload()

    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    merged.config.eos_token_id = eos_id
    generation = GenerationConfig.from_model_config(merged.config)
    generation.eos_token_id = eos_id
    generation.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    merged.generation_config = generation

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    os.chmod(tmp, 0o755)
    try:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        chat_template = tokenizer.chat_template or ""
        info = {
            **model_card,
            "base_path": str(base_path),
            "adapter_dir": str(adapter_dir),
            "template_fingerprint": template_fingerprint(chat_template) if chat_template else None,
            "dtype": "float32",
            "license": LICENSE,
        }
        (tmp / MERGE_INFO).write_text(json.dumps(info, indent=2, default=str))
        (tmp / "README.md").write_text(render_model_card(info))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def render_model_card(card: dict[str, Any]) -> str:
    """A Hugging Face README.md (YAML front matter + summary) for a merged model."""
    name = card.get("name") or "homegrown model"
    base = card.get("base_model") or card.get("base_path") or "unknown"
    lines = [
        "---",
        f"license: {LICENSE}",
        f"base_model: {json.dumps(str(base))}",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags: [homegrown, lora, merged, sft]",
        "---",
        "",
        f"# {name}",
        "",
        card.get("description")
        or "A LoRA fine-tune of the base model on the business's own assistant logs, merged in full precision.",
        "",
        f"- Base model: `{base}`",
        f"- Dataset version: `{card.get('dataset_version', 'unknown')}`",
        f"- Chat template fingerprint: `{card.get('template_fingerprint')}`",
        "- Weights: float32 safetensors; end of turn `<|im_end|>`",
        "- Licence: Apache-2.0 (as the SmolLM2 base)",
    ]
    metrics = card.get("metrics") or {}
    if metrics:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {value} |" for key, value in metrics.items()]
    return "\n".join(lines) + "\n"


def max_logit_difference(base_path: Path, adapter_dir: Path, merged_dir: Path, prompts: list[str]) -> float:
    """Largest absolute difference between the logits of base+adapter and of the merged model on ``prompts``.

    Each prompt is rendered as one user turn with the chat template. A correct float32 merge stays around
    1e-5; anything near 1e-2 means the merge (or the saved weights) went wrong.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not prompts:
        raise ValueError("max_logit_difference needs at least one prompt")
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    adapted = _load_adapted(Path(base_path), Path(adapter_dir))
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    merged.eval()
    worst = 0.0
    with torch.inference_mode():
        for prompt in prompts:
            encoded = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}],
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
            )
            a = adapted(**encoded).logits
            b = merged(**encoded).logits
            worst = max(worst, float((a - b).abs().max()))
    return worst

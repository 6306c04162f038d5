"""quantized_model: GGUF at Q8_0 and Q4_K_M for llama.cpp and Ollama (and the bf16 folder for vLLM on a GPU)."""

import json
from pathlib import Path

import dagster as dg
from pydantic import Field

from assets._lineage import mlflow_metadata, stage_run
from homegrown.training.chat import to_training_messages
from homegrown.training.export import (
    check_quantization_agreement,
    check_stops,
    check_template_parity,
    export_gguf,
    quantize_gguf,
    write_modelfile,
)
from resources import MlflowResource, StorageResource

STOP_TOKEN = "<|im_end|>"

class QuantizeConfig(dg.Config):
    check_conversations: int = Field(default=16, ge=1, description="Validation conversations the parity checks use.")
    keep_f16: bool = Field(default=False, description="Keep the intermediate F16 GGUF beside the quantized files.")

@dg.asset(
    group_name="model", kinds={"gguf"}, deps=["merged_model"],
    check_specs=[
        dg.AssetCheckSpec("train_serve_parity", asset="quantized_model", blocking=True,
                          description="llama.cpp renders the training prompt tokens and stops at <|im_end|>."),
        dg.AssetCheckSpec("quantization_tolerance", asset="quantized_model", blocking=True,
                          description="Q8_0 and Q4_K_M stay within tolerance of the merged model (perplexity, "
                                      "top-1 agreement) on validation conversations."),
    ],
)
def quantized_model(
    context: dg.AssetExecutionContext, config: QuantizeConfig, store: StorageResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """GGUF Q8_0 and Q4_K_M with an Ollama Modelfile, checked for train/serve parity and quantization loss."""
    artifacts = store.store()
    merged = artifacts.require_latest("merged_model")
    splits = artifacts.require_latest("dataset_splits")
    hf_dir = Path(merged["path"])
    out_dir = artifacts.stage_dir("quantized_model", f"v{merged['model_version']}")
    name = f"homegrown-v{merged['model_version']}"

    f16 = export_gguf(hf_dir, out_dir / f"{name}-f16.gguf", outtype="f16")
    files = {
        "q8_0": quantize_gguf(f16, out_dir / f"{name}-Q8_0.gguf", "q8_0"),
        "q4_k_m": quantize_gguf(f16, out_dir / f"{name}-Q4_K_M.gguf", "q4_k_m"),
    }
    chat_template = json.loads((hf_dir / "tokenizer_config.json").read_text()).get("chat_template") or \
        (hf_dir / "chat_template.jinja").read_text()
    modelfile = write_modelfile(files["q4_k_m"], out_dir / "Modelfile", chat_template, [STOP_TOKEN])

    conversations = _validation_conversations(splits["paths"]["validation"]["jsonl"], config.check_conversations)
    parity_ok, parity = check_template_parity(hf_dir, files["q4_k_m"], conversations)
    # The model must end its turn with <|im_end|>: checked on the validation conversations with the
    # shortest answers, so a long page-builder answer cannot hit the token limit first.
    short = sorted(conversations, key=lambda conv: len(conv[-1].get("content") or ""))[:3]
    stop_results = [check_stops(files["q4_k_m"], _render_prompt(hf_dir, conv), max_tokens=256) for conv in short]
    stops_ok = all(ok for ok, _ in stop_results)
    stops = {"prompts": len(stop_results), "details": [detail for _, detail in stop_results]}
    texts = ["\n".join(m["content"] for m in conv) for conv in conversations]
    agreement = check_quantization_agreement(hf_dir, files, texts)
    if not config.keep_f16:
        f16.unlink(missing_ok=True)

    metrics = {}
    for label, numbers in agreement["files"].items():
        for key, value in numbers.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[f"{label}_{key}"] = float(value)
    sizes = {label: path.stat().st_size for label, path in files.items()}
    with stage_run(context, mlflow.tracker(), "quantized_model") as run:
        run.log_params({"model_version": merged["model_version"]})
        run.log_metrics({**metrics, **{f"{k}_bytes": v for k, v in sizes.items()}})
        lineage = mlflow_metadata(run)
    mlflow.tracker().tag_model_version(merged["model_version"], {f"gguf_{k}": str(v) for k, v in files.items()})

    if parity_ok and stops_ok and agreement["ok"]:
        artifacts.record_latest("quantized_model", {
            "model_version": merged["model_version"], "gguf": {k: str(v) for k, v in files.items()},
            "modelfile": str(modelfile), "agreement": agreement, "template_parity": parity_ok, "stops": stops_ok,
        })
    return dg.MaterializeResult(
        metadata={
            "q8_0": dg.MetadataValue.path(str(files["q8_0"])),
            "q4_k_m": dg.MetadataValue.path(str(files["q4_k_m"])),
            "modelfile": dg.MetadataValue.path(str(modelfile)),
            **{f"{k}_mb": dg.MetadataValue.float(round(v / 2**20, 1)) for k, v in sizes.items()},
            **{k: dg.MetadataValue.float(v) for k, v in metrics.items()},
            **lineage,
        },
        check_results=[
            dg.AssetCheckResult(check_name="train_serve_parity", passed=bool(parity_ok and stops_ok),
                                metadata={"template": dg.MetadataValue.json(_jsonable(parity)),
                                          "stops": dg.MetadataValue.json(_jsonable(stops))}),
            dg.AssetCheckResult(check_name="quantization_tolerance", passed=bool(agreement["ok"]),
                                metadata={"agreement": dg.MetadataValue.json(_jsonable(agreement))}),
        ],
    )

def _validation_conversations(jsonl_path: str, limit: int) -> list[list[dict]]:
    conversations = []
    with open(jsonl_path, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            conversations.append(to_training_messages(row["messages"], row.get("tools")))
            if len(conversations) >= limit:
                break
    if not conversations:
        raise ValueError(f"no validation conversations in {jsonl_path}")
    return conversations

def _render_prompt(hf_dir: Path, conversation: list[dict]) -> str:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    return tokenizer.apply_chat_template(conversation[:-1], tokenize=False, add_generation_prompt=True)

def _jsonable(value):
    return json.loads(json.dumps(value, default=str))

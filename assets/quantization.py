"""quantized_model: GGUF at Q8_0 and Q4_K_M for llama.cpp and Ollama (and the bf16 folder for vLLM on a GPU)."""

import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from pydantic import Field

from assets._lineage import mlflow_metadata, stage_run
from homegrown.tracking import MANIFEST, REGISTERED_MODEL
from homegrown.training.chat import to_training_messages
from homegrown.training.export import (
    check_quantization_agreement,
    check_stops,
    check_template_parity,
    deployable_file,
    export_gguf,
    quantize_gguf,
    write_modelfile,
)
from homegrown.training.llama_cpp_util import check_tool_prompt_parity
from resources import MlflowResource, StorageResource

STOP_TOKEN = "<|im_end|>"
# Served first when in tolerance (smaller, faster); Q8_0 is the fallback.
PREFERENCE = ("q4_k_m", "q8_0")

class QuantizeConfig(dg.Config):
    check_conversations: int = Field(default=16, ge=1, description="Validation conversations the parity checks use.")
    keep_f16: bool = Field(default=False, description="Keep the intermediate F16 GGUF beside the quantized files.")
    agreement_answer_tokens: int = Field(
        default=4000, ge=100, description="Answer tokens the quantization check scores (validation conversations "
                                          "first, then train ones, until this many or the data runs out).")
    agreement_confidence: float = Field(
        default=0.95, ge=0.5, lt=1.0, description="Confidence of the bootstrap intervals: a file fails only when "
                                                  "its interval lies wholly beyond the tolerance.")
    allow_q8_0_only: bool = Field(
        default=True, description="Deploy Q8_0 alone when Q4_K_M is out of tolerance (and Q8_0 is within it).")

@dg.asset(
    group_name="model", kinds={"gguf"}, deps=["merged_model", "dataset_splits"], pool="stage_quantized_model",
    check_specs=[
        dg.AssetCheckSpec("train_serve_parity", asset="quantized_model", blocking=True,
                          description="llama.cpp renders the training prompt tokens and stops at <|im_end|>."),
        dg.AssetCheckSpec("quantization_tolerance", asset="quantized_model", blocking=True,
                          description="The GGUF file to deploy (Q4_K_M, else Q8_0 if allowed) stays within "
                                      "tolerance of the merged model (answer-token perplexity, top-1 agreement) on "
                                      "chat-formatted conversations."),
    ],
)
def quantized_model(
    context: dg.AssetExecutionContext, config: QuantizeConfig, store: StorageResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """GGUF Q8_0 and Q4_K_M with an Ollama Modelfile, checked for train/serve parity and quantization loss."""
    artifacts = store.store(context)
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
    conversations = _validation_conversations(splits["paths"]["validation"]["jsonl"], config.check_conversations)
    parity_ok, parity = check_template_parity(hf_dir, files["q4_k_m"], conversations)
    # Tool prompts too: the gateway renders offered tools and tool results as training did.
    tool_ok, tool_parity = check_tool_prompt_parity(hf_dir, files["q4_k_m"],
                                                    tools=_offered_tools(splits["paths"]["train"]["jsonl"]))
    parity = {"conversations": parity, "tools": tool_parity}
    parity_ok = bool(parity_ok and tool_ok)
    agreement = check_quantization_agreement(
        hf_dir, files, _conversations(splits["paths"]["validation"]["jsonl"], splits["paths"]["train"]["jsonl"]),
        answer_token_budget=config.agreement_answer_tokens, confidence=config.agreement_confidence,
    )
    deploy = deployable_file(agreement, PREFERENCE, allow_fallback=config.allow_q8_0_only)
    served = files[deploy or PREFERENCE[0]]
    chat_template = json.loads((hf_dir / "tokenizer_config.json").read_text()).get("chat_template") or \
        (hf_dir / "chat_template.jinja").read_text()
    modelfile = write_modelfile(served, out_dir / "Modelfile", chat_template, [STOP_TOKEN])
    # llama.cpp must end the turn where the model writes <|im_end|> (the GGUF's end-of-turn token is the
    # training one): checked on the validation conversations with the shortest answers, so a long
    # page-builder answer cannot hit the token limit first. One answer that ends there proves the stop
    # works; a model that rambles on others is a quality matter for the eval, not a parity failure, but a
    # file where none stops (a wrong end-of-turn token, or a model that never learned to end) is blocked.
    short = sorted(conversations, key=lambda conv: len(conv[-1].get("content") or ""))[:5]
    stop_results = [check_stops(served, _render_prompt(hf_dir, conv), max_tokens=256) for conv in short]
    stops_ok = any(ok for ok, _ in stop_results)
    stops = {"prompts": len(stop_results), "stopped": sum(ok for ok, _ in stop_results),
             "details": [detail for _, detail in stop_results]}
    if not config.keep_f16:
        f16.unlink(missing_ok=True)
    tolerance_summary = _tolerance_summary(agreement, deploy, config.allow_q8_0_only)
    if deploy is None or agreement["failures"]:
        context.log.warning(tolerance_summary)

    metrics = {}
    for label, numbers in agreement["files"].items():
        for key, value in numbers.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[f"{label}_{key}"] = float(value)
            elif key.endswith("_interval"):
                metrics[f"{label}_{key}_low"], metrics[f"{label}_{key}_high"] = map(float, value)
    sizes = {label: path.stat().st_size for label, path in files.items()}
    with stage_run(context, mlflow.tracker(), "quantized_model") as run:
        run.log_params({"model_version": merged["model_version"]})
        run.log_metrics({**metrics, **{f"{k}_bytes": v for k, v in sizes.items()}})
        lineage = mlflow_metadata(run)
    tags = {f"gguf_{k}": str(v) for k, v in files.items()}
    if deploy is not None:
        tags["gguf_deploy"] = str(files[deploy])
    mlflow.tracker().tag_model_version(merged["model_version"], tags)

    if parity_ok and stops_ok and deploy is not None:
        _log_model_files(mlflow.tracker(), merged, files, deploy, out_dir, modelfile)
        artifacts.record_latest("quantized_model", {
            "model_version": merged["model_version"], "gguf": {k: str(v) for k, v in files.items()},
            "deploy": deploy, "modelfile": str(modelfile), "agreement": agreement, "template_parity": parity_ok,
            "stops": stops_ok,
        })
    return dg.MaterializeResult(
        metadata={
            "q8_0": dg.MetadataValue.path(str(files["q8_0"])),
            "q4_k_m": dg.MetadataValue.path(str(files["q4_k_m"])),
            "modelfile": dg.MetadataValue.path(str(modelfile)),
            "deploy": dg.MetadataValue.text(deploy or "none"),
            **{f"{k}_mb": dg.MetadataValue.float(round(v / 2**20, 1)) for k, v in sizes.items()},
            **{k: dg.MetadataValue.float(v) for k, v in metrics.items()},
            **lineage,
        },
        check_results=[
            dg.AssetCheckResult(check_name="train_serve_parity", passed=bool(parity_ok and stops_ok),
                                metadata={"template": dg.MetadataValue.json(_jsonable(parity)),
                                          "stops": dg.MetadataValue.json(_jsonable(stops))}),
            dg.AssetCheckResult(check_name="quantization_tolerance", passed=deploy is not None,
                                description=tolerance_summary[:1000],
                                metadata={"deploy": dg.MetadataValue.text(deploy or "none"),
                                          "agreement": dg.MetadataValue.json(_jsonable(agreement))}),
        ],
    )

def _offered_tools(jsonl_path: str) -> list[dict] | None:
    """The tools offered in the first training row that offers any (None: the split has no tool rows)."""
    with open(jsonl_path, encoding="utf-8") as fh:
        for line in fh:
            tools = json.loads(line).get("tools")
            if tools:
                return tools
    return None

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

def _conversations(*jsonl_paths: str) -> Iterator[list[dict]]:
    """Chat conversations (tools rendered as training renders them) from each JSONL split in turn."""
    for path in jsonl_paths:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                yield to_training_messages(row["messages"], row.get("tools"))

def _tolerance_summary(agreement: dict, deploy: str | None, allow_q8_0_only: bool) -> str:
    lines = list(agreement["failures"])
    if deploy is not None:
        lines.append(f"deploying {deploy}")
    elif not allow_q8_0_only and agreement["files"]["q8_0"]["ok"]:
        lines.append("no file to deploy: q4_k_m is out of tolerance and allow_q8_0_only is off")
    else:
        lines.append("no file to deploy")
    return "; ".join(lines)

def _render_prompt(hf_dir: Path, conversation: list[dict]) -> str:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    return tokenizer.apply_chat_template(conversation[:-1], tokenize=False, add_generation_prompt=True)

def _log_model_files(tracker, merged: dict, files: dict[str, Path], deploy: str, out_dir: Path,
                     modelfile: Path) -> None:
    """The GGUF files, the Modelfile and the manifest into the model version's artifacts (``model/``), so
    ``models:/homegrown-assistant@champion`` serves on a machine that never ran this pipeline. Older merged
    records (before the run id was recorded) have no run to log into and are skipped."""
    run_id = merged.get("mlflow_run_id")
    if not run_id:
        return
    manifest = {"model": REGISTERED_MODEL, "version": str(merged["model_version"]), "deploy": deploy,
                "serve": f"gguf/{files[deploy].name}", "gguf": {k: f"gguf/{v.name}" for k, v in files.items()},
                "modelfile": "gguf/Modelfile", "stop": [STOP_TOKEN], "base_model": merged.get("base_spec", "")}
    manifest_path = out_dir / MANIFEST
    manifest_path.write_text(json.dumps(manifest, indent=2))
    for path in (*files.values(), modelfile):
        tracker.log_model_files(run_id, path, "gguf")
    tracker.log_model_files(run_id, manifest_path, "")


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))

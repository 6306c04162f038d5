"""Specialists: a peft adapter as a llama.cpp LoRA file, applied per request over one base GGUF."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("llama_cpp")

from homegrown.gateway.backends import BackendError, LlamaCppBackend, load_lora
from homegrown.gateway.schemas import ChatCompletionRequest
from homegrown.training import export, llama_cpp_util
from homegrown.training.lora_gguf import export_lora_gguf

PROMPT = [{"role": "user", "content": "What time do you open on Sunday, and is the patio heated?"}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 2-layer Llama (random, sharp attention) with the SmolLM2 tokenizer, its f32 GGUF, and two random
    LoRA adapters on every linear layer (B drawn non-zero, so each changes the output)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from homegrown.training.base import embedded_gguf_path

    gguf = embedded_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    root = tmp_path_factory.mktemp("specialists")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True, rms_norm_eps=1e-5,
        rope_theta=10000.0, bos_token_id=1, eos_token_id=2, pad_token_id=2, initializer_range=0.2)
    base = LlamaForCausalLM(config).eval()
    base.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    base_gguf = export.export_gguf(root / "base", root / "base-f32.gguf", "f32")
    adapters = {}
    for index, name in enumerate(("faq", "tool_invocation")):
        torch.manual_seed(100 + index)
        model = LlamaForCausalLM.from_pretrained(root / "base", dtype=torch.float32)
        peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                       lora_dropout=0.0, init_lora_weights=False))
        with torch.no_grad():  # B scaled up: the adapter must move the logits well past f16 rounding
            for module_name, param in peft_model.named_parameters():
                if "lora_B" in module_name:
                    param.mul_(4.0)
        peft_model.save_pretrained(root / name)
        adapters[name] = {"dir": root / name, "model": peft_model.eval()}
    return {"root": root, "tokenizer": tokenizer, "base": base, "base_gguf": base_gguf, "adapters": adapters}


def _ids(tokenizer) -> list[int]:
    prompt = tokenizer.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    return tokenizer.encode(prompt, add_special_tokens=False)


def _hf_logits(model, ids: list[int]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def _llama_logits(base_gguf: Path, lora_gguf: Path | None, ids: list[int]) -> np.ndarray:
    import ctypes

    import llama_cpp

    llm = llama_cpp_util.load_llama(base_gguf, logits_all=True, n_ctx=128)
    try:
        if lora_gguf is not None:
            adapter = load_lora(llm, lora_gguf)
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
            assert llama_cpp.llama_set_adapters_lora(llm._ctx.ctx, adapters, 1, (ctypes.c_float * 1)(1.0)) == 0
        return llama_cpp_util.llama_cpp_logits(llm, ids)
    finally:
        llm.close()


def test_lora_file_applies_as_peft_does(tiny, tmp_path):
    """llama.cpp's base GGUF + our LoRA file gives the logits of the peft model, not those of the base."""
    ids = _ids(tiny["tokenizer"])
    adapter = tiny["adapters"]["faq"]
    lora = export_lora_gguf(adapter["dir"], tiny["root"] / "base", tmp_path / "faq.lora.gguf", "f32")
    expected = _hf_logits(adapter["model"], ids)
    base_logits = _hf_logits(tiny["base"], ids)
    assert np.abs(expected - base_logits).max() > 2.0  # the adapter matters, so the check means something
    got = _llama_logits(tiny["base_gguf"], lora, ids)
    assert np.abs(got - expected).max() < 0.05
    assert (got.argmax(-1) == expected.argmax(-1)).mean() >= 0.95


def test_lora_file_without_rotary_permutation_is_caught(tiny, tmp_path, monkeypatch):
    """Planted: the q/k rows of B left in Hugging Face's layout. The comparison above must see it."""
    ids = _ids(tiny["tokenizer"])
    adapter = tiny["adapters"]["faq"]
    monkeypatch.setattr(export, "_permute_for_llama_cpp", lambda weights, n_head: weights)
    lora = export_lora_gguf(adapter["dir"], tiny["root"] / "base", tmp_path / "unpermuted.lora.gguf", "f32")
    got = _llama_logits(tiny["base_gguf"], lora, ids)
    assert np.abs(got - _hf_logits(adapter["model"], ids)).max() > 0.5


def test_lora_export_refuses_what_llama_cpp_cannot_apply(tiny, tmp_path):
    folder = tmp_path / "dora"
    folder.mkdir()
    config = json.loads((tiny["adapters"]["faq"]["dir"] / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(ValueError, match="use_dora"):
        export_lora_gguf(folder, tiny["root"] / "base", tmp_path / "x.gguf")
    with pytest.raises(ValueError, match="not a peft adapter"):
        export_lora_gguf(tmp_path, tiny["root"] / "base", tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


@pytest.fixture(scope="module")
def lora_files(tiny):
    return {name: export_lora_gguf(a["dir"], tiny["root"] / "base", tiny["root"] / f"{name}.lora.gguf")
            for name, a in tiny["adapters"].items()}


def _answer(backend: LlamaCppBackend, example_type: str | None) -> str:
    request = ChatCompletionRequest(model="x", messages=PROMPT, max_tokens=12, temperature=0.0, seed=0,
                                    metadata={"example_type": example_type} if example_type else None)
    return backend.complete(request).text


def test_one_base_switches_adapters_per_request(tiny, lora_files):
    """One loaded base serves both adapters: each request gets its own adapter's answer, whatever the
    previous request used (the cached prompt of another adapter is not reused)."""
    alone = {}
    for name, path in lora_files.items():
        single = LlamaCppBackend(tiny["base_gguf"], n_ctx=256, n_threads=1, adapters={name: path})
        try:
            alone[name] = _answer(single, name)
        finally:
            single.close()
    plain = LlamaCppBackend(tiny["base_gguf"], n_ctx=256, n_threads=1)
    try:
        base_answer = _answer(plain, None)
    finally:
        plain.close()
    assert alone["faq"] != alone["tool_invocation"]
    assert base_answer not in alone.values()

    shared = LlamaCppBackend(tiny["base_gguf"], n_ctx=256, n_threads=1, adapters=lora_files)
    try:
        assert shared.describe()["adapters"].keys() == {"faq", "tool_invocation"}
        answers = [(t, _answer(shared, t)) for t in ("faq", "tool_invocation", "faq", "faq", "tool_invocation")]
        for example_type, answer in answers:
            assert answer == alone[example_type], example_type
        with pytest.raises(BackendError, match="no adapter for example_type 'support'"):
            _answer(shared, "support")
    finally:
        shared.close()


def test_missing_lora_file_is_a_load_error(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="LoRA file of adapter 'faq'"):
        LlamaCppBackend(tiny["base_gguf"], adapters={"faq": tmp_path / "missing.gguf"})
    not_lora = tmp_path / "not-lora.gguf"
    not_lora.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ValueError, match="could not load the LoRA file"):
        LlamaCppBackend(tiny["base_gguf"], adapters={"faq": not_lora})


# -- the gateway: routing by declared type, one base in one worker process --------------------------------


@pytest.fixture()
def served(tiny, lora_files, tmp_path, monkeypatch):
    """A real gateway (model worker processes, as deployed) with a general champion and the two specialists."""
    from homegrown.gateway.app import create_app
    from homegrown.gateway.settings import GatewaySettings, ModelsFile, ModelSpec
    from tests.loopback import serve_app

    monkeypatch.setenv("HOMEGROWN_HOME", str(tmp_path / "home"))
    settings = GatewaySettings(api_keys=["k:org"], models_file=tmp_path / "models.json", n_threads=1, n_ctx=512,
                               log_db_url=f"sqlite:///{tmp_path / 'log.sqlite'}", default_to_base_model=False)
    ModelsFile(
        champion=ModelSpec(name="general", gguf_path=str(tiny["base_gguf"])),
        specialist=ModelSpec(name="specialists", gguf_path=str(tiny["base_gguf"]),
                             adapters={k: str(v) for k, v in lora_files.items()}),
    ).write(settings.models_file)
    app = create_app(settings)
    with serve_app(app) as url:
        yield url, app.state.gateway
    app.state.gateway.pool.close()


def test_gateway_routes_declared_types_to_their_adapter(tiny, lora_files, served):
    import httpx
    from openai import OpenAI

    url, gateway = served
    api = OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0, timeout=120)
    alone = LlamaCppBackend(tiny["base_gguf"], n_ctx=512, n_threads=1, adapters={"faq": lora_files["faq"]})
    try:
        expected_faq = _answer(alone, "faq")
    finally:
        alone.close()
    assert gateway.pool.specialist_types() == ["faq", "tool_invocation"]

    faq = api.chat.completions.create(model="homegrown", messages=PROMPT, max_tokens=12, temperature=0, seed=0,
                                      metadata={"example_type": "faq"})
    assert faq.model == "specialists"
    assert faq.choices[0].message.content == expected_faq
    meta = gateway.store.get_interaction(faq.id)["metadata"]
    assert meta["route"] == "specialist" and meta["routing_reason"] == "specialist:faq"

    # A type without an adapter, or none declared, goes to the general champion.
    support = api.chat.completions.create(model="homegrown", messages=PROMPT, max_tokens=4,
                                          metadata={"example_type": "support"})
    assert support.model == "general"
    plain = api.chat.completions.create(model="homegrown", messages=PROMPT, max_tokens=4)
    assert plain.model == "general"

    # The header works as well as the metadata; a request with tools is a tool_invocation whatever it says.
    header = httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": "Bearer k", "X-Example-Type": "faq"},
                        json={"model": "homegrown", "messages": PROMPT, "max_tokens": 12, "temperature": 0,
                              "seed": 0}, timeout=120)
    assert header.status_code == 200 and header.json()["model"] == "specialists"
    assert header.json()["choices"][0]["message"]["content"] == expected_faq
    tool = {"type": "function", "function": {"name": "check_hours", "description": "Opening hours of a day",
                                             "parameters": {"type": "object", "properties": {
                                                 "day": {"type": "string"}}, "required": ["day"]}}}
    called = api.chat.completions.create(model="homegrown", messages=PROMPT, max_tokens=24, tools=[tool],
                                         metadata={"example_type": "faq"})
    assert called.model == "specialists"
    assert gateway.store.get_interaction(called.id)["metadata"]["routing_reason"] == "specialist:tool_invocation"
    health = httpx.get(f"{url}/health", headers={"Authorization": "Bearer k"}).json()
    assert set(health["models"]["specialist"]["adapters"]) == {"faq", "tool_invocation"}


# -- the pure parts: which types, the slices, the verdict against the general model --------------------------


def test_choose_types_needs_rows_in_train_and_test():
    from homegrown.specialists import choose_types

    counts = {"train": {"faq": 120, "tool_invocation": 60, "support": 10},
              "validation": {"faq": 10}, "test": {"faq": 20, "tool_invocation": 3, "support": 5}}
    chosen = {s.example_type: s for s in choose_types(counts, [], min_train_rows=40, min_test_rows=8)}
    assert [t for t, s in chosen.items() if s.chosen] == ["faq"]
    assert "3 test rows" in chosen["tool_invocation"].reason and "10 train rows" in chosen["support"].reason
    named = {s.example_type: s for s in choose_types(counts, ["support", "page_generation"], 5, 1)}
    assert [t for t, s in named.items() if s.chosen] == ["support"]
    assert named["faq"].reason == "not in the configured types" and named["page_generation"].train == 0
    # Undeclared requests are the general model's, and a type the gateway cannot route gets no specialist.
    other = {s.example_type: s for s in choose_types({"train": {"chat": 500, "recipes": 90},
                                                      "test": {"chat": 50, "recipes": 10}}, [], 40, 8)}
    assert not other["chat"].chosen and "general model" in other["chat"].reason
    assert not other["recipes"].chosen and "routes only" in other["recipes"].reason


def test_write_slice_keeps_the_rows_of_one_type_and_refuses_a_mismatch(tmp_path):
    from homegrown.specialists import write_slice

    source = tmp_path / "train.jsonl"
    source.write_text('{"n": 0}\n{"n": 1}\n{"n": 2}\n')
    assert write_slice(source, ["faq", "chat", "faq"], "faq", tmp_path / "faq.jsonl") == 2
    assert (tmp_path / "faq.jsonl").read_text() == '{"n": 0}\n{"n": 2}\n'
    with pytest.raises(ValueError, match="has 3 lines but its parquet has 2 rows"):
        write_slice(source, ["faq", "chat"], "faq", tmp_path / "x.jsonl")


def test_versus_general_reads_only_intervals_clear_of_zero():
    from homegrown.specialists import versus_general

    assert versus_general({"fact_accuracy": (0.2, 0.05, 0.35)})["verdict"] == "better"
    assert versus_general({"hallucination_rate": (-0.1, -0.2, -0.01)})["better"] == ["hallucination_rate"]
    assert versus_general({"fact_accuracy": (0.1, -0.05, 0.25)})["verdict"] == "no difference beyond noise"
    assert versus_general({"token_f1": (-0.2, -0.3, -0.1)})["verdict"] == "worse"
    mixed = versus_general({"token_f1": (-0.2, -0.3, -0.1), "tool_exact_match": (0.3, 0.1, 0.5)})
    assert mixed["verdict"] == "mixed" and mixed["worse"] == ["token_f1"]


# -- deployment: models.json, hot reload, a smoke request per type, rollback ------------------------------------

TOOL = {"type": "function", "function": {"name": "check_hours", "description": "Opening hours of a day",
                                         "parameters": {"type": "object", "properties": {"day": {"type": "string"}},
                                                        "required": ["day"]}}}
SMOKE = {"faq": {"messages": PROMPT, "tools": None}, "tool_invocation": {"messages": PROMPT, "tools": [TOOL]}}


def test_deploy_specialists_reloads_smokes_and_rolls_back(tiny, lora_files, tmp_path, monkeypatch):
    from homegrown.gateway.app import create_app
    from homegrown.gateway.deploy import deploy_specialists
    from homegrown.gateway.settings import GatewaySettings, ModelSpec, read_models_file, write_models_file
    from tests.loopback import serve_app

    monkeypatch.setenv("HOMEGROWN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOMEGROWN_N_THREADS", "1")
    monkeypatch.setenv("HOMEGROWN_N_CTX", "512")
    settings = GatewaySettings()
    with pytest.raises(ValueError, match="beside a general champion"):
        deploy_specialists(str(tiny["base_gguf"]), {k: str(v) for k, v in lora_files.items()}, SMOKE, name="s",
                           gateway_url="http://127.0.0.1:9")
    write_models_file(settings.models_file, ModelSpec(name="general", gguf_path=str(tiny["base_gguf"])))
    app = create_app(settings)
    try:
        with serve_app(app) as url:
            done = deploy_specialists(str(tiny["base_gguf"]), {k: str(v) for k, v in lora_files.items()}, SMOKE,
                                      name="specialists-v1", gateway_url=url, log=lambda _: None)
            assert done["smoke_ok"], done["smoke_detail"]
            assert set(done["answers"]) == {"faq", "tool_invocation"} and all(done["answers"].values())
            assert read_models_file(settings.models_file).specialist.name == "specialists-v1"
            assert app.state.gateway.pool.specialist_types() == ["faq", "tool_invocation"]

            # Planted: a broken LoRA file. The reload fails, the previous specialists come back and serve.
            broken = tmp_path / "broken.lora.gguf"
            broken.write_bytes(b"GGUF" + b"\0" * 64)
            failed = deploy_specialists(str(tiny["base_gguf"]), {"faq": str(broken)}, SMOKE,
                                        name="specialists-v2", gateway_url=url, log=lambda _: None)
            assert not failed["smoke_ok"] and failed["rolled_back"]
            assert read_models_file(settings.models_file).specialist.name == "specialists-v1"
            assert app.state.gateway.pool.get("specialist").name == "specialists-v1"

            # Planted: a type whose smoke request the specialist does not answer (declared, but no tools and no
            # adapter for "chat"): the check sees the general model answer and restores v1.
            wrong = deploy_specialists(str(tiny["base_gguf"]), {"faq": str(lora_files["faq"])},
                                       {"faq": {**SMOKE["faq"], "tools": [TOOL]}}, name="specialists-v3",
                                       gateway_url=url, log=lambda _: None)
            assert not wrong["smoke_ok"] and "expected the specialist" in wrong["smoke_detail"]
            assert read_models_file(settings.models_file).specialist.name == "specialists-v1"
            assert app.state.gateway.pool.get("specialist").name == "specialists-v1"
            assert read_models_file(settings.models_file).champion.name == "general"
    finally:
        app.state.gateway.pool.close()


# -- the asset: real data assets, a tiny base, two specialists trained, exported, evaluated and gated -------------


@pytest.mark.slow
def test_specialist_assets_on_the_demo_splits(hg_home, tiny, tmp_path, monkeypatch):
    """specialist_adapters trains, exports, evaluates and gates two specialists; deployed_specialists serves
    them through a real background gateway beside the champion and smoke-tests each type."""
    import dagster as dg

    from homegrown.gateway.server import stop_background
    from homegrown.gateway.settings import GatewaySettings, ModelSpec, read_models_file, write_models_file
    from homegrown.store import ArtifactStore
    from pipelines.definitions import defs

    tiny_llama_dir = tiny["root"] / "base"  # random but sharp weights: its answers are not empty
    wanted = {"raw_interactions", "synthetic_examples", "scored_dataset", "dataset_splits", "lora_adapter"}
    upstream = [a for a in defs.assets if a.key.to_user_string() in wanted]
    training = {"base_model": str(tiny_llama_dir), "max_steps": 2, "max_seq_length": 256,
                "per_device_batch_size": 2, "gradient_accumulation": 1}
    assert dg.materialize(upstream, resources=defs.resources,
                          run_config={"ops": {"lora_adapter": {"config": training}}}).success
    store = ArtifactStore(hg_home / "artifacts")
    # The general candidate: the tiny base exported as the quantized stage would hand it over.
    general = export.export_gguf(tiny_llama_dir, tmp_path / "general-f16.gguf", "f16")
    store.record_latest("quantized_model", {"gguf": {"q4_k_m": str(general)}, "deploy": "q4_k_m",
                                            "model_version": "1"})

    asset = [a for a in defs.assets if a.key.to_user_string() == "specialist_adapters"]
    config = {"types": ["tool_invocation", "page_generation", "support"], "min_train_rows": 5, "min_test_rows": 1,
              "training": {**training, "max_seq_length": 512}, "gate": {"max_examples": 3, "max_tokens": 24}}
    result = dg.materialize(asset, resources=defs.resources,
                            run_config={"ops": {"specialist_adapters": {"config": config}}})
    assert result.success
    info = store.latest("specialist_adapters")
    assert [s["example_type"] for s in info["specialists"]] == ["page_generation", "tool_invocation"]
    assert {s["example_type"]: s["reason"] for s in info["slices"] if not s["chosen"]}["support"].startswith("0 train")
    for item in info["specialists"]:
        assert Path(item["lora_gguf"]).is_file() and item["test_rows"] == 3
        assert set(item["metrics"]) == {"base", "general", "specialist"}
        assert item["versus_general"]["verdict"] in ("better", "worse", "mixed", "no difference beyond noise")
        assert item["gate"] is not None and "privacy_leaks" in item["metrics"]["specialist"]
        # Trained on its own slice only: the adapter saw the slice's rows, not the whole split.
        lines = (Path(info["dir"]) / item["example_type"] / "train.jsonl").read_text().splitlines()
        assert len(lines) == item["train_rows"] and len(lines) < 100
    assert Path(info["base_gguf"]).name == "base-f16.gguf"  # a folder base is exported once for llama.cpp
    summary = result.asset_materializations_for_node("specialist_adapters")[0].metadata["summary"].value
    assert "| tool_invocation | 3 | specialist |" in summary

    # A random tiny model passes no gate, so the deployment is asked to serve one anyway (the page prompt makes
    # this random model end its answer at once, which the smoke test would rightly refuse).
    monkeypatch.setenv("HOMEGROWN_PORT", "0")
    monkeypatch.setenv("HOMEGROWN_N_THREADS", "1")
    write_models_file(GatewaySettings().models_file, ModelSpec(name="general", gguf_path=str(general)))
    deploy = [a for a in defs.assets if a.key.to_user_string() == "deployed_specialists"]
    try:
        with pytest.raises(Exception, match="no specialist passed its gate"):  # only_passed, the default
            dg.materialize(deploy, resources=defs.resources)
        served = dg.materialize(deploy, resources=defs.resources, run_config={
            "ops": {"deployed_specialists": {"config": {"only_passed": False, "types": ["tool_invocation"]}}}})
        assert served.success
        checks = served.get_asset_check_evaluations()
        assert [(c.check_name, c.passed) for c in checks] == [("specialist_smoke_test", True)]
        specialist = read_models_file(GatewaySettings().models_file).specialist
        assert set(specialist.adapters) == {"tool_invocation"}
        assert specialist.gguf_path == info["base_gguf"]
        assert set(store.latest("deployed_specialists")["answers"]) == {"tool_invocation"}
        # `homegrown status` names what was trained, what passed and what the gateway serves
        from homegrown.cli import status

        shown = status()["specialists"]
        assert set(shown["trained"]) == {"page_generation", "tool_invocation"}
        assert shown["served"] == ["tool_invocation"] and shown["general_model_version"] == "1"
        assert all(t["gate_passed"] is False for t in shown["trained"].values())
    finally:
        stop_background()


def test_smoke_requests_take_the_first_test_example_of_each_type(tmp_path):
    import pandas as pd

    from homegrown.gateway.deploy import smoke_requests_for

    turn = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    frame = pd.DataFrame({"example_id": ["b", "a", "c"], "example_type": ["faq", "faq", "tool_invocation"],
                          "messages": [json.dumps(turn)] * 3, "tools": [None, "", json.dumps([TOOL])]})
    frame.to_parquet(tmp_path / "test.parquet")
    requests = smoke_requests_for(tmp_path / "test.parquet", ["faq", "tool_invocation"])
    assert requests["faq"] == {"messages": [turn[0]], "tools": None}
    assert requests["tool_invocation"]["tools"] == [TOOL]
    with pytest.raises(ValueError, match="no support example"):
        smoke_requests_for(tmp_path / "test.parquet", ["support"])


def test_models_file_keeps_adapters_to_the_specialist_role():
    from pydantic import ValidationError

    from homegrown.gateway.settings import ModelsFile, ModelSpec

    with_adapters = ModelSpec(name="s", gguf_path="/m/base.gguf", adapters={"faq": "/m/faq.gguf"})
    assert ModelsFile(specialist=with_adapters).specialist.adapters == {"faq": "/m/faq.gguf"}
    with pytest.raises(ValidationError, match="'champion' cannot have 'adapters'"):
        ModelsFile(champion=with_adapters)
    with pytest.raises(ValidationError, match="must name its 'adapters'"):
        ModelsFile(specialist=ModelSpec(name="s", gguf_path="/m/base.gguf"))
    with pytest.raises(ValidationError, match="needs 'gguf_path'"):
        ModelSpec(name="s", base_url="http://vllm:8000/v1", adapters={"faq": "/m/faq.gguf"})

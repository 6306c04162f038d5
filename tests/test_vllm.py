"""vLLM as a serving target: the real CPU build of vLLM serving SmolLM2 with an adapter loaded at runtime,
and a deployment through a real gateway pointing at it, rollback included.

Needs vLLM in its own environment (``make vllm``); without it every test here skips and says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from homegrown.gateway.vllm import VllmError, start_vllm, vllm_python

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(vllm_python() is None, reason="vLLM is not installed here: run `make vllm` "
                                                      "(or set HOMEGROWN_VLLM_PYTHON) to run these tests"),
]

QUESTION = [{"role": "user", "content": "What time do you open on Sunday?"}]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    from homegrown.training.base import resolve_base_model

    return resolve_base_model(cache_dir=tmp_path_factory.mktemp("base")).path


@pytest.fixture(scope="module")
def adapter_dir(base_dir, tmp_path_factory) -> Path:
    """A LoRA adapter on SmolLM2's attention, drawn at random and large enough to change the answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                  lora_dropout=0.0, init_lora_weights=False))
    folder = tmp_path_factory.mktemp("adapter") / "adapter"
    peft_model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def vllm(base_dir, tmp_path_factory):
    server = start_vllm(base_dir, max_lora_rank=16, log_path=tmp_path_factory.mktemp("vllm") / "vllm.log")
    yield server.server
    server.stop()


def _ask(url: str, model: str, key: str = "unused") -> tuple[str, str]:
    from openai import OpenAI

    client = OpenAI(base_url=f"{url.rstrip('/')}/v1", api_key=key, max_retries=0, timeout=300)
    response = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=16, temperature=0)
    return response.model, response.choices[0].message.content or ""


def test_vllm_loads_an_adapter_at_runtime_and_answers_with_it(vllm, adapter_dir):
    vllm.load_adapter("probe", adapter_dir)
    assert {"base", "probe"} <= set(vllm.models())
    _, plain = _ask(vllm.url, "base")
    _, adapted = _ask(vllm.url, "probe")
    assert plain and adapted and plain != adapted  # the adapter is applied, not ignored
    vllm.load_adapter("probe", adapter_dir)  # loading a name again replaces it
    vllm.unload_adapter("probe")
    assert "probe" not in vllm.models()
    with pytest.raises(VllmError, match="not a peft adapter"):
        vllm.load_adapter("nothing", adapter_dir.parent)


def test_deploy_to_vllm_through_the_gateway_then_roll_back(vllm, adapter_dir, hg_home, tmp_path, monkeypatch):
    from homegrown.gateway.app import create_app
    from homegrown.gateway.deploy import deploy_model
    from homegrown.gateway.settings import GatewaySettings, read_models_file
    from homegrown.tracking import Tracker
    from tests.loopback import serve_app

    monkeypatch.setenv("HOMEGROWN_N_THREADS", "1")
    tracker = Tracker()
    good = tracker.register_model(str(adapter_dir), run_id=None, tags={"dataset_version": "d1"})
    settings = GatewaySettings(default_to_base_model=False)
    app = create_app(settings)
    try:
        with serve_app(app) as url:
            done = deploy_model(tracker, good["version"], None, adapter_dir=str(adapter_dir), vllm_url=vllm.url,
                                gateway_url=url, log=lambda _: None)
            name = f"homegrown-v{good['version']}"
            assert done["smoke_ok"], done["smoke_detail"]
            assert done["target"] == "vllm" and name in vllm.models()
            champion = read_models_file(settings.models_file).champion
            assert champion.base_url == f"{vllm.url}/v1" and champion.model == name
            # The gateway's answer is vLLM's answer for that adapter.
            assert _ask(url, "homegrown", settings.client_api_key()) == (name, _ask(vllm.url, name)[1])

            # Planted: an adapter vLLM cannot load (its weights are not a LoRA of this model).
            broken = tmp_path / "broken"
            broken.mkdir()
            (broken / "adapter_config.json").write_text(json.dumps(
                {**json.loads((adapter_dir / "adapter_config.json").read_text()), "r": 4096}))
            (broken / "adapter_model.safetensors").write_bytes(b"not safetensors")
            bad = tracker.register_model(str(broken), run_id=None, tags={"dataset_version": "d2"})
            failed = deploy_model(tracker, bad["version"], None, adapter_dir=str(broken), vllm_url=vllm.url,
                                  gateway_url=url, rollout="immediate", log=lambda _: None)
            assert not failed["smoke_ok"] and "vLLM" in failed["smoke_detail"]
            assert read_models_file(settings.models_file).champion.model == name
            assert tracker.alias_version("champion")["version"] == good["version"]
            assert f"homegrown-v{bad['version']}" not in vllm.models()
            assert _ask(url, "homegrown", settings.client_api_key())[0] == name
    finally:
        app.state.gateway.pool.close()


def test_deploy_merged_weights_on_a_vllm_server_of_their_own_then_roll_back(base_dir, hg_home, tmp_path,
                                                                            monkeypatch):
    """target vllm-merged: a server per version serving the merged folder; a failed start leaves the champion,
    and a later deploy stops the server no entry names any more."""
    import shutil

    from homegrown.gateway.app import create_app
    from homegrown.gateway.deploy import deploy_model
    from homegrown.gateway.settings import GatewaySettings, read_models_file
    from homegrown.gateway.vllm import merged_servers
    from homegrown.tracking import Tracker
    from tests.loopback import serve_app

    monkeypatch.setenv("HOMEGROWN_N_THREADS", "1")
    tracker = Tracker()
    merged = tmp_path / "merged-v1"
    shutil.copytree(base_dir, merged)  # stands in for a merged folder: the same files, the same shapes
    first = tracker.register_model(str(merged), run_id=None, tags={"dataset_version": "d1"})
    settings = GatewaySettings(default_to_base_model=False)
    app = create_app(settings)
    try:
        with serve_app(app) as url:
            done = deploy_model(tracker, first["version"], None, vllm_merged_dir=str(merged), gateway_url=url,
                                log=lambda _: None)
            name = f"homegrown-v{first['version']}"
            assert done["smoke_ok"], done["smoke_detail"]
            assert done["target"] == "vllm-merged" and [r["name"] for r in merged_servers()] == [name]
            served = merged_servers()[0]["url"]
            assert read_models_file(settings.models_file).champion.base_url == f"{served}/v1"
            assert _ask(url, "homegrown", settings.client_api_key()) == (name, _ask(served, name)[1])

            # Planted: a merged folder vLLM cannot start on (weights missing).
            broken = tmp_path / "merged-broken"
            broken.mkdir()
            (broken / "config.json").write_text((merged / "config.json").read_text())
            bad = tracker.register_model(str(broken), run_id=None, tags={"dataset_version": "d2"})
            failed = deploy_model(tracker, bad["version"], None, vllm_merged_dir=str(broken), gateway_url=url,
                                  rollout="immediate", start_timeout_s=240, log=lambda _: None)
            assert not failed["smoke_ok"] and "vLLM did not start" in failed["smoke_detail"]
            assert read_models_file(settings.models_file).champion.model == name
            assert tracker.alias_version("champion")["version"] == first["version"]
            assert [r["name"] for r in merged_servers()] == [name], "the failed server is not left running"
            assert _ask(url, "homegrown", settings.client_api_key())[0] == name

            # The next version replaces it: its server serves, the old one (no entry names it) is stopped.
            second = tracker.register_model(str(merged), run_id=None, tags={"dataset_version": "d3"})
            replaced = deploy_model(tracker, second["version"], None, vllm_merged_dir=str(merged), gateway_url=url,
                                    rollout="immediate", log=lambda _: None)
            assert replaced["smoke_ok"], replaced["smoke_detail"]
            assert [r["name"] for r in merged_servers()] == [f"homegrown-v{second['version']}"]
    finally:
        from homegrown.gateway.vllm import stop_merged

        for running in merged_servers():
            stop_merged(running["url"])
        app.state.gateway.pool.close()

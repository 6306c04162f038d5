"""Deployment through a real background gateway: alias moves, hot reload, smoke test, rollback."""

import pytest

from homegrown.gateway.backends import find_base_gguf
from homegrown.gateway.deploy import deploy_model
from homegrown.gateway.server import running_gateway, stop_background
from homegrown.gateway.settings import GatewaySettings, read_models_file
from homegrown.tracking import Tracker


@pytest.mark.slow
def test_deploy_then_failed_deploy_rolls_back(hg_home, tmp_path, monkeypatch):
    monkeypatch.setenv("HOMEGROWN_PORT", "0")
    monkeypatch.setenv("HOMEGROWN_N_THREADS", "1")
    tracker = Tracker()
    good = tracker.register_model(str(find_base_gguf()), run_id=None, tags={"dataset_version": "d1"})
    broken_file = tmp_path / "broken.gguf"
    broken_file.write_bytes(b"GGUF" + b"\0" * 64)
    broken = tracker.register_model(str(broken_file), run_id=None, tags={"dataset_version": "d2"})
    try:
        first = deploy_model(tracker, good["version"], str(find_base_gguf()), log=lambda _: None)
        assert first["smoke_ok"], first["smoke_detail"]
        assert first["smoke_answer"]
        assert tracker.alias_version("champion")["version"] == good["version"]
        assert running_gateway()["healthy"]

        second = deploy_model(tracker, broken["version"], str(broken_file), log=lambda _: None)
        assert not second["smoke_ok"] and second["rolled_back"]
        assert tracker.alias_version("champion")["version"] == good["version"]
        assert tracker.alias_version("previous") is None
        models = read_models_file(GatewaySettings().models_file)
        assert models.champion.name == f"homegrown-v{good['version']}"

        from homegrown.gateway.deploy import smoke_test

        ok, detail, _ = smoke_test(first["url"], first["api_key"], f"homegrown-v{good['version']}", "Hello")
        assert ok, detail
    finally:
        stop_background()
    assert running_gateway() is None

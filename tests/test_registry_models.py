"""Deployable artifacts in the MLflow registry: a version's ``model/`` folder holds the adapter, the GGUF files
and the manifest naming the served one, and ``models:/homegrown-assistant@champion`` brings them to a machine
whose own folders hold none of them (the real MLflow, on its local store)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from assets.quantization import _log_model_files
from homegrown.tracking import MANIFEST, MODEL_DIR, REGISTERED_MODEL, Tracker


@pytest.fixture
def registered(hg_home, tmp_path):
    """A version as the pipeline leaves it: trained (adapter), then quantized (GGUF files + manifest)."""
    tracker = Tracker()
    adapter = tmp_path / "trained" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    with tracker.stage_run("lora_adapter") as run:
        run.log_artifact(adapter, artifact_path=f"{MODEL_DIR}/adapter")
        version = tracker.register_model(run.artifact_uri(MODEL_DIR), run.run_id, {"dataset_version": "d1"})
    out = tmp_path / "quantized"
    out.mkdir()
    files = {"q8_0": out / "homegrown-v1-Q8_0.gguf", "q4_k_m": out / "homegrown-v1-Q4_K_M.gguf"}
    for label, path in files.items():
        path.write_bytes(b"GGUF" + label.encode() * 1000)
    modelfile = out / "Modelfile"
    modelfile.write_text("FROM ./homegrown-v1-Q4_K_M.gguf\n")
    merged = {"model_version": version["version"], "mlflow_run_id": run.run_id, "base_spec": "smollm2-135m-instruct"}
    _log_model_files(tracker, merged, files, "q4_k_m", out, modelfile)
    tracker.tag_model_version(version["version"], {"gguf_deploy": str(files["q4_k_m"])})
    tracker.set_alias("champion", version["version"])
    return tracker, version, files


def test_the_champion_loads_from_the_registry_alone(registered, tmp_path):
    tracker, version, files = registered
    served = files["q4_k_m"].read_bytes()
    shutil.rmtree(files["q4_k_m"].parent)  # this machine no longer has the files the tags name

    gguf, pulled = tracker.pull_gguf(f"models:/{REGISTERED_MODEL}@champion", tmp_path / "pulled")
    assert gguf.read_bytes() == served and gguf.name == "homegrown-v1-Q4_K_M.gguf"
    assert pulled["version"] == version["version"] and pulled["manifest"]["deploy"] == "q4_k_m"
    assert [p.name for p in (tmp_path / "pulled").rglob("*.gguf")] == [gguf.name], "only the served file"

    everything = tracker.download_model(f"models:/{REGISTERED_MODEL}@champion", tmp_path / "all")
    assert json.loads((everything / "adapter" / "adapter_config.json").read_text()) == {"r": 8}
    assert json.loads((everything / MANIFEST).read_text())["serve"] == "gguf/homegrown-v1-Q4_K_M.gguf"
    assert (everything / "gguf" / "Modelfile").is_file()
    adapter = tracker.download_model(f"models:/{REGISTERED_MODEL}/{version['version']}", tmp_path / "a", "adapter")
    assert (adapter / "adapter_config.json").is_file()

    # What eval_report and the specialists do for a champion trained elsewhere: pull its file.
    local = tracker.local_gguf(tracker.alias_version("champion"))
    assert local is not None and Path(local).read_bytes() == served


def test_the_recorded_file_is_used_where_this_machine_has_it(registered):
    tracker, _, files = registered
    assert tracker.local_gguf(tracker.alias_version("champion")) == str(files["q4_k_m"])


def test_a_version_that_was_never_quantized_has_nothing_to_serve(hg_home, tmp_path):
    tracker = Tracker()
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with tracker.stage_run("lora_adapter") as run:
        run.log_artifact(adapter, artifact_path=f"{MODEL_DIR}/adapter")
        version = tracker.register_model(run.artifact_uri(MODEL_DIR), run.run_id, {})
    with pytest.raises(FileNotFoundError, match="never logged"):
        tracker.pull_gguf(f"models:/{REGISTERED_MODEL}/{version['version']}", tmp_path / "x")
    assert tracker.local_gguf(tracker.model_version(version["version"])) is None


@pytest.mark.parametrize("uri", ["runs:/abc/model", "models:/homegrown-assistant", "/tmp/model.gguf"])
def test_bad_model_uris_are_refused(hg_home, uri):
    with pytest.raises(ValueError):
        Tracker().resolve_model_uri(uri)


def test_a_file_pulled_before_is_reused(registered, tmp_path, monkeypatch):
    tracker, _, _ = registered
    first, _ = tracker.pull_gguf(f"models:/{REGISTERED_MODEL}@champion", tmp_path / "pulled")
    import mlflow.artifacts

    real = mlflow.artifacts.download_artifacts
    downloads = []

    def counting(*args, **kwargs):
        downloads.append(kwargs.get("artifact_uri"))
        return real(*args, **kwargs)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", counting)
    again, _ = tracker.pull_gguf(f"models:/{REGISTERED_MODEL}@champion", tmp_path / "pulled")
    assert again == first
    assert [uri for uri in downloads if uri.endswith(".gguf")] == [], "the served file was downloaded again"

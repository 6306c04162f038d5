"""The artifact store on S3 (a real S3 API served by moto on 127.0.0.1): what one machine records, another
machine with an empty working copy reads back, byte for byte, from the pointer alone."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("moto.server", reason="moto[server] (a dev dependency) is not installed: no local S3 API")

from test_s3_input import BUCKET, s3  # noqa: F401 - the moto fixture

from homegrown.store import ArtifactStore, open_store, read_parquet

ROOT = f"s3://{BUCKET}/artifacts"


def machine(tmp_path, name: str) -> ArtifactStore:
    """The store as seen from one machine: the same S3 root, its own local working copy."""
    return ArtifactStore(ROOT, cache=tmp_path / name)


def test_what_one_machine_records_another_reads(s3, tmp_path):  # noqa: F811
    a = machine(tmp_path, "a")
    folder = a.stage_dir("lora_adapter", "v1")
    (folder / "adapter").mkdir()
    (folder / "adapter" / "adapter_model.safetensors").write_bytes(b"\x00weights" * 1000)
    (folder / "adapter" / "adapter_config.json").write_text('{"r": 16}')
    table = a.write_table("scored_dataset", "v1", "scored", pd.DataFrame({"q": ["a", "b"], "keep": [True, False]}))
    outside = tmp_path / "base-model"  # a path outside the store (a base model cache) stays as it is
    outside.mkdir()
    a.record_latest("lora_adapter", {"adapter_dir": str(folder / "adapter"), "base_path": str(outside),
                                     "nested": {"tables": [str(table)]}, "rows": 2, "name": "homegrown-v1"})

    stored = a.pointer("lora_adapter")
    assert stored["adapter_dir"] == f"{ROOT}/lora_adapter/v1/adapter"
    assert stored["nested"]["tables"] == [f"{ROOT}/scored_dataset/v1/scored.parquet"]
    assert stored["base_path"] == str(outside) and stored["rows"] == 2 and stored["name"] == "homegrown-v1"
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET, Prefix="artifacts/")["Contents"]}
    assert "artifacts/latest/lora_adapter.json" in keys
    assert "artifacts/lora_adapter/v1/adapter/adapter_model.safetensors" in keys

    b = machine(tmp_path, "b")
    assert not (tmp_path / "b" / "lora_adapter").exists()
    info = b.require_latest("lora_adapter")
    adapter = tmp_path / "b" / "lora_adapter" / "v1" / "adapter"
    assert info["adapter_dir"] == str(adapter)
    assert (adapter / "adapter_model.safetensors").read_bytes() == b"\x00weights" * 1000
    assert json.loads((adapter / "adapter_config.json").read_text()) == {"r": 16}
    assert read_parquet(info["nested"]["tables"][0])["q"].tolist() == ["a", "b"]


def test_state_moves_between_machines(s3, tmp_path):  # noqa: F811
    """The ingestion database and the split assignment: each run starts from the state the last one recorded."""
    a, b = machine(tmp_path, "a"), machine(tmp_path, "b")
    state = a.state_dir("raw_interactions") / "interactions.sqlite"
    state.write_bytes(b"first state")
    a.record_latest("raw_interactions", {"db_path": str(state)})

    on_b = b.state_dir("raw_interactions") / "interactions.sqlite"
    assert on_b.read_bytes() == b"first state"
    on_b.write_bytes(b"second state, longer")
    b.record_latest("raw_interactions", {"db_path": str(on_b)})

    assert (a.state_dir("raw_interactions") / "interactions.sqlite").read_bytes() == b"second state, longer"
    assert a.latest("raw_interactions")["db_path"] == str(state)


def test_a_working_copy_changed_behind_the_stores_back_is_downloaded_again(s3, tmp_path):  # noqa: F811
    a, b = machine(tmp_path, "a"), machine(tmp_path, "b")
    path = a.stage_dir("eval_report", "v1") / "report.json"
    path.write_text('{"promoted": true}')
    a.record_latest("eval_report", {"path": str(path)})
    local = b.require_latest("eval_report")["path"]
    Path(local).write_text('{"promoted": false, "planted": 1}')  # a stale or damaged copy
    assert json.loads(Path(b.require_latest("eval_report")["path"]).read_text()) == {"promoted": True}


def test_unchanged_files_are_not_uploaded_again(s3, tmp_path, monkeypatch):  # noqa: F811
    a = machine(tmp_path, "a")
    folder = a.stage_dir("merged_model", "v1")
    (folder / "model.safetensors").write_bytes(b"x" * 100)
    a.record_latest("merged_model", {"path": str(folder)})
    uploads = []
    import homegrown.store as store_module

    real = store_module._s3

    class Counting:
        def __init__(self, client):
            self.client = client

        def upload_file(self, *args, **kwargs):
            uploads.append(args[2])
            return self.client.upload_file(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self.client, name)

    monkeypatch.setattr(store_module, "_s3", lambda: Counting(real()))
    a.record_latest("merged_model", {"path": str(folder)})
    assert uploads == []
    (folder / "model.safetensors").write_bytes(b"y" * 101)
    a.record_latest("merged_model", {"path": str(folder)})
    assert uploads == ["artifacts/merged_model/v1/model.safetensors"]


def test_missing_pointer(s3, tmp_path):  # noqa: F811
    store = machine(tmp_path, "a")
    assert store.latest("quantized_model") is None
    with pytest.raises(FileNotFoundError, match=f"quantized_model.*{ROOT}"):
        store.require_latest("quantized_model")


def test_open_store_follows_homegrown_artifacts(hg_home, s3, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HOMEGROWN_ARTIFACTS", ROOT)
    store = open_store()
    assert store.remote and store.uri == ROOT
    assert store.root == hg_home / "cache" / "artifacts" / BUCKET / "artifacts"
    monkeypatch.delenv("HOMEGROWN_ARTIFACTS")
    local = open_store()
    assert not local.remote and local.root == hg_home / "artifacts"


def test_state_being_written_here_is_not_replaced_by_a_read(s3, tmp_path):  # noqa: F811
    """A stage reading raw_interactions while ingestion on this machine writes the database must not swap the
    file under the writer; the writer's recording uploads it."""
    a = machine(tmp_path, "a")
    state = a.state_dir("raw_interactions") / "interactions.sqlite"
    state.write_bytes(b"recorded")
    a.record_latest("raw_interactions", {"db_path": str(state)})
    state.write_bytes(b"recorded + rows being ingested now")
    assert Path(a.require_latest("raw_interactions")["db_path"]).read_bytes() == b"recorded + rows being ingested now"
    # An artifact that is not state is the store's: a local change is undone.
    report = a.stage_dir("eval_report", "v1") / "report.json"
    report.write_text("{}")
    a.record_latest("eval_report", {"path": str(report)})
    report.write_text('{"planted": true}')
    assert Path(a.require_latest("eval_report")["path"]).read_text() == "{}"


def test_a_pointer_naming_a_missing_object_fails_clearly(s3, tmp_path):  # noqa: F811
    a = machine(tmp_path, "a")
    path = a.stage_dir("merged_model", "v1") / "model.safetensors"
    path.write_bytes(b"w")
    a.record_latest("merged_model", {"path": str(path)})
    s3.delete_object(Bucket=BUCKET, Key="artifacts/merged_model/v1/model.safetensors")
    with pytest.raises(FileNotFoundError, match="not in the artifact store"):
        machine(tmp_path, "b").require_latest("merged_model")


def test_older_versions_are_listed_and_fetched(s3, tmp_path):  # noqa: F811
    a = machine(tmp_path, "a")
    for version in ("d1", "d2"):
        a.write_table("dataset_splits", version, "train", pd.DataFrame({"example_id": [version]}))
        a.record_latest("dataset_splits", {"dir": str(a.stage_dir("dataset_splits", version))})
    a.state_dir("dataset_splits")
    b = machine(tmp_path, "b")
    assert b.versions("dataset_splits") == ["d1", "d2"]
    assert read_parquet(b.fetch("dataset_splits", "d1") / "train.parquet")["example_id"].tolist() == ["d1"]
    assert b.pointer("dataset_splits")["store"] == ROOT

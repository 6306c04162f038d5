"""Ingestion from an S3 prefix, against a real S3 API served by moto on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import urllib.request

import boto3
import pytest

ThreadedMotoServer = pytest.importorskip(
    "moto.server", reason="moto[server] (a dev dependency) is not installed: no local S3 API to test against"
).ThreadedMotoServer

from test_ingest import check_dirty_result, dirty_input, interaction, jsonl

from homegrown.data.ingest import ingest, load_interactions
from homegrown.data.sources import OptOutError, cached_copy, find_knowledge_file, list_files, split_s3

BUCKET = "assistant-logs"


@pytest.fixture
def s3(monkeypatch):
    """A moto S3 server on a free local port, with boto3 pointed at it through AWS_ENDPOINT_URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # moto keeps its buckets in process-wide state that outlives a server: reset it so that every test
    # starts with an empty S3 and leaves none of its objects to the next one.
    reset = urllib.request.Request(f"http://127.0.0.1:{port}/moto-api/reset", method="POST")
    try:
        urllib.request.urlopen(reset, timeout=10).close()
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client
    finally:
        try:
            urllib.request.urlopen(reset, timeout=10).close()
        finally:
            server.stop()


def upload(client, prefix: str, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/{name}", Body=content)


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("s3://bucket/logs/2026", ("bucket", "logs/2026/")),
        ("s3://bucket/logs/", ("bucket", "logs/")),
        ("s3://bucket", ("bucket", "")),
    ],
)
def test_split_s3(location, expected):
    assert split_s3(location) == expected


@pytest.mark.parametrize("location", ["s3://", "/local/folder"])
def test_split_s3_rejects_bad_locations(location):
    with pytest.raises(ValueError):
        split_s3(location)


def test_s3_prefix_dirty_input_accounted_for(hg_home, s3):
    upload(s3, "tenant-a", dirty_input())
    upload(s3, "tenant-ab", {"other.jsonl": jsonl([interaction("not-mine", "2026-01-20")])})  # a sibling prefix
    db_path = hg_home / "state.sqlite"

    assert [f.path.removeprefix(f"s3://{BUCKET}/") for f in list_files(f"s3://{BUCKET}/tenant-a")] == [
        "tenant-a/a.jsonl", "tenant-a/b.csv", "tenant-a/sub/c.parquet", "tenant-a/sub/d.parquet",
    ]
    result = ingest(f"s3://{BUCKET}/tenant-a", db_path)
    check_dirty_result(result, db_path, f"s3://{BUCKET}/tenant-a/")

    again = ingest(f"s3://{BUCKET}/tenant-a", db_path)
    assert again.new_lines == 0 and again.input_lines == 21


def test_s3_replaced_jsonl_reads_only_the_appended_tail(hg_home, s3):
    first = [interaction(f"int-{i}", "2026-01-20T10:00:00Z") for i in range(3)]
    upload(s3, "logs", {"gateway.jsonl": jsonl(first)})
    db_path = hg_home / "state.sqlite"
    assert ingest(f"s3://{BUCKET}/logs", db_path).new_lines == 3

    # S3 objects cannot be appended to; a writer uploads the longer file, and only the new bytes are read.
    upload(s3, "logs", {"gateway.jsonl": jsonl([*first, interaction("int-3", "2026-01-20T10:00:00Z"), "{bad"])})
    result = ingest(f"s3://{BUCKET}/logs", db_path)
    assert (result.new_lines, result.updated_files, result.new_interactions, result.new_quarantined) == (2, 1, 1, 1)
    assert result.balanced
    assert load_interactions(db_path)["source"].iloc[-1] == f"s3://{BUCKET}/logs/gateway.jsonl:4"


def test_s3_malformed_optout_fails_loudly(hg_home, s3):
    upload(s3, "logs", {"log.jsonl": jsonl([interaction("a", "2026-01-20")]), "optout.json": json.dumps(["org-1"]).encode()})
    with pytest.raises(OptOutError, match=f"s3://{BUCKET}/logs/optout.json"):
        ingest(f"s3://{BUCKET}/logs", hg_home / "state.sqlite")


# --- the knowledge file beside an S3 input ---------------------------------------------------------------

BAKERY_KNOWLEDGE = {
    "business": {"name": "Bäckerei Sonne", "org_id": "org-sonne", "system_prompt": "You are Bäckerei Sonne's assistant."},
    "facts": [
        {"id": "opening-hours", "fact": "Open 6:30 to 18:00, Monday to Saturday.",
         "questions": ["When are you open?", "What are your opening hours?"],
         "answer": "We are open from 6:30 to 18:00, Monday to Saturday."},
        {"id": "rye-price", "fact": "A rye loaf costs 4.20 euros.",
         "questions": ["How much is a rye loaf?"], "answer": "A rye loaf is 4.20 euros."},
    ],
}


def test_knowledge_file_beside_an_s3_prefix_is_found_and_copied(hg_home, s3, tmp_path):
    upload(s3, "bakery", {"knowledge.json": json.dumps(BAKERY_KNOWLEDGE).encode(),
                          "a.jsonl": jsonl([interaction("int-1", "2026-01-20")])})
    upload(s3, "no-knowledge", {"a.jsonl": jsonl([interaction("int-2", "2026-01-20")])})
    assert find_knowledge_file(f"s3://{BUCKET}/bakery") == f"s3://{BUCKET}/bakery/knowledge.json"
    assert find_knowledge_file(f"s3://{BUCKET}/bakery/") == f"s3://{BUCKET}/bakery/knowledge.json"
    assert find_knowledge_file(f"s3://{BUCKET}/no-knowledge") is None

    uri = f"s3://{BUCKET}/bakery/knowledge.json"
    copy = cached_copy(uri, tmp_path / "copies")
    assert json.loads(copy.read_text(encoding="utf-8")) == BAKERY_KNOWLEDGE
    modified = s3.head_object(Bucket=BUCKET, Key="bakery/knowledge.json")["LastModified"].timestamp()
    assert copy.stat().st_mtime == pytest.approx(modified)  # synthetic rows' created_at do not move per download
    assert cached_copy(uri, tmp_path / "copies") == copy

    changed = {**BAKERY_KNOWLEDGE, "facts": BAKERY_KNOWLEDGE["facts"][:1]}
    upload(s3, "bakery", {"knowledge.json": json.dumps(changed).encode()})
    new_copy = cached_copy(uri, tmp_path / "copies")
    assert new_copy != copy and json.loads(new_copy.read_text(encoding="utf-8")) == changed
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cached_copy(f"s3://{BUCKET}/bakery/missing.json", tmp_path / "copies")


def test_teacher_resource_reads_knowledge_beside_an_s3_input_and_never_the_demos(hg_home, s3, monkeypatch, tmp_path):
    from resources import TeacherResource

    upload(s3, "bakery", {"knowledge.json": json.dumps(BAKERY_KNOWLEDGE).encode()})
    monkeypatch.setenv("HOMEGROWN_INPUT", f"s3://{BUCKET}/bakery")
    teacher = TeacherResource()
    assert teacher.knowledge_source() == f"s3://{BUCKET}/bakery/knowledge.json"
    path = teacher.knowledge_path(copy_dir=tmp_path / "knowledge")
    assert path.is_relative_to(tmp_path / "knowledge")
    assert json.loads(path.read_text(encoding="utf-8")) == BAKERY_KNOWLEDGE
    assert teacher.knowledge_path().is_relative_to(hg_home / "artifacts" / "knowledge")  # the default copy folder

    monkeypatch.setenv("HOMEGROWN_INPUT", f"s3://{BUCKET}/other-business")
    assert TeacherResource().knowledge_source() is None
    assert TeacherResource().knowledge_path() is None


def test_synthetic_examples_from_knowledge_beside_an_s3_input(hg_home, s3, monkeypatch):
    import dagster as dg

    from homegrown.store import ArtifactStore, read_parquet
    from pipelines.definitions import defs

    upload(s3, "bakery", {"knowledge.json": json.dumps(BAKERY_KNOWLEDGE).encode()})
    monkeypatch.setenv("HOMEGROWN_INPUT", f"s3://{BUCKET}/bakery")
    assets = [a for a in defs.assets if a.key.to_user_string() == "synthetic_examples"]
    result = dg.materialize(assets, resources=defs.resources, raise_on_error=True)

    metadata = result.asset_materializations_for_node("synthetic_examples")[0].metadata
    assert metadata["knowledge_file"].value == f"s3://{BUCKET}/bakery/knowledge.json"
    copy = metadata["knowledge_local_copy"].value
    assert copy.startswith(str(hg_home / "artifacts" / "knowledge"))
    rows = read_parquet(ArtifactStore(hg_home / "artifacts").latest("synthetic_examples")["path"])
    assert set(rows["source_fact"]) == {"opening-hours", "rye-price"}
    assert set(rows["org_id"]) == {"org-sonne"}

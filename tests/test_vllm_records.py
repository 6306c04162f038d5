"""The bookkeeping of merged-weights vLLM servers, with real processes standing in for vLLM (no vLLM needed):
only a recorded process that is still that server is ever signalled, and unused ones are stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from homegrown.gateway import vllm


def _fake_server(model_dir: str) -> subprocess.Popen:
    """A process whose command line reads like the vLLM server's, in its own session as start_vllm makes it."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                                "vllm.entrypoints.openai.api_server", "--model", model_dir], start_new_session=True)
    deadline = time.monotonic() + 30
    while b"vllm.entrypoints" not in Path(f"/proc/{process.pid}/cmdline").read_bytes():  # until it has exec'd
        assert time.monotonic() < deadline, "the stand-in process did not start"
        time.sleep(0.05)
    return process


def _record(port: int, pid: int, model_dir: str) -> None:
    (vllm._merged_records() / f"{port}.json").write_text(json.dumps(
        {"name": f"homegrown-v{port}", "pid": pid, "url": f"http://127.0.0.1:{port}", "model_dir": model_dir}))


def test_unused_servers_are_stopped_and_named_ones_kept(hg_home, tmp_path):
    kept, unused = _fake_server(str(tmp_path / "v1")), _fake_server(str(tmp_path / "v2"))
    try:
        _record(9101, kept.pid, str(tmp_path / "v1"))
        _record(9102, unused.pid, str(tmp_path / "v2"))
        assert {r["url"] for r in vllm.merged_servers()} == {"http://127.0.0.1:9101", "http://127.0.0.1:9102"}
        assert vllm.stop_unused_merged({"http://127.0.0.1:9101/v1"}) == ["homegrown-v9102"]
        assert unused.wait(timeout=30) is not None
        assert kept.poll() is None
        assert [r["url"] for r in vllm.merged_servers()] == ["http://127.0.0.1:9101"]
    finally:
        for process in (kept, unused):
            process.kill()
            process.wait()


def test_a_pid_that_is_no_longer_the_server_is_never_signalled(hg_home, tmp_path):
    """Planted: a record whose pid now belongs to another process (this test's own)."""
    _record(9103, os.getpid(), str(tmp_path / "v3"))
    assert vllm.merged_servers() == []
    assert not (vllm._merged_records() / "9103.json").exists()
    assert vllm.stop_merged("http://127.0.0.1:9103") is False

"""The production topology on loopback, with every piece a real process: a Dagster instance on Postgres, the
artifact store and the input logs on S3 (moto's server), an MLflow tracking server on Postgres with its artifacts
on S3, ``dagster-daemon`` and the code-location server, and homes that share nothing but those services.

1. Machine A (this process) ingests day 1 from S3, trains 2 steps of the embedded SmolLM2, merges, quantizes;
   its version becomes the champion (as the gate's deploy makes it). A's home is then deleted.
2. Day 2 arrives in S3; a curation machine (this process, a new home) curates it from the state A left in S3.
3. The daemon (home O) ticks the real retrain sensor, which queues ``retrain_job``; the run starts in the code
   server's worker (home W). A second GPU run, launched with ``dagster job launch``, waits in the queue.
4. The run trains (40 steps, capped through HOMEGROWN_RETRAIN_RUN_CONFIG), writes every artifact to S3,
   registers the version in MLflow; the gate compares against the champion, whose GGUF the worker pulls from
   MLflow; the promoted model is served by the worker's gateway, answering the real ``openai`` client.
5. Machine B (a fresh home) reads the splits from S3 and pulls ``models:/homegrown-assistant@champion``.

Skipped, with the reason, where Postgres or moto's server is missing. About 15 minutes on 2 cores.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import httpx
import pytest

pytest.importorskip("moto.server", reason="moto[server] (a dev dependency) is not installed: no local S3 API")

from test_gateway import wait_for
from test_production_instance import PG, PRODUCTION_INSTANCE, _instance_from, pg_admin
from test_s3_input import BUCKET, s3  # noqa: F401 - the moto fixture

from homegrown.demo.generate import generate_demo_logs
from homegrown.store import open_store
from homegrown.tracking import REGISTERED_MODEL, tracker_from_env

ROOT = Path(__file__).resolve().parent.parent
DATA = ["raw_interactions", "synthetic_examples", "scored_dataset", "dataset_splits"]
SEED_MODEL = ["lora_adapter", "merged_model", "quantized_model"]
CURATION = ["raw_interactions", "synthetic_examples", "scored_dataset"]
LOCATION = "homegrown"
# The retrain's caps (what an operator puts in HOMEGROWN_RETRAIN_RUN_CONFIG): 40 steps, an eval on part of the
# test split, no preference stage. What 40 steps teach varies from run to run: fact accuracy 0.334 against the
# base's 0.029 in one run (homegrown demo, 2026-12-01), 0.05 against 0.0 in a later one, with hallucination rates
# of 0.20 to 0.43 and page answers that loop. So the margins over the base, the champion tolerance and the JSON
# floor are relaxed, and the gate passes on what it still requires: a gain over the base beyond noise on some
# quality metric (token F1 gained +0.13 [+0.04, +0.24] in the run that learnt least). This test is of the
# topology, not of the recipe (the gate's own tests are in test_gate.py).
RETRAIN_RUN_CONFIG = """
ops:
  lora_adapter:
    config: {max_steps: 40, time_budget_s: 2400}
  preference_adapter:
    config: {enabled: "false"}
  eval_report:
    config: {max_examples: 24, max_tokens: 160, min_examples: 5, min_json_validity: 0.0, evaluate_incumbent: false,
             fact_accuracy_margin: -1.0, hallucination_margin: -1.0, champion_tolerance: 0.25}
  deployed_endpoint:
    config: {rollout: immediate}
"""


@pytest.fixture
def pg_databases():
    """Two throwaway databases (Dagster's and MLflow's: both have a ``runs`` table); skipped without Postgres or
    the right to create databases."""
    import psycopg2

    admin = pg_admin()
    names = [f"homegrown_e2e_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("dagster", "mlflow")]
    try:
        with admin.cursor() as cur:
            for name in names:
                cur.execute(f'CREATE DATABASE "{name}"')
    except psycopg2.Error as exc:
        admin.close()
        pytest.skip(f"cannot create databases on {PG['host']}: {exc}")
    try:
        yield names
    finally:
        with admin.cursor() as cur:
            for name in names:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def _process(command: list[str], env: dict[str, str], log: Path, ready: Callable[[], bool],
             timeout_s: float, what: str) -> Iterator[subprocess.Popen]:
    """A background process in its own session, ready when ``ready()``; stopped with its children at the end."""
    handle = log.open("wb")
    process = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if process.poll() is not None:
                pytest.fail(f"{what} exited ({process.returncode}): {log.read_text(errors='replace')[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{what} not ready within {timeout_s:.0f} s: {log.read_text(errors='replace')[-3000:]}")
            time.sleep(1)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        handle.close()


def _answers(url: str) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
    return ready


@pytest.fixture
def mlflow_server(pg_databases, s3, tmp_path):  # noqa: F811
    """``mlflow server`` on Postgres, proxying artifacts to s3://<bucket>/mlflow on the moto server."""
    port = _free_port()
    env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"]}
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers",
               "1", "--backend-store-uri",
               f"postgresql+psycopg2://{PG['user']}@{PG['host']}:{PG['port']}/{pg_databases[1]}",
               "--artifacts-destination", f"s3://{BUCKET}/mlflow"]
    url = f"http://127.0.0.1:{port}"
    with _process(command, env, tmp_path / "mlflow-server.log", _answers(f"{url}/health"), 180, "mlflow server"):
        yield url


def _environment(home: Path, mlflow_url: str, dagster_db: str) -> dict[str, str]:
    """One machine's environment: its own home, and the production services every machine shares."""
    return {
        "HOMEGROWN_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "HOMEGROWN_ENV": "production",
        "HOMEGROWN_ARTIFACTS": f"s3://{BUCKET}/artifacts", "HOMEGROWN_INPUT": f"s3://{BUCKET}/input",
        "MLFLOW_TRACKING_URI": mlflow_url, "HOMEGROWN_TRAINING_BACKEND": "in_process",
        "HOMEGROWN_TEACHER_API_KEY": "", "HOMEGROWN_BUCKET": BUCKET, "DAGSTER_PG_HOST": PG["host"],
        "DAGSTER_PG_PORT": str(PG["port"]), "DAGSTER_PG_DB": dagster_db, "DAGSTER_PG_USER": PG["user"],
        "DAGSTER_PG_PASSWORD": "", "HOMEGROWN_PORT": str(_free_port()), "HF_HUB_OFFLINE": "1",
    }


def _become(monkeypatch, env: dict[str, str]) -> dg.DagsterInstance:
    """Make this process that machine; returns its handle on the shared Postgres instance."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return _instance_from(PRODUCTION_INSTANCE, Path(env["DAGSTER_HOME"]))


def _definitions() -> dg.Definitions:
    """The code location's assets with the resources a fresh process would build from this environment.

    Built beside the imported module rather than by reloading it: a reload would leave the production
    resources in ``pipelines.definitions`` for every test that runs after this one.
    """
    from pipelines.definitions import defs
    from pipelines.environment import resources_for_environment

    return dg.Definitions(assets=list(defs.assets), resources=resources_for_environment())


def _materialize(instance, names: list[str], run_config: dict | None = None) -> dg.ExecuteInProcessResult:
    defs = _definitions()
    selected = [a for a in defs.assets if a.key.to_user_string() in names]
    return dg.materialize(selected, resources=defs.resources, instance=instance, run_config=run_config or {})


def _upload_day(s3_client, logs: Path, batch: int) -> None:
    generate_demo_logs(logs, seed=0, batch=batch)
    for file in sorted(logs.rglob("*")):
        if file.is_file():
            s3_client.upload_file(str(file), BUCKET, f"input/{file.relative_to(logs).as_posix()}")


def _wait_for(what: str, timeout_s: float, poll: Callable):
    return wait_for(poll, timeout_s=timeout_s, what=what, poll_s=2)


def _digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _run_errors(instance: dg.DagsterInstance, run_id: str) -> str:
    events = [e for e in instance.all_logs(run_id) if e.dagster_event and e.dagster_event.is_failure]
    return "\n".join(str(e.dagster_event.event_specific_data)[:1500] for e in events[:3])


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_daemon_sensor_queue_worker_and_gateway_share_only_postgres_s3_and_mlflow(
        pg_databases, s3, mlflow_server, tmp_path, monkeypatch):  # noqa: F811
    dagster_db = pg_databases[0]
    logs = tmp_path / "logs"
    _upload_day(s3, logs, batch=0)

    # --- 1. machine A: the first model, made champion ---------------------------------------------------------
    home_a = tmp_path / "machine-a"
    instance = _become(monkeypatch, _environment(home_a, mlflow_server, dagster_db))
    seed = _materialize(instance, DATA + SEED_MODEL, {"ops": {"lora_adapter": {"config": {
        "max_steps": 2, "max_seq_length": 256, "per_device_batch_size": 2, "gradient_accumulation": 1}}}})
    assert seed.success
    assert not (home_a / "artifacts").exists(), "with HOMEGROWN_ARTIFACTS on S3 the store is not a local folder"
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="artifacts/lora_adapter/")["KeyCount"] > 0
    store = open_store()
    assert store.pointer("quantized_model") is not None, "the 2-step seed's GGUF did not pass its checks"
    assert store.pointer("lora_adapter")["adapter_dir"].startswith(f"s3://{BUCKET}/artifacts/lora_adapter/")
    champion = str(store.pointer("lora_adapter")["model_version"])
    tracker_from_env().set_alias("champion", champion)  # what the gate's deploy does (tested in test_deploy)
    instance.dispose()
    shutil.rmtree(home_a)  # machine A is gone: only Postgres, S3 and the MLflow server remain

    # --- 2. day 2 arrives; a curation machine curates it from the state A left in S3 ------------------------------
    _upload_day(s3, logs, batch=1)
    home_c = tmp_path / "machine-curation"
    instance = _become(monkeypatch, _environment(home_c, mlflow_server, dagster_db))
    assert _materialize(instance, CURATION).success
    raw = open_store().pointer("raw_interactions")
    assert raw["locations"] == [f"s3://{BUCKET}/input"] and raw["input_lines"] > seed_lines(seed)
    shutil.rmtree(home_c)

    # --- 3. the daemon ticks the retrain sensor; the run starts in the code server's worker ---------------------
    home_o, home_w = tmp_path / "orchestrator", tmp_path / "worker"
    env_o = {**os.environ, **_environment(home_o, mlflow_server, dagster_db)}
    env_w = {**os.environ, **_environment(home_w, mlflow_server, dagster_db),
             "HOMEGROWN_RETRAIN_MIN_NEW": "50", "HOMEGROWN_RETRAIN_COOLDOWN_S": "0",
             "HOMEGROWN_RETRAIN_RUN_CONFIG": str(tmp_path / "retrain.yaml"), "HOMEGROWN_N_THREADS": "2"}
    env_w["DAGSTER_HOME"] = env_o["DAGSTER_HOME"]
    (tmp_path / "retrain.yaml").write_text(RETRAIN_RUN_CONFIG)
    instance = _become(monkeypatch, {k: env_o[k] for k in _environment(home_o, mlflow_server, dagster_db)})
    port = _free_port()
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {port}\n"
                         f"      location_name: {LOCATION}\n")
    code_server = [sys.executable, "-m", "dagster", "code-server", "start", "-m", "pipelines.definitions",
                   "-h", "127.0.0.1", "-p", str(port), "--location-name", LOCATION]
    daemon = [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)]

    def code_server_up() -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    def retrain_runs() -> list[dg.DagsterRun]:
        return list(instance.get_runs(dg.RunsFilter(job_name="retrain_job")))

    with _process(code_server, env_w, tmp_path / "code-server.log", code_server_up, 240, "code server"), \
            _process(daemon, env_o, tmp_path / "daemon.log", lambda: True, 0, "dagster-daemon"):
        first = _wait_for("a retrain run queued by the sensor", 300, lambda: retrain_runs()[-1:])[0]
        assert first.tags.get("dagster/sensor_name") == "retrain_on_new_examples", first.tags
        _wait_for("the retrain run to start", 300,
                  lambda: instance.get_run_by_id(first.run_id).status == dg.DagsterRunStatus.STARTED)

        # A second GPU run waits in the queue while the first holds the gpu pool.
        launched = subprocess.run([sys.executable, "-m", "dagster", "job", "launch", "-w", str(workspace), "-l",
                                   LOCATION, "-j", "retrain_job"], env=env_o, cwd=ROOT, capture_output=True,
                                  text=True, timeout=300, check=False)
        assert launched.returncode == 0, launched.stderr[-2000:]
        second = _wait_for("the second run", 60, lambda: [r for r in retrain_runs() if r.run_id != first.run_id])[0]
        for _ in range(10):
            time.sleep(2)
            assert instance.get_run_by_id(second.run_id).status == dg.DagsterRunStatus.QUEUED
        assert instance.get_run_by_id(first.run_id).status == dg.DagsterRunStatus.STARTED
        instance.report_run_canceled(instance.get_run_by_id(second.run_id), message="the test saw it wait")

        # --- 4. the run: train, S3, MLflow, the gate against the champion pulled from MLflow, the worker's gateway
        def finished() -> dg.DagsterRun | None:
            run = instance.get_run_by_id(first.run_id)
            return run if run.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE) else None

        done = _wait_for("the retrain run to finish", 2400, finished)
        assert done.status == dg.DagsterRunStatus.SUCCESS, _run_errors(instance, first.run_id)

    try:
        version = _check_the_retrain(home_w, champion, monkeypatch)
    finally:  # the worker's gateway (started by deployed_endpoint) goes, whatever the checks found
        from homegrown.gateway.server import stop_background

        monkeypatch.setenv("HOMEGROWN_HOME", str(home_w))
        stop_background()

    # --- 5. machine B: a fresh home reads the splits and pulls the new champion ---------------------------------
    home_b = tmp_path / "machine-b"
    instance = _become(monkeypatch, _environment(home_b, mlflow_server, dagster_db))
    splits = open_store().require_latest("dataset_splits")
    train = Path(splits["paths"]["train"]["jsonl"])
    stored = open_store().pointer("dataset_splits")["paths"]["train"]["jsonl"].removeprefix(f"s3://{BUCKET}/")
    assert train.is_relative_to(home_b)  # B's copy of what the pointer names on S3, byte for byte
    assert _digest(train) == hashlib.sha256(s3.get_object(Bucket=BUCKET, Key=stored)["Body"].read()).hexdigest()
    gguf, pulled = tracker_from_env().pull_gguf(f"models:/{REGISTERED_MODEL}@champion")
    assert gguf.is_relative_to(home_b) and str(pulled["version"]) == version
    instance.dispose()


def _check_the_retrain(home_w: Path, champion: str, monkeypatch) -> str:
    """What the daemon's run left: artifacts by URI, the version registered, the champion compared, the promoted
    model served by the worker's gateway; returns the new version."""
    store = open_store()
    adapter = store.pointer("lora_adapter")
    version = str(adapter["model_version"])
    assert version != champion and adapter["metrics"]["steps"] == 40
    for stage in ("raw_interactions", "dataset_splits", "lora_adapter", "merged_model", "quantized_model",
                  "eval_report"):
        # Every artifact by URI; nothing of the worker's working copy (its base model cache may be named,
        # beside the base_spec another machine prepares it from).
        text = str(store.pointer(stage))
        assert f"s3://{BUCKET}/artifacts/" in text and str(home_w / "cache") not in text, (stage, text[:500])
    report = store.pointer("eval_report")
    assert f"champion-v{champion}" in report["metrics"], sorted(report["metrics"])  # the champion was compared
    assert any((home_w / "models" / "registry" / f"v{champion}").rglob("*.gguf")), "pulled from MLflow"
    assert report["promoted"], report["gate"].get("failures")
    tracker = tracker_from_env()
    assert tracker.alias_version("champion")["version"] == version
    assert tracker.model_version(version)["source"].startswith("mlflow-artifacts:/")

    deployed = store.pointer("deployed_endpoint")
    assert deployed["model"] == f"homegrown-v{version}"
    monkeypatch.setenv("HOMEGROWN_HOME", str(home_w))
    from openai import OpenAI

    from homegrown.gateway.settings import GatewaySettings

    client = OpenAI(base_url=f"{deployed['url']}/v1", api_key=GatewaySettings().client_api_key())
    answer = client.chat.completions.create(model=deployed["model"], max_tokens=24,
                                            messages=[{"role": "user", "content": "Do you cater weddings?"}])
    assert answer.model == deployed["model"] and answer.choices[0].message.content
    return version


def seed_lines(result: dg.ExecuteInProcessResult) -> int:
    """Input lines the seed run ingested (day 1), from its raw_interactions materialisation."""
    event = next(e for e in result.get_asset_materialization_events()
                 if e.asset_key == dg.AssetKey("raw_interactions"))
    return int(event.materialization.metadata["input_lines"].value)

"""A first run as a data engineer does it: the README's Dagster CLI command from the project root, on a fresh
HOMEGROWN_HOME, and several processes creating the MLflow store at once (the multiprocess executor's steps)."""

from __future__ import annotations

import multiprocessing
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from homegrown import paths

ROOT = paths.PROJECT_ROOT
DAGSTER = Path(sys.executable).parent / "dagster"


# --- MLflow: one schema, one experiment, one registered model, however many processes start at once ----


def _start_stage_runs(stores: list[tuple[str, str]], barrier) -> None:
    import mlflow  # noqa: F401 - imported before the barrier so that every process starts the run at once

    from homegrown.tracking import Tracker

    for tracking_uri, artifact_root in stores:  # one round per fresh store: all processes start together
        tracker = Tracker(tracking_uri=tracking_uri, artifact_root=artifact_root)
        barrier.wait(timeout=180)
        with tracker.stage_run("first_run_race") as run:
            run.log_metrics({"ok": 1.0})
            tracker.register_model(f"{artifact_root}/model", run.run_id, {"test": "race"})


def test_processes_starting_at_once_on_a_fresh_sqlite_store_all_succeed(tmp_path):
    """Five step processes open the same fresh SQLite store at once (schema, experiment, registered
    model), in three rounds on three fresh stores; every process and round must succeed."""
    from mlflow.tracking import MlflowClient

    from homegrown.tracking import EXPERIMENT, REGISTERED_MODEL

    processes, rounds = 5, 3
    stores = [(f"sqlite:///{tmp_path / f'round{i}' / 'mlflow.db'}", (tmp_path / f"round{i}" / "artifacts").as_uri())
              for i in range(rounds)]
    context = multiprocessing.get_context("spawn")  # fresh interpreters, like the executor's step processes
    barrier = context.Barrier(processes)
    workers = [context.Process(target=_start_stage_runs, args=(stores, barrier)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=600)
        if worker.is_alive():
            worker.kill()
    assert [worker.exitcode for worker in workers] == [0] * processes

    for uri, _ in stores:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        experiments = [e for e in client.search_experiments() if e.name == EXPERIMENT]
        assert len(experiments) == 1
        runs = client.search_runs([experiments[0].experiment_id])
        assert len(runs) == processes and all(r.data.metrics["ok"] == 1.0 for r in runs)
        versions = client.search_model_versions(f"name='{REGISTERED_MODEL}'")
        assert sorted(int(v.version) for v in versions) == list(range(1, processes + 1))


def test_an_experiment_created_by_another_process_in_between_is_reused(tmp_path):
    """The get-then-create of the experiment loses the race to another process: the loser reuses it."""
    from mlflow.tracking import MlflowClient

    from homegrown.tracking import EXPERIMENT, Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(tracking_uri=uri, artifact_root=(tmp_path / "artifacts").as_uri())
    other = MlflowClient(tracking_uri=uri)
    created = other.create_experiment(EXPERIMENT)

    class LateClient(MlflowClient):
        looked = False

        def get_experiment_by_name(self, name):
            if not self.looked:  # the first look came just before the other process created it
                self.looked = True
                return None
            return super().get_experiment_by_name(name)

    assert tracker._experiment_id(LateClient(tracking_uri=uri)) == created


def test_a_model_registered_by_another_process_in_between_is_reused(tmp_path, monkeypatch):
    """register_model saw no registered model, then another process created it: the version still lands."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
    from mlflow.tracking import MlflowClient

    from homegrown.tracking import REGISTERED_MODEL, Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(tracking_uri=uri, artifact_root=(tmp_path / "artifacts").as_uri())
    with tracker.stage_run("train") as run:
        run_id = run.run_id
    MlflowClient(tracking_uri=uri, registry_uri=uri).create_registered_model(REGISTERED_MODEL)

    class LateClient(MlflowClient):
        def get_registered_model(self, name):
            raise MlflowException(f"Registered Model with name={name} not found", RESOURCE_DOES_NOT_EXIST)

    monkeypatch.setattr(tracker, "_new_client", lambda: LateClient(tracking_uri=uri, registry_uri=uri))
    assert tracker.register_model(f"{tmp_path}/model", run_id, {"test": "late"})["version"] in (1, "1")


# --- the Dagster CLI, exactly as the README shows it ---------------------------------------------------


def readme_cli_command() -> list[str]:
    """The `dagster asset materialize` line of the README's "UIs and the CLI" section, as argv."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## The UIs and the CLI", 1)[1]
    line = next(line for line in section.splitlines() if "dagster asset materialize" in line)
    return shlex.split(line.split("#", 1)[0])


def _fresh_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HOMEGROWN_", "DAGSTER_", "MLFLOW_"))}
    env.update(HOMEGROWN_HOME=str(tmp_path / "home"), DAGSTER_HOME=str(tmp_path / "dagster"),
               HF_HUB_OFFLINE="1", PATH=f"{DAGSTER.parent}{os.pathsep}{env.get('PATH', '')}")
    (tmp_path / "dagster").mkdir()
    return env


def _run_cli(argv: list[str], tmp_path: Path, timeout: int) -> subprocess.CompletedProcess:
    if argv[0].endswith("dagster"):
        argv = [str(DAGSTER), *argv[1:]]
    return subprocess.run(argv, cwd=ROOT, env=_fresh_env(tmp_path), capture_output=True, text=True,
                          timeout=timeout, check=False)


def _with_select(argv: list[str], selection: str) -> list[str]:
    index = argv.index("--select")
    return [*argv[: index + 1], selection, *argv[index + 2:]]


def test_readme_command_is_a_dagster_asset_materialize_of_the_splits():
    argv = readme_cli_command()
    assert argv[0].endswith("dagster") and argv[1:3] == ["asset", "materialize"]
    assert argv[argv.index("--select") + 1] == "*dataset_splits"


def test_readme_cli_command_materialises_from_the_project_root(tmp_path):
    """The README's command, on a cheap selection, in a fresh HOMEGROWN_HOME and DAGSTER_HOME."""
    result = _run_cli(_with_select(readme_cli_command(), "raw_interactions"), tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert re.search(r"RUN_SUCCESS", result.stderr + result.stdout)
    assert (tmp_path / "home" / "artifacts" / "latest" / "raw_interactions.json").is_file()


def test_without_a_code_location_the_cli_fails_as_the_issue_saw(tmp_path):
    """What the README's command did before: no -m, no DAGSTER_MODULE_NAME: Dagster refuses it."""
    argv = [a for a in readme_cli_command() if a not in {"-m", "pipelines.definitions"}]
    result = _run_cli(_with_select(argv, "raw_interactions"), tmp_path, timeout=300)
    assert result.returncode != 0
    assert "Invalid set of CLI arguments" in result.stderr


@pytest.mark.slow
def test_readme_cli_command_exactly_as_written_on_a_fresh_home(tmp_path):
    """The README's exact selection: several assets in step processes at once, the first time."""
    result = _run_cli(readme_cli_command(), tmp_path, timeout=1200)
    assert result.returncode == 0, result.stderr[-6000:]
    assert "latest_metrics already exists" not in result.stderr
    assert (tmp_path / "home" / "artifacts" / "latest" / "dataset_splits.json").is_file()

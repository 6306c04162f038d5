"""The one place that talks to MLflow: runs, dataset inputs, artifacts and the model registry.

Local default: a SQLite tracking + registry store and an artifact folder under ``HOMEGROWN_HOME/mlflow``;
in production a tracking server URL (``MLFLOW_TRACKING_URI``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from homegrown import paths

EXPERIMENT = "homegrown"
REGISTERED_MODEL = "homegrown-assistant"
# A model version's source is this artifact folder of the run that trained it: ``adapter/`` (logged by the
# training run), ``merged/`` (merged_model), ``gguf/`` (quantized_model) and MANIFEST, which names the GGUF
# file to serve. ``models:/homegrown-assistant@champion`` therefore downloads everything needed to serve the
# champion, on any machine that can reach the tracking server.
MODEL_DIR = "model"
MANIFEST = "homegrown-model.json"
# How long a process waits for another one that is creating the SQLite store's schema.
STORE_LOCK_TIMEOUT_S = 300

# SQLite stores this process has already seen created (schema, experiment), by tracking URI.
_ready_stores: set[str] = set()

logging.getLogger("alembic").setLevel(logging.WARNING)


def default_tracking_uri() -> str:
    db = paths.subdir("mlflow") / "mlflow.db"
    return f"sqlite:///{db}"


def default_artifact_root() -> str:
    return paths.subdir("mlflow", "artifacts").as_uri()


@dataclass
class Tracker:
    """Logs stage runs to MLflow. ``ui_url`` is where people open the MLflow UI (for links in Dagster)."""

    tracking_uri: str = field(default_factory=default_tracking_uri)
    artifact_root: str = field(default_factory=default_artifact_root)
    experiment: str = EXPERIMENT
    ui_url: str = "http://127.0.0.1:5000"

    def _client(self):
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        if self.tracking_uri.startswith("sqlite:") and self.tracking_uri not in _ready_stores:
            return self._create_sqlite_store()
        return self._new_client()

    def _new_client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def _create_sqlite_store(self):
        """A client of the SQLite store, whose tables and experiment are created one process at a time.

        MLflow creates a fresh database's schema (and its default experiment) when a process first opens
        it, without a lock: the step processes of a first run would each create the same tables and fail
        with ``table ... already exists``. Under a file lock beside the database, the first process
        creates everything; the others then find it all there.
        """
        from filelock import FileLock, Timeout

        database = _sqlite_path(self.tracking_uri)
        if database is None:  # an in-memory database is private to this process
            return self._new_client()
        lock_path = f"{database}.lock"
        Path(lock_path).parent.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(lock_path, timeout=STORE_LOCK_TIMEOUT_S):
                client = self._new_client()  # opens the tracking store: creates its tables
                client.search_registered_models(max_results=1)  # the registry store's, too
                self._experiment_id(client)
        except Timeout:
            raise RuntimeError(
                f"waited {STORE_LOCK_TIMEOUT_S}s for another process creating the MLflow store {database} "
                f"(lock {lock_path}); if no homegrown process is running, delete the lock file"
            ) from None
        _ready_stores.add(self.tracking_uri)
        return client

    def experiment_id(self) -> str:
        return self._experiment_id(self._client())

    def _experiment_id(self, client) -> str:
        from mlflow.exceptions import MlflowException

        exp = client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        artifact_location = self.artifact_root if self.tracking_uri.startswith("sqlite:") else None
        try:
            return client.create_experiment(self.experiment, artifact_location=artifact_location)
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            # Another process (a tracking server's other client) created it since we looked.
            return client.get_experiment_by_name(self.experiment).experiment_id

    @contextlib.contextmanager
    def stage_run(self, stage: str, tags: dict[str, str] | None = None) -> Iterator[StageRun]:
        """An MLflow run for one stage materialisation, tagged with the stage (and the caller's tags)."""
        import mlflow

        self._client()
        exp_id = self.experiment_id()
        all_tags = {"homegrown.stage": stage, **(tags or {})}
        with mlflow.start_run(experiment_id=exp_id, run_name=stage, tags=all_tags) as run:
            yield StageRun(run.info.run_id, exp_id, self)

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def register_model(self, source: str, run_id: str, tags: dict[str, str]) -> dict[str, Any]:
        """Register a model version (``source`` is an artifact URI or path) with lineage tags."""
        from mlflow.exceptions import MlflowException

        client = self._client()
        try:
            client.get_registered_model(REGISTERED_MODEL)
        except MlflowException as missing:
            if missing.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            try:
                client.create_registered_model(REGISTERED_MODEL,
                                               description="The business's own fine-tuned assistant.")
            except MlflowException as error:
                if error.error_code != "RESOURCE_ALREADY_EXISTS":  # another process registered it just now
                    raise
        mv = client.create_model_version(REGISTERED_MODEL, source=source, run_id=run_id, tags=tags)
        return {"name": REGISTERED_MODEL, "version": mv.version, "uri": f"models:/{REGISTERED_MODEL}/{mv.version}"}

    def tag_model_version(self, version: str, tags: dict[str, str]) -> None:
        client = self._client()
        for key, value in tags.items():
            client.set_model_version_tag(REGISTERED_MODEL, str(version), key, _short(value))

    def set_alias(self, alias: str, version: str) -> None:
        self._client().set_registered_model_alias(REGISTERED_MODEL, alias, version)

    def delete_alias(self, alias: str) -> None:
        self._client().delete_registered_model_alias(REGISTERED_MODEL, alias)

    def alias_version(self, alias: str) -> dict[str, Any] | None:
        client = self._client()
        try:
            mv = client.get_model_version_by_alias(REGISTERED_MODEL, alias)
        except Exception:  # noqa: BLE001 - missing model or alias
            return None
        return {"version": mv.version, "tags": dict(mv.tags), "run_id": mv.run_id, "source": mv.source}

    def model_version(self, version: str) -> dict[str, Any]:
        mv = self._client().get_model_version(REGISTERED_MODEL, str(version))
        return {"version": mv.version, "tags": dict(mv.tags), "run_id": mv.run_id, "source": mv.source,
                "aliases": list(mv.aliases)}

    def log_model_files(self, run_id: str, local: Path | str, part: str) -> None:
        """Add ``local`` (a file or folder) to the model artifacts of the version trained by ``run_id``, under
        ``model/<part>``; the run may have ended (merged weights and GGUF files come from later stages)."""
        client = self._client()
        local = Path(local)
        artifact_path = f"{MODEL_DIR}/{part}".rstrip("/")
        if local.is_dir():
            client.log_artifacts(run_id, str(local), artifact_path)
        else:
            client.log_artifact(run_id, str(local), artifact_path)

    def download_model(self, uri: str, dest: Path | str, part: str = "") -> Path:
        """Download a registered version's model artifacts (or only ``part`` of them: ``gguf``, ``merged``,
        ``adapter``) into ``dest``; ``uri`` is ``models:/<name>@<alias>`` or ``models:/<name>/<version>``.
        Returns the local folder of what was asked for."""
        import mlflow.artifacts

        self._client()
        if not part:
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest),
                                                            tracking_uri=self.tracking_uri))
        source = self.resolve_model_uri(uri)["source"]
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{source.rstrip('/')}/{part}",
                                                        dst_path=str(dest), tracking_uri=self.tracking_uri))

    def pull_gguf(self, uri: str, dest: Path | str | None = None) -> tuple[Path, dict[str, Any]]:
        """The GGUF file a registered version serves, downloaded (only it and the manifest, not the merged
        weights) into ``dest`` (default ``<HOMEGROWN_HOME>/models/registry/v<version>``); returns its local
        path and the version. Raises FileNotFoundError for a version whose quantized model was never logged."""
        import json

        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        version = self.resolve_model_uri(uri)
        folder = Path(dest) if dest else paths.subdir("models", "registry", f"v{version['version']}")
        source = version["source"].rstrip("/")
        try:
            manifest = json.loads(Path(mlflow.artifacts.download_artifacts(
                artifact_uri=f"{source}/{MANIFEST}", dst_path=str(folder), tracking_uri=self.tracking_uri)).read_text())
        except (MlflowException, OSError) as error:
            raise FileNotFoundError(f"{uri} (version {version['version']}) has no {MANIFEST} in its model "
                                    f"artifacts {source}: its quantized_model was never logged ({error})") from error
        local = folder / Path(manifest["serve"]).name  # download_artifacts keeps only the file's name
        listed = {Path(item.path).name: item.file_size for item in mlflow.artifacts.list_artifacts(
            artifact_uri=f"{source}/{Path(manifest['serve']).parent.as_posix()}", tracking_uri=self.tracking_uri)}
        if not (local.is_file() and listed.get(local.name) == local.stat().st_size):  # pulled before: reused
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{source}/{manifest['serve']}",
                                                             dst_path=str(folder), tracking_uri=self.tracking_uri))
        return local, {**version, "manifest": manifest}

    def local_gguf(self, version: dict[str, Any]) -> str | None:
        """A version's served GGUF on this machine: the path its tags record where it exists here, else the
        file pulled from its model artifacts; None when it has neither (never quantized, or logged before
        model artifacts were)."""
        recorded = version["tags"].get("gguf_deploy") or version["tags"].get("gguf_q4_k_m")
        if recorded and Path(recorded).is_file():
            return recorded
        try:
            return str(self.pull_gguf(f"models:/{REGISTERED_MODEL}/{version['version']}")[0])
        except FileNotFoundError:
            return None

    def resolve_model_uri(self, uri: str) -> dict[str, Any]:
        """``models:/<name>@<alias>`` or ``models:/<name>/<version>`` -> the model version (as ``model_version``)."""
        if not uri.startswith("models:/"):
            raise ValueError(f"not a registered model URI: {uri!r} (models:/<name>@<alias> or models:/<name>/<n>)")
        rest = uri[len("models:/"):].strip("/")
        client = self._client()
        if "@" in rest:
            name, alias = rest.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        else:
            name, _, version = rest.partition("/")
            if not version:
                raise ValueError(f"{uri!r} names no version or alias")
            mv = client.get_model_version(name, version)
        return {"name": name, "version": mv.version, "tags": dict(mv.tags), "run_id": mv.run_id,
                "source": mv.source, "aliases": list(mv.aliases)}

    def model_versions(self) -> list[dict[str, Any]]:
        client = self._client()
        try:
            found = client.search_model_versions(f"name='{REGISTERED_MODEL}'")
        except Exception:  # noqa: BLE001
            return []
        return [{"version": mv.version, "tags": dict(mv.tags), "run_id": mv.run_id, "aliases": list(mv.aliases)}
                for mv in found]


@dataclass
class StageRun:
    run_id: str
    experiment_id: str
    tracker: Tracker

    @property
    def url(self) -> str:
        return self.tracker.run_url(self.experiment_id, self.run_id)

    def log_params(self, params: dict[str, Any]) -> None:
        import mlflow

        mlflow.log_params({k: _short(v) for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import mlflow

        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        if clean:
            mlflow.log_metrics(clean, step=step)

    def set_tags(self, tags: dict[str, Any]) -> None:
        import mlflow

        mlflow.set_tags({k: _short(v) for k, v in tags.items()})

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        import mlflow

        path = Path(path)
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=artifact_path)
        else:
            mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_dataset(self, df, *, name: str, digest: str, source: str, context: str) -> None:
        """Record a dataset (a DataFrame sample's schema, its version digest and where it lives) as run input."""
        import mlflow
        import mlflow.data

        dataset = mlflow.data.from_pandas(df, source=source, name=name, digest=digest)
        mlflow.log_input(dataset, context=context)

    def artifact_uri(self, artifact_path: str = "") -> str:
        import mlflow

        return mlflow.get_artifact_uri(artifact_path)


def _sqlite_path(uri: str) -> str | None:
    """The database file of a ``sqlite:`` URI; None for an in-memory database."""
    from sqlalchemy.engine import make_url

    database = make_url(uri).database
    return None if not database or database == ":memory:" else database


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 500 else text[:497] + "..."


def tracker_from_env() -> Tracker:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    ui = os.environ.get("HOMEGROWN_MLFLOW_UI_URL", "http://127.0.0.1:5000")
    if uri:
        return Tracker(tracking_uri=uri, artifact_root="", ui_url=ui)
    return Tracker(ui_url=ui)

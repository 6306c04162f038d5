"""Dagster resources: the external systems homegrown talks to, and the one switch between environments.

Assets receive these; the stage logic in ``homegrown/`` never sees Dagster.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from homegrown import paths
from homegrown.data.sources import cached_copy, find_knowledge_file, is_s3
from homegrown.store import ArtifactStore, open_store
from homegrown.tracking import Tracker, default_artifact_root, default_tracking_uri

DEMO_KNOWLEDGE = Path(__file__).resolve().parent.parent / "homegrown" / "demo" / "knowledge.json"


class StorageResource(dg.ConfigurableResource):
    """Where large artifacts (tables, datasets, adapters, models) are written, by reference."""

    root: str = Field(default="", description="Artifact folder or s3://bucket/prefix; empty means "
                      "HOMEGROWN_ARTIFACTS, else <HOMEGROWN_HOME>/artifacts.")

    def store(self, context: dg.AssetExecutionContext | None = None) -> ArtifactStore:
        """The store; with an asset's ``context``, as that run sees it (:class:`RunArtifacts`)."""
        found = open_store(self.root or None)
        return RunArtifacts(found, context) if context is not None else found  # type: ignore[return-value]


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking and model registry: a local SQLite store by default, a server URL in production."""

    tracking_uri: str = Field(default="", description="Empty means sqlite under <HOMEGROWN_HOME>/mlflow.")
    ui_url: str = Field(default="http://127.0.0.1:5000", description="Where people open the MLflow UI.")

    def tracker(self) -> Tracker:
        if self.tracking_uri:
            return Tracker(tracking_uri=self.tracking_uri, artifact_root="", ui_url=self.ui_url)
        return Tracker(tracking_uri=default_tracking_uri(), artifact_root=default_artifact_root(), ui_url=self.ui_url)


class InputResource(dg.ConfigurableResource):
    """The input location of the assistant's logs: a folder or an s3:// prefix (HOMEGROWN_INPUT).

    With nothing configured, the embedded demo logs of a hibachi caterer are generated and used.
    The gateway's own interaction log is always read too, so served traffic becomes training data.
    """

    location: str = Field(default="", description="Folder or s3://bucket/prefix; empty means the demo data.")
    include_gateway_log: bool = Field(default=True, description="Also read the gateway's exported log.")

    def locations(self) -> list[str]:
        found = [self.location or paths.input_location()]
        if found[0] == str(paths.demo_input_dir()) and not paths.demo_input_dir().exists():
            from homegrown.demo.generate import generate_demo_logs

            generate_demo_logs(paths.demo_input_dir(), seed=0)
        if self.include_gateway_log:
            gateway_export = export_gateway_log()
            if gateway_export is not None:
                found.append(str(gateway_export))
        return found


def export_gateway_log() -> Path | None:
    """Append what the gateway logged since the last export (interactions, then feedback events) to
    ``<HOMEGROWN_HOME>/gateway/export/`` in the interaction format, and return that folder; None when there is
    no gateway log yet. Incremental and crash-safe (``LogStore.export_jsonl``), so every ingestion of
    ``raw_interactions`` reads the traffic served since the previous one."""
    from homegrown.gateway.logstore import export_jsonl
    from homegrown.gateway.settings import GatewaySettings

    out = paths.home() / "gateway" / "export"
    db_url = GatewaySettings().log_db_url
    if db_url.startswith("sqlite:///") and not Path(db_url.removeprefix("sqlite:///")).is_file():
        return out if out.is_dir() and any(out.iterdir()) else None
    export_jsonl(out, db_url)
    return out


class TeacherResource(dg.ConfigurableResource):
    """Who writes synthetic examples: offline template expansion, or any OpenAI-compatible API."""

    kind: str = Field(default="template", description="'template' (offline) or 'openai' (an API).")
    base_url: str = Field(default="", description="OpenAI-compatible base URL, for kind='openai'.")
    model: str = Field(default="gpt-4o-mini", description="Teacher model name, for kind='openai'.")
    api_key: str = Field(default="", description="API key; pass dg.EnvVar('HOMEGROWN_TEACHER_API_KEY').")
    knowledge_file: str = Field(
        default="", description="The business's knowledge file (a path or s3:// URI); empty means knowledge.json "
        "beside HOMEGROWN_INPUT, or the demo's when HOMEGROWN_INPUT is not set.")

    def knowledge_source(self) -> str | None:
        """Where the business's knowledge file is (a local path or an ``s3://`` URI); None when there is none.

        Only the embedded demo (no ``HOMEGROWN_INPUT``) uses the demo's file: a business's own input without a
        ``knowledge.json`` has no knowledge file, rather than the hibachi caterer's facts.
        """
        if self.knowledge_file:
            return self.knowledge_file
        configured = os.environ.get("HOMEGROWN_INPUT")
        if configured:
            return find_knowledge_file(configured)
        return str(DEMO_KNOWLEDGE)

    def knowledge_path(self, copy_dir: Path | None = None) -> Path | None:
        """A local path of the knowledge file (an S3 one is copied into ``copy_dir``, by default
        ``<HOMEGROWN_HOME>/artifacts/knowledge``); None when there is none."""
        source = self.knowledge_source()
        if source is None:
            return None
        if is_s3(source):
            return cached_copy(source, copy_dir or paths.subdir("artifacts", "knowledge"))
        return Path(source)

    def settings(self):
        if self.kind == "template":
            return None
        if self.kind != "openai":
            raise ValueError(f"teacher kind must be 'template' or 'openai', got {self.kind!r}")
        if not self.base_url:
            raise ValueError("teacher kind 'openai' needs base_url")
        from homegrown.data.synthetic import TeacherSettings

        return TeacherSettings(base_url=self.base_url, model=self.model, api_key=self.api_key or "none")


POINTER_METADATA = "homegrown/pointer"


class RunArtifacts:
    """The artifact store as one Dagster run sees it.

    Upstream pointers come from the asset's materialisations in the instance's event log (the latest one that
    recorded a pointer: a materialisation that a blocking check stopped records none), so what the UI shows as
    the upstream materialisation is what the run reads; each read is noted on this run's materialisation
    (``upstream/<stage>``: the run and time that recorded it). A pointer in the store newer than any
    materialisation's (written outside Dagster, or by an instance that this one does not share) wins, with a
    warning. Each pointer this run records is attached to its own materialisation (``homegrown/pointer``).
    Everything else is the store's.
    """

    def __init__(self, store: ArtifactStore, context: dg.AssetExecutionContext):
        self._store = store
        self._context = context
        self._asset_keys = {key.to_user_string() for key in context.selected_asset_keys}

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def pointer(self, stage: str) -> dict | None:
        materialized, run_id = _materialized_pointer(self._context.instance, stage)
        if materialized is not None and materialized.get("store") != self._store.uri:
            materialized = None  # recorded into another artifact store (HOMEGROWN_ARTIFACTS changed since)
        stored = self._store.pointer(stage)
        chosen, origin = materialized, f"run {run_id}"
        if stored is not None and (materialized is None
                                   or str(stored.get("recorded_at", "")) > str(materialized.get("recorded_at", ""))):
            if materialized is not None:
                self._context.log.warning(f"{stage}: the store's pointer ({stored.get('recorded_at')}) is newer than "
                                          f"its latest materialisation's ({materialized.get('recorded_at')}); using it")
            chosen, origin = stored, "the store (no materialisation recorded it)"
        if chosen is not None and stage not in self._asset_keys:
            self._context.add_asset_metadata({f"upstream/{stage}": dg.MetadataValue.text(
                f"{origin}, recorded {chosen.get('recorded_at', '?')}")})
        return chosen

    def latest(self, stage: str) -> dict | None:
        return self._store.localize(self.pointer(stage))

    def require_latest(self, stage: str) -> dict:
        info = self.latest(stage)
        if info is None:
            raise FileNotFoundError(f"no successful materialisation of {stage!r} in {self._store.uri}; "
                                    "materialise it first")
        return info

    def record_latest(self, stage: str, info: dict) -> dict:
        stored = self._store.record_latest(stage, info)
        if stage in self._asset_keys:
            self._context.add_asset_metadata({POINTER_METADATA: dg.MetadataValue.json(stored)}, asset_key=stage)
        return stored


def _materialized_pointer(instance: dg.DagsterInstance, stage: str, look_back: int = 50) -> tuple[dict | None, str]:
    """The pointer recorded with the latest materialisation of ``stage`` that recorded one, and its run id."""
    cursor = None
    seen = 0
    while seen < look_back:
        result = instance.fetch_materializations(dg.AssetKey(stage), limit=10, cursor=cursor, ascending=False)
        for record in result.records:
            materialization = record.asset_materialization
            entry = materialization.metadata.get(POINTER_METADATA) if materialization else None
            if entry is not None:
                return dict(entry.value), record.run_id
        seen += len(result.records)
        if not result.has_more:
            break
        cursor = result.cursor
    return None, ""

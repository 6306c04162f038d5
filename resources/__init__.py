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
from homegrown.store import ArtifactStore
from homegrown.tracking import Tracker, default_artifact_root, default_tracking_uri

DEMO_KNOWLEDGE = Path(__file__).resolve().parent.parent / "homegrown" / "demo" / "knowledge.json"


class StorageResource(dg.ConfigurableResource):
    """Where large artifacts (tables, datasets, adapters, models) are written, by reference."""

    root: str = Field(default="", description="Artifact folder; empty means <HOMEGROWN_HOME>/artifacts.")

    def store(self) -> ArtifactStore:
        return ArtifactStore(Path(self.root) if self.root else paths.subdir("artifacts"))


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

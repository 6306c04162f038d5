"""The artifact store: large artifacts (tables, datasets, adapters, models) written by reference.

Each stage writes into its own versioned folder and then records a small JSON "latest" pointer, so a
failed stage never replaces what an earlier successful materialisation left behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from homegrown import paths
from homegrown.data.columns import JSON_EXAMPLE_COLUMNS, JSON_INTERACTION_COLUMNS
from homegrown.data.sources import is_s3, split_s3

ARTIFACTS_ENV = "HOMEGROWN_ARTIFACTS"


def artifacts_location() -> str:
    """``HOMEGROWN_ARTIFACTS`` (a folder or ``s3://bucket/prefix``), else ``<HOMEGROWN_HOME>/artifacts``."""
    return os.environ.get(ARTIFACTS_ENV) or str(paths.subdir("artifacts"))


def open_store(location: str | Path | None = None) -> ArtifactStore:
    """The artifact store at ``location`` (default: :func:`artifacts_location`), on a folder or on S3."""
    return ArtifactStore(location or artifacts_location())


class ArtifactStore:
    """Artifacts under ``<root>/<stage>/<version>/...`` plus pointers ``<root>/latest/<stage>.json``.

    ``root`` is a local folder or ``s3://bucket/prefix``. Stages always read and write local files (trainers,
    llama.cpp and pandas need them), so on S3 the store keeps a local working copy under
    ``<HOMEGROWN_HOME>/cache/artifacts/<bucket>/<prefix>`` and S3 holds the truth:

    - ``record_latest`` uploads every file or folder of the working copy the pointer names, then writes the
      pointer with those paths as ``s3://`` URIs: what another machine, or the Dagster UI, sees;
    - ``latest``/``require_latest`` read the pointer from S3 and download what it names that the working copy
      lacks (or holds at another ETag), and return it with local paths, so stage code is the same everywhere.

    ``state_dir`` is a stage's mutable state (the ingestion database, the split assignment): it is downloaded
    before the stage reads it and uploaded with the stage's pointer. Two runs of one stage never overlap (the
    stage pools), so the last pointer written is the state every later run starts from.
    """

    def __init__(self, root: Path | str, cache: Path | str | None = None):
        self.uri = str(root).rstrip("/")
        self.remote = is_s3(self.uri)
        if self.remote:
            bucket, prefix = split_s3(self.uri)
            self.bucket, self.prefix = bucket, prefix  # prefix ends in "/" unless empty
            self.root = Path(cache) if cache else paths.subdir("cache", "artifacts", bucket, *prefix.split("/"))
        else:
            self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.uri!r})"

    def stage_dir(self, stage: str, version: str) -> Path:
        path = self.root / stage / version
        path.mkdir(parents=True, exist_ok=True)
        return path

    def state_dir(self, stage: str) -> Path:
        """``<root>/<stage>/state``: the stage's mutable state, brought up to date from S3 first."""
        path = self.stage_dir(stage, "state")
        if self.remote:
            self._download_tree(self._key(path))
        return path

    def write_table(self, stage: str, version: str, name: str, df: pd.DataFrame) -> Path:
        """Write a DataFrame as Parquet; nested columns are stored as JSON strings."""
        path = self.stage_dir(stage, version) / f"{name}.parquet"
        to_parquet(df, path)
        return path

    def record_latest(self, stage: str, info: dict[str, Any]) -> dict[str, Any]:
        """Atomically point ``stage`` at its newest successful output; returns the pointer as stored."""
        info = json.loads(json.dumps({**info, "recorded_at": datetime.now(UTC).isoformat(), "store": self.uri},
                                     default=str))
        if self.remote:
            info = self._publish(info)
            body = json.dumps(info, indent=2).encode()
            _s3().put_object(Bucket=self.bucket, Key=f"{self.prefix}latest/{stage}.json", Body=body)
            return info
        latest = self.root / "latest"
        latest.mkdir(parents=True, exist_ok=True)
        target = latest / f"{stage}.json"
        fd, tmp = tempfile.mkstemp(dir=latest, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh, indent=2)
        os.replace(tmp, target)
        return info

    def pointer(self, stage: str) -> dict[str, Any] | None:
        """The pointer as stored (``s3://`` URIs on S3), without downloading anything."""
        if self.remote:
            from botocore.exceptions import ClientError

            try:
                body = _s3().get_object(Bucket=self.bucket, Key=f"{self.prefix}latest/{stage}.json")["Body"].read()
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                    return None
                raise
            return json.loads(body)
        target = self.root / "latest" / f"{stage}.json"
        if not target.exists():
            return None
        return json.loads(target.read_text())

    def latest(self, stage: str) -> dict[str, Any] | None:
        """The stage's pointer with local paths (what it names is downloaded first on S3), or None."""
        return self.localize(self.pointer(stage))

    def localize(self, info: dict[str, Any] | None) -> dict[str, Any] | None:
        """A stored pointer with local paths: on S3 what it names is downloaded first; locally it is as it is."""
        if info is None or not self.remote:
            return info
        return self._localize(info)

    def require_latest(self, stage: str) -> dict[str, Any]:
        info = self.latest(stage)
        if info is None:
            raise FileNotFoundError(f"no successful materialisation of {stage!r} in {self.uri}; materialise it first")
        return info

    def fetch(self, stage: str, version: str) -> Path:
        """``<root>/<stage>/<version>`` here, downloaded first on S3 (an older version no pointer names)."""
        if self.remote:
            self._download_tree(f"{self.prefix}{stage}/{version}")
        return self.root / stage / version

    def versions(self, stage: str) -> list[str]:
        """The versions a stage has written (folder names under ``<root>/<stage>``, ``state`` excluded)."""
        if self.remote:
            found: set[str] = set()
            pages = _s3().get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}{stage}/", Delimiter="/")
            for page in pages:
                found.update(p["Prefix"].rstrip("/").rsplit("/", 1)[-1] for p in page.get("CommonPrefixes", []))
        else:
            folder = self.root / stage
            found = {p.name for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else set()
        return sorted(found - {"state"})

    def uri_of(self, path: Path | str) -> str:
        """What another machine calls a path of this working copy: its ``s3://`` URI (a local store: the path)."""
        if not self.remote:
            return str(path)
        return f"s3://{self.bucket}/{self._key(Path(path))}"

    def local_path(self, uri: str) -> Path:
        """Where a URI of this store lives in the working copy (nothing is downloaded)."""
        if not self.remote:
            return Path(uri)
        if not uri.startswith(self.uri + "/"):
            raise ValueError(f"{uri!r} is not under the artifact store {self.uri}")
        return self._local(uri)

    def publish(self, info: Any) -> Any:
        """Upload what ``info`` names in the working copy and return it with URIs (a local store: as it is)."""
        return self._publish(info) if self.remote else info

    # --- S3 mirroring -------------------------------------------------------------------------------------

    def _key(self, local: Path) -> str:
        return self.prefix + local.resolve().relative_to(self.root.resolve()).as_posix()

    def _local(self, uri: str) -> Path:
        return self.root / uri[len(self.uri) + 1:]

    def _publish(self, value: Any) -> Any:
        """Upload every existing file or folder of the working copy that ``value`` names; name them by URI."""
        if isinstance(value, dict):
            return {k: self._publish(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._publish(v) for v in value]
        if isinstance(value, str) and value.startswith("/"):
            path = Path(value)
            try:
                path.resolve().relative_to(self.root.resolve())
            except ValueError:
                return value  # outside the store (a base model in a cache): stays a local path
            if path.is_file():
                self._upload_file(path)
            elif path.is_dir():
                root = self.root.resolve()
                for file in sorted(p for p in path.rglob("*") if p.is_file()):
                    if file.resolve().is_relative_to(root):  # a link out of the store is not the store's
                        self._upload_file(file)
            else:
                return value
            return f"s3://{self.bucket}/{self._key(path)}"
        return value

    def _localize(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self._localize(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._localize(v) for v in value]
        if isinstance(value, str) and value.startswith(self.uri + "/"):
            key = self.prefix + value[len(self.uri) + 1:]
            if _head(self.bucket, key) is not None:
                self._download_file(key)
            elif not self._download_tree(key):
                raise FileNotFoundError(f"{value} is named by a pointer but is not in the artifact store")
            return str(self._local(value))
        return value

    def _sync_record(self, path: Path) -> Path:
        return self.root / ".s3sync" / (path.resolve().relative_to(self.root.resolve()).as_posix() + ".json")

    def _upload_file(self, path: Path) -> None:
        """Upload one file unless it is unchanged since it was last uploaded or downloaded here."""
        stat = path.stat()
        seen = self._read_record(path)
        if seen.get("size") == stat.st_size and seen.get("mtime_ns") == stat.st_mtime_ns:
            return
        key = self._key(path)
        _s3().upload_file(str(path), self.bucket, key)
        head = _head(self.bucket, key) or {}
        self._remember(path, head.get("ETag", ""))

    def _download_file(self, key: str, etag: str | None = None) -> None:
        """Download one object unless the working copy already holds it at the same ETag."""
        target = self.root / key[len(self.prefix):]
        if etag is None:
            etag = (_head(self.bucket, key) or {}).get("ETag", "")
        if target.exists():
            seen = self._read_record(target)
            stat = target.stat()
            unchanged_here = seen.get("size") == stat.st_size and seen.get("mtime_ns") == stat.st_mtime_ns
            if unchanged_here and seen.get("etag") == etag:
                return
            if not unchanged_here and seen.get("etag") == etag \
                    and "state" in target.relative_to(self.root).parts[1:2]:
                # Mutable state written here since its last sync while nobody recorded a newer one (a stage
                # writing it now, or one that failed before recording): kept, as a local store keeps it;
                # recording the stage uploads it. A newer recording elsewhere wins.
                return
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=target.parent, suffix=".part")
        os.close(fd)
        try:
            _s3().download_file(self.bucket, key, temp)
            os.replace(temp, target)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
        self._remember(target, etag)

    def _download_tree(self, key: str) -> int:
        """Download every object under ``key/``; returns how many there are."""
        prefix = key.rstrip("/") + "/"
        count = 0
        for page in _s3().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                self._download_file(item["Key"], item["ETag"])
                count += 1
        return count

    def _read_record(self, path: Path) -> dict[str, Any]:
        """What was last synced for ``path`` (empty when never, or when the record is unreadable)."""
        try:
            return json.loads(self._sync_record(path).read_text())
        except (OSError, ValueError):
            return {}

    def _remember(self, path: Path, etag: str) -> None:
        stat = path.stat()
        record = self._sync_record(path)
        record.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=record.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump({"etag": etag, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}, fh)
        os.replace(tmp, record)


def _head(bucket: str, key: str) -> dict[str, Any] | None:
    from homegrown.data.sources import _s3_head

    return _s3_head(bucket, key)


def _s3():
    from homegrown.data.sources import _s3 as client

    return client()


_NESTED = set(JSON_EXAMPLE_COLUMNS) | set(JSON_INTERACTION_COLUMNS)


def to_parquet(df: pd.DataFrame, path: Path) -> None:
    out = df.copy()
    for col in out.columns:
        if col in _NESTED:
            out[col] = out[col].map(lambda v: None if v is None else json.dumps(v, ensure_ascii=False))
    tmp = path.with_suffix(".parquet.tmp")
    out.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def read_parquet(path: Path | str) -> pd.DataFrame:
    df = pd.read_parquet(path)
    for col in df.columns:
        if df[col].dtype != bool and not pd.api.types.is_numeric_dtype(df[col]):
            df[col] = df[col].astype(object).where(df[col].notna(), None)
    for col in df.columns:
        if col in _NESTED:
            df[col] = pd.Series([json.loads(v) if isinstance(v, str) else None for v in df[col]],
                                index=df.index, dtype=object)
    return df

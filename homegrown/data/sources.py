"""Input files in a folder or an S3 prefix: listing, streaming reads, and the opt-out list.

A location is a local folder or ``s3://bucket/prefix``. S3 goes through boto3, so the usual AWS
settings apply, including ``AWS_ENDPOINT_URL`` for S3-compatible stores (MinIO, moto).

Readers stream a file in batches and never hold the whole file in memory. Each yielded row is
``(line_number, item)`` where ``item`` is the parsed record (a dict for CSV and Parquet, any JSON
value for JSONL) or a :class:`ParseError`. Line numbers are 1-based: physical lines for JSONL, data
rows for CSV and Parquet.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, BinaryIO

from homegrown.data.records import coerce_csv_row

FORMATS = {".jsonl": "jsonl", ".parquet": "parquet", ".csv": "csv"}
OPTOUT_FILE = "optout.json"
KNOWLEDGE_FILE = "knowledge.json"
READ_CHUNK_BYTES = 1 << 20
# How many bytes before a JSONL cursor are re-read to check that the file was appended to, not rewritten.
RESUME_CHECK_BYTES = 256


@dataclass(frozen=True)
class FileInfo:
    """One input file: full path (local path or ``s3://bucket/key``), size in bytes, and a fingerprint
    that changes whenever the content does (size + mtime locally, the ETag on S3)."""

    path: str
    size: int
    fingerprint: str

    @property
    def format(self) -> str:
        return FORMATS[Path(self.path).suffix.lower()]


@dataclass(frozen=True)
class ParseError:
    """A row that could not even be parsed (invalid JSON, bad encoding); ``raw`` is its text."""

    reason: str
    raw: str


@dataclass
class Batch:
    """Consecutive rows of one file and the position right after them (byte offset for JSONL,
    data rows consumed for CSV and Parquet), which is where the next read resumes."""

    rows: list[tuple[int, Any]]
    position: int
    line: int
    tail: bytes = b""
    held_back_bytes: int = 0


@dataclass
class Listing:
    """What :func:`list_location` found: the input files and the files it does not read."""

    files: list[FileInfo] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class OptOutError(ValueError):
    """``optout.json`` exists but cannot be trusted; ingestion stops rather than guess."""


def is_s3(location: str) -> bool:
    return location.startswith("s3://")


def split_s3(location: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix/")`` (prefix empty for the bucket root)."""
    if not is_s3(location):
        raise ValueError(f"not an S3 location: {location!r}")
    bucket, _, prefix = location[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"S3 location has no bucket: {location!r}")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def list_files(location: str) -> list[FileInfo]:
    """The ``*.jsonl``, ``*.parquet`` and ``*.csv`` files under a folder or S3 prefix (recursively),
    sorted by path. Hidden files (``.name``) are ignored."""
    return list_location(location).files


def list_location(location: str) -> Listing:
    """Like :func:`list_files`, and also the paths of files that are neither input nor ``optout.json``."""
    listing = Listing()
    for path, size, fingerprint in _walk(location):
        name = path.rsplit("/", 1)[-1]
        if name.startswith("."):
            continue
        if Path(name).suffix.lower() in FORMATS:
            listing.files.append(FileInfo(path, size, fingerprint))
        elif name != OPTOUT_FILE:
            listing.skipped.append(path)
    listing.files.sort(key=lambda info: info.path)
    listing.skipped.sort()
    return listing


def read_optout(location: str) -> set[str]:
    """The opted-out organisations of ``optout.json`` at the top of the location (empty if there is none).

    Raises :class:`OptOutError` when the file exists but is not ``{"opted_out_orgs": [str, ...]}``.
    """
    if is_s3(location):
        bucket, prefix = split_s3(location)
        client = _s3()
        try:
            body = client.get_object(Bucket=bucket, Key=prefix + OPTOUT_FILE)["Body"].read()
        except client.exceptions.NoSuchKey:
            return set()
        where = f"{location.rstrip('/')}/{OPTOUT_FILE}"
    else:
        path = Path(location) / OPTOUT_FILE
        if not path.exists():
            return set()
        body, where = path.read_bytes(), str(path)
    try:
        document = json.loads(body)
    except ValueError as error:
        raise OptOutError(f"{where} is not valid JSON ({error}); fix it before ingesting") from None
    orgs = document.get("opted_out_orgs") if isinstance(document, dict) else None
    if not isinstance(orgs, list) or not all(isinstance(org, str) and org for org in orgs):
        raise OptOutError(f'{where} must be {{"opted_out_orgs": ["org-...", ...]}} with non-empty strings')
    return set(orgs)


def find_knowledge_file(location: str) -> str | None:
    """``knowledge.json`` at the top of an input location: its local path or ``s3://bucket/key``, or None
    when the location has none."""
    if is_s3(location):
        bucket, prefix = split_s3(location)
        return f"s3://{bucket}/{prefix}{KNOWLEDGE_FILE}" if _s3_head(bucket, prefix + KNOWLEDGE_FILE) else None
    path = Path(location) / KNOWLEDGE_FILE
    return str(path) if path.is_file() else None


def cached_copy(path: str, folder: Path) -> Path:
    """A local path for one file of an input location: a local file as it is, an S3 object downloaded into
    ``folder/<etag>/<name>`` (reused while the object is unchanged; its modification time is the object's)."""
    if not is_s3(path):
        return Path(path)
    bucket, _, key = path[len("s3://"):].partition("/")
    head = _s3_head(bucket, key)
    if head is None:
        raise FileNotFoundError(f"{path} does not exist")
    target = folder / head["ETag"].strip('"') / key.rsplit("/", 1)[-1]
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Download beside the target and rename, so a concurrent step never reads a half-written copy.
    handle, temp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    os.close(handle)
    try:
        _s3().download_file(bucket, key, temp)
        modified = head["LastModified"].timestamp()
        os.utime(temp, (modified, modified))
        os.replace(temp, target)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return target


def read_rows(file: FileInfo) -> Iterator[tuple[int, Any]]:
    """Every row of a file, from the start, as ``(line_number, record_or_ParseError)``."""
    for batch in read_batches(file):
        yield from batch.rows


def read_batches(
    file: FileInfo, position: int = 0, line: int = 0, tail: bytes = b"", batch_size: int = 5000
) -> Iterator[Batch]:
    """Rows of a file from a cursor, in batches of at most ``batch_size`` rows.

    ``position`` is a byte offset for JSONL and a count of data rows for CSV and Parquet; ``line`` is
    the last line number already read; for JSONL, ``tail`` is the last bytes before ``position``: when
    they no longer match, the file was rewritten rather than appended to, and it is read from the start
    (check :attr:`Batch.position` of the first batch).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if file.format == "jsonl":
        yield from _jsonl_batches(file, position, line, tail, batch_size)
    elif file.format == "csv":
        yield from _csv_batches(file, position, batch_size)
    else:
        yield from _parquet_batches(file, position, batch_size)


def _jsonl_batches(file: FileInfo, position: int, line: int, tail: bytes, batch_size: int) -> Iterator[Batch]:
    if position > file.size or (position and not _tail_matches(file, position, tail)):
        position, line, tail = 0, 0, b""  # truncated or rewritten: read it all again
    if position == file.size:
        yield Batch([], position, line, tail)
        return
    rows: list[tuple[int, Any]] = []
    last = b""
    pending = b""
    with _open_binary(file.path, position) as stream:
        while chunk := stream.read(READ_CHUNK_BYTES):
            pieces = (pending + chunk).split(b"\n")
            pending = pieces.pop()
            for raw in pieces:
                line += 1
                position += len(raw) + 1
                last = raw + b"\n"
                if raw.strip():
                    rows.append((line, _parse_json_line(raw)))
                if len(rows) >= batch_size:
                    yield Batch(rows, position, line, last[-RESUME_CHECK_BYTES:])
                    rows = []
    held_back = 0
    if pending.strip():
        item = _parse_json_line(pending)
        if isinstance(item, ParseError):
            # An unterminated line that does not parse is most likely being written right now: leave it
            # for the next read instead of quarantining half a record.
            held_back = len(pending)
        else:
            line += 1
            position += len(pending)
            last = pending
            rows.append((line, item))
    yield Batch(rows, position, line, last[-RESUME_CHECK_BYTES:] or tail, held_back)


def _tail_matches(file: FileInfo, position: int, tail: bytes) -> bool:
    if not tail:
        return False
    start = position - len(tail)
    if start < 0:
        return False
    with _open_binary(file.path, start, end=position) as stream:
        return stream.read(len(tail)) == tail


def _parse_json_line(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return ParseError(f"line is not valid UTF-8 ({error.reason} at byte {error.start})", raw.decode("utf-8", "replace"))
    try:
        return json.loads(text.lstrip("\ufeff"))  # a byte-order mark, as some Windows tools write
    except ValueError as error:
        return ParseError(f"invalid JSON ({error})", text)


def _csv_batches(file: FileInfo, position: int, batch_size: int) -> Iterator[Batch]:
    # Conversations in one cell easily exceed the csv module's default 128 KiB field limit.
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 26))
    rows: list[tuple[int, Any]] = []
    number = 0
    with _open_binary(file.path, 0) as stream:
        text = io.TextIOWrapper(_Readable(stream), encoding="utf-8-sig", errors="replace", newline="")
        for number, row in enumerate(csv.DictReader(text), start=1):
            if number <= position:
                continue
            if None in row:
                rows.append((number, ParseError("row has more cells than the header", json.dumps(row[None]))))
            else:
                rows.append((number, coerce_csv_row(row)))
            if len(rows) >= batch_size:
                yield Batch(rows, number, number)
                rows = []
    if number < position:
        # Fewer rows than already consumed: the file was replaced, so read it from the start.
        yield from _csv_batches(file, 0, batch_size)
        return
    yield Batch(rows, max(number, position), max(number, position))


def _parquet_batches(file: FileInfo, position: int, batch_size: int) -> Iterator[Batch]:
    import pyarrow.parquet as pq

    with _local_copy(file.path) as local:
        parquet = pq.ParquetFile(local)
        total = parquet.metadata.num_rows
        if total < position:
            position = 0  # the file was replaced by a shorter one
        number = 0
        rows: list[tuple[int, Any]] = []
        for record_batch in parquet.iter_batches(batch_size=batch_size):
            if number + record_batch.num_rows <= position:
                number += record_batch.num_rows
                continue
            for record in record_batch.to_pylist():
                number += 1
                if number > position:
                    rows.append((number, _plain(record)))
            if len(rows) >= batch_size:
                yield Batch(rows, number, number)
                rows = []
        yield Batch(rows, max(number, position), max(number, position))


def _plain(value: Any) -> Any:
    """Parquet values as JSON-like Python values (timestamps kept as datetimes, NaN as absent)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.isoformat()
    return value


# --- storage ---------------------------------------------------------------------------------------


def _walk(location: str) -> Iterator[tuple[str, int, str]]:
    if is_s3(location):
        bucket, prefix = split_s3(location)
        paginator = _s3().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                if item["Key"].endswith("/"):
                    continue
                yield f"s3://{bucket}/{item['Key']}", item["Size"], item["ETag"].strip('"')
        return
    root = Path(location)
    if not root.is_dir():
        raise FileNotFoundError(f"input location {location!r} is not a folder or an s3:// prefix")
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(name for name in subdirs if not name.startswith("."))
        for name in names:
            path = Path(directory) / name
            stat = path.stat()
            yield str(path.resolve()), stat.st_size, f"{stat.st_size}-{stat.st_mtime_ns}"


def _s3_head(bucket: str, key: str) -> dict[str, Any] | None:
    """The object's metadata (``ETag``, ``LastModified``, ...), or None when there is no such key."""
    from botocore.exceptions import ClientError

    try:
        return _s3().head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
            return None
        raise


def _s3():
    env = os.environ
    return _s3_client(env.get("AWS_ENDPOINT_URL"), env.get("AWS_PROFILE"), env.get("AWS_ACCESS_KEY_ID"))


@functools.lru_cache(maxsize=4)
def _s3_client(endpoint_url: str | None, profile: str | None, access_key_id: str | None):
    # Creating a client costs tens of milliseconds; one per configuration is reused (they are thread-safe).
    # boto3 reads AWS_ENDPOINT_URL and the credentials from the environment itself; the key only tells
    # configurations apart.
    import boto3

    return boto3.client("s3")


class _open_binary:
    """A binary stream over a local file or S3 object, from byte ``start`` to ``end`` (exclusive)."""

    def __init__(self, path: str, start: int, end: int | None = None):
        self.path, self.start, self.end = path, start, end
        self.stream: BinaryIO | Any = None

    def __enter__(self):
        if is_s3(self.path):
            bucket, _, key = self.path[len("s3://"):].partition("/")
            if self.start == 0 and self.end is None:
                self.stream = _s3().get_object(Bucket=bucket, Key=key)["Body"]
            else:  # an empty range is an error on S3; callers never ask for one
                byte_range = f"bytes={self.start}-{'' if self.end is None else self.end - 1}"
                self.stream = _s3().get_object(Bucket=bucket, Key=key, Range=byte_range)["Body"]
        else:
            self.stream = open(self.path, "rb")
            self.stream.seek(self.start)
        return self.stream

    def __exit__(self, *exc_info):
        self.stream.close()


class _Readable(io.RawIOBase):
    """Adapts any object with ``read(n)`` (a boto3 StreamingBody) for ``io.TextIOWrapper``."""

    def __init__(self, stream: Any):
        self.stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _local_copy:
    """A local path for a file: the file itself, or a temporary download of an S3 object (Parquet
    needs random access)."""

    def __init__(self, path: str):
        self.path = path
        self.temp: str | None = None

    def __enter__(self) -> str:
        if not is_s3(self.path):
            return self.path
        bucket, _, key = self.path[len("s3://"):].partition("/")
        handle, self.temp = tempfile.mkstemp(suffix=".parquet")
        os.close(handle)
        _s3().download_file(bucket, key, self.temp)
        return self.temp

    def __exit__(self, *exc_info):
        if self.temp:
            os.unlink(self.temp)



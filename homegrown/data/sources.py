"""Input files in a folder or an S3 prefix: listing, streaming reads, and the opt-out list.

A location is a local folder or ``s3://bucket/prefix``. S3 goes through boto3, so the usual AWS
settings apply, including ``AWS_ENDPOINT_URL`` for S3-compatible stores (MinIO, moto).

Readers stream a file in batches and never hold the whole file in memory. Each yielded row is
``(line_number, item)`` where ``item`` is the parsed record (a dict for CSV and Parquet, any JSON
value for JSONL) or a :class:`ParseError`. Line numbers are 1-based: physical lines for JSONL, data
rows for CSV and Parquet.

Reading never jams on one bad line: a line longer than ``max_line_bytes`` is reported as a
:class:`ParseError` without being held in memory, lines are split in one linear pass over bounded
chunks, and a JSONL line or CSV row the writer has not finished yet (no final newline) is held back
until it is.
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

from homegrown.data.records import MAX_NESTING_DEPTH, RecordError, check_depth, coerce_csv_row

FORMATS = {".jsonl": "jsonl", ".parquet": "parquet", ".csv": "csv"}
OPTOUT_FILE = "optout.json"
KNOWLEDGE_FILE = "knowledge.json"
READ_CHUNK_BYTES = 1 << 20
# The longest line (JSONL) or row (CSV) read; longer ones are quarantined unread. 8 MiB holds any real
# conversation many times over and keeps one line far from SQLite's 1 GB value limit.
DEFAULT_MAX_LINE_BYTES = 8 << 20
# How many bytes of a line that is too long are kept to show in the quarantine.
RAW_HEAD_BYTES = 10_000
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


@dataclass(frozen=True)
class Line:
    """One physical line of a byte stream, as :func:`iter_lines` splits it.

    ``data`` is the line without its ``\n``, or None when it is longer than the limit (then only its
    first bytes are kept, in ``head``); ``length`` counts every byte, the newline included; ``tail`` is
    the line's last bytes (newline included), used to recognise an appended file.
    """

    data: bytes | None
    length: int
    terminated: bool
    tail: bytes
    head: bytes = b""


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
        if not _encodable(path):
            # A name that is not UTF-8 cannot be stored in the state database (nor shown): not read.
            listing.skipped.append(path.encode("utf-8", "backslashreplace").decode("utf-8") + " (name is not UTF-8)")
            continue
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


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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


def read_rows(file: FileInfo, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[tuple[int, Any]]:
    """Every row of a file, from the start, as ``(line_number, record_or_ParseError)``."""
    for batch in read_batches(file, max_line_bytes=max_line_bytes):
        yield from batch.rows


def read_batches(
    file: FileInfo,
    position: int = 0,
    line: int = 0,
    tail: bytes = b"",
    batch_size: int = 5000,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Iterator[Batch]:
    """Rows of a file from a cursor, in batches of at most ``batch_size`` rows.

    ``position`` is a byte offset for JSONL and a count of data rows for CSV and Parquet; ``line`` is
    the last line number already read; for JSONL, ``tail`` is the last bytes before ``position``: when
    they no longer match, the file was rewritten rather than appended to, and it is read from the start
    (check :attr:`Batch.position` of the first batch). A JSONL line or CSV row over ``max_line_bytes``
    is a :class:`ParseError`; an unfinished last line or row is not read, and counted in the last
    batch's ``held_back_bytes``.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if max_line_bytes < 1:
        raise ValueError("max_line_bytes must be at least 1")
    if file.format == "jsonl":
        yield from _jsonl_batches(file, position, line, tail, batch_size, max_line_bytes)
    elif file.format == "csv":
        yield from _csv_batches(file, position, batch_size, max_line_bytes)
    else:
        yield from _parquet_batches(file, position, batch_size)


def iter_lines(stream: Any, max_line_bytes: int, chunk_bytes: int = READ_CHUNK_BYTES) -> Iterator[Line]:
    """Split a binary stream (anything with ``read(n)``) into :class:`Line` s in one linear pass.

    The stream is read in chunks of ``chunk_bytes``; a line spanning chunks is collected as a list of
    pieces and joined once, so a long line costs time proportional to its length (never the
    ``pending + chunk`` re-copying that is quadratic). A line over ``max_line_bytes`` is not kept: only
    its first ``RAW_HEAD_BYTES`` and its length are. The last line comes with ``terminated=False`` when
    the stream does not end in a newline.
    """
    parts: list[bytes] = []  # pieces of the current line while it is within the limit
    size = 0  # bytes of the current line so far, newline excluded
    oversized = False
    head = suffix = b""  # for a line over the limit: its first bytes and its last bytes
    while chunk := stream.read(chunk_bytes):
        start, end = 0, len(chunk)
        while start < end:
            newline = chunk.find(b"\n", start)
            stop = end if newline < 0 else newline
            piece = chunk[start:stop]
            size += len(piece)
            if oversized:
                suffix = (suffix + piece[-RESUME_CHECK_BYTES:])[-RESUME_CHECK_BYTES:]
            elif size > max_line_bytes:
                oversized = True
                parts.append(piece)
                head = b"".join(parts)[:RAW_HEAD_BYTES]  # once per long line: at most limit + one chunk
                suffix = piece[-RESUME_CHECK_BYTES:]
                parts = []
            else:
                parts.append(piece)
            if newline < 0:
                break
            yield _finish_line(parts, size, oversized, head, suffix, terminated=True)
            parts, size, oversized, head, suffix = [], 0, False, b"", b""
            start = newline + 1
    if size:
        yield _finish_line(parts, size, oversized, head, suffix, terminated=False)


def _finish_line(parts: list[bytes], size: int, oversized: bool, head: bytes, suffix: bytes, terminated: bool) -> Line:
    newline = b"\n" if terminated else b""
    if oversized:
        return Line(None, size + len(newline), terminated, (suffix + newline)[-RESUME_CHECK_BYTES:], head)
    data = parts[0] if len(parts) == 1 else b"".join(parts)
    return Line(data, size + len(newline), terminated, (data[-RESUME_CHECK_BYTES:] + newline)[-RESUME_CHECK_BYTES:])


def _too_long(length: int, max_line_bytes: int, what: str = "line") -> str:
    return f"{what} is {length:,} bytes, over the limit of {max_line_bytes:,} bytes (max_line_bytes)"


def _jsonl_batches(
    file: FileInfo, position: int, line: int, tail: bytes, batch_size: int, max_line_bytes: int
) -> Iterator[Batch]:
    if position > file.size or (position and not _tail_matches(file, position, tail)):
        position, line, tail = 0, 0, b""  # truncated or rewritten: read it all again
    if position == file.size:
        yield Batch([], position, line, tail)
        return
    rows: list[tuple[int, Any]] = []
    held_back = 0
    with _open_binary(file.path, position) as stream:
        for piece in iter_lines(stream, max_line_bytes):
            if not piece.terminated:
                # An unterminated last line is most likely being written right now. It is read only when
                # it is complete JSON already; otherwise it waits for the next read, not quarantined half.
                if piece.data is None:
                    held_back = piece.length  # over the limit: quarantined once it is finished
                    break
                if not piece.data.strip():
                    break  # only spaces so far: nothing to read
                item = _parse_json_line(piece.data)
                if isinstance(item, ParseError):
                    held_back = piece.length
                    break
            line += 1
            position += piece.length
            tail = piece.tail
            if piece.data is None:
                head = piece.head.decode("utf-8", "replace")
                rows.append((line, ParseError(_too_long(piece.length - piece.terminated, max_line_bytes), head)))
            elif not piece.terminated:
                rows.append((line, item))
            elif piece.data.strip():
                rows.append((line, _parse_json_line(piece.data)))
            if len(rows) >= batch_size:
                yield Batch(rows, position, line, tail)
                rows = []
    yield Batch(rows, position, line, tail, held_back)


def _tail_matches(file: FileInfo, position: int, tail: bytes) -> bool:
    if not tail:
        return False
    start = position - len(tail)
    if start < 0:
        return False
    with _open_binary(file.path, start, end=position) as stream:
        return stream.read(len(tail)) == tail


def _parse_json_line(raw: bytes) -> Any:
    """One JSONL line as its JSON value, or a :class:`ParseError`; never raises."""
    if b"\x00" in raw:
        return ParseError("line contains a NUL byte (binary data, not JSON text)", raw.decode("utf-8", "replace"))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return ParseError(f"line is not valid UTF-8 ({error.reason} at byte {error.start})", raw.decode("utf-8", "replace"))
    try:
        value = json.loads(text.lstrip("\ufeff"))  # a byte-order mark, as some Windows tools write
        if raw.count(b"[") + raw.count(b"{") > MAX_NESTING_DEPTH:  # otherwise it cannot nest too deeply
            check_depth(value)
    except RecordError as error:
        return ParseError(error.reason, text)
    except ValueError as error:
        return ParseError(f"invalid JSON ({error})", text)
    except RecursionError:
        return ParseError("JSON nested too deeply to parse (RecursionError)", text)
    except Exception as error:  # noqa: BLE001 - one line must never stop the file
        return ParseError(f"cannot parse line ({type(error).__name__}: {error})", text)
    return value


def _csv_batches(file: FileInfo, position: int, batch_size: int, max_line_bytes: int) -> Iterator[Batch]:
    # A row may be as long as max_line_bytes; the csv module's default field limit is only 128 KiB.
    csv.field_size_limit(max(csv.field_size_limit(), max_line_bytes))
    rows: list[tuple[int, Any]] = []
    number = 0
    held_back = 0
    header: list[str] | None = None
    with _open_binary(file.path, 0) as stream:
        source = _CsvLines(iter_lines(stream, max_line_bytes), max_line_bytes)
        reader = csv.reader(source)
        while True:
            source.start_record()
            problem: str | None = None
            try:
                cells = next(reader)
            except StopIteration:
                cells = None
            except _RowTooLong as error:
                cells, problem = [], str(error)
            except csv.Error as error:
                cells, problem = [], f"malformed CSV row ({error})"
            if source.unfinished:
                # The last row has no final newline (or ends inside a quoted cell): it is being written.
                held_back = source.record_bytes
                break
            if cells is None:
                break
            if header is None:
                if problem or source.invalid_utf8:
                    raise csv.Error(f"the header row cannot be read ({problem or 'not valid UTF-8'})")
                if cells:
                    header = cells
                continue
            if not cells and problem is None:
                continue  # a blank line is not a row
            number += 1
            if number <= position:
                continue
            if problem is not None:
                item: Any = ParseError(problem, source.raw())
            elif source.invalid_utf8:
                item = ParseError("row is not valid UTF-8", source.raw())
            elif source.nul:
                item = ParseError("row contains a NUL byte (binary data, not text)", source.raw())
            elif len(cells) > len(header):
                item = ParseError("row has more cells than the header", json.dumps(cells[len(header):]))
            else:
                item = _csv_record(header, cells, source.raw)
            rows.append((number, item))
            if len(rows) >= batch_size:
                yield Batch(rows, number, number)
                rows = []
    if number < position:
        # Fewer rows than already consumed: the file was replaced, so read it from the start.
        yield from _csv_batches(file, 0, batch_size, max_line_bytes)
        return
    yield Batch(rows, max(number, position), max(number, position), held_back_bytes=held_back)


def _csv_record(header: list[str], cells: list[str], raw: Any) -> Any:
    """One CSV row as a record (a short row leaves the rest absent), or a :class:`ParseError`."""
    try:
        record = coerce_csv_row(dict(zip(header, cells)))
        check_depth(record)  # a number cell may hold any JSON; nested fields are checked when parsed
    except RecordError as error:
        return ParseError(error.reason, raw())
    except Exception as error:  # noqa: BLE001 - one row must never stop the file
        return ParseError(f"cannot read row ({type(error).__name__}: {error})", raw())
    return record


class _RowTooLong(ValueError):
    """Raised through the csv reader when one row grows past ``max_line_bytes``."""


class _CsvLines:
    """The physical lines of a CSV file as text, for :func:`csv.reader`, with what one row consumed.

    :meth:`start_record` is called before each row is read; the reader pulls exactly the lines of one
    row, so ``record_bytes``, ``invalid_utf8``, ``nul`` and :meth:`raw` describe that row. ``unfinished`` says
    the row reached the end of the file without its final newline, or with a quoted cell still open.
    A line that would take a row past the limit raises :class:`_RowTooLong` (the reader passes it on and
    starts the next row at the next line).
    """

    def __init__(self, lines: Iterator[Line], max_line_bytes: int):
        self.lines, self.max_line_bytes = lines, max_line_bytes
        self.first = True
        self.unfinished = False
        self.start_record()

    def start_record(self) -> None:
        self.record_bytes = 0
        self.record_lines = 0
        self.invalid_utf8 = False
        self.nul = False
        self.head: list[str] = []
        self.head_chars = 0

    def raw(self) -> str:
        return "\n".join(self.head)

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        try:
            line = next(self.lines)
        except StopIteration:
            if self.record_lines:  # EOF inside a quoted cell that spans lines
                self.unfinished = True
            raise
        self.record_lines += 1
        self.record_bytes += line.length
        if not line.terminated:
            self.unfinished = True
            raise StopIteration
        if line.data is None or self.record_bytes > self.max_line_bytes:
            self._keep(line.head if line.data is None else line.data[:RAW_HEAD_BYTES])
            raise _RowTooLong(_too_long(self.record_bytes, self.max_line_bytes, "row"))
        data = line.data
        if self.first:
            self.first = False
            data = data.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark (utf-8-sig)
        self.nul = self.nul or b"\x00" in data
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self.invalid_utf8 = True
            text = data.decode("utf-8", "replace")
        self._keep(text.removesuffix("\r"))
        return text + "\n"

    def _keep(self, data: bytes | str) -> None:
        if self.head_chars < RAW_HEAD_BYTES:
            text = data if isinstance(data, str) else data.decode("utf-8", "replace")
            self.head.append(text[: RAW_HEAD_BYTES - self.head_chars])
            self.head_chars += len(self.head[-1])


def _parquet_batches(file: FileInfo, position: int, batch_size: int) -> Iterator[Batch]:
    import pyarrow.parquet as pq

    with _local_copy(file.path) as local:
        parquet = pq.ParquetFile(local)
        # Arrow's schema bounds how deep a row can nest: rows are checked only when it allows too much.
        check = max((_type_depth(column.type) for column in parquet.schema_arrow), default=0) >= MAX_NESTING_DEPTH
        total = parquet.metadata.num_rows
        if total < position:
            position = 0  # the file was replaced by a shorter one
        number = 0
        rows: list[tuple[int, Any]] = []
        for record_batch in parquet.iter_batches(batch_size=batch_size):
            if number + record_batch.num_rows <= position:
                number += record_batch.num_rows
                continue
            for record in _parquet_records(record_batch, check):
                number += 1
                if number > position:
                    rows.append((number, record))
            if len(rows) >= batch_size:
                yield Batch(rows, number, number)
                rows = []
        yield Batch(rows, max(number, position), max(number, position))


def _type_depth(arrow_type: Any) -> int:
    """How many list/struct/map levels an Arrow type nests."""
    import pyarrow as pa

    if pa.types.is_struct(arrow_type):
        return 1 + max((_type_depth(arrow_type.field(i).type) for i in range(arrow_type.num_fields)), default=0)
    if pa.types.is_map(arrow_type):
        return 1 + max(_type_depth(arrow_type.key_type), _type_depth(arrow_type.item_type))
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
        return 1 + _type_depth(arrow_type.value_type)
    return 0


def _parquet_records(record_batch: Any, check: bool) -> list[Any]:
    """The rows of one Arrow record batch as plain records; a row that cannot be converted (a timestamp
    beyond year 9999, say) or that nests too deeply (``check``) becomes a :class:`ParseError` and the
    others are kept."""
    try:
        records = [_plain(record) for record in record_batch.to_pylist()]
        if check:
            for record in records:
                check_depth(record)
    except Exception:  # noqa: BLE001 - some row does not convert: find it, row by row
        records = [_parquet_record(record_batch, index, check) for index in range(record_batch.num_rows)]
    return records


def _parquet_record(record_batch: Any, index: int, check: bool) -> Any:
    try:
        record = _plain(record_batch.slice(index, 1).to_pylist()[0])
        if check:
            check_depth(record)
        return record
    except RecordError as error:
        return ParseError(error.reason, _parquet_raw(record_batch, index))
    except Exception as error:  # noqa: BLE001
        reason = f"row cannot be read ({type(error).__name__}: {error})"
        return ParseError(reason, _parquet_raw(record_batch, index))


def _parquet_raw(record_batch: Any, index: int) -> str:
    """What can be shown of one unreadable Parquet row: each cell as Python, or as Arrow prints it."""
    cells: dict[str, str] = {}
    for name, column in zip(record_batch.schema.names, record_batch.columns, strict=True):
        try:
            cells[name] = repr(column[index].as_py())
        except Exception:  # noqa: BLE001
            try:
                cells[name] = f"<unreadable {column.type}: {column.cast('int64')[index].as_py()}>"
            except Exception:  # noqa: BLE001
                cells[name] = f"<unreadable {column.type}>"
    return json.dumps(cells, ensure_ascii=False)


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
            try:
                stat = path.stat()
            except OSError:
                continue  # gone since the listing, or a dangling link: nothing to read
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



"""A disk spool for log rows the database would not take, so a log failure never loses a request.

When a write to the log database fails (locked, full, down), the gateway appends the row to a JSONL file
in the spool folder (flushed and fsynced, mode 0600) and answers the client as usual. A background thread
moves spooled rows into the database once it takes writes again; a row already there (same id) is
dropped, so a retry never makes two rows for one request.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class LogSpool:
    """Append-only spool files, drained into the log by :meth:`drain`."""

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def _path(self) -> Path:
        return self.folder / f"spool-{os.getpid()}.jsonl"

    def write(self, record: dict[str, Any], status: str) -> None:
        """Append one row durably (raises ``OSError`` only when the disk refuses too)."""
        line = json.dumps({"status": status, "record": record}, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)

    def pending(self) -> int:
        """How many rows wait in the spool."""
        count = 0
        for path in self.folder.glob("spool-*.jsonl*"):
            with path.open("rb") as fh:
                count += sum(1 for line in fh if line.strip())
        return count

    def drain(self, store_row: Callable[[dict[str, Any], str], None], exists: Callable[[str], bool]) -> int:
        """Move spooled rows into the log; returns how many were stored. Stops at the first failure.

        ``store_row(record, status)`` writes one row; ``exists(id)`` says whether the log already has it.
        A file is renamed before it is read, so rows spooled meanwhile go to a new file.
        """
        if not self.folder.is_dir():
            return 0
        stored = 0
        with self._lock:
            if self._path.exists():
                self._path.rename(self._path.with_suffix(f".jsonl.{time.time_ns()}"))
        for path in sorted(self.folder.glob("spool-*.jsonl.*")):
            lines = path.read_text(encoding="utf-8").splitlines()
            for index, line in enumerate(lines):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a torn last line from a crash mid-append: nothing to keep
                    log.warning("spool %s: dropping an unreadable line", path)
                    continue
                record = row["record"]
                try:
                    if not exists(record["id"]):
                        store_row(record, row["status"])
                        stored += 1
                except Exception as exc:  # noqa: BLE001 - the database still refuses: keep the rest for later
                    log.warning("spool: the log still refuses writes (%s); %d rows wait", exc, len(lines) - index)
                    rest = "\n".join(lines[index:]) + "\n"
                    path.write_text(rest, encoding="utf-8")
                    return stored
            path.unlink()
        return stored

    def start(self, store_row: Callable[[dict[str, Any], str], None], exists: Callable[[str], bool],
              interval_s: float = 5.0) -> None:
        """Drain in a background thread every ``interval_s`` seconds until :meth:`stop`."""

        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.drain(store_row, exists)
                except Exception:  # the thread must outlive any one failure
                    log.exception("draining the log spool failed")

        self._thread = threading.Thread(target=loop, name="log-spool", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

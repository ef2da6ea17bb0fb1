"""The client-side Cloudflare rate limit (``kv_sync.ratelimit``).

Two guards: the container's sliding window, and the budget Cloudflare reports in
its ``Ratelimit`` headers (``observe``). A fake clock stands in for
``time.monotonic`` and ``time.sleep``: sleeping moves the clock forward instead of
waiting, so every test runs instantly and every wait can be checked to the second.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

import pytest

from kv_sync.ratelimit import RateLimiter, shared_limiter


@dataclass
class FakeClock:
    """``time.monotonic`` and ``time.sleep`` for one thread; sleeping advances time."""

    now: float = 1_000.0
    slept: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(time, "monotonic", fake.monotonic)
    monkeypatch.setattr(time, "sleep", fake.sleep)
    return fake


@pytest.fixture
def fresh_shared() -> None:
    """Start each test with an empty container-wide window.

    A changed limit starts a fresh limiter, so asking for one no test uses
    leaves the next ``shared_limiter(n)`` empty.
    """
    shared_limiter(99_999)


def test_default_window_is_cloudflares_five_minutes(clock):
    # GIVEN a limiter of one request with the default window
    limiter = RateLimiter(1)
    assert limiter.reserve(0) == 0.0

    # WHEN 299 seconds pass, and then one more
    clock.now += 299
    before = limiter.reserve(0)
    clock.now += 1
    after = limiter.reserve(0)

    # THEN the slot is still taken just before 5 minutes and free at 5 minutes
    assert before is None
    assert after == 0.0


def test_n_requests_in_a_window_go_through_without_waiting(clock):
    # GIVEN a limiter of 5 requests per 300 s
    limiter = RateLimiter(5, window_s=300)

    # WHEN 5 requests are made at once, none allowed to wait
    results = [limiter.reserve(0) for _ in range(5)]

    # THEN all go through immediately and nothing slept
    assert results == [0.0] * 5
    assert clock.slept == []


def test_request_over_the_limit_waits_until_the_oldest_expires(clock):
    # GIVEN 3 requests at t=0, 10 and 20 s of a 3-per-300-s window
    limiter = RateLimiter(3, window_s=300)
    start = clock.now
    for offset in (0, 10, 20):
        clock.now = start + offset
        assert limiter.reserve(0) == 0.0

    # WHEN a 4th request comes at t=50 and may wait long enough
    clock.now = start + 50
    waited = limiter.reserve(max_wait_s=1_000)

    # THEN it waits exactly until the t=0 request leaves the window (t=300)
    assert waited == pytest.approx(250)
    assert clock.slept == [pytest.approx(250)]
    assert clock.now == pytest.approx(start + 300)

    # AND the 5th waits for the t=10 request in turn
    assert limiter.reserve(max_wait_s=1_000) == pytest.approx(10)
    assert clock.now == pytest.approx(start + 310)


def test_wait_exactly_equal_to_max_wait_is_allowed(clock):
    # GIVEN a full one-request window whose slot frees in 200 s
    limiter = RateLimiter(1, window_s=300)
    limiter.reserve(0)
    clock.now += 100

    # WHEN the caller may wait exactly 200 s
    waited = limiter.reserve(max_wait_s=200)

    # THEN it waits and gets the slot
    assert waited == 200.0


def test_returns_none_without_waiting_when_the_wait_exceeds_max_wait(clock):
    # GIVEN a full one-request window whose slot frees in 200 s
    limiter = RateLimiter(1, window_s=300)
    limiter.reserve(0)
    clock.now += 100

    # WHEN the caller may wait only 199 s
    result = limiter.reserve(max_wait_s=199)

    # THEN it gets no slot at once, rather than sleeping for nothing
    assert result is None
    assert clock.slept == []


def test_refused_request_takes_no_slot(clock):
    # GIVEN a one-request window, taken at t=0, and a refused attempt at t=100
    limiter = RateLimiter(1, window_s=300)
    start = clock.now
    limiter.reserve(0)
    clock.now = start + 100
    assert limiter.reserve(max_wait_s=10) is None

    # WHEN the first request leaves the window (t=300)
    clock.now = start + 300

    # THEN a slot is free right away: the refused attempt did not use one up
    assert limiter.seconds_until_free() == 0.0
    assert limiter.reserve(0) == 0.0


def test_many_refusals_do_not_use_up_the_budget(clock):
    # GIVEN a full 2-request window
    limiter = RateLimiter(2, window_s=60)
    limiter.reserve(0)
    limiter.reserve(0)

    # WHEN a hundred callers are refused
    refused = [limiter.reserve(0) for _ in range(100)]

    # THEN once the window passes, the full budget of 2 is available again
    assert refused == [None] * 100
    clock.now += 60
    assert [limiter.reserve(0) for _ in range(3)] == [0.0, 0.0, None]


def test_seconds_until_free(clock):
    # GIVEN a 2-per-300-s limiter
    limiter = RateLimiter(2, window_s=300)
    start = clock.now

    # WHEN nothing is taken
    # THEN a slot is free now
    assert limiter.seconds_until_free() == 0.0

    # WHEN one of two slots is taken
    limiter.reserve(0)
    # THEN a slot is still free now
    assert limiter.seconds_until_free() == 0.0

    # WHEN both are taken (the second at t=30)
    clock.now = start + 30
    limiter.reserve(0)
    # THEN the wait is until the first one expires, and shrinks as time passes
    assert limiter.seconds_until_free() == pytest.approx(270)
    clock.now = start + 100
    assert limiter.seconds_until_free() == pytest.approx(200)

    # WHEN the first one has expired
    clock.now = start + 300
    # THEN a slot is free again
    assert limiter.seconds_until_free() == 0.0


def test_seconds_until_free_takes_no_slot(clock):
    # GIVEN a one-request limiter with its slot free
    limiter = RateLimiter(1, window_s=300)

    # WHEN the wait is asked for several times
    for _ in range(3):
        assert limiter.seconds_until_free() == 0.0

    # THEN the slot is still there to take
    assert limiter.reserve(0) == 0.0


def test_concurrent_callers_get_exactly_the_limit_without_waiting(monkeypatch):
    # GIVEN a 10-request limiter and 40 threads released at the same moment
    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"a caller slept {seconds} s although it may not wait")

    monkeypatch.setattr(time, "sleep", no_sleep)
    limiter = RateLimiter(10, window_s=300)
    threads_count = 40
    start = threading.Barrier(threads_count)
    results: list[float | None] = []
    results_lock = threading.Lock()

    def worker() -> None:
        start.wait()
        for _ in range(5):
            result = limiter.reserve(0)
            with results_lock:
                results.append(result)

    # WHEN each thread tries 5 requests without waiting
    threads = [threading.Thread(target=worker) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    # THEN exactly 10 of the 200 attempts succeed, without waiting, and the rest are refused
    assert not any(thread.is_alive() for thread in threads)
    assert len(results) == 200
    assert results.count(0.0) == 10
    assert results.count(None) == 190
    assert limiter.seconds_until_free() > 0


def test_shared_limiter_is_one_instance_per_container(fresh_shared):
    # GIVEN the container-wide limiter for 1200 requests
    first = shared_limiter(1200)

    # WHEN it is asked for again with the same limit (another invocation)
    second = shared_limiter(1200)

    # THEN it is the same limiter, so both invocations share one budget
    assert second is first
    assert first.max_requests == 1200
    assert first.window_s == 300


def test_shared_limiter_budget_is_shared_between_callers(fresh_shared, clock):
    # GIVEN a container limit of 2 used once by one invocation
    assert shared_limiter(2).reserve(0) == 0.0

    # WHEN later invocations ask for slots
    second = shared_limiter(2).reserve(0)
    third = shared_limiter(2).reserve(0)

    # THEN only the remaining slot is left for them
    assert second == 0.0
    assert third is None


def test_shared_limiter_starts_fresh_when_the_limit_changes(fresh_shared, clock):
    # GIVEN the container limiter at 2 requests, fully used
    old = shared_limiter(2)
    old.reserve(0)
    old.reserve(0)
    assert old.reserve(0) is None

    # WHEN the configured limit changes to 3
    new = shared_limiter(3)

    # THEN a fresh limiter with the new limit and an empty window is used
    assert new is not old
    assert new.max_requests == 3
    assert [new.reserve(0) for _ in range(4)] == [0.0, 0.0, 0.0, None]

    # AND going back to the old limit starts fresh again rather than reviving it
    again = shared_limiter(2)
    assert again is not old
    assert again is not new
    assert again.reserve(0) == 0.0


# ------------------------------------------------------ Cloudflare's own budget


def sent_at(limiter: RateLimiter, clock: FakeClock, requests: int) -> list[float]:
    """When each of ``requests`` requests went out, each allowed to wait long enough."""
    times = []
    for _ in range(requests):
        assert limiter.reserve(max_wait_s=1_000) is not None
        times.append(clock.now)
    return times


def test_plenty_of_budget_left_sends_without_waiting(clock):
    # GIVEN Cloudflare reporting 500 of its 1200 requests left for the next 60 s
    limiter = RateLimiter(10_000)
    limiter.observe(500, 60, 1200)

    # WHEN 50 requests are made
    times = sent_at(limiter, clock, 50)

    # THEN none of them waited
    assert clock.slept == []
    assert set(times) == {1_000.0}


def test_a_low_budget_spreads_the_requests_left_until_the_reset(clock):
    # GIVEN Cloudflare reporting 9 requests left (under a tenth of its 1200) for 100 s
    limiter = RateLimiter(10_000)
    limiter.observe(9, 100, 1200)

    # WHEN more requests than that are made, each allowed to wait
    times = sent_at(limiter, clock, 11)

    # THEN the 9 it allows are spread evenly over the time to the reset, instead of
    # going out at once and hitting 429s
    gaps = [later - earlier for earlier, later in itertools.pairwise(times[:9])]
    assert gaps == pytest.approx([100 / 9] * 8)
    assert times[8] < 1_100
    # AND the next waits for the reset, after which the report no longer applies
    assert times[9] == pytest.approx(1_100)
    assert times[10] == times[9]


def test_no_budget_left_waits_until_the_reset(clock):
    # GIVEN Cloudflare reporting no request left for the next 30 s
    limiter = RateLimiter(10_000)
    limiter.observe(0, 30, 1200)

    # WHEN a request may wait up to a minute
    waited = limiter.reserve(max_wait_s=60)

    # THEN it goes out exactly at the reset
    assert waited == pytest.approx(30)
    assert clock.now == pytest.approx(1_030)


def test_no_budget_left_refuses_a_request_that_cannot_wait_for_the_reset(clock):
    # GIVEN Cloudflare reporting no request left for the next 30 s
    limiter = RateLimiter(10_000)
    limiter.observe(0, 30, 1200)

    # WHEN a request may wait only 10 s
    # THEN it is refused at once, and says how long until a slot frees up
    assert limiter.reserve(max_wait_s=10) is None
    assert clock.slept == []
    assert limiter.seconds_until_free() == pytest.approx(30)


@pytest.mark.parametrize(
    ("remaining", "quota", "waits"),
    [
        (21, 100, False),  # a tenth of 100 is under the floor of 20
        (20, 100, True),
        (121, 1200, False),  # a tenth of 1200
        (120, 1200, True),
        (21, None, False),  # no policy reported: the floor of 20
        (20, None, True),
    ],
    ids=["floor-at", "floor-below", "tenth-at", "tenth-below", "no-quota-at", "no-quota-below"],
)
def test_requests_slow_down_below_a_tenth_of_the_quota_or_20(clock, remaining, quota, waits):
    # GIVEN Cloudflare's report of the budget left for the next 60 s
    limiter = RateLimiter(10_000)
    limiter.observe(remaining, 60, quota)

    # WHEN two requests are made (the first one uses up one of the budget)
    sent_at(limiter, clock, 2)

    # THEN the second waits only when what is left is under max(20, a tenth of the quota)
    assert bool(clock.slept) is waits


def test_the_container_window_still_applies_with_budget_left(clock):
    # GIVEN a container limit of 2 requests per 300 s, and Cloudflare reporting plenty
    limiter = RateLimiter(2, window_s=300)
    limiter.observe(1000, 60, 1200)

    # WHEN three requests are made without waiting
    results = [limiter.reserve(0) for _ in range(3)]

    # THEN the container's own limit still refuses the third
    assert results == [0.0, 0.0, None]

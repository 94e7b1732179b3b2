"""The token bucket per principal (``shared/auth/ratelimit.py``), on an injected clock: exact, no sleep."""

from __future__ import annotations

import pytest

from shared.auth.ratelimit import RateLimiter, retry_after_header

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate_with_the_exact_wait() -> None:
    clock = Clock()
    limiter = RateLimiter(2.0, 3, clock=clock)
    assert [limiter.acquire("ana") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("ana") == pytest.approx(0.5)  # one token every 0.5 s
    assert limiter.acquire("bob") == 0.0  # principals do not share a bucket
    clock.now += 0.25
    assert limiter.acquire("ana") == pytest.approx(0.25)  # a refusal takes no token
    clock.now += 0.25
    assert limiter.acquire("ana") == 0.0
    clock.now += 60
    assert [limiter.acquire("ana") for _ in range(4)][-1] > 0  # banked tokens are capped at the burst


def test_idle_principals_are_forgotten_beyond_the_cap_with_a_full_bucket() -> None:
    clock = Clock()
    limiter = RateLimiter(1.0, 1, clock=clock, max_principals=2)
    assert limiter.acquire("a") == 0.0 and limiter.acquire("a") > 0
    limiter.acquire("b")
    limiter.acquire("c")  # "a" is the least recently used: dropped
    assert limiter.acquire("a") == 0.0
    assert len(limiter._buckets) == 2


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert [retry_after_header(w) for w in (0.01, 1.0, 1.2, 7.9)] == ["1", "1", "2", "8"]
    with pytest.raises(ValueError):
        RateLimiter(0, 1)

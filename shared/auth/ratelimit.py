"""Rate limits per principal: one token bucket each (``rate`` tokens per second, at most ``burst`` banked).

Written by hand (about 40 lines) rather than taken from a library: what the gateway needs is a
non-blocking "may this call go now, and if not, in how many seconds" (for ``Retry-After``) over an
injectable clock (so the tests are exact, with no sleeping). The libraries at hand either wait until a
token is free (aiolimiter, pyrate-limiter's blocking mode) or count fixed/moving windows (limits), which
allow twice the rate at a window boundary.

The buckets of principals not seen for a while are dropped (least recently used first beyond
``max_principals``), so a flood of distinct principals cannot grow memory without bound; a dropped
principal starts again with a full bucket, which is what an idle one would have had anyway. The limits are
per gateway replica: behind a load balancer the total is at most replicas x rate.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_principals: int = 100_000,
    ):
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate = rate_per_s
        self.burst = float(burst)
        self._clock = clock
        self._max = max_principals
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def acquire(self, principal: str) -> float:
        """Take one token for ``principal``: 0.0 when the call may go now, else the seconds until it may
        (no token is taken then)."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.pop(principal, None)
            if bucket is None:
                bucket = _Bucket(self.burst, now)
            else:
                bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
                bucket.at = now
            self._buckets[principal] = bucket  # most recently used last
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate


def retry_after_header(wait_s: float) -> str:
    """``Retry-After`` takes whole seconds; rounding up never invites a retry that is refused again."""
    return str(max(1, math.ceil(wait_s)))

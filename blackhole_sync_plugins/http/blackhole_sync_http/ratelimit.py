"""Bandwidth limiting and stall detection, with injectable clocks so tests are exact."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio

from blackhole_sync.errors import StallError

__all__ = ["StallDetector", "TokenBucket"]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class TokenBucket:
    """A token bucket of ``burst`` bytes refilled at ``rate`` bytes per second.

    :meth:`take` lets a caller go into debt (a chunk larger than the bucket still passes) and
    then sleeps until the debt is repaid, so the long-run rate is exactly ``rate``. Several
    fetches sharing one bucket share the rate.
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be > 0")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = burst
        self._last = clock()

    @property
    def tokens(self) -> float:
        """Tokens available now (negative while in debt)."""
        self._refill()
        return self._tokens

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def reserve(self, amount: int) -> float:
        """Take ``amount`` tokens now; return the seconds to wait before using them."""
        if amount < 0:
            raise ValueError("amount must be >= 0")
        self._refill()
        self._tokens -= amount
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    async def take(self, amount: int) -> float:
        """Take ``amount`` tokens, sleeping as long as the rate requires; return the wait."""
        delay = self.reserve(amount)
        if delay > 0:
            await self._sleep(delay)
        return delay


class StallDetector:
    """Abandons a source that delivers under ``min_rate`` bytes/s over ``window`` seconds.

    Call :meth:`record` after every read and :meth:`deadline` to bound how long a read may
    block; :meth:`check` raises :class:`StallError` once a whole window has passed below the
    rate. Time the client spends throttling itself is excluded with :meth:`pause`.
    """

    def __init__(self, min_rate: float, window: float, *, clock: Clock = time.monotonic) -> None:
        if window <= 0 or min_rate < 0:
            raise ValueError("window must be > 0 and min_rate >= 0")
        self.min_rate = min_rate
        self.window = window
        self._clock = clock
        self._start = clock()
        self._bytes = 0

    def deadline(self) -> float:
        """Seconds from now until the current window closes (>= 0)."""
        return max(0.0, self._start + self.window - self._clock())

    def pause(self, seconds: float) -> None:
        """Exclude ``seconds`` of self-imposed waiting from the current window."""
        self._start += seconds

    def record(self, amount: int) -> None:
        self._bytes += amount
        self.check()

    def check(self) -> None:
        now = self._clock()
        elapsed = now - self._start
        if elapsed < self.window:
            return
        if self._bytes < self.min_rate * elapsed:
            raise StallError(
                f"source sent {self._bytes} bytes in {elapsed:.1f}s, "
                f"below the minimum {self.min_rate:g} bytes/s"
            )
        self._start = now
        self._bytes = 0

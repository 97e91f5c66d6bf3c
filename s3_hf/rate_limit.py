"""Client-side request and token budgets (RPM/TPM) and a shared cool-down after 429s, for asyncio.

Requests are spaced evenly (``rpm / 60`` per second, never more than two at once) rather than sent in a burst at the
start of each minute, so a server enforcing the same limit over short windows is not tripped; tokens may burst
``burst_s`` seconds of budget (at least 5 s, so one large request always fits eventually). Tokens are reserved from an
estimate before a call and the difference is refunded from the real usage afterwards.

Example:

```python
>>> limiter = RateLimiter(rpm=600, tpm=100_000)
>>> # async: await limiter.acquire(tokens=300); ...call...; limiter.settle(reserved=300, used=120)
```
"""

from __future__ import annotations

import asyncio
import time
from collections import deque


class _Bucket:
    """A token bucket: ``rate`` units per second, holding at most ``capacity`` units."""

    def __init__(self, per_minute: float, burst_s: float | None, clock=time.monotonic):
        self.rate = per_minute / 60.0
        # requests: room for one request of timer overshoot, so late wake-ups do not lose budget; starts at one
        self.capacity = 2.0 if burst_s is None else max(1.0, self.rate * burst_s)
        self.level = 1.0 if burst_s is None else self.capacity
        self.clock = clock
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_time(self, amount: float) -> float:
        """Seconds until ``amount`` can be taken (a request above capacity waits for a full bucket)."""
        self._refill()
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount

    def give_back(self, amount: float) -> None:
        self._refill()
        self.level = min(self.capacity, self.level + amount)


class RateLimiter:
    """RPM/TPM budgets plus a cool-down shared by every caller, and adaptive pacing once the server says 429.

    After a 429 every caller pauses for the server's ``retry-after`` (one shared pause, not one retry per caller),
    and requests are from then on paced: 80% of the rate at the time of the 429, growing by about one request/s
    per second of successes (additive increase, multiplicative decrease), so a server whose limit is unknown is
    approached without a retry storm.

    Args:
        rpm: requests per minute (``None``: unlimited).
        tpm: tokens (prompt + completion) per minute (``None``: unlimited).
        burst_s: how many seconds of token budget may be spent at once (requests never burst).
    """

    def __init__(self, rpm: int | None = None, tpm: int | None = None, *, burst_s: float = 5.0):
        self.requests = _Bucket(rpm, None) if rpm else None
        self.tokens = _Bucket(tpm, max(burst_s, 5.0)) if tpm else None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._pause_until = 0.0
        self.cooldowns = 0
        self.waited_s = 0.0
        self.adaptive_rps: float | None = None
        self._last_decrease = 0.0
        self._next_send = 0.0
        self._sent: deque[float] = deque()

    def cool_down(self, seconds: float) -> None:
        """After a 429: pause every caller for ``seconds`` (overlapping pauses do not stack) and slow the pace.

        The pace drops to 80% of the lowest of: the current pace, the configured ``rpm``, and the send rate seen
        over the last second (when at least 5 sends); 429s answering one burst count once (at most one decrease per
        0.25 s). A lone 429 with nothing to go on only pauses.
        """
        now = time.monotonic()
        if self.adaptive_rps is None or now - self._last_decrease >= 0.25:
            recent = [t for t in self._sent if t > now - 1.0]
            span = max(now - recent[0], 0.25) if recent else 1.0  # a burst at start-up is not a rate over 1 ms
            rates = [len(recent) / span] if len(recent) >= 5 else []  # fewer sends say nothing about a rate
            if self.adaptive_rps is not None:
                rates.append(self.adaptive_rps)
            if self.requests is not None:
                rates.append(self.requests.rate)
            if rates:
                self.adaptive_rps = max(1.0, 0.8 * min(rates))
                self._last_decrease = now
        until = now + max(0.0, seconds)
        if until > self._pause_until:
            self._pause_until = until
            self.cooldowns += 1

    def on_success(self) -> None:
        """A call succeeded: let the adaptive pace grow by about one request/s per second."""
        if self.adaptive_rps is not None:
            self.adaptive_rps += 1.0 / self.adaptive_rps

    @property
    def paused_for(self) -> float:
        return max(0.0, self._pause_until - time.monotonic())

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until a request costing about ``tokens`` fits the budgets and no cool-down is active, then take it."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:  # one lock per event loop (generate() runs several)
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:  # FIFO: callers are served in arrival order
            while True:
                delay = self.paused_for
                if self.adaptive_rps is not None:
                    delay = max(delay, self._next_send - time.monotonic())
                if self.requests is not None:
                    delay = max(delay, self.requests.wait_time(1))
                if self.tokens is not None and tokens:
                    delay = max(delay, self.tokens.wait_time(tokens))
                if delay <= 0:
                    break
                self.waited_s += delay
                await asyncio.sleep(delay)
            if self.requests is not None:
                self.requests.take(1)
            if self.tokens is not None and tokens:
                self.tokens.take(tokens)
            now = time.monotonic()
            if self.adaptive_rps is not None:
                self._next_send = max(now, self._next_send) + 1.0 / self.adaptive_rps
            self._sent.append(now)
            while self._sent and self._sent[0] < now - 1.0:
                self._sent.popleft()

    def settle(self, *, reserved: int, used: int | None) -> None:
        """Refund (or charge) the difference between the reserved estimate and the real usage of a call."""
        if self.tokens is None or used is None:
            return
        diff = reserved - used
        if diff > 0:
            self.tokens.give_back(diff)
        elif diff < 0:
            self.tokens.take(-diff)


def estimate_tokens(messages: list[dict[str, str]] | str, max_tokens: int) -> int:
    """A rough upper estimate of a call's tokens: ~4 characters per prompt token, plus ``max_tokens``."""
    if isinstance(messages, str):
        chars = len(messages)
    else:
        chars = sum(len(m.get("content") or "") + 8 for m in messages)
    return chars // 4 + 1 + max_tokens

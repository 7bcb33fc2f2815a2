"""Bounded retries for network calls: exponential backoff with full jitter over a time budget.

One helper for every network source (git now; blob stores, OCI registries and webhooks later):

```
policy = RetryPolicy.from_settings(ctx.settings)        # CONVEYOR_NETWORK_RETRY_SECONDS
for attempt in attempts(policy, on_retry=log):          # attempt 1 at once
    try:
        return call_the_server()
    except Transient as exc:
        last = exc                                       # loop on: sleep, then try again
raise last                                               # the budget is spent
```

or simply ``call(call_the_server, policy=policy, retry_if=is_transient)``.

The protocol:

- the first attempt starts at once; the *budget* (seconds) is measured from its start;
- after attempt ``n`` fails, the wait is drawn uniformly from ``[0, min(cap, base * 2**(n-1))]``
  ("full jitter", so many clients that failed together do not come back together), and clipped to
  what is left of the budget: a last attempt starts at the deadline at the latest;
- no attempt starts after the deadline, nor beyond ``max_attempts``; a budget of 0 means one try.

The budget bounds when attempts *start*: an attempt already running is bounded by its own timeout.
`TryLimits.for_budget` gives those timeouts, and the tries a client library may make itself, so
that a hung endpoint (it accepts the connection and never answers) costs about the budget too:
each request waits at most ``connect`` seconds to connect and ``read`` seconds *without
receiving a byte* (a transfer that keeps moving is never cut off), and the library tries
``tries`` times (``tries * read`` is about the budget, at least one try).
The clock, the sleep and the random source are parameters, so tests run in no time.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from conveyor.errors import ConfigError
from conveyor.settings import Settings

__all__ = ["DEFAULT_BUDGET", "Attempt", "RetryPolicy", "TryLimits", "attempts", "call"]

T = TypeVar("T")

DEFAULT_BUDGET: float = Settings.network_retry_seconds
"""Seconds a network call is retried for, unless ``CONVEYOR_NETWORK_RETRY_SECONDS`` says else."""


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often to retry: ``budget`` seconds, waits from ``base`` doubling to
    ``cap`` (each drawn with full jitter), at most ``max_attempts`` attempts."""

    budget: float = DEFAULT_BUDGET
    base: float = 0.5
    cap: float = 10.0
    max_attempts: int = 100

    def __post_init__(self) -> None:
        for name in ("budget", "base", "cap"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"retry {name} must be a finite number >= 0, not {value!r}")
        if self.max_attempts < 1:
            raise ConfigError(f"retry max_attempts must be >= 1, not {self.max_attempts}")

    @classmethod
    def from_settings(cls, settings: Settings | None) -> RetryPolicy:
        """The policy for network calls: ``settings.network_retry_seconds`` as the budget."""
        if settings is None:
            return cls()
        return cls(budget=settings.network_retry_seconds)

    def wait_limit(self, failed: int) -> float:
        """The longest wait after attempt ``failed`` (1-based): ``min(cap, base * 2**(n-1))``."""
        return float(min(self.cap, self.base * 2.0 ** min(failed - 1, 62)))


@dataclass(frozen=True)
class TryLimits:
    """The bounds of one request to a network service, from a retry budget: ``connect`` and
    ``read`` timeouts (seconds; ``read`` is the longest wait for the next bytes, not for the
    whole transfer) and ``tries``, the attempts the client library makes on its own."""

    connect: float
    read: float
    tries: int

    MIN_CONNECT: ClassVar[float] = 3.0
    MAX_CONNECT: ClassVar[float] = 10.0
    MIN_READ: ClassVar[float] = 5.0
    MAX_READ: ClassVar[float] = 60.0
    MAX_TRIES: ClassVar[int] = 5

    @classmethod
    def for_budget(cls, budget: float) -> TryLimits:
        """A third of ``budget`` per wait (within ``[MIN_*, MAX_*]``), and as many tries as fill
        the budget (1 to ``MAX_TRIES``): a hung endpoint fails after about ``max(budget, 5)``
        seconds, a budget of 0 makes one try."""
        third = budget / 3
        connect = min(max(third, cls.MIN_CONNECT), cls.MAX_CONNECT)
        read = min(max(third, cls.MIN_READ), cls.MAX_READ)
        tries = max(1, min(cls.MAX_TRIES, math.ceil(budget / read)))
        return cls(connect=connect, read=read, tries=tries)

    @classmethod
    def from_settings(cls, settings: Settings | None) -> TryLimits:
        """The limits for ``CONVEYOR_NETWORK_RETRY_SECONDS`` (the default without settings)."""
        return cls.for_budget(RetryPolicy.from_settings(settings).budget)


@dataclass(frozen=True)
class Attempt:
    """One attempt: its number (from 1), seconds since the first started, and the wait before."""

    number: int
    elapsed: float
    delay: float


def attempts(
    policy: RetryPolicy,
    *,
    on_retry: Callable[[int, float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    jitter: Callable[[], float] = random.random,
) -> Iterator[Attempt]:
    """Yield attempt 1 at once and, each time the caller asks for another (it did not break out
    of the loop), wait a jittered backoff and yield the next, until the budget is spent.

    ``on_retry(number, delay)`` is called before each wait (to log it); ``jitter`` returns a float
    in ``[0, 1)``.
    """
    start = clock()
    deadline = start + policy.budget
    number, delay = 1, 0.0
    while True:
        yield Attempt(number=number, elapsed=clock() - start, delay=delay)
        remaining = deadline - clock()
        if remaining <= 0 or number >= policy.max_attempts:
            return
        delay = min(jitter() * policy.wait_limit(number), remaining)
        number += 1
        if on_retry is not None:
            on_retry(number, delay)
        sleep(delay)


def call(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    retry_if: Callable[[Exception], bool],
    on_retry: Callable[[int, float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    jitter: Callable[[], float] = random.random,
) -> T:
    """``fn()``, tried again while it raises an exception ``retry_if`` calls transient and the
    budget lasts; the last exception is raised when it is spent, any other one at once."""
    last: Exception | None = None
    for _attempt in attempts(policy, on_retry=on_retry, clock=clock, sleep=sleep, jitter=jitter):
        try:
            return fn()
        except Exception as exc:
            if not retry_if(exc):
                raise
            last = exc
    assert last is not None  # the loop yields at least once, and only ends after a failure
    raise last

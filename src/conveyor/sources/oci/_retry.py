"""A tiny local stand-in for the shared backoff helper (``conveyor._retry``, being written
elsewhere): call a function, and on a retryable error try again after an exponential, jittered
delay, a bounded number of times. Replace with ``conveyor._retry`` once it lands; same shape."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["retry_call"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def retry_call(
    func: Callable[[], T],
    *,
    retry_on: Callable[[BaseException], bool],
    attempts: int = 4,
    first_delay: float = 0.2,
    max_delay: float = 2.0,
    what: str = "request",
) -> T:
    """``func()``; retried up to ``attempts`` times in all while ``retry_on(error)`` is true."""
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return func()
        except Exception as exc:
            if attempt == attempts or not retry_on(exc):
                raise
            pause = delay * (0.5 + random.random() / 2)
            logger.info("retrying %s attempt=%d delay=%.2fs error=%s", what, attempt, pause, exc)
            time.sleep(pause)
            delay = min(delay * 2, max_delay)
    raise AssertionError("unreachable")  # pragma: no cover

"""Registry calls retried through the shared backoff (`conveyor._retry`): a bounded number of
attempts, jittered exponential waits, within the network retry budget."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from conveyor._retry import DEFAULT_BUDGET, RetryPolicy, call

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
    budget: float = DEFAULT_BUDGET,
    what: str = "request",
) -> T:
    """``func()``; tried up to ``attempts`` times in all (within ``budget`` seconds) while
    ``retry_on(error)`` is true."""
    policy = RetryPolicy(budget=budget, base=first_delay, cap=max_delay, max_attempts=attempts)

    def log(number: int, delay: float) -> None:
        logger.info("retrying %s attempt=%d delay=%.2fs", what, number, delay)

    return call(func, policy=policy, retry_if=retry_on, on_retry=log)

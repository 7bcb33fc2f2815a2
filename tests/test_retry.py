"""`conveyor._retry`: exponential backoff with full jitter over a deadline, on a fake clock; and
``CONVEYOR_NETWORK_RETRY_SECONDS``."""

from __future__ import annotations

import math

import pytest

from conveyor._retry import DEFAULT_BUDGET, Attempt, RetryPolicy, TryLimits, attempts, call
from conveyor.errors import ConfigError
from conveyor.settings import Settings


class FakeTime:
    """A clock that only moves when slept on (plus what an attempt itself takes)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def run(
    policy: RetryPolicy, *, jitter: float = 1.0, took: float = 0.0
) -> tuple[list[Attempt], FakeTime]:
    """Fail every attempt (each taking ``took`` seconds) until the helper gives up."""
    fake = FakeTime()
    seen = []
    for attempt in attempts(policy, clock=fake.clock, sleep=fake.sleep, jitter=lambda: jitter):
        seen.append(attempt)
        fake.now += took
    return seen, fake


def test_waits_double_up_to_the_cap_and_stop_at_the_deadline() -> None:
    seen, fake = run(RetryPolicy(budget=30, base=0.5, cap=8), jitter=0.999999)

    # the longest waits: 0.5, 1, 2, 4, 8, 8, then what is left of the 30 s
    assert [round(s, 3) for s in fake.sleeps] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 6.5]
    assert [a.number for a in seen] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert seen[0] == Attempt(number=1, elapsed=0.0, delay=0.0)
    assert seen[-1].elapsed == pytest.approx(30.0)  # the last attempt starts at the deadline
    assert fake.now - 100.0 == pytest.approx(30.0)


def test_full_jitter_draws_each_wait_below_its_limit() -> None:
    _, fake = run(RetryPolicy(budget=30, base=0.5, cap=8), jitter=0.25)
    limits = [0.5, 1, 2, 4, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8]
    assert fake.sleeps[:5] == [0.25 * limit for limit in limits[:5]]
    assert sum(fake.sleeps) == pytest.approx(30.0)  # it still retries until the budget is spent


def test_time_spent_in_attempts_counts_against_the_budget() -> None:
    seen, fake = run(RetryPolicy(budget=10, base=1, cap=1), took=4.0)
    # attempts take 4 s each, waits 1 s: starts at 0, 5, 10; none after the deadline
    assert [round(a.elapsed, 3) for a in seen] == [0.0, 5.0, 10.0]
    assert fake.sleeps == [1.0, 1.0]


def test_a_budget_of_zero_tries_once() -> None:
    seen, fake = run(RetryPolicy(budget=0))
    assert [a.number for a in seen] == [1]
    assert fake.sleeps == []


def test_max_attempts_bounds_the_loop_even_when_time_stands_still() -> None:
    seen, fake = run(RetryPolicy(budget=30, max_attempts=5), jitter=0.0)
    assert len(seen) == 5
    assert fake.sleeps == [0.0] * 4


def test_on_retry_hears_each_attempt_and_its_wait_before_it_sleeps() -> None:
    fake = FakeTime()
    heard: list[tuple[int, float, int]] = []
    policy = RetryPolicy(budget=2, base=1, cap=1)
    for _ in attempts(
        policy,
        clock=fake.clock,
        sleep=fake.sleep,
        jitter=lambda: 0.5,
        on_retry=lambda n, d: heard.append((n, d, len(fake.sleeps))),
    ):
        pass
    assert heard == [(2, 0.5, 0), (3, 0.5, 1), (4, 0.5, 2), (5, 0.5, 3)]


def test_call_retries_transient_errors_and_returns_the_value() -> None:
    fake = FakeTime()
    outcomes: list[Exception | str] = [ConnectionError("down"), TimeoutError("slow"), "ok"]

    def flaky() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    result = call(
        flaky,
        policy=RetryPolicy(budget=30),
        retry_if=lambda exc: isinstance(exc, OSError),
        clock=fake.clock,
        sleep=fake.sleep,
        jitter=lambda: 1.0,
    )
    assert result == "ok"
    assert fake.sleeps == [0.5, 1.0]


def test_call_raises_a_permanent_error_at_once_and_the_last_transient_one_at_the_end() -> None:
    fake = FakeTime()

    def refused() -> None:
        raise PermissionError("no")

    with pytest.raises(PermissionError):
        call(refused, policy=RetryPolicy(), retry_if=lambda e: False, sleep=fake.sleep)
    assert fake.sleeps == []

    count = 0

    def down() -> None:
        nonlocal count
        count += 1
        raise ConnectionError(f"down {count}")

    with pytest.raises(ConnectionError, match=r"^down 4$"):
        call(
            down,
            policy=RetryPolicy(budget=3, base=1, cap=1),
            retry_if=lambda e: isinstance(e, ConnectionError),
            clock=fake.clock,
            sleep=fake.sleep,
            jitter=lambda: 1.0,
        )
    assert fake.sleeps == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "kwargs",
    [{"budget": -1}, {"budget": math.nan}, {"base": math.inf}, {"cap": -0.5}, {"max_attempts": 0}],
)
def test_a_policy_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="retry"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_the_budget_comes_from_the_settings() -> None:
    assert RetryPolicy.from_settings(None).budget == DEFAULT_BUDGET == 30.0
    assert Settings.from_env({}).network_retry_seconds == 30.0
    settings = Settings.from_env({"CONVEYOR_NETWORK_RETRY_SECONDS": "2.5"})
    assert RetryPolicy.from_settings(settings) == RetryPolicy(budget=2.5)
    assert Settings.from_env({"CONVEYOR_NETWORK_RETRY_SECONDS": "0"}).network_retry_seconds == 0


@pytest.mark.parametrize("text", ["soon", "-1", "nan", "inf", "1e999"])
def test_a_bad_retry_setting_is_one_clear_error(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"CONVEYOR_NETWORK_RETRY_SECONDS": text})
    assert str(caught.value) == (
        f"CONVEYOR_NETWORK_RETRY_SECONDS {text!r} is not a number of seconds"
    )
    assert caught.value.hint == "write it like 30 or 2.5 (0: off)"


@pytest.mark.parametrize(
    ("budget", "connect", "read", "tries"),
    [
        (0, 3.0, 5.0, 1),  # one try, and still time to answer
        (3, 3.0, 5.0, 1),
        (12, 4.0, 5.0, 3),  # tries * read covers the budget: no try of Conveyor's starts after
        (30, 10.0, 10.0, 3),  # the default
        (300, 10.0, 60.0, 5),
        (3600, 10.0, 60.0, 5),  # capped: a hung endpoint never waits more than 5 minutes a try
    ],
)
def test_per_request_limits_come_from_the_budget(
    budget: float, connect: float, read: float, tries: int
) -> None:
    limits = TryLimits.for_budget(budget)
    assert (limits.connect, limits.read, limits.tries) == (connect, read, tries)
    settings = Settings.from_env({"CONVEYOR_NETWORK_RETRY_SECONDS": str(budget)})
    assert TryLimits.from_settings(settings) == limits

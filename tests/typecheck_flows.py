"""Checked by mypy --strict in test_flows_typing.py (not collected by pytest): a decorated
function keeps its signature for type checkers."""

from __future__ import annotations

from collections.abc import Callable
from typing import assert_type

from conveyor import Flow, Task, flow, task


@flow
def bare(x: int, y: str = "a") -> list[str]:
    return [y] * x


@flow(name="configured", retries=2, retry_delay_seconds=[1, 2], timeout_seconds=5)
def configured(*, n: int) -> float:
    return n / 2


@task(log_prints=True)
def step(value: bytes) -> int:
    return len(value)


@flow
async def asynchronous(n: int) -> int:
    return n


as_callable: Callable[[int, str], list[str]] = bare
as_flow: Flow[[int, str], list[str]] = bare
as_task: Task[[bytes], int] = step
assert_type(bare(2), list[str])
assert_type(bare(2, y="b"), list[str])
assert_type(configured(n=3), float)
assert_type(step(b"abc"), int)


async def awaits() -> None:
    assert_type(await asynchronous(1), int)


assert_type(bare.name, str)
assert_type(bare.version, str | None)
assert_type(bare.fn(1, "x"), list[str])
assert_type(bare.with_options(retries=1)(3), list[str])

bare("not an int")  # type: ignore[arg-type]
bare(1, 2)  # type: ignore[arg-type]
configured(3)  # type: ignore[call-arg]
step(value="str")  # type: ignore[arg-type]
flow(retries="2")  # type: ignore[call-overload]

"""How a flow or task call is carried out in-process: retries with a delay, a timeout, and prints
sent to the ``conveyor.flow_runs`` logger.

**Retries.** A call that raises an `Exception` (a timeout included) is tried again up to
``retries`` more times, sleeping ``retry_delay_seconds`` between attempts (a sequence gives one
delay per retry, its last value reused). `KeyboardInterrupt` and `SystemExit` are never retried.

**Timeouts.** On the main thread of a POSIX process a sync call is interrupted for real: an
interval timer (``signal.setitimer`` + ``SIGALRM``) raises inside the function when its deadline
passes, nested deadlines (a task inside a flow) included. Elsewhere (another thread, Windows, or a
program that uses ``SIGALRM`` itself) the call runs in a daemon thread that is abandoned at the
deadline: the caller gets `FlowTimeout` on time, but the function keeps running in the background
until it returns. A worker enforces timeouts for real by killing the child process that runs the
flow. Coroutine functions use ``asyncio.timeout``.

**log_prints.** ``True`` sends every line printed to ``sys.stdout`` during the call to the
``conveyor.flow_runs`` logger at INFO (and, when no logging handler is configured at all, also to
the original stdout, so prints are never lost); ``False`` restores the real stdout inside a
``log_prints`` caller; ``None`` (the default) inherits whatever the caller does.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

from conveyor.errors import ConfigError, FlowTimeout

__all__ = ["RUN_LOGGER_NAME", "Delay", "RunPolicy", "call_async", "call_sync"]

logger = logging.getLogger(__name__)

RUN_LOGGER_NAME = "conveyor.flow_runs"
run_logger = logging.getLogger(RUN_LOGGER_NAME)

T = TypeVar("T")

Delay = float | Sequence[float]


@dataclass(frozen=True)
class RunPolicy:
    """What to do around one call of a flow or task."""

    kind: str  # "flow" or "task"
    name: str
    retries: int = 0
    retry_delay_seconds: float | tuple[float, ...] = 0.0
    timeout_seconds: float | None = None
    log_prints: bool | None = None

    @classmethod
    def checked(
        cls,
        kind: str,
        name: str,
        *,
        retries: int,
        retry_delay_seconds: Delay,
        timeout_seconds: float | None,
        log_prints: bool | None,
    ) -> RunPolicy:
        """A policy from decorator options, each checked (a `ConfigError` names the bad one)."""
        return cls(
            kind=kind,
            name=name,
            retries=_check_retries(kind, name, retries),
            retry_delay_seconds=_check_delay(kind, name, retry_delay_seconds),
            timeout_seconds=_check_timeout(kind, name, timeout_seconds),
            log_prints=log_prints,
        )

    def delay(self, retry: int) -> float:
        """Seconds to sleep before retry number ``retry`` (1-based)."""
        delays = self.retry_delay_seconds
        if isinstance(delays, tuple):
            return delays[min(retry, len(delays)) - 1] if delays else 0.0
        return delays

    def timed_out(self) -> FlowTimeout:
        return FlowTimeout(
            f"{self.kind} {self.name!r} timed out after {self.timeout_seconds:g}s",
            hint=f"raise timeout_seconds on the {self.kind}, or make it faster",
        )


def call_sync(
    fn: Callable[..., T], args: tuple[Any, ...], kwargs: Mapping[str, Any], policy: RunPolicy
) -> T:
    """Call ``fn`` under ``policy``: retries, timeout, log_prints."""
    attempts = policy.retries + 1
    for attempt in range(1, attempts + 1):
        try:
            with _prints(policy):
                if policy.timeout_seconds is None:
                    return fn(*args, **kwargs)
                return _call_with_timeout(fn, args, kwargs, policy, policy.timeout_seconds)
        except Exception as exc:
            if attempt >= attempts:
                raise
            _sleep_before_retry(policy, attempt, exc, time.sleep)
    raise AssertionError("unreachable")  # pragma: no cover


async def call_async(
    fn: Callable[..., Coroutine[Any, Any, T]],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    policy: RunPolicy,
) -> T:
    """`call_sync` for a coroutine function."""
    import asyncio

    attempts = policy.retries + 1
    for attempt in range(1, attempts + 1):
        try:
            with _prints(policy):
                if policy.timeout_seconds is None:
                    return await fn(*args, **kwargs)
                deadline = asyncio.timeout(policy.timeout_seconds)
                try:
                    async with deadline:
                        return await fn(*args, **kwargs)
                except TimeoutError:
                    if deadline.expired():
                        raise policy.timed_out() from None
                    raise
        except Exception as exc:
            if attempt >= attempts:
                raise
            delay = _sleep_before_retry(policy, attempt, exc, None)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _sleep_before_retry(
    policy: RunPolicy, attempt: int, exc: Exception, sleep: Callable[[float], None] | None
) -> float:
    delay = policy.delay(attempt)
    run_logger.warning(
        "%s attempt failed name=%s attempt=%d/%d retry_in=%gs error=%s",
        policy.kind,
        policy.name,
        attempt,
        policy.retries + 1,
        delay,
        type(exc).__name__,
        extra={"conveyor_kind": policy.kind, "conveyor_name": policy.name},
    )
    if sleep is not None and delay > 0:
        sleep(delay)
    return delay


def _check_retries(kind: str, name: str, retries: int) -> int:
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"{kind} {name!r}: retries must be a whole number >= 0, got {retries!r}")
    return retries


def _check_delay(kind: str, name: str, delay: Delay) -> float | tuple[float, ...]:
    values = list(delay) if isinstance(delay, Sequence) else [delay]
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(
                f"{kind} {name!r}: retry_delay_seconds must be seconds >= 0, got {delay!r}",
                hint="pass a number, or a list of numbers (one per retry)",
            )
    return tuple(float(v) for v in values) if isinstance(delay, Sequence) else float(delay)


def _check_timeout(kind: str, name: str, timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError(f"{kind} {name!r}: timeout_seconds must be > 0, got {timeout!r}")
    return float(timeout)


# --- log_prints ---------------------------------------------------------------------------------


class _PrintLogger(io.TextIOBase):
    """A stand-in for ``sys.stdout`` that turns each printed line into a log record."""

    def __init__(self, policy: RunPolicy, original: Any) -> None:
        super().__init__()
        self.policy = policy
        self.original = original
        self._pending = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            lines = self._pending.split("\n")
            self._pending = lines.pop()
        for line in lines:
            self._emit(line)
        return len(text)

    def finish(self) -> None:
        """Emit a last line printed without a newline."""
        with self._lock:
            line, self._pending = self._pending, ""
        if line:
            self._emit(line)

    def _emit(self, line: str) -> None:
        extra = {"conveyor_kind": self.policy.kind, "conveyor_name": self.policy.name}
        run_logger.info("%s", line, extra=extra)
        if not run_logger.hasHandlers():
            self.original.write(line + "\n")


@contextlib.contextmanager
def _prints(policy: RunPolicy) -> Iterator[None]:
    current = sys.stdout
    if policy.log_prints is None:
        yield
    elif policy.log_prints:
        original = current.original if isinstance(current, _PrintLogger) else current
        writer = _PrintLogger(policy, original)
        try:
            with contextlib.redirect_stdout(writer):
                yield
        finally:
            writer.finish()
    elif isinstance(current, _PrintLogger):
        with contextlib.redirect_stdout(current.original):
            yield
    else:
        yield


# --- timeouts -----------------------------------------------------------------------------------


class _Deadline(BaseException):
    """Raised by the SIGALRM handler inside the running function.

    A BaseException, so that a bare ``except Exception`` in user code cannot swallow it.
    """

    def __init__(self, token: object) -> None:
        super().__init__("deadline")
        self.token = token


# (deadline on the monotonic clock, token): outermost first. Main thread only.
_scopes: list[tuple[float, object]] = []


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    now = time.monotonic()
    for deadline, token in _scopes:
        if deadline <= now + 0.0005:
            raise _Deadline(token)
    _arm()  # woke up early: wait for the nearest deadline


def _arm() -> None:
    if _scopes:
        remaining = min(deadline for deadline, _ in _scopes) - time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, max(remaining, 0.0005))
    else:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _alarm_usable() -> bool:
    if (
        not hasattr(signal, "setitimer")
        or threading.current_thread() is not threading.main_thread()
    ):
        return False
    handler = signal.getsignal(signal.SIGALRM)
    if _scopes:
        return handler is _on_alarm
    idle = signal.getitimer(signal.ITIMER_REAL)[0] == 0
    return idle and handler in (signal.SIG_DFL, signal.SIG_IGN, None)


def _call_with_timeout(
    fn: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    policy: RunPolicy,
    seconds: float,
) -> T:
    if _alarm_usable():
        return _call_with_alarm(fn, args, kwargs, policy, seconds)
    return _call_in_thread(fn, args, kwargs, policy, seconds)


def _call_with_alarm(
    fn: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    policy: RunPolicy,
    seconds: float,
) -> T:
    token = object()
    entry = (time.monotonic() + seconds, token)
    outermost = not _scopes
    previous = signal.signal(signal.SIGALRM, _on_alarm) if outermost else None
    _scopes.append(entry)
    try:
        try:
            _arm()
            return fn(*args, **kwargs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            _scopes.remove(entry)
            if outermost:
                signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)
            else:
                _arm()
    except _Deadline as exc:
        if exc.token is not token:
            raise  # an enclosing flow's deadline: let it unwind to its owner
        raise policy.timed_out() from None


def _call_in_thread(
    fn: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    policy: RunPolicy,
    seconds: float,
) -> T:
    outcome: dict[str, Any] = {}
    context = contextvars.copy_context()

    def target() -> None:
        try:
            outcome["value"] = context.run(fn, *args, **kwargs)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(
        target=target, name=f"conveyor-{policy.kind}-{policy.name}", daemon=True
    )
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        logger.warning(
            "timeout abandons a thread kind=%s name=%s seconds=%g",
            policy.kind,
            policy.name,
            seconds,
        )
        raise policy.timed_out()
    if "error" in outcome:
        raise outcome["error"]
    value: T = outcome["value"]
    return value

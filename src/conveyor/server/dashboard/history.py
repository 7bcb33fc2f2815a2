"""What a run page derives from a run: its state history, the phase-timing bar, an error hint."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from conveyor.schemas import Run, RunState

__all__ = ["Event", "Segment", "hint_for", "history", "timing_bar"]

PHASES = ("queue", "fetch", "workspace", "start", "run")
"""The phases a worker reports, in order (others it may add come after, by name)."""


@dataclass(frozen=True)
class Event:
    at: datetime
    state: str
    attempt: int
    note: str = ""


def history(run: Run) -> list[Event]:
    """Every state change the run's timestamps and attempts record, oldest first."""
    events = [Event(run.created, RunState.SCHEDULED.value, 1, "created")]
    recorded = {a.attempt for a in run.attempts}
    for attempt in run.attempts:
        if attempt.attempt > 1:
            events.append(
                Event(attempt.pending_at or attempt.ended_at, "scheduled", attempt.attempt, "retry")
            )
        if attempt.pending_at:
            events.append(
                Event(attempt.pending_at, "pending", attempt.attempt, _by(attempt.worker))
            )
        if attempt.running_at:
            events.append(Event(attempt.running_at, "running", attempt.attempt))
        events.append(
            Event(attempt.ended_at, attempt.state.value, attempt.attempt, attempt.error or "")
        )
    if run.attempt not in recorded:
        if run.attempt > 1 and run.scheduled_at:
            events.append(Event(run.scheduled_at, "scheduled", run.attempt, "retry"))
        if run.pending_at:
            events.append(Event(run.pending_at, "pending", run.attempt, _by(run.worker)))
        if run.running_at:
            events.append(Event(run.running_at, "running", run.attempt))
        if run.ended_at and run.state.is_final:
            events.append(Event(run.ended_at, run.state.value, run.attempt, run.error or ""))
    return sorted(events, key=lambda e: (e.at, e.attempt))


def _by(worker: str | None) -> str:
    return f"claimed by {worker}" if worker else ""


@dataclass(frozen=True)
class Segment:
    phase: str
    seconds: float
    x: float
    """Start, in percent of the bar."""
    width: float
    """Width, in percent of the bar."""


def timing_bar(timings: dict[str, float]) -> list[Segment]:
    """The run's phases as consecutive segments of a 100% bar (empty when nothing was timed)."""
    ordered = [p for p in PHASES if p in timings] + sorted(set(timings) - set(PHASES))
    values = [(p, max(float(timings[p]), 0.0)) for p in ordered]
    total = sum(v for _, v in values)
    if total <= 0:
        return []
    segments, x = [], 0.0
    for phase, seconds in values:
        width = 100.0 * seconds / total
        segments.append(Segment(phase, seconds, round(x, 3), round(width, 3)))
        x += width
    return segments


_HINTS = (
    (
        "stopped renewing its lease",
        "the worker died or lost the server; check `conveyor workers ls`",
    ),
    ("timed out", "raise the flow's timeout_seconds, or make the flow faster"),
    (
        "cannot be decrypted",
        "start the server with the secret key it used when the secret was stored",
    ),
    ("not found", "check that the deployment's source still holds this version"),
)


def hint_for(run: Run, logged: str | None) -> str | None:
    """The hint for a failed run: the one its worker logged, else one for a known error."""
    if logged:
        return logged
    if not run.error or run.state not in (RunState.FAILED, RunState.CRASHED):
        return None
    for marker, hint in _HINTS:
        if marker in run.error:
            return hint
    return "see the run's logs below for the traceback"

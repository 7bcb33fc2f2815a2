"""`WorkerOptions`: every option of a worker, with its one default and its help, in one place.

`conveyor worker start` (Typer, with help and checks) builds a `WorkerOptions` and replaces
itself with ``python -m conveyor.worker --options JSON`` (`WorkerOptions.to_argv`); that lean
entry point also accepts each option as a flag, with a parser generated from this table
(`parser`), for running it by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from conveyor.errors import ConfigError
from conveyor.settings import DEFAULT_LEASE_SECONDS

__all__ = ["WorkerOptions", "parser"]


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class WorkerOptions:
    """How one worker runs (see `conveyor.worker.loop.Worker`)."""

    pool: str = field(default="default", metadata=_help("Work pool to claim runs from."))
    limit: int = field(default=1, metadata=_help("Runs executed at the same time."))
    labels: tuple[str, ...] = field(
        default=(), metadata=_help("Worker label (repeatable); the host name is always added.")
    )
    burst: bool = field(default=False, metadata=_help("Exit once the pool is empty."))
    name: str | None = field(default=None, metadata=_help("Worker name (default: <host>-<pid>)."))
    max_runs: int | None = field(default=None, metadata=_help("Exit after this many runs."))
    lease_seconds: float = field(
        default=DEFAULT_LEASE_SECONDS,
        metadata=_help("How long a claim lasts without a heartbeat."),
    )
    poll_seconds: float = field(
        default=2.0, metadata=_help("Long-poll length when the pool is empty.")
    )
    shutdown_timeout: float = field(
        default=30.0, metadata=_help("On SIGTERM, how long running runs may finish.")
    )
    work_dir: Path | None = field(
        default=None,
        metadata=_help("Where run workspaces go (default: $CONVEYOR_HOME/work)."),
    )
    run_as: str | None = field(
        default=None,
        metadata=_help(
            "Run flows (and pull-step commands) as this user; the worker must be started as "
            "root, its home and cache become private to it."
        ),
    )
    workspace: str = field(
        default="auto",
        metadata=_help(
            "How a run's code directory is made: overlay (a mount of the cached checkout; a "
            "worker that is not root mounts it in a user namespace of its own), links (hard "
            "links to its sealed files; needs --run-as), copy; auto picks the cheapest this "
            "worker can use."
        ),
    )
    in_process: bool = field(
        default=False,
        metadata=_help("Run flows on a thread of the worker (debugging: no isolation)."),
    )
    debug: bool = field(default=False, metadata=_help("Debug logs and tracebacks."))

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ConfigError(f"--limit must be at least 1, not {self.limit}")
        if self.max_runs is not None and self.max_runs < 1:
            raise ConfigError(f"--max-runs must be at least 1, not {self.max_runs}")
        if not (0.5 <= self.lease_seconds <= 86_400):
            raise ConfigError("--lease-seconds must be between 0.5 and 86400")
        if not (0 <= self.poll_seconds <= 60):
            raise ConfigError("--poll-seconds must be between 0 and 60")
        if self.shutdown_timeout < 0:
            raise ConfigError("--shutdown-timeout must be >= 0")
        if self.workspace not in ("auto", "overlay", "links", "copy"):
            raise ConfigError(
                f"--workspace {self.workspace!r} is not a workspace mode",
                hint="one of auto, overlay, links, copy",
            )

    def to_json(self) -> str:
        data = asdict(self)
        data["labels"] = list(self.labels)
        data["work_dir"] = None if self.work_dir is None else str(self.work_dir.absolute())
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WorkerOptions:
        data: dict[str, Any] = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown worker options: {', '.join(unknown)}")
        data["labels"] = tuple(data.get("labels") or ())
        if data.get("work_dir") is not None:
            data["work_dir"] = Path(data["work_dir"])
        return cls(**data)

    def to_argv(self) -> list[str]:
        """The ``python -m conveyor.worker`` command line for these options."""
        return [sys.executable, "-m", "conveyor.worker", "--options", self.to_json()]


def parser() -> argparse.ArgumentParser:
    """``python -m conveyor.worker``'s parser, generated from `WorkerOptions`."""
    p = argparse.ArgumentParser(prog="python -m conveyor.worker")
    p.add_argument("--options", help="every option as JSON (what `conveyor worker start` passes)")
    for f in fields(WorkerOptions):
        flag = "--" + ("label" if f.name == "labels" else f.name.replace("_", "-"))
        help_text = f.metadata.get("help")
        if f.type in ("bool", bool):
            p.add_argument(flag, dest=f.name, action="store_true", default=None, help=help_text)
        elif f.name == "labels":
            p.add_argument(flag, dest=f.name, action="append", default=None, help=help_text)
        else:
            kind = {"int | None": int, "int": int, "float": float, "Path | None": Path}.get(
                str(f.type), str
            )
            p.add_argument(flag, dest=f.name, type=kind, default=None, help=help_text)
    return p


def from_argv(argv: list[str] | None) -> WorkerOptions:
    """The options of a ``python -m conveyor.worker`` command line."""
    args = vars(parser().parse_args(argv))
    text = args.pop("options")
    base = WorkerOptions.from_json(text) if text else WorkerOptions()
    given = {k: v for k, v in args.items() if v is not None}
    if "labels" in given:
        given["labels"] = tuple(given["labels"])
    if not given:
        return base
    data = {**{f.name: getattr(base, f.name) for f in fields(WorkerOptions)}, **given}
    return WorkerOptions(**data)

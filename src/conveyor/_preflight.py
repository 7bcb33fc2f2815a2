"""Deploy's preflight: load the flow in a fresh interpreter, from the code tree alone.

`Preflight(root, entrypoint).start()` spawns ``python -m conveyor.worker.child --describe ROOT
ENTRYPOINT`` (the same child entry point a worker runs flows with), so the user's module is
imported exactly as a worker will import it, and whatever the import does stays out of the
deploying process. `Preflight.result` waits for its one JSON line and returns a `FlowInfo`, or
raises `FlowLoadError` with the child's one-line error.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.errors import FlowLoadError

__all__ = ["PREFLIGHT_TIMEOUT_SECONDS", "FlowInfo", "Preflight"]

logger = logging.getLogger(__name__)

PREFLIGHT_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class FlowInfo:
    """What the preflight learnt about the flow."""

    flow_name: str
    parameter_schema: dict[str, Any]
    retries: int = 0
    retry_delay_seconds: float = 0.0
    timeout_seconds: float | None = None
    description: str = ""


class Preflight:
    """Loading the flow at ``entrypoint`` under ``root`` in a child interpreter."""

    def __init__(self, root: Path, entrypoint: str, *, python: str | None = None) -> None:
        self.root = root
        self.entrypoint = entrypoint
        self.python = python or sys.executable
        """The interpreter that loads it (a run environment's, when the deployment has one)."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = 0.0

    def start(self) -> Preflight:
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        self._started = time.monotonic()
        self._proc = subprocess.Popen(
            [
                self.python,
                "-B",
                "-m",
                "conveyor.worker.child",
                "--describe",
                str(self.root),
                self.entrypoint,
            ],
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        return self

    def cancel(self) -> None:
        """Stop the child (the deploy failed for another reason)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.communicate()

    def result(self, *, timeout: float = PREFLIGHT_TIMEOUT_SECONDS) -> FlowInfo:
        if self._proc is None:
            self.start()
        assert self._proc is not None
        try:
            out, err = self._proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.cancel()
            raise FlowLoadError(
                f"loading flow {self.entrypoint} took longer than {timeout:g}s",
                hint="does the module do slow work at import time?",
            ) from None
        logger.debug(
            "preflight done entrypoint=%s seconds=%.3f",
            self.entrypoint,
            time.monotonic() - self._started,
        )
        answer = _last_json_line(out)
        if answer is None:
            tail = err.decode(errors="replace").strip().splitlines()
            why = tail[-1] if tail else f"exit status {self._proc.returncode}"
            raise FlowLoadError(f"flow {self.entrypoint} could not be loaded: {why}")
        if "error" in answer:
            raise FlowLoadError(
                f"flow {self.entrypoint} could not be loaded: {answer['error']}",
                hint=answer.get("hint") or None,
            )
        return FlowInfo(
            flow_name=str(answer["flow_name"]),
            parameter_schema=dict(answer.get("parameter_schema") or {}),
            retries=int(answer.get("retries") or 0),
            retry_delay_seconds=float(answer.get("retry_delay_seconds") or 0.0),
            timeout_seconds=answer.get("timeout_seconds"),
            description=str(answer.get("description") or ""),
        )


def _last_json_line(out: bytes) -> dict[str, Any] | None:
    for line in reversed(out.decode(errors="replace").strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None

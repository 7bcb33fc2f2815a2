"""``python -m conveyor._preflight ROOT ENTRYPOINT``: load a flow in a fresh interpreter.

Deploy time runs this in a child process, so the user's module is imported exactly as a worker
will import it (from the code tree alone, nothing from the deploying process), and whatever the
import does stays out of the deploying process. It prints one JSON object on stdout::

    {"flow_name": ..., "parameter_schema": {...}, "retries": 0, "retry_delay_seconds": 0.0,
     "timeout_seconds": null, "description": ""}

or, when the flow cannot be loaded, ``{"error": "<one line>"}`` and exits with status 1.
Byte-code is not written (``-B``): the tree may be a read-only checkout.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["describe_flow", "main"]


def describe_flow(root: Path, entrypoint: str) -> dict[str, Any]:
    """What a deployment needs to know about the flow at ``entrypoint`` under ``root``."""
    from conveyor.flows import load_flow

    flow = load_flow(entrypoint, root=root)
    delay = flow.retry_delay_seconds
    if isinstance(delay, tuple):  # one delay per retry: the deployment keeps the first
        delay = delay[0] if delay else 0.0
    return {
        "flow_name": flow.name,
        "parameter_schema": flow.parameter_schema(),
        "retries": flow.retries,
        "retry_delay_seconds": float(delay),
        "timeout_seconds": flow.timeout_seconds,
        "description": flow.description or "",
    }


def _one_line(exc: BaseException) -> str:
    from conveyor.errors import ConveyorError

    if isinstance(exc, ConveyorError):
        return exc.message
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(json.dumps({"error": "usage: python -m conveyor._preflight ROOT ENTRYPOINT"}))
        return 2
    sys.dont_write_bytecode = True
    root, entrypoint = Path(args[0]), args[1]
    try:
        with contextlib.redirect_stdout(sys.stderr):  # what the module prints is not our answer
            info = describe_flow(root, entrypoint)
            text = json.dumps(info)
    except BaseException as exc:  # anything the user's import does is reported, not raised
        hint = getattr(exc, "hint", None)
        print(json.dumps({"error": _one_line(exc), "hint": hint}))
        return 1
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

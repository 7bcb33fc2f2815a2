"""The ``conveyor`` process (the script and ``python -m conveyor``): the command line, with the
cyclic garbage collector arranged for a process that is usually short.

The collector stays off for the first second: a quick command spends most of it importing
(long-lived objects that the collector would walk again and again, ~50 ms on two cores) and
leaves little garbage; a command that runs longer (a worker, a server, a watch) gets it back after
that second. What the command leaves alive goes with the process, so it is moved out of the
collector's reach at the end: the interpreter's shutdown would otherwise collect the whole heap
(SQLAlchemy, pydantic, Typer: ~0.1 s, a quarter of a quick command). Exit handlers still run and
the standard streams are still flushed; commands close what they open themselves.

Only a process's own entry does this: `conveyor.cli.main`, which tests and other programs call
in their own process, leaves the collector alone.
"""

from __future__ import annotations

import gc
import threading

from conveyor._collector import pause

__all__ = ["COLLECTOR_OFF_S", "main"]

COLLECTOR_OFF_S = 1.0
"""How long the collector stays off at the start of a command."""


def main() -> int:
    """Run the command line in this process, which ends after it; returns the exit code."""
    release = pause()  # one pause among others (a cache fill's): see conveyor._collector
    collector_back = threading.Timer(COLLECTOR_OFF_S, release)
    collector_back.daemon = True
    collector_back.start()
    try:
        from conveyor.cli import main as command_line

        code = command_line()
    finally:
        collector_back.cancel()
        release()
    gc.freeze()
    return code

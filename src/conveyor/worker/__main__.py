"""``python -m conveyor.worker --options JSON`` (or one flag per option): the worker process.

`conveyor worker start` checks its options and replaces itself (``exec``, same PID) with this
entry point, so the long-running worker does not keep the command line's libraries (typer, rich,
click) in memory. It imports only the client, the cache and the worker loop; against an HTTP
server it never imports the server. A worker that is not root first enters a user namespace of
its own where it can (`conveyor.worker.executors.userns`), for overlay workspaces.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    from conveyor.errors import ConveyorError
    from conveyor.worker.options import from_argv

    try:
        options = from_argv(argv)
    except ConveyorError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    # httpx's optional command line pulls click, rich and pygments in (~7 MB) at import time;
    # the worker never uses it. A None entry makes that optional import fail cleanly.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    from conveyor._logging import configure

    configure(
        debug=options.debug,
        worker=True,
        fmt="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    if options.workspace in ("auto", "overlay") and not options.in_process:
        _own_namespace()

    from conveyor.connect import connect
    from conveyor.settings import Settings
    from conveyor.worker.loop import Worker

    try:
        settings = Settings.from_env()
        with connect(settings) as client:
            worker = Worker.from_settings(settings, client, options)
            return worker.work(burst=options.burst, max_runs=options.max_runs)
    except ConveyorError as exc:
        if options.debug:
            raise
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 1


def _own_namespace() -> None:
    """A worker that is not root enters a user and mount namespace of its own, where it can
    mount overlay workspaces (`conveyor.worker.executors.userns`); now, before any thread."""
    import os

    if os.geteuid() == 0:
        return
    from conveyor.worker.executors.userns import enter

    why_not = enter()
    if why_not is None:
        logging.getLogger(__name__).info("worker in a user namespace of its own (overlay mounts)")
    else:
        logging.getLogger(__name__).info("no user namespace of its own: %s", why_not)


if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m conveyor.worker --pool NAME ...``: the worker process itself.

`conveyor worker start` parses its options and replaces itself (``exec``, same PID) with this
entry point, so the long-running worker does not keep the command line's libraries (typer, rich,
click) in memory. It imports only the client, the cache and the worker loop; against an HTTP
server it never imports the server or FastAPI.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="conveyor worker start", description=__doc__)
    p.add_argument("--pool", default="default", help="the work pool to claim runs from")
    p.add_argument("--limit", type=int, default=1, help="runs executed at the same time")
    p.add_argument("--label", action="append", default=[], help="a label (repeatable)")
    p.add_argument("--burst", action="store_true", help="exit once the pool is empty")
    p.add_argument("--name", default=None, help="worker name (default: <host>-<pid>)")
    p.add_argument("--max-runs", type=int, default=None, help="exit after this many runs")
    p.add_argument("--lease-seconds", type=float, default=30.0, help="lease length")
    p.add_argument("--poll-seconds", type=float, default=2.0, help="long-poll length")
    p.add_argument("--shutdown-timeout", type=float, default=30.0, help="drain time on SIGTERM")
    p.add_argument("--work-dir", type=Path, default=None, help="where run workspaces go")
    p.add_argument("--debug", action="store_true", help="debug logs and tracebacks")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # httpx's optional command line pulls click, rich and pygments in (~7 MB) at import time;
    # the worker never uses it. A None entry makes that optional import fail cleanly.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.debug:
        for noisy in ("httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)

    from conveyor.client import ConveyorClient
    from conveyor.errors import ConveyorError
    from conveyor.settings import Settings
    from conveyor.worker.loop import Worker

    try:
        settings = Settings.from_env()
        with ConveyorClient.from_settings(settings) as client:
            worker = Worker.from_settings(
                settings,
                client,
                pool=args.pool,
                name=args.name,
                labels=args.label,
                limit=args.limit,
                lease_seconds=args.lease_seconds,
                poll_seconds=args.poll_seconds,
                shutdown_timeout=args.shutdown_timeout,
                work_dir=args.work_dir,
            )
            return worker.work(burst=args.burst, max_runs=args.max_runs)
    except ConveyorError as exc:
        if args.debug:
            raise
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())

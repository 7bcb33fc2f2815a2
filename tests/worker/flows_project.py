"""The flow project the worker tests deploy and run: one file of small, deliberately odd flows."""

from __future__ import annotations

from pathlib import Path

FLOWS = """
from __future__ import annotations

import datetime
import logging
import os
import pathlib
import signal
import subprocess
import sys
import time

from helpers import shout

from conveyor import flow

log = logging.getLogger("user")


@flow
def hello(name: str = "world") -> str:
    print(f"hello {name}")
    log.info("logged %s", name)
    print("on stderr", file=sys.stderr)
    return shout(f"hello {name}")


@flow
def boom() -> None:
    raise ValueError("kaboom")


class Point:
    def __init__(self, x: int) -> None:
        self.x = x


@flow
def point(x: int = 1) -> Point:
    return Point(x)


@flow
def pair() -> tuple[int, int]:
    return (1, 2)


@flow
def sleepy(seconds: float = 30.0, marker: str = "") -> str:
    if marker:
        pathlib.Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)
    return "slept"


@flow
def stubborn(marker: str) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pathlib.Path(marker).write_text(str(os.getpid()))
    time.sleep(60)


@flow
def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@flow
def exits() -> None:
    sys.exit(3)


@flow
def on_date(day: datetime.date) -> str:
    return f"{type(day).__name__}:{day.isoformat()}"


@flow
def dated(
    at: datetime.datetime,
    day: datetime.date = datetime.date(2024, 1, 1),
    clock: datetime.time | None = None,
) -> str:
    values = [at, day] + ([clock] if clock is not None else [])
    return " ".join(f"{type(v).__name__}:{v.isoformat()}" for v in values)


@flow
def write_files() -> str:
    pathlib.Path("new.txt").write_text("written by the flow")
    pathlib.Path("data.txt").write_text("changed by the flow")
    return str(pathlib.Path.cwd())


@flow
def env(name: str) -> str | None:
    return os.environ.get(name)


@flow(timeout_seconds=1)
def polite_timeout() -> None:
    time.sleep(30)


@flow(timeout_seconds=1)
def deaf_timeout() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(30)


@flow
def grandchild(marker: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    pathlib.Path(marker).write_text(str(proc.pid))


@flow
def waits_on_grandchild(marker: str) -> int:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    pathlib.Path(marker).write_text(str(proc.pid))
    return proc.wait()


@flow
def sibling_in_subprocess() -> str:
    code = "import helpers; print(helpers.shout('from a subprocess'))"
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True)
    return out.stdout.strip() or out.stderr.strip()


@flow
async def doubled(x: int = 2) -> int:
    return x * 2


@flow
def append_run_id(path: str) -> None:
    with open(path, "a") as out:  # O_APPEND: concurrent small writes do not interleave
        out.write(os.environ["CONVEYOR_RUN_ID"] + "\\n")


@flow(retries=1)
def marked_sleep(seconds: float, log: str) -> int:
    attempt = int(os.environ["CONVEYOR_RUN_ATTEMPT"])
    with open(log, "a") as out:
        out.write(f"start {attempt} {os.getpid()}\\n")
    print(f"attempt {attempt} sleeping {seconds}s")
    time.sleep(seconds)
    with open(log, "a") as out:
        out.write(f"end {attempt}\\n")
    return attempt


@flow
def chatty(lines: int = 500) -> int:
    for i in range(lines):
        print(f"line {i}")
    return lines


@flow
def ledger(path: str, lines: int = 5) -> int:
    with open(path, "a") as out:  # one line per execution
        out.write(f"run {os.environ['CONVEYOR_RUN_ATTEMPT']}\\n")
    for i in range(lines):
        print(f"ledger line {i}", flush=True)
    return lines


@flow(retries=1)
def gated(path: str, gate: str, lines: int = 5) -> int:
    attempt = os.environ["CONVEYOR_RUN_ATTEMPT"]
    with open(path, "a") as out:  # start and end of each execution
        out.write(f"start {attempt}\\n")
    print("gated line 0", flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.05)
    for i in range(1, lines):
        print(f"gated line {i}", flush=True)
    with open(path, "a") as out:
        out.write(f"end {attempt}\\n")
    return lines
"""

HELPERS = """
def shout(text: str) -> str:
    return text.upper()
"""


def write_project(root: Path) -> Path:
    """Write the flow project into ``root`` (created); returns it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "flows.py").write_text(FLOWS.lstrip())
    (root / "helpers.py").write_text(HELPERS.lstrip())
    (root / "data.txt").write_text("original")
    return root

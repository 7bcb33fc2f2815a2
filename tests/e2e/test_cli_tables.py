"""Tables keep every column and header: piped, nothing is cut; in a narrow terminal, every header
stays readable and long cells fold instead of disappearing."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e2e.conftest import command_env, conveyor, ok
from worker.flows_project import write_project

pytestmark = pytest.mark.slow

LONG_NAME = "always-fails-with-a-rather-long-name"
LONG_POOL = "pool-with-quite-a-long-name"


def _in_terminal(*args: str, env: dict[str, str], cwd: Path, timeout: float = 60) -> str:
    """What ``conveyor ARGS`` prints to a terminal (a pseudo-terminal as its stdout)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.DEVNULL,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 0.5)[0]:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the command exited and closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


@pytest.fixture
def deployed(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    env = command_env(COLUMNS="80")
    project = write_project(tmp_path / "project")
    ok(conveyor("pool", "create", LONG_POOL, env=env, cwd=project))
    ok(conveyor("deploy", "flows.py:hello", "--name", "demo", env=env, cwd=project))
    ok(
        conveyor(
            "deploy",
            "flows.py:hello",
            "--name",
            LONG_NAME,
            "--pool",
            LONG_POOL,
            env=env,
            cwd=project,
        )
    )
    ok(conveyor("run", f"hello/{LONG_NAME}", env=env, cwd=project))
    return project, env


TABLES = {
    ("deployments", "versions", "hello/demo"): (
        "revision",
        "version",
        "entrypoint",
        "source",
        "created",
    ),
    ("deployments", "ls"): ("deployment", "revision", "version", "source", "pool", "updated"),
    ("runs", "ls"): ("run", "deployment", "state", "try", "worker", "created", "duration"),
    ("pool", "ls"): ("name", "type", "description", "created"),
}


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _header_cells(out: str) -> list[str]:
    line = next(line for line in out.splitlines() if line.startswith("┃"))
    return [cell.strip() for cell in line.strip("┃").split("┃")]


def test_piped_tables_keep_every_column_and_every_value_whole(
    deployed: tuple[Path, dict[str, str]],
) -> None:
    project, env = deployed
    with_json = ok(
        conveyor("deployments", "versions", "hello/demo", "--json", env=env, cwd=project)
    )
    store_url = str(json.loads(with_json)[0]["source"]["url"])

    for args, headers in TABLES.items():
        out = ok(conveyor(*args, env=env, cwd=project))
        assert _header_cells(out) == list(headers), out
    assert store_url in ok(conveyor("deployments", "versions", "hello/demo", env=env, cwd=project))
    listing = ok(conveyor("deployments", "ls", env=env, cwd=project))
    assert f"hello/{LONG_NAME}" in listing
    assert LONG_POOL in listing
    assert f"hello/{LONG_NAME}" in ok(conveyor("runs", "ls", env=env, cwd=project))


def test_a_narrow_terminal_keeps_every_header_and_folds_long_cells(
    deployed: tuple[Path, dict[str, str]],
) -> None:
    project, env = deployed

    for args, headers in TABLES.items():
        out = _ANSI.sub("", _in_terminal(*args, env=env, cwd=project)).replace("\r", "")
        assert _header_cells(out) == list(headers), out
        assert all(len(line) <= 80 for line in out.splitlines()), out
    runs = _ANSI.sub("", _in_terminal("runs", "ls", env=env, cwd=project))
    folded = "".join(line.split("│")[2].strip() for line in runs.splitlines() if "│" in line)
    assert f"hello/{LONG_NAME}" in folded, runs

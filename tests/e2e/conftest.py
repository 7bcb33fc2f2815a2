"""End-to-end helpers: the real ``conveyor`` command line in subprocesses, real servers, real
workers, all on loopback, each stopped by its PID.

``PYTHONDONTWRITEBYTECODE`` is dropped from the subprocesses' environment: with it, every
``python -m conveyor`` recompiles all its imports (seconds per command on this machine).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from conveyor.client import ConveyorClient
from conveyor.connect import connect
from conveyor.schemas import Run
from conveyor.settings import Settings
from fixtures.ports import wait_until
from worker.flows_project import write_project

_SCRUB = (
    "PYTHONDONTWRITEBYTECODE",
    "CONVEYOR_API_URL",
    "CONVEYOR_API_KEY",
    "CONVEYOR_DATABASE_URL",
)


def command_env(**values: str | None) -> dict[str, str]:
    """This test's environment (isolated by ``isolate``) for a subprocess, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    for key, value in values.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def conveyor(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m conveyor ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The stdout of a command that must have succeeded."""
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The ``error: ...`` line of a command that must have failed cleanly (no traceback)."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0].removeprefix("error: ")


@dataclass
class Background:
    """A long-running command (a server, a worker), its output in a file, stopped by PID."""

    proc: subprocess.Popen[bytes]
    log: Path
    _out: IO[bytes] | None = field(default=None, repr=False)

    @classmethod
    def start(cls, args: list[str], *, env: dict[str, str], log: Path) -> Background:
        out = log.open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        return cls(proc=proc, log=log, _out=out)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, *, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig`` and wait; SIGKILL if it does not exit in ``timeout`` seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._out is not None:
            self._out.close()
            self._out = None
        return self.proc.returncode

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)


_LISTENING = re.compile(r"listening on (http://\S+)")


@dataclass
class Server:
    """``conveyor server start`` on a loopback port."""

    url: str
    port: int
    env: dict[str, str]
    process: Background

    @classmethod
    def start(cls, env: dict[str, str], *, log: Path, port: int = 0) -> Server:
        process = Background.start(
            ["server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env, log=log
        )
        found: list[str] = []

        def listening() -> bool:
            match = _LISTENING.search(process.output())
            if match:
                found.append(match.group(1))
            return bool(match) or process.proc.poll() is not None

        if not wait_until(listening, timeout=30) or not found:
            process.stop()
            raise AssertionError(f"server did not start:\n{process.output()}")
        url = found[0]
        server = cls(url=url, port=int(url.rsplit(":", 1)[1]), env=env, process=process)
        assert wait_until(server.healthy, timeout=10), process.output()
        return server

    def healthy(self) -> bool:
        settings = Settings.from_env({**self.env, "CONVEYOR_API_URL": self.url})
        try:
            with connect(settings, retries=0, timeout=2) as api:
                return api.health().get("status") == "ok"
        except Exception:
            return False

    def start_again(self) -> None:
        """Start a stopped server again on the same port and database."""
        fresh = Server.start(self.env, log=self.process.log.with_suffix(".2.log"), port=self.port)
        self.process = fresh.process

    def stop(self) -> None:
        self.process.stop()


def server_env(home: Path, **values: str) -> dict[str, str]:
    """A server's environment with its own home (for servers shared by a module's tests)."""
    return command_env(HOME=str(home), CONVEYOR_HOME=str(home / ".conveyor"), **values)


def api(env: dict[str, str]) -> ConveyorClient:
    """An in-test client with the same settings as the commands of ``env``."""
    return connect(Settings.from_env(env))


def wait_for_run(
    client: ConveyorClient, run_id: str, *, timeout: float = 60, final: bool = True
) -> Run:
    """The run once it is final (or once ``timeout`` passes: the caller asserts its state)."""
    deadline = time.monotonic() + timeout
    while True:
        run = client.get_run(run_id)
        if (final and run.state.is_final) or time.monotonic() > deadline:
            return run
        time.sleep(0.05)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "project")


@pytest.fixture
def background(tmp_path: Path) -> Iterator[Any]:
    """Start long-running commands; every one still running is stopped after the test."""
    started: list[Background] = []

    def start(*args: str, env: dict[str, str], name: str = "proc") -> Background:
        process = Background.start(list(args), env=env, log=tmp_path / f"{name}-{len(started)}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop(sig=signal.SIGKILL)
    unmount_under(tmp_path)


def unmount_under(root: Path) -> None:
    """Take down the mounts a SIGKILLed worker left under ``root`` (a root worker's overlay
    workspaces are in this machine's mount namespace), deepest first, so that the test's
    directory can be removed; a worker that is not root leaves none."""
    top = str(root.resolve())
    mounts = [
        line.split()[4].replace("\\040", " ")
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
    ]
    for point in sorted((m for m in mounts if m.startswith(top + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=30, check=False)

"""Starting a run's child process (`spawn`), and starting it early (`GatedChild`).

`spawn` starts the child in its own session with the log pipe (``CONVEYOR_LOG_FD``) and, unless
``stream_output`` is off, its stdout and stderr piped, and pumps all three into the run's logs.
A pump waits while the run's logs are full (`conveyor.worker.logs`: backpressure), so a child
that prints faster than its lines are sent blocks on its full pipe; once it has exited
(`Spawned.kill`), the pumps stop waiting and queue what is left in the pipes.

A `GatedChild` is the same child started before the run's code is ready: while the worker checks
the checkout against its version and makes the workspace, the child starts its interpreter and
imports Conveyor's own modules (a warm run's longest step), then waits at its gate
(`conveyor.worker.child`). It is started with ``python -P`` in the control directory and without
the workspace on ``PYTHONPATH``, so it can load nothing of the run before the worker opens the
gate with where to work, what to put first on ``sys.path`` and the rest of its environment: the
bytes it runs are still only the ones checked. `GatedChild.discard` kills it (the steps failed,
the run was taken away, or it needs another interpreter).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.worker import child as child_protocol
from conveyor.worker.logs import RunLogs, pump_lines, pump_records

__all__ = ["GatedChild", "Spawned", "child_env", "spawn"]

logger = logging.getLogger(__name__)

PUMP_JOIN_SECONDS = 5.0


@dataclass
class Spawned:
    """A started child and the threads pumping its output into the run's logs."""

    proc: subprocess.Popen[bytes]
    pumps: list[threading.Thread] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    """Set once the child is gone: the pumps no longer wait for room in the run's logs."""
    lifeline: int | None = None
    """The worker's end of the child's lifeline (`child.LIFELINE_FD_ENV`): closed by `kill`,
    or by the kernel when the worker dies, and the child's process group goes with it."""

    def kill(self) -> None:
        """SIGKILL its session (whatever it started too) and wait for it and the pumps."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        if self.lifeline is not None:
            os.close(self.lifeline)
            self.lifeline = None
        self.done.set()
        for pump in self.pumps:
            pump.join(PUMP_JOIN_SECONDS)


def child_env(env: Mapping[str, str], *, workspace: Path, cwd: Path | None) -> dict[str, str]:
    """``env`` (the run's, already without worker settings) as the child gets it: the
    workspace first on ``PYTHONPATH`` (the flow's own subprocesses import its modules too),
    unbuffered output, and the import root when the working directory is elsewhere."""
    out = dict(env)
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(workspace), env.get("PYTHONPATH", "")) if p)
    out["PYTHONUNBUFFERED"] = "1"
    if cwd is not None and cwd != workspace:
        out[child_protocol.CODE_ROOT_ENV] = str(workspace)
    return out


def spawn(
    argv: list[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    logs: RunLogs,
    stream_output: bool,
    popen: Mapping[str, Any],
    stdin: int = subprocess.DEVNULL,
) -> Spawned:
    """Start ``argv`` in its own session with the log pipe, pumping its output into ``logs``."""
    read_fd, write_fd = os.pipe()
    life_read, life_write = os.pipe()  # both close on exec: only the child gets its end
    full = {
        **env,
        child_protocol.LOG_FD_ENV: str(write_fd),
        child_protocol.WORKER_PID_ENV: str(os.getpid()),
        child_protocol.LIFELINE_FD_ENV: str(life_read),
    }
    output = subprocess.PIPE if stream_output else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=full,
            stdin=stdin,
            stdout=output,
            stderr=output,
            pass_fds=(write_fd, life_read),
            start_new_session=True,
            **popen,
        )
    except BaseException:
        os.close(read_fd)
        os.close(life_write)
        raise
    finally:
        os.close(write_fd)
        os.close(life_read)
    records = os.fdopen(read_fd, "rb")
    done = threading.Event()
    pumps = [threading.Thread(target=pump_records, args=(records, logs), kwargs={"done": done})]
    for stream, level, pipe in (
        ("stdout", "INFO", proc.stdout),
        ("stderr", "WARNING", proc.stderr),
    ):
        if pipe is not None:
            pumps.append(
                threading.Thread(
                    target=pump_lines,
                    args=(pipe, logs),
                    kwargs={"stream": stream, "level": level, "done": done},
                )
            )
    for thread in pumps:
        thread.daemon = True
        thread.start()
    return Spawned(proc, pumps, done, lifeline=life_write)


class GatedChild:
    """A run's child started before its code is ready, waiting at its gate (module docstring)."""

    def __init__(self, spawned: Spawned, *, code: Path, env: Mapping[str, str]) -> None:
        self.spawned = spawned
        self.code = code
        """The workspace's code directory the child was started for."""
        self.env = dict(env)
        """The environment the child would get if started now (set at the gate)."""
        self.done = False

    @classmethod
    def start(
        cls,
        *,
        python: str,
        control: Path,
        code: Path,
        env: Mapping[str, str],
        logs: RunLogs,
        stream_output: bool,
        popen: Mapping[str, Any],
    ) -> GatedChild:
        """Start the child for a run whose code will be at ``code`` (its working directory
        too); ``env`` is the run's environment (see `child_env`)."""
        later = child_env(env, workspace=code, cwd=None)
        now = {**later, "PYTHONPATH": env.get("PYTHONPATH", "")}
        if not now["PYTHONPATH"]:
            del now["PYTHONPATH"]
        argv = [python, "-P", "-m", child_protocol.__name__, child_protocol.GATE_ARG, str(control)]
        spawned = spawn(
            argv,
            env=now,
            cwd=control,
            logs=logs,
            stream_output=stream_output,
            popen=popen,
            stdin=subprocess.PIPE,
        )
        return cls(spawned, code=code, env=later)

    def open(self, *, cwd: Path) -> Spawned | None:
        """Let the child run the flow from ``cwd`` (the code directory or below it); None when
        it is gone already (the caller starts another)."""
        self.done = True
        env = {"PYTHONPATH": self.env["PYTHONPATH"]}
        if cwd != self.code:
            env[child_protocol.CODE_ROOT_ENV] = str(self.code)
        gate = {"cwd": str(cwd), "path": [str(cwd), str(self.code)], "env": env}
        stdin = self.spawned.proc.stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps(gate).encode() + b"\n")
            stdin.close()
        except OSError as exc:  # it died waiting (killed, or its interpreter failed)
            logger.warning("gated child gone before its gate opened error=%s", exc)
            self.spawned.kill()
            return None
        return self.spawned

    def discard(self) -> None:
        """Kill the child: it will not run (idempotent)."""
        if self.done:
            return
        self.done = True
        stdin = self.spawned.proc.stdin
        if stdin is not None:
            with contextlib.suppress(OSError):
                stdin.close()
        self.spawned.kill()

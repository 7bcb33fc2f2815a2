"""What a flow's child process can reach: a scrubbed environment, and (``--run-as``) another user.

Every process a run starts — the flow's child and the commands of its pull steps — gets the
worker's environment *without* Conveyor's own variables (`child_environ`): no ``CONVEYOR_HOME``,
``CONVEYOR_SECRET_KEY``, ``CONVEYOR_API_KEY``, ``CONVEYOR_DATABASE_URL``, ``CONVEYOR_CACHE_DIR``
or any other ``CONVEYOR_*`` name, so a flow is not told where the cache, the database or the
worker's credentials are (the run's own ``CONVEYOR_RUN_ID`` etc. are added back by the worker).
``${NAME}`` templates of a deployment resolve against the same scrubbed environment, so a
deployment cannot ask for the worker's key either.

A worker started as root with ``--run-as USER`` (`RunAs`) runs each child as that user: its
uid, primary gid and supplementary groups are set in the child before ``exec``
(``subprocess.Popen(user=, group=, extra_groups=)``; the working directory is entered first). The
run's code and control directories are handed to the user (`RunAs.give`); the worker's home and
cache are made private to the worker (`make_private`: no group or other access), and workspaces
go under a directory the user can traverse but not list (`work_base`). `RunAs.check` starts one
child as the user at worker start, so an interpreter or a work directory the user cannot reach is
a clear error then, not a failed run later.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import stat
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor._jobvars import child_environ
from conveyor.errors import ConfigError

__all__ = ["TRAVERSABLE", "RunAs", "make_private", "work_base"]

logger = logging.getLogger(__name__)

TRAVERSABLE = 0o711
"""Directories on the way to a ``--run-as`` workspace: others may pass through, not list."""


@dataclass(frozen=True)
class RunAs:
    """The user flows run as: name, uid, primary gid, every group of the user, home."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    @classmethod
    def lookup(cls, name: str) -> RunAs:
        """The user ``name`` (or a numeric uid); `ConfigError` unless this process is root and
        the user exists and is not root."""
        try:
            entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
        except (KeyError, ValueError):
            raise ConfigError(
                f"--run-as: no user {name!r} on this machine",
                hint="create one, e.g. `useradd --system --no-create-home conveyor-run`",
            ) from None
        if entry.pw_uid == 0:
            raise ConfigError("--run-as root isolates nothing", hint="name an unprivileged user")
        if os.geteuid() != 0:
            raise ConfigError(
                "--run-as needs a worker started as root (only root can switch users)",
                hint="start the worker as root, or leave out --run-as",
            )
        groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, entry.pw_gid))))
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir)

    def popen(self) -> dict[str, Any]:
        """``subprocess.Popen`` arguments that switch the child to this user (every group set:
        an empty list would leave root's groups in place)."""
        return {"user": self.uid, "group": self.gid, "extra_groups": list(self.groups)}

    def environ(self, env: Mapping[str, str], *, workspace: Path) -> dict[str, str]:
        """``env`` with this user's ``HOME`` (the workspace when the home does not exist),
        ``USER`` and ``LOGNAME``."""
        home = self.home if os.path.isdir(self.home) else str(workspace)
        return {**env, "HOME": home, "USER": self.name, "LOGNAME": self.name}

    def give(self, *paths: Path) -> None:
        """Make ``paths`` (trees) owned by this user; symlinks themselves, never followed."""
        for top in paths:
            os.lchown(top, self.uid, self.gid)
            for dirpath, dirnames, filenames in os.walk(top):
                for name in (*dirnames, *filenames):
                    os.lchown(os.path.join(dirpath, name), self.uid, self.gid)

    def check(self, python: str, work_dir: Path) -> None:
        """Start ``python`` as this user in ``work_dir``, importing the child entry point:
        `ConfigError` saying what the user cannot reach."""
        code = "import os, sys, conveyor.worker.child; os.stat(sys.argv[1])"
        try:
            done = subprocess.run(
                [python, "-c", code, str(work_dir)],
                cwd="/",
                env=self.environ(child_environ(os.environ), workspace=work_dir),
                capture_output=True,
                timeout=60,
                check=False,
                **self.popen(),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ConfigError(f"--run-as {self.name}: cannot start a child as it: {exc}") from exc
        if done.returncode != 0:
            lines = done.stderr.decode(errors="replace").strip().splitlines()
            raise ConfigError(
                f"--run-as {self.name}: a child running as {self.name} cannot start: "
                f"{lines[-1] if lines else f'exit status {done.returncode}'}",
                hint=f"install Conveyor where {self.name} can read it (e.g. a virtualenv under "
                f"/opt, not /root) and pick a --work-dir it can traverse",
            )


def make_private(path: Path) -> None:
    """Take group and other access away from ``path`` (a directory this process owns)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        path.mkdir(mode=0o700, parents=True)
        return
    if info.st_uid != os.geteuid():
        raise ConfigError(
            f"{path} belongs to uid {info.st_uid}, not to this worker",
            hint="with --run-as the worker's home and cache must be its own",
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, stat.S_IMODE(info.st_mode) & 0o700)
        logger.info("made private path=%s (--run-as)", path)


def work_base(chosen: Path | None) -> Path:
    """Where workspaces go with ``--run-as``: ``chosen``, or ``<tmp>/conveyor-work-<uid>``.

    The directory must be the worker's own, writable only by it; it is made traversable but not
    listable by others (``0o711``), so the run's user reaches its own workspace by its path.
    """
    base = chosen or Path(tempfile.gettempdir()) / f"conveyor-work-{os.geteuid()}"
    with contextlib.suppress(FileExistsError):
        os.mkdir(base, TRAVERSABLE)
    info = os.lstat(base)
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.geteuid()
        or stat.S_IMODE(info.st_mode) & 0o022
    ):
        raise ConfigError(
            f"work directory {base} is not a directory owned and writable only by this worker",
            hint="pass --work-dir with a directory of the worker's own",
        )
    os.chmod(base, TRAVERSABLE)
    return base

"""The per-run directory, and how the run's code gets into it without copying the tree.

Each worker process has its own directory, ``<work-dir>/w-<pid>-<random>/`` (see `worker_dir`: a
new worker takes down what dead workers left, mounts included), holding ``spares/`` (see
`conveyor.worker.executors.spares`) and one directory per run,
``runs/<run-id>-<attempt>-<random>/``::

    code/       the run's working directory: the pinned version, writable by the flow
    upper/      (overlay) what the flow wrote, deleted or changed; work/ is the kernel's
    control/    input.json, output.json, result.pickle (see `conveyor.worker.child`)

How ``code/`` is made (`WorkspaceMode`, chosen once per worker by `choose_mode`):

- **overlay** (the worker can mount: root, a container allowed to, or a worker that is not root
  in a user namespace of its own, see `conveyor.worker.executors.userns`): an overlay mount of the
  cached checkout itself (`conveyor.worker.executors.mounts`). Nothing is copied: a flow that
  writes, truncates, chmods or deletes a shipped file changes its copy in ``upper/``, never the
  cache. With ``--run-as`` the directories are the user's (so it can create files anywhere),
  the shipped files stay root's and read-only to it.
- **links** (``--run-as`` without mount privilege, the work directory on the cache's file
  system): directories of the run's own (the user's), every file a hard link to the cache's
  sealed file, which that user cannot write, truncate or chmod; it can delete or replace them.
- **copy** (anything else): a writable copy (`CodeCache.copy_out`), reflinked where the file
  system supports it (btrfs, XFS: no bytes copied), else copied by the kernel.

Every mode checks the checkout first (`CodeCache.checkout`), and the run keeps it leased until
its workspace is gone. The directory is removed when the run ends: mounts first (a busy one is
detached), then the files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import stat
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.errors import ConfigError
from conveyor.worker.executors.isolation import TRAVERSABLE
from conveyor.worker.executors.mounts import (
    can_mount,
    mount_overlay,
    mounts_under,
    unmount,
    unmount_under,
)

if TYPE_CHECKING:
    from conveyor.worker.executors.isolation import RunAs

__all__ = [
    "MODES",
    "Workspace",
    "WorkspaceMode",
    "choose_mode",
    "remove_worker_dir",
    "worker_dir",
]

logger = logging.getLogger(__name__)


class WorkspaceMode(StrEnum):
    """How a run's code directory is made (see the module docstring)."""

    OVERLAY = "overlay"
    LINKS = "links"
    COPY = "copy"


MODES = ("auto", *(m.value for m in WorkspaceMode))
"""What ``--workspace`` accepts."""


def choose_mode(
    requested: str, *, work_dir: Path, cache_root: Path, run_as: RunAs | None
) -> WorkspaceMode:
    """The mode for ``requested`` (``auto``: the cheapest this worker can use); `ConfigError`
    when an explicitly requested one is impossible here."""
    if requested not in MODES:
        raise ConfigError(
            f"--workspace {requested!r} is not a workspace mode", hint=f"one of {', '.join(MODES)}"
        )
    if requested in ("auto", "overlay"):
        work_dir.mkdir(parents=True, exist_ok=True)
        if can_mount(work_dir):
            return WorkspaceMode.OVERLAY
        if requested == "overlay":
            raise ConfigError(
                "--workspace overlay: this worker cannot mount an overlay file system",
                hint="start the worker as root (or in a container allowed to mount), allow "
                "unprivileged user namespaces (Linux 5.11 or later), or use --workspace auto",
            )
    if requested in ("auto", "links"):
        reason = _links_impossible(work_dir, cache_root, run_as)
        if reason is None:
            return WorkspaceMode.LINKS
        if requested == "links":
            raise ConfigError(f"--workspace links: {reason}", hint="use --workspace auto")
    return WorkspaceMode.COPY


def _links_impossible(work_dir: Path, cache_root: Path, run_as: RunAs | None) -> str | None:
    if run_as is None:
        return (
            "a flow running as the worker's own user could write the cache's files through "
            "hard links; it needs --run-as"
        )
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
        same = os.stat(work_dir).st_dev == os.stat(cache_root).st_dev
    except OSError as exc:
        return f"cannot compare the work and cache directories: {exc.strerror or exc}"
    if not same:
        return f"the work directory {work_dir} is not on the file system of the cache"
    return None


class Workspace:
    """One run's directory under the worker's ``runs/``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._undo: list[Callable[[], object]] = []

    @classmethod
    def create(
        cls, work_dir: Path, run_id: str, *, attempt: int = 1, shared: bool = False
    ) -> Workspace:
        """A new run directory; ``shared`` (``--run-as``): traversable by the run's user, who
        must know its unguessable name (``0o711``), instead of private (``0o700``)."""
        work_dir.mkdir(parents=True, exist_ok=True)
        root = work_dir / f"{run_id}-{attempt}-{secrets.token_hex(8 if shared else 3)}"
        root.mkdir(mode=0o700)
        if shared:
            os.chmod(work_dir, TRAVERSABLE)
            os.chmod(root, TRAVERSABLE)
        (root / "control").mkdir()
        return cls(root)

    @property
    def code(self) -> Path:
        return self.root / "code"

    @property
    def control(self) -> Path:
        return self.root / "control"

    def overlay(self, checkout: Path, *, run_as: RunAs | None = None) -> None:
        """Mount ``checkout`` at `code` as an overlay (`OSError` when the kernel refuses);
        with ``run_as``, its directories are the user's. Unmounted by `unmount`/`remove`."""
        upper, scratch = self.root / "upper", self.root / "work"
        upper.mkdir(mode=0o755)
        scratch.mkdir(mode=0o700)
        self.code.mkdir(mode=0o755, exist_ok=True)
        if run_as is not None:  # a directory in both layers shows the upper one's owner
            for top, dirnames, _files in os.walk(checkout):
                rel = os.path.relpath(top, checkout)
                for name in dirnames:
                    if not os.path.islink(os.path.join(top, name)):
                        os.mkdir(upper / rel / name, 0o755)
            run_as.give(upper)
        mount_overlay(checkout, upper, scratch, self.code)

    def unmount(self) -> None:
        """Take the overlay at `code` down (detached if something still uses it)."""
        unmount(self.code)

    def remove_code(self) -> None:
        """Empty the run's code directory again (a failed mount or link: copy instead)."""
        unmount_under(self.code)
        for name in ("code", "upper", "work"):
            _rmtree(self.root / name, ignore_errors=True)

    def remove(self) -> None:
        """Delete the whole run directory (whatever the flow left in it), mounts first."""

        unmount_under(self.root)
        if _mounts_left(self.root):  # never delete through a mount that would not go away
            logger.warning("a workspace mount could not be removed path=%s", self.root)
            return
        if self.root.exists():
            _rmtree(self.root)


def worker_dir(base: Path, *, shared: bool = False) -> Path:
    """A new directory for this worker process under ``base``; removes dead workers' ones.

    Named ``w-<pid>-<random>``: a directory whose process is gone was left by a killed worker;
    its overlay mounts are taken down before it is removed.
    ``shared`` (``--run-as``): traversable, not listable, by other users (``0o711``).
    """
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file where the folder should be, or no permission
        raise ConfigError(
            f"cannot use {base} for run workspaces: {exc.strerror} ({exc.filename})",
            hint="pass --work-dir a folder this user can write",
        ) from None
    for entry in base.glob("w-*-*"):
        pid_text = entry.name.split("-")[1]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            logger.info("removing a dead worker's directory path=%s", entry)
            remove_worker_dir(entry)
    own = base / f"w-{os.getpid()}-{secrets.token_hex(3)}"
    own.mkdir(mode=0o700)
    if shared:
        os.chmod(own, TRAVERSABLE)
    return own


def remove_worker_dir(path: Path) -> None:
    """Remove a worker's directory: its mounts first, then every file (errors ignored)."""
    unmount_under(path)
    if _mounts_left(path):  # never delete through a mount that would not go away
        logger.warning("a mount under a worker directory could not be removed path=%s", path)
        return
    _rmtree(path, ignore_errors=True)


def _rmtree(path: Path, *, ignore_errors: bool = False) -> None:
    """Remove ``path`` and everything under it, also directories without permissions: one a
    flow made read-only, or the overlay's own ``work/work`` (mode 0, which only root can
    enter, when the worker is not root)."""

    def unlock(func: Callable[[str], object], failed: str, _exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(failed), 0o700)
        if func in (os.open, os.scandir, os.listdir) and _locked_dir(failed):
            os.chmod(failed, 0o700)
            shutil.rmtree(failed, onerror=unlock)
            return
        func(failed)

    if not os.path.lexists(path):
        return
    try:
        shutil.rmtree(path, onerror=unlock)
    except OSError:
        if not ignore_errors:
            raise


def _locked_dir(path: str) -> bool:
    """Whether ``path`` is a directory (not a link) its owner cannot list or enter."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    return stat.S_ISDIR(mode) and mode & 0o700 != 0o700


def _mounts_left(path: Path) -> list[Path]:
    return mounts_under(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

"""Overlay mounts for workspaces: mount, unmount, find what a dead worker left, and probe.

An overlay workspace is ``mount -t overlay overlay -o lowerdir=CHECKOUT,upperdir=RUN/upper,
workdir=RUN/work RUN/code`` (made with the ``mount(2)`` system call, ``nosuid,nodev``): the run
reads the cached checkout itself, and the kernel copies a file up into ``upper`` before anything
writes, truncates, chmods or renames it, or records its deletion there — the checkout below is
never changed through the mount. A run that writes nothing costs one mount.

Mounting needs ``CAP_SYS_ADMIN``: a worker started as root, a container allowed to mount, or a
worker that is not root in a user namespace of its own (`conveyor.worker.executors.userns`; its
overlays use ``user.overlay.*`` attributes, ``userxattr``). `can_mount` tries it once, in the
worker's directory. `unmount` detaches lazily when something
still uses the mount (a daemon the flow left), so it never blocks. A SIGKILLed worker's mounts
outlive it: `mounts_under` finds them (``/proc/self/mountinfo``) so the next worker can take them
down before removing the directory (see `conveyor.worker.executors.workspace.worker_dir`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import secrets
import shutil
from pathlib import Path

from conveyor.worker.executors.userns import in_user_namespace

__all__ = ["can_mount", "mount_overlay", "mounts_under", "unmount", "unmount_under"]

logger = logging.getLogger(__name__)

_MS_NOSUID = 2
_MS_NODEV = 4
_MNT_DETACH = 2
_UNSAFE = frozenset(",:\\\n")  # separators of the overlay options; such paths are refused


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def mount_overlay(lower: Path, upper: Path, work: Path, target: Path) -> None:
    """Mount an overlay of ``lower`` (read-only) under ``upper`` at ``target``; `OSError`
    when the kernel refuses (``EPERM`` without the privilege) or a path cannot be expressed."""
    paths = [os.fspath(p) for p in (lower, upper, work)]
    if any(set(p) & _UNSAFE for p in paths):
        raise OSError(errno.EINVAL, "a path holds a character overlay options cannot express")
    options = f"lowerdir={paths[0]},upperdir={paths[1]},workdir={paths[2]}"
    if in_user_namespace():  # trusted.* attributes are the initial namespace's root's only
        options += ",userxattr"
    done = _libc().mount(
        b"overlay",
        os.fsencode(target),
        b"overlay",
        ctypes.c_ulong(_MS_NOSUID | _MS_NODEV),
        options.encode(),
    )
    if done != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), os.fspath(target))


def unmount(target: Path) -> None:
    """Unmount ``target``; lazily (detached) when it is busy. Not mounted: nothing to do."""
    libc = _libc()
    path = os.fsencode(target)
    if libc.umount2(path, 0) == 0:
        return
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOENT):
        return  # not a mount point (any more)
    if code == errno.EBUSY and libc.umount2(path, _MNT_DETACH) == 0:
        logger.info("workspace busy, detached its mount path=%s", target)
        return
    code = ctypes.get_errno()
    raise OSError(code, os.strerror(code), os.fspath(target))


def _unescape(field: str) -> str:
    """Mount points in mountinfo escape space, tab, newline and backslash as ``\\ooo``."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_under(base: Path) -> list[Path]:
    """Mount points at or below ``base`` in this mount namespace, deepest first."""
    top = os.path.realpath(base)
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split(" ")
        if len(fields) > 4:
            point = _unescape(fields[4])
            if point == top or point.startswith(top + os.sep):
                found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def unmount_under(base: Path) -> None:
    """Unmount everything at or below ``base`` (what a killed worker left), logging failures."""
    for point in mounts_under(base):
        try:
            unmount(point)
        except OSError as exc:
            logger.warning("could not unmount path=%s error=%s", point, exc.strerror or exc)


def can_mount(work_dir: Path) -> bool:
    """Whether this process can mount an overlay under ``work_dir`` that really copies on write
    (tried: a file written through the mount lands in the upper directory only)."""
    probe = work_dir / f".probe-{secrets.token_hex(4)}"
    try:
        for name in ("lower", "upper", "work", "merged"):
            (probe / name).mkdir(parents=True)
        (probe / "lower" / "f").write_bytes(b"lower")
        mount_overlay(probe / "lower", probe / "upper", probe / "work", probe / "merged")
        try:
            (probe / "merged" / "f").write_bytes(b"upper")
            works = (probe / "lower" / "f").read_bytes() == b"lower" and (
                probe / "upper" / "f"
            ).read_bytes() == b"upper"
        finally:
            unmount(probe / "merged")
    except OSError as exc:
        logger.debug("overlay workspaces unavailable error=%s", exc)
        works = False
    finally:
        with contextlib.suppress(OSError):
            unmount(probe / "merged")
        shutil.rmtree(probe, ignore_errors=True)
    return works

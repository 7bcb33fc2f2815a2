"""A user and mount namespace of the worker's own, so a worker that is not root can mount
overlay workspaces instead of copying the tree for every run.

Linux lets an unprivileged process make a user namespace, and a mount namespace owned by it, in
which it holds ``CAP_SYS_ADMIN``: overlay mounts made there (Linux 5.11 or later, with the
``userxattr`` option) are seen by the worker and its children only, and go away with them.
`enter` maps the worker's own user and group ids to themselves, so a flow sees its usual ids and
files. Its children are started (``execve``) as that non-zero id, so of the namespace's
capabilities they keep only the one the worker passes on (ambient): ``CAP_DAC_OVERRIDE``, which
covers files of the mapped ids only — the worker's own, which a flow running as its user could
chmod anyway — and lets a flow write a shipped (read-only) file in its working directory as it
could in a copy: the kernel copies the file up first. A flow cannot mount or unmount anything.

What a flow notices: users other than the worker's own appear as ``nobody`` (65534), and
set-user-ID programs such as ``sudo`` do not gain privilege. ``--workspace copy`` keeps the
worker in the machine's namespaces. A kernel that refuses (unprivileged user namespaces
disabled, a container without them, an AppArmor restriction) leaves the worker where it was,
and its workspaces are copies.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from pathlib import Path
from typing import NoReturn

__all__ = ["enter", "in_user_namespace"]

logger = logging.getLogger(__name__)

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_MS_REC = 0x4000
_MS_PRIVATE = 0x40000
_INITIAL = ["0", "0", "4294967295"]
_CAP_DAC_OVERRIDE = 1
_CAPABILITY_VERSION_3 = 0x20080522
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_RAISE = 2


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def in_user_namespace() -> bool:
    """Whether this process runs in a user namespace other than the machine's initial one."""
    try:
        first = Path("/proc/self/uid_map").read_text().split("\n", 1)[0].split()
    except OSError:
        return False
    return first != _INITIAL


def enter() -> str | None:
    """Move this process (which must not have started a thread) into a new user namespace, with
    its own ids mapped to themselves, and a new private mount namespace; None when done, else
    why not (the process is then unchanged). Root needs none: it mounts where it is."""
    if os.geteuid() == 0:
        return "the worker is root"
    uid, gid = os.geteuid(), os.getegid()
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    if libc.unshare(ctypes.c_int(_CLONE_NEWUSER | _CLONE_NEWNS)) != 0:
        return os.strerror(ctypes.get_errno())
    # From here the process is in the new namespaces: without its ids mapped it could not work,
    # so a failure below is raised, not reported.
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1\n")
    Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1\n")
    if libc.mount(b"none", b"/", None, ctypes.c_ulong(_MS_REC | _MS_PRIVATE), None) != 0:
        _fail("making the worker's mounts private")
    _pass_on(libc, _CAP_DAC_OVERRIDE)
    logger.debug("entered a user and mount namespace of its own uid=%d gid=%d", uid, gid)
    return None


def _pass_on(libc: ctypes.CDLL, capability: int) -> None:
    """Make ``capability`` (held in the namespace) ambient: kept by the programs this process
    starts, though they run as a user id that is not 0."""
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        _fail("reading the worker's capabilities")
    data[capability // 32].inheritable |= 1 << (capability % 32)
    if libc.capset(ctypes.byref(header), data) != 0:
        _fail("setting the worker's inheritable capabilities")
    raise_ = ctypes.c_ulong(_PR_CAP_AMBIENT_RAISE)
    if libc.prctl(_PR_CAP_AMBIENT, raise_, ctypes.c_ulong(capability), 0, 0) != 0:
        _fail("passing a capability on to the worker's children")


def _fail(doing: str) -> NoReturn:
    code = ctypes.get_errno()
    raise OSError(code, f"{doing}: {os.strerror(code)}")

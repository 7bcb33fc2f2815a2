"""The per-run directory: a writable copy of the checkout, and the child's control files.

Each worker process has its own directory, ``<CONVEYOR_HOME>/work/w-<pid>-<random>/`` (see
`worker_dir`: a new worker removes those of dead workers), holding ``spares/`` (see
`conveyor.worker.spares`) and one directory per run, ``runs/<run-id>-<attempt>-<random>/``::

    code/       the run's working directory: a copy of the checkout, every file writable
    control/    input.json, output.json, result.pickle (see `conveyor.worker.child`)

The code is *copied* (`CodeCache.copy_out`, which checks every byte against the version as it
copies), never hard-linked: a hard link shares the inode, so a flow writing to ``data.csv`` would
write into the shared cache, and read-only bits do not stop root. A copy of a few megabytes costs
milliseconds. Symbolic links are copied as links (the cache only holds links that stay inside the
tree). The directory is removed when the run ends.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conveyor.worker.executors.isolation import TRAVERSABLE

__all__ = ["Workspace", "worker_dir"]


@dataclass(frozen=True)
class Workspace:
    """One run's directory under ``<home>/work``."""

    root: Path

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

    def remove(self) -> None:
        """Delete the whole run directory (whatever the flow left in it)."""

        def _writable(func: Callable[[str], object], path: str, _exc: object) -> None:
            os.chmod(os.path.dirname(path), 0o700)  # a flow made its directory read-only
            func(path)

        if self.root.exists():
            shutil.rmtree(self.root, onerror=_writable)


def worker_dir(base: Path, *, shared: bool = False) -> Path:
    """A new directory for this worker process under ``base``; removes dead workers' ones.

    Named ``w-<pid>-<random>``: a directory whose process is gone was left by a killed worker.
    ``shared`` (``--run-as``): traversable, not listable, by other users (``0o711``).
    """
    base.mkdir(parents=True, exist_ok=True)
    for entry in base.glob("w-*-*"):
        pid_text = entry.name.split("-")[1]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            shutil.rmtree(entry, ignore_errors=True)
    own = base / f"w-{os.getpid()}-{secrets.token_hex(3)}"
    own.mkdir(mode=0o700)
    if shared:
        os.chmod(own, TRAVERSABLE)
    return own


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

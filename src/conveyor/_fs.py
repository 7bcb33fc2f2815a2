"""File-system helpers shared by the cache, the bundle store, results and the worker child."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write"]


@contextmanager
def atomic_write(
    dest: Path,
    *,
    tmp: Path | None = None,
    mode: int = 0o644,
    fsync: bool = False,
) -> Iterator[BinaryIO]:
    """Write ``dest`` all or nothing.

    Yields a binary file opened on a temporary sibling (``tmp``, or a unique
    ``.<name>.*.tmp`` in the same directory), then gives it ``mode`` and `os.replace`\\ s it
    into place. On any error the temporary is removed and ``dest`` is left as it was.
    """
    if tmp is None:
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        tmp = Path(name)
    else:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            if fsync:
                out.flush()
                os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)

"""Counting the files a block of code opens, with an audit hook (the tests run as root, so
making files unreadable would prove nothing)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_opened: list[str] | None = None


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event == "open" and _opened is not None and isinstance(args[0], str | bytes | Path):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # hooks cannot be removed: this one records only inside `opens`


@contextmanager
def opens(root: Path) -> Iterator[list[str]]:
    """The files under ``root`` opened in this process during the block (relative paths,
    sorted; filled in when the block ends)."""
    global _opened
    seen: list[str] = []
    _opened = seen
    found: list[str] = []
    try:
        yield found
    finally:
        _opened = None
        top = os.fspath(root) + os.sep
        found.extend(sorted({p[len(top) :] for p in seen if p.startswith(top)}))

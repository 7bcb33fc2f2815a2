"""Showing code: one file with syntax highlighting (Pygments, server side), the diff of two trees
(difflib), and the stylesheet for both.

Pygments escapes the source it formats; a file too large, or binary, is not shown inline (it
can be downloaded). A diff compares every file of two checkouts (the ``.conveyor`` metadata left
out), and shows unified diffs of changed text files up to `MAX_DIFF_LINES` in all.
"""

from __future__ import annotations

import difflib
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

from markupsafe import Markup

from conveyor.server.dashboard.code import walk_files

__all__ = [
    "MAX_DIFF_LINES",
    "MAX_SHOWN_BYTES",
    "FileDiff",
    "FileView",
    "TreeDiff",
    "diff_trees",
    "highlight_css",
    "view_file",
]

MAX_SHOWN_BYTES = 512 * 1024
"""Larger files are offered as downloads only."""
MAX_DIFF_LINES = 20_000
"""Diff lines shown in all; the rest of the files are listed as changed."""
_STYLE = "friendly"


@dataclass(frozen=True)
class FileView:
    size: int
    lines: int = 0
    html: Markup | None = None
    """Highlighted, escaped source; None when the file is binary or too large."""
    reason: str = ""
    language: str = ""


def _is_binary(data: bytes) -> bool:
    return b"\x00" in data[:8192]


def view_file(path: Path, name: str) -> FileView:
    """``path`` highlighted for the page (or why it is not shown)."""
    size = path.stat().st_size
    if size > MAX_SHOWN_BYTES:
        return FileView(size=size, reason=f"too large to show ({size} bytes)")
    data = path.read_bytes()
    if _is_binary(data):
        return FileView(size=size, reason="binary file")
    text = data.decode("utf-8", errors="replace")
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import TextLexer, get_lexer_for_filename
    from pygments.util import ClassNotFound

    try:
        lexer = get_lexer_for_filename(name, text, stripnl=False, ensurenl=False)
    except ClassNotFound:
        lexer = TextLexer(stripnl=False, ensurenl=False)
    formatter = HtmlFormatter(linenos="table", lineanchors="L", anchorlinenos=True, wrapcode=True)
    html = highlight(text, lexer, formatter)
    return FileView(
        size=size,
        lines=len(text.splitlines()),
        html=Markup(html),  # noqa: S704 - Pygments escapes the source it formats
        language=str(lexer.name),
    )


@functools.cache
def highlight_css() -> str:
    """Pygments' stylesheet for ``.highlight`` blocks."""
    from pygments.formatters import HtmlFormatter

    return str(HtmlFormatter(style=_STYLE).get_style_defs(".highlight"))  # type: ignore[no-untyped-call]


@dataclass
class FileDiff:
    path: str
    change: str
    """``added``, ``removed``, ``modified`` or ``type changed``."""
    lines: list[tuple[str, str]] = field(default_factory=list)
    """(css class, text) of each unified-diff line."""
    note: str = ""
    added: int = 0
    removed: int = 0


@dataclass
class TreeDiff:
    files: list[FileDiff]
    unchanged: int
    truncated: bool = False

    @property
    def identical(self) -> bool:
        return not self.files


def diff_trees(a: Path, b: Path) -> TreeDiff:
    """What changed from tree ``a`` to tree ``b``, file by file."""
    left, right = walk_files(a), walk_files(b)
    files: list[FileDiff] = []
    unchanged = 0
    budget = MAX_DIFF_LINES
    for path in sorted(set(left) | set(right)):
        old, new = left.get(path), right.get(path)
        old_data, new_data = _content(old), _content(new)
        if old_data == new_data:
            unchanged += 1
            continue
        change = "added" if old is None else "removed" if new is None else "modified"
        diff = FileDiff(path=path, change=change)
        files.append(diff)
        if budget <= 0:
            diff.note = "not shown: the diff is too long"
            continue
        budget -= _fill(diff, old_data, new_data)
    return TreeDiff(files=files, unchanged=unchanged, truncated=budget <= 0)


def _content(path: Path | None) -> bytes | None:
    if path is None:
        return None
    if path.is_symlink():
        return b"symlink -> " + os.fsencode(os.readlink(path))
    return path.read_bytes()


def _fill(diff: FileDiff, old: bytes | None, new: bytes | None) -> int:
    """Put the unified diff of ``old`` → ``new`` into ``diff``; the lines used."""
    for data in (old, new):
        if data is not None and (len(data) > MAX_SHOWN_BYTES or _is_binary(data)):
            diff.note = f"binary or large file ({len(old or b'')} → {len(new or b'')} bytes)"
            return 1
    a = (old or b"").decode("utf-8", errors="replace").splitlines()
    b = (new or b"").decode("utf-8", errors="replace").splitlines()
    for line in difflib.unified_diff(a, b, diff.path, diff.path, lineterm="", n=3):
        if line.startswith(("---", "+++")):
            continue
        css = {"@": "hunk", "+": "add", "-": "del"}.get(line[:1], "ctx")
        diff.added += css == "add"
        diff.removed += css == "del"
        diff.lines.append((css, line))
    return len(diff.lines)

"""Undo what a failed git fetch wrote into a mirror, so a mirror is never trusted half-written.

A fetch that fails part-way (a full disk, a cut connection, a killed process) can leave loose
objects of a commit without its trees or blobs, temporary packs that fill the disk, a changed
``shallow`` file or new refs. The protocol around every network fetch into a mirror:

- `begin` records the mirror's state in ``<mirror>/conveyor-journal.json``: the name of every
  file (objects and packs are named by their content and never change, so a name is enough) and
  the bytes of every mutable file (refs, ``shallow``, ``packed-refs``, ``config``,
  ``objects/info/*``). If the journal cannot be written, nothing has been fetched yet.
- `commit` removes the journal once the fetch succeeded.
- `roll_back` (after a failed fetch, or when a mirror is opened with a journal that a killed
  process left behind) deletes every file the fetch added and writes the mutable files back, then
  removes the journal.

A mirror that cannot be rolled back (an unreadable journal, a recorded object gone) raises
`Broken`: the caller discards the mirror and starts again.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path, PurePosixPath

from conveyor._fs import atomic_write

__all__ = ["JOURNAL", "Broken", "begin", "commit", "pending", "roll_back"]

JOURNAL = "conveyor-journal.json"


class Broken(Exception):
    """The mirror's state before the failed fetch cannot be restored."""


def _is_mutable(rel: str) -> bool:
    """Whether a fetch may change the file in place (everything but objects and hooks)."""
    if rel.startswith("objects/"):
        return rel.startswith("objects/info/")
    return not rel.startswith("hooks/")


def _files(mirror: Path) -> list[str]:
    """Every file under ``mirror`` (relative POSIX paths), the journal itself left out."""
    found: list[str] = []
    for dirpath, _dirs, names in os.walk(mirror):
        base = os.path.relpath(dirpath, mirror)
        for name in names:
            if base == "." and (name == JOURNAL or name.startswith(f".{JOURNAL}.")):
                continue
            found.append(name if base == "." else f"{base}/{name}".replace(os.sep, "/"))
    return sorted(found)


def pending(mirror: Path) -> bool:
    """Whether a fetch into ``mirror`` began and neither committed nor rolled back."""
    return (mirror / JOURNAL).exists()


def begin(mirror: Path) -> None:
    """Record the state of ``mirror`` before a fetch (raises `OSError` if it cannot)."""
    files = _files(mirror)
    saved = {
        rel: base64.b64encode((mirror / rel).read_bytes()).decode("ascii")
        for rel in files
        if _is_mutable(rel)
    }
    data = json.dumps({"files": files, "saved": saved}, sort_keys=True).encode()
    with atomic_write(mirror / JOURNAL) as out:
        out.write(data)


def commit(mirror: Path) -> None:
    """The fetch succeeded: forget the recorded state."""
    (mirror / JOURNAL).unlink(missing_ok=True)


def _read(mirror: Path) -> tuple[set[str], dict[str, bytes]]:
    try:
        data = json.loads((mirror / JOURNAL).read_bytes())
        files = {str(rel) for rel in data["files"]}
        saved = {str(rel): base64.b64decode(text) for rel, text in data["saved"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise Broken(f"the fetch journal cannot be read: {exc}") from None
    for rel in files | set(saved):
        parts = PurePosixPath(rel).parts
        if not parts or rel.startswith("/") or ".." in parts:
            raise Broken(f"the fetch journal names a path outside the mirror: {rel!r}")
    return files, saved


def roll_back(mirror: Path) -> list[str]:
    """Restore ``mirror`` to the state `begin` recorded; returns the files removed.

    Raises `Broken` when that state cannot be restored, `OSError` when the disk refuses.
    """
    before, saved = _read(mirror)
    now = set(_files(mirror))
    added = sorted(now - before)
    for rel in added:  # first: this frees the space a fetch that filled the disk took
        (mirror / rel).unlink(missing_ok=True)
    for rel, content in sorted(saved.items()):
        path = mirror / rel
        try:
            if path.read_bytes() == content:
                continue
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as out:
            out.write(content)
    lost = sorted(rel for rel in before - now if rel not in saved)
    if lost:
        raise Broken(f"{len(lost)} files of the mirror disappeared during the fetch: {lost[0]}")
    commit(mirror)
    return added

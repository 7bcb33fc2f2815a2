"""A stat cache for re-versioning a folder: files whose stat did not change are not read again.

Re-deploying an unchanged folder must cost a stat walk, not a read of every byte. `StatCache`
remembers, per file of one folder, the stat it had when it was hashed — size, ``mtime_ns``,
``ctime_ns``, inode and device — with its sha256 (and, for ``.gitignore``/``.conveyorignore``,
its text). `conveyor._tree.build_manifest` asks it before opening a file: the same stat gives
the recorded hash, anything else reads and hashes the file (and records the new stat). This is
what git's index does; the manifest is the same either way (tested).

What keeps it right:

- **ctime and inode** change on every write, rename-over and ``chmod``, and cannot be set back
  by a user (``os.utime`` sets mtime and *bumps* ctime): a file rewritten to the same size with
  its mtime forced back is still noticed;
- **racily clean files** (git's term): a file changed within `RACY_SECONDS` before it was
  hashed could change again within the same timestamp tick without changing its stat, so such
  an entry is recorded but never trusted: it is read again next time, and trusted once it is
  older;
- the stat is taken from the open descriptor *before* the bytes are read, so a write during
  the read leaves a newer ctime than the one recorded, and the next walk reads the file again;
- the hashes are checked once more where it matters: packing a bundle re-reads every file it
  writes and checks it against the manifest (`conveyor._archive.pack`), so a wrong entry can
  never ship other bytes than the manifest names.

Storage: one JSON file per folder, ``<cache_dir>/.stat/<sha256 of the folder's absolute
path>.json`` (``{"version": 1, "root": ..., "entries": {path: [size, mtime_ns, ctime_ns, ino,
dev, sha256, text | null]}}``), written atomically (temporary sibling, ``os.replace``) and only
when something changed; entries of files no longer in the folder are dropped. At most
`MAX_FOLDERS` folders are remembered (least recently written go first). A missing, unreadable
or foreign file is an empty cache, never an error: the cache can only save reads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["MAX_FOLDERS", "RACY_SECONDS", "STAT_DIR", "StatCache"]

logger = logging.getLogger(__name__)

STAT_DIR = ".stat"
RACY_SECONDS = 2.0
"""A file whose mtime or ctime is this close to the moment it was hashed is read next time too."""
MAX_FOLDERS = 64
_FORMAT = 1

Key = tuple[int, int, int, int, int]
_LOADED: dict[str, tuple[Key, dict[str, list[Any]]]] = {}
"""Cache files read by this process, with the stat they had (a deploy versions a folder twice:
to resolve it and to push it)."""


def stat_key(st: os.stat_result) -> Key:
    """What must be equal for a recorded hash to be trusted."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


class StatCache:
    """The stat cache of the folder ``root``, stored in ``file`` (see the module)."""

    def __init__(self, root: Path, file: Path) -> None:
        self.root = os.path.abspath(root)
        self.file = file
        self._old: dict[str, list[Any]] = {}
        self._new: dict[str, list[Any]] = {}
        self._changed = False
        self._load()

    @classmethod
    def for_folder(cls, cache_dir: Path, root: Path) -> StatCache:
        """The stat cache of folder ``root``, kept under the code cache directory."""
        name = hashlib.sha256(os.path.abspath(root).encode("utf-8", "surrogateescape")).hexdigest()
        return cls(Path(root), Path(cache_dir) / STAT_DIR / f"{name[:32]}.json")

    def _load(self) -> None:
        try:
            st = os.stat(self.file)
            seen = _LOADED.get(os.fspath(self.file))
            if seen is not None and seen[0] == stat_key(st):
                self._old = seen[1]  # read once per process while unchanged (never mutated)
                return
            data = json.loads(self.file.read_bytes())
        except (OSError, ValueError):
            return
        if (
            not isinstance(data, dict)
            or data.get("version") != _FORMAT
            or data.get("root") != self.root
            or not isinstance(data.get("entries"), dict)
        ):
            return
        self._old = {
            path: entry
            for path, entry in data["entries"].items()
            if isinstance(entry, list) and len(entry) == 7
        }
        _LOADED[os.fspath(self.file)] = (stat_key(st), self._old)

    # -- lookups and records --------------------------------------------------------------------

    def _trusted(self, rel: str, st: os.stat_result) -> list[Any] | None:
        entry = self._new.get(rel) or self._old.get(rel)
        if entry is None or tuple(entry[:5]) != stat_key(st):
            return None
        self._new[rel] = entry
        return entry

    def sha256(self, rel: str, st: os.stat_result) -> str | None:
        """The recorded hash of ``rel`` if its stat ``st`` is the one recorded with it."""
        entry = self._trusted(rel, st)
        return entry[5] if entry is not None and entry[5] else None

    def text(self, rel: str, st: os.stat_result) -> str | None:
        """The recorded text of an ignore file ``rel`` if its stat ``st`` is unchanged."""
        entry = self._trusted(rel, st)
        return entry[6] if entry is not None and isinstance(entry[6], str) else None

    def record(
        self,
        rel: str,
        st: os.stat_result,
        *,
        sha256: str | None = None,
        text: str | None = None,
        now_ns: int | None = None,
    ) -> None:
        """Remember ``rel`` as hashed (and/or read) with stat ``st``, taken before its bytes were
        read. A racily clean file is not remembered (see the module)."""
        now = time.time_ns() if now_ns is None else now_ns
        if max(st.st_mtime_ns, st.st_ctime_ns) > now - int(RACY_SECONDS * 1e9):
            return
        key = list(stat_key(st))
        entry = self._new.get(rel)
        entry = [*key, None, None] if entry is None or entry[:5] != key else list(entry)
        if sha256 is not None:
            entry[5] = sha256
        if text is not None:
            entry[6] = text
        self._new[rel] = entry
        self._changed = True

    # -- storing --------------------------------------------------------------------------------

    def save(self) -> None:
        """Write the entries seen in this walk, if anything changed (atomically; best effort)."""
        if not self._changed and self._new.keys() == self._old.keys():
            return
        data = {"version": _FORMAT, "root": self.root, "entries": self._new}
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.file.parent, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(data, fh, separators=(",", ":"))
                os.replace(tmp, self.file)
            except BaseException:
                os.unlink(tmp)
                raise
            written = stat_key(os.stat(self.file))
        except OSError as exc:
            logger.debug("stat cache not written path=%s error=%s", self.file, exc)
            return
        self._old, self._changed = dict(self._new), False
        _LOADED[os.fspath(self.file)] = (written, self._old)
        _trim(self.file.parent)


def _trim(directory: Path) -> None:
    """Forget the least recently written folders beyond `MAX_FOLDERS`."""
    try:
        files = [(p.stat().st_mtime_ns, p) for p in directory.glob("*.json")]
    except OSError:
        return
    if len(files) <= MAX_FOLDERS:
        return
    for _, path in sorted(files)[: len(files) - MAX_FOLDERS]:
        path.unlink(missing_ok=True)

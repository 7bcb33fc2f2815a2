"""The manifest of a code tree, and the bundle version that is its digest.

A manifest lists every file of a tree: relative POSIX path, sha256 of the content, size, executable
bit, and for a symlink its (relative, in-tree) target. Its canonical form is compact JSON with
sorted keys and sorted entries, ASCII only::

    {"files":[{"executable":false,"path":"flows/a.py","sha256":"<hex>","size":120},
              {"executable":false,"link_target":"a.py","path":"flows/b.py","sha256":"<hex>","size":0}],
     "format":1}

and the version is ``"sha256-" + sha256(canonical)``. A symlink's ``sha256`` is the digest of its
target text and its ``size`` is 0. Directories are not listed (an empty directory is not part of
a version, as in git).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from conveyor.errors import BundleError, UnsafeArchive

__all__ = [
    "FORMAT",
    "RESERVED_DIR",
    "Manifest",
    "ManifestEntry",
    "first_difference",
    "is_bundle_version",
    "unsafe_path_reason",
]

FORMAT = 1
RESERVED_DIR = ".conveyor"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^sha256-[0-9a-f]{64}$")


def is_bundle_version(text: str) -> bool:
    """True for a bundle version: ``sha256-`` and 64 lowercase hex digits."""
    return bool(_VERSION.match(text))


def unsafe_path_reason(path: str) -> str | None:
    """Why ``path`` cannot name a file inside a tree, or None when it is a safe relative path."""
    if not path:
        return "empty path"
    if "\x00" in path:
        return "NUL byte in path"
    if path.startswith("/"):
        return "absolute path"
    parts = path.split("/")
    if ".." in parts:
        return "path leaves the tree ('..')"
    if any(part in ("", ".") for part in parts):
        return "path is not normalised"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "path is not valid UTF-8"
    return None


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One file (or in-tree symlink) of a tree."""

    path: str
    sha256: str
    size: int
    executable: bool = False
    link_target: str | None = None

    @property
    def is_link(self) -> bool:
        """True for a symlink entry."""
        return self.link_target is not None

    def to_json(self) -> dict[str, Any]:
        """The entry's canonical JSON object."""
        data: dict[str, Any] = {
            "executable": self.executable,
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
        }
        if self.link_target is not None:
            data["link_target"] = self.link_target
        return data

    @classmethod
    def from_json(cls, data: Any) -> ManifestEntry:
        """Parse and validate one entry; `UnsafeArchive` for a hostile path, `BundleError` else."""
        if not isinstance(data, dict) or not isinstance(data.get("path"), str):
            raise BundleError(f"bundle manifest has a malformed entry: {str(data)[:80]}")
        path: str = data["path"]
        reason = unsafe_path_reason(path)
        if reason is None and path.split("/")[0] == RESERVED_DIR:
            reason = f"{RESERVED_DIR}/ is reserved for bundle metadata"
        if reason is not None:
            raise UnsafeArchive(f"refusing bundle manifest entry {path!r}: {reason}")
        sha, size, executable = data.get("sha256"), data.get("size"), data.get("executable")
        target = data.get("link_target")
        if (
            not isinstance(sha, str)
            or not _HEX64.match(sha)
            or not isinstance(size, int)
            or isinstance(size, bool)
            or size < 0
            or not isinstance(executable, bool)
            or not (target is None or isinstance(target, str))
            or set(data) - {"path", "sha256", "size", "executable", "link_target"}
        ):
            raise BundleError(f"bundle manifest entry {path!r} is malformed")
        return cls(path=path, sha256=sha, size=size, executable=executable, link_target=target)


@dataclass(frozen=True)
class Manifest:
    """Every file of a tree, sorted by path; `version` is the digest of `canonical`."""

    entries: tuple[ManifestEntry, ...]

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.entries, key=lambda e: e.path))
        for before, after in itertools.pairwise(ordered):
            if before.path == after.path:
                raise BundleError(f"bundle manifest lists {before.path!r} twice")
        object.__setattr__(self, "entries", ordered)

    def canonical(self) -> bytes:
        """Compact, sorted JSON: the bytes whose sha256 is the version."""
        return self._canonical

    @cached_property
    def _canonical(self) -> bytes:
        data = {"files": [e.to_json() for e in self.entries], "format": FORMAT}
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode("ascii")

    @cached_property
    def version(self) -> str:
        """``sha256-<hex>`` of the canonical manifest."""
        return "sha256-" + hashlib.sha256(self._canonical).hexdigest()

    @property
    def file_count(self) -> int:
        """How many files (symlinks included) the tree holds."""
        return len(self.entries)

    @property
    def total_size(self) -> int:
        """Bytes of file content (symlinks count 0)."""
        return sum(e.size for e in self.entries)

    @cached_property
    def by_path(self) -> dict[str, ManifestEntry]:
        """Entries keyed by path."""
        return {e.path: e for e in self.entries}

    @classmethod
    def from_canonical(cls, data: bytes) -> Manifest:
        """Parse canonical manifest bytes; refuse anything that is not exactly canonical.

        The last few parsed are remembered (a fill parses a version's manifest when unpacking
        it and again when checking the checkout against it)."""
        if cls is Manifest:
            return _parse_canonical(bytes(data))
        return cls._parse(data)

    @classmethod
    def _parse(cls, data: bytes) -> Manifest:
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BundleError(f"bundle manifest is not valid JSON: {exc}") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise BundleError(
                "bundle manifest has an unknown format",
                hint="this bundle was made by a newer Conveyor; upgrade the worker",
            )
        files = raw.get("files")
        if not isinstance(files, list) or set(raw) != {"files", "format"}:
            raise BundleError("bundle manifest is malformed")
        manifest = cls(tuple(ManifestEntry.from_json(item) for item in files))
        if manifest.canonical() != data:
            raise BundleError("bundle manifest is not in canonical form")
        return manifest


@functools.lru_cache(maxsize=4)
def _parse_canonical(data: bytes) -> Manifest:
    return Manifest._parse(data)


def first_difference(expected: Manifest, actual: Manifest) -> tuple[str, str] | None:
    """The first path (in sorted order) where two manifests differ, and how; None if equal."""
    want, have = expected.by_path, actual.by_path
    for path in sorted(want.keys() | have.keys()):
        old, new = want.get(path), have.get(path)
        if old == new:
            continue
        if new is None:
            return path, "missing"
        if old is None:
            return path, "unexpected file"
        if old.is_link != new.is_link:
            return path, "file type differs"
        if old.link_target != new.link_target:
            return path, "symlink target differs"
        if old.sha256 != new.sha256 or old.size != new.size:
            return path, "content differs"
        return path, "executable bit differs"
    return None

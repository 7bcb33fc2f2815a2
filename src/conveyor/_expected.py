"""What a checkout of one version must hold, and the one copy that checks it while copying.

An `ExpectedTree` lists every file, symlink and empty directory of a version with the digest that
names its content: the sha256 of the bytes for a bundle (from the bundle manifest, whose own sha256
is the version), git's blob id for a commit (``blob <size>\\0<bytes>``, from the commit's own tree
objects). Sources build it from *evidence whose hash is the version itself* (`Source.proof` at
fill time, `Source.expected` at every use), so nothing kept beside a checkout has to be trusted:
evidence that was tampered with no longer hashes to the version.

`copy_verified(checkout, expected, dest)` copies exactly those entries into ``dest`` as writable
files, hashing each file in the same pass that copies it (the copy reads every byte anyway), and
lists the checkout for files the version does not have. Any difference raises `IntegrityError`
naming the first path found; what was written to ``dest`` is then the caller's to discard.

Files are opened without following a final symlink and without blocking, and must be regular
files (a fifo or a device planted in a checkout is refused, not read). Modes come from the
expected tree (``0o644``, ``0o755`` when executable); a checkout file whose executable bit differs
from the version's is a mismatch too. Symlinks are re-created from the target text that was
checked against its digest, and must stay inside the tree.

`bundle_proof` / `bundle_expected` are the evidence and the tree for bundle versions
(``sha256-…``): the canonical manifest, also written to ``.conveyor/manifest.json`` in the copy
as a fetched bundle has it.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

from conveyor._manifest import RESERVED_DIR, Manifest, is_bundle_version
from conveyor.errors import BundleError, IntegrityError

__all__ = [
    "Algorithm",
    "Copied",
    "ExpectedEntry",
    "ExpectedTree",
    "bundle_expected",
    "bundle_proof",
    "copy_verified",
    "digest",
]

Algorithm = Literal["sha256", "git-sha1", "git-sha256"]
"""``sha256``: of the bytes; ``git-*``: git's object id of a blob holding the bytes."""

_CHUNK = 1 << 20
_MANIFEST = f"{RESERVED_DIR}/manifest.json"
_HINT = (
    "the cached checkout was modified after it was verified; it is fetched again once — if this "
    "persists, the version's source itself no longer holds these bytes"
)


class Copied(NamedTuple):
    """What a copy wrote: bytes of file content, and files (symlinks included); `CodeCache.copy_out`
    adds the seconds spent getting the checkout (a fetch when it was not cached) and copying."""

    bytes: int
    files: int
    fetch_seconds: float = 0.0
    copy_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class ExpectedEntry:
    """One path of a version: a file or symlink with its digest, or an (empty) directory."""

    path: str
    kind: Literal["file", "link", "dir"]
    digest: str = ""
    algorithm: Algorithm = "sha256"
    executable: bool = False


@dataclass(frozen=True)
class ExpectedTree:
    """Everything a checkout of ``version`` holds.

    ``extra`` are files the copy writes from trusted bytes (the bundle manifest); ``ignored`` are
    top-level names of the checkout that are not part of the version (``.conveyor`` of a bundle).
    """

    version: str
    entries: tuple[ExpectedEntry, ...]
    extra: Mapping[str, bytes] = field(default_factory=dict)
    ignored: frozenset[str] = frozenset()


def digest(algorithm: Algorithm, data: bytes) -> str:
    """The hex digest of ``data`` under ``algorithm``."""
    hasher = _hasher(algorithm, len(data))
    hasher.update(data)
    return hasher.hexdigest()


def _hasher(algorithm: Algorithm, size: int) -> hashlib._Hash:
    if algorithm == "sha256":
        return hashlib.sha256()
    hasher = hashlib.new(algorithm.removeprefix("git-"))
    hasher.update(b"blob %d\0" % size)
    return hasher


# -- bundles ---------------------------------------------------------------------------------------


def bundle_proof(path: Path, version: str) -> bytes | None:
    """The canonical manifest of bundle ``version`` for the verified tree at ``path`` (the one a
    fetched bundle left in ``.conveyor/``, else rebuilt from the tree); None for other versions."""
    if not is_bundle_version(version):
        return None
    try:
        data = (path / _MANIFEST).read_bytes()
    except OSError:
        data = b""
    if "sha256-" + hashlib.sha256(data).hexdigest() == version:
        return data
    from conveyor._tree import build_manifest

    return build_manifest(path).canonical()


def bundle_expected(version: str, proof: bytes | None) -> ExpectedTree | None:
    """The tree of bundle ``version`` from its canonical manifest; None for other versions.

    Raises `IntegrityError` when ``proof`` is missing or is not the manifest of ``version``.
    """
    if not is_bundle_version(version):
        return None
    if proof is None or "sha256-" + hashlib.sha256(proof).hexdigest() != version:
        what = "is missing" if proof is None else "does not hash to the version"
        raise IntegrityError(f"the manifest kept for {version[:19]} {what}", hint=_HINT)
    try:
        manifest = Manifest.from_canonical(proof)
    except BundleError as exc:
        raise IntegrityError(f"the manifest of {version[:19]} is unusable: {exc}") from None
    entries = tuple(
        ExpectedEntry(
            e.path,
            "link" if e.is_link else "file",
            e.sha256,
            "sha256",
            e.executable,
        )
        for e in manifest.entries
    )
    return ExpectedTree(
        version, entries, extra={_MANIFEST: proof}, ignored=frozenset({RESERVED_DIR})
    )


# -- the copy --------------------------------------------------------------------------------------


def copy_verified(checkout: Path, expected: ExpectedTree, dest: Path) -> Copied:
    """Copy ``expected``'s entries from ``checkout`` into the existing, empty directory ``dest``,
    checking each against its digest as it is copied; then refuse files the version lacks.

    Raises `IntegrityError` naming the first path that differs (``dest`` is then incomplete).
    """
    copy = _Copy(Path(checkout), Path(dest), expected.version)
    for entry in expected.entries:
        copy.entry(entry)
    for rel, data in expected.extra.items():
        copy.write(rel, data)
    _refuse_extra(copy, expected)
    return Copied(copy.bytes, copy.files)


class _Copy:
    def __init__(self, checkout: Path, dest: Path, version: str) -> None:
        self.checkout = checkout
        self.dest = dest
        self.version = version
        self.made: set[str] = {""}
        self.bytes = 0
        self.files = 0

    def mismatch(self, rel: str, how: str) -> IntegrityError:
        return IntegrityError(
            f"{rel}: {how} (the cached checkout of {self.version[:19]} at {self.checkout} "
            "does not match its version)",
            path=rel,
            hint=_HINT,
        )

    def directory(self, rel: str) -> Path:
        missing = []
        probe = rel
        while probe not in self.made:
            missing.append(probe)
            probe = posixpath.dirname(probe)
        for name in reversed(missing):
            os.mkdir(self.dest / name, 0o755)
            self.made.add(name)
        return self.dest / rel

    def entry(self, entry: ExpectedEntry) -> None:
        self.directory(posixpath.dirname(entry.path))
        source = self.checkout / entry.path
        if entry.kind == "dir":
            if not source.is_dir() or source.is_symlink():
                raise self.mismatch(entry.path, "missing or not a directory")
            self.directory(entry.path)
        elif entry.kind == "link":
            self.link(entry, source)
        else:
            self.file(entry, source)

    def link(self, entry: ExpectedEntry, source: Path) -> None:
        try:
            target = os.readlink(source)
        except OSError:
            raise self.mismatch(entry.path, "missing or not a symlink") from None
        if digest(entry.algorithm, os.fsencode(target)) != entry.digest:
            raise self.mismatch(entry.path, "symlink target differs")
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(entry.path), target))
        if target.startswith("/") or joined == ".." or joined.startswith("../"):
            raise self.mismatch(entry.path, "symlink points outside the tree")
        os.symlink(target, self.dest / entry.path)
        self.files += 1

    def file(self, entry: ExpectedEntry, source: Path) -> None:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(source, flags)
        except FileNotFoundError:
            raise self.mismatch(entry.path, "missing") from None
        except OSError:  # ELOOP: a symlink where a file belongs; or unreadable
            raise self.mismatch(entry.path, "not a readable regular file") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise self.mismatch(entry.path, "not a regular file")
            if bool(info.st_mode & stat.S_IXUSR) != entry.executable:
                raise self.mismatch(entry.path, "executable bit differs")
            hasher = _hasher(entry.algorithm, info.st_size)
            mode = 0o755 if entry.executable else 0o644
            size = self._stream(fd, self.dest / entry.path, mode, hasher)
        finally:
            os.close(fd)
        if size != info.st_size:
            raise self.mismatch(entry.path, "changed while it was copied")
        if hasher.hexdigest() != entry.digest:
            raise self.mismatch(entry.path, "content differs")
        self.bytes += size
        self.files += 1

    @staticmethod
    def _stream(fd: int, target: Path, mode: int, hasher: hashlib._Hash) -> int:
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        size = 0
        buffer = bytearray(_CHUNK)
        view = memoryview(buffer)
        try:
            while count := os.readv(fd, [buffer]):
                chunk = view[:count]
                hasher.update(chunk)
                while chunk:
                    chunk = chunk[os.write(out, chunk) :]
                size += count
            os.fchmod(out, mode)
        finally:
            os.close(out)
        return size

    def write(self, rel: str, data: bytes) -> None:
        self.directory(posixpath.dirname(rel))
        out = os.open(self.dest / rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(out, view) :]
        finally:
            os.close(out)


def _refuse_extra(copy: _Copy, expected: ExpectedTree) -> None:
    """Raise for the first file or symlink in the checkout that the version does not have."""
    known = {e.path for e in expected.entries if e.kind != "dir"}
    root = os.fspath(copy.checkout)
    for top, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(top, root)
        base = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        if not base:
            dirnames[:] = [d for d in dirnames if d not in expected.ignored]
            filenames = [f for f in filenames if f not in expected.ignored]
        for name in list(dirnames):
            if os.path.islink(os.path.join(top, name)):  # walk does not follow it: a "file"
                dirnames.remove(name)
                filenames.append(name)
        for name in filenames:
            if base + name not in known:
                raise copy.mismatch(base + name, "unexpected file")

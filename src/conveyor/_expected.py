"""What a checkout of one version must hold, rebuilt from evidence that hashes to the version.

An `ExpectedTree` lists every file, symlink and empty directory of a version with the digest that
names its content: the sha256 of the bytes for a bundle (from the bundle manifest, whose own sha256
is the version), git's blob id for a commit (``blob <size>\\0<bytes>``, from the commit's own tree
objects). Sources build it from *evidence whose hash is the version itself* (`Source.proof` at
fill time, `Source.expected` at every use), so nothing kept beside a checkout has to be trusted:
evidence that was tampered with no longer hashes to the version.

The code cache keeps each checkout's index (`conveyor._cacheindex`) and checks on every use
that it agrees with this tree (`conveyor._cacheindex.agrees`): paths, kinds, executable bits and
digests.

`bundle_proof` / `bundle_expected` are the evidence and the tree for bundle versions
(``sha256-…``): the canonical manifest, also kept at ``.conveyor/manifest.json`` in the
checkout, as a fetched bundle has it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from conveyor._manifest import RESERVED_DIR, Manifest, is_bundle_version
from conveyor.errors import BundleError, IntegrityError

__all__ = [
    "Algorithm",
    "ExpectedEntry",
    "ExpectedTree",
    "bundle_expected",
    "bundle_proof",
    "digest",
]

Algorithm = Literal["sha256", "git-sha1", "git-sha256"]
"""``sha256``: of the bytes; ``git-*``: git's object id of a blob holding the bytes."""

_MANIFEST = f"{RESERVED_DIR}/manifest.json"
_HINT = (
    "the cached checkout was modified after it was verified; it is fetched again once — if this "
    "persists, the version's source itself no longer holds these bytes"
)


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

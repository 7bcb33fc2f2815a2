"""Bundles: the deterministic archive and manifest of one version of a code tree.

- `build_manifest` / `compute_version`: walk a tree into a `Manifest` of `ManifestEntry` (path,
  sha256, size, executable bit, symlink target). The version is ``sha256-`` + the sha256 of the
  canonical manifest: the same tree gives the same version in any directory, on any machine,
  after any ``touch``.
- `pack`: a zstd-compressed tar with sorted members and normalised metadata, whose first member is
  the manifest (``.conveyor/manifest.json``): the same tree gives the same archive bytes.
- `unpack`: one streaming pass that refuses hostile archives (`UnsafeArchive`), hashes every file
  as it is written and checks it against the manifest and an expected version (`IntegrityError`),
  and leaves nothing behind on failure.
- `lay_out_tree`: lay a live tree out as `unpack` would (the local folder source).
- `verify_tree`: recompute a tree's version and compare; names the first differing path.

Left out of every bundle: ``.git``/``.hg``/``.svn`` and any directory holding a ``pyvenv.cfg``.
Left out by default (a ``!pattern`` in ``.conveyorignore`` brings them back): ``__pycache__``,
``*.pyc``/``*.pyo``, ``.venv``, ``venv``, ``.mypy_cache``, ``.pytest_cache``, ``.ruff_cache``,
``.tox``, ``.nox`` and ``node_modules`` (a flow's tree rarely needs them, and they are large).
Also left out: whatever the tree's ``.gitignore`` and ``.conveyorignore`` files exclude, nested
ones included, with git's rules (see `conveyor._tree`). Symlinks are kept as links; one leaving the
tree is refused.

The root ``.conveyor/`` directory is reserved: it is never part of a tree's version, and
`unpack` and `lay_out_tree` leave the manifest there, so a checkout says which version it is and
`verify_tree` can name what differs.
"""

from __future__ import annotations

from conveyor._archive import ZSTD_LEVEL, lay_out_tree, pack
from conveyor._manifest import Manifest, ManifestEntry, is_bundle_version
from conveyor._tree import MANIFEST_PATH, build_manifest, compute_version, verify_tree
from conveyor._unpack import UnpackLimits, unpack

__all__ = [
    "MANIFEST_PATH",
    "ZSTD_LEVEL",
    "Manifest",
    "ManifestEntry",
    "UnpackLimits",
    "build_manifest",
    "compute_version",
    "is_bundle_version",
    "lay_out_tree",
    "pack",
    "unpack",
    "verify_tree",
]

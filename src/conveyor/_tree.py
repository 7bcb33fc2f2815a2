"""Walk a code tree into a `Manifest`, honouring the ignore rules; verify a tree against a version.

What a bundle leaves out:

- always (cannot be re-included): ``.git``, ``.hg`` and ``.svn`` anywhere; the reserved
  ``.conveyor/`` directory at the root (bundle metadata); any directory holding a ``pyvenv.cfg``
  (a virtual environment, whatever its name);
- by default: directories named ``__pycache__``, ``.venv``, ``venv``, ``.mypy_cache``,
  ``.pytest_cache``, ``.ruff_cache``, ``.tox``, ``.nox`` and ``node_modules``; files ending in
  ``.pyc`` / ``.pyo``. A ``!pattern`` line in ``.gitignore``/``.conveyorignore`` re-includes them;
- whatever the ``.gitignore`` and ``.conveyorignore`` files of the tree exclude, with git's rules
  (`pathspec.GitIgnoreSpec`): a file applies to its own directory and below, a deeper file wins
  over a higher one, and within a directory ``.conveyorignore`` is read after ``.gitignore`` (so
  it can re-include what ``.gitignore`` leaves out). Ignore files outside the tree do not count.

The ignore files themselves are always bundled (a tree must verify with the same rules after it
is unpacked). Sockets and fifos found in a tree are skipped with a warning. A symlink is bundled
as a link, never followed; one that points outside the tree (or is absolute) is refused.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import stat
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor._manifest import RESERVED_DIR, Manifest, ManifestEntry, first_difference
from conveyor.errors import BundleError, IntegrityError

if TYPE_CHECKING:
    from pathspec import GitIgnoreSpec

__all__ = ["DEFAULT_EXCLUDED_DIRS", "Known", "build_manifest", "compute_version", "verify_tree"]

Known = Callable[[str, os.stat_result], Mapping[str, str] | None]
"""(path, lstat) → the file's digests when they are known already (it was hashed as it was
written, by this process, and has not changed since): its ``sha256`` is then not read again."""

logger = logging.getLogger(__name__)

ALWAYS_EXCLUDED = frozenset({".git", ".hg", ".svn"})
DEFAULT_EXCLUDED_DIRS = frozenset(
    {
        "__pycache__",
        ".venv",
        "venv",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".tox",
        ".nox",
        "node_modules",
    }
)
DEFAULT_EXCLUDED_SUFFIXES = (".pyc", ".pyo")
IGNORE_FILES = (".gitignore", ".conveyorignore")
MANIFEST_PATH = f"{RESERVED_DIR}/manifest.json"


class _TreeProblem(Exception):
    """A tree cannot be bundled as it is (becomes `BundleError` or `IntegrityError`)."""

    def __init__(self, path: str, message: str, hint: str | None = None) -> None:
        self.path = path
        self.message = message
        self.hint = hint
        super().__init__(message)


def _load_rules(directory: str, prefix: str, names: set[str]) -> GitIgnoreSpec | None:
    lines: list[str] = []
    for name in IGNORE_FILES:
        if name in names:
            try:
                with open(os.path.join(directory, name), encoding="utf-8", errors="replace") as fh:
                    lines.extend(fh.read().splitlines())
            except OSError as exc:
                rel = prefix + name
                raise _TreeProblem(rel, f"cannot read {rel}: {exc.strerror}") from None
    if not any(line.strip() and not line.startswith("#") for line in lines):
        return None
    from pathspec import GitIgnoreSpec

    return GitIgnoreSpec.from_lines(lines)


def _excluded(rel: str, name: str, is_dir: bool, rules: list[tuple[str, GitIgnoreSpec]]) -> bool:
    for base, spec in reversed(rules):  # the deepest ignore file decides first
        sub = rel[len(base) :] + ("/" if is_dir else "")
        decision = spec.check_file(sub).include
        if decision is not None:
            return decision
    if is_dir:
        return name in DEFAULT_EXCLUDED_DIRS
    return name.endswith(DEFAULT_EXCLUDED_SUFFIXES)


def _hash_file(path: str, rel: str) -> tuple[str, int, int]:
    """(sha256 hex, size, st_mode) of a regular file, read through one open descriptor."""
    try:
        with open(path, "rb", buffering=0) as fh:
            mode = os.fstat(fh.fileno()).st_mode
            digest = hashlib.sha256()
            size = 0
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise _TreeProblem(rel, f"cannot read {rel}: {exc.strerror}") from None
    return digest.hexdigest(), size, mode


def _link_entry(path: str, rel: str, root_real: str) -> ManifestEntry:
    target = os.readlink(path)
    hint = "make the link relative and inside the folder, or replace it with a copy of the file"
    if os.path.isabs(target):
        raise _TreeProblem(
            rel, f"symlink {rel} -> {target} points outside the tree (absolute)", hint
        )
    lexical = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    real = os.path.realpath(path)
    if (
        lexical == ".."
        or lexical.startswith("../")
        or (real != root_real and not real.startswith(root_real + os.sep))
    ):
        raise _TreeProblem(rel, f"symlink {rel} -> {target} points outside the tree", hint)
    try:
        encoded = target.encode("utf-8")
    except UnicodeEncodeError:
        raise _TreeProblem(rel, f"symlink {rel} has a target that is not valid UTF-8") from None
    return ManifestEntry(rel, hashlib.sha256(encoded).hexdigest(), 0, link_target=target)


def _walk(
    root: str,
    prefix: str,
    root_real: str,
    rules: list[tuple[str, GitIgnoreSpec]],
    known: Known | None = None,
) -> Iterator[ManifestEntry]:
    directory = os.path.join(root, prefix) if prefix else root
    try:
        with os.scandir(directory) as it:
            children = list(it)
    except OSError as exc:
        raise _TreeProblem(prefix or ".", f"cannot list {prefix or '.'}: {exc.strerror}") from None
    names = {child.name for child in children}
    spec = _load_rules(directory, prefix, names) if names & set(IGNORE_FILES) else None
    if spec is not None:
        rules = [*rules, (prefix, spec)]
    for child in children:
        name = child.name
        if name in ALWAYS_EXCLUDED or (not prefix and name == RESERVED_DIR):
            continue
        rel = prefix + name
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            raise _TreeProblem(rel, f"file name {rel!r} is not valid UTF-8") from None
        if child.is_symlink():
            if not _excluded(rel, name, False, rules):
                yield _link_entry(child.path, rel, root_real)
        elif child.is_dir(follow_symlinks=False):
            if os.path.exists(os.path.join(child.path, "pyvenv.cfg")):
                continue
            if not _excluded(rel, name, True, rules):
                yield from _walk(root, rel + "/", root_real, rules, known)
        elif child.is_file(follow_symlinks=False):
            if name in IGNORE_FILES or not _excluded(rel, name, False, rules):
                st = child.stat(follow_symlinks=False) if known is not None else None
                digests = known(child.path, st) if known is not None and st else None
                if digests and "sha256" in digests and st is not None:
                    sha, size, mode = digests["sha256"], st.st_size, st.st_mode
                else:
                    sha, size, mode = _hash_file(child.path, rel)
                yield ManifestEntry(rel, sha, size, executable=bool(mode & stat.S_IXUSR))
        else:
            logger.warning("skipping special file path=%s", rel)


def _manifest_or_problem(root: Path, known: Known | None = None) -> Manifest:
    top = os.fspath(root)
    if not os.path.isdir(top):
        raise _TreeProblem(".", f"{root} is not a directory")
    try:
        return Manifest(tuple(_walk(top, "", os.path.realpath(top), [], known)))
    except RecursionError:
        raise _TreeProblem(".", f"{root} is nested too deeply to bundle") from None


def build_manifest(root: Path) -> Manifest:
    """The manifest of the tree at ``root`` (see the module docstring for what is left out).

    Raises `BundleError` when the tree cannot be bundled: a symlink leaving it, an unreadable
    file, a name that is not UTF-8, or ``root`` not being a directory.
    """
    try:
        return _manifest_or_problem(Path(root))
    except _TreeProblem as problem:
        raise BundleError(problem.message, hint=problem.hint) from None


def compute_version(root: Path) -> str:
    """The bundle version (``sha256-<hex>``) of the tree at ``root``."""
    return build_manifest(root).version


def _stored_manifest(root: Path, version: str) -> Manifest | None:
    """The manifest a bundle left at ``root/.conveyor/manifest.json``, if it is ``version``'s."""
    try:
        data = (root / MANIFEST_PATH).read_bytes()
    except OSError:
        return None
    if "sha256-" + hashlib.sha256(data).hexdigest() != version:
        return None
    try:
        return Manifest.from_canonical(data)
    except BundleError:
        return None


def verify_tree(path: Path, version: str, *, known: Known | None = None) -> None:
    """Check that the tree at ``path`` is exactly ``version``; raise `IntegrityError` if not.

    The tree is walked with the same rules as `build_manifest` (so ``.conveyor/`` is never part of
    it). When the tree holds the manifest of ``version`` (a fetched bundle does, at
    ``.conveyor/manifest.json``; it is trusted only if its digest is ``version``), the error names
    the first differing path: missing, unexpected or changed. ``known`` spares hashing files
    whose digest the caller knows already (see `Known`).
    """
    root = Path(path)
    short = version[:19]
    try:
        actual = _manifest_or_problem(root, known)
    except _TreeProblem as problem:
        raise IntegrityError(
            f"{problem.message} (checking {short})", path=problem.path, hint=problem.hint
        ) from None
    if actual.version == version:
        return
    expected = _stored_manifest(root, version)
    difference = first_difference(expected, actual) if expected is not None else None
    if difference is None:
        raise IntegrityError(
            f"tree {root} is {actual.version[:19]}, not the expected {short}",
            hint="fetch the version again; the code may have been modified after it was fetched",
        )
    where, how = difference
    raise IntegrityError(
        f"{how}: {where} (tree {root} does not match {short})",
        path=where,
        hint="fetch the version again; the code may have been modified after it was fetched",
    )

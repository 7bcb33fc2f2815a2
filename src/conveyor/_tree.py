"""Walk a code tree into a `Manifest`, honouring the ignore rules; verify a tree against a version.

What a bundle leaves out:

- always (cannot be re-included): ``.git``, ``.hg`` and ``.svn`` anywhere; the reserved
  ``.conveyor/`` directory at the root (bundle metadata); any directory holding a ``pyvenv.cfg``
  (a virtual environment, whatever its name);
- by default: directories named ``__pycache__``, ``.venv``, ``venv``, ``.mypy_cache``,
  ``.pytest_cache``, ``.ruff_cache``, ``.tox``, ``.nox`` and ``node_modules``; files ending in
  ``.pyc`` / ``.pyo``. A ``!pattern`` line in ``.gitignore``/``.conveyorignore`` re-includes them;
- the directories given as ``exclude`` that are inside the tree: a deploy gives Conveyor's own
  (`conveyor.sources.local.own_dirs`: ``CONVEYOR_HOME``, the code cache, a local bundle store),
  so a store kept in the project folder is not snapshotted into the next bundle;
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
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor._manifest import RESERVED_DIR, Manifest, ManifestEntry, first_difference
from conveyor.errors import BundleError, IntegrityError

if TYPE_CHECKING:
    from pathspec import GitIgnoreSpec

    from conveyor._statcache import StatCache

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


def _load_rules(
    directory: str, prefix: str, names: set[str], cache: StatCache | None
) -> GitIgnoreSpec | None:
    lines: list[str] = []
    for name in IGNORE_FILES:
        if name in names:
            lines.extend(_read_ignore_file(os.path.join(directory, name), prefix + name, cache))
    if not any(line.strip() and not line.startswith("#") for line in lines):
        return None
    from pathspec import GitIgnoreSpec

    return GitIgnoreSpec.from_lines(lines)


def _read_ignore_file(path: str, rel: str, cache: StatCache | None) -> list[str]:
    try:
        if cache is not None:
            known = cache.text(rel, os.stat(path))
            if known is not None:
                return known.splitlines()
        with open(path, encoding="utf-8", errors="replace") as fh:
            st = os.fstat(fh.fileno())
            text = fh.read()
    except OSError as exc:
        raise _TreeProblem(rel, f"cannot read {rel}: {exc.strerror}") from None
    if cache is not None:
        cache.record(rel, st, text=text)
    return text.splitlines()


def _excluded(rel: str, name: str, is_dir: bool, rules: list[tuple[str, GitIgnoreSpec]]) -> bool:
    for base, spec in reversed(rules):  # the deepest ignore file decides first
        sub = rel[len(base) :] + ("/" if is_dir else "")
        decision = spec.check_file(sub).include
        if decision is not None:
            return decision
    if is_dir:
        return name in DEFAULT_EXCLUDED_DIRS
    return name.endswith(DEFAULT_EXCLUDED_SUFFIXES)


def _hash_file(path: str, rel: str) -> tuple[str, int, os.stat_result]:
    """(sha256 hex, size, stat before reading) of a regular file, read through one descriptor."""
    try:
        with open(path, "rb", buffering=0) as fh:
            st = os.fstat(fh.fileno())
            digest = hashlib.sha256()
            size = 0
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise _TreeProblem(rel, f"cannot read {rel}: {exc.strerror}") from None
    return digest.hexdigest(), size, st


def _file_entry(
    path: str,
    rel: str,
    entry: os.DirEntry[str],
    cache: StatCache | None,
    known: Known | None = None,
) -> ManifestEntry:
    """The manifest entry of a regular file: from what the caller ``known``s or the stat cache
    when its stat is unchanged."""
    if known is not None:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as exc:
            raise _TreeProblem(rel, f"cannot read {rel}: {exc.strerror}") from None
        digests = known(path, st)
        if digests and "sha256" in digests:
            executable = bool(st.st_mode & stat.S_IXUSR)
            return ManifestEntry(rel, digests["sha256"], st.st_size, executable=executable)
    if cache is not None:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as exc:
            raise _TreeProblem(rel, f"cannot read {rel}: {exc.strerror}") from None
        cached = cache.sha256(rel, st)
        if cached is not None:
            executable = bool(st.st_mode & stat.S_IXUSR)
            return ManifestEntry(rel, cached, st.st_size, executable=executable)
    sha, size, st = _hash_file(path, rel)
    if cache is not None and size == st.st_size:
        cache.record(rel, st, sha256=sha)
    return ManifestEntry(rel, sha, size, executable=bool(st.st_mode & stat.S_IXUSR))


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
    cache: StatCache | None,
    known: Known | None = None,
    skip: frozenset[str] = frozenset(),
) -> Iterator[ManifestEntry]:
    directory = os.path.join(root, prefix) if prefix else root
    try:
        with os.scandir(directory) as it:
            children = list(it)
    except OSError as exc:
        raise _TreeProblem(prefix or ".", f"cannot list {prefix or '.'}: {exc.strerror}") from None
    names = {child.name for child in children}
    spec = _load_rules(directory, prefix, names, cache) if names & set(IGNORE_FILES) else None
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
            if rel in skip or os.path.exists(os.path.join(child.path, "pyvenv.cfg")):
                continue
            if not _excluded(rel, name, True, rules):
                yield from _walk(root, rel + "/", root_real, rules, cache, known, skip)
        elif child.is_file(follow_symlinks=False):
            if name in IGNORE_FILES or not _excluded(rel, name, False, rules):
                yield _file_entry(child.path, rel, child, cache, known)
        else:
            logger.debug("skipping special file path=%s", rel)


def _inside(root_real: str, dirs: Iterable[Path]) -> frozenset[str]:
    """The paths, relative to the tree, of those of ``dirs`` that are strictly inside it."""
    found = set()
    for directory in dirs:
        real = os.path.realpath(directory)
        if real.startswith(root_real.rstrip(os.sep) + os.sep):
            found.add(os.path.relpath(real, root_real).replace(os.sep, "/"))
    return frozenset(found)


def _manifest_or_problem(
    root: Path,
    cache: StatCache | None = None,
    known: Known | None = None,
    exclude: Iterable[Path] = (),
) -> Manifest:
    top = os.fspath(root)
    if not os.path.isdir(top):
        raise _TreeProblem(".", f"{root} is not a directory")
    root_real = os.path.realpath(top)
    skip = _inside(root_real, exclude)
    try:
        manifest = Manifest(tuple(_walk(top, "", root_real, [], cache, known, skip)))
    except RecursionError:
        raise _TreeProblem(".", f"{root} is nested too deeply to bundle") from None
    if cache is not None:
        cache.save()
    return manifest


def build_manifest(
    root: Path, *, stat_cache: StatCache | None = None, exclude: Iterable[Path] = ()
) -> Manifest:
    """The manifest of the tree at ``root`` (see the module docstring for what is left out;
    ``exclude``: directories left out too when they are inside the tree).

    With a ``stat_cache`` (`conveyor._statcache`), files whose stat is unchanged since they were
    last hashed are not read; the manifest is the same.

    Raises `BundleError` when the tree cannot be bundled: a symlink leaving it, an unreadable
    file, a name that is not UTF-8, or ``root`` not being a directory.
    """
    try:
        return _manifest_or_problem(Path(root), stat_cache, exclude=exclude)
    except _TreeProblem as problem:
        raise BundleError(problem.message, hint=problem.hint) from None


def compute_version(
    root: Path, *, stat_cache: StatCache | None = None, exclude: Iterable[Path] = ()
) -> str:
    """The bundle version (``sha256-<hex>``) of the tree at ``root`` (``exclude``: as
    `build_manifest`)."""
    return build_manifest(root, stat_cache=stat_cache, exclude=exclude).version


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
        actual = _manifest_or_problem(root, known=known)
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

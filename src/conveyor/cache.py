"""The code cache: one directory per version of each source, fetched once, verified, read-only.

``CodeCache(root, max_bytes=...).ensure(source, version)`` returns
``<root>/<source-key>/<version>``:

- **warm**: the checkout exists (it is renamed into place complete, so existence means complete):
  touch its "last used" time and return. No lock, no source call, no network.
- **cold**: take the version's fill lock (`filelock`, so one fetch across processes), look again,
  make room (evict least-recently-used entries down to the budget, less the version's expected
  size when the source can tell it, and until that much is free on the disk), fetch into a
  temporary sibling, verify, record metadata, make it read-only, `os.replace` it into place, then
  evict again until the byte budget holds.

After `Source.verify` passes, the source's `Source.proof` (evidence that hashes to the version:
the bundle manifest, a commit's own objects) is kept at ``<key>/.proofs/<version>``;
`CodeCache.copy_out` (see `conveyor._verified`) checks every later copy of the checkout against
it, and fetches a checkout that no longer matches again.

A process killed mid-fill leaves only a ``.tmp-*`` directory, removed by the next fill (only
when its lock is free). `CodeCache.checkout` (the one way a caller gets a usable tree) holds a
shared flock for as long as a run uses a checkout; eviction skips any version whose lease file it
cannot lock exclusively, and the lock dies with its process. See `conveyor._cachefs` for the
on-disk layout.

The cache hands each source a `FetchContext`: the one it was built with (secret store,
environment, settings), plus the source's persistent scratch directory, which the cache holds
locked (``.scratch.lock``) around the source's ``fetch`` and ``verify``. Scratch directories (git
mirrors) are cache entries like checkouts: counted in the budget, listed, evicted least recently
used (never while a fill holds them); see `conveyor._cacheentries`.

A full disk (``ENOSPC`` from the cache's own writes, from unpacking, or reported by a source,
e.g. git's "No space left on device") is a `CacheError` naming the cache, the path and the cause,
with a hint to free space, lower ``CONVEYOR_CACHE_MAX_BYTES`` or run ``conveyor cache prune``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor import _cacheentries as entries_
from conveyor import _cachefs as fs
from conveyor._cacheentries import CacheEntry
from conveyor._cachefill import fetch_into_place, write_meta
from conveyor._fs import out_of_space
from conveyor._objects import OBJECTS_DIR, ObjectStore
from conveyor._verified import checked, copy_out, link_out, proof_path, unlink_out, used
from conveyor.errors import CacheError, ConfigError, ConveyorError
from conveyor.sources.base import FetchContext

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from conveyor._verified import Copied
    from conveyor.settings import Settings
    from conveyor.sources.base import Source

__all__ = ["CacheEntry", "CacheInfo", "CodeCache", "proof_path"]

logger = logging.getLogger(__name__)

_SCRATCH = entries_.SCRATCH_DIR


@dataclass(frozen=True)
class CacheInfo:
    """The cache as a whole: where it is, its budget, and what it holds (``entry_count``
    counts checkouts, scratch directories and envs; ``used_bytes`` the bytes on disk, a file
    shared by several checkouts once; ``scratch_*`` scratch directories alone)."""

    root: Path
    max_bytes: int
    used_bytes: int
    entry_count: int
    leased_count: int
    scratch_count: int = 0
    scratch_bytes: int = 0
    env_count: int = 0
    env_bytes: int = 0
    """Run environments (`conveyor.envs`), which share the budget."""
    object_count: int = 0
    object_bytes: int = 0
    """The distinct files every checkout links (each counted once in ``used_bytes``)."""


class CodeCache:
    """Verified, read-only checkouts of source versions under ``root``, within ``max_bytes``.

    The budget is best effort: leased versions, scratch directories in use (and a version being
    returned right now) are never evicted, so the cache may exceed it while they are in use.
    """

    lock_timeout: float = 3600.0
    """Seconds to wait for another process that is filling the same version."""
    lease_timeout: float = 60.0
    """Seconds to wait for an eviction in progress before a lease is taken."""

    def __init__(self, root: Path, *, max_bytes: int, context: FetchContext | None = None) -> None:
        if max_bytes < 0:
            raise ConfigError(f"cache max_bytes must be >= 0, not {max_bytes}")
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.context = context or FetchContext()
        """What sources get besides their scratch directory (secrets, environment, settings)."""
        self.objects = ObjectStore(self.root / OBJECTS_DIR)
        """The content-addressed files every checkout links (see `conveyor._objects`)."""
        self.hits = 0
        """`ensure` calls answered from the cache (warm), and those that had to fill it (cold)."""
        self.misses = 0

    @classmethod
    def from_settings(cls, settings: Settings, *, context: FetchContext | None = None) -> CodeCache:
        """The cache at ``settings.cache_dir`` with budget ``settings.cache_max_bytes``."""
        return cls(
            settings.cache_dir,
            max_bytes=settings.cache_max_bytes,
            context=context or FetchContext(settings=settings),
        )

    def __repr__(self) -> str:
        return f"CodeCache({str(self.root)!r}, max_bytes={self.max_bytes})"

    def path_for(self, source: Source, version: str) -> Path:
        """``<root>/<source.key()>/<version>`` (whether or not it is there yet)."""
        fs.check_version(version)
        return self.root / source.key() / version

    def scratch_dir(self, source: Source) -> Path:
        """The persistent per-source directory ``<root>/<key>/.scratch`` (created if missing)."""
        path = self.root / source.key() / _SCRATCH
        self._mkdir(path)
        return path

    @contextmanager
    def scratch(self, source: Source) -> Iterator[FetchContext]:
        """The context for ``source``'s fetch and verify: with its scratch directory, held
        locked across processes, when it uses one (``uses_scratch``). Its size is recorded
        when the block exits (it counts against the budget)."""
        from filelock import FileLock, Timeout

        if not source.uses_scratch:
            yield self.context
            return
        path = self.root / source.key() / _SCRATCH
        self._mkdir(path.parent)
        lock = FileLock(fs.lock_path(path), timeout=self.lock_timeout)
        try:
            with lock:
                self._mkdir(path)  # under the lock: an eviction may have just removed it
                try:
                    yield self.context.with_scratch(path)
                finally:
                    self._record_scratch(source, path)
        except Timeout as exc:
            raise CacheError(
                f"timed out after {self.lock_timeout:g}s waiting for another process using "
                f"the scratch directory of {source.describe()}",
                hint=f"if no conveyor process is running, remove {path}.lock",
            ) from exc

    def ensure(self, source: Source, version: str) -> Path:
        """A read-only, verified checkout of ``version``, fetched at most once across processes.

        Raises what the source raises (`VersionNotFound`, `IntegrityError`, ...) with nothing left
        behind, or `CacheError` when the disk fails. Use `lease` to keep the checkout from being
        evicted while it is in use.
        """
        path = self.path_for(source, version)
        if _touch(path):
            used(path)
            self.hits += 1
            return path
        self.misses += 1
        return self._fill(source, version, path)

    @contextmanager
    def checkout(self, source: Source | Mapping[str, Any], version: str) -> Iterator[Path]:
        """The one way to get a usable tree: ``version`` of ``source`` (a `Source` or a stored
        spec), fetched and verified if needed, kept from eviction until the block exits."""
        from conveyor.sources.base import Source

        built = source if isinstance(source, Source) else _from_spec(source)
        with checked(self, built, version) as path:
            yield path

    def copy_out(self, source: Source | Mapping[str, Any], version: str, dest: Path) -> Copied:
        """Copy ``version`` into ``dest`` (a new or empty directory) as writable files, checked
        first (see `conveyor._verified`): for code handed to a user, or a workspace that can
        neither mount nor share the cache's files.

        A checkout that no longer matches its version is discarded and fetched again, once;
        then `IntegrityError` (naming the file) and ``dest`` is left empty.
        """
        from conveyor.sources.base import Source

        built = source if isinstance(source, Source) else _from_spec(source)
        return copy_out(self, built, version, Path(dest))

    def link_out(
        self, checkout: Path, dest: Path, *, owner: tuple[int, int] | None = None
    ) -> Copied:
        """Lay a checkout (from `checkout`, still leased) out in ``dest`` as hard links to its
        sealed files, directories owned by ``owner`` (see `conveyor._verified.link_out`)."""
        return link_out(self, checkout, Path(dest), owner=owner)

    def unlink_out(self, checkout: Path, dest: Path) -> None:
        """Remove a tree `link_out` made from ``checkout``."""
        unlink_out(self, checkout, Path(dest))

    @contextmanager
    def lease(self, source: Source, version: str) -> Iterator[Path]:
        """`ensure` the version and keep it from eviction (by any process) until the block exits."""
        path = self.path_for(source, version)
        self._mkdir(path.parent)
        try:
            fd = fs.lock_shared(fs.lease_path(path), timeout=self.lease_timeout)
        except OSError as exc:
            raise self._disk_error("lease", version, path, exc) from exc
        try:
            yield self.ensure(source, version)
        finally:
            _touch(path)
            os.close(fd)

    def entries(self) -> list[CacheEntry]:
        """Every checkout and scratch directory in the cache, least recently used first."""
        return entries_.list_entries(self.root)

    def info(self) -> CacheInfo:
        """Totals over `entries`."""
        entries = self.entries()
        scratch = [e for e in entries if e.kind == entries_.SCRATCH]
        envs = [e for e in entries if e.kind == entries_.ENV]
        used, object_bytes, objects = entries_.used_bytes(self.root, entries)
        return CacheInfo(
            root=self.root,
            max_bytes=self.max_bytes,
            used_bytes=used,
            entry_count=len(entries),
            leased_count=sum(e.leased for e in entries),
            scratch_count=len(scratch),
            scratch_bytes=sum(e.size for e in scratch),
            env_count=len(envs),
            env_bytes=sum(e.size for e in envs),
            object_count=objects,
            object_bytes=object_bytes,
        )

    def prune(self, *, max_bytes: int | None = None) -> list[CacheEntry]:
        """Evict least-recently-used checkouts and scratch directories not in use until the cache
        holds at most ``max_bytes`` (the cache's budget by default); also remove debris of killed
        fills. Returns the evicted."""
        budget = self.max_bytes if max_bytes is None else max_bytes
        if budget < 0:
            raise ConfigError(f"max_bytes must be >= 0, not {budget}")
        try:
            return entries_.prune(self.root, budget)
        except OSError as exc:
            raise CacheError(
                f"could not prune the code cache at {self.root}: {exc.strerror or exc}",
                hint="check the permissions of the cache directory (CONVEYOR_CACHE_DIR)",
            ) from exc

    # -- filling ---------------------------------------------------------------------------------

    def _fill(self, source: Source, version: str, path: Path) -> Path:
        from filelock import FileLock, Timeout

        key_dir = path.parent
        self._mkdir(key_dir)
        lock = FileLock(fs.lock_path(path), timeout=self.lock_timeout)
        try:
            with lock:
                if path.is_dir():
                    logger.debug("cache filled by another process version=%s", version)
                    if not _touch(path):
                        write_meta(path, source, version, fs.tree_size(path))
                        _touch(path)
                    return path
                fs.sweep(key_dir, held=version)
                self._make_room(source, version, path)
                self._fetch_into_place(source, version, path)
        except Timeout as exc:
            raise CacheError(
                f"timed out after {self.lock_timeout:g}s waiting for another process "
                f"to fetch {version} into the cache",
                hint=f"if no conveyor process is running, remove {fs.lock_path(path)}",
            ) from exc
        except OSError as exc:
            raise self._disk_error("lock", version, path, exc) from exc
        try:
            entries_.prune(self.root, self.max_bytes, keep=frozenset({path}), lazy=True)
        except (OSError, CacheError) as exc:  # the checkout is fine; only the budget slipped
            logger.warning("cache budget not enforced version=%s error=%s", version, exc)
        return path

    def _make_room(self, source: Source, version: str, path: Path) -> None:
        """Before a fill: evict down to the budget, less the version's expected size when the
        source can tell it, and until that much is free on the disk. Never the version's own
        source's scratch directory (the fill is about to use it)."""
        try:
            expected = source.expected_size(version, self.context)
        except (ConveyorError, OSError) as exc:
            logger.debug("no expected size version=%s error=%s", version, exc)
            expected = None
        budget = self.max_bytes if expected is None else max(self.max_bytes - expected, 0)
        keep = frozenset({path, path.parent / _SCRATCH})
        try:
            entries_.prune(self.root, budget, keep=keep, free_needed=expected or 0, lazy=True)
        except (OSError, CacheError) as exc:
            logger.warning("cache could not make room version=%s error=%s", version, exc)

    def _fetch_into_place(self, source: Source, version: str, path: Path) -> None:
        try:
            index = fetch_into_place(self, source, version, path)
        except OSError as exc:
            raise self._disk_error("fetch", version, path, exc) from exc
        except Exception as exc:
            if out_of_space(exc) is not None:
                raise self._disk_error("fetch", version, path, exc) from exc
            raise
        _touch(path)
        if index.size > self.max_bytes:
            logger.warning(
                "version larger than cache budget version=%s bytes=%d max_bytes=%d",
                version,
                index.size,
                self.max_bytes,
            )

    # -- bookkeeping of scratch directories and errors ------------------------------------------

    def _record_scratch(self, source: Source, path: Path) -> None:
        """Write ``.scratch.meta.json`` (size, files; its mtime is the last use)."""
        try:
            size, files = fs.tree_size(path)
            fs.write_json_atomic(
                fs.meta_path(path),
                tmp=path.with_name(fs.temp_name(fs.TMP_PREFIX, path.name)),
                data={
                    "kind": entries_.SCRATCH,
                    "source_key": path.parent.name,
                    "source": source.describe(),
                    "size": size,
                    "files": files,
                },
            )
        except OSError as exc:  # bookkeeping only: the next use records it again
            logger.warning("cache could not record scratch path=%s error=%s", path, exc)

    def _mkdir(self, path: Path) -> None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if out_of_space(exc) is not None:
                raise self._disk_error("create", "a directory", path, exc) from exc
            raise CacheError(
                f"cannot create cache directory {path}: {exc.strerror or exc}",
                hint="set CONVEYOR_CACHE_DIR to a writable directory",
            ) from exc

    def _disk_error(self, action: str, what: str, path: Path, exc: BaseException) -> CacheError:
        """The `CacheError` for a failed disk operation; a full disk names the cache and why."""
        full = out_of_space(exc)
        if full is not None:
            reason = full.strerror or "No space left on device"
            if full.filename and str(full.filename) not in reason:
                reason = f"{reason}: {full.filename}"
            return CacheError(
                f"the code cache at {self.root} is out of space: could not {action} {what} "
                f"at {path}: {reason}",
                hint=f"free space on the disk of {self.root}, or lower CONVEYOR_CACHE_MAX_BYTES "
                f"(now {self.max_bytes} bytes) / run `conveyor cache prune`",
            )
        strerror = exc.strerror if isinstance(exc, OSError) else None
        return CacheError(
            f"code cache could not {action} {what} at {path}: {strerror or exc}",
            hint="check free space and permissions of the cache directory (CONVEYOR_CACHE_DIR)",
        )


def _from_spec(spec: Mapping[str, Any]) -> Source:
    from conveyor.sources import source_from_spec

    return source_from_spec(spec)


def _touch(path: Path) -> bool:
    """Record a use of ``path``; True when the checkout is there (the warm path)."""
    now = time.time_ns()
    try:
        os.utime(fs.meta_path(path), ns=(now, now))
    except PermissionError:
        pass  # a cache shared read-only: usable, but its use cannot be recorded
    except OSError:
        return False  # missing: the cold path fills it, or reports why it cannot
    return path.is_dir()

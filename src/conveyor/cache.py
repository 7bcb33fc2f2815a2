"""The code cache: one directory per version of each source, fetched once, verified, read-only.

``CodeCache(root, max_bytes=...).ensure(source, version)`` returns
``<root>/<source-key>/<version>``:

- **warm**: the checkout exists (it is renamed into place complete, so existence means complete):
  touch its "last used" time and return. No lock, no source call, no network.
- **cold**: take the version's fill lock (`filelock`, so one fetch across processes), look again,
  fetch into a temporary sibling, verify, record metadata, make it read-only, `os.replace` it into
  place, then evict least-recently-used unleased versions until the byte budget holds.

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
locked (``.scratch.lock``) around the source's ``fetch`` and ``verify``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor import _cachefs as fs
from conveyor._verified import copy_out, proof_path, write_proof
from conveyor.errors import CacheError, ConfigError
from conveyor.sources.base import FetchContext

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from conveyor._expected import Copied
    from conveyor.settings import Settings
    from conveyor.sources.base import Source

__all__ = ["CacheEntry", "CacheInfo", "CodeCache", "proof_path"]

logger = logging.getLogger(__name__)

_SCRATCH = ".scratch"


@dataclass(frozen=True)
class CacheEntry:
    """One checkout in the cache. ``source`` is the redacted one-line source description."""

    source_key: str
    version: str
    path: Path
    size: int
    last_used: datetime
    leased: bool
    source: str
    files: int = 0


@dataclass(frozen=True)
class CacheInfo:
    """The cache as a whole: where it is, its budget, and what it holds."""

    root: Path
    max_bytes: int
    used_bytes: int
    entry_count: int
    leased_count: int


class CodeCache:
    """Verified, read-only checkouts of source versions under ``root``, within ``max_bytes``.

    The budget is best effort: leased versions (and a version being returned right now) are never
    evicted, so the cache may exceed it while they are in use.
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
        _mkdir(path)
        return path

    @contextmanager
    def scratch(self, source: Source) -> Iterator[FetchContext]:
        """The context for ``source``'s fetch and verify: with its scratch directory, held
        locked across processes, when it uses one (``uses_scratch``)."""
        from filelock import FileLock, Timeout

        if not source.uses_scratch:
            yield self.context
            return
        path = self.scratch_dir(source)
        lock = FileLock(str(path) + ".lock", timeout=self.lock_timeout)
        try:
            with lock:
                yield self.context.with_scratch(path)
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
            return path
        return self._fill(source, version, path)

    @contextmanager
    def checkout(self, source: Source | Mapping[str, Any], version: str) -> Iterator[Path]:
        """The one way to get a usable tree: ``version`` of ``source`` (a `Source` or a stored
        spec), fetched and verified if needed, kept from eviction until the block exits."""
        from conveyor.sources.base import Source

        built = source if isinstance(source, Source) else _from_spec(source)
        with self.lease(built, version) as path:
            yield path

    def copy_out(self, source: Source | Mapping[str, Any], version: str, dest: Path) -> Copied:
        """Copy ``version`` into ``dest`` (a new or empty directory) as writable files, each
        checked against the version as it is copied (see `conveyor._verified`); the one way a
        checkout leaves the cache for code that will run or be handed to a user.

        A checkout that no longer matches its version is discarded and fetched again, once;
        then `IntegrityError` (naming the file) and ``dest`` is left empty.
        """
        from conveyor.sources.base import Source

        built = source if isinstance(source, Source) else _from_spec(source)
        return copy_out(self, built, version, Path(dest))

    @contextmanager
    def lease(self, source: Source, version: str) -> Iterator[Path]:
        """`ensure` the version and keep it from eviction (by any process) until the block exits."""
        path = self.path_for(source, version)
        _mkdir(path.parent)
        try:
            fd = fs.lock_shared(fs.lease_path(path), timeout=self.lease_timeout)
        except OSError as exc:
            raise _disk_error("lease", version, path, exc) from exc
        try:
            yield self.ensure(source, version)
        finally:
            _touch(path)
            os.close(fd)

    def entries(self) -> list[CacheEntry]:
        """Every checkout in the cache, least recently used first."""
        found: list[CacheEntry] = []
        for key_dir in _subdirs(self.root):
            for path in _subdirs(key_dir):
                entry = _read_entry(key_dir.name, path)
                if entry is not None:
                    found.append(entry)
        found.sort(key=lambda e: (e.last_used, e.source_key, e.version))
        return found

    def info(self) -> CacheInfo:
        """Totals over `entries`."""
        entries = self.entries()
        return CacheInfo(
            root=self.root,
            max_bytes=self.max_bytes,
            used_bytes=sum(e.size for e in entries),
            entry_count=len(entries),
            leased_count=sum(e.leased for e in entries),
        )

    def prune(self, *, max_bytes: int | None = None) -> list[CacheEntry]:
        """Evict least-recently-used unleased versions until the cache holds at most ``max_bytes``
        (the cache's budget by default); also remove debris of killed fills. Returns the evicted."""
        budget = self.max_bytes if max_bytes is None else max_bytes
        if budget < 0:
            raise ConfigError(f"max_bytes must be >= 0, not {budget}")
        try:
            return self._prune(budget, keep=None)
        except OSError as exc:
            raise CacheError(
                f"could not prune the code cache at {self.root}: {exc.strerror or exc}",
                hint="check the permissions of the cache directory (CONVEYOR_CACHE_DIR)",
            ) from exc

    # -- filling ---------------------------------------------------------------------------------

    def _fill(self, source: Source, version: str, path: Path) -> Path:
        from filelock import FileLock, Timeout

        key_dir = path.parent
        _mkdir(key_dir)
        lock = FileLock(fs.lock_path(path), timeout=self.lock_timeout)
        try:
            with lock:
                if path.is_dir():
                    logger.debug("cache filled by another process version=%s", version)
                    if not _touch(path):
                        self._write_meta(source, version, path, fs.tree_size(path))
                    return path
                fs.sweep(key_dir, held=version)
                self._fetch_into_place(source, version, path)
        except Timeout as exc:
            raise CacheError(
                f"timed out after {self.lock_timeout:g}s waiting for another process "
                f"to fetch {version} into the cache",
                hint=f"if no conveyor process is running, remove {fs.lock_path(path)}",
            ) from exc
        except OSError as exc:
            raise _disk_error("lock", version, path, exc) from exc
        try:
            self._prune(self.max_bytes, keep=path)
        except (OSError, CacheError) as exc:  # the checkout is fine; only the budget slipped
            logger.warning("cache budget not enforced version=%s error=%s", version, exc)
        return path

    def _fetch_into_place(self, source: Source, version: str, path: Path) -> None:
        started = time.perf_counter()
        tmp = path.with_name(fs.temp_name(fs.TMP_PREFIX, version))
        try:
            tmp.mkdir()
            with self.scratch(source) as ctx:
                source.fetch(version, tmp, ctx)
                fetched = time.perf_counter()
                source.verify(version, tmp, ctx)
                verified = time.perf_counter()
                proof = source.proof(version, tmp, ctx)
            size_files = fs.seal_tree(tmp)
            write_proof(path, proof)
            self._write_meta(source, version, path, size_files)
            os.replace(tmp, path)
        except OSError as exc:
            fs.discard(tmp)
            raise _disk_error("fetch", version, path, exc) from exc
        except BaseException:
            fs.discard(tmp)
            raise
        done = time.perf_counter()
        logger.info(
            "cache filled version=%s source=%s bytes=%d files=%d fetch_s=%.3f verify_s=%.3f "
            "seal_s=%.3f",
            version,
            source.describe(),
            size_files[0],
            size_files[1],
            fetched - started,
            verified - fetched,
            done - verified,
        )
        if size_files[0] > self.max_bytes:
            logger.warning(
                "version larger than cache budget version=%s bytes=%d max_bytes=%d",
                version,
                size_files[0],
                self.max_bytes,
            )

    def _write_meta(
        self, source: Source, version: str, path: Path, size_files: tuple[int, int]
    ) -> None:
        fs.write_json_atomic(
            fs.meta_path(path),
            tmp=path.with_name(fs.temp_name(fs.TMP_PREFIX, version)),
            data={
                "version": version,
                "source_key": path.parent.name,
                "source": source.describe(),
                "size": size_files[0],
                "files": size_files[1],
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )
        _touch(path)

    # -- eviction --------------------------------------------------------------------------------

    def _prune(self, budget: int, *, keep: Path | None) -> list[CacheEntry]:
        for key_dir in _subdirs(self.root):
            fs.sweep(key_dir)
        entries = self.entries()
        used = sum(e.size for e in entries)
        evicted: list[CacheEntry] = []
        for entry in entries:
            if used <= budget:
                break
            if entry.leased or entry.path == keep:
                continue
            if _evict(entry):
                used -= entry.size
                evicted.append(replace(entry, leased=False))
        if used > budget:
            logger.warning(
                "cache over budget used_bytes=%d max_bytes=%d reason=versions in use", used, budget
            )
        return evicted


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


def _evict(entry: CacheEntry) -> bool:
    """Remove one checkout unless a lease or a fill holds it; True if it was removed."""
    from filelock import FileLock, Timeout

    path = entry.path
    try:
        lease_fd = fs.try_lock_exclusive(fs.lease_path(path))
    except OSError as exc:
        raise _disk_error("evict", entry.version, path, exc) from exc
    if lease_fd is None:
        return False
    trash = path.with_name(fs.temp_name(fs.TRASH_PREFIX, entry.version))
    try:
        with FileLock(fs.lock_path(path), timeout=0):
            if not path.is_dir():
                return False
            os.replace(path, trash)
            fs.meta_path(path).unlink(missing_ok=True)
            fs.lease_path(path).unlink(missing_ok=True)
            proof_path(path).unlink(missing_ok=True)
    except Timeout:
        return False
    except OSError as exc:
        raise _disk_error("evict", entry.version, path, exc) from exc
    finally:
        os.close(lease_fd)
    fs.discard(trash)
    logger.info(
        "cache evicted version=%s source_key=%s bytes=%d",
        entry.version,
        entry.source_key,
        entry.size,
    )
    return True


def _read_entry(source_key: str, path: Path) -> CacheEntry | None:
    meta_file = fs.meta_path(path)
    meta = fs.read_meta(meta_file) or {}
    try:
        stamp = os.stat(meta_file).st_mtime_ns
    except FileNotFoundError:
        try:
            stamp = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            return None  # evicted while we looked
    size, files = meta.get("size"), meta.get("files")
    if not isinstance(size, int) or not isinstance(files, int):
        size, files = fs.tree_size(path)
    return CacheEntry(
        source_key=source_key,
        version=path.name,
        path=path,
        size=size,
        last_used=datetime.fromtimestamp(stamp / 1e9, UTC),
        leased=fs.is_leased(fs.lease_path(path)),
        source=str(meta.get("source", "unknown")),
        files=files,
    )


def _subdirs(path: Path) -> list[Path]:
    """Directories in ``path`` whose names do not start with a dot; none if it is missing."""
    try:
        with os.scandir(path) as it:
            return [
                Path(e.path)
                for e in it
                if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
            ]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(
            f"cannot create cache directory {path}: {exc.strerror or exc}",
            hint="set CONVEYOR_CACHE_DIR to a writable directory",
        ) from exc


def _disk_error(action: str, version: str, path: Path, exc: OSError) -> CacheError:
    return CacheError(
        f"code cache could not {action} {version} at {path}: {exc.strerror or exc}",
        hint="check free space and permissions of the cache directory (CONVEYOR_CACHE_DIR)",
    )

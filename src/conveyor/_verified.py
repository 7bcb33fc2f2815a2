"""`CodeCache.copy_out`: a checkout leaves the cache only as a copy checked against its version.

A checkout is verified when it is fetched, but it then sits on disk for as long as it is used:
a flow running as the worker's user, a bad disk or a careless hand can change it. So every use
copies it through `conveyor._expected.copy_verified` (hashing each file in the same pass that
copies it) against the tree the source rebuilds from the evidence kept beside the checkout
(`Source.proof` / `Source.expected`; the evidence must hash to the version, so it need not be
trusted either). A source without digests (`Source.expected` returns None) has the copy checked
with its own `Source.verify` instead.

On a mismatch the copy is emptied, the checkout is discarded (unless another process has already
replaced it) and fetched again, and the copy is retried once; a second mismatch, or a fetch that
fails its own verification, raises `IntegrityError` naming the file.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor import _cachefs as fs
from conveyor._expected import Copied, copy_verified
from conveyor._fs import atomic_write, copy_writable
from conveyor.errors import CacheError, ConfigError, IntegrityError

if TYPE_CHECKING:
    from conveyor.cache import CodeCache
    from conveyor.sources.base import Source

__all__ = ["copy_out", "proof_path", "write_proof"]

logger = logging.getLogger(__name__)

MAX_PROOF_BYTES = 1 << 30
"""Evidence larger than this is not read (a git proof is the commit's trees: megabytes at most)."""


def copy_out(cache: CodeCache, source: Source, version: str, dest: Path) -> Copied:
    """See `CodeCache.copy_out`."""
    _prepare(dest)
    started = time.monotonic()
    for attempt in (1, 2):
        with cache.lease(source, version) as path:
            identity = _identity(path)
            fetched = time.monotonic()
            try:
                copied = _copy(cache, source, version, path, dest)
                return copied._replace(
                    fetch_seconds=fetched - started, copy_seconds=time.monotonic() - fetched
                )
            except IntegrityError as exc:
                _empty(dest)
                if attempt == 2:
                    raise
                logger.warning(
                    "cached checkout does not match its version, fetching it again "
                    "version=%s path=%s error=%s",
                    version,
                    path,
                    exc,
                )
        _discard(path, version, identity, timeout=cache.lock_timeout)
    raise AssertionError("unreachable")  # pragma: no cover


def proof_path(checkout: Path) -> Path:
    """``<key>/.proofs/<version>``: the evidence `Source.expected` reads (see `Source.proof`)."""
    return checkout.parent / ".proofs" / checkout.name


def write_proof(checkout: Path, proof: bytes | None) -> None:
    """Keep ``proof`` for the checkout at ``checkout`` (called under its fill lock)."""
    if proof is not None:
        proof_path(checkout).parent.mkdir(exist_ok=True)
        tmp = checkout.with_name(fs.temp_name(fs.TMP_PREFIX, checkout.name))
        with atomic_write(proof_path(checkout), tmp=tmp, mode=0o444) as out:
            out.write(proof)


def _copy(cache: CodeCache, source: Source, version: str, path: Path, dest: Path) -> Copied:
    expected = source.expected(version, _read_proof(proof_path(path)))
    if expected is not None:
        return copy_verified(path, expected, dest)
    copied = Copied(*copy_writable(path, dest))
    with cache.scratch(source) as ctx:
        source.verify(version, dest, ctx)
    return copied


def _read_proof(path: Path) -> bytes | None:
    """The evidence file's bytes, or None when it is missing (or is not a regular file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_PROOF_BYTES:
            return None
        return fh.read(MAX_PROOF_BYTES + 1)


def _identity(path: Path) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_dev, info.st_ino


def _prepare(dest: Path) -> None:
    try:
        dest.mkdir(mode=0o755, parents=True, exist_ok=True)
        empty = not any(dest.iterdir())
    except OSError as exc:
        raise ConfigError(f"cannot write code into {dest}: {exc.strerror or exc}") from exc
    if not empty:
        raise ConfigError(f"{dest} is not an empty directory", hint="pick a new directory")


def _empty(dest: Path) -> None:
    fs.remove_tree(dest)
    dest.mkdir(mode=0o755)


def _discard(path: Path, version: str, identity: tuple[int, int], *, timeout: float) -> None:
    """Move the mismatching checkout out of the way (under its fill lock), unless another
    process already did and filled a new one; the next `ensure` fetches it again."""
    from filelock import FileLock, Timeout

    trash = path.with_name(fs.temp_name(fs.TRASH_PREFIX, version))
    try:
        with FileLock(fs.lock_path(path), timeout=timeout):
            try:
                if _identity(path) != identity:
                    return
            except FileNotFoundError:
                return
            os.replace(path, trash)
            fs.meta_path(path).unlink(missing_ok=True)
            proof_path(path).unlink(missing_ok=True)
    except Timeout as exc:
        raise CacheError(f"timed out discarding the mismatching checkout of {version}") from exc
    except OSError as exc:
        raise CacheError(
            f"could not discard the mismatching checkout of {version} at {path}: "
            f"{exc.strerror or exc}",
            hint="check the permissions of the cache directory (CONVEYOR_CACHE_DIR)",
        ) from exc
    logger.warning("discarded a cached checkout that did not match its version version=%s", version)
    fs.discard(trash)

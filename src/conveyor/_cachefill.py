"""One fill of the code cache: fetch into a temporary sibling, verify, seal into objects, rename.

Called by `CodeCache` under the version's fill lock, with room already made:

1. the source fetches into ``<key>/.tmp-<version>-<hex>/`` with a `Fill` of the object store in
   its context (``ctx.objects``): files the store already holds are linked, not written;
2. the source verifies the tree (files the fill wrote or linked are not hashed again: their
   digests are known) and gives its proof;
3. `conveyor._cacheindex.seal` makes every file a link to its object (storing the new ones),
   the directories read-only; the index must agree with what the proof says;
4. proof, index and metadata are written beside it, and the tree is renamed into place; the
   use that follows in this process need not check it again (`conveyor._verified.filled`).

A process killed at any point leaves the temporary directory (removed by the next fill or
prune, which frees objects nobody links any more) and, at worst, objects whose stamps are
stale or missing: they are hashed when next used. An object is only ever stored under the
sha256 of bytes this process wrote and hashed itself.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor import _cachefs as fs
from conveyor._cacheindex import Index, agrees, read_index, seal, write_index
from conveyor._collector import paused
from conveyor._objects import Fill
from conveyor._premade import make_spare
from conveyor._verified import filled, write_proof

if TYPE_CHECKING:
    from conveyor.cache import CodeCache
    from conveyor.sources.base import Source

__all__ = ["fetch_into_place", "source_aliases", "source_dirs", "write_meta"]

logger = logging.getLogger(__name__)


def fetch_into_place(cache: CodeCache, source: Source, version: str, path: Path) -> Index:
    """Fill ``path`` (see the module docstring); raises what the source raises, or `OSError`,
    with the temporary directory removed. The cyclic garbage collector is paused meanwhile (a
    fill makes many objects and no garbage cycles: `conveyor._collector`)."""
    with paused():
        return _fill(cache, source, version, path)


def _fill(cache: CodeCache, source: Source, version: str, path: Path) -> Index:
    started = time.perf_counter()
    tmp = path.with_name(fs.temp_name(fs.TMP_PREFIX, version))
    fill = Fill(
        cache.objects,
        aliases=lambda: source_aliases(path.parent),
        shape=lambda: source_dirs(path.parent),
        spares=os.fspath(path.parent),
    )
    try:
        tmp.mkdir()
        with cache.scratch(source) as ctx:
            ctx = ctx.with_objects(fill)
            source.fetch(version, tmp, ctx)
            fetched = time.perf_counter()
            source.verify(version, tmp, ctx)
            verified = time.perf_counter()
            proof = source.proof(version, tmp, ctx)
        expected = source.expected(version, proof)
        for rel, data in (expected.extra if expected is not None else {}).items():
            _write_extra(tmp / rel, data)
        index = seal(tmp, fill)
        if expected is not None:
            agrees(index, expected, tmp)
        write_proof(path, proof)
        write_index(path, index, tmp=path.with_name(fs.temp_name(fs.TMP_PREFIX, version)))
        write_meta(path, source, version, (index.size, len(index.files) + len(index.links)))
        os.replace(tmp, path)
        filled(path)
        if fill.premaking:  # its next fill puts them in place instead of waiting for them
            make_spare(os.fspath(path.parent), index.dirs)
    except BaseException:
        fill.close()  # before removing what it linked: a prune may then take the objects
        fs.discard(tmp)
        raise
    finally:
        fill.close()
    done = time.perf_counter()
    logger.info(
        "cache filled version=%s source=%s bytes=%d files=%d linked=%d fetch_s=%.3f "
        "verify_s=%.3f seal_s=%.3f",
        version,
        source.describe(),
        index.size,
        len(index.files),
        fill.linked,
        fetched - started,
        verified - fetched,
        done - verified,
    )
    return index


def _write_extra(path: Path, data: bytes) -> None:
    """A file every checkout of the version holds (a bundle's manifest), when the fetch left it
    out: written from the evidence, which hashes to the version."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def write_meta(path: Path, source: Source, version: str, size_files: tuple[int, int]) -> None:
    """``<key>/<version>.meta.json``: size and file count as if nothing were shared, the
    redacted source, when it was made. Its mtime is the version's last use."""
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


ALIAS_INDEXES = 8
"""How many of a source's checkouts (the most recently filled) a fill takes aliases from."""


def source_aliases(key_dir: Path) -> dict[str, str]:
    """``algorithm:digest`` → sha256 from the indexes of the source's latest checkouts (git blob
    ids: a new commit links the files it shares with those already cached)."""
    found: dict[str, str] = {}
    for name in _latest_indexes(key_dir)[-ALIAS_INDEXES:]:
        index = read_index(key_dir / name)  # remembered while its file is unchanged
        if index is not None:
            found.update(index.aliases())
    return found


def source_dirs(key_dir: Path) -> frozenset[str]:
    """The directories of the source's most recently filled checkout (a new version mostly has
    them too: a fill makes them while it waits, see `conveyor._premade`)."""
    latest = _latest_indexes(key_dir)[-1:]
    index = read_index(key_dir / latest[0]) if latest else None
    return index.dirs if index is not None else frozenset()


def _latest_indexes(key_dir: Path) -> list[str]:
    """The versions with an index in ``key_dir``, the most recently written last."""
    try:
        with os.scandir(key_dir / ".index") as it:
            listed = [(e.stat().st_mtime_ns, e.name) for e in it if e.is_file()]
    except OSError:
        return []
    return [name for _mtime, name in sorted(listed)]

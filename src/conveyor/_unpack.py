"""`unpack`: a bundle archive into a directory, safely, in one streaming pass (see
`conveyor.bundles`).

One pass: the zstd stream is decompressed and cut into members (`conveyor._tarstream`) by the
calling thread while a second thread hashes and writes the files (both release the GIL: on two
cores the decompression and the writing overlap), with at most `_IN_FLIGHT` bytes between them.
Every file is hashed as it is written and checked against the manifest, which comes first and
must be ``expected_version``'s. With the code cache's object store (``objects``), a file whose
bytes are stored already is linked, not written: its data is only decompressed past.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO

from conveyor._manifest import RESERVED_DIR, Manifest, ManifestEntry, unsafe_path_reason
from conveyor._target import Target
from conveyor._tarstream import Member, TarFormatError, TarStream
from conveyor._tree import MANIFEST_PATH
from conveyor.errors import BundleError, IntegrityError, UnsafeArchive

if TYPE_CHECKING:
    from conveyor._objects import Fill

__all__ = ["UnpackLimits", "unpack"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_MAX_MANIFEST = 64 * 1024 * 1024
_MAX_WINDOW = 1 << 25  # bounds the decompressor's memory; pack's level 3 uses at most 2 MiB
_IN_FLIGHT = 4 << 20
"""Bytes read from the archive and not written yet, at most (the writer thread's backlog)."""
_WHOLE = 1 << 20
"""Files up to this size are handed to the writer threads whole; larger ones are streamed."""
_THREADED = 16 << 20
"""Archives of fewer bytes than this are written on the reading thread: handing their files to
writer threads costs more than the threads save (a 5 MB tree unpacks in ~25 ms)."""
_WRITERS = 2
"""Writer threads: opening, hashing and writing small files costs more than cutting them out
of the stream, and all of it but the parsing releases the GIL."""


@dataclass(frozen=True)
class UnpackLimits:
    """What `unpack` accepts at most: tree entries (files, links, dirs) and bytes of content."""

    max_entries: int = 100_000
    max_bytes: int = 2 * 1024**3


def _read_manifest(tar: TarStream, limits: UnpackLimits) -> Manifest:
    first = tar.next()
    if first is None or first.name != MANIFEST_PATH or not first.isreg():
        raise BundleError(
            "archive is not a Conveyor bundle: it does not start with .conveyor/manifest.json"
        )
    if first.size > _MAX_MANIFEST:
        raise UnsafeArchive(f"refusing archive: its manifest is larger than {_MAX_MANIFEST} bytes")
    manifest = Manifest.from_canonical(b"".join(tar.data()))
    if manifest.file_count > limits.max_entries:
        raise UnsafeArchive(
            f"refusing archive: it holds {manifest.file_count} files, more than the limit of "
            f"{limits.max_entries}"
        )
    if manifest.total_size > limits.max_bytes:
        raise UnsafeArchive(
            f"refusing archive: it holds {manifest.total_size} bytes, more than the limit of "
            f"{limits.max_bytes}"
        )
    return manifest


def _member_reason(member: Member) -> str | None:
    reason = unsafe_path_reason(member.name)
    if reason is not None:
        return reason
    if member.name.split("/")[0] == RESERVED_DIR:
        return f"{RESERVED_DIR}/ is reserved for bundle metadata"
    if member.ischr() or member.isblk():
        return "device file"
    if member.isfifo():
        return "fifo"
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        return f"unsupported member type {member.type!r}"
    if member.islnk() and unsafe_path_reason(member.linkname):
        return f"hardlink to {member.linkname!r} leaves the tree"
    return None


def _check_entry(member: Member, entry: ManifestEntry | None) -> None:
    name = member.name
    if entry is None:
        raise IntegrityError(f"unexpected file: {name} (not in the bundle's manifest)", path=name)
    if entry.is_link != member.issym():
        raise IntegrityError(f"file type differs: {name} (from the bundle's manifest)", path=name)
    if member.issym() and member.linkname != entry.link_target:
        raise IntegrityError(f"symlink target differs: {name}", path=name)
    if member.isreg() and (member.size != entry.size):
        raise IntegrityError(f"content differs: {name} (size)", path=name)
    if member.isreg() and bool(member.mode & 0o100) != entry.executable:
        raise IntegrityError(f"executable bit differs: {name}", path=name)


class _Writer:
    """Writes files on background threads, keeping at most `_IN_FLIGHT` bytes queued; the
    first failure is raised in the calling thread by the next `submit` or by `drain`."""

    def __init__(self, target: Target, objects: Fill | None, *, threaded: bool = True) -> None:
        self.target = target
        self.objects = objects
        self.pool = (
            ThreadPoolExecutor(max_workers=_WRITERS, thread_name_prefix="unpack")
            if threaded
            else None
        )
        self.pending: deque[tuple[Future[None], int]] = deque()
        self.queued = 0

    def submit(
        self, name: str, data: Iterable[bytes | memoryview], size: int, entry: ManifestEntry
    ) -> None:
        """Write ``name`` from ``data``: a small file on the writer thread (its chunks are views
        of immutable buffers, kept until written), a large one streamed on this thread."""
        while self.pending and (self.queued + size > _IN_FLIGHT or self.pending[0][0].done()):
            self._finish_one()
        if size > _WHOLE or self.pool is None:  # written on this thread, in order
            self.drain()
            self._write(name, data, entry)
            return
        chunks = list(data)
        self.pending.append((self.pool.submit(self._write, name, chunks, entry), size))
        self.queued += size

    def _finish_one(self) -> None:
        future, size = self.pending.popleft()
        self.queued -= size
        future.result()

    def drain(self) -> None:
        while self.pending:
            self._finish_one()

    def close(self) -> None:
        for future, _size in self.pending:
            future.cancel()
        if self.pool is not None:
            self.pool.shutdown(wait=True)

    def _write(self, name: str, data: Iterable[bytes | memoryview], entry: ManifestEntry) -> None:
        digest, written, st = self.target.write_new(name, data, executable=entry.executable)
        if digest != entry.sha256 or written != entry.size:
            raise IntegrityError(f"content differs: {name} (from the bundle's manifest)", path=name)
        if self.objects is not None:
            self.target.wrote(name, self.objects, digest, st)


def _extract(
    tar: TarStream,
    target: Target,
    manifest: Manifest,
    limits: UnpackLimits,
    objects: Fill | None,
) -> None:
    expected = manifest.by_path
    if objects is not None:
        from conveyor._objects import object_name

        objects.expect(object_name(e.sha256, e.executable) for e in manifest.entries)
    count = total = 0
    seen: set[str] = set()
    writer = _Writer(target, objects, threaded=manifest.total_size >= _THREADED)
    try:
        while (member := tar.next()) is not None:
            name = member.name
            count += 1
            if count > limits.max_entries:
                raise UnsafeArchive(
                    f"refusing archive member {name!r}: more than {limits.max_entries} entries"
                )
            reason = _member_reason(member)
            if reason is not None:
                raise UnsafeArchive(f"refusing archive member {name!r}: {reason}")
            if name in seen:
                raise UnsafeArchive(f"refusing archive member {name!r}: it appears twice")
            seen.add(name)
            size = member.size if member.isreg() else 0
            if member.islnk():
                size = expected[member.linkname].size if member.linkname in expected else 0
            total += size
            if total > limits.max_bytes:
                raise UnsafeArchive(
                    f"refusing archive member {name!r}: more than {limits.max_bytes} bytes in all"
                )
            if member.isdir():
                target.make_dir(name)
                continue
            entry = expected.get(name)
            _check_entry(member, entry)
            assert entry is not None
            if member.issym():
                target.add_link(name, member.linkname)
                continue
            if objects is not None and member.isreg() and target.link_object(name, objects, entry):
                continue  # the store has these bytes: the member's data is skipped
            if member.islnk():
                if member.linkname not in target.files:
                    raise UnsafeArchive(
                        f"refusing archive member {name!r}: hardlink to {member.linkname!r}, "
                        "which is not an earlier file of the archive"
                    )
                writer.drain()
                target.claim(name)
                writer.submit(name, target.read_written(member.linkname), entry.size, entry)
                continue
            target.claim(name)
            writer.submit(name, tar.data(), entry.size, entry)
        writer.drain()
    finally:
        writer.close()
    target.create_links()
    missing = sorted(expected.keys() - seen)
    if missing:
        first = missing[0]
        raise IntegrityError(f"missing: {first} (listed in the bundle's manifest)", path=first)


def unpack(
    archive: Path | BinaryIO,
    dest: Path,
    *,
    expected_version: str | None = None,
    limits: UnpackLimits = UnpackLimits(),
    objects: Fill | None = None,
) -> Manifest:
    """Unpack a bundle into ``dest`` (new, or an existing empty directory), in one streaming pass.

    Refuses, with `UnsafeArchive` naming the member: absolute paths, ``..``, symlinks or
    hardlinks leaving the tree, devices and fifos, more entries or bytes than ``limits``. Raises
    `IntegrityError` when the archive is not ``expected_version`` or a file does not match the
    embedded manifest (every file is hashed as it is written). On any error nothing is left in
    ``dest``. The manifest is kept at ``dest/.conveyor/manifest.json`` (`verify_tree` uses it to
    name a differing path); it is never part of the tree's version.

    ``objects`` (the code cache's `conveyor._objects.Fill`, with ``dest`` an existing empty
    directory): a file whose bytes the store holds is linked from it, not written (its data is
    only decompressed past); every file written is reported with its digest, so verifying the
    tree afterwards hashes nothing again.
    """
    import zstandard

    with Target(Path(dest), sealed=objects is not None) as target:
        try:
            fh: IO[bytes] = (
                open(archive, "rb")  # noqa: SIM115 - closed below
                if isinstance(archive, str | os.PathLike)
                else archive
            )
        except OSError as exc:
            raise BundleError(f"cannot read archive {archive}: {exc.strerror}") from None
        try:
            decompressor = zstandard.ZstdDecompressor(max_window_size=_MAX_WINDOW)
            reader = decompressor.stream_reader(fh, read_size=_CHUNK, closefd=False)
            tar = TarStream(reader)
            manifest = _read_manifest(tar, limits)
            if expected_version is not None and manifest.version != expected_version:
                raise IntegrityError(
                    f"archive holds {manifest.version[:19]}, not the expected "
                    f"{expected_version[:19]}",
                    hint="the stored bundle was replaced or corrupted; push it again",
                )
            _extract(tar, target, manifest, limits, objects)
        except (TarFormatError, zstandard.ZstdError, EOFError) as exc:
            raise BundleError(
                f"archive is corrupt or not a Conveyor bundle: {exc}",
                hint="if it came from a bundle store, deploy again: a deploy stores an archive "
                "again when its size is not the bundle's",
            ) from None
        finally:
            if fh is not archive:
                fh.close()
        digest, _size = target.write_file(MANIFEST_PATH, [manifest.canonical()], executable=False)
        if objects is not None:
            target.wrote(MANIFEST_PATH, objects, digest)
            objects.unpacked = (os.fspath(dest), manifest.version)
    logger.debug(
        "unpacked version=%s files=%d dest=%s", manifest.version, manifest.file_count, dest
    )
    return manifest

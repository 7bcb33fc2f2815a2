"""The code layer: one deterministic gzip'd tar of a bundle tree, and its safe unpacking.

`write_code_layer` writes the bundled files of a tree (`conveyor.bundles.build_manifest`: the
same ignore rules as a bundle) under a fixed directory (``/opt/conveyor/code`` by default):
first the directory entries down to it, then ``.conveyor/manifest.json`` (the bundle manifest,
so a container can verify its code too), then every file and symlink in path order, each
preceded by any directory entry it needs. Metadata is normalised (mtime 0, uid/gid 0, no user
or group names, mode 0644/0755, directories 0755), and gzip gets no name and mtime 0, so the same
tree gives the same layer digest on any machine (for one zlib; the uncompressed ``diff_id``
never depends on it).

`unpack_code_layer` streams a layer (verified by its digest as it is read) into an empty
directory through `conveyor._target.Target`: only members under the code directory are kept
(with that prefix removed), and absolute paths, ``..``, links leaving the tree, hardlinks,
devices, whiteouts and more entries or bytes than the limits are refused with `UnsafeArchive`.
It does not decide whether the tree is the right code: the source's ``verify`` does.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from conveyor._manifest import RESERVED_DIR, Manifest, unsafe_path_reason
from conveyor._target import Target
from conveyor.bundles import MANIFEST_PATH, UnpackLimits, build_manifest
from conveyor.errors import BundleError, UnsafeArchive

__all__ = ["CODE_DIR", "LayerInfo", "unpack_code_layer", "write_code_layer"]

CODE_DIR = "/opt/conveyor/code"
GZIP_LEVEL = 6
_CHUNK = 1 << 20


@dataclass(frozen=True)
class LayerInfo:
    """What a written layer is: its digest (compressed), diff_id (uncompressed) and size."""

    digest: str
    diff_id: str
    size: int
    bundle_version: str
    files: int


class _Hashing(io.RawIOBase):
    """A write-only stream that hashes and counts what passes to ``out``."""

    def __init__(self, out: IO[bytes] | None) -> None:
        self.out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.hash.update(data)
        self.size += len(data)
        if self.out is not None:
            self.out.write(data)
        return len(data)


def _info(
    name: str, *, size: int = 0, mode: int = 0o644, kind: bytes = tarfile.REGTYPE
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = mode
    info.type = kind
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _prefix(code_dir: str) -> str:
    clean = posixpath.normpath("/" + code_dir.strip("/")).lstrip("/")
    if not clean or unsafe_path_reason(clean):
        raise BundleError(f"code directory {code_dir!r} is not a usable absolute path")
    return clean


def write_code_layer(
    tree: Path, out: IO[bytes], *, code_dir: str = CODE_DIR, manifest: Manifest | None = None
) -> LayerInfo:
    """Write the code layer of ``tree`` to ``out``; see the module docstring."""
    prefix = _prefix(code_dir)
    manifest = manifest if manifest is not None else build_manifest(Path(tree))
    compressed = _Hashing(out)
    plain = _Hashing(None)
    with gzip.GzipFile(
        filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=GZIP_LEVEL
    ) as zipped:
        tee = _Tee(zipped, plain)
        with tarfile.open(fileobj=tee, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            made: set[str] = set()

            def parents(path: str) -> None:
                parts = path.split("/")[:-1]
                for i in range(1, len(parts) + 1):
                    directory = "/".join(parts[:i])
                    if directory not in made:
                        made.add(directory)
                        tar.addfile(_info(directory + "/", mode=0o755, kind=tarfile.DIRTYPE))

            data = manifest.canonical()
            name = f"{prefix}/{MANIFEST_PATH}"
            parents(name)
            tar.addfile(_info(name, size=len(data)), io.BytesIO(data))
            root = os.fspath(tree)
            for entry in manifest.entries:
                name = f"{prefix}/{entry.path}"
                parents(name)
                if entry.link_target is not None:
                    info = _info(name, mode=0o777, kind=tarfile.SYMTYPE)
                    info.linkname = entry.link_target
                    tar.addfile(info)
                    continue
                mode = 0o755 if entry.executable else 0o644
                with open(os.path.join(root, entry.path), "rb") as src:
                    tar.addfile(_info(name, size=entry.size, mode=mode), src)
    return LayerInfo(
        digest="sha256:" + compressed.hash.hexdigest(),
        diff_id="sha256:" + plain.hash.hexdigest(),
        size=compressed.size,
        bundle_version=manifest.version,
        files=manifest.file_count,
    )


class _Tee(io.RawIOBase):
    def __init__(self, first: gzip.GzipFile, second: _Hashing) -> None:
        self.first = first
        self.second = second

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.first.write(data)
        self.second.write(data)
        return len(data)


def _member_path(member: tarfile.TarInfo, prefix: str) -> str | None:
    """The member's path inside the code directory, or None when it is outside it."""
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    name = name.lstrip("/").rstrip("/")
    if name == prefix or not name.startswith(prefix + "/"):
        return None
    return name[len(prefix) + 1 :]


def unpack_code_layer(
    stream: IO[bytes],
    dest: Path,
    *,
    code_dir: str = CODE_DIR,
    limits: UnpackLimits = UnpackLimits(),
) -> int:
    """Unpack the code directory of a gzip'd layer into ``dest``; returns the files written."""
    prefix = _prefix(code_dir)
    count = total = 0
    with Target(Path(dest)) as target:
        try:
            with tarfile.open(fileobj=stream, mode="r|gz") as tar:
                for member in tar:
                    rel = _member_path(member, prefix)
                    if rel is None:
                        continue
                    count += 1
                    if count > limits.max_entries:
                        raise UnsafeArchive(
                            f"refusing layer: more than {limits.max_entries} entries"
                        )
                    _check(member, rel)
                    if member.isdir():
                        target.make_dir(rel)
                    elif member.issym():
                        target.add_link(rel, member.linkname)
                    else:
                        total += member.size
                        if total > limits.max_bytes:
                            raise UnsafeArchive(
                                f"refusing layer: more than {limits.max_bytes} bytes of code"
                            )
                        source = tar.extractfile(member)
                        assert source is not None
                        target.write_file(
                            rel, _chunks(source), executable=bool(member.mode & 0o100)
                        )
            target.create_links()
        except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile, ValueError) as exc:
            if isinstance(exc, BundleError):
                raise
            raise BundleError(f"code layer is corrupt: {type(exc).__name__}: {exc}") from None
    return count


def _check(member: tarfile.TarInfo, rel: str) -> None:
    reason = unsafe_path_reason(rel)
    base = posixpath.basename(rel)
    if reason is None and base.startswith(".wh."):
        reason = "whiteout entries are not code"
    if reason is None and not (member.isreg() or member.isdir() or member.issym()):
        reason = "hardlink" if member.islnk() else "device, fifo or special file"
    reserved = rel.split("/")[0] == RESERVED_DIR and rel != MANIFEST_PATH
    if reason is None and reserved and not member.isdir():
        reason = f"{RESERVED_DIR}/ holds only the bundle manifest"
    if reason is not None:
        raise UnsafeArchive(f"refusing layer member {member.name!r}: {reason}")


def _chunks(source: IO[bytes]) -> Iterator[bytes]:
    while chunk := source.read(_CHUNK):
        yield chunk

"""An OCI image layout directory: images kept on this machine without a registry.

```
<root>/oci-layout            {"imageLayoutVersion": "1.0.0"}
<root>/index.json            the manifests, each named by org.opencontainers.image.ref.name
<root>/blobs/sha256/<hex>    manifests, configs and layers, by digest
```

Daemonless builds write here first (``$CONVEYOR_HOME/images``); a push copies from here. Blobs
are written once, atomically; `open_blob` and `manifest` verify what they read against the
digest. ``index.json`` is rewritten under a lock. Base-image layers a build only refers to are
not copied here: a manifest's ``org.opencontainers.image.base.name`` annotation says where
they are.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from conveyor._fs import atomic_write
from conveyor.errors import IntegrityError, SourceNotFound, VersionNotFound
from conveyor.sources.oci._reference import digest_of, is_digest

__all__ = ["REF_NAME", "ImageLayout"]

REF_NAME = "org.opencontainers.image.ref.name"
_CHUNK = 1 << 20


class ImageLayout:
    """The layout at ``root`` (nothing is created until something is written)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return f"image layout {self.root}"

    def blob_path(self, digest: str) -> Path:
        if not is_digest(digest):
            raise VersionNotFound(f"{digest[:80]!r} is not a sha256 digest")
        return self.root / "blobs" / "sha256" / digest.split(":", 1)[1]

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def put_bytes(self, data: bytes) -> str:
        """Store ``data``; its digest (nothing written when it is there)."""
        digest = digest_of(data)
        path = self.blob_path(digest)
        if not path.is_file():
            self._init()
            with atomic_write(path) as out:
                out.write(data)
        return digest

    def put_file(self, source: Path, digest: str) -> None:
        """Store the file ``source`` (already known to be ``digest``) unless it is there."""
        path = self.blob_path(digest)
        if path.is_file():
            return
        self._init()
        with source.open("rb") as src, atomic_write(path) as out:
            shutil.copyfileobj(src, out, _CHUNK)

    def read_blob(self, digest: str) -> bytes:
        """A small blob's bytes, verified."""
        try:
            data = self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise self._missing(digest) from None
        if digest_of(data) != digest:
            raise IntegrityError(f"blob {digest[:19]}… in {self.root} does not match its digest")
        return data

    @contextmanager
    def open_blob(self, digest: str) -> Iterator[IO[bytes]]:
        """A blob as a stream; `IntegrityError` at its end when it is not ``digest``."""
        from conveyor.sources.oci._stream import VerifiedStream

        try:
            fh = self.blob_path(digest).open("rb")
        except FileNotFoundError:
            raise self._missing(digest) from None
        with fh:
            size = os.fstat(fh.fileno()).st_size
            chunks = iter(lambda: fh.read(_CHUNK), b"")
            yield VerifiedStream(chunks, digest, size, f"{digest[:19]} in {self.root}")  # type: ignore[misc]

    def _missing(self, digest: str) -> VersionNotFound:
        if not (self.root / "oci-layout").is_file():
            return SourceNotFound(  # type: ignore[return-value]
                f"image layout {self.root} does not exist",
                source=self.describe(),
                hint="build the image on this machine first (images stay where they are built "
                "unless pushed)",
            )
        return VersionNotFound(
            f"{digest[:19]}… is not in {self.describe()}", source=self.describe()
        )

    # -- names -----------------------------------------------------------------------------

    def index(self) -> dict[str, Any]:
        try:
            data = json.loads((self.root / "index.json").read_text())
        except FileNotFoundError:
            return {"schemaVersion": 2, "manifests": []}
        except (OSError, ValueError) as exc:
            raise IntegrityError(f"{self.root}/index.json is unreadable: {exc}") from None
        return data if isinstance(data, dict) else {"schemaVersion": 2, "manifests": []}

    def resolve(self, name: str) -> str:
        """The digest of the manifest tagged ``name`` (``registry/repo:tag``)."""
        for entry in reversed(self.index().get("manifests", [])):
            if entry.get("annotations", {}).get(REF_NAME) == name:
                return str(entry["digest"])
        if not (self.root / "oci-layout").is_file():
            raise SourceNotFound(f"image layout {self.root} does not exist", source=self.describe())
        raise VersionNotFound(f"{name} is not in {self.describe()}", source=self.describe())

    def tag(self, name: str, data: bytes, media_type: str) -> str:
        """Store manifest ``data`` and name it ``name``; its digest."""
        from filelock import FileLock

        digest = self.put_bytes(data)
        with FileLock(str(self.root / "index.json.lock"), timeout=60):
            index = self.index()
            kept = [
                m
                for m in index.get("manifests", [])
                if m.get("annotations", {}).get(REF_NAME) != name
            ]
            kept.append(
                {
                    "mediaType": media_type,
                    "digest": digest,
                    "size": len(data),
                    "annotations": {REF_NAME: name},
                }
            )
            index = {"schemaVersion": 2, "manifests": kept}
            with atomic_write(self.root / "index.json") as out:
                out.write(json.dumps(index, indent=2, sort_keys=True).encode())
        return digest

    def _init(self) -> None:
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        marker = self.root / "oci-layout"
        if not marker.is_file():
            with atomic_write(marker) as out:
                out.write(b'{"imageLayoutVersion":"1.0.0"}')


def sha256_file(path: Path) -> tuple[str, int]:
    """``(sha256:<hex>, size)`` of a file."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return "sha256:" + digest.hexdigest(), size

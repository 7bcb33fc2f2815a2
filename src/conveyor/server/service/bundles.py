"""The server's bundle store: content-addressed archives uploaded by deploys, read by workers.

``<root>/<version>.tar.zst``, where root is the server's ``$CONVEYOR_HOME/storage``. An upload is
streamed to a temporary file (refused past ``max_bytes``), checked by unpacking it into a
scratch directory with its version expected (a wrong, corrupt or unsafe archive is refused with
422 and nothing is kept), then renamed into place; an archive already there is left untouched, so
two deploys racing on one version both succeed with one object.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from conveyor.errors import BundleError, InvalidRequest, ObjectNotFound

__all__ = ["exists", "locate", "put"]

SUFFIX = ".tar.zst"
_CHUNK = 1 << 20


def _path(root: Path, version: str) -> Path:
    from conveyor.bundles import is_bundle_version

    if not is_bundle_version(version):
        raise InvalidRequest(
            f"{version!r:.80} is not a bundle version",
            status_code=422,
            hint="a bundle version looks like sha256-<64 hex digits>",
        )
    return root / f"{version}{SUFFIX}"


def exists(root: Path, version: str) -> bool:
    """True when the store holds ``version``."""
    return _path(root, version).is_file()


def locate(root: Path, version: str) -> tuple[Path, int]:
    """The archive of ``version`` and its size; 404 when it is not stored."""
    path = _path(root, version)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ObjectNotFound(
            f"bundle {version[:19]} is not in the server's bundle store",
            status_code=404,
            hint="deploy again to upload it",
        ) from None
    return path, size


def _chunks(body: BinaryIO | Iterator[bytes]) -> Iterator[bytes]:
    if hasattr(body, "read"):
        while chunk := body.read(_CHUNK):
            yield chunk
    else:
        yield from body


def put(root: Path, version: str, body: BinaryIO | Iterator[bytes], *, max_bytes: int) -> bool:
    """Store the archive streamed in ``body`` as ``version``; False when it was there already."""
    from conveyor.bundles import unpack

    target = _path(root, version)
    if target.is_file():
        for _ in _chunks(body):  # drain what the client sends, keep nothing
            pass
        return False
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".upload-{version}-{secrets.token_hex(4)}"
    try:
        size = 0
        with tmp.open("wb") as out:
            for chunk in _chunks(body):
                size += len(chunk)
                if size > max_bytes:
                    raise InvalidRequest(
                        f"bundle upload is larger than the server's limit of {max_bytes} bytes",
                        status_code=413,
                        hint="raise CONVEYOR_MAX_BUNDLE_BYTES on the server, or leave large "
                        "files out with .conveyorignore",
                    )
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        with tempfile.TemporaryDirectory(dir=root, prefix=".check-") as scratch:
            try:
                unpack(tmp, Path(scratch) / "tree", expected_version=version)
            except BundleError as exc:
                raise InvalidRequest(
                    f"uploaded bundle is not version {version[:19]}: {exc.message}",
                    status_code=422,
                ) from exc
        if target.is_file():
            return False
        os.replace(tmp, target)
        return True
    finally:
        tmp.unlink(missing_ok=True)

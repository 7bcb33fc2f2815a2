"""Single objects on a blob store: one-GET reads, conditional creates, small pointer files.

- `open_object`: a stream of one object in exactly one request (S3: the ``GetObject`` body read
  as it arrives, straight into the unpacker; GCS, Azure and other protocols: one GET);
- `create_object`: store a file under a name unless it exists, safe when writers race
  (``If-None-Match: *`` on S3, ``ifGenerationMatch=0`` on GCS, ``overwrite=False`` on Azure,
  else a HEAD first); True when this call wrote it;
- `exists`, `size`, `read_small`, `write_small`: HEAD, and the ``.conveyor/latest`` pointer;
- `replace_object`: store a file under a name over what is there (a damaged bundle, repaired).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from conveyor.sources.blob._errors import translate
from conveyor.sources.blob._fs import BlobUrl

__all__ = [
    "create_object",
    "exists",
    "open_object",
    "read_small",
    "replace_object",
    "size",
    "write_small",
]


class _SyncBody(io.RawIOBase):
    """A blocking reader over an aiobotocore streaming body (reads run on fsspec's loop)."""

    def __init__(self, fs: Any, body: Any) -> None:
        self._fs = fs
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        from fsspec.asyn import sync

        chunk: bytes = sync(self._fs.loop, self._body.read, len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


def _key(url: BlobUrl, name: str) -> str:
    return f"{url.prefix}/{name}" if url.prefix else name


@contextmanager
def open_object(fs: Any, url: BlobUrl, name: str) -> Iterator[BinaryIO]:
    """Object ``name`` under the prefix as a stream, in one request."""
    where = url.url_of(name)
    if url.platform == "s3":
        from fsspec.asyn import sync

        try:
            reply = sync(fs.loop, fs._call_s3, "get_object", Bucket=url.bucket, Key=_key(url, name))
        except Exception as exc:
            raise translate(exc, where=where) from None
        raw = _SyncBody(fs, reply["Body"])
        stream = io.BufferedReader(raw, buffer_size=1 << 20)
        try:
            yield stream
        finally:
            stream.close()
        return
    try:
        data = fs.cat_file(url.join(name))
    except Exception as exc:
        raise translate(exc, where=where) from None
    yield io.BytesIO(data)


def exists(fs: Any, url: BlobUrl, name: str) -> bool:
    """Whether object ``name`` is under the prefix (one HEAD)."""
    return size(fs, url, name) is not None


def size(fs: Any, url: BlobUrl, name: str) -> int | None:
    """The size of object ``name`` under the prefix, or None when it does not exist (one
    HEAD)."""
    path = url.join(name)
    try:
        fs.invalidate_cache(path)
        info = fs.info(path)
    except FileNotFoundError:
        return None
    except Exception as exc:
        error = translate(exc, where=url.url_of(name))
        if type(error).__name__ == "SourceNotFound":
            return None
        raise error from None
    return int(info.get("size") or 0)


def replace_object(fs: Any, url: BlobUrl, name: str, source: Path) -> None:
    """Store the file ``source`` as ``name``, over whatever object is there."""
    try:
        fs.pipe_file(url.join(name), source.read_bytes())
    except Exception as exc:
        raise translate(exc, where=url.url_of(name), writing=True) from None


def create_object(fs: Any, url: BlobUrl, name: str, source: Path) -> bool:
    """Store the file ``source`` as ``name`` unless the object exists; True when written."""
    path = url.join(name)
    data = source.read_bytes()
    try:
        if url.platform in ("s3", "gcs"):
            fs.pipe_file(path, data, mode="create")
        elif url.platform == "azure":
            fs.pipe_file(path, data, overwrite=False)
        else:
            if exists(fs, url, name):
                return False
            fs.pipe_file(path, data)
    except FileExistsError:
        return False
    except Exception as exc:
        error = translate(exc, where=url.url_of(name), writing=True)
        if (type(error).__name__ in ("Changed", "SourceError") and "exists" in str(error)) or (
            type(error).__name__ == "Changed"
        ):
            return False  # a racing writer created it first
        raise error from None
    return True


def read_small(fs: Any, url: BlobUrl, name: str) -> str | None:
    """The text of a small object, or None when it does not exist."""
    from conveyor.errors import SourceNotFound

    try:
        with open_object(fs, url, name) as stream:
            data = stream.read(1 << 16)
    except SourceNotFound:
        return None
    return data.decode("utf-8", errors="replace").strip()


def write_small(fs: Any, url: BlobUrl, name: str, text: str) -> None:
    try:
        fs.pipe_file(url.join(name), text.encode())
    except Exception as exc:
        raise translate(exc, where=url.url_of(name), writing=True) from None

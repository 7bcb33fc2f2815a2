"""`VerifiedStream`: a blob's bytes as a file object, checked against its digest at the end."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx

from conveyor.errors import IntegrityError, SourceUnavailable

__all__ = ["VerifiedStream"]


class VerifiedStream:
    """A blob's body as a file object; at its end the bytes must be ``digest`` (and ``size``)."""

    def __init__(self, chunks: Iterator[bytes], digest: str, size: int | None, where: str) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._hash = hashlib.sha256()
        self._read = 0
        self._digest = digest
        self._size = size
        self._where = where
        self._done = False

    def read(self, n: int = -1) -> bytes:
        while not self._done and (n < 0 or len(self._buffer) < n):
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self._finish()
                break
            except httpx.HTTPError as exc:
                raise SourceUnavailable(
                    f"download of {self._where} broke off: {type(exc).__name__}"
                ) from None
            self._hash.update(chunk)
            self._read += len(chunk)
            if self._size is not None and self._read > self._size:
                raise IntegrityError(f"blob {self._where} is larger than its descriptor says")
            self._buffer += chunk
        if n < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def _finish(self) -> None:
        self._done = True
        actual = "sha256:" + self._hash.hexdigest()
        if actual != self._digest or (self._size is not None and self._read != self._size):
            raise IntegrityError(
                f"blob {self._where} does not match its digest (got {actual[:19]}…)",
                hint="the registry returned other bytes than the ones pushed; push the image again",
            )

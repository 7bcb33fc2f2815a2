"""A forward-only tar reader for `conveyor._archive.unpack`: headers parsed straight out of one
buffer, member data handed out as views of it (no copy).

``tarfile`` in stream mode (``r|``) re-joins its 10 KiB buffer on every read, which makes a tree of
thousands of small files cost far more than ``tar x``; this reads 1 MiB at a time and slices.
It understands what ``tarfile`` and GNU tar write: ustar headers (with their 155-byte prefix),
PAX extended headers (``path``, ``linkpath``, ``size``; global ones are skipped) and GNU long
names and long link names. Everything else (sparse files, volume headers, ...) is a member of an
unsupported type, for the caller to refuse. Extended headers larger than ``max_header`` are
refused (`UnsafeArchive`); a damaged or truncated archive raises `TarFormatError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from conveyor.errors import UnsafeArchive

__all__ = ["Member", "TarFormatError", "TarStream"]

BLOCK = 512
_CHUNK = 1 << 20
_REGULAR = (b"0", b"\0", b"7")


class TarFormatError(Exception):
    """The stream is not a (complete) tar archive."""


@dataclass
class Member:
    """One archive member (the predicates are ``tarfile.TarInfo``'s)."""

    name: str
    size: int
    mode: int
    type: bytes
    linkname: str = ""

    def isreg(self) -> bool:
        return self.type in _REGULAR

    def isdir(self) -> bool:
        return self.type == b"5"

    def issym(self) -> bool:
        return self.type == b"2"

    def islnk(self) -> bool:
        return self.type == b"1"

    def ischr(self) -> bool:
        return self.type == b"3"

    def isblk(self) -> bool:
        return self.type == b"4"

    def isfifo(self) -> bool:
        return self.type == b"6"


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _number(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256
        value = int.from_bytes(field[1:], "big")
        return -value if field[0] & 0x40 else value
    text = field.split(b"\0", 1)[0].strip(b" \0")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise TarFormatError(f"invalid number in a header: {field!r}") from None


class TarStream:
    """Members of the tar stream ``raw``, in order: `next`, then `data` for its content."""

    def __init__(self, raw: IO[bytes], *, max_header: int = 64 * 1024) -> None:
        self.raw = raw
        self.max_header = max_header
        self._buf = b""
        self._pos = 0
        self._left = 0  # data bytes of the current member not handed out yet
        self._pad = 0  # then this many padding bytes
        self.delivered = 0
        """Bytes consumed from the stream so far."""

    def _fill(self) -> bool:
        chunk = self.raw.read(_CHUNK)
        if not chunk:
            return False
        rest = self._buf[self._pos :]
        self._buf = rest + chunk if rest else chunk
        self._pos = 0
        return True

    def _take(self, size: int) -> bytes:
        while len(self._buf) - self._pos < size:
            if not self._fill():
                raise TarFormatError("unexpected end of the archive")
        data = self._buf[self._pos : self._pos + size]
        self._pos += size
        self.delivered += size
        return data

    def _skip(self, size: int) -> None:
        while size:
            available = len(self._buf) - self._pos
            if not available and not self._fill():
                raise TarFormatError("unexpected end of the archive")
            step = min(size, len(self._buf) - self._pos)
            self._pos += step
            self.delivered += step
            size -= step

    def data(self) -> Iterator[memoryview]:
        """The current member's content, in chunks (views valid until the next call)."""
        while self._left:
            if self._pos >= len(self._buf) and not self._fill():
                raise TarFormatError("unexpected end of the archive")
            step = min(self._left, len(self._buf) - self._pos)
            view = memoryview(self._buf)[self._pos : self._pos + step]
            self._pos += step
            self.delivered += step
            self._left -= step
            yield view

    def next(self) -> Member | None:
        """The next member (the rest of the current one is skipped); None at the end."""
        self._skip(self._left + self._pad)
        self._left = self._pad = 0
        overrides: dict[str, str] = {}
        while True:
            try:
                header = self._take(BLOCK)
            except TarFormatError:
                if self.delivered == 0:
                    raise TarFormatError("empty file: not a tar archive") from None
                raise
            if header == bytes(BLOCK):
                return None
            self._check(header)
            kind = header[156:157]
            size = _number(header[124:136])
            if kind in (b"x", b"g", b"L", b"K"):
                if size > self.max_header:
                    raise UnsafeArchive("refusing archive: a member header is larger than 64 KiB")
                data = self._take(size)
                self._skip(-size % BLOCK)
                if kind == b"x":
                    overrides.update(_pax(data))
                elif kind == b"L":
                    overrides["path"] = _text(data)
                elif kind == b"K":
                    overrides["linkpath"] = _text(data)
                continue
            name = _text(header[0:100])
            if header[257:262] == b"ustar" and header[345:346] != b"\0":
                name = _text(header[345:500]) + "/" + name
            member = Member(
                name=overrides.get("path", name),
                size=int(overrides["size"]) if "size" in overrides else size,
                mode=_number(header[100:108]),
                type=kind,
                linkname=overrides.get("linkpath", _text(header[157:257])),
            )
            member.name = member.name.rstrip("/") if member.isdir() else member.name
            has_data = member.isreg() or kind not in (b"1", b"2", b"3", b"4", b"5", b"6")
            self._left = member.size if has_data else 0
            if self._left < 0:
                raise TarFormatError(f"member {member.name!r} has a negative size")
            self._pad = -self._left % BLOCK
            return member

    @staticmethod
    def _check(header: bytes) -> None:
        stored = _number(header[148:156])
        if stored == sum(header[:148]) + 8 * 32 + sum(header[156:]):
            return
        signed = sum((b - 256 if b > 127 else b) for b in header[:148] + header[156:]) + 256
        if stored != signed:
            raise TarFormatError("bad checksum in a member header: not a tar archive")


def _pax(data: bytes) -> dict[str, str]:
    """The records of a PAX extended header (``<len> <key>=<value>\\n``)."""
    found: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            raise TarFormatError("malformed PAX header") from None
        if length <= 0 or pos + length > len(data):
            raise TarFormatError("malformed PAX header")
        record = data[space + 1 : pos + length - 1]
        key, sep, value = record.partition(b"=")
        if not sep:
            raise TarFormatError("malformed PAX header")
        if key in (b"path", b"linkpath", b"size"):
            found[key.decode()] = value.decode("utf-8", "surrogateescape")
        pos += length
    if "size" in found and not found["size"].isdigit():
        raise TarFormatError("malformed PAX size")
    return found

"""Encryption at rest for the secret store (Fernet: AES-128-CBC + HMAC-SHA256, from `cryptography`).

The key comes from ``CONVEYOR_SECRET_KEY`` when set (a Fernet key, or any long random string,
which is stretched with HKDF-SHA256), otherwise from ``$CONVEYOR_HOME/secret.key``: generated on
first use, written with mode 0600 and published atomically (``link`` of a finished temporary
file), so processes racing to create it all end up with the same key.

A ``CONVEYOR_SECRET_KEY`` that is neither a Fernet key nor at least `MIN_KEY_BYTES` long is
refused when the server context is made (`SecretBox` checks it, with `check_key`, before
anything else), and by the embedded default when it is connected to: one line and a hint at
start, not a failed request (HTTP 500) the first time a secret is used.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.errors import ConfigError

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

    from conveyor.secrets import Secret

__all__ = ["MIN_KEY_BYTES", "SecretBox", "check_key", "load_key_file"]

KEY_FILE = "secret.key"
MIN_KEY_BYTES = 16
"""The shortest ``CONVEYOR_SECRET_KEY`` stretched with HKDF (a Fernet key is always taken)."""


def check_key(key: Secret | None) -> None:
    """`ConfigError` unless ``key`` (``CONVEYOR_SECRET_KEY``; None: the key file) can be used."""
    if key is not None:
        _check_raw(key.reveal().encode())


class SecretBox:
    """Encrypts and decrypts secret values; the key is loaded on first use (a given ``key`` is
    checked at once: `check_key`)."""

    def __init__(self, *, key: Secret | None, home: Path) -> None:
        check_key(key)
        self._key = key
        self._home = home
        self._fernet: Fernet | None = None

    def encrypt(self, value: str) -> bytes:
        return self._cipher().encrypt(value.encode("utf-8"))

    def decrypt(self, token: bytes, *, name: str) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self._cipher().decrypt(token).decode("utf-8")
        except InvalidToken as exc:
            raise ConfigError(
                f"secret {name!r} cannot be decrypted with this server's key",
                hint="start the server with the CONVEYOR_SECRET_KEY (or secret.key) it used "
                "when the secret was stored, or set the secret again",
            ) from exc

    def _cipher(self) -> Fernet:
        if self._fernet is None:
            from cryptography.fernet import Fernet

            raw = self._key.reveal().encode() if self._key else load_key_file(self._home)
            self._fernet = Fernet(_fernet_key(raw))
        return self._fernet


def _is_fernet_key(raw: bytes) -> bool:
    try:
        return len(base64.urlsafe_b64decode(raw)) == 32
    except (binascii.Error, ValueError):
        return False


def _check_raw(raw: bytes) -> None:
    if not _is_fernet_key(raw) and len(raw) < MIN_KEY_BYTES:
        raise ConfigError(
            f"CONVEYOR_SECRET_KEY is too short ({len(raw)} bytes): it must be a Fernet key or "
            f"a random string of at least {MIN_KEY_BYTES} bytes",
            hint="use a Fernet key: python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())' (or unset it: the server then keeps its "
            "key in $CONVEYOR_HOME/secret.key)",
        )


def _fernet_key(raw: bytes) -> bytes:
    """``raw`` if it is a Fernet key already, else a Fernet key derived from it with HKDF."""
    if _is_fernet_key(raw):
        return raw
    _check_raw(raw)
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"conveyor secret store v1"
    ).derive(raw)
    return base64.urlsafe_b64encode(derived)


def load_key_file(home: Path) -> bytes:
    """The key in ``home/secret.key``, created (mode 0600, atomically) if it does not exist."""
    path = home / KEY_FILE
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    from cryptography.fernet import Fernet

    home.mkdir(parents=True, exist_ok=True)
    tmp = home / f".{KEY_FILE}.{os.getpid()}.{os.urandom(4).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process published its key first
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    key = path.read_bytes().strip()
    if not key:
        raise ConfigError(f"secret key file {path} is empty", hint="restore it from a backup")
    return key

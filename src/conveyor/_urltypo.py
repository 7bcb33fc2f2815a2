"""A URL written with one slash (``s3:/bucket/flows``) or no bucket (``s3://``), caught before it
silently becomes a local folder named ``s3:``.

`url_typo(text, schemes=...)` returns the form that was probably meant (``s3://bucket/flows``),
or None when ``text`` is not suspicious. Suspicious: a scheme of two or more characters at the
very start followed by ``:`` and one slash or none (``s3:/b``, ``s3:b``, ``s3:``), or ``://``
with nothing or a slash after it (``s3://``, ``s3:///b``; ``file:///path`` is fine). With
``schemes``, only those schemes count (a path such as ``notes:/x`` is then left alone). A colon
anywhere else (``/data/a:b``, ``./v1:2``) and a drive letter (``C:/x``) are never suspicious.
"""

from __future__ import annotations

import re
from collections.abc import Collection

__all__ = ["STORE_HINT", "refuse_store_typo", "shown", "url_typo"]

STORE_HINT = "a bundle store is a directory, 'server', or scheme://bucket/prefix"

_START = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):(/*)(.*)$", re.DOTALL)


def url_typo(text: str, *, schemes: Collection[str] | None = None) -> str | None:
    """The URL ``text`` probably meant, when it is a malformed ``scheme://`` URL; else None."""
    match = _START.match(text)
    if match is None:
        return None
    scheme, slashes, rest = match.group(1).lower(), match.group(2), match.group(3)
    if schemes is not None and scheme not in schemes:
        return None
    if scheme == "file":
        if slashes in ("", "/"):
            return f"file:///{rest.lstrip('/')}" if rest else None
        return None
    if slashes == "//" and rest:
        return None
    if slashes == "" and rest and schemes is None:
        return None  # ``notes:v1``: a relative path with a colon, unless the scheme is known
    where = rest.strip("/")
    return f"{scheme}://{where}" if where else f"{scheme}://BUCKET/PREFIX"


def shown(text: str) -> str:
    """``text`` for a message: redacted, and cut at a user-info ``@`` a URL parser would miss."""
    from conveyor.secrets import REDACTED, redact_url

    redacted = redact_url(text)
    if "@" in redacted and REDACTED not in redacted:
        match = _START.match(redacted)
        prefix = f"{match.group(1)}:{match.group(2)}" if match else ""
        return f"{prefix}{REDACTED}@{redacted.rpartition('@')[2]}"
    return redacted


def refuse_store_typo(text: str, *, named: str, hint: str = STORE_HINT) -> None:
    """Raise a one-line `ConfigError` when the bundle store ``text`` is a malformed URL (it
    would become a local folder); ``named`` is how the message names it."""
    meant = url_typo(text)
    if meant is not None:
        from conveyor.errors import ConfigError

        raise ConfigError(f"{named} is not a valid URL: write {shown(meant)}", hint=hint)

"""Secrets as a type: a `Secret` prints as ``****`` and is revealed only where it is used.

- `Secret`: wraps a value; ``str``/``repr``/``format`` give ``****``; `reveal()` returns it.
- `redact_url`: drops the password (and a token user name) from a URL.
- `redact_text`: replaces every known secret value in a text with ``****``.
- `resolve_templates`: replaces ``${NAME}`` in strings (recursively in dicts/lists) with values from
  the environment first, then a `SecretStore`. A string that had a secret substituted into it
  becomes a `Secret` itself, so it cannot be logged by accident.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable
from urllib.parse import SplitResult, urlsplit, urlunsplit

from conveyor.errors import ConfigError

__all__ = [
    "REDACTED",
    "Secret",
    "SecretStore",
    "redact_text",
    "redact_url",
    "resolve_templates",
    "reveal",
]

REDACTED = "****"
_TEMPLATE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.\-]*)\}")


class Secret:
    """A value that must never be printed, logged, stored or raised in clear."""

    __slots__ = ("_value", "name")

    def __init__(self, value: str, *, name: str | None = None) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        self._value = value
        self.name = name

    def reveal(self) -> str:
        """The clear value: only for the one call that really needs it (Popen, an HTTP header)."""
        return self._value

    def __str__(self) -> str:
        return REDACTED

    def __repr__(self) -> str:
        return f"Secret({self.name!r})" if self.name else f"Secret({REDACTED!r})"

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __copy__(self) -> Secret:
        return self  # immutable: copying (copy.copy, deepcopy of a config) keeps the same value

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled; pass its name and resolve it where it is used")


def reveal(value: str | Secret) -> str:
    """The clear text of a plain string or a `Secret`."""
    return value.reveal() if isinstance(value, Secret) else value


# Query parameters that carry credentials (Azure SAS ``sig``, presigned S3/GCS URLs, tokens).
_SECRET_QUERY_KEYS = frozenset(
    {
        "access_token",
        "api_key",
        "apikey",
        "client_secret",
        "key",
        "password",
        "private_token",
        "secret",
        "sig",
        "signature",
        "token",
        "x-amz-security-token",
        "x-amz-signature",
        "x-goog-signature",
    }
)


def _redact_query(query: str) -> str:
    parts = []
    for part in query.split("&"):
        key, sep, value = part.partition("=")
        parts.append(
            f"{key}={REDACTED}" if sep and value and key.lower() in _SECRET_QUERY_KEYS else part
        )
    return "&".join(parts)


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``****`` (a bare token user name too), and the
    values of credential query parameters (``sig``, ``token``, ``X-Amz-Signature``, ...).

    >>> redact_url("https://user:tok@host/x.git")
    'https://user:****@host/x.git'
    >>> redact_url("https://ghp_abc@github.com/o/r.git")
    'https://****@github.com/o/r.git'
    >>> redact_url("https://acct.blob.core.windows.net/c?sv=2022&sig=abc")
    'https://acct.blob.core.windows.net/c?sv=2022&sig=****'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    query = _redact_query(parts.query) if parts.query else parts.query
    if (not parts.netloc or "@" not in parts.netloc) and query == parts.query:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        # A user name alone (https://TOKEN@host) is how tokens are often passed: hide it too,
        # unless it is a conventional, non-secret user name.
        if sep:
            userinfo = f"{user}:{REDACTED}"
        elif user.lower() in {"git", "x-access-token", "oauth2", "x-token-auth", "ssh"}:
            userinfo = user
        else:
            userinfo = REDACTED
        netloc = f"{userinfo}@{hostport}"
    return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str, secrets: Iterable[str | Secret]) -> str:
    """``text`` with every occurrence of every secret value replaced by ``****``."""
    values = sorted({reveal(s) for s in secrets if reveal(s)}, key=len, reverse=True)
    for value in values:
        text = text.replace(value, REDACTED)
    return text


@runtime_checkable
class SecretStore(Protocol):
    """Where `${NAME}` templates look after the environment (the server's encrypted store)."""

    def get_secret(self, name: str) -> str | None:
        """The value of secret ``name``, or None if there is none."""
        ...


def _lookup(name: str, environ: Mapping[str, str], store: SecretStore | None) -> str:
    if name in environ:
        return environ[name]
    if store is not None:
        value = store.get_secret(name)
        if value is not None:
            return value
    raise ConfigError(
        f"template ${{{name}}} has no value",
        hint=f"export {name}=... on the worker, or run `conveyor secret set {name}`",
    )


def resolve_templates(
    value: Any,
    *,
    store: SecretStore | None = None,
    environ: Mapping[str, str] | None = None,
) -> Any:
    """Resolve ``${NAME}`` templates in ``value`` (str, dict, list, tuple), recursively.

    A string with at least one substitution is returned as a `Secret`; strings without templates,
    and every other type, are returned unchanged.
    """
    env = os.environ if environ is None else environ
    if isinstance(value, str):
        if not _TEMPLATE.search(value):
            return value
        resolved = _TEMPLATE.sub(lambda m: _lookup(m.group(1), env, store), value)
        names = ",".join(_TEMPLATE.findall(value))
        return Secret(resolved, name=names)
    if isinstance(value, Mapping):
        return {k: resolve_templates(v, store=store, environ=env) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [resolve_templates(v, store=store, environ=env) for v in value]
        return type(value)(items)
    return value

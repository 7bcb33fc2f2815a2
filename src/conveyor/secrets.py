"""Secrets as a type: a `Secret` prints as ``****`` and is revealed only where it is used.

- `Secret`: wraps a value; ``str``/``repr``/``format`` give ``****``; `reveal()` returns it.
- `redact_url`: drops the password (and a token user name) from a URL.
- `redact_text`: replaces every known secret value in a text with ``****``.
- the one template grammar (`TemplateRef`, `template_refs`, `resolve_templates`): ``${NAME}``,
  ``{{ secrets.NAME }}``, ``{{ $ENV }}``, ``{{ step_id.key }}`` and block references, parsed
  here and nowhere else. A string that had a secret substituted into it becomes a `Secret`
  itself, so it cannot be logged by accident.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import SplitResult, urlsplit, urlunsplit

from conveyor.errors import ConfigError

__all__ = [
    "REDACTED",
    "ListableSecretStore",
    "Secret",
    "SecretStore",
    "TemplateRef",
    "WritableSecretStore",
    "redact_text",
    "redact_url",
    "resolve_templates",
    "reveal",
    "template_name",
    "template_ref",
    "template_refs",
]

REDACTED = "****"


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


@runtime_checkable
class ListableSecretStore(SecretStore, Protocol):
    """A secret store that can also name what it holds (`ConveyorClient`): for the "did you
    mean" of a mistyped name."""

    def secret_names(self) -> list[str]:
        """The names of every secret stored (never their values)."""
        ...


@runtime_checkable
class WritableSecretStore(SecretStore, Protocol):
    """A secret store that can also save values (`ConveyorClient`)."""

    def set_secret(self, name: str, value: str) -> Any:
        """Store ``value`` as secret ``name`` (encrypted at rest)."""
        ...


# -- the one template grammar ---------------------------------------------------------------------

_TEMPLATE = re.compile(
    r"\$\{\s*(?P<dollar>[A-Za-z_][A-Za-z0-9_.\-]*)\s*\}|\{\{\s*(?P<braces>[^{}]+?)\s*\}\}"
)
_IDENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_SECRET_PREFIXES = ("secrets.", "secret.", "prefect.blocks.secret.")
_BLOCK_PREFIXES = ("credentials.", "blocks.", "prefect.blocks.")

TemplateKind = Literal["secret", "env", "output", "block"]


@dataclass(frozen=True)
class TemplateRef:
    """One template in a string, parsed.

    ========================================  ======  =============================================
    written                                   kind    resolved (on the worker, at run time)
    ========================================  ======  =============================================
    ``${NAME}``, ``{{ secrets.NAME }}``       secret  the environment, then the secret store
    ``{{ $NAME }}``, ``{{ env.NAME }}``       env     the environment only
    ``{{ step_id.key }}``, ``{{ key }}``      output  an earlier step's output
    ``{{ prefect.blocks.TYPE.NAME }}``,       block   saved credentials ``NAME`` (by the caller
    ``{{ credentials.NAME }}``                        that takes credentials names)
    ========================================  ======  =============================================
    """

    kind: TemplateKind
    name: str
    key: str | None = None
    """For ``output``: the key inside step ``name``'s outputs; for ``block``: the block type."""
    text: str = ""
    """The template as written (for messages)."""


def _parse(dollar: str | None, braces: str | None, text: str) -> TemplateRef | None:
    if dollar is not None:
        return TemplateRef("secret", dollar, text=text)
    inner = (braces or "").strip()
    if inner.startswith("$") and _IDENT.match(inner[1:]):
        return TemplateRef("env", inner[1:], text=text)
    if not _IDENT.match(inner):
        return None  # not ours (Jinja in a shell script, say): left as written
    if inner.startswith("env."):
        return TemplateRef("env", inner[4:], text=text)
    for prefix in _SECRET_PREFIXES:
        if inner.startswith(prefix):
            return TemplateRef("secret", inner[len(prefix) :], text=text)
    for prefix in _BLOCK_PREFIXES:
        if inner.startswith(prefix):
            rest = inner[len(prefix) :]
            block_type, dot, name = rest.partition(".")
            if prefix == "credentials." or not dot:
                return TemplateRef("block", rest, text=text)
            return TemplateRef("block", name, key=block_type, text=text)
    step, dot, key = inner.partition(".")
    return TemplateRef("output", step, key=key if dot else None, text=text)


def template_refs(text: str) -> list[TemplateRef]:
    """Every template in ``text``, in order."""
    found = []
    for match in _TEMPLATE.finditer(text):
        ref = _parse(match.group("dollar"), match.group("braces"), match.group(0))
        if ref is not None:
            found.append(ref)
    return found


def template_ref(text: str) -> TemplateRef | None:
    """The template when ``text`` is exactly one template (surrounding blanks allowed)."""
    if not isinstance(text, str):
        return None
    match = _TEMPLATE.fullmatch(text.strip())
    if match is None:
        return None
    return _parse(match.group("dollar"), match.group("braces"), match.group(0))


def template_name(text: str) -> str | None:
    """``NAME`` when ``text`` is exactly a secret, environment or block template; else None."""
    ref = template_ref(text)
    return ref.name if ref is not None and ref.kind in ("secret", "env", "block") else None


_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _lookup(ref: TemplateRef, environ: Mapping[str, str], store: SecretStore | None) -> str:
    if ref.name in environ:
        return environ[ref.name]
    if ref.kind == "secret" and store is not None:
        value = store.get_secret(ref.name)
        if value is not None:
            return value
    where = "the environment" if ref.kind == "env" else "the environment or the secret store"
    store_it = f"run `conveyor secret set {ref.name}`"
    if ref.kind == "env":
        hint = f"export {ref.name}=... on the worker"
    elif _SHELL_NAME.fullmatch(ref.name):
        hint = f"export {ref.name}=... on the worker, or {store_it}"
    else:  # api-token, credentials.x: a secret's name, not a variable a shell can export
        hint = store_it
    raise ConfigError(f"template {ref.text} has no value in {where}", hint=hint)


def _output(ref: TemplateRef, outputs: Mapping[str, Any]) -> Any:
    if ref.key is None:
        if ref.name in outputs:
            return outputs[ref.name]
    else:
        scoped = outputs.get(ref.name)
        if isinstance(scoped, Mapping) and ref.key in scoped:
            return scoped[ref.key]
    known = ", ".join(sorted(k for k in outputs if isinstance(outputs[k], Mapping))) or "none"
    raise ConfigError(
        f"template {ref.text} names no output of an earlier step",
        hint=f"steps with an id so far: {known}; write {{{{ step_id.key }}}}",
    )


def resolve_templates(
    value: Any,
    *,
    store: SecretStore | None = None,
    environ: Mapping[str, str] | None = None,
    outputs: Mapping[str, Any] | None = None,
    kinds: frozenset[str] | set[str] | None = None,
    seen: Callable[[str], None] | None = None,
) -> Any:
    """Resolve templates in ``value`` (str, dict, list, tuple), recursively.

    ``kinds`` limits which templates are resolved (default: ``secret`` and ``env``, plus
    ``output`` when ``outputs`` are given); the others are left as written, as are ``block``
    references (the caller that takes credentials names resolves them). A string that had a
    secret or environment value substituted into it is returned as a `Secret`, so it cannot be
    logged by accident; a string that is exactly one output template becomes that output's value
    (which need not be a string). ``seen`` is called with every value a secret template
    (``${NAME}``, ``{{ secrets.NAME }}``) resolved to, so a caller can hide it in logs.
    """
    env = os.environ if environ is None else environ
    wanted = set(kinds) if kinds is not None else {"secret", "env"}
    if kinds is None and outputs is not None:
        wanted.add("output")
    return _resolve(value, wanted, env, store, outputs or {}, seen)


def _resolve(
    value: Any,
    wanted: set[str],
    env: Mapping[str, str],
    store: SecretStore | None,
    outputs: Mapping[str, Any],
    seen: Callable[[str], None] | None,
) -> Any:
    if isinstance(value, str):
        return _resolve_text(value, wanted, env, store, outputs, seen)
    if isinstance(value, Mapping):
        return {k: _resolve(v, wanted, env, store, outputs, seen) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_resolve(v, wanted, env, store, outputs, seen) for v in value)
    return value


def _resolve_text(
    text: str,
    wanted: set[str],
    env: Mapping[str, str],
    store: SecretStore | None,
    outputs: Mapping[str, Any],
    seen: Callable[[str], None] | None,
) -> Any:
    whole = template_ref(text)
    if whole is not None and whole.kind == "output" and "output" in wanted:
        return _output(whole, outputs)
    secret_names: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        ref = _parse(match.group("dollar"), match.group("braces"), match.group(0))
        if ref is None or ref.kind not in wanted or ref.kind == "block":
            return match.group(0)
        if ref.kind == "output":
            found = _output(ref, outputs)
            return reveal(found) if isinstance(found, Secret) else str(found)
        secret_names.append(ref.name)
        found = _lookup(ref, env, store)
        if seen is not None and ref.kind == "secret":
            seen(found)
        return found

    resolved = _TEMPLATE.sub(substitute, text)
    if secret_names:
        return Secret(resolved, name=",".join(secret_names))
    return resolved

"""What a name, a version or a label may be: one rule each, for the API, the CLI and deploy.

The pydantic request models (`conveyor.schemas`) and the server call these, and so do the CLI,
`deploy` and the flow decorator before anything is sent, so what one side accepts the other
accepts too. Each check returns its value unchanged or raises a one-line `ConfigError` that
names the value and says what a valid one looks like.

| what | rule |
|---|---|
| flow, deployment, worker name | 1-200 characters; no ``/``, ``\\`` or control characters; |
| | not ``.`` or ``..``; no space at either end |
| pool name | a letter or digit, then letters, digits, ``_ . -``; at most 64 |
| secret name | a letter or ``_``, then letters, digits, ``_ . -``; at most 200 |
| label | a letter or digit, then letters, digits, ``_ . - : = @ / +``; at most 100 |
| version | a letter or digit, then letters, digits, ``. _ : + @ = -``; at most 200; no ``..``; |
| | not ending ``.lock``, ``.lease``, ``.meta.json``: a commit, ``sha256-<hex>``, a digest |

Names travel in URL paths (``/api/deployments/FLOW/NAME``) and ``FLOW/NAME`` on the command line,
versions name directories in the code cache: that is why ``/``, ``..`` and control characters
are out.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from conveyor.errors import ConfigError

__all__ = [
    "NAME_MAX",
    "POOL_NAME_MAX",
    "check_deployment_name",
    "check_flow_name",
    "check_label",
    "check_labels",
    "check_name",
    "check_pool_name",
    "check_secret_name",
    "check_secret_names",
    "check_version",
    "check_worker_name",
    "closest_name",
    "is_version",
]

NAME_MAX = 200
POOL_NAME_MAX = 64

_POOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SECRET = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,199}")
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:=@/+-]{0,99}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+@=-]{0,199}")
_RESERVED_SUFFIXES = (".meta.json", ".lock", ".lease")
"""Suffixes the code cache uses for its own files beside a version's directory."""


def check_name(value: object, *, what: str) -> str:
    """A flow, deployment or worker name (see the table above); ``what`` names it in errors."""
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, not {type(value).__name__}")
    problem = _name_problem(value)
    if problem:
        raise ConfigError(
            f"{what} {_shown(value)} is not valid: {problem}",
            hint=f"use 1 to {NAME_MAX} characters without '/', '\\' or control characters, "
            "e.g. nightly-etl",
        )
    return value


def check_flow_name(value: object) -> str:
    return check_name(value, what="flow name")


def check_deployment_name(value: object) -> str:
    return check_name(value, what="deployment name")


def check_worker_name(value: object) -> str:
    return check_name(value, what="worker name")


def check_pool_name(value: object) -> str:
    """A work pool name: ``default``, ``gpu-large``, ``eu.batch``."""
    if not isinstance(value, str) or not _POOL.fullmatch(value):
        raise ConfigError(
            f"{_shown(value)} is not a valid work pool name",
            hint=f"start with a letter or digit, then use letters, digits, '_', '.' or '-' "
            f"(at most {POOL_NAME_MAX} characters)",
        )
    return value


def check_secret_name(value: object) -> str:
    """A secret name, as written in ``${NAME}``: ``DB_PASSWORD``, ``credentials.github-ci``."""
    if not isinstance(value, str) or not _SECRET.fullmatch(value):
        raise ConfigError(
            f"{_shown(value)} is not a valid secret name",
            hint="use letters, digits, '_', '.', '-', starting with a letter or '_'",
        )
    return value


def check_label(value: object) -> str:
    """A worker / run label: ``gpu``, ``region=eu``, ``host:build-01``."""
    if not isinstance(value, str) or not _LABEL.fullmatch(value):
        raise ConfigError(
            f"{_shown(value)} is not a valid label",
            hint="start with a letter or digit, then use letters, digits and '_.-:=@/+' "
            "(at most 100 characters), e.g. gpu or region=eu",
        )
    return value


def check_labels(value: object, *, what: str = "labels") -> list[str]:
    """A list of labels (None: none); a bare string is refused, not read letter by letter."""
    return [check_label(item) for item in _listed(value, what=what, example="prod")]


def check_secret_names(value: object, *, what: str = "secrets") -> list[str]:
    """A list of secret names (None: none); a bare string is refused, as for labels."""
    return [check_secret_name(item) for item in _listed(value, what=what, example="API_TOKEN")]


def _listed(value: object, *, what: str, example: str) -> list[object]:
    if value is None:
        return []
    if isinstance(value, list | tuple | set | frozenset):
        return list(value)
    plain = isinstance(value, str) and len(value) <= 60 and value.isprintable() and '"' not in value
    shown = value if plain else example
    raise ConfigError(
        f"{what} must be a list, not {_shown(value)}",
        hint=f'write {what}=["{shown}"]',
    )


def is_version(value: object) -> bool:
    """Whether ``value`` can be a code version (and so safely name a cache directory)."""
    return (
        isinstance(value, str)
        and _VERSION.fullmatch(value) is not None
        and ".." not in value
        and not value.endswith(_RESERVED_SUFFIXES)
    )


def check_version(value: object) -> str:
    """A code version: a commit hash, ``sha256-<hex>`` bundle digest or image digest."""
    if not is_version(value):
        raise ConfigError(
            f"{_shown(value)} is not a valid code version",
            hint="a version is a commit hash, a sha256-<hex> bundle digest or an image digest",
        )
    assert isinstance(value, str)
    return value


def closest_name(value: str, names: Iterable[str]) -> str | None:
    """The one of ``names`` a mistyped ``value`` most likely meant (difflib's closest match, for
    a "did you mean" hint), or None when none is close."""
    import difflib  # on a mistake only: not on every command's import path

    close = difflib.get_close_matches(value, list(names), n=1)
    return close[0] if close else None


def _name_problem(value: str) -> str:
    if not value:
        return "it is empty"
    if len(value) > NAME_MAX:
        return f"it is longer than {NAME_MAX} characters"
    if value in (".", ".."):
        return "'.' and '..' are not names"
    if "/" in value or "\\" in value:
        return "it contains '/' or '\\'"
    if value != value.strip():
        return "it starts or ends with a space"
    for char in value:
        category = unicodedata.category(char)
        if category == "Cc":
            return f"it contains the control character {_escape(char)}"
        if category == "Cs":
            return f"it contains a lone surrogate ({_escape(char)}), which is not valid Unicode"
    return ""


def _escape(char: str) -> str:
    return f"\\u{ord(char):04x}"


def _shown(value: object) -> str:
    """The value as it appears in a message: quoted, escaped, and cut at 80 characters."""
    text = repr(value) if isinstance(value, str) else f"a {type(value).__name__}"
    return text if len(text) <= 80 else text[:77] + "..."

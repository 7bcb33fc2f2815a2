"""Template filters: times, durations, sizes, versions, JSON, redacted sources. All return plain
text (autoescaped by the templates), never markup."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from conveyor.secrets import redact_url

__all__ = [
    "FILTERS",
    "ago",
    "duration",
    "pretty_json",
    "redacted_steps",
    "short_version",
    "size",
    "source_rows",
    "timestamp",
    "version_kind",
]

_GIT_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_TEMPLATE = re.compile(r"^\s*(\$\{[^}]*\}|\{\{.*\}\})\s*$")


def timestamp(value: datetime | None) -> str:
    """``2026-11-21 12:00:03 UTC``."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(value: datetime | None, now: datetime | None = None) -> str:
    """``5 s ago``, ``3 min ago``, ``2 h ago``, ``4 d ago``."""
    if value is None:
        return "never"
    seconds = ((now or datetime.now(UTC)) - value).total_seconds()
    if seconds < 0:
        return "in " + duration(-seconds)
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.0f} d ago"


def duration(seconds: float | None) -> str:
    """``850 ms``, ``1.25 s``, ``2 min 05 s``, ``1 h 02 min``."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def size(count: int | None) -> str:
    """``512 B``, ``1.5 KiB``, ``12.0 MiB``."""
    if count is None:
        return "—"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def version_kind(version: str) -> str:
    """What a version string is: a git commit, a bundle digest or an image digest."""
    if _GIT_COMMIT.match(version):
        return "git commit"
    if version.startswith("sha256-"):
        return "bundle digest"
    if "sha256:" in version:
        return "image digest"
    return "version"


def short_version(version: str | None) -> str:
    """``3f2a9c1d0b7e`` for a commit, ``sha256-3f2a9c1d0b7e`` for a bundle digest."""
    if not version:
        return "—"
    if _GIT_COMMIT.match(version):
        return version[:12]
    if version.startswith("sha256-"):
        return version[:19]
    if "sha256:" in version:
        head, _, digest = version.partition("sha256:")
        return f"{head}sha256:{digest[:12]}"
    return version if len(version) <= 24 else version[:21] + "..."


def pretty_json(value: Any) -> str:
    """Indented, key-sorted JSON (non-JSON values shown with ``str``)."""
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def compact_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)


def source_rows(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A source spec as (field, redacted text) rows: URLs lose any user info and signed query
    parameters; credential fields show only the name a deployment stores."""
    rows = []
    for key, value in sorted(spec.items()):
        text = value if isinstance(value, str) else compact_json(value)
        if "://" in text or text.startswith("git@"):
            text = redact_url(text)
        rows.append((key, text))
    return rows


def masked_env(variables: Mapping[str, Any]) -> dict[str, Any]:
    """Job variables with every ``env`` value hidden unless it is a ``${NAME}`` template."""
    shown = dict(variables)
    env = shown.get("env")
    if isinstance(env, Mapping):
        shown["env"] = {
            k: v if isinstance(v, str) and _TEMPLATE.match(v) else "****" for k, v in env.items()
        }
    return shown


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")
_SECRET_KEY = re.compile(r"token|password|passwd|secret|private_key|api_key|credential", re.I)


def redacted_steps(value: Any, key: str = "") -> Any:
    """Pull steps as shown: URLs lose user info and signed query parameters, and a value under a
    key that names a secret (``access_token``, ``password``...) is hidden unless a template."""
    if isinstance(value, Mapping):
        return {k: redacted_steps(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted_steps(v, key) for v in value]
    if not isinstance(value, str):
        return "****" if _SECRET_KEY.search(key) and value not in (None, True, False) else value
    if _TEMPLATE.match(value):
        return value
    if _SECRET_KEY.search(key):
        return "****"
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group()), value)


def hit_rate(hits: int | None, misses: int | None) -> str:
    if hits is None or misses is None or hits + misses == 0:
        return "—"
    return f"{100 * hits / (hits + misses):.0f}% ({hits}/{hits + misses})"


def url_segment(text: str) -> str:
    return quote(str(text), safe="")


def url_path(text: str) -> str:
    return quote(str(text), safe="/")


FILTERS: dict[str, Callable[..., Any]] = {
    "ago": ago,
    "compact_json": compact_json,
    "duration": duration,
    "hit_rate": hit_rate,
    "masked_env": masked_env,
    "pretty_json": pretty_json,
    "redacted_steps": redacted_steps,
    "short_version": short_version,
    "size": size,
    "source_rows": source_rows,
    "timestamp": timestamp,
    "url_path": url_path,
    "urlseg": url_segment,
    "version_kind": version_kind,
}

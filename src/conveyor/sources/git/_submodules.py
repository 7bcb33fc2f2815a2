"""Submodules: read ``.gitmodules`` from a commit and resolve each submodule's URL.

Only what the commit says is used (``git config --blob <sha>:.gitmodules``); a relative URL
(``../lib.git``) is resolved against the superproject's URL as git does. URLs are checked before
anything is fetched from them: no option-like values, no password in an HTTP URL (a user name is
dropped: it may be a token), and only the transports a superproject may point to
(https/http/ssh/git; ``file://`` only from a ``file://`` superproject).
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from urllib.parse import urlsplit

from conveyor.errors import ConfigError
from conveyor.sources.git._auth import is_ssh_url
from conveyor.sources.git._cmd import OFFLINE, GitFailed, git
from conveyor.sources.git._validate import clean_url

__all__ = ["read_gitmodules", "resolve_submodule_url", "same_host"]

_REMOTE_SCHEMES = {"https", "http", "ssh", "git", "git+ssh"}


def read_gitmodules(git_dir: Path, sha: str) -> dict[str, str]:
    """``{submodule path: url}`` from ``.gitmodules`` in commit ``sha`` (empty when absent)."""
    try:
        out = git(
            [
                "--git-dir",
                str(git_dir),
                *OFFLINE,
                "config",
                "--blob",
                f"{sha}:.gitmodules",
                "-z",
                "--list",
            ]
        ).stdout
    except GitFailed:
        return {}
    values: dict[tuple[str, str], str] = {}
    for record in out.split("\0"):
        key, _, value = record.partition("\n")
        if not key.startswith("submodule.") or "." not in key[len("submodule.") :]:
            continue
        name, _, attr = key[len("submodule.") :].rpartition(".")
        values[(name, attr.lower())] = value
    result = {}
    for (name, attr), path in values.items():
        if attr == "path" and (name, "url") in values:
            result[path.strip("/")] = values[(name, "url")]
    return result


def _scheme(url: str) -> str:
    if "://" in url:
        return url.split("://", 1)[0].lower()
    return "ssh" if is_ssh_url(url) else "path"


def _climb(base: str, url: str) -> str:
    """``base`` without its last path component (never above the host)."""
    if "://" in base:
        scheme, rest = base.split("://", 1)
        host, _, path = rest.partition("/")
        if not path:
            raise ConfigError(f"submodule URL {url!r} climbs above the repository's host")
        head = path.rpartition("/")[0]
        return f"{scheme}://{host}" + (f"/{head}" if head else "")
    if is_ssh_url(base):
        host, _, path = base.partition(":")
        if not path:
            raise ConfigError(f"submodule URL {url!r} climbs above the repository's host")
        return f"{host}:{path.rpartition('/')[0]}" if "/" in path else f"{host}:"
    return posixpath.dirname(base)


def resolve_submodule_url(parent_url: str, url: str) -> str:
    """The absolute URL of a submodule whose ``.gitmodules`` URL is ``url``."""
    if url.startswith(("./", "../")):
        base = parent_url.rstrip("/")
        rest = url
        while rest.startswith(("./", "../")):
            if rest.startswith("./"):
                rest = rest[2:]
            else:
                rest = rest[3:]
                base = _climb(base, url)
        url = base + ("" if base.endswith(":") else "/") + rest
    if _scheme(url) in {"http", "https"}:
        try:
            url = clean_url(url)  # a user name may be a token: dropped; a password: refused
        except ConfigError as exc:
            raise ConfigError(
                f"a submodule URL in .gitmodules of {parent_url} is not valid: {exc.message}",
                hint="remove credentials from .gitmodules: the repository's own credentials are "
                "sent to submodules on its host",
            ) from None
    parent_scheme = _scheme(parent_url)
    scheme = _scheme(url)
    allowed = set(_REMOTE_SCHEMES)
    if parent_scheme in {"file", "path"}:
        allowed |= {"file", "path"}
    if url.startswith("-") or scheme not in allowed or any(c in url for c in "\n\r\0 "):
        raise ConfigError(
            f"submodule URL {url!r} is not allowed from {parent_url!r}",
            hint="submodules must use https, ssh or git URLs (file:// only from file:// repos)",
        )
    return url


def same_host(a: str, b: str) -> bool:
    """Whether two URLs talk to the same server (scheme family, host, port): credentials for
    one may be sent to the other."""
    if is_ssh_url(a) and is_ssh_url(b):
        return _ssh_host(a) == _ssh_host(b)
    if "://" not in a or "://" not in b:
        return False
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme.lower(), pa.hostname, pa.port) == (pb.scheme.lower(), pb.hostname, pb.port)


def _ssh_host(url: str) -> str:
    if "://" in url:
        parts = urlsplit(url)
        return f"{parts.hostname}:{parts.port or 22}"
    host = url.split(":", 1)[0].rpartition("@")[2]
    return f"{host}:22"

"""Checks on what a `GitRepository` is built from, before any git runs (no I/O).

URLs are stored without user info: a password or a query string is refused (it would be stored
and shown), a bare HTTP user name is dropped (it may be a token); ``<transport>::`` remote-helper
URLs and option-like values are refused so nothing user-given can become a git option.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

from conveyor.errors import ConfigError
from conveyor.secrets import template_refs
from conveyor.sources.git._auth import is_ssh_url

__all__ = ["FULL_SHA", "check_commit", "check_directories", "check_ref", "clean_url"]

_SHA = re.compile(r"^[0-9a-fA-F]{4,64}$")
FULL_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|\.lock$|^/|/$|\.$")
_TRANSPORT = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
_CODECOMMIT = re.compile(
    r"^codecommit::(?P<region>[a-z]{2}(?:-[a-z]+)+-\d)://(?:[^@/]+@)?(?P<repo>[A-Za-z0-9._-]{1,100})$"
)
_SCHEMES = {"https", "http", "ssh", "git", "file", "git+ssh", "ssh+git"}


def clean_url(url: str) -> str:
    """The URL to store: validated, without a password (refused) or an HTTP user name."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError("a git repository URL is required")
    url = url.strip()
    if any(ref.kind in ("secret", "env") for ref in template_refs(url)):
        # Prefect resolves {{ $ENV }} here at deploy; Conveyor's worker would be too late
        raise ConfigError(
            f"the git repository URL {url} is a template, but deploy needs the URL itself to "
            "pin a commit",
            hint="write the repository's URL (credentials go in credentials= or access_token:)",
        )
    if url.startswith("-") or any(ord(c) < 0x20 or c == "\x7f" for c in url):
        raise ConfigError("the git repository URL is not valid", hint="pass the clone URL")
    if _TRANSPORT.match(url):
        grc = _CODECOMMIT.match(url)  # git-remote-codecommit's codecommit::REGION://REPO
        raise ConfigError(
            "git remote-helper URLs (<transport>::<address>) are not supported",
            hint=f"use https://git-codecommit.{grc['region']}.amazonaws.com/v1/repos/"
            f"{grc['repo']} with CodeCommitCredentials"
            if grc
            else "use https://, ssh://, git://, file:// or user@host:path",
        )
    if url.lower().startswith(("git+https://", "git+http://", "git+file://")):
        url = url[4:]  # pip's spelling: "this https URL is a git repository"
    if "://" not in url:
        if is_ssh_url(url):
            user_host = url.split(":", 1)[0]
            if ":" in user_host.rpartition("@")[0]:
                raise _password_in_url()
        return url
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ConfigError(
            f"git URLs starting with {scheme}:// are not supported",
            hint="use https://, ssh://, git://, file:// or user@host:path",
        )
    if parts.password is not None or (parts.query and scheme != "file"):
        # A query (?access_token=..., ?private_token=...) is a pasted token as often as not, and
        # git's smart HTTP appends its own path and query, so no working clone URL has one.
        raise _password_in_url()
    netloc = parts.netloc
    if "@" in netloc and scheme in {"http", "https"}:
        netloc = netloc.rpartition("@")[2]  # a user name alone may be a token: never store it
    return urlunsplit((scheme, netloc, parts.path, parts.query, ""))


def _password_in_url() -> ConfigError:
    return ConfigError(
        "the repository URL carries a password or token; it would be stored and shown",
        hint="remove it from the URL and pass credentials=: save them with "
        "`conveyor credentials create github|gitlab|bitbucket NAME` (token read from stdin)",
    )


def check_ref(branch: str) -> str:
    if not isinstance(branch, str) or not branch or branch.startswith("-"):
        raise ConfigError(f"branch {branch!r} is not valid (it may not start with '-')")
    if _BAD_REF.search(branch) or branch != branch.strip():
        raise ConfigError(f"branch {branch!r} is not a valid git ref name")
    return branch


def check_directories(directories: Sequence[str] | None) -> tuple[str, ...] | None:
    if directories is None:
        return None
    if isinstance(directories, str):
        directories = [directories]
    cleaned: list[str] = []
    for d in directories:
        if not isinstance(d, str):
            raise ConfigError(f"directory {d!r} is not a relative path inside the repository")
        norm = d.strip().strip("/")
        while norm.startswith("./"):
            norm = norm[2:]
        parts = norm.split("/")
        if not norm or any(p in ("", ".", "..") or p.lower() == ".git" for p in parts):
            raise ConfigError(f"directory {d!r} is not a relative path inside the repository")
        if any(p.startswith("-") or any(ord(c) < 0x20 for c in p) for p in parts):
            raise ConfigError(f"directory {d!r} is not valid (no part may start with '-')")
        cleaned.append(norm)
    # Overlapping directories ("flows" and "flows/a") are one checkout: keep the outer one.
    unique = sorted(set(cleaned))
    outer = [d for d in unique if not any(d != o and d.startswith(o + "/") for o in unique)]
    return tuple(d for d in dict.fromkeys(cleaned) if d in outer) or None


def check_commit(commit_sha: str | None) -> str | None:
    """A 4-to-64 hex digit commit hash, lower-cased (None stays None)."""
    if commit_sha is None:
        return None
    if not (isinstance(commit_sha, str) and _SHA.fullmatch(commit_sha)):
        raise ConfigError(
            f"commit_sha {commit_sha!r} is not a commit hash (4 to 64 hex digits)",
            hint="to follow a branch or tag, pass branch= instead",
        )
    return commit_sha.lower()

"""Image references: ``[registry/]repository[:tag][@sha256:digest]``, parsed as Docker does.

- The first path component is a registry when it holds a ``.`` or a ``:`` or is ``localhost``;
  otherwise the image is on Docker Hub (``docker.io``, reached at ``registry-1.docker.io``), and
  a one-component repository gets the ``library/`` prefix (``python`` → ``library/python``).
- ``oci://`` and ``docker://`` prefixes are accepted and dropped.
- A registry on a loopback host (``localhost``, ``127.x.x.x``, ``[::1]``) is spoken to over plain
  HTTP, as Docker does; every other registry over HTTPS.

A digest is ``sha256:`` and 64 lowercase hex digits (the only algorithm Conveyor writes or
accepts); it is what a version of an image source is.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, replace

from conveyor.errors import ConfigError
from conveyor.secrets import REDACTED, redact_url

__all__ = [
    "DOCKER_HUB",
    "ImageRef",
    "digest_of",
    "is_digest",
    "is_loopback",
    "parse_reference",
]

DOCKER_HUB = "docker.io"
_HUB_API = "registry-1.docker.io"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_HINT = "write it like registry.example.com/team/flows:v1 or name@sha256:<64 hex digits>"


def is_digest(text: object) -> bool:
    """True for ``sha256:`` and 64 lowercase hex digits."""
    return isinstance(text, str) and bool(_DIGEST.match(text))


def digest_of(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_loopback(registry: str) -> bool:
    """True when ``registry`` (``host[:port]``) is on this machine."""
    host = (
        registry.rsplit(":", 1)[0] if not registry.startswith("[") else registry[1:].split("]")[0]
    )
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def api_host(self) -> str:
        """Where the registry's ``/v2/`` API is (Docker Hub's differs from its name)."""
        return _HUB_API if self.registry == DOCKER_HUB else self.registry

    def base_url(self, *, insecure: bool | None = None) -> str:
        """``http://`` for loopback registries (or ``insecure``), else ``https://``."""
        plain = is_loopback(self.registry) if insecure is None else insecure
        return f"{'http' if plain else 'https'}://{self.api_host}"

    @property
    def name(self) -> str:
        """``registry/repository`` (Docker Hub's ``library/`` kept)."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest when there is one, else the tag."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> ImageRef:
        """The same image pinned to ``digest`` (the tag is kept for readers)."""
        return replace(self, digest=digest)

    def with_tag(self, tag: str | None) -> ImageRef:
        """The same repository with another tag and no digest."""
        return replace(self, tag=tag, digest=None)

    def pinned(self) -> str:
        """``registry/repository@sha256:…`` (what a container runtime should pull)."""
        if self.digest is None:
            raise ConfigError(f"{self} is not pinned to a digest")
        return f"{self.name}@{self.digest}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _shown(text: str) -> str:
    """``text`` for a message, with a user name and password before an ``@`` hidden (an image
    reference has none there; a registry URL pasted in may)."""
    if "://" in text:
        return redact_url(text)
    head, at, tail = text.partition("@")
    if at and not tail.startswith("sha256:") and "/" not in head:
        return f"{REDACTED}@{tail}"
    return text


def parse_reference(text: str) -> ImageRef:
    """Parse an image reference; a one-line `ConfigError` names what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("an image reference must be a non-empty string", hint=_HINT)
    raw = text.strip()
    for prefix in ("oci://", "docker://"):
        if raw.lower().startswith(prefix):
            raw = raw[len(prefix) :]
    text = _shown(text)  # what messages show: never a password pasted in with a URL
    if "://" in raw and not any(ch.isspace() for ch in raw):
        after = raw.split("://", 1)[1]
        bare = _shown(after).removeprefix(f"{REDACTED}@")
        login = "@" in after.split("/", 1)[0]
        raise ConfigError(
            f"{text!r} is not an image reference: an image reference has no scheme",
            hint=f"write {bare}"
            + (", and save the registry's login as credentials, not in the URL" if login else ""),
        )
    if any(ch.isspace() for ch in raw):
        raise ConfigError(f"{text!r} is not an image reference", hint=_HINT)
    rest, at, digest = raw.partition("@")
    if at and not is_digest(digest):
        raise ConfigError(
            f"{text!r} has an invalid digest {digest[:80]!r}",
            hint="a digest is sha256: and 64 lowercase hex digits",
        )
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, remainder
    else:
        registry, path = DOCKER_HUB, rest
    tag: str | None = None
    last_slash = path.rfind("/")
    colon = path.rfind(":")
    if colon > last_slash:
        path, tag = path[:colon], path[colon + 1 :]
        if not _TAG.match(tag):
            raise ConfigError(f"{text!r} has an invalid tag {tag!r}", hint=_HINT)
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if not _REPOSITORY.match(path) or len(path) > 255:
        raise ConfigError(
            f"{text!r} has an invalid repository name {path!r}",
            hint="repository names are lowercase letters, digits and . _ - separated by /",
        )
    if not registry or len(registry) > 255:
        raise ConfigError(f"{text!r} has an invalid registry", hint=_HINT)
    return ImageRef(registry, path, tag, digest if at else None)

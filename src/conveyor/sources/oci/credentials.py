"""Registry credentials: `DockerRegistryCredentials`, and where a login for a registry comes from.

```python
DockerRegistryCredentials(username="ci", password="...", registry_url="ghcr.io").save("ghcr")
DockerImage("ghcr.io/org/flows", credentials="ghcr")      # the push
job_variables={"registry_credentials": "ghcr"}            # pulls by container pools
```

`registry_login` finds the login for one registry host:

1. credentials saved under the name the image or deployment gives (``credentials="ghcr"``),
   which must have been made for that host (they are never sent to another one);
2. otherwise Docker's own ``config.json`` (``$DOCKER_CONFIG/config.json`` or
   ``~/.docker/config.json``, from the context's environment): an ``auths`` entry for the host
   (``auth`` is base64 ``user:password``). It is read, never written. Credential helpers
   (``credsStore``, ``credHelpers``) are not run: they may reach other machines.
3. otherwise none: anonymous access (public images, token servers that allow it).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from conveyor.credentials import Credentials, as_secret, did_you_mean, load_saved
from conveyor.errors import ConfigError
from conveyor.secrets import Secret, SecretStore

__all__ = ["DockerRegistryCredentials", "Login", "registry_host", "registry_login"]

logger = logging.getLogger(__name__)

_HUB_ALIASES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)


def registry_host(url: str) -> str:
    """The registry a URL or host names: ``https://index.docker.io/v1/`` → ``docker.io``,
    ``http://127.0.0.1:5000`` → ``127.0.0.1:5000``."""
    text = url.strip()
    if "://" not in text:
        text = f"https://{text}"
    parts = urlsplit(text)
    host = (parts.netloc or "").lower()
    host = host.rsplit("@", 1)[-1]
    return "docker.io" if host in _HUB_ALIASES else host


@dataclass(frozen=True)
class Login:
    """A user name and password (or token) for one registry."""

    username: str
    password: Secret
    source: str
    """Where it came from, for messages: ``credentials gh`` or ``docker config``."""


@dataclass(frozen=True)
class DockerRegistryCredentials(Credentials):
    """A login for one container registry (Prefect's ``DockerRegistryCredentials``)."""

    type: ClassVar[str] = "docker"
    username: str
    password: Secret | str
    registry_url: str
    reauth: bool = True
    """Accepted for Prefect compatibility; every push authenticates anew."""
    name: str | None = field(default=None, compare=False, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "password", as_secret(self.password, "password"))
        if not isinstance(self.username, str) or not self.username or ":" in self.username:
            raise ConfigError("a registry user name must be a non-empty string without ':'")
        if not self.password:
            raise ConfigError("a registry password must not be empty")
        if not isinstance(self.registry_url, str) or not registry_host(self.registry_url):
            raise ConfigError(
                "registry_url must name the registry", hint="e.g. ghcr.io or 127.0.0.1:5000"
            )

    @property
    def host(self) -> str:
        """The registry these credentials are for."""
        return registry_host(self.registry_url)

    def login(self) -> Login:
        """The login these credentials hold."""
        assert isinstance(self.password, Secret)
        return Login(self.username, self.password, f"credentials {self.name or 'given'}")


def registry_login(
    registry: str,
    *,
    credentials: str | DockerRegistryCredentials | None,
    store: SecretStore | None,
    environ: Mapping[str, str],
) -> Login | None:
    """The login to use for ``registry`` (see the module docstring), or None."""
    host = registry_host(registry)
    if isinstance(credentials, DockerRegistryCredentials):
        found: DockerRegistryCredentials | None = credentials
    elif credentials is not None:
        found = _load(credentials, store)
    else:
        found = None
    if found is not None:
        if found.host != host:
            named = f"credentials {found.name}" if found.name else "the credentials"
            raise ConfigError(
                f"{named} are for {found.host}, not {host}",
                hint="use credentials made for the image's registry",
            )
        return found.login()
    return _docker_config_login(host, environ)


def _load(name: str, store: SecretStore | None) -> DockerRegistryCredentials:
    if store is None:
        raise ConfigError(
            f"credentials {name!r} cannot be read here: no secret store",
            hint="run with a Conveyor server or the embedded database configured",
        )
    saved = load_saved(name, store)
    if saved is None:
        raise ConfigError(
            f"no credentials named {name!r}",
            hint=did_you_mean(name, store)
            or f"create them with `conveyor credentials create docker {name} --username U "
            "--registry HOST` (the password on stdin)",
        )
    if not isinstance(saved, DockerRegistryCredentials):
        raise ConfigError(f"credentials {name!r} are {saved.type} credentials, not docker")
    return saved


def docker_config_path(environ: Mapping[str, str]) -> Path | None:
    """Docker's ``config.json`` for this environment (it may not exist)."""
    directory = environ.get("DOCKER_CONFIG")
    if directory:
        return Path(directory) / "config.json"
    home = environ.get("HOME")
    return Path(home) / ".docker" / "config.json" if home else None


def _docker_config_login(host: str, environ: Mapping[str, str]) -> Login | None:
    path = docker_config_path(environ)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("docker config not readable path=%s error=%s", path, type(exc).__name__)
        return None
    auths = data.get("auths") if isinstance(data, dict) else None
    if not isinstance(auths, dict):
        return None
    for key, entry in auths.items():
        if not isinstance(key, str) or registry_host(key) != host or not isinstance(entry, dict):
            continue
        encoded = entry.get("auth")
        if isinstance(encoded, str) and encoded:
            try:
                user, sep, password = base64.b64decode(encoded).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, sep, password = "", "", ""
            if sep and user:
                return Login(user, Secret(password), "docker config")
        name, secret = entry.get("username"), entry.get("password")
        if isinstance(name, str) and isinstance(secret, str) and name:
            return Login(name, Secret(secret), "docker config")
    if isinstance(data.get("credHelpers"), dict) or data.get("credsStore"):
        logger.debug("docker credential helpers are not run registry=%s", host)
    return None

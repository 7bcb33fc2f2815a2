"""Credentials as a type: saved by name in the server's encrypted secret store, loaded by name.

Every kind of credentials (git hosts in `conveyor.sources.git.credentials`, and the kinds other
sources bring) is a frozen dataclass deriving from `Credentials`, with a ``type`` and secret
fields held as `Secret`. ``creds.save("gh")`` stores them as the secret ``credentials.gh``
(JSON); ``GitHubCredentials.load("gh")`` reads them back. A deployment stores only the name;
workers load them through the secret store their context gives them.

The kinds are found through `CREDENTIAL_TYPES`, a `Registry` keyed by ``type`` (third parties
register in the ``conveyor.credentials`` entry-point group).

``save`` and ``load`` take the store to use. Called without one (``creds.save("gh")``, as
Prefect users write it), they are public helpers, like ``flow.deploy()``: they connect to the
configured server (or the embedded database) the way the command line does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import fields
from typing import Any, ClassVar, Self

from conveyor._names import closest_name
from conveyor._registry import Entry, Registry
from conveyor.errors import ConfigError, ConveyorError
from conveyor.secrets import ListableSecretStore, Secret, SecretStore, WritableSecretStore, reveal

__all__ = [
    "CREDENTIALS_PREFIX",
    "CREDENTIAL_TYPES",
    "Credentials",
    "as_secret",
    "credentials_secret_name",
    "did_you_mean",
    "load_saved",
]

CREDENTIALS_PREFIX = "credentials."
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

_GIT = "conveyor.sources.git.credentials"
_BLOB = "conveyor.sources.blob.credentials"
CREDENTIAL_TYPES: Registry[type[Credentials]] = Registry(
    "credentials type",
    group="conveyor.credentials",
    builtins={
        "github": Entry(f"{_GIT}:GitHubCredentials"),
        "gitlab": Entry(f"{_GIT}:GitLabCredentials"),
        "bitbucket": Entry(f"{_GIT}:BitBucketCredentials"),
        "codecommit": Entry(f"{_GIT}:CodeCommitCredentials"),
        "token": Entry(f"{_GIT}:TokenCredentials"),
        "ssh": Entry(f"{_GIT}:SSHCredentials"),
        "aws": Entry(f"{_BLOB}:AwsCredentials"),
        "gcp": Entry(f"{_BLOB}:GcpCredentials"),
        "azure": Entry(f"{_BLOB}:AzureBlobStorageCredentials"),
        "docker": Entry("conveyor.sources.oci.credentials:DockerRegistryCredentials"),
    },
)
"""``type`` → credentials class."""


def credentials_secret_name(name: str) -> str:
    """The secret under which credentials ``name`` are stored: ``credentials.<name>``."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"{name!r} is not a valid credentials name",
            hint="use letters, digits, '.', '_' and '-' (e.g. github-ci)",
        )
    return CREDENTIALS_PREFIX + name


def did_you_mean(
    name: str, store: SecretStore | None, *, saved: bool = True, secrets: bool = False
) -> str | None:
    """``"did you mean 'gh-ci'?"`` for credentials ``name`` that are not in ``store``: the
    closest name of saved credentials (``saved``) or plain secrets (``secrets``), or None when
    none is close or the store cannot list its names."""
    if not isinstance(store, ListableSecretStore) or not (saved or secrets):
        return None
    try:
        stored = store.secret_names()
    except ConveyorError:  # only a hint: the error it goes with says what was not found
        return None
    names = [
        s[len(CREDENTIALS_PREFIX) :] if s.startswith(CREDENTIALS_PREFIX) else s
        for s in stored
        if (saved if s.startswith(CREDENTIALS_PREFIX) else secrets)
    ]
    close = closest_name(name, names)
    return f"did you mean {close!r}?" if close else None


def as_secret(value: Secret | str | None, what: str) -> Secret | None:
    """``value`` as a `Secret` (None stays None); anything but a string is refused."""
    if value is None:
        return None
    if not isinstance(value, Secret | str):
        raise ConfigError(f"{what} must be a string or a Secret")
    return value if isinstance(value, Secret) else Secret(value)


class Credentials:
    """Base of every credentials kind (subclasses are frozen dataclasses with a ``name`` field
    that `save` and `load` set)."""

    type: ClassVar[str]
    name: str | None

    def to_data(self) -> dict[str, Any]:
        """Every field, secrets revealed: only for writing to the encrypted store."""
        data: dict[str, Any] = {"type": self.type}
        for f in fields(self):  # type: ignore[arg-type]
            if f.name == "name":
                continue
            value = getattr(self, f.name)
            if value is not None:
                data[f.name] = reveal(value) if isinstance(value, Secret) else value
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any], *, name: str | None = None) -> Self:
        """Rebuild credentials from `to_data` output (dispatching on ``type``)."""
        kind = data.get("type")
        if not isinstance(kind, str) or kind not in CREDENTIAL_TYPES:
            raise ConfigError(f"stored credentials {name!r} have an unknown type {kind!r}")
        target = CREDENTIAL_TYPES.get(kind)
        if not issubclass(target, cls):
            raise ConfigError(f"credentials {name!r} are {kind} credentials, not {cls.type}")
        args = {k: v for k, v in data.items() if k != "type"}
        try:
            made = target(**args)
        except TypeError as exc:
            raise ConfigError(f"stored credentials {name!r} are malformed: {exc}") from None
        object.__setattr__(made, "name", name)
        return made

    def save(
        self, name: str, *, overwrite: bool = True, store: WritableSecretStore | None = None
    ) -> Self:
        """Store these credentials as ``name`` in the encrypted secret store, replacing any
        (``overwrite=False``: refuse a name already saved, as Prefect's blocks do by default)."""
        secret_name = credentials_secret_name(name)
        payload = json.dumps(self.to_data(), sort_keys=True)
        with _store(store) as target:
            if not isinstance(target, WritableSecretStore):
                raise ConfigError("this secret store cannot save credentials")
            if not overwrite and target.get_secret(secret_name) is not None:
                raise ConfigError(
                    f"credentials {name!r} exist already",
                    hint="pass overwrite=True to replace them",
                )
            target.set_secret(secret_name, payload)
        object.__setattr__(self, "name", name)
        return self

    @classmethod
    def load(cls, name: str, *, store: SecretStore | None = None) -> Self:
        """The credentials saved as ``name`` (of this kind, or any kind on the base class)."""
        with _store(store) as source:
            found = load_saved(name, source)
            if found is None:
                raise ConfigError(
                    f"no credentials named {name!r}",
                    hint=did_you_mean(name, source)
                    or f"create them with `conveyor credentials create <kind> {name}`",
                )
        if not isinstance(found, cls):
            raise ConfigError(f"credentials {name!r} are {found.type} credentials, not {cls.type}")
        return found


def load_saved(name: str, store: SecretStore) -> Credentials | None:
    """The credentials saved as ``name`` in ``store``, or None when there are none."""
    raw = store.get_secret(credentials_secret_name(name))
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        raise ConfigError(f"stored credentials {name!r} are not valid JSON") from None
    if not isinstance(data, dict):
        raise ConfigError(f"stored credentials {name!r} are malformed")
    return Credentials.from_data(data, name=name)


@contextmanager
def _store(store: SecretStore | None) -> Iterator[SecretStore]:
    if store is not None:
        yield store
        return
    # A public helper called without a store: connect as the command line does.
    from conveyor.connect import connect_from_env

    with connect_from_env() as client:
        yield client

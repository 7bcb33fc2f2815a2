"""Credentials for blob stores, with Prefect's field names, saved in the encrypted secret store.

- `AwsCredentials(aws_access_key_id, aws_secret_access_key, aws_session_token, profile_name,
  region_name, endpoint_url)` (S3 and S3-compatible stores: MinIO, Ceph, moto);
- `GcpCredentials(service_account_info | service_account_file, project)`;
- `AzureBlobStorageCredentials(connection_string | account_url)`.

``creds.save("name")`` stores them as the secret ``credentials.name``; a deployment stores only
the name; the worker loads them through its secret store and turns them into fsspec storage
options (`storage_options`), in memory, for the one filesystem that needs them. Secret fields are
`Secret` values (``repr`` shows ``****``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

from conveyor.credentials import Credentials, as_secret
from conveyor.errors import ConfigError
from conveyor.secrets import Secret, reveal

__all__ = [
    "AwsCredentials",
    "AzureBlobStorageCredentials",
    "BlobCredentials",
    "GcpCredentials",
]


class BlobCredentials(Credentials):
    """Credentials a blob store turns into fsspec storage options."""

    platform: ClassVar[str]

    def storage_options(self) -> dict[str, Any]:
        """The fsspec options for this platform's filesystem (secrets revealed: memory only)."""
        raise NotImplementedError


def _secrets(obj: Any, *names: str) -> None:
    for name in names:
        object.__setattr__(obj, name, as_secret(getattr(obj, name), name))


@dataclass(frozen=True)
class AwsCredentials(BlobCredentials):
    """AWS (or S3-compatible) credentials. With none of the keys, boto3's own chain applies
    (environment, ``profile_name`` in the shared files, instance roles)."""

    type: ClassVar[str] = "aws"
    platform: ClassVar[str] = "s3"
    aws_access_key_id: str | None = None
    aws_secret_access_key: Secret | str | None = None
    aws_session_token: Secret | str | None = None
    profile_name: str | None = None
    region_name: str | None = None
    endpoint_url: str | None = None
    name: str | None = field(default=None, compare=False, kw_only=True)

    def __post_init__(self) -> None:
        _secrets(self, "aws_secret_access_key", "aws_session_token")
        if bool(self.aws_access_key_id) != bool(self.aws_secret_access_key):
            raise ConfigError(
                "AwsCredentials need both aws_access_key_id and aws_secret_access_key, or neither"
            )
        if self.endpoint_url is not None and urlsplit(self.endpoint_url).scheme not in (
            "http",
            "https",
        ):
            raise ConfigError(f"endpoint_url {self.endpoint_url!r} is not an http(s) URL")

    def storage_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.aws_access_key_id and self.aws_secret_access_key:
            options["key"] = self.aws_access_key_id
            options["secret"] = reveal(self.aws_secret_access_key)
        if self.aws_session_token:
            options["token"] = reveal(self.aws_session_token)
        if self.profile_name:
            options["profile"] = self.profile_name
        if self.endpoint_url:
            options["endpoint_url"] = self.endpoint_url
        if self.region_name:
            options["client_kwargs"] = {"region_name": self.region_name}
        return options

    @classmethod
    def from_first_generation(cls, raw: str) -> AwsCredentials:
        """The ``AWS_CREDENTIALS`` secret of the first generation: JSON with ``ACCESS_KEY``,
        ``SECRET_ACCESS_KEY`` and ``SESSION_TOKEN``."""
        try:
            data = json.loads(raw)
        except ValueError:
            raise ConfigError("the AWS_CREDENTIALS secret is not JSON") from None
        if not isinstance(data, Mapping) or not data.get("ACCESS_KEY"):
            raise ConfigError(
                "the AWS_CREDENTIALS secret needs ACCESS_KEY and SECRET_ACCESS_KEY",
                hint='store {"ACCESS_KEY": ..., "SECRET_ACCESS_KEY": ..., "SESSION_TOKEN": ...}',
            )
        return cls(
            aws_access_key_id=str(data["ACCESS_KEY"]),
            aws_secret_access_key=str(data.get("SECRET_ACCESS_KEY") or ""),
            aws_session_token=data.get("SESSION_TOKEN") or None,
        )


@dataclass(frozen=True)
class GcpCredentials(BlobCredentials):
    """A Google Cloud service account (its JSON as ``service_account_info``, or the path of its
    file on the worker as ``service_account_file``). With neither, Application Default
    Credentials apply."""

    type: ClassVar[str] = "gcp"
    platform: ClassVar[str] = "gcs"
    service_account_info: Secret | str | None = None
    service_account_file: str | None = None
    project: str | None = None
    name: str | None = field(default=None, compare=False, kw_only=True)

    def __post_init__(self) -> None:
        info = self.service_account_info
        if isinstance(info, Mapping):
            object.__setattr__(self, "service_account_info", json.dumps(dict(info)))
        _secrets(self, "service_account_info")
        if self.service_account_info and self.service_account_file:
            raise ConfigError(
                "GcpCredentials take service_account_info or service_account_file, not both"
            )
        if self.service_account_info:
            try:
                parsed = json.loads(reveal(self.service_account_info))
            except ValueError:
                raise ConfigError("service_account_info is not JSON") from None
            if not isinstance(parsed, Mapping):
                raise ConfigError("service_account_info must be a JSON object")
            _check_google_key(parsed)

    def storage_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.service_account_info:
            options["token"] = json.loads(reveal(self.service_account_info))
        elif self.service_account_file:
            options["token"] = self.service_account_file
        project = self.project or self._info_project()
        if project:
            options["project"] = project
        return options

    def _info_project(self) -> str | None:
        if not self.service_account_info:
            return None
        value = json.loads(reveal(self.service_account_info)).get("project_id")
        return str(value) if value else None


_GOOGLE_KEY_FIELDS = {
    "service_account": ("client_email", "private_key", "token_uri"),
    "authorized_user": ("client_id", "client_secret", "refresh_token"),
}


def _check_google_key(info: Mapping[str, Any]) -> None:
    """A one-line `ConfigError` naming the fields (never the values) a Google key lacks, instead
    of gcsfs failing on the first upload with a bare ``KeyError``."""
    kind = str(info.get("type") or "service_account")
    needed = _GOOGLE_KEY_FIELDS.get(kind)
    if needed is None:
        raise ConfigError(
            f"service_account_info has type {kind[:40]!r}, not a service account key",
            hint="store the JSON key of a service account (type 'service_account')",
        )
    missing = [name for name in needed if not info.get(name)]
    if missing:
        raise ConfigError(
            f"service_account_info ({kind}) lacks {', '.join(missing)}",
            hint="store the whole JSON key file, as Google Cloud downloads it (IAM, Service "
            "accounts, Keys)",
        )


@dataclass(frozen=True)
class AzureBlobStorageCredentials(BlobCredentials):
    """An Azure storage connection string, or an account URL (then ``DefaultAzureCredential``:
    environment, managed identity, Azure CLI)."""

    type: ClassVar[str] = "azure"
    platform: ClassVar[str] = "azure"
    connection_string: Secret | str | None = None
    account_url: str | None = None
    name: str | None = field(default=None, compare=False, kw_only=True)

    def __post_init__(self) -> None:
        _secrets(self, "connection_string")
        if bool(self.connection_string) == bool(self.account_url):
            raise ConfigError(
                "AzureBlobStorageCredentials need a connection_string or an account_url (one)"
            )
        if self.account_url and urlsplit(self.account_url).scheme not in ("http", "https"):
            raise ConfigError(f"account_url {self.account_url!r} is not an http(s) URL")

    def storage_options(self) -> dict[str, Any]:
        if self.connection_string:
            return {"connection_string": reveal(self.connection_string)}
        assert self.account_url is not None
        host = urlsplit(self.account_url).hostname or ""
        return {"account_name": host.split(".")[0], "anon": False}

"""Blob URLs, and the fsspec filesystem that reaches one, built on the worker.

`BlobUrl.parse` splits ``s3://bucket/prefix`` (``gs://``, ``gcs://``, ``az://``, ``abfs://``,
``abfss://`` and any other fsspec protocol whose package is installed) without I/O.

`filesystem(url, settings, credentials, ctx)` builds the fsspec filesystem for one operation from
what the worker has: the source's settings (fsspec options; templates resolved from the
environment and the secret store), its credentials (a saved name, or an object in memory), and,
without credentials, the platform's own chain plus the first-generation names, looked up in
``ctx.environ`` and then in the secret store:

========  ===================================================================================
s3        ``AWS_CREDENTIALS`` (JSON: ACCESS_KEY, SECRET_ACCESS_KEY, SESSION_TOKEN), then
          boto3's chain; ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` name the endpoint
gcs       ``GCP_CREDENTIALS`` (service-account JSON), then Application Default Credentials;
          ``STORAGE_EMULATOR_HOST`` names an emulator (anonymous, as Google's clients do)
azure     ``AZURE_STORAGE_CONNECTION_STRING`` (without it or an account name, or with one that
          is malformed: a `ConfigError` saying how to give one, before adlfs is called)
========  ===================================================================================

Options exist only in memory, for the one filesystem that needs them: never stored, logged or
put in a message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from conveyor.errors import ConfigError, MissingDependency
from conveyor.secrets import Secret, SecretStore, reveal, template_ref

if TYPE_CHECKING:
    from conveyor.sources.base import FetchContext
    from conveyor.sources.blob.credentials import BlobCredentials

__all__ = [
    "PLATFORMS",
    "SECRET_SETTINGS",
    "BlobUrl",
    "check_settings",
    "filesystem",
    "load_blob_credentials",
    "storage_options",
]

PLATFORMS: dict[str, tuple[str, str, str]] = {
    "s3": ("s3", "s3", "s3fs"),
    "s3a": ("s3", "s3", "s3fs"),
    "gs": ("gcs", "gcs", "gcsfs"),
    "gcs": ("gcs", "gcs", "gcsfs"),
    "az": ("azure", "azure", "adlfs"),
    "abfs": ("azure", "azure", "adlfs"),
    "abfss": ("azure", "azure", "adlfs"),
}
"""URL scheme → (platform, conveyor extra, package)."""

SECRET_SETTINGS = frozenset(
    {
        "key",
        "secret",
        "token",
        "password",
        "connection_string",
        "account_key",
        "sas_token",
        "client_secret",
        "credential",
        "credentials",
        "session_token",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "service_account_info",
        "private_key",
        "refresh_token",
        "access_token",
    }
)
"""Settings that hold secrets: written as templates (``${NAME}``), resolved on the worker."""
_PUBLIC_TOKENS = frozenset({"anon", "google_default", "cloud"})


@dataclass(frozen=True)
class BlobUrl:
    """``protocol://bucket/prefix``: ``root`` is the filesystem path of the prefix."""

    url: str
    protocol: str
    platform: str
    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> BlobUrl:
        if not isinstance(url, str) or "://" not in url:
            raise ConfigError(f"{url!r} is not a blob URL", hint="e.g. s3://bucket/flows")
        parts = urlsplit(url)
        protocol = parts.scheme.lower()
        if parts.query or parts.fragment:
            raise ConfigError(
                f"blob URL {_shown(url)} has a query or fragment",
                hint="pass options as settings (endpoint_url=...), not in the URL",
            )
        if parts.password or (parts.username and protocol not in ("abfs", "abfss")):
            raise ConfigError(
                "a blob URL must not carry credentials",
                hint="pass credentials= (saved credentials) or ${NAME} settings",
            )
        bucket = parts.netloc
        prefix = parts.path.strip("/")
        if not bucket:
            raise ConfigError(f"blob URL {_shown(url)} names no bucket or container")
        if any(part in ("..", ".") for part in prefix.split("/")) or "//" in parts.path:
            raise ConfigError(f"blob URL {_shown(url)} has an empty, '.' or '..' path segment")
        platform = PLATFORMS.get(protocol, ("other", "", ""))[0]
        if platform == "azure":
            check_container_name(bucket.split("@", 1)[0])
        normal = f"{protocol}://{bucket}/{prefix}".rstrip("/")
        return cls(normal, protocol, platform, bucket, prefix)

    @property
    def root(self) -> str:
        """The prefix as a filesystem path (``bucket/prefix``)."""
        return f"{self.bucket}/{self.prefix}".rstrip("/")

    def join(self, *names: str) -> str:
        """The filesystem path of ``names`` under the prefix."""
        return "/".join([self.root, *names])

    def url_of(self, *names: str) -> str:
        return "/".join([self.url, *names])


_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?!-)){1,61}[a-z0-9]")
_SPECIAL_CONTAINERS = frozenset({"$root", "$web", "$logs"})


def check_container_name(name: str) -> None:
    """Refuse a name Azure never accepts for a container (3 to 63 lowercase letters, digits and
    single hyphens, a letter or digit at each end), before any request: Azure answers it with a
    bare ``InvalidResourceName``."""
    if name in _SPECIAL_CONTAINERS or _CONTAINER.fullmatch(name):
        return
    suggestion = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", name.lower())).strip("-")
    raise ConfigError(
        f"{name!r} is not a valid Azure container name",
        hint="a container name is 3 to 63 lowercase letters, digits and single hyphens"
        + (f", e.g. {suggestion!r}" if _CONTAINER.fullmatch(suggestion) else ""),
    )


def _shown(url: str) -> str:
    from conveyor.secrets import redact_url

    return redact_url(url)


def check_settings(settings: Mapping[str, Any], *, where: str = "") -> None:
    """Refuse a literal secret among ``settings`` (it would be stored with the deployment): a
    secret setting (at any depth) that is not a template, whatever its type (a service-account
    key given as a dict too), and a URL carrying a user name or password."""
    for key, value in settings.items():
        if key in SECRET_SETTINGS and isinstance(value, Mapping | list | tuple):
            raise ConfigError(
                f"storage setting {where}{key} holds a literal {type(value).__name__}: a secret "
                "setting must be a template such as ${NAME} (it would be stored with the "
                "deployment)",
                hint="save a key as credentials (`conveyor credentials create gcp|aws|azure NAME`"
                ", the secret on stdin) and pass credentials=NAME",
            )
        if isinstance(value, Mapping):
            check_settings(value, where=f"{where}{key}.")
            continue
        if isinstance(value, str) and _has_userinfo(value):
            raise ConfigError(
                f"storage setting {where}{key} is a URL with a user name or password (it "
                "would be stored with the deployment)",
                hint="pass credentials=NAME (saved credentials) or ${NAME} settings for the key "
                "and secret, and the URL without them",
            )
        if key not in SECRET_SETTINGS or value is None or isinstance(value, bool):
            continue
        if isinstance(value, Secret):
            continue
        if key == "token" and value in _PUBLIC_TOKENS:
            continue
        ref = template_ref(value) if isinstance(value, str) else None
        if ref is None or ref.kind not in ("secret", "env"):
            raise ConfigError(
                f"storage setting {where}{key} must be a template such as ${{NAME}}, never the "
                "secret itself (it would be stored with the deployment)",
                hint=f"store it with `conveyor secret set NAME` and write {key}: ${{NAME}}, or "
                "use saved credentials (credentials=NAME)",
            )


def _has_userinfo(text: str) -> bool:
    """Whether ``text`` is a URL whose user information is literal (``https://u:p@host``,
    ``https://TOKEN@host``); templates there (``https://${U}:${P}@host``) are fine."""
    from conveyor.secrets import template_refs

    if "://" not in text or "@" not in text:
        return False
    try:
        netloc = urlsplit(text.strip()).netloc
    except ValueError:
        return False
    userinfo, at, _ = netloc.rpartition("@")
    if not at:
        return False
    user, colon, password = userinfo.partition(":")
    secret = password if colon else user
    for ref in template_refs(secret):
        if ref.kind in ("secret", "env"):
            secret = secret.replace(ref.text, "")
    return bool(secret)


def _lookup(name: str, ctx: FetchContext) -> str | None:
    if ctx.environ.get(name):
        return ctx.environ[name]
    store: SecretStore | None = ctx.secrets
    if store is None:
        return None
    try:
        return store.get_secret(name)
    except Exception:  # the store is a convenience here: the platform chain still applies
        return None


def load_blob_credentials(
    credentials: str | BlobCredentials | None, platform: str, ctx: FetchContext
) -> BlobCredentials | None:
    """The credentials a source names (a saved name or template), loaded; or the object."""
    from conveyor.credentials import did_you_mean, load_saved
    from conveyor.sources.blob.credentials import BlobCredentials

    if credentials is None or isinstance(credentials, BlobCredentials):
        found = credentials
    else:
        ref = template_ref(credentials)
        name = ref.name if ref is not None else credentials.strip()
        if ctx.secrets is None:
            raise ConfigError(
                f"credentials {name!r} cannot be loaded: this process has no secret store",
                hint="run through a worker, or pass the credentials object",
            )
        saved = load_saved(name, ctx.secrets)
        if saved is None:
            raise ConfigError(
                f"no credentials named {name!r}",
                hint=did_you_mean(name, ctx.secrets)
                or f"create them with `conveyor credentials create aws|gcp|azure {name}`",
            )
        if not isinstance(saved, BlobCredentials):
            raise ConfigError(f"credentials {name!r} are {saved.type} credentials, not blob ones")
        found = saved
    if found is not None and platform != "other" and found.platform != platform:
        raise ConfigError(f"{found.type} credentials cannot be used with a {platform} store")
    return found


def _ambient(platform: str, ctx: FetchContext) -> dict[str, Any]:
    from conveyor.sources.blob.credentials import AwsCredentials, GcpCredentials

    env = ctx.environ
    if platform == "s3":
        options: dict[str, Any] = {}
        raw = _lookup("AWS_CREDENTIALS", ctx)
        if raw:
            options.update(AwsCredentials.from_first_generation(raw).storage_options())
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        if endpoint:
            options["endpoint_url"] = endpoint
        return options
    if platform == "gcs":
        raw = _lookup("GCP_CREDENTIALS", ctx)
        if raw:
            return GcpCredentials(service_account_info=raw).storage_options()
        emulator = env.get("STORAGE_EMULATOR_HOST")
        if emulator:
            endpoint = emulator if "://" in emulator else f"http://{emulator}"
            return {"endpoint_url": endpoint, "token": "anon"}
        return {}
    if platform == "azure":
        raw = _lookup("AZURE_STORAGE_CONNECTION_STRING", ctx)
        return {"connection_string": raw} if raw else {}
    return {}


def storage_options(
    url: BlobUrl,
    settings: Mapping[str, Any],
    credentials: str | BlobCredentials | None,
    ctx: FetchContext,
) -> dict[str, Any]:
    """Every fsspec option for ``url``'s filesystem (secrets revealed: memory only)."""
    from conveyor.secrets import resolve_templates

    found = load_blob_credentials(credentials, url.platform, ctx)
    options = found.storage_options() if found is not None else _ambient(url.platform, ctx)
    resolved = resolve_templates(dict(settings), store=ctx.secrets, environ=ctx.environ)
    for key, value in _revealed(resolved).items():
        if isinstance(value, Mapping) and isinstance(options.get(key), Mapping):
            options[key] = {**options[key], **value}
        else:
            options[key] = value
    if url.platform == "s3":
        _prefer_client_kwargs(options)
    return options


_S3_KEYS = {
    "key": "aws_access_key_id",
    "secret": "aws_secret_access_key",
    "token": "aws_session_token",
}
"""s3fs's credential options → the boto3 client arguments they become."""


def _prefer_client_kwargs(options: dict[str, Any]) -> None:
    """Drop the s3fs options whose boto3 twins ``client_kwargs`` sets: the storage's own client
    options (``S3(client_options={"endpoint_url": ...})``) win over the environment's
    (``AWS_ENDPOINT_URL_S3``, ``AWS_CREDENTIALS``) and saved credentials, instead of s3fs
    passing both to boto3 (``got multiple values for keyword argument 'endpoint_url'``). Keys
    go together: a key id from one place is never paired with a secret from another."""
    client_kwargs = options.get("client_kwargs")
    if not isinstance(client_kwargs, Mapping):
        return
    if "endpoint_url" in client_kwargs:
        options.pop("endpoint_url", None)
    if any(twin in client_kwargs for twin in _S3_KEYS.values()):
        for option in _S3_KEYS:
            options.pop(option, None)


def _revealed(value: Any) -> Any:
    if isinstance(value, Secret):
        return reveal(value)
    if isinstance(value, Mapping):
        return {k: _revealed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_revealed(v) for v in value]
    return value


def filesystem_class(url: BlobUrl) -> Any:
    """The fsspec filesystem class for ``url`` (imported now; a missing extra is named)."""
    import importlib

    platform, extra, package = PLATFORMS.get(url.protocol, ("other", "", ""))
    try:
        fsspec = importlib.import_module("fsspec")
    except ModuleNotFoundError:
        raise MissingDependency(
            "fsspec", extra=extra or "s3", feature=f"{url.protocol}:// blob storage"
        ) from None
    if platform == "gcs":
        try:
            return importlib.import_module("conveyor.sources.blob._gcs").GCSFileSystem
        except ModuleNotFoundError:
            raise MissingDependency(package, extra=extra, feature="gs:// blob storage") from None
    try:
        return fsspec.get_filesystem_class(url.protocol)
    except ImportError:
        if extra:
            raise MissingDependency(
                package, extra=extra, feature=f"{url.protocol}:// blob storage"
            ) from None
        raise ConfigError(
            f"the fsspec backend for {url.protocol}:// is not installed",
            hint="install the package fsspec names for it",
        ) from None
    except ValueError:
        raise ConfigError(
            f"no fsspec backend handles {url.protocol}:// URLs",
            hint="use s3://, gs://, az://, abfs:// or a protocol fsspec knows",
        ) from None


_AZURE_HINT = (
    "pass connection_string=${NAME} or credentials=NAME (`conveyor credentials create azure "
    "NAME`), or set AZURE_STORAGE_CONNECTION_STRING (environment or `conveyor secret set`)"
)


def _azure_account(options: Mapping[str, Any], ctx: FetchContext) -> bool:
    """Whether adlfs has an account to reach: a connection string or an account name (given,
    or in the ``AZURE_STORAGE_*`` variables adlfs reads itself)."""
    import os

    if options.get("connection_string") or options.get("account_name"):
        return True
    names = ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME")
    return any(ctx.environ.get(name) or os.environ.get(name) for name in names)


def filesystem(
    url: BlobUrl,
    settings: Mapping[str, Any],
    credentials: str | BlobCredentials | None,
    ctx: FetchContext,
) -> Any:
    """The fsspec filesystem for ``url`` with these options (fsspec keeps one instance per set
    of options in this process, so a worker reuses its HTTP session and client; listings and
    existence checks invalidate its caches before they look), each request bounded by the
    connect and read timeouts and tries ``CONVEYOR_NETWORK_RETRY_SECONDS`` gives
    (`conveyor.sources.blob._limits`)."""
    from conveyor._retry import TryLimits
    from conveyor.sources.blob._errors import translate
    from conveyor.sources.blob._limits import bound_filesystem, bounded_options

    cls = filesystem_class(url)
    limits = TryLimits.from_settings(ctx.settings)
    options = storage_options(url, settings, credentials, ctx)
    options = bounded_options(url.platform, options, limits, environ=ctx.environ)
    if url.platform == "azure" and not _azure_account(options, ctx):
        raise ConfigError(f"no Azure connection string to reach {url.url}", hint=_AZURE_HINT)
    try:
        fs = cls(**options)
        bound_filesystem(fs, url.platform, options, limits)
        return fs
    except (TypeError, ValueError) as exc:
        if url.platform == "azure" and options.get("connection_string"):
            raise ConfigError(
                f"the Azure connection string to reach {url.url} is malformed",
                hint="it looks like DefaultEndpointsProtocol=https;AccountName=...;AccountKey=..."
                "; " + _AZURE_HINT,
            ) from None
        keys = ", ".join(sorted(options))
        raise ConfigError(
            f"the {url.protocol} filesystem refused its options ({keys}): {type(exc).__name__}",
        ) from None
    except Exception as exc:
        raise translate(exc, where=url.url) from None

"""The ``url`` location of `conveyor.sources.flowfile`: one object on a blob store.

The first-generation blob storages (``S3``, ``GCS``, ``Azure`` in `conveyor.storage`) store each
flow as one object and register a `FlowFileSource` whose location is::

    {"url": {"url": "s3://bucket/s3-flow/2024-05-01t10-11-12-123456-00-00",
             "client_kwargs": {"endpoint_url": "..."}}}

Besides ``url``, the location holds fsspec settings: client options, a project, and secrets only
as templates (``connection_string: "${NAME}"``, resolved on the worker: the environment first,
then the server's secret store); `check_location` refuses a literal secret. The platform's own
chain applies on top (`conveyor.sources.blob._fs`: ``AWS_CREDENTIALS``, ``GCP_CREDENTIALS``,
``AZURE_STORAGE_CONNECTION_STRING``, ``AWS_ENDPOINT_URL_S3``, ``STORAGE_EMULATOR_HOST``).

- `read_url`: the object's bytes, one GET, retried while the store cannot be reached;
- `write_url`: store bytes as the object (``overwrite=False``: an object that exists with other
  bytes is refused, one with the very same bytes is left as it is, so a retried upload whose
  answer was lost does not fail); ``extra`` goes to the backend's put call (S3's ``put_object``
  arguments: ``ServerSideEncryption``, ``Metadata``, ...).

Errors name the object's URL and the kind of failure, never a credential.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conveyor.errors import ConfigError, SourceError
from conveyor.sources.base import FetchContext, context
from conveyor.sources.blob._errors import budget_of, call, translate
from conveyor.sources.blob._fs import BlobUrl, _lookup, check_settings, filesystem

__all__ = ["check_location", "read_url", "split_location", "write_url"]

MAX_FLOW_FILE_BYTES = 256 << 20
"""The largest flow file read back (a flow pickle or script; far below this in practice)."""


def split_location(location: Mapping[str, Any]) -> tuple[BlobUrl, dict[str, Any]]:
    """The object's URL (``bucket/key``: a key is required) and its fsspec settings, from the
    inner mapping or the whole ``{"url": {...}}`` location."""
    inner = location.get("url")
    if isinstance(inner, Mapping):
        location = inner
    where = location.get("url")
    if not isinstance(where, str):
        raise ConfigError("a blob flow-file location needs a 'url'")
    url = BlobUrl.parse(where)
    if not url.prefix:
        raise ConfigError(f"{url.url} names a bucket, not an object", hint="add the object's key")
    settings = {k: v for k, v in location.items() if k != "url"}
    return url, settings


def check_location(location: Mapping[str, Any]) -> None:
    """Refuse a location that would store a secret (a literal instead of a ``${NAME}``)."""
    _, settings = split_location(location)
    check_settings({k: v for k, v in settings.items() if not isinstance(v, bool)})


def _fs(url: BlobUrl, settings: Mapping[str, Any], ctx: FetchContext) -> Any:
    if (
        url.platform == "azure"
        and not settings.get("connection_string")
        and not settings.get("account_name")
        and not _lookup("AZURE_STORAGE_CONNECTION_STRING", ctx)
    ):
        raise ConfigError(
            f"no Azure connection string to reach {url.url}",
            hint="pass connection_string= or connection_string_secret=, or set "
            "AZURE_STORAGE_CONNECTION_STRING (environment or `conveyor secret set`)",
        )
    return filesystem(url, settings, None, ctx)


def read_url(
    location: Mapping[str, Any],
    ctx: FetchContext | None = None,
    *,
    limit: int | None = MAX_FLOW_FILE_BYTES,
) -> bytes:
    """The bytes of the object at ``location`` (the ``url`` reader of ``READERS``); an object
    larger than ``limit`` bytes is refused before it is downloaded."""
    ctx = context(ctx)
    url, settings = split_location(location)
    fs = _fs(url, settings, ctx)

    def download() -> bytes:
        try:
            if limit is not None:
                fs.invalidate_cache(url.root)
                size = fs.size(url.root)
                if size is not None and size > limit:
                    raise SourceError(
                        f"{url.url} is {size} bytes, more than a flow file may be ({limit})",
                        source=url.url,
                    )
            data: bytes = fs.cat_file(url.root)
        except Exception as exc:
            raise translate(exc, where=url.url, source=url.url) from None
        return data

    found: bytes = call(download, budget=budget_of(ctx))
    return found


def write_url(
    location: Mapping[str, Any],
    data: bytes,
    ctx: FetchContext | None = None,
    *,
    overwrite: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Store ``data`` as the object at ``location`` (see the module docstring)."""
    ctx = context(ctx)
    url, settings = split_location(location)
    fs = _fs(url, settings, ctx)
    options = dict(extra or {})
    if not overwrite:
        options["mode" if url.platform in ("s3", "gcs") else "overwrite"] = (
            "create" if url.platform in ("s3", "gcs") else False
        )

    def upload() -> None:
        try:
            fs.pipe_file(url.root, data, **options)
        except Exception as exc:
            error = translate(exc, where=url.url, source=url.url, writing=True)
            kind = type(error).__name__
            if not overwrite and (
                kind == "Changed" or (kind == "SourceError" and "exists" in str(error))
            ):
                _same_or_refuse(fs, url, data)
                return
            raise error from None

    call(upload, budget=budget_of(ctx))


def _same_or_refuse(fs: Any, url: BlobUrl, data: bytes) -> None:
    try:
        fs.invalidate_cache(url.root)
        present: bytes = fs.cat_file(url.root)
    except Exception as exc:
        raise translate(exc, where=url.url, source=url.url) from None
    if present != data:
        raise ConfigError(
            f"{url.url} already exists (with other content) and overwrite is off",
            hint="pass overwrite=True, or another blob name",
        )

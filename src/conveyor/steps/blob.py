"""Blob-store steps, with Prefect's names, arguments and outputs.

Pull steps (they name the code; at deploy `*_source` turns their arguments into the deployment's
`BlobStorage`, and on the worker the step materialises the *pinned* version through the code
cache):

- ``pull_from_remote_storage(url, **settings)`` → ``{"directory"}``;
- ``pull_from_s3(bucket, folder, credentials=None, client_parameters=None)`` →
  ``{"bucket", "folder", "directory"}``;
- ``pull_from_gcs(bucket, folder, project=None, credentials=None)`` → the same;
- ``pull_from_azure_blob_storage(container, folder, credentials=None)`` →
  ``{"container", "folder", "directory"}``.

Push steps (run at deploy, in the project's folder): ``push_to_s3(bucket, folder, credentials=None,
client_parameters=None, ignore_file=".prefectignore")``, ``push_to_gcs(bucket, folder,
project=None, credentials=None, ignore_file=...)``, ``push_to_azure_blob_storage(container,
folder, credentials=None, ignore_file=...)``: upload the folder as plain files and return
``{"bucket" | "container", "folder"}`` for later steps (``{{ push_code.folder }}``).

``credentials`` is the name of saved credentials, or ``{{ prefect.blocks.aws-credentials.NAME }}``
(read as the name ``NAME``); a literal secret is refused, so none is ever stored. Prefect's
``requires:`` is accepted and ignored (the extras are installed with Conveyor).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conveyor.errors import ConfigError
from conveyor.secrets import Secret, template_ref
from conveyor.sources.base import FetchContext
from conveyor.sources.blob import BlobStorage
from conveyor.sources.blob._fs import BlobUrl
from conveyor.steps import StepContext

__all__ = [
    "azure_source",
    "gcs_source",
    "pull_from_azure_blob_storage",
    "pull_from_gcs",
    "pull_from_remote_storage",
    "pull_from_s3",
    "push_to_azure_blob_storage",
    "push_to_gcs",
    "push_to_s3",
    "remote_storage_source",
    "s3_source",
]


def _credentials(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        ref = template_ref(value)
        if ref is not None and ref.kind in ("block", "secret", "env"):
            return ref.name if ref.kind == "block" else value.strip()
        return value.strip()
    if isinstance(value, Secret | Mapping):
        raise ConfigError(
            "credentials must name saved credentials, not hold them "
            "(they would be stored with the deployment)",
            hint="save them with `conveyor credentials create aws|gcp|azure NAME` and write "
            "credentials: NAME",
        )
    raise ConfigError("credentials must be the name of saved credentials")


def _url(scheme: str, bucket: str, folder: str | None) -> str:
    if not isinstance(bucket, str) or not bucket:
        raise ConfigError("the step needs a bucket (or container) name")
    return f"{scheme}://{bucket}/{(folder or '').strip('/')}".rstrip("/")


def _client_parameters(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """Prefect's ``client_parameters`` (``endpoint_url``, ``region_name``, ...) as s3fs options."""
    if not parameters:
        return {}
    options: dict[str, Any] = {}
    client_kwargs: dict[str, Any] = {}
    for key, value in parameters.items():
        if key == "endpoint_url":
            options["endpoint_url"] = value
        elif key in ("region_name", "api_version", "use_ssl", "verify"):
            client_kwargs[key] = value
        elif key == "config":
            options["config_kwargs"] = value
        else:
            raise ConfigError(f"client_parameters.{key} is not supported")
    if client_kwargs:
        options["client_kwargs"] = client_kwargs
    return options


# -- sources named by pull steps -------------------------------------------------------------------


def remote_storage_source(
    url: str, credentials: Any = None, requires: Any = None, **settings: Any
) -> BlobStorage:
    """The source ``pull_from_remote_storage`` names."""
    del requires
    return BlobStorage(url, credentials=_credentials(credentials), **settings)


def s3_source(
    bucket: str,
    folder: str = "",
    credentials: Any = None,
    client_parameters: Mapping[str, Any] | None = None,
    requires: Any = None,
) -> BlobStorage:
    del requires
    return BlobStorage(
        _url("s3", bucket, folder),
        credentials=_credentials(credentials),
        **_client_parameters(client_parameters),
    )


def gcs_source(
    bucket: str,
    folder: str = "",
    project: str | None = None,
    credentials: Any = None,
    requires: Any = None,
) -> BlobStorage:
    del requires
    extra: dict[str, Any] = {"project": project} if project else {}
    return BlobStorage(_url("gs", bucket, folder), credentials=_credentials(credentials), **extra)


def azure_source(
    container: str, folder: str = "", credentials: Any = None, requires: Any = None
) -> BlobStorage:
    del requires
    return BlobStorage(_url("az", container, folder), credentials=_credentials(credentials))


# -- pull steps (the worker) -----------------------------------------------------------------------


def _materialise(ctx: StepContext) -> str:
    ctx.materialise(ctx.code_dir)
    ctx.materialised = True
    return str(ctx.code_dir)


def pull_from_remote_storage(ctx: StepContext, url: str, **settings: Any) -> dict[str, Any]:
    """Materialise the deployment's pinned version of ``url`` into the run's code directory."""
    remote_storage_source(url, **settings)
    return {"directory": _materialise(ctx)}


def pull_from_s3(
    ctx: StepContext, bucket: str, folder: str = "", **arguments: Any
) -> dict[str, Any]:
    s3_source(bucket, folder, **arguments)
    return {"bucket": bucket, "folder": folder, "directory": _materialise(ctx)}


def pull_from_gcs(
    ctx: StepContext, bucket: str, folder: str = "", **arguments: Any
) -> dict[str, Any]:
    gcs_source(bucket, folder, **arguments)
    return {"bucket": bucket, "folder": folder, "directory": _materialise(ctx)}


def pull_from_azure_blob_storage(
    ctx: StepContext, container: str, folder: str = "", **arguments: Any
) -> dict[str, Any]:
    azure_source(container, folder, **arguments)
    return {"container": container, "folder": folder, "directory": _materialise(ctx)}


# -- push steps (deploy) ---------------------------------------------------------------------------


def _push(ctx: StepContext, source: BlobStorage, ignore_file: str | None) -> None:
    from conveyor.sources.blob._transfer import upload_folder

    fetch = FetchContext(secrets=ctx.secrets, environ=dict(ctx.env))
    files, size = upload_folder(
        source.filesystem(fetch),
        BlobUrl.parse(source.url),
        ctx.cwd,
        ignore_file=ignore_file,
    )
    ctx.log(f"uploaded {files} files ({size} bytes) to {source.url}", "stdout")


def push_to_s3(
    ctx: StepContext,
    bucket: str,
    folder: str,
    credentials: Any = None,
    client_parameters: Mapping[str, Any] | None = None,
    ignore_file: str | None = ".prefectignore",
) -> dict[str, Any]:
    """Upload the project folder to ``s3://bucket/folder`` as plain files."""
    _push(ctx, s3_source(bucket, folder, credentials, client_parameters), ignore_file)
    return {"bucket": bucket, "folder": folder}


def push_to_gcs(
    ctx: StepContext,
    bucket: str,
    folder: str,
    project: str | None = None,
    credentials: Any = None,
    ignore_file: str | None = ".prefectignore",
) -> dict[str, Any]:
    """Upload the project folder to ``gs://bucket/folder`` as plain files."""
    _push(ctx, gcs_source(bucket, folder, project, credentials), ignore_file)
    return {"bucket": bucket, "folder": folder}


def push_to_azure_blob_storage(
    ctx: StepContext,
    container: str,
    folder: str,
    credentials: Any = None,
    ignore_file: str | None = ".prefectignore",
) -> dict[str, Any]:
    """Upload the project folder to ``az://container/folder`` as plain files."""
    _push(ctx, azure_source(container, folder, credentials), ignore_file)
    return {"container": container, "folder": folder}

"""Storage blocks as Prefect users know them: `S3Bucket`, `GcsBucket`,
`AzureBlobStorageContainer`.

Each is a `BlobStorage` of its bucket (and folder), so it works wherever a source does
(``flow.from_source(S3Bucket("flows", bucket_folder="etl", credentials=creds), "main.py:etl")``),
plus the block methods Prefect's deployments call: ``put_directory`` (upload a folder as plain
files) and ``get_directory`` (download the folder's current files). Its spec is the
`BlobStorage` spec: credentials by name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from conveyor.sources.base import FetchContext, context
from conveyor.sources.blob.credentials import (
    AwsCredentials,
    AzureBlobStorageCredentials,
    GcpCredentials,
)
from conveyor.sources.blob.source import BlobStorage

__all__ = ["AzureBlobStorageContainer", "GcsBucket", "S3Bucket", "StorageBlock"]


class StorageBlock(BlobStorage):
    """A bucket (and folder) as a `BlobStorage`, with Prefect's block methods."""

    def put_directory(
        self,
        local_path: str | os.PathLike[str] | None = None,
        to_path: str | None = None,
        ignore_file: str | None = None,
        *,
        ctx: FetchContext | None = None,
    ) -> int:
        """Upload ``local_path`` (default: the working directory) as plain files under the
        folder (``/to_path``); returns the number of files uploaded."""
        from conveyor.sources.blob._fs import BlobUrl
        from conveyor.sources.blob._transfer import upload_folder

        target = BlobUrl.parse(self.url + (f"/{to_path.strip('/')}" if to_path else ""))
        files, _ = upload_folder(
            self.filesystem(context(ctx)),
            target,
            Path(local_path or Path.cwd()),
            ignore_file=ignore_file or ".prefectignore",
        )
        return files

    def get_directory(
        self,
        from_path: str | None = None,
        local_path: str | os.PathLike[str] | None = None,
        *,
        ctx: FetchContext | None = None,
    ) -> Path:
        """Download the folder's current files (``/from_path``) into ``local_path`` (default: the
        working directory), pinned and checked as a run's fetch is."""
        from conveyor.sources.blob import _pins
        from conveyor.sources.blob._fs import BlobUrl

        location = BlobUrl.parse(self.url + (f"/{from_path.strip('/')}" if from_path else ""))
        fs = self.filesystem(context(ctx))
        pins = _pins.list_pins(fs, location)
        dest = Path(local_path or Path.cwd())
        dest.mkdir(parents=True, exist_ok=True)
        for pin in pins:
            (dest / pin.path).unlink(missing_ok=True)
        _pins.fetch_pins(fs, location, pins, dest, version=_pins.pins_version(pins))
        return dest


class S3Bucket(StorageBlock):
    """``S3Bucket(bucket_name, bucket_folder="", credentials=AwsCredentials(...))``."""

    def __init__(
        self,
        bucket_name: str,
        bucket_folder: str = "",
        credentials: AwsCredentials | str | None = None,
        **settings: Any,
    ) -> None:
        self.bucket_name = bucket_name
        self.bucket_folder = bucket_folder
        super().__init__(
            _url("s3", bucket_name, bucket_folder), credentials=credentials, **settings
        )


class GcsBucket(StorageBlock):
    """``GcsBucket(bucket, bucket_folder="", gcp_credentials=GcpCredentials(...))``
    (``folder=`` is accepted for ``bucket_folder``)."""

    def __init__(
        self,
        bucket: str,
        bucket_folder: str = "",
        gcp_credentials: GcpCredentials | str | None = None,
        *,
        folder: str | None = None,
        **settings: Any,
    ) -> None:
        self.bucket = bucket
        self.bucket_folder = folder if folder is not None else bucket_folder
        super().__init__(
            _url("gs", bucket, self.bucket_folder), credentials=gcp_credentials, **settings
        )


class AzureBlobStorageContainer(StorageBlock):
    """``AzureBlobStorageContainer(container_name, credentials=AzureBlobStorageCredentials(...),
    base_folder="")``."""

    def __init__(
        self,
        container_name: str,
        credentials: AzureBlobStorageCredentials | str | None = None,
        base_folder: str = "",
        **settings: Any,
    ) -> None:
        self.container_name = container_name
        self.base_folder = base_folder
        super().__init__(
            _url("az", container_name, base_folder), credentials=credentials, **settings
        )


def _url(scheme: str, bucket: str, folder: str) -> str:
    return f"{scheme}://{bucket}/{folder.strip('/')}".rstrip("/")

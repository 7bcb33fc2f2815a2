"""Blob stores through fsspec (s3fs, gcsfs, adlfs, or any installed fsspec protocol).

- `BlobStorage` (`conveyor.sources.blob.source`): the source, in bundle and folder mode;
- credentials (`conveyor.sources.blob.credentials`): `AwsCredentials`, `GcpCredentials`,
  `AzureBlobStorageCredentials`;
- storage blocks (`conveyor.sources.blob.blocks`): `S3Bucket`, `GcsBucket`,
  `AzureBlobStorageContainer`;
- the bundle store on a blob URL (`conveyor.sources.blob.store`) and the result store beside
  the code (`conveyor.sources.blob.results`).

Importing this package imports no cloud library: each backend is imported when a filesystem is
first built, and a missing one is a `MissingDependency` naming the extra
(``pip install 'conveyor[s3]'``, ``[gcs]``, ``[azure]``).
"""

from __future__ import annotations

from conveyor.sources.blob.blocks import AzureBlobStorageContainer, GcsBucket, S3Bucket
from conveyor.sources.blob.credentials import (
    AwsCredentials,
    AzureBlobStorageCredentials,
    GcpCredentials,
)
from conveyor.sources.blob.source import BlobStorage

__all__ = [
    "AwsCredentials",
    "AzureBlobStorageContainer",
    "AzureBlobStorageCredentials",
    "BlobStorage",
    "GcpCredentials",
    "GcsBucket",
    "S3Bucket",
]

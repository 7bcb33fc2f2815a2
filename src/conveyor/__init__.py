"""Conveyor: store workflow code and get exactly that code back onto the machines that run it.

The public API is imported lazily, so ``import conveyor`` stays cheap: a name is imported from its
module on first use (see ``_EXPORTS``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from conveyor._version import __version__ as __version__

# name -> module that defines it. Keep sorted; tests check it against __all__.
_EXPORTS: dict[str, str] = {
    "ApiError": "conveyor.errors",
    "AuthenticationError": "conveyor.errors",
    "AwsCredentials": "conveyor.sources.blob.credentials",
    "AzureBlobStorageContainer": "conveyor.sources.blob.blocks",
    "AzureBlobStorageCredentials": "conveyor.sources.blob.credentials",
    "BitBucketCredentials": "conveyor.sources.git.credentials",
    "BlobStorage": "conveyor.sources.blob.source",
    "BundleError": "conveyor.errors",
    "CodeCache": "conveyor.cache",
    "CodeCommitCredentials": "conveyor.sources.git.credentials",
    "ConfigError": "conveyor.errors",
    "ConveyorClient": "conveyor.client",
    "ConveyorError": "conveyor.errors",
    "DockerImage": "conveyor.docker",
    "DockerRegistryCredentials": "conveyor.sources.oci.credentials",
    "Flow": "conveyor.flows",
    "FlowFileSource": "conveyor.sources.flowfile",
    "FlowLoadError": "conveyor.errors",
    "GcpCredentials": "conveyor.sources.blob.credentials",
    "GcsBucket": "conveyor.sources.blob.blocks",
    "GitHubCredentials": "conveyor.sources.git.credentials",
    "GitLabCredentials": "conveyor.sources.git.credentials",
    "GitRepository": "conveyor.sources.git.repository",
    "ImageSource": "conveyor.sources.oci.source",
    "IntegrityError": "conveyor.errors",
    "LocalResult": "conveyor.storage.results",
    "LocalSource": "conveyor.sources.local",
    "LocalStoreSource": "conveyor.sources.store",
    "ModuleSource": "conveyor.sources.module",
    "PushableSource": "conveyor.sources.base",
    "S3Bucket": "conveyor.sources.blob.blocks",
    "SSHCredentials": "conveyor.sources.git.credentials",
    "Secret": "conveyor.secrets",
    "Settings": "conveyor.settings",
    "Source": "conveyor.sources.base",
    "SourceError": "conveyor.errors",
    "SourceNotFound": "conveyor.errors",
    "SourceUnavailable": "conveyor.errors",
    "Storage": "conveyor.storage.base",
    "Task": "conveyor.flows",
    "UnsafeArchive": "conveyor.errors",
    "VersionNotFound": "conveyor.errors",
    "WebhookSource": "conveyor.sources.webhook",
    "WebhookStorage": "conveyor.sources.webhook",
    "flow": "conveyor.flows",
    "load_flow": "conveyor._loading",
    "source_from_spec": "conveyor.sources",
    "source_from_url": "conveyor.sources",
    "task": "conveyor.flows",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # `X as X`: explicit re-exports, so `mypy --strict` users can import them
    from conveyor._loading import load_flow as load_flow
    from conveyor.cache import CodeCache as CodeCache
    from conveyor.client import ConveyorClient as ConveyorClient
    from conveyor.docker import DockerImage as DockerImage
    from conveyor.errors import ApiError as ApiError
    from conveyor.errors import AuthenticationError as AuthenticationError
    from conveyor.errors import BundleError as BundleError
    from conveyor.errors import ConfigError as ConfigError
    from conveyor.errors import ConveyorError as ConveyorError
    from conveyor.errors import FlowLoadError as FlowLoadError
    from conveyor.errors import IntegrityError as IntegrityError
    from conveyor.errors import SourceError as SourceError
    from conveyor.errors import SourceNotFound as SourceNotFound
    from conveyor.errors import SourceUnavailable as SourceUnavailable
    from conveyor.errors import UnsafeArchive as UnsafeArchive
    from conveyor.errors import VersionNotFound as VersionNotFound
    from conveyor.flows import Flow as Flow
    from conveyor.flows import Task as Task
    from conveyor.flows import flow as flow
    from conveyor.flows import task as task
    from conveyor.secrets import Secret as Secret
    from conveyor.settings import Settings as Settings
    from conveyor.sources import source_from_spec as source_from_spec
    from conveyor.sources import source_from_url as source_from_url
    from conveyor.sources.base import PushableSource as PushableSource
    from conveyor.sources.base import Source as Source
    from conveyor.sources.blob.blocks import AzureBlobStorageContainer as AzureBlobStorageContainer
    from conveyor.sources.blob.blocks import GcsBucket as GcsBucket
    from conveyor.sources.blob.blocks import S3Bucket as S3Bucket
    from conveyor.sources.blob.credentials import AwsCredentials as AwsCredentials
    from conveyor.sources.blob.credentials import (
        AzureBlobStorageCredentials as AzureBlobStorageCredentials,
    )
    from conveyor.sources.blob.credentials import GcpCredentials as GcpCredentials
    from conveyor.sources.blob.source import BlobStorage as BlobStorage
    from conveyor.sources.flowfile import FlowFileSource as FlowFileSource
    from conveyor.sources.git.credentials import BitBucketCredentials as BitBucketCredentials
    from conveyor.sources.git.credentials import CodeCommitCredentials as CodeCommitCredentials
    from conveyor.sources.git.credentials import GitHubCredentials as GitHubCredentials
    from conveyor.sources.git.credentials import GitLabCredentials as GitLabCredentials
    from conveyor.sources.git.credentials import SSHCredentials as SSHCredentials
    from conveyor.sources.git.repository import GitRepository as GitRepository
    from conveyor.sources.local import LocalSource as LocalSource
    from conveyor.sources.module import ModuleSource as ModuleSource
    from conveyor.sources.oci.credentials import (
        DockerRegistryCredentials as DockerRegistryCredentials,
    )
    from conveyor.sources.oci.source import ImageSource as ImageSource
    from conveyor.sources.store import LocalStoreSource as LocalStoreSource
    from conveyor.sources.webhook import WebhookSource as WebhookSource
    from conveyor.sources.webhook import WebhookStorage as WebhookStorage
    from conveyor.storage.base import Storage as Storage
    from conveyor.storage.results import LocalResult as LocalResult


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'conveyor' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

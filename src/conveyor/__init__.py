"""Conveyor: store workflow code and get exactly that code back onto the machines that run it.

The public API is imported lazily, so ``import conveyor`` stays cheap: a name is imported from its
module on first use (see ``_EXPORTS``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it. Keep sorted; tests check it against __all__.
_EXPORTS: dict[str, str] = {
    "ApiError": "conveyor.errors",
    "AuthenticationError": "conveyor.errors",
    "BitBucketCredentials": "conveyor.credentials",
    "BundleError": "conveyor.errors",
    "CodeCache": "conveyor.cache",
    "CodeCommitCredentials": "conveyor.credentials",
    "ConfigError": "conveyor.errors",
    "ConveyorClient": "conveyor.client",
    "ConveyorError": "conveyor.errors",
    "Flow": "conveyor.flows",
    "FlowLoadError": "conveyor.errors",
    "GitHubCredentials": "conveyor.credentials",
    "GitLabCredentials": "conveyor.credentials",
    "GitRepository": "conveyor.sources.git",
    "IntegrityError": "conveyor.errors",
    "LocalSource": "conveyor.sources.local",
    "LocalStoreSource": "conveyor.sources.store",
    "PushableSource": "conveyor.sources.base",
    "SSHCredentials": "conveyor.credentials",
    "Secret": "conveyor.secrets",
    "Settings": "conveyor.settings",
    "Source": "conveyor.sources.base",
    "SourceError": "conveyor.errors",
    "SourceNotFound": "conveyor.errors",
    "Task": "conveyor.flows",
    "UnsafeArchive": "conveyor.errors",
    "VersionNotFound": "conveyor.errors",
    "flow": "conveyor.flows",
    "load_flow": "conveyor.flows",
    "source_from_spec": "conveyor.sources.base",
    "source_from_url": "conveyor.sources.base",
    "task": "conveyor.flows",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from conveyor.cache import CodeCache
    from conveyor.client import ConveyorClient
    from conveyor.credentials import (
        BitBucketCredentials,
        CodeCommitCredentials,
        GitHubCredentials,
        GitLabCredentials,
        SSHCredentials,
    )
    from conveyor.errors import (
        ApiError,
        AuthenticationError,
        BundleError,
        ConfigError,
        ConveyorError,
        FlowLoadError,
        IntegrityError,
        SourceError,
        SourceNotFound,
        UnsafeArchive,
        VersionNotFound,
    )
    from conveyor.flows import Flow as Flow  # `X as X`: an explicit re-export for mypy --strict
    from conveyor.flows import Task as Task
    from conveyor.flows import flow as flow
    from conveyor.flows import load_flow as load_flow
    from conveyor.flows import task as task
    from conveyor.secrets import Secret
    from conveyor.settings import Settings
    from conveyor.sources.base import PushableSource, Source, source_from_spec, source_from_url
    from conveyor.sources.git import GitRepository
    from conveyor.sources.local import LocalSource
    from conveyor.sources.store import LocalStoreSource


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'conveyor' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

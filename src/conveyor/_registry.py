"""Name or URL scheme → lazily imported source class.

Built-ins are a table of ``"module:Class"`` strings, imported on first use; a backend whose
dependency is missing says which extra installs it. Third parties register through the
``conveyor.sources`` entry-point group (``name = "package.module:Class"``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConfigError, MissingDependency

if TYPE_CHECKING:
    from conveyor.sources.base import Source

__all__ = [
    "BUILTIN_SOURCES",
    "ENTRY_POINT_GROUP",
    "SCHEME_TO_KIND",
    "BackendSpec",
    "get_source_class",
    "known_kinds",
]

ENTRY_POINT_GROUP = "conveyor.sources"


@dataclass(frozen=True)
class BackendSpec:
    """Where a backend lives, and what to install when its import fails."""

    target: str
    extra: str | None = None
    packages: tuple[str, ...] = ()


BUILTIN_SOURCES: dict[str, BackendSpec] = {
    "local": BackendSpec("conveyor.sources.local:LocalSource"),
    "store": BackendSpec("conveyor.sources.store:LocalStoreSource"),
    "git": BackendSpec("conveyor.sources.git:GitRepository"),
    "s3": BackendSpec("conveyor.sources.blob:RemoteStorage", "s3", ("s3fs",)),
    "gcs": BackendSpec("conveyor.sources.blob:RemoteStorage", "gcs", ("gcsfs",)),
    "azure": BackendSpec("conveyor.sources.blob:RemoteStorage", "azure", ("adlfs",)),
    "blob": BackendSpec("conveyor.sources.blob:RemoteStorage"),
    "oci": BackendSpec("conveyor.sources.oci:OCISource", "oci", ("oras",)),
    "webhook": BackendSpec("conveyor.sources.webhook:WebhookSource"),
}

# URL scheme → kind. ``https://`` and ``http://`` are git unless the caller says otherwise
# (a webhook or blob source is built explicitly, never guessed from a host name).
SCHEME_TO_KIND: dict[str, str] = {
    "file": "local",
    "git": "git",
    "ssh": "git",
    "git+ssh": "git",
    "https": "git",
    "http": "git",
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "az": "azure",
    "abfs": "azure",
    "abfss": "azure",
    "oci": "oci",
    "docker": "oci",
}


def _third_party() -> dict[str, BackendSpec]:
    return {ep.name: BackendSpec(ep.value) for ep in entry_points(group=ENTRY_POINT_GROUP)}


@cache
def _all_specs() -> dict[str, BackendSpec]:
    return {**_third_party(), **BUILTIN_SOURCES}


def known_kinds() -> list[str]:
    """Every source kind: built-in and registered through entry points."""
    return sorted(_all_specs())


def import_target(target: str) -> Any:
    """The object named by ``"package.module:attr"``, imported now."""
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr)


def get_source_class(kind: str) -> type[Source]:
    """The class for source ``kind``, imported now; a clear error when it cannot be."""
    spec = _all_specs().get(kind)
    if spec is None:
        raise ConfigError(
            f"unknown source kind {kind!r}",
            hint=f"use one of: {', '.join(known_kinds())}",
        )
    try:
        cls: type[Source] = import_target(spec.target)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if spec.extra and (
            not spec.packages or missing in {p.split(".")[0] for p in spec.packages}
        ):
            raise MissingDependency(
                missing or spec.extra, extra=spec.extra, feature=f"the {kind} source"
            ) from exc
        if kind in BUILTIN_SOURCES:
            raise
        raise _broken_plugin(kind, spec, exc) from exc
    except (ImportError, AttributeError) as exc:
        if kind in BUILTIN_SOURCES:
            raise
        raise _broken_plugin(kind, spec, exc) from exc
    return cls


def _broken_plugin(kind: str, spec: BackendSpec, exc: Exception) -> ConfigError:
    return ConfigError(
        f"source kind {kind!r} could not be loaded from {spec.target!r}: {exc}",
        hint=f"check the package that registers {kind!r} in the {ENTRY_POINT_GROUP!r} "
        "entry-point group",
    )

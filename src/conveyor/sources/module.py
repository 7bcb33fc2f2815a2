"""`ModuleSource`: code that is installed where the flow runs (the first generation's
``Module`` storage: ``Module("my_package.flows")``).

There is nothing to fetch: the tree is empty and its version is the version of an empty tree,
so every run imports ``module`` from the worker's environment (an image, a virtualenv). The
entrypoint is ``module:attribute``; the worker's child imports it like any module entrypoint.
What runs is whatever is installed there: pin the package version in the image or environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from conveyor.errors import ConfigError, VersionNotFound
from conveyor.sources.base import FetchContext, Source

__all__ = ["EMPTY_VERSION", "ModuleSource"]


def _empty_version() -> str:
    from conveyor.bundles import Manifest

    return Manifest(()).version


EMPTY_VERSION = _empty_version()
"""The version of a tree with no files."""


class ModuleSource(Source):
    """The installed module ``module`` (dotted name): an empty tree, always the same version."""

    kind: ClassVar[str] = "module"

    def __init__(self, module: str) -> None:
        if not isinstance(module, str) or not all(
            part.isidentifier() for part in module.split(".")
        ):
            raise ConfigError(
                f"{module!r} is not a module name", hint="write it like my_package.flows"
            )
        self.module = module

    def resolve(self, ctx: FetchContext | None = None) -> str:
        return EMPTY_VERSION

    def fetch(self, version: str, dest: Path, ctx: FetchContext | None = None) -> None:
        if version != EMPTY_VERSION:
            raise VersionNotFound(
                f"module {self.module} has no version {version[:19]}",
                source=self.describe(),
                hint="a module source's code is installed where the flow runs; redeploy",
            )

    def to_spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "module": self.module}

    def describe(self) -> str:
        return f"installed module {self.module}"

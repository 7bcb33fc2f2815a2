"""A folder on this machine as a source: its version is the version of its bundle.

`LocalSource.resolve` bundles the folder's manifest into a version (nothing is written).
`LocalSource.fetch` copies the folder into the destination while the folder is still that
version; once the folder has changed, the version can only come from the local bundle store
(where deploy pushes it: ``LocalStoreSource(...).push(folder)``, see `LocalSource.store`), and
without it `VersionNotFound` says to redeploy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from conveyor.errors import SourceNotFound, VersionNotFound
from conveyor.sources.base import Source
from conveyor.sources.store import LocalStoreSource

__all__ = ["LocalSource"]


class LocalSource(Source):
    """The code in folder ``path``; old versions are looked up in the bundle store ``store``.

    ``store`` defaults to ``$CONVEYOR_HOME/storage``, read at first use. The path is made
    absolute (without touching the disk) so the spec means the same folder from any directory.
    """

    kind = "local"

    def __init__(
        self, path: str | os.PathLike[str], *, store: str | os.PathLike[str] | None = None
    ) -> None:
        self.path = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
        self._store = os.path.abspath(store) if store is not None else None

    @property
    def store(self) -> LocalStoreSource:
        """The bundle store this source falls back on for versions the folder no longer holds."""
        return LocalStoreSource(self._store)

    def _missing(self) -> SourceNotFound:
        return SourceNotFound(
            f"folder {self.path} does not exist or is not a directory",
            source=self.describe(),
            hint="check the path; a local source is read on the machine that runs the flow",
        )

    def resolve(self) -> str:
        from conveyor.bundles import compute_version

        if not self.path.is_dir():
            raise self._missing()
        return compute_version(self.path)

    def fetch(self, version: str, dest: Path, *, scratch: Path | None = None) -> None:
        from conveyor.bundles import build_manifest, copy_tree, is_bundle_version

        if not is_bundle_version(version):
            raise VersionNotFound(
                f"{version!r} is not a bundle version",
                source=self.describe(),
                hint="a local folder's version looks like sha256-<64 hex digits>",
            )
        exists = self.path.is_dir()
        if exists:
            manifest = build_manifest(self.path)
            if manifest.version == version:
                copy_tree(self.path, dest, manifest=manifest)
                return
        store = self.store
        if store.has(version):
            store.fetch(version, dest)
            return
        if not exists:
            raise self._missing()
        raise VersionNotFound(
            f"folder {self.path} is no longer version {version[:19]} "
            "(the folder changed since deploy), and the bundle store does not hold it",
            source=self.describe(),
            hint="redeploy to run the folder's current code",
        )

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"kind": self.kind, "path": os.fspath(self.path)}
        if self._store is not None:
            spec["store"] = self._store
        return spec

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": os.fspath(self.path)}

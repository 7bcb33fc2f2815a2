"""A folder on this machine as a source: its version is the version of its bundle.

`LocalSource.resolve` computes the version of the folder's bundle manifest (nothing is written).
A folder changes in place, so it is not versioned by itself (``supports_versioning = False``):
deploy snapshots it into the bundle store and the deployment points at the snapshot. `fetch`
still works while the folder holds the asked version (a quick local run, a test), and says to
redeploy once it does not.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from conveyor.errors import SourceNotFound, VersionNotFound
from conveyor.sources.base import FetchContext, Source

__all__ = ["LocalSource"]


class LocalSource(Source):
    """The code in folder ``path`` (made absolute, without touching the disk)."""

    kind: ClassVar[str] = "local"
    supports_versioning: ClassVar[bool] = False

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))

    def materialised(self) -> Path:
        """The folder itself: deploy reads it in place instead of fetching a copy."""
        if not self.path.is_dir():
            raise self._missing()
        return self.path

    def _missing(self) -> SourceNotFound:
        return SourceNotFound(
            f"folder {self.path} does not exist or is not a directory",
            source=self.describe(),
            hint="check the path; a local source is read on the machine that runs the flow",
        )

    def resolve(self, ctx: FetchContext | None = None) -> str:
        from conveyor.bundles import compute_version

        return compute_version(self.materialised())

    def fetch(self, version: str, dest: Path, ctx: FetchContext | None = None) -> None:
        from conveyor.bundles import build_manifest, is_bundle_version, lay_out_tree

        if not is_bundle_version(version):
            raise VersionNotFound(
                f"{version!r} is not a bundle version",
                source=self.describe(),
                hint="a local folder's version looks like sha256-<64 hex digits>",
            )
        manifest = build_manifest(self.materialised())
        if manifest.version != version:
            raise VersionNotFound(
                f"folder {self.path} is no longer version {version[:19]} (it changed)",
                source=self.describe(),
                hint="redeploy to run the folder's current code",
            )
        lay_out_tree(self.path, dest, manifest=manifest)

    def to_spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": os.fspath(self.path)}

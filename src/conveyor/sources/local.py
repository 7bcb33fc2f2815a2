"""A folder on this machine as a source: its version is the version of its bundle.

`LocalSource.resolve` computes the version of the folder's bundle manifest (nothing of the
folder is written). With settings in the context it keeps a stat cache of the folder under the
cache directory (`conveyor._statcache`), so re-versioning an unchanged folder reads no file.
A folder changes in place, so it is not versioned by itself (``supports_versioning = False``):
deploy snapshots it into the bundle store and the deployment points at the snapshot. `fetch`
still works while the folder holds the asked version (a quick local run, a test), and says to
redeploy once it does not. Conveyor's own directories (`own_dirs`) are left out of the folder's
bundle when they are inside it: a bundle store or ``CONVEYOR_HOME`` kept in the project folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from conveyor.errors import SourceNotFound, VersionNotFound
from conveyor.sources.base import FetchContext, Source

if TYPE_CHECKING:
    from conveyor._statcache import StatCache

__all__ = ["LocalSource", "own_dirs", "stat_cache_for"]


def stat_cache_for(folder: Path, ctx: FetchContext | None) -> StatCache | None:
    """The stat cache of ``folder`` under the context's cache directory (None without
    settings: then every file is read)."""
    if ctx is None or ctx.settings is None:
        return None
    from conveyor._statcache import StatCache

    return StatCache.for_folder(ctx.settings.cache_dir, folder)


def own_dirs(ctx: FetchContext | None) -> tuple[Path, ...]:
    """Conveyor's own directories on this machine, which no bundle of a folder holding them
    includes: ``CONVEYOR_HOME``, the code cache and a local bundle store (none without
    settings)."""
    if ctx is None or ctx.settings is None:
        return ()
    from conveyor.sources.store import BundleStore

    settings = ctx.settings
    store = BundleStore(settings.effective_bundle_store)
    local_store = (Path(store.url),) if store.url is not None and store.is_machine_local else ()
    return (settings.home, settings.cache_dir, *local_store)


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

        folder = self.materialised()
        return compute_version(
            folder, stat_cache=stat_cache_for(folder, ctx), exclude=own_dirs(ctx)
        )

    def fetch(self, version: str, dest: Path, ctx: FetchContext | None = None) -> None:
        from conveyor.bundles import build_manifest, is_bundle_version, lay_out_tree

        if not is_bundle_version(version):
            raise VersionNotFound(
                f"{version!r} is not a bundle version",
                source=self.describe(),
                hint="a local folder's version looks like sha256-<64 hex digits>",
            )
        manifest = build_manifest(self.materialised(), exclude=own_dirs(ctx))
        if manifest.version != version:
            raise VersionNotFound(
                f"folder {self.path} is no longer version {version[:19]} (it changed)",
                source=self.describe(),
                hint="redeploy to run the folder's current code",
            )
        lay_out_tree(self.path, dest, manifest=manifest)

    def to_spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": os.fspath(self.path)}

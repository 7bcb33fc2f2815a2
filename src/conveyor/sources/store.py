"""The local bundle store: ``<root>/<version>.tar.zst`` under ``$CONVEYOR_HOME/storage``.

`LocalStoreSource` is push-capable: `push` bundles a tree and writes its archive under its version
(atomically, and not at all when that version is already there); `fetch` unpacks a version with
its digest checked. A store has no moving ref, so `resolve` returns the ``version`` it was built
with.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from conveyor.errors import ConfigError, SourceNotFound, VersionNotFound
from conveyor.sources.base import PushableSource

__all__ = ["LocalStoreSource"]

logger = logging.getLogger(__name__)

SUFFIX = ".tar.zst"


class LocalStoreSource(PushableSource):
    """Bundles kept on this machine, one archive per version.

    ``root`` defaults to ``Settings.from_env().storage_dir`` (``$CONVEYOR_HOME/storage``), read at
    first use; ``version`` is what `resolve` returns.
    """

    kind = "store"

    def __init__(self, root: str | os.PathLike[str] | None = None, *, version: str | None = None):
        self._root = os.path.abspath(root) if root is not None else None
        self._default_root: str | None = None
        self.version = version

    @property
    def root(self) -> Path:
        """The store's directory (the configured default is read here, at first use)."""
        if self._root is not None:
            return Path(self._root)
        if self._default_root is None:
            from conveyor.settings import Settings

            self._default_root = os.fspath(Settings.from_env().storage_dir)
        return Path(self._default_root)

    def path_for(self, version: str) -> Path:
        """Where the archive of ``version`` lives (whether or not it exists)."""
        from conveyor.bundles import is_bundle_version

        if not is_bundle_version(version):
            raise VersionNotFound(
                f"{version!r} is not a bundle version",
                source=self.describe(),
                hint="a bundle version looks like sha256-<64 hex digits>",
            )
        return self.root / f"{version}{SUFFIX}"

    def has(self, version: str) -> bool:
        """True when the store holds ``version``."""
        return self.path_for(version).is_file()

    def versions(self) -> list[str]:
        """Every version in the store, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name[: -len(SUFFIX)] for p in self.root.glob(f"sha256-*{SUFFIX}"))

    def resolve(self) -> str:
        if self.version is None:
            raise ConfigError(
                "a bundle store has no moving ref to resolve",
                hint="pass version='sha256-...' (the version push() returned), "
                "or deploy from the folder itself",
            )
        if not self.has(self.version):
            raise VersionNotFound(
                f"bundle {self.version[:19]} is not in the store at {self.root}",
                source=self.describe(),
                hint="push the tree to the store first",
            )
        return self.version

    def fetch(self, version: str, dest: Path, *, scratch: Path | None = None) -> None:
        from conveyor.bundles import unpack

        archive = self.path_for(version)
        if not archive.is_file():
            if not self.root.is_dir():
                raise SourceNotFound(
                    f"bundle store {self.root} does not exist", source=self.describe()
                )
            raise VersionNotFound(
                f"bundle {version[:19]} is not in the store at {self.root}",
                source=self.describe(),
                hint="push the tree again, or redeploy",
            )
        unpack(archive, dest, expected_version=version)

    def push(self, tree: Path) -> str:
        """Bundle ``tree`` into the store; the version. Writes nothing if it is already there."""
        from conveyor.bundles import build_manifest, pack

        manifest = build_manifest(Path(tree))
        archive = self.path_for(manifest.version)
        if archive.is_file():
            logger.debug("bundle already stored version=%s", manifest.version)
            return manifest.version
        pack(Path(tree), archive, manifest=manifest)
        logger.info(
            "bundle stored version=%s files=%d bytes=%d",
            manifest.version,
            manifest.file_count,
            manifest.total_size,
        )
        return manifest.version

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"kind": self.kind}
        if self._root is not None:
            spec["root"] = self._root
        if self.version is not None:
            spec["version"] = self.version
        return spec

    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_spec().items() if k != "version"}

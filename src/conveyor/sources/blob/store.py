"""The bundle store on a blob URL: ``CONVEYOR_BUNDLE_STORE=s3://bucket/conveyor``.

`blob_store_backend` is the factory registered in `conveyor.sources.store.STORE_BACKENDS` for
``s3``, ``gs``, ``gcs``, ``az``, ``abfs`` and ``abfss``: a `BlobStoreBackend` keeps archives as
objects ``<prefix>/<version>.tar.zst``, created conditionally (two deploys racing on one version
both succeed and leave one object), read in one GET; its ``size`` (one HEAD) and ``replace``
let a deploy repair an archive whose size is not the bundle's. Its options come from the
worker's context (the platform's chain and the first-generation names: see
`conveyor.sources.blob._fs`).

`push_bundle` (used by `BlobStorage.push` too): a HEAD, and only when the version is absent,
pack and one conditional upload.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from conveyor.errors import SourceNotFound, VersionNotFound
from conveyor.sources.base import FetchContext
from conveyor.sources.blob import _objects
from conveyor.sources.blob._errors import budget_of, call
from conveyor.sources.blob._fs import BlobUrl, filesystem

__all__ = ["BlobStoreBackend", "blob_store_backend", "push_bundle", "pushing"]

logger = logging.getLogger(__name__)


class BlobStoreBackend:
    """Immutable named objects under a blob prefix (a `StoreBackend`)."""

    def __init__(self, url: str, ctx: FetchContext) -> None:
        self.location = BlobUrl.parse(url)
        self.ctx = ctx
        self._fs: Any = None
        self.budget = budget_of(ctx)

    @property
    def fs(self) -> Any:
        if self._fs is None:
            self._fs = filesystem(self.location, {}, None, self.ctx)
        return self._fs

    def describe(self) -> str:
        return self.location.url

    def exists(self, name: str) -> bool:
        return bool(call(lambda: _objects.exists(self.fs, self.location, name), budget=self.budget))

    @contextmanager
    def open(self, name: str) -> Iterator[BinaryIO]:
        try:
            with _objects.open_object(self.fs, self.location, name) as stream:
                yield stream
        except SourceNotFound:
            raise VersionNotFound(
                f"{name} is not in the bundle store {self.location.url}",
                source=self.location.url,
                hint="redeploy to store the code again",
            ) from None

    def put(self, name: str, path: Path) -> bool:
        with pushing(self.location, path):
            return bool(
                call(
                    lambda: _objects.create_object(self.fs, self.location, name, path),
                    budget=self.budget,
                )
            )

    def size(self, name: str) -> int | None:
        """The object's size (one HEAD), or None when it is not there."""
        found: int | None = call(
            lambda: _objects.size(self.fs, self.location, name), budget=self.budget
        )
        return found

    def replace(self, name: str, path: Path) -> None:
        """Store the file as ``name`` over what is there (a damaged archive, repaired)."""
        with pushing(self.location, path):
            call(
                lambda: _objects.replace_object(self.fs, self.location, name, path),
                budget=self.budget,
            )


@contextmanager
def pushing(location: BlobUrl, path: Path) -> Iterator[None]:
    """An upload of the file at ``path`` to ``location``, shown to whoever watches transfers
    (the command line's progress bar: `conveyor._transfers`), complete once it is stored."""
    from conveyor._transfers import start

    size = path.stat().st_size
    progress = start(f"pushing to {location.url}", 1, size)
    yield
    if progress is not None:
        progress(1, size)


def blob_store_backend(url: str, ctx: FetchContext) -> BlobStoreBackend:
    """The `STORE_BACKENDS` factory for blob URLs."""
    return BlobStoreBackend(url, ctx)


def push_bundle(fs: Any, location: BlobUrl, tree: Path, *, budget: float) -> str:
    """Store ``tree``'s bundle under ``location`` unless present; returns its version."""
    from conveyor.bundles import build_manifest, pack

    manifest = build_manifest(tree)
    name = f"{manifest.version}.tar.zst"
    if call(lambda: _objects.exists(fs, location, name), budget=budget):
        logger.info("bundle already stored version=%s url=%s", manifest.version, location.url)
        return manifest.version
    with tempfile.TemporaryDirectory(prefix="conveyor-push-") as tmp:
        archive = Path(tmp) / name
        pack(tree, archive, manifest=manifest)
        size = archive.stat().st_size
        with pushing(location, archive):
            written = call(
                lambda: _objects.create_object(fs, location, name, archive), budget=budget
            )
    logger.info(
        "bundle stored version=%s files=%d bytes=%d url=%s written=%s",
        manifest.version,
        manifest.file_count,
        size,
        location.url,
        written,
    )
    return manifest.version

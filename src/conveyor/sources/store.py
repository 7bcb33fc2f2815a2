"""The bundle store: content-addressed archives, ``<location>/<version>.tar.zst``.

`BundleStore` is push-capable: `BundleStore.push` bundles a tree and stores its archive under
its version (written once, atomically; nothing is uploaded when that version is already there);
`BundleStore.fetch` streams one archive into the safe unpacker, which checks every file against
the version. Deploy snapshots every source that is not versioned by itself (a local folder) into
the store named by ``CONVEYOR_BUNDLE_STORE`` and pins the snapshot, so a run gets exactly the
deployed bytes whatever happens to the folder later.

Where the archives live (the ``url`` of the store):

- a directory on this machine (the default, ``$CONVEYOR_HOME/storage``);
- ``server``: the Conveyor server itself (``/api/bundles``), reached through the
  ``bundle_server`` backend the entry point puts in the `FetchContext` (this module never talks
  to the API), so a team with one server can deploy a local folder to workers anywhere;
- other backends (blob URLs) register in `STORE_BACKENDS` by URL scheme.

A store spec without a ``url`` (deployments made before stores were configurable) means the
local store of the machine that runs it (``ctx.settings.storage_dir``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Protocol, runtime_checkable

from conveyor._fs import atomic_write
from conveyor._registry import Entry, Registry
from conveyor.errors import (
    BundleError,
    ConfigError,
    IntegrityError,
    SourceNotFound,
    VersionNotFound,
)
from conveyor.sources.base import FetchContext, PushableSource, context

__all__ = [
    "STORE_BACKENDS",
    "SUFFIX",
    "BundleStore",
    "LocalDirBackend",
    "LocalStoreSource",
    "RepairableBackend",
    "StoreBackend",
]

logger = logging.getLogger(__name__)

SUFFIX = ".tar.zst"
SERVER = "server"


@runtime_checkable
class StoreBackend(Protocol):
    """Named immutable objects: what a bundle store needs from where it keeps archives."""

    def describe(self) -> str:
        """Where the objects live, redacted (for messages)."""
        ...

    def exists(self, name: str) -> bool:
        """True when object ``name`` is there."""
        ...

    def open(self, name: str) -> AbstractContextManager[BinaryIO]:
        """A stream of object ``name``; `VersionNotFound` when it is missing."""
        ...

    def put(self, name: str, path: Path) -> bool:
        """Store the file at ``path`` as ``name`` unless it exists; True when it was written.

        Two writers racing on one name both succeed, and one object is left.
        """
        ...


@runtime_checkable
class RepairableBackend(StoreBackend, Protocol):
    """A `StoreBackend` that can tell an object's size and overwrite it: a deploy then repairs
    an archive whose size is not the bundle's (truncated, or overwritten with something else)."""

    def size(self, name: str) -> int | None:
        """The size of object ``name``, or None when it is not there."""
        ...

    def replace(self, name: str, path: Path) -> None:
        """Store the file at ``path`` as ``name``, over what is there."""
        ...


class LocalDirBackend:
    """Objects as files in a directory, written through a temporary file and a rename."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return str(self.root)

    def exists(self, name: str) -> bool:
        return (self.root / name).is_file()

    @contextmanager
    def open(self, name: str) -> Iterator[BinaryIO]:
        try:
            fh = (self.root / name).open("rb")
        except FileNotFoundError:
            if not self.root.is_dir():
                raise SourceNotFound(
                    f"bundle store {self.root} does not exist",
                    source=str(self.root),
                    hint="deploy again, or point CONVEYOR_BUNDLE_STORE at a store that "
                    "every worker can read",
                ) from None
            raise VersionNotFound(
                f"{name} is not in the bundle store at {self.root}",
                source=str(self.root),
                hint="redeploy to store the code again",
            ) from None
        with fh:
            yield fh

    def put(self, name: str, path: Path) -> bool:
        target = self.root / name
        if target.is_file():
            return False
        self.replace(name, path)
        return True

    def size(self, name: str) -> int | None:
        try:
            return (self.root / name).stat().st_size
        except FileNotFoundError:
            return None

    def replace(self, name: str, path: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with path.open("rb") as src, atomic_write(self.root / name) as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)


_BLOB_BACKEND = "conveyor.sources.blob.store:blob_store_backend"
BackendFactory = Callable[[str, FetchContext], StoreBackend]

STORE_BACKENDS: Registry[BackendFactory] = Registry(
    "bundle store scheme",
    group="conveyor.bundle_stores",
    builtins={
        scheme: Entry(_BLOB_BACKEND, extra=extra, packages=(package,))
        for scheme, extra, package in (
            ("s3", "s3", "s3fs"),
            ("s3a", "s3", "s3fs"),
            ("gs", "gcs", "gcsfs"),
            ("gcs", "gcs", "gcsfs"),
            ("az", "azure", "adlfs"),
            ("abfs", "azure", "adlfs"),
            ("abfss", "azure", "adlfs"),
        )
    },
    hint="use a directory, 'server', or a blob URL whose backend is installed",
)
"""URL scheme → ``factory(url, ctx) -> StoreBackend`` for stores that are not a directory."""


class BundleStore(PushableSource):
    """Archives of code trees, one per version, at ``url`` (a directory, ``server`` or a URL).

    ``version`` is what `resolve` returns (a store has no moving ref).
    """

    kind: ClassVar[str] = "store"

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        *,
        version: str | None = None,
        root: str | os.PathLike[str] | None = None,
    ) -> None:
        if url is not None and root is not None:
            raise ConfigError("pass the store's url or its root, not both")
        location = url if url is not None else root
        self.url = _normalise(location) if location is not None else None
        self.version = version

    # -- where --------------------------------------------------------------------------------

    def backend(self, ctx: FetchContext | None = None) -> StoreBackend:
        """Where this store's archives are, for this process."""
        ctx = context(ctx)
        url = self.url
        if url is None:
            if ctx.settings is None:
                raise ConfigError(
                    "this deployment's code is in the local bundle store of the machine "
                    "that runs it, but no settings say where that is",
                    hint="redeploy; new deployments name their bundle store",
                )
            return LocalDirBackend(ctx.settings.storage_dir)
        if url == SERVER:
            if ctx.bundle_server is None:
                raise ConfigError(
                    "this code is in the Conveyor server's bundle store, and this process "
                    "has no connection to a server",
                    hint="set CONVEYOR_API_URL (and CONVEYOR_API_KEY) to the server",
                )
            return ctx.bundle_server
        if "://" not in url:
            return LocalDirBackend(Path(url))
        scheme = url.split("://", 1)[0].lower()
        if scheme == "file":
            return LocalDirBackend(Path(url.split("://", 1)[1]))
        return STORE_BACKENDS.get(scheme)(url, ctx)

    def describe(self) -> str:
        where = self.url or "the local bundle store"
        return f"bundle store {where}"

    @staticmethod
    def object_name(version: str) -> str:
        """``<version>.tar.zst``; a version that is not a bundle digest is refused."""
        from conveyor.bundles import is_bundle_version

        if not is_bundle_version(version):
            raise VersionNotFound(
                f"{version!r} is not a bundle version",
                hint="a bundle version looks like sha256-<64 hex digits>",
            )
        return f"{version}{SUFFIX}"

    def has(self, version: str, ctx: FetchContext | None = None) -> bool:
        """True when the store holds ``version``."""
        return self.backend(ctx).exists(self.object_name(version))

    # -- the contract ---------------------------------------------------------------------------

    def resolve(self, ctx: FetchContext | None = None) -> str:
        if self.version is None:
            raise ConfigError(
                "a bundle store has no moving ref to resolve",
                hint="pass version='sha256-...' (the version push() returned), "
                "or deploy from the folder itself",
            )
        if not self.has(self.version, ctx):
            raise VersionNotFound(
                f"bundle {self.version[:19]} is not in {self.describe()}",
                source=self.describe(),
                hint="push the tree to the store first",
            )
        return self.version

    def fetch(self, version: str, dest: Path, ctx: FetchContext | None = None) -> None:
        from conveyor.bundles import unpack

        backend = self.backend(ctx)
        name = self.object_name(version)
        try:
            with backend.open(name) as stream:
                unpack(stream, dest, expected_version=version, objects=context(ctx).objects)
        except BundleError as exc:
            # A damaged archive of the bundle's own size is not stored again by a deploy: say
            # which object it is, and that deleting it first makes the deploy store it again.
            where = f"{backend.describe().rstrip('/')}/{name}"
            message = f"{where}: {exc.message}"
            hint = f"delete {where} and deploy again (a deploy stores a bundle that is missing)"
            if isinstance(exc, IntegrityError):
                raise IntegrityError(message, path=exc.path, hint=hint) from None
            raise BundleError(message, hint=hint) from None

    def push(self, tree: Path, ctx: FetchContext | None = None) -> str:
        """Bundle ``tree`` into the store; its version. Uploads nothing if it is already there
        (with settings in ``ctx``, an unchanged tree is not even read: `conveyor._statcache`;
        a pack re-reads every file it writes and checks it against the manifest)."""
        from conveyor.bundles import build_manifest, pack
        from conveyor.sources.local import own_dirs, stat_cache_for

        manifest = build_manifest(
            Path(tree), stat_cache=stat_cache_for(Path(tree), ctx), exclude=own_dirs(ctx)
        )
        version = manifest.version
        backend = self.backend(ctx)
        name = self.object_name(version)
        sizes = _ArchiveSizes.of(ctx)
        if isinstance(backend, RepairableBackend):
            stored = backend.size(name)
            if stored is not None and stored == sizes.get(version):
                logger.debug("bundle already stored version=%s", version)
                return version
        elif backend.exists(name):
            logger.debug("bundle already stored version=%s", version)
            return version
        else:
            stored = None
        with tempfile.TemporaryDirectory(prefix="conveyor-push-") as tmp:
            archive = Path(tmp) / name
            pack(Path(tree), archive, manifest=manifest)
            size = archive.stat().st_size
            sizes.put(version, size)
            if stored == size:
                logger.debug("bundle already stored version=%s", version)
                return version
            if stored is not None and isinstance(backend, RepairableBackend):
                logger.warning(
                    "the stored bundle %s in %s has %d bytes, not %d: storing it again",
                    version[:19],
                    backend.describe(),
                    stored,
                    size,
                )
                backend.replace(name, archive)
                written = True
            else:
                written = backend.put(name, archive)
        logger.info(
            "bundle stored version=%s files=%d bytes=%d store=%s written=%s",
            version,
            manifest.file_count,
            manifest.total_size,
            backend.describe(),
            written,
        )
        return version

    def versions(self, ctx: FetchContext | None = None) -> list[str]:
        """Every version in a directory store, sorted (other backends: not listed)."""
        backend = self.backend(ctx)
        if not isinstance(backend, LocalDirBackend) or not backend.root.is_dir():
            return []
        return sorted(p.name[: -len(SUFFIX)] for p in backend.root.glob(f"sha256-*{SUFFIX}"))

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"kind": self.kind}
        if self.url is not None:
            spec["url"] = self.url
        if self.version is not None:
            spec["version"] = self.version
        return spec

    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_spec().items() if k != "version"}

    @property
    def is_machine_local(self) -> bool:
        """True when the archives are on this machine's disk (other machines cannot read them)."""
        if self.url is None:
            return True
        if self.url == SERVER:
            return False
        return "://" not in self.url or self.url.startswith("file://")


class _ArchiveSizes:
    """The size of each archive this machine packed, ``$CONVEYOR_HOME/bundle-sizes/<version>``
    (archives are deterministic): a redeploy compares it with the stored object's size without
    reading the tree again. Without settings nothing is remembered (the tree is packed)."""

    def __init__(self, root: Path | None) -> None:
        self.root = root

    @classmethod
    def of(cls, ctx: FetchContext | None) -> _ArchiveSizes:
        settings = context(ctx).settings
        return cls(settings.home / "bundle-sizes" if settings is not None else None)

    def get(self, version: str) -> int | None:
        if self.root is None:
            return None
        try:
            return int((self.root / version).read_text().strip())
        except (OSError, ValueError):
            return None

    def put(self, version: str, size: int) -> None:
        if self.root is None or self.get(version) == size:
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with atomic_write(self.root / version) as out:
                out.write(f"{size}\n".encode())
        except OSError as exc:  # a convenience: the next deploy packs again
            logger.debug("archive size not recorded version=%s error=%s", version, exc)


def _normalise(location: str | os.PathLike[str]) -> str:
    text = os.fspath(location)
    if not isinstance(location, os.PathLike):
        from conveyor._urltypo import STORE_HINT, refuse_store_typo, shown

        named = f"bundle store {shown(text)!r}"
        refuse_store_typo(text, named=named, hint=f"{STORE_HINT} (CONVEYOR_BUNDLE_STORE)")
    if text == SERVER or ("://" in text and not text.startswith("file://")):
        return text.rstrip("/")
    if text.startswith("file://"):
        text = text[len("file://") :]
    return os.path.abspath(os.path.expanduser(text))


LocalStoreSource = BundleStore
"""The name the bundle store had when it could only be a local directory."""

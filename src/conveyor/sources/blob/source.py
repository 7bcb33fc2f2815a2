"""`BlobStorage`: code on S3, Google Cloud Storage, Azure Blob or any fsspec URL.

```python
flow.from_source("s3://bucket/flows", "flows.py:main").deploy(name="nightly")
BlobStorage("gs://bucket/flows", credentials="gcp-ci")            # saved GcpCredentials
BlobStorage("az://container/flows", connection_string="${AZ_CONN}")  # a template setting
```

Two modes, one contract (the version says which):

- **bundle** (``sha256-…``): Conveyor's deterministic archives at ``<prefix>/<version>.tar.zst``,
  with ``<prefix>/.conveyor/latest`` naming the last pushed version (the moving ref).
  `push` uploads an archive only when it is absent (a conditional create: racing deploys both
  succeed and leave one object); `fetch` is one GET streamed into the safe unpacker, which
  checks every file against the version.
- **folder** (``pins-…``): plain files under the prefix, as users or CI keep them (Prefect's
  ``push_to_s3`` leaves them so). `resolve` lists the prefix and pins every object (version id or
  ETag, GCS generation); the pins travel in the source spec stored with the deployment, and
  the version is their digest. `fetch` gets exactly those objects (see `conveyor.sources.blob.
  _pins`) and refuses one changed or deleted since deploy, naming its key. A deployment that
  follows its ref re-lists on each run, and that run records the new version.

``mode="auto"`` (the default) picks bundle mode when the prefix holds ``.conveyor/latest``.
``settings`` are fsspec options (``endpoint_url=...``); those holding secrets must be templates
(``key="${MINIO_KEY}"``), resolved on the worker. ``credentials`` is the name of saved
credentials (``AwsCredentials``, ``GcpCredentials``, ``AzureBlobStorageCredentials``), a
template naming them, or an object (usable in this process only: save it to deploy).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from conveyor.errors import ConfigError, SourceNotFound, VersionNotFound
from conveyor.secrets import template_ref
from conveyor.sources.base import FetchContext, PushableSource, context
from conveyor.sources.blob import _objects, _pins
from conveyor.sources.blob._errors import budget_of, call, translate
from conveyor.sources.blob._fs import BlobUrl, check_settings, filesystem

if TYPE_CHECKING:
    from conveyor.sources.blob.credentials import BlobCredentials

__all__ = ["LATEST", "MODES", "BlobStorage"]

logger = logging.getLogger(__name__)

LATEST = ".conveyor/latest"
MODES = ("auto", "bundle", "folder")
_SUFFIX = ".tar.zst"


class BlobStorage(PushableSource):
    """Code under ``url`` (``s3://bucket/prefix``, ``gs://``, ``az://``, ``abfs://``, ...)."""

    kind: ClassVar[str] = "blob"
    supports_versioning: ClassVar[bool] = True

    def __init__(
        self,
        url: str,
        *,
        credentials: str | BlobCredentials | None = None,
        mode: str = "auto",
        version: str | None = None,
        pins: list[Any] | None = None,
        **settings: Any,
    ) -> None:
        from conveyor.sources.blob.credentials import BlobCredentials

        self.location = BlobUrl.parse(url)
        if mode not in MODES:
            raise ConfigError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        if credentials is not None and not isinstance(credentials, str | BlobCredentials):
            raise ConfigError(
                "credentials must name saved credentials or be AwsCredentials, GcpCredentials "
                "or AzureBlobStorageCredentials"
            )
        check_settings(settings)
        self.credentials = credentials
        self.mode = mode
        self.version = version
        self.settings = dict(settings)
        self._pins = _pins.pins_from_spec(pins) if pins is not None else None

    @property
    def url(self) -> str:
        return self.location.url

    # -- the filesystem ---------------------------------------------------------------------------

    def filesystem(self, ctx: FetchContext | None = None) -> Any:
        """A fresh fsspec filesystem for this location, with options built from ``ctx``."""
        return filesystem(self.location, self.settings, self.credentials, context(ctx))

    def _call(self, ctx: FetchContext, fn: Any) -> Any:
        return call(fn, budget=budget_of(ctx))

    # -- resolve ----------------------------------------------------------------------------------

    def resolve(self, ctx: FetchContext | None = None) -> str:
        ctx = context(ctx)
        fs = self.filesystem(ctx)
        if self.version is not None:
            if _pins.is_pins_version(self.version):
                return self.version
            if not self._call(ctx, lambda: _objects.exists(fs, self.location, _name(self.version))):
                raise VersionNotFound(
                    f"bundle {self.version[:19]} is not in {self.url}", source=self.describe()
                )
            return self.version
        if self.mode == "bundle":
            return self._latest(fs, ctx)
        pins = self._call(ctx, lambda: self._list(fs))
        if self.mode == "auto" and pins is None:
            return self._latest(fs, ctx)
        assert pins is not None
        self._pins = pins
        version = _pins.pins_version(pins)
        logger.info("folder pinned url=%s objects=%d version=%s", self.url, len(pins), version)
        return version

    def _list(self, fs: Any) -> list[_pins.Pin] | None:
        """The folder's pins (None: the prefix is a bundle store, in auto mode)."""
        try:
            if self.mode == "auto" and _objects.exists(fs, self.location, LATEST):
                return None
            pins = _pins.list_pins(fs, self.location)
        except Exception as exc:
            raise translate(exc, where=self.url, source=self.describe()) from None
        if not pins:
            raise SourceNotFound(
                f"{self.url} holds no objects", source=self.describe(), hint=_WHERE_HINT
            )
        return pins

    def _latest(self, fs: Any, ctx: FetchContext) -> str:
        from conveyor.bundles import is_bundle_version

        text: str | None = self._call(ctx, lambda: _objects.read_small(fs, self.location, LATEST))
        if text is None:
            raise SourceNotFound(
                f"{self.url} holds no pushed bundle ({LATEST} is missing)",
                source=self.describe(),
                hint="push code with BlobStorage(url).push(folder), or use mode='folder'",
            )
        if not is_bundle_version(text):
            raise VersionNotFound(f"{self.url}/{LATEST} does not name a bundle version")
        return text

    # -- fetch and verify -------------------------------------------------------------------------

    def fetch(self, version: str, dest: Path, ctx: FetchContext | None = None) -> None:
        ctx = context(ctx)
        if _pins.is_pins_version(version):
            self._fetch_folder(version, dest, ctx)
            return
        self._fetch_bundle(version, dest, ctx)

    def _fetch_bundle(self, version: str, dest: Path, ctx: FetchContext) -> None:
        from conveyor.bundles import is_bundle_version, unpack

        if not is_bundle_version(version):
            raise VersionNotFound(
                f"{version!r} is not a version of a blob store",
                source=self.describe(),
                hint="a version looks like sha256-<64 hex> (bundle) or pins-<64 hex> (folder)",
            )
        fs = self.filesystem(ctx)

        def once() -> None:
            try:
                with _objects.open_object(fs, self.location, _name(version)) as stream:
                    unpack(stream, dest, expected_version=version, objects=ctx.objects)
            except SourceNotFound:
                raise VersionNotFound(
                    f"bundle {version[:19]} is not in {self.url}",
                    source=self.describe(),
                    hint="redeploy to push the code again",
                ) from None

        self._call(ctx, once)

    def _fetch_folder(self, version: str, dest: Path, ctx: FetchContext) -> None:
        from conveyor._transfers import start

        fs = self.filesystem(ctx)
        pins = self._pins
        if pins is None or _pins.pins_version(pins) != version:
            # Following the ref (or a spec without pins): list again and take the objects
            # only if they are exactly the requested version.
            current = self._call(ctx, lambda: self._list(fs)) or []
            if _pins.pins_version(current) != version:
                raise VersionNotFound(
                    f"the objects under {self.url} are no longer version {version[:21]}"
                    + _first_difference(pins, current),
                    source=self.describe(),
                    hint="redeploy to pin the folder's current objects",
                )
            pins = current
        progress = start(f"pulling {self.url}", len(pins), sum(p.size for p in pins))
        self._call(
            ctx,
            lambda: _pins.fetch_pins(
                fs, self.location, pins, _emptied(dest), version=version, progress=progress
            ),
        )

    def verify(self, version: str, path: Path, ctx: FetchContext | None = None) -> None:
        if _pins.is_pins_version(version):
            pins = self._pins if self._pins and _pins.pins_version(self._pins) == version else None
            _pins.verify_pins(path, version, pins)
            return
        super().verify(version, path, ctx)

    # -- push -------------------------------------------------------------------------------------

    def push(self, tree: Path, ctx: FetchContext | None = None) -> str:
        """Bundle ``tree`` to ``<prefix>/<version>.tar.zst`` (uploaded only when absent) and point
        ``.conveyor/latest`` at it; returns the version."""
        from conveyor.sources.blob.store import push_bundle

        ctx = context(ctx)
        fs = self.filesystem(ctx)
        version = push_bundle(fs, self.location, Path(tree), budget=budget_of(ctx))
        if self._call(ctx, lambda: _objects.read_small(fs, self.location, LATEST)) != version:
            self._call(ctx, lambda: _objects.write_small(fs, self.location, LATEST, version))
        return version

    # -- spec -------------------------------------------------------------------------------------

    def credentials_name(self) -> str | None:
        """The name the spec stores for the credentials (an unsaved object is refused)."""
        creds = self.credentials
        if creds is None or isinstance(creds, str):
            return creds
        if creds.name is None:
            raise ConfigError(
                f"{type(creds).__name__} must be saved before a deployment can use them "
                "(the deployment stores only their name)",
                hint=f"call creds.save('name') first, or `conveyor credentials create "
                f"{creds.type} NAME`",
            )
        return creds.name

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"kind": self.kind, "url": self.url}
        name = self.credentials_name()
        if name is not None:
            spec["credentials"] = name
        if self.mode != "auto":
            spec["mode"] = self.mode
        if self.version is not None:
            spec["version"] = self.version
        spec.update(self.settings)
        if self._pins is not None:
            spec["pins"] = [p.to_list() for p in self._pins]
        return spec

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> BlobStorage:
        args = {k: v for k, v in spec.items() if k != "kind"}
        return cls(**args)

    def identity(self) -> dict[str, Any]:
        """The location and the options that change which store it is (no credentials, no
        secrets, no pins)."""
        from conveyor.sources.blob._fs import SECRET_SETTINGS

        public = {k: v for k, v in self.settings.items() if k not in SECRET_SETTINGS}
        return {"kind": self.kind, "url": self.url, **public}

    def describe(self) -> str:
        return f"blob:{self.url}"


_WHERE_HINT = "check the URL, and that the credentials can list it"


def _name(version: str) -> str:
    return f"{version}{_SUFFIX}"


def _emptied(dest: Path) -> Path:
    """``dest`` with whatever an interrupted attempt left in it removed."""
    import shutil

    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    return dest


def _first_difference(old: list[_pins.Pin] | None, new: list[_pins.Pin]) -> str:
    if old is None:
        return ""
    before = {p.path: p for p in old}
    after = {p.path: p for p in new}
    for path in sorted(set(before) | set(after)):
        if path not in after:
            return f" ({path} was deleted)"
        if path not in before:
            return f" ({path} was added)"
        if before[path] != after[path]:
            return f" ({path} changed)"
    return ""


def template_credentials(value: str) -> str:
    """``{{ prefect.blocks.aws-credentials.NAME }}`` → ``NAME``; other text unchanged."""
    ref = template_ref(value)
    return ref.name if ref is not None and ref.kind == "block" else value

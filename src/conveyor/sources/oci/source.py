"""`ImageSource`: code stored in an OCI / Docker image, versioned by the image's digest.

```python
ImageSource("ghcr.io/org/flows:v3", credentials="ghcr")     # a registry (tag or @digest)
ImageSource("ghcr.io/org/flows:v3", layout="~/.conveyor/images")  # built here, not pushed
source_from_url("oci://127.0.0.1:5000/flows/etl:v1")        # also docker://
```

- `resolve`: the digest (``sha256:…``) of the manifest the tag names now (or the pinned digest,
  checked to exist). Deploy records it; every run uses it unless the deployment follows its
  ref, and then the runner resolves again and records the digest it got.
- `fetch`: pull **only the code layer**: the manifest by digest (verified; an index is followed
  to the manifest of ``platform``), then the one layer that holds the code (`_image`), streamed,
  verified against its digest and unpacked safely (`_layer`). The manifests read on the way are
  kept in ``.conveyor/image/`` beside the bundle manifest.
- `verify`: stateless and offline: the kept manifests must hash to the digests that chain from
  the version to the code layer, and the tree must be the bundle version recorded there.

Credentials are a *name* (``credentials=``): saved `DockerRegistryCredentials`, else Docker's
config file (see `conveyor.sources.oci.credentials`); nothing secret is in the spec.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, ClassVar

from conveyor.errors import ConfigError, IntegrityError, VersionNotFound
from conveyor.sources.base import FetchContext, Source, context
from conveyor.sources.oci._client import Fetched, RegistryClient
from conveyor.sources.oci._image import Reader, find_code_layer
from conveyor.sources.oci._layer import unpack_code_layer
from conveyor.sources.oci._layout import ImageLayout
from conveyor.sources.oci._reference import ImageRef, digest_of, is_digest, parse_reference
from conveyor.sources.oci.credentials import registry_login

__all__ = ["IMAGE_RECORD_DIR", "ImageSource", "LayoutReader", "RegistryReader"]

IMAGE_RECORD_DIR = ".conveyor/image"


class RegistryReader:
    """`Reader` over one repository of a registry."""

    def __init__(self, client: RegistryClient, repository: str) -> None:
        self.client = client
        self.repository = repository

    def manifest(self, digest: str) -> Fetched:
        return self.client.get_manifest(self.repository, digest)

    def blob(self, digest: str) -> bytes:
        with self.client.open_blob(self.repository, digest) as stream:
            return stream.read()

    def open_blob(self, digest: str, size: int | None) -> Any:
        return self.client.open_blob(self.repository, digest, size)


class LayoutReader:
    """`Reader` over an `ImageLayout`."""

    def __init__(self, layout: ImageLayout) -> None:
        self.layout = layout

    def manifest(self, digest: str) -> Fetched:
        data = self.layout.read_blob(digest)
        media = json.loads(data).get("mediaType", "") if data.startswith(b"{") else ""
        return Fetched(data, str(media), digest)

    def blob(self, digest: str) -> bytes:
        return self.layout.read_blob(digest)

    def open_blob(self, digest: str, size: int | None) -> Any:
        return self.layout.open_blob(digest)


class _Recorded:
    """`Reader` over the documents a fetch kept (verify works offline)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _read(self, digest: str) -> bytes:
        if not is_digest(digest):
            raise IntegrityError(f"invalid digest {digest[:80]!r} in the image record")
        try:
            data = (self.root / (digest.split(":", 1)[1] + ".json")).read_bytes()
        except OSError:
            raise IntegrityError(
                f"the checkout has no record of image document {digest[:19]}…",
                hint="fetch the version again",
            ) from None
        if digest_of(data) != digest:
            raise IntegrityError(
                f"the checkout's record of {digest[:19]}… was modified",
                hint="fetch the version again",
            )
        return data

    def manifest(self, digest: str) -> Fetched:
        return Fetched(self._read(digest), "", digest)

    def blob(self, digest: str) -> bytes:
        return self._read(digest)

    def open_blob(self, digest: str, size: int | None) -> Any:
        raise AssertionError("verification reads no layer")


class ImageSource(Source):
    """The code layer of image ``image`` (in a registry, or in an image layout directory)."""

    kind: ClassVar[str] = "oci"

    def __init__(
        self,
        image: str,
        *,
        credentials: str | None = None,
        layout: str | os.PathLike[str] | None = None,
        platform: str | None = None,
        insecure: bool | None = None,
    ) -> None:
        self.ref: ImageRef = parse_reference(image)
        if credentials is not None and (not isinstance(credentials, str) or not credentials):
            raise ConfigError("credentials must be the name of saved credentials")
        self.credentials = credentials
        self.layout = (
            os.path.abspath(os.path.expanduser(os.fspath(layout))) if layout is not None else None
        )
        self.platform = platform
        self.insecure = insecure

    @property
    def image(self) -> str:
        return str(self.ref)

    @property
    def is_machine_local(self) -> bool:
        """True when the image is in a layout directory on this machine."""
        return self.layout is not None

    # -- where the image is ----------------------------------------------------------------

    @contextmanager
    def reader(self, ctx: FetchContext | None = None) -> Iterator[Reader]:
        """A `Reader` for this image (a registry client is opened and closed around it)."""
        ctx = context(ctx)
        if self.layout is not None:
            yield LayoutReader(ImageLayout(Path(self.layout)))
            return
        login = registry_login(
            self.ref.registry,
            credentials=self.credentials,
            store=ctx.secrets,
            environ=ctx.environ,
        )
        with RegistryClient(self.ref.base_url(insecure=self.insecure), login=login) as client:
            yield RegistryReader(client, self.ref.repository)

    # -- the contract ----------------------------------------------------------------------

    def resolve(self, ctx: FetchContext | None = None) -> str:
        if self.layout is not None:
            layout = ImageLayout(Path(self.layout))
            if self.ref.digest is not None:
                layout.read_blob(self.ref.digest)
                return self.ref.digest
            return layout.resolve(str(self.ref.with_tag(self.ref.tag or "latest")))
        with self.reader(ctx) as reader:
            assert isinstance(reader, RegistryReader)
            fetched = reader.client.get_manifest(self.ref.repository, self.ref.reference)
        return fetched.digest

    def fetch(self, version: str, dest: Path, ctx: FetchContext | None = None) -> None:
        if not is_digest(version):
            raise VersionNotFound(
                f"{version[:80]!r} is not an image digest",
                source=self.describe(),
                hint="an image version looks like sha256:<64 hex digits>",
            )
        try:
            with self.reader(ctx) as reader:
                layer = find_code_layer(reader, version, platform=self.platform, image=self.image)
                with reader.open_blob(layer.digest, layer.size) as stream:
                    _unpack(stream, dest, layer.code_dir)
        except BaseException:
            _empty(dest)  # a layer that failed its digest at the end leaves nothing behind
            raise
        record = dest / IMAGE_RECORD_DIR
        record.mkdir(parents=True, exist_ok=True)
        for digest, data in layer.documents.items():
            (record / (digest.split(":", 1)[1] + ".json")).write_bytes(data)

    def verify(self, version: str, path: Path, ctx: FetchContext | None = None) -> None:
        from conveyor.bundles import verify_tree

        if not is_digest(version):
            raise IntegrityError(f"{version[:80]!r} is not an image digest")
        layer = find_code_layer(
            _Recorded(Path(path) / IMAGE_RECORD_DIR),
            version,
            platform=self.platform,
            image=self.image,
        )
        verify_tree(Path(path), layer.bundle_version)

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"kind": self.kind, "image": self.image}
        optional = {
            "credentials": self.credentials,
            "layout": self.layout,
            "platform": self.platform,
            "insecure": self.insecure,
        }
        spec.update({k: v for k, v in optional.items() if v is not None})
        return spec

    def identity(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"kind": self.kind, "image": self.ref.name}
        if self.layout is not None:
            spec["layout"] = self.layout
        return spec

    def describe(self) -> str:
        where = f" in {self.layout}" if self.layout else ""
        return f"image {self.image}{where}"


def _empty(dest: Path) -> None:
    import shutil

    for child in Path(dest).iterdir() if Path(dest).is_dir() else ():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _unpack(stream: IO[bytes], dest: Path, code_dir: str) -> None:
    unpack_code_layer(stream, dest, code_dir=code_dir)
    # Read what the gzip stream left (its trailer) so the digest check runs to the end.
    while stream.read(1 << 20):
        pass

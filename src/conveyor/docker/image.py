"""`DockerImage`: a flow's code baked into an image, built with or without a Docker engine.

```python
from conveyor.docker import DockerImage

image = DockerImage("ghcr.io/org/flows", tag="v3", credentials="ghcr")
my_flow.deploy("nightly", work_pool="k8s", image=image)             # build + push, pinned
my_flow.deploy("local", work_pool="default", image="flows/etl:dev", push=False)
```

Prefect's constructor: ``DockerImage(name, tag=None, dockerfile="auto", base_image=None,
platform=None, **build_kwargs)``. ``name`` may carry the tag (``repo:tag``); without one the tag
is ``code-`` and the first 12 hex digits of the code's bundle version, so unchanged code keeps
its tag. ``base_image`` defaults to the official Python image of this interpreter's minor
version (``python:3.11-slim``). ``credentials`` names saved `DockerRegistryCredentials` for the
push (Docker's config file is the fallback).

`DockerImage.build` uses the engine when one is reachable (`_engine`), else builds daemonless
(`_daemonless`) into the image layout ``$CONVEYOR_HOME/images``; `DockerImage.push` sends it to
its registry. `BuiltImage.source` is the `ImageSource` a deployment stores: the registry image
pinned by digest once pushed, else the layout (this machine only).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from conveyor.docker import _daemonless, _engine
from conveyor.docker._dockerfile import BuildPlan, auto_dockerfile, parse_plan
from conveyor.errors import ConfigError
from conveyor.secrets import SecretStore, reveal
from conveyor.sources.oci._client import RegistryClient
from conveyor.sources.oci._image import CODE_DIR_KEY, CODE_VERSION_KEY
from conveyor.sources.oci._layer import CODE_DIR
from conveyor.sources.oci._layout import ImageLayout
from conveyor.sources.oci._reference import ImageRef, parse_reference
from conveyor.sources.oci.credentials import DockerRegistryCredentials, registry_login
from conveyor.sources.oci.source import ImageSource, RegistryReader

__all__ = ["BuiltImage", "DockerImage", "ImageContext", "default_base_image", "images_dir"]

logger = logging.getLogger(__name__)


def default_base_image() -> str:
    """The official Python image of this interpreter's minor version."""
    return f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"


def images_dir(environ: Mapping[str, str]) -> Path:
    """``$CONVEYOR_HOME/images`` (``~/.conveyor/images``) for an environment."""
    home = environ.get("CONVEYOR_HOME") or str(
        Path(environ.get("HOME") or Path.home()) / ".conveyor"
    )
    return Path(home).expanduser().absolute() / "images"


@dataclass(frozen=True)
class ImageContext:
    """What building and pushing may use: where images are kept, secrets, the environment."""

    layout_dir: Path
    secrets: SecretStore | None = None
    environ: Mapping[str, str] = field(default_factory=dict)
    log: Callable[[str], None] = lambda line: logger.info("%s", line)
    backend: str | None = None
    """``"engine"``, ``"daemonless"``, or None: the engine when one is reachable."""
    chunk_size: int | None = None


@dataclass(frozen=True)
class BuiltImage:
    """An image built (and maybe pushed): what a deployment and the steps' outputs say."""

    ref: ImageRef
    digest: str | None
    bundle_version: str
    backend: str
    layout: Path | None
    dockerfile: str
    pushed: bool = False
    image_id: str | None = None
    credentials: str | None = None
    bytes_uploaded: int = 0
    blobs_uploaded: int = 0

    @property
    def image(self) -> str:
        """``registry/repo:tag@sha256:…`` (pinned) when the digest is known, else ``repo:tag``."""
        return str(self.ref.with_digest(self.digest)) if self.digest else str(self.ref)

    def source(self) -> ImageSource:
        """The source a deployment stores for this image's code."""
        if self.digest is None:
            raise ConfigError(
                f"image {self.ref} is only in the local Docker engine; its code cannot be fetched",
                hint="push it (push=True) so workers can pull it",
            )
        layout = None if self.pushed else self.layout
        return ImageSource(self.image, credentials=self.credentials, layout=layout)

    def outputs(self) -> dict[str, Any]:
        """Prefect's step outputs (``image_name``, ``tag``, ``image``) plus ``digest``."""
        return {
            "image_name": self.ref.name
            if self.ref.registry != "docker.io"
            else self.ref.repository,
            "tag": self.ref.tag,
            "image": self.image,
            "image_id": self.image_id or self.digest,
            "digest": self.digest,
            "additional_tags": [],
        }


class DockerImage:
    """An image to bake a code tree into (see the module docstring)."""

    def __init__(
        self,
        name: str,
        tag: str | None = None,
        dockerfile: str = "auto",
        base_image: str | None = None,
        platform: str | None = None,
        *,
        credentials: str | DockerRegistryCredentials | None = None,
        **build_kwargs: Any,
    ) -> None:
        ref = parse_reference(name)
        if ref.digest is not None:
            raise ConfigError(f"image name {name!r} is pinned; give a name and a tag to build")
        if tag is not None and ref.tag is not None and tag != ref.tag:
            raise ConfigError(f"image {name!r} has tag {ref.tag!r} and tag={tag!r}: give one")
        self.ref = ref.with_tag(tag or ref.tag)
        self.name = name
        self.dockerfile = dockerfile
        if base_image is not None and dockerfile != "auto":
            raise ConfigError("pass base_image or a Dockerfile, not both")
        self.base_image = base_image or default_base_image()
        parse_reference(self.base_image)
        self.platform = platform
        self.credentials = credentials
        self.build_kwargs = dict(build_kwargs)

    def __repr__(self) -> str:
        return f"DockerImage({str(self.ref)!r}, dockerfile={self.dockerfile!r})"

    @property
    def credentials_name(self) -> str | None:
        creds = self.credentials
        return creds.name if isinstance(creds, DockerRegistryCredentials) else creds

    # -- the Dockerfile --------------------------------------------------------------------

    def dockerfile_text(self, tree: Path, *, bundle_version: str | None = None) -> str:
        """The Dockerfile this build uses (generated for ``"auto"``)."""
        if self.dockerfile == "auto":
            if bundle_version is None:
                from conveyor.bundles import compute_version

                bundle_version = compute_version(tree)
            return auto_dockerfile(
                base_image=self.base_image,
                bundle_version=bundle_version,
                has_requirements=(tree / "requirements.txt").is_file(),
            )
        path = Path(self.dockerfile)
        if not path.is_absolute():
            path = tree / path
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read Dockerfile {path}: {exc.strerror}") from None

    # -- building and pushing --------------------------------------------------------------

    def build(self, tree: Path, ctx: ImageContext) -> BuiltImage:
        """Build ``tree`` into this image (engine when reachable, else daemonless)."""
        from conveyor.bundles import build_manifest

        manifest = build_manifest(Path(tree))
        ref = self.ref if self.ref.tag else self.ref.with_tag(f"code-{manifest.version[7:19]}")
        text = self.dockerfile_text(Path(tree), bundle_version=manifest.version)
        backend = ctx.backend or (
            "engine" if _engine.engine_reachable(ctx.environ) else "daemonless"
        )
        if backend == "engine":
            image_id = _engine.build(
                tree=Path(tree),
                dockerfile=text,
                tag=str(ref),
                labels={CODE_VERSION_KEY: manifest.version, CODE_DIR_KEY: CODE_DIR},
                platform=self.platform,
                build_kwargs=self.build_kwargs,
                environ=ctx.environ,
                log=ctx.log,
            )
            return BuiltImage(
                ref,
                None,
                manifest.version,
                "engine",
                None,
                text,
                image_id=image_id,
                credentials=self.credentials_name,
            )
        if self.build_kwargs:
            ctx.log(f"note: daemonless build ignores {', '.join(sorted(self.build_kwargs))}")
        plan: BuildPlan = parse_plan(
            text, name="Dockerfile" if self.dockerfile == "auto" else self.dockerfile
        )
        layout = ImageLayout(ctx.layout_dir)
        built = _daemonless.build(
            plan,
            Path(tree),
            target=ref,
            layout=layout,
            base_reader=lambda base: self._reader(base, ctx),
            platform=self.platform,
        )
        return BuiltImage(
            ref,
            built.digest,
            built.bundle_version,
            "daemonless",
            layout.root,
            text,
            image_id=built.digest,
            credentials=self.credentials_name,
        )

    def push(self, built: BuiltImage, ctx: ImageContext) -> BuiltImage:
        """Push a built image to its registry; the pushed image (pinned by digest)."""
        login = registry_login(
            built.ref.registry, credentials=self.credentials, store=ctx.secrets, environ=ctx.environ
        )
        if built.backend == "engine":
            auth = (
                {"username": login.username, "password": reveal(login.password)} if login else None
            )
            digest = _engine.push(
                repository=built.ref.name
                if built.ref.registry != "docker.io"
                else built.ref.repository,
                tag=built.ref.tag or "latest",
                auth=auth,
                environ=ctx.environ,
                log=ctx.log,
            )
            return replace(built, digest=digest, pushed=True)
        assert built.digest is not None
        assert built.layout is not None
        with RegistryClient(built.ref.base_url(), login=login, chunk_size=ctx.chunk_size) as client:
            stats = _daemonless.push(
                ImageLayout(built.layout),
                built.digest,
                built.ref,
                client,
                base_reader=lambda base: self._reader(base, ctx),
            )
        return replace(
            built,
            pushed=True,
            bytes_uploaded=stats.bytes_uploaded,
            blobs_uploaded=stats.blobs_uploaded,
        )

    @contextmanager
    def _reader(self, base: ImageRef, ctx: ImageContext) -> Iterator[RegistryReader]:
        """A reader for the base image's registry (our credentials when it is the same one)."""
        same = base.registry == self.ref.registry
        login = registry_login(
            base.registry,
            credentials=self.credentials if same else None,
            store=ctx.secrets,
            environ=ctx.environ,
        )
        with RegistryClient(base.base_url(), login=login) as client:
            yield RegistryReader(client, base.repository)

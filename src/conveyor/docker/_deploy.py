"""What ``deploy(image=..., build=..., push=...)`` does with the deployed tree.

- ``build=True``: the tree (the version deploy resolved and preflighted) is baked into the image
  (`DockerImage.build`); with ``push=True`` it is pushed and the deployment's source is the
  registry image **pinned by digest**; with ``push=False`` the image stays in the image layout
  of this machine (``$CONVEYOR_HOME/images``), the source points there, and with a remote server
  the deployment is labelled with this host (only workers here can read it). The ``image`` job
  variable (what container pools run) is the pinned reference unless one was given.
- ``build=False``: the image is only the runtime of container pools (the ``image`` job variable);
  the code comes from the source as usual (the first generation's "non-Docker storage for
  containerized environments").
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.docker.image import DockerImage, ImageContext, images_dir
from conveyor.errors import ConfigError

if TYPE_CHECKING:
    from conveyor.settings import Settings
    from conveyor.sources.base import FetchContext

__all__ = ["Baked", "as_image", "bake"]


@dataclass(frozen=True)
class Baked:
    """The deployment's source spec, version and labels once the code is in the image."""

    spec: dict[str, Any]
    version: str
    labels: list[str]
    image: str
    dockerfile: str


def as_image(image: str | DockerImage) -> DockerImage:
    """A `DockerImage` from a name or an instance."""
    if isinstance(image, DockerImage):
        return image
    if not isinstance(image, str):
        raise ConfigError("image must be an image name or a DockerImage")
    return DockerImage(image)


def bake(
    image: str | DockerImage,
    tree: Path,
    *,
    push: bool,
    settings: Settings,
    ctx: FetchContext,
    notify: Callable[[str], None],
) -> Baked:
    """Build ``tree`` into ``image`` (and push it); see the module docstring."""
    docker_image = as_image(image)
    environ = dict(ctx.environ)
    environ.setdefault("CONVEYOR_HOME", str(settings.home))
    context = ImageContext(
        layout_dir=images_dir({"CONVEYOR_HOME": str(settings.home)}),
        secrets=ctx.secrets,
        environ=environ,
    )
    built = docker_image.build(tree, context)
    if push:
        built = docker_image.push(built, context)
    labels: list[str] = []
    if not built.pushed and settings.api_url:
        host = socket.gethostname()
        labels.append(host)
        notify(
            f"image {built.ref} was not pushed: it is in {built.layout} on this machine only, "
            f"so the deployment is labelled {host!r} and only workers on this host will run it. "
            "Push it (push=True) to run it anywhere."
        )
    source = built.source()
    assert built.digest is not None
    return Baked(source.to_spec(), built.digest, labels, built.image, built.dockerfile)

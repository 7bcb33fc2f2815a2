"""Fixtures for the image tests: the real registries (see `fixtures.registry`) and a helper that
builds a tree into an image daemonlessly, on the seeded base image."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from conveyor.docker import BuiltImage, DockerImage, ImageContext
from fixtures.registry import (  # noqa: F401 - session fixtures used by the tests here
    BASE_REPOSITORY,
    BASE_TAG,
    Registry,
    basic_registry,
    registry,
    token_registry,
)

Builder = Callable[..., BuiltImage]


def base_of(server: Registry) -> str:
    return f"{server.host}/{BASE_REPOSITORY}:{BASE_TAG}"


@pytest.fixture
def image_ctx(tmp_path: Path, isolate: Path) -> ImageContext:
    return ImageContext(
        layout_dir=tmp_path / "images", environ={"HOME": str(isolate)}, backend="daemonless"
    )


@pytest.fixture
def build_image(registry: Registry, image_ctx: ImageContext) -> Builder:  # noqa: F811
    """``build_image(tree, push=True, name=None, **kw)``: build (and push) on the seeded base."""

    def build(
        tree: Path, *, push: bool = True, name: str | None = None, **kw: object
    ) -> BuiltImage:
        repo = name or f"flows/t{uuid.uuid4().hex[:10]}"
        image = DockerImage(f"{registry.host}/{repo}", base_image=base_of(registry), **kw)  # type: ignore[arg-type]
        built = image.build(tree, image_ctx)
        return image.push(built, image_ctx) if push else built

    return build

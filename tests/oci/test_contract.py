"""`ImageSource` passes the source contract: an image in a real registry, and one kept in a
local image layout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conveyor.sources import Source
from conveyor.sources.oci import ImageSource
from fixtures.ports import free_port
from fixtures.registry import Registry
from oci.conftest import Builder
from sources.contract import SourceContract, write_known_tree


@pytest.fixture
def known(tmp_path: Path) -> Path:
    return write_known_tree(tmp_path / "known")


class TestImageSourceRegistry(SourceContract):
    unknown_version = "sha256:" + "0" * 64

    @pytest.fixture
    def tree(self, known: Path) -> Path:
        return known

    @pytest.fixture
    def source(self, known: Path, build_image: Builder) -> ImageSource:
        built = build_image(known)
        return ImageSource(str(built.ref))  # by tag: resolve goes to the registry

    @pytest.fixture
    def missing_source_factory(self, registry: Registry) -> Callable[[], Source]:
        return lambda: ImageSource(f"{registry.host}/no/such-repo:v1")


class TestImageSourceLayout(SourceContract):
    unknown_version = "sha256:" + "0" * 64

    @pytest.fixture
    def tree(self, known: Path) -> Path:
        return known

    @pytest.fixture
    def source(self, known: Path, build_image: Builder) -> ImageSource:
        built = build_image(known, push=False)
        return ImageSource(str(built.ref), layout=built.layout)

    @pytest.fixture
    def missing_source_factory(self, tmp_path: Path) -> Callable[[], Source]:
        return lambda: ImageSource("127.0.0.1:5999/a/b:v1", layout=tmp_path / "no-layout")


def test_an_unreachable_registry_is_source_unavailable() -> None:
    from conveyor.errors import SourceUnavailable

    source = ImageSource(f"127.0.0.1:{free_port()}/flows/x:v1")
    with pytest.raises(SourceUnavailable, match="cannot be reached"):
        source.resolve()

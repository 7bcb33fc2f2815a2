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


def test_a_pinned_image_deleted_from_the_registry_says_to_deploy_again(
    known: Path, build_image: Builder, registry: Registry, tmp_path: Path
) -> None:
    import httpx

    from conveyor.errors import VersionNotFound

    # Given an image pushed and pinned by digest, then deleted from the registry
    built = build_image(known)
    source = ImageSource(str(built.ref))
    version = source.resolve()
    repository = built.ref.repository
    deleted = httpx.delete(f"{registry.url}/v2/{repository}/manifests/{version}")
    assert deleted.status_code == 202, deleted.text

    # When a cold worker fetches the pinned version, Then the error says what happened and
    # what to do
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(VersionNotFound, match="is not on registry") as caught:
        source.fetch(version, dest)
    assert (caught.value.hint or "").startswith("the image a deployment pinned was deleted")
    assert "deploy again" in (caught.value.hint or "")

    # ...while a tag that is not there says to check the repository and tag
    with pytest.raises(VersionNotFound) as missing:
        ImageSource(f"{registry.host}/{repository}:no-such-tag").resolve()
    assert (missing.value.hint or "").startswith("check the repository and tag")

"""Images as they come from elsewhere: a multi-platform base (an index, as Docker Hub serves
``python:3.11-slim``), and an image whose code layer is named only by config labels and
history (what an engine build gives: ``docker build`` cannot annotate layers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conveyor.docker import DockerImage, ImageContext
from conveyor.errors import VersionNotFound
from conveyor.sources.oci import ImageSource, RegistryClient
from conveyor.sources.oci._client import OCI_INDEX, OCI_MANIFEST
from fixtures.registry import BASE_REPOSITORY, BASE_TAG, Registry, seed_base_image
from sources.contract import snapshot, write_known_tree


def _index_base(registry: Registry) -> tuple[str, str, str]:
    """Tag ``base/python:multi``: an index with a linux/amd64 entry (the seeded base) and a
    linux/arm64 entry (another small image); the reference and both manifest digests."""
    arm64 = seed_base_image(registry, tag="arm64-only", note=b"arm64")
    with RegistryClient(registry.url) as api:
        amd64 = api.get_manifest(BASE_REPOSITORY, BASE_TAG)
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "digest": arm64,
                    "size": len(api.get_manifest(BASE_REPOSITORY, arm64).data),
                    "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
                },
                {
                    "mediaType": amd64.media_type,
                    "digest": amd64.digest,
                    "size": len(amd64.data),
                    "platform": {"os": "linux", "architecture": "amd64"},
                },
            ],
        }
        api.put_manifest(BASE_REPOSITORY, "multi", json.dumps(index).encode(), OCI_INDEX)
    return f"{registry.host}/{BASE_REPOSITORY}:multi", amd64.digest, arm64


def _base_digest(registry: Registry, repository: str, digest: str) -> str:
    """The digest of the base manifest whose layer the image starts with."""
    with RegistryClient(registry.url) as api:
        first = json.loads(api.get_manifest(repository, digest).data)["layers"][0]["digest"]
        for tag in (BASE_TAG, "arm64-only"):
            base = api.get_manifest(BASE_REPOSITORY, tag)
            if json.loads(base.data)["layers"][0]["digest"] == first:
                return base.digest
    raise AssertionError("the image starts with no known base layer")


def test_a_multi_platform_base_is_resolved_to_the_platform_asked_for(
    tmp_path: Path, registry: Registry, image_ctx: ImageContext
) -> None:
    base, amd64, arm64 = _index_base(registry)
    tree = write_known_tree(tmp_path / "tree")
    image = DockerImage(
        f"{registry.host}/flows/on-index:v1", base_image=base, platform="linux/amd64"
    )
    pushed = image.push(image.build(tree, image_ctx), image_ctx)
    dest = tmp_path / "dest"
    dest.mkdir()
    ImageSource(pushed.image).fetch(pushed.digest or "", dest)
    assert snapshot(dest, skip=(".conveyor",)) == snapshot(tree)
    assert _base_digest(registry, "flows/on-index", pushed.digest or "") == amd64
    arm = DockerImage(
        f"{registry.host}/flows/on-index:arm", base_image=base, platform="linux/arm64/v8"
    )
    on_arm = arm.push(arm.build(tree, image_ctx), image_ctx)
    assert _base_digest(registry, "flows/on-index", on_arm.digest or "") == arm64
    s390 = DockerImage(
        f"{registry.host}/flows/on-index:v2", base_image=base, platform="linux/s390x"
    )
    with pytest.raises(VersionNotFound, match="no manifest for linux/s390x") as caught:
        s390.build(tree, image_ctx)
    assert "linux/amd64" in (caught.value.hint or "")


def test_a_code_layer_named_only_by_labels_and_history_is_found(
    tmp_path: Path, registry: Registry, image_ctx: ImageContext
) -> None:
    # Given an image whose manifest carries no annotations (as an engine build pushes it)
    tree = write_known_tree(tmp_path / "tree")
    (tree / "engine.txt").write_text("engine-shaped")
    image = DockerImage(
        f"{registry.host}/flows/engine-shaped:v1",
        base_image=f"{registry.host}/{BASE_REPOSITORY}:{BASE_TAG}",
    )
    pushed = image.push(image.build(tree, image_ctx), image_ctx)
    with RegistryClient(registry.url) as api:
        manifest = json.loads(api.get_manifest("flows/engine-shaped", pushed.digest or "").data)
        manifest.pop("annotations")
        for layer in manifest["layers"]:
            layer.pop("annotations", None)
        plain = json.dumps(manifest).encode()
        digest = api.put_manifest("flows/engine-shaped", "plain", plain, OCI_MANIFEST)
    # When it is fetched and verified
    source = ImageSource(f"{registry.host}/flows/engine-shaped:plain")
    assert source.resolve() == digest
    dest = tmp_path / "dest"
    dest.mkdir()
    source.fetch(digest, dest)
    source.verify(digest, dest)
    # Then the code came from the layer the config's history names
    assert snapshot(dest, skip=(".conveyor",)) == snapshot(tree)

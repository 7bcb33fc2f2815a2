"""Daemonless builds against a real registry: deterministic layers, pushes that send only what is
missing, what needs an engine, and refusing tampered images."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import pytest

from conveyor.docker import DockerImage, ImageContext
from conveyor.docker._dockerfile import EngineRequired, auto_dockerfile, parse_plan
from conveyor.errors import IntegrityError, VersionNotFound
from conveyor.sources.oci import ImageSource, RegistryClient
from conveyor.sources.oci._layer import write_code_layer
from fixtures.registry import Registry
from oci.conftest import Builder, base_of
from sources.contract import snapshot, write_known_tree


def _blobs(server: Registry) -> set[str]:
    root = server.root / "data/docker/registry/v2/blobs/sha256"
    return {p.name for p in root.glob("*/*") if p.is_dir()}


def test_the_same_tree_gives_the_same_layer_digest_anywhere(tmp_path: Path) -> None:
    # Given the same tree in two places, written at different times
    first = write_known_tree(tmp_path / "a")
    second = tmp_path / "b"
    shutil.copytree(first, second, symlinks=True)
    (second / "README.md").touch()
    # When each is written as a code layer
    layers = []
    for tree in (first, second):
        out = io.BytesIO()
        info = write_code_layer(tree, out)
        assert info.digest == "sha256:" + hashlib.sha256(out.getvalue()).hexdigest()
        layers.append(info)
    # Then digests and diff_ids are equal
    assert layers[0] == layers[1]


def test_build_push_pins_a_digest_and_an_unchanged_tree_pushes_no_new_blob(
    tmp_path: Path, registry: Registry, build_image: Builder
) -> None:
    # Given a tree built and pushed once
    tree = write_known_tree(tmp_path / "tree")
    first = build_image(tree, name="flows/stable")
    assert first.pushed
    assert first.blobs_uploaded == 2  # the code layer and the config; the base layer mounted
    before = _blobs(registry)
    # When the unchanged tree is built and pushed again (into a fresh layout)
    again = build_image(tree, name="flows/stable", push=True)
    # Then nothing at all is uploaded, and the image digest is the same
    assert again.digest == first.digest
    assert (again.blobs_uploaded, again.bytes_uploaded) == (0, 0)
    assert _blobs(registry) == before
    # And a changed file makes a new layer (and only that plus the config)
    (tree / "flows/lib/util.py").write_text("ANSWER = 43\n")
    changed = build_image(tree, name="flows/stable")
    assert changed.digest != first.digest
    assert changed.blobs_uploaded == 2
    assert changed.image.endswith("@" + changed.digest)


def test_chunked_uploads_store_the_same_blobs(
    tmp_path: Path, registry: Registry, image_ctx: ImageContext
) -> None:
    tree = write_known_tree(tmp_path / "tree")
    (tree / "big.bin").write_bytes(bytes(range(256)) * 2000)
    image = DockerImage(f"{registry.host}/flows/chunked:v1", base_image=base_of(registry))
    ctx = ImageContext(layout_dir=image_ctx.layout_dir, environ=image_ctx.environ, chunk_size=4096)
    pushed = image.push(image.build(tree, ctx), ctx)
    source = ImageSource(pushed.image)
    dest = tmp_path / "dest"
    dest.mkdir()
    source.fetch(source.resolve(), dest)
    source.verify(pushed.digest or "", dest)
    assert snapshot(dest, skip=(".conveyor",)) == snapshot(tree)


def test_a_dockerfile_that_runs_commands_needs_an_engine(
    tmp_path: Path, registry: Registry, image_ctx: ImageContext
) -> None:
    tree = write_known_tree(tmp_path / "tree")
    (tree / "requirements.txt").write_text("requests\n")
    image = DockerImage(f"{registry.host}/flows/reqs:v1", base_image=base_of(registry))
    with pytest.raises(EngineRequired) as caught:
        image.build(tree, image_ctx)
    message = str(caught.value)
    assert "\n" not in message
    assert "RUN python -m pip install" in message
    assert "needs a Docker engine" in message
    assert "DOCKER_HOST" in (caught.value.hint or "")
    assert not (image_ctx.layout_dir / "index.json").exists()  # nothing stored half-built


def test_auto_dockerfile_is_deterministic_and_parsed_by_the_daemonless_plan() -> None:
    text = auto_dockerfile(
        base_image="python:3.11-slim", bundle_version="sha256-" + "a" * 64, has_requirements=False
    )
    assert text == auto_dockerfile(
        base_image="python:3.11-slim", bundle_version="sha256-" + "a" * 64, has_requirements=False
    )
    assert text.splitlines()[1:4] == [
        "FROM python:3.11-slim",
        "WORKDIR /opt/conveyor/code",
        "COPY . /opt/conveyor/code/",
    ]
    plan = parse_plan(text)
    assert plan.base == "python:3.11-slim"
    assert plan.code_dir == "/opt/conveyor/code"
    assert dict(plan.env)["PYTHONPATH"] == "/opt/conveyor/code"
    with_reqs = auto_dockerfile(
        base_image="b:1", bundle_version="sha256-" + "a" * 64, has_requirements=True
    )
    assert "RUN python -m pip install --no-cache-dir -r requirements.txt" in with_reqs


def test_a_custom_dockerfile_sets_the_config(
    tmp_path: Path, registry: Registry, image_ctx: ImageContext
) -> None:
    tree = write_known_tree(tmp_path / "tree")
    (tree / "Dockerfile").write_text(
        f"FROM {base_of(registry)}\n"
        "ENV MODE=prod \\\n    DEBUG=0\n"
        "LABEL team=data\n"
        "COPY . /app\n"
        'CMD ["python", "-m", "flows"]\n'
    )
    image = DockerImage(f"{registry.host}/flows/custom:v1", dockerfile="Dockerfile")
    pushed = image.push(image.build(tree, image_ctx), image_ctx)
    with RegistryClient(registry.url) as client:
        manifest = json.loads(client.get_manifest("flows/custom", pushed.digest or "").data)
        with client.open_blob("flows/custom", manifest["config"]["digest"]) as stream:
            config = json.loads(stream.read())["config"]
    assert "MODE=prod" in config["Env"]
    assert "DEBUG=0" in config["Env"]
    assert config["Labels"]["team"] == "data"
    assert config["Labels"]["org.conveyor.code.dir"] == "/app"
    assert config["Cmd"] == ["python", "-m", "flows"]
    assert config["WorkingDir"] == "/app"
    dest = tmp_path / "dest"
    dest.mkdir()
    ImageSource(pushed.image).fetch(pushed.digest or "", dest)
    assert (dest / "flows/hello.py").is_file()


def _unique_tree(root: Path, note: str) -> Path:
    """The known tree plus a file only this test has (registries share blobs by digest, so a
    tampered blob must be this test's own)."""
    tree = write_known_tree(root)
    (tree / "unique.txt").write_text(note)
    return tree


def test_a_tampered_layer_is_refused_and_leaves_nothing(
    tmp_path: Path, registry: Registry, build_image: Builder
) -> None:
    # Given a pushed image whose code layer was changed in the registry's storage
    tree = _unique_tree(tmp_path / "tree", "tampered layer")
    pushed = build_image(tree, name="flows/tampered-layer")
    with RegistryClient(registry.url) as client:
        manifest = json.loads(client.get_manifest("flows/tampered-layer", pushed.digest or "").data)
    layer = manifest["layers"][-1]["digest"]
    stored = registry.blob_file(layer)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    # When a worker fetches it
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(IntegrityError) as caught:
        ImageSource(pushed.image).fetch(pushed.digest or "", dest)
    # Then it is refused in one line, and nothing is left
    assert "\n" not in str(caught.value)
    assert list(dest.iterdir()) == []


def test_a_tampered_manifest_is_refused(
    tmp_path: Path, registry: Registry, build_image: Builder
) -> None:
    tree = _unique_tree(tmp_path / "tree", "tampered manifest")
    pushed = build_image(tree, name="flows/tampered-manifest")
    assert pushed.digest is not None
    stored = registry.blob_file(pushed.digest)
    # a different bundle version in the code layer's annotation: the registry still serves it
    data = stored.read_bytes()
    marker = b'"org.conveyor.code.version":"sha256-'
    at = data.index(marker) + len(marker)
    swapped = b"0" if data[at : at + 1] != b"0" else b"1"
    stored.write_bytes(data[:at] + swapped + data[at + 1 :])
    source = ImageSource(pushed.image)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(IntegrityError, match="does not match its digest"):
        source.fetch(pushed.digest, dest)
    # by tag, the registry's Docker-Content-Digest no longer matches the bytes either
    with pytest.raises(IntegrityError):
        ImageSource(str(pushed.ref)).resolve()


def test_a_modified_checkout_record_fails_verification(
    tmp_path: Path, build_image: Builder
) -> None:
    tree = write_known_tree(tmp_path / "tree")
    pushed = build_image(tree)
    source = ImageSource(pushed.image)
    dest = tmp_path / "dest"
    dest.mkdir()
    source.fetch(pushed.digest or "", dest)
    record = next((dest / ".conveyor/image").iterdir())
    record.write_bytes(record.read_bytes() + b" ")
    with pytest.raises(IntegrityError, match="was modified"):
        source.verify(pushed.digest or "", dest)


def test_an_image_without_a_code_layer_is_refused_with_a_hint(
    tmp_path: Path, registry: Registry
) -> None:
    from fixtures.registry import BASE_REPOSITORY, BASE_TAG

    source = ImageSource(f"{registry.host}/{BASE_REPOSITORY}:{BASE_TAG}")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(VersionNotFound, match="no Conveyor code layer") as caught:
        source.fetch(source.resolve(), dest)
    assert caught.value.hint

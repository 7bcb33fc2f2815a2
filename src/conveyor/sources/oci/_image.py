"""Reading images: manifests and indexes, the platform to use, and where the code layer is.

The code layer of an image Conveyor built is found, in this order, by:

1. the layer annotation ``org.conveyor.code.version`` (daemonless builds write it, with
   ``org.conveyor.code.dir``) in the image manifest;
2. the config labels of the same names (engine builds, which cannot annotate layers): the layer
   is the one made by the last history entry that copied into the code directory.

Either way the bundle version of the code tree comes with it, and the unpacked tree is verified
against that version. Every manifest, index and config read here was fetched by digest and
checked against it (`Reader`), so the chain from the pinned image digest to the tree holds.
"""

from __future__ import annotations

import json
import platform as host_platform
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import IO, Any, Protocol

from conveyor.errors import IntegrityError, VersionNotFound
from conveyor.sources.oci._client import DOCKER_LIST, OCI_INDEX, Fetched
from conveyor.sources.oci._layer import CODE_DIR
from conveyor.sources.oci._reference import digest_of, is_digest

__all__ = [
    "CODE_DIR_KEY",
    "CODE_VERSION_KEY",
    "CodeLayer",
    "Reader",
    "default_platform",
    "find_code_layer",
]

CODE_VERSION_KEY = "org.conveyor.code.version"
CODE_DIR_KEY = "org.conveyor.code.dir"
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def default_platform() -> str:
    """``linux/<arch of this machine>`` (``linux/amd64`` on x86-64)."""
    machine = host_platform.machine().lower()
    return f"linux/{_ARCH.get(machine, machine or 'amd64')}"


class Reader(Protocol):
    """Where an image's manifests and blobs are read from (a registry or a layout)."""

    def manifest(self, digest: str) -> Fetched:
        """The manifest or index ``digest``, verified."""
        ...

    def blob(self, digest: str) -> bytes:
        """A small blob (a config), verified."""
        ...

    def open_blob(self, digest: str, size: int | None) -> AbstractContextManager[IO[bytes]]:
        """A blob as a stream verified at its end."""
        ...


@dataclass(frozen=True)
class CodeLayer:
    """The code layer of an image, and the manifests that lead to it (for verification)."""

    digest: str
    size: int | None
    code_dir: str
    bundle_version: str
    documents: dict[str, bytes]
    """Digest → bytes of every manifest, index and config read on the way (all verified)."""


def parse_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        parsed = json.loads(data)
    except ValueError:
        raise IntegrityError(f"{what} is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise IntegrityError(f"{what} is not a JSON object")
    return parsed


def _is_index(doc: dict[str, Any], media_type: str) -> bool:
    kind = doc.get("mediaType") or media_type
    return kind in (OCI_INDEX, DOCKER_LIST) or ("manifests" in doc and "layers" not in doc)


def select_platform(index: dict[str, Any], wanted: str, image: str) -> str:
    """The digest of the manifest for ``wanted`` (``os/arch[/variant]``) in an index."""
    entries = [m for m in index.get("manifests", []) if isinstance(m, dict)]
    os_name, _, rest = wanted.partition("/")
    arch, _, variant = rest.partition("/")
    for entry in entries:
        plat = entry.get("platform") or {}
        same = plat.get("os") == os_name and plat.get("architecture") == arch
        if same and (not variant or plat.get("variant") in (None, variant)):
            return str(entry.get("digest"))
    if len(entries) == 1:
        return str(entries[0].get("digest"))
    shown = sorted(
        f"{(m.get('platform') or {}).get('os')}/{(m.get('platform') or {}).get('architecture')}"
        for m in entries
    )
    raise VersionNotFound(
        f"image {image} has no manifest for {wanted}",
        hint=f"it has: {', '.join(shown) or 'none'}; pass platform=",
    )


def image_manifest(
    reader: Reader, version: str, *, platform: str | None, image: str
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The image manifest ``version`` names (choosing a platform in an index), and every
    document read on the way."""
    documents: dict[str, bytes] = {}
    fetched = reader.manifest(version)
    documents[fetched.digest] = fetched.data
    doc = parse_json(fetched.data, f"manifest {version[:19]}")
    if _is_index(doc, fetched.media_type):
        chosen = select_platform(doc, platform or default_platform(), image)
        if not is_digest(chosen):
            raise IntegrityError(f"index {version[:19]} names an invalid digest")
        fetched = reader.manifest(chosen)
        documents[fetched.digest] = fetched.data
        doc = parse_json(fetched.data, f"manifest {chosen[:19]}")
    if not isinstance(doc.get("layers"), list):
        raise IntegrityError(f"manifest of {image} has no layers list")
    return doc, documents


def find_code_layer(reader: Reader, version: str, *, platform: str | None, image: str) -> CodeLayer:
    """Where the code of image ``version`` is (see the module docstring)."""
    manifest, documents = image_manifest(reader, version, platform=platform, image=image)
    layers = [layer for layer in manifest["layers"] if isinstance(layer, dict)]
    for layer in reversed(layers):
        notes = layer.get("annotations") or {}
        if isinstance(notes, dict) and isinstance(notes.get(CODE_VERSION_KEY), str):
            return CodeLayer(
                digest=_digest(layer),
                size=_size(layer),
                code_dir=str(notes.get(CODE_DIR_KEY) or CODE_DIR),
                bundle_version=notes[CODE_VERSION_KEY],
                documents=documents,
            )
    config_ref = manifest.get("config") or {}
    config_digest = _digest(config_ref)
    config_bytes = reader.blob(config_digest)
    documents[config_digest] = config_bytes
    config = parse_json(config_bytes, f"config of {image}")
    labels = (config.get("config") or {}).get("Labels") or {}
    bundle_version = labels.get(CODE_VERSION_KEY) if isinstance(labels, dict) else None
    if not isinstance(bundle_version, str):
        raise VersionNotFound(
            f"image {image} holds no Conveyor code layer",
            hint="build it with DockerImage / build_docker_image, or give the deployment a "
            "code source and use the image only as job variable",
        )
    code_dir = str(labels.get(CODE_DIR_KEY) or CODE_DIR)
    index = _history_layer(config, code_dir)
    if index is None or index >= len(layers):
        raise IntegrityError(f"image {image}: its history does not say which layer holds the code")
    layer = layers[index]
    return CodeLayer(_digest(layer), _size(layer), code_dir, bundle_version, documents)


def _history_layer(config: dict[str, Any], code_dir: str) -> int | None:
    """Index (among layers) of the last history entry that copied into ``code_dir``."""
    found: int | None = None
    position = 0
    for entry in config.get("history") or []:
        if not isinstance(entry, dict):
            continue
        if entry.get("empty_layer"):
            continue
        text = str(entry.get("created_by", ""))
        if ("COPY" in text or "ADD" in text) and code_dir.rstrip("/") in text:
            found = position
        position += 1
    return found


def _digest(descriptor: Any) -> str:
    digest = descriptor.get("digest") if isinstance(descriptor, dict) else None
    if not is_digest(digest):
        raise IntegrityError(f"descriptor has an invalid digest {str(digest)[:80]!r}")
    return str(digest)


def _size(descriptor: dict[str, Any]) -> int | None:
    size = descriptor.get("size")
    return size if isinstance(size, int) and size >= 0 else None


def check_documents(documents: dict[str, bytes]) -> Iterator[str]:
    """Digests of ``documents`` whose bytes do not match (none for a sound record)."""
    for digest, data in documents.items():
        if digest_of(data) != digest:
            yield digest

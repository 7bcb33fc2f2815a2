"""Building and pushing images without a container engine.

`build` carries out a `BuildPlan` on top of a base image:

1. fetch the base image's manifest (choosing ``platform`` in an index) and config from its
   registry (verified by digest, as every pull);
2. write one code layer from the bundle tree (`conveyor.sources.oci._layer`: deterministic, so
   the same tree gives the same layer digest anywhere);
3. write the new config (the base's, with the plan's ``Env``, ``Labels``, ``WorkingDir``,
   ``Cmd``/``Entrypoint``, one more ``diff_id`` and history entry, and no new timestamp) and an
   OCI manifest (the base's layers, then the code layer annotated with its bundle version);
4. keep config, layer and manifest in the local `ImageLayout` and name it ``registry/repo:tag``.

The base layers are not downloaded: the manifest's ``org.opencontainers.image.base.name`` says
where they are. `push` then sends to a registry only what it lacks: each blob is checked first
(``HEAD``); our blobs are uploaded from the layout; base layers are mounted from the base's
repository when it is on the same registry, else copied through a verified download. The
manifest is put under the tag unless the tag already names that very digest. An unchanged tree
over an unchanged base therefore uploads nothing.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.docker._dockerfile import BuildPlan
from conveyor.sources.oci._client import OCI_MANIFEST, RegistryClient
from conveyor.sources.oci._image import (
    CODE_DIR_KEY,
    CODE_VERSION_KEY,
    Reader,
    image_manifest,
    parse_json,
)
from conveyor.sources.oci._layer import LayerInfo, write_code_layer
from conveyor.sources.oci._layout import ImageLayout, sha256_file
from conveyor.sources.oci._reference import ImageRef, parse_reference

__all__ = ["BASE_DIGEST", "BASE_NAME", "Built", "PushStats", "build", "push"]

logger = logging.getLogger(__name__)

BASE_NAME = "org.opencontainers.image.base.name"
BASE_DIGEST = "org.opencontainers.image.base.digest"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
_MEDIA = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": OCI_LAYER_GZIP,
    "application/vnd.docker.image.rootfs.diff.tar": "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.container.image.v1+json": OCI_CONFIG,
}


@dataclass(frozen=True)
class Built:
    """An image built into the local layout."""

    ref: ImageRef
    digest: str
    bundle_version: str
    layer_digest: str
    layer_size: int


@dataclass(frozen=True)
class PushStats:
    """What a push sent: blobs and bytes uploaded (manifest included), blobs mounted."""

    blobs_uploaded: int = 0
    bytes_uploaded: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    manifest_written: bool = False


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _config(base: dict[str, Any], plan: BuildPlan, diff_id: str, bundle_version: str) -> bytes:
    config = json.loads(json.dumps(base))
    inner = config.setdefault("config", {}) or {}
    config["config"] = inner
    env = [e for e in inner.get("Env") or [] if isinstance(e, str)]
    for key, value in plan.env:
        env = [e for e in env if e.split("=", 1)[0] != key] + [f"{key}={value}"]
    inner["Env"] = env
    labels = dict(inner.get("Labels") or {})
    labels.update(dict(plan.labels))
    labels[CODE_VERSION_KEY] = bundle_version
    labels[CODE_DIR_KEY] = plan.code_dir
    inner["Labels"] = labels
    inner["WorkingDir"] = plan.workdir or plan.code_dir
    if plan.user is not None:
        inner["User"] = plan.user
    if plan.exposed:
        ports = dict(inner.get("ExposedPorts") or {})
        ports.update({p if "/" in p else f"{p}/tcp": {} for p in plan.exposed})
        inner["ExposedPorts"] = ports
    if plan.entrypoint is not None:
        inner["Entrypoint"] = list(plan.entrypoint)
        inner.pop("Cmd", None)
    if plan.cmd is not None:
        inner["Cmd"] = list(plan.cmd)
    rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs["diff_ids"] = [*rootfs.get("diff_ids", []), diff_id]
    config["history"] = [
        *(config.get("history") or []),
        {
            "created": config.get("created", "1970-01-01T00:00:00Z"),
            "created_by": f"COPY . {plan.code_dir}/ # conveyor daemonless build",
            "comment": f"conveyor code {bundle_version}",
        },
    ]
    return _canonical(config)


def build(
    plan: BuildPlan,
    tree: Path,
    *,
    target: ImageRef,
    layout: ImageLayout,
    base_reader: Callable[[ImageRef], Any],
    platform: str | None,
) -> Built:
    """Build ``plan`` over ``tree`` into ``layout`` as ``target`` (see the module docstring).

    ``base_reader(ref)`` is a context manager giving a `Reader` for the base image's registry.
    """
    base_ref = parse_reference(plan.base)
    with base_reader(base_ref) as reader:
        base_digest = _resolve(reader, base_ref)
        base_manifest, _ = image_manifest(
            reader, base_digest, platform=platform, image=str(base_ref)
        )
        config_digest = str((base_manifest.get("config") or {}).get("digest"))
        base_config = parse_json(reader.blob(config_digest), f"config of {base_ref}")
    info = _code_layer(tree, plan.code_dir, layout)
    config_bytes = _config(base_config, plan, info.diff_id, info.bundle_version)
    config_digest = layout.put_bytes(config_bytes)
    layers = [
        {
            "mediaType": _MEDIA.get(str(layer.get("mediaType")), layer.get("mediaType")),
            "digest": layer["digest"],
            "size": layer["size"],
        }
        for layer in base_manifest["layers"]
    ]
    layers.append(
        {
            "mediaType": OCI_LAYER_GZIP,
            "digest": info.digest,
            "size": info.size,
            "annotations": {CODE_VERSION_KEY: info.bundle_version, CODE_DIR_KEY: plan.code_dir},
        }
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
        "layers": layers,
        "annotations": {
            BASE_NAME: str(base_ref.with_tag(base_ref.tag)) if base_ref.tag else base_ref.name,
            BASE_DIGEST: base_digest,
            CODE_VERSION_KEY: info.bundle_version,
        },
    }
    data = _canonical(manifest)
    digest = layout.tag(str(target), data, OCI_MANIFEST)
    logger.info(
        "image built image=%s digest=%s code=%s layer=%s bytes=%d",
        target,
        digest,
        info.bundle_version,
        info.digest,
        info.size,
    )
    return Built(target, digest, info.bundle_version, info.digest, info.size)


def _code_layer(tree: Path, code_dir: str, layout: ImageLayout) -> LayerInfo:
    """The code layer of ``tree`` in ``layout``: written once per bundle version and code
    directory (remembered in ``layers.json``), so an unchanged tree is not compressed again."""
    from conveyor._fs import atomic_write
    from conveyor.bundles import build_manifest

    manifest = build_manifest(tree)
    key = f"{manifest.version} {code_dir}"
    memo_path = layout.root / "conveyor-layers.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    known = memo.get(key) if isinstance(memo, dict) else None
    if isinstance(known, dict) and layout.has_blob(str(known.get("digest"))):
        return LayerInfo(
            known["digest"], known["diff_id"], known["size"], manifest.version, manifest.file_count
        )
    layout.root.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=layout.root, prefix=".layer-", delete=False) as out:
        temp = Path(out.name)
        try:
            info = write_code_layer(tree, out, code_dir=code_dir, manifest=manifest)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
    try:
        layout.put_file(temp, info.digest)
    finally:
        temp.unlink(missing_ok=True)
    memo = memo if isinstance(memo, dict) else {}
    memo[key] = {"digest": info.digest, "diff_id": info.diff_id, "size": info.size}
    with atomic_write(memo_path) as fh:
        fh.write(json.dumps(memo, sort_keys=True).encode())
    return info


def _resolve(reader: Any, ref: ImageRef) -> str:
    if ref.digest is not None:
        return ref.digest
    client: RegistryClient = reader.client
    return client.get_manifest(ref.repository, ref.reference).digest


def push(
    layout: ImageLayout,
    digest: str,
    target: ImageRef,
    client: RegistryClient,
    *,
    base_reader: Callable[[ImageRef], Any],
) -> PushStats:
    """Push the manifest ``digest`` of ``layout`` to ``target`` (see the module docstring)."""
    data = layout.read_blob(digest)
    manifest = parse_json(data, f"manifest {digest[:19]}")
    annotations = manifest.get("annotations") or {}
    base_name = annotations.get(BASE_NAME)
    base = parse_reference(base_name) if isinstance(base_name, str) else None
    repository = target.repository
    uploaded_before = client.bytes_uploaded
    blobs_before = client.blobs_uploaded
    mounted = present = 0
    for descriptor in [manifest["config"], *manifest["layers"]]:
        blob, size = str(descriptor["digest"]), int(descriptor["size"])
        if client.blob_exists(repository, blob):
            present += 1
            continue
        if layout.has_blob(blob):
            path = layout.blob_path(blob)
            client.push_blob(repository, blob, size, lambda path=path: path.open("rb"))  # type: ignore[misc]
            continue
        if base is None:
            raise _missing_base(blob, target)
        if base.registry == target.registry and client.mount_blob(
            repository, blob, base.repository
        ):
            mounted += 1
            continue
        _copy_base_blob(base, blob, size, repository, client, base_reader)
    existing = client.manifest_digest(repository, target.tag or "latest")
    written = existing != digest
    if written:
        client.put_manifest(repository, target.tag or "latest", data, OCI_MANIFEST)
    stats = PushStats(
        blobs_uploaded=client.blobs_uploaded - blobs_before,
        bytes_uploaded=client.bytes_uploaded - uploaded_before,
        blobs_mounted=mounted,
        blobs_present=present,
        manifest_written=written,
    )
    logger.info(
        "image pushed image=%s@%s blobs_uploaded=%d bytes=%d mounted=%d present=%d",
        target,
        digest,
        stats.blobs_uploaded,
        stats.bytes_uploaded,
        mounted,
        present,
    )
    return stats


def _copy_base_blob(
    base: ImageRef,
    blob: str,
    size: int,
    repository: str,
    client: RegistryClient,
    base_reader: Callable[[ImageRef], Any],
) -> None:
    with tempfile.TemporaryDirectory(prefix="conveyor-blob-") as tmp:
        path = Path(tmp) / "blob"
        reader: Reader
        with (
            base_reader(base) as reader,
            reader.open_blob(blob, size) as stream,
            path.open("wb") as out,
        ):
            while chunk := stream.read(1 << 20):
                out.write(chunk)
        got, _ = sha256_file(path)
        assert got == blob  # the stream verified it already
        client.push_blob(repository, blob, size, lambda: path.open("rb"))


def _missing_base(blob: str, target: ImageRef) -> Exception:
    from conveyor.errors import SourceError

    return SourceError(
        f"cannot push {target}: layer {blob[:19]}… is neither in the image layout nor named "
        "by a base image",
        hint="build the image again",
    )

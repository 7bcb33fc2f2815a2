"""Folder mode: pin every object under a prefix, fetch exactly those, verify them.

`list_pins` lists the prefix once (S3: ``ListObjectVersions``, falling back to ``ListObjectsV2``
without that permission; GCS and Azure: one listing) into `Pin` records: the path relative to the
prefix, the size, and what identifies that exact object: the S3 ``VersionId`` (versioned bucket)
or ``ETag``, the GCS ``generation``, the Azure version id or ``ETag``, plus the content MD5 when
the platform gives one. The version is ``pins-`` + the sha256 of the canonical listing
(`pins_version`), so the same objects give the same version anywhere.

`fetch_pins` gets every pinned object with bounded parallelism (one event loop, the backend's
own HTTP session): by version id or generation when there is one, else a conditional GET on the
pinned ETag (``If-Match``). An object replaced or deleted since it was pinned is `Changed`,
naming its key; sizes and MD5s are checked as the bytes arrive. The sha256 of every file and the
pins are written to ``.conveyor/pins.json`` so `verify_pins` can later check the tree without
the network.

Object keys that would leave the folder (``..``, absolute, empty segments) are refused;
directory markers (``key/``, Azure ``hdi_isfolder``) and the reserved ``.conveyor/`` prefix are
skipped.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from conveyor.errors import IntegrityError, UnsafeArchive
from conveyor.sources.blob._errors import Changed, translate
from conveyor.sources.blob._fs import BlobUrl

__all__ = [
    "PINS_FILE",
    "PINS_PREFIX",
    "Pin",
    "fetch_pins",
    "is_pins_version",
    "list_pins",
    "pins_from_spec",
    "pins_version",
    "verify_pins",
]

PINS_PREFIX = "pins-"
PINS_FILE = ".conveyor/pins.json"
PARALLEL = 16
"""Objects fetched at once."""
Progress = Callable[[int, int], None]
"""Called with (files done, bytes done) as objects arrive."""


@dataclass(frozen=True)
class Pin:
    """One pinned object."""

    path: str
    size: int
    etag: str | None = None
    version_id: str | None = None
    md5: str | None = None

    def to_list(self) -> list[Any]:
        return [self.path, self.size, self.etag, self.version_id, self.md5]


def pins_version(pins: Sequence[Pin]) -> str:
    """``pins-<sha256 of the canonical listing>``."""
    canonical = json.dumps([p.to_list() for p in sorted(pins, key=lambda p: p.path)])
    return PINS_PREFIX + hashlib.sha256(canonical.encode()).hexdigest()


def is_pins_version(version: str) -> bool:
    rest = version[len(PINS_PREFIX) :] if version.startswith(PINS_PREFIX) else ""
    return len(rest) == 64 and all(c in "0123456789abcdef" for c in rest)


def pins_from_spec(value: Any) -> list[Pin]:
    """Pins from their stored form (lists of [path, size, etag, version_id, md5])."""
    if not isinstance(value, list):
        raise IntegrityError("the stored object pins are malformed")
    pins = []
    for item in value:
        if not isinstance(item, list) or len(item) != 5:
            raise IntegrityError("the stored object pins are malformed")
        path, size, etag, version_id, md5 = item
        pins.append(Pin(_safe_path(str(path)), int(size), etag, version_id, md5))
    return pins


def _safe_path(rel: str) -> str:
    parts = rel.split("/")
    if (
        not rel
        or rel.startswith("/")
        or "\\" in rel
        or "\x00" in rel
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise UnsafeArchive(
            f"object key {rel!r} cannot be a file inside the folder",
            hint="rename the object; keys with '..', '//' or a leading '/' are refused",
        )
    return rel


def _md5_hex(detail: Mapping[str, Any], platform: str) -> str | None:
    if platform == "s3":
        etag = str(detail.get("ETag") or "").strip('"')
        return etag if len(etag) == 32 and "-" not in etag else None
    if platform == "gcs":
        raw = detail.get("md5Hash")
        return base64.b64decode(raw).hex() if raw else None
    if platform == "azure":
        settings = detail.get("content_settings")
        raw = settings.get("content_md5") if isinstance(settings, Mapping) else None
        return bytes(raw).hex() if raw else None
    return None


def _is_dir_marker(name: str, detail: Mapping[str, Any]) -> bool:
    if name.endswith("/") or detail.get("type") == "directory":
        return True
    metadata = detail.get("metadata")
    if isinstance(metadata, Mapping):
        return str(metadata.get("hdi_isfolder", metadata.get("is_directory", ""))).lower() == "true"
    return False


def _s3_versions(fs: Any, url: BlobUrl) -> list[Mapping[str, Any]] | None:
    """Latest versions under the prefix (None: no permission to list versions)."""
    from fsspec.asyn import sync

    prefix = f"{url.prefix}/" if url.prefix else ""
    found: list[Mapping[str, Any]] = []
    marker: dict[str, str] = {}
    for _page in range(100_000):
        try:
            reply = sync(
                fs.loop,
                fs._call_s3,
                "list_object_versions",
                Bucket=url.bucket,
                Prefix=prefix,
                **marker,
            )
        except PermissionError:
            return None
        for item in reply.get("Versions", []):
            if item.get("IsLatest"):
                found.append({**item, "name": f"{url.bucket}/{item['Key']}", "size": item["Size"]})
        if not reply.get("IsTruncated"):
            return found
        marker = {
            "KeyMarker": reply["NextKeyMarker"],
            "VersionIdMarker": reply.get("NextVersionIdMarker", ""),
        }
    return found


def list_pins(fs: Any, url: BlobUrl) -> list[Pin]:
    """Every object under ``url``'s prefix, pinned (one listing; raises `SourceNotFound` when the
    bucket is missing)."""
    root = url.root + "/"
    entries: list[Mapping[str, Any]] | None = None
    if url.platform == "s3":
        entries = _s3_versions(fs, url)
    if entries is None:
        fs.invalidate_cache()
        found = fs.find(url.root, detail=True, withdirs=False)
        entries = [{**detail, "name": name} for name, detail in found.items()]
    pins = []
    for detail in entries:
        name = str(detail["name"])
        if not name.startswith(root) or _is_dir_marker(name, detail):
            continue
        rel = name[len(root) :]
        if rel == ".conveyor" or rel.startswith(".conveyor/"):
            continue
        etag = detail.get("ETag") or detail.get("etag") or detail.get("generation")
        version_id = detail.get("VersionId") or detail.get("version_id")
        if url.platform == "gcs":
            version_id = detail.get("generation")
        if version_id == "null":
            version_id = None
        if etag is None and url.platform == "other":
            etag = _other_token(detail)
        pins.append(
            Pin(
                path=_safe_path(rel),
                size=int(detail.get("size") or 0),
                etag=str(etag) if etag is not None else None,
                version_id=str(version_id) if version_id else None,
                md5=_md5_hex(detail, url.platform),
            )
        )
    pins.sort(key=lambda p: p.path)
    return pins


def _other_token(detail: Mapping[str, Any]) -> str | None:
    for key in ("etag", "checksum", "md5", "mtime", "LastModified", "last_modified", "created"):
        if detail.get(key) is not None:
            return f"{key}:{detail[key]}"
    return None


async def _get(fs: Any, url: BlobUrl, pin: Pin) -> bytes:
    path = url.join(pin.path)
    if url.platform == "s3":
        kwargs = {"VersionId": pin.version_id} if pin.version_id else {}
        if not pin.version_id and pin.etag:
            kwargs["IfMatch"] = pin.etag
        key = f"{url.prefix}/{pin.path}" if url.prefix else pin.path
        reply = await fs._call_s3("get_object", Bucket=url.bucket, Key=key, **kwargs)
        body = reply["Body"]
        try:
            data: bytes = await body.read()
        finally:
            body.close()
        return data
    if url.platform == "gcs":
        got: bytes = await fs._cat_file_sequential(path, generation=pin.version_id)
        return got
    if url.platform == "azure":
        from azure.core import MatchConditions

        container, _, blob = path.partition("/")
        options: dict[str, Any] = {}
        if pin.version_id:
            options["version_id"] = pin.version_id
        elif pin.etag:
            options.update(etag=pin.etag, match_condition=MatchConditions.IfNotModified)
        async with fs.service_client.get_blob_client(container=container, blob=blob) as client:
            stream = await client.download_blob(**options)
            azure_data: bytes = await stream.readall()
            return azure_data
    raise AssertionError(url.platform)


def _other_get(fs: Any, url: BlobUrl, pin: Pin) -> bytes:
    path = url.join(pin.path)
    data: bytes = fs.cat_file(path)
    token = _other_token(fs.info(path))
    if pin.etag is not None and token != pin.etag:
        raise Changed(f"{url.url_of(pin.path)} changed since it was pinned")
    return data


def _check(pin: Pin, data: bytes, url: BlobUrl) -> str:
    if len(data) != pin.size:
        raise Changed(
            f"{url.url_of(pin.path)} changed since it was pinned "
            f"({len(data)} bytes, pinned {pin.size})"
        )
    if pin.md5 is not None and hashlib.md5(data, usedforsecurity=False).hexdigest() != pin.md5:
        raise IntegrityError(f"{url.url_of(pin.path)} does not match its pinned MD5", path=pin.path)
    return hashlib.sha256(data).hexdigest()


def _write(dest: Path, pin: Pin, data: bytes) -> None:
    target = dest / pin.path
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "xb") as out:  # a second object at the same path is refused
        out.write(data)


def fetch_pins(
    fs: Any,
    url: BlobUrl,
    pins: Sequence[Pin],
    dest: Path,
    *,
    version: str,
    progress: Progress | None = None,
    parallel: int = PARALLEL,
) -> None:
    """Write every pinned object into ``dest`` and record ``.conveyor/pins.json``."""
    hashes: dict[str, str] = {}
    done = [0, 0]

    def finish(pin: Pin, data: bytes) -> None:
        hashes[pin.path] = _check(pin, data, url)
        _write(dest, pin, data)
        done[0] += 1
        done[1] += len(data)
        if progress is not None:
            progress(done[0], done[1])

    if url.platform == "other" or not hasattr(fs, "loop"):
        for pin in pins:
            try:
                finish(pin, _other_get(fs, url, pin))
            except Exception as exc:
                raise _named(exc, url, pin) from None
    else:
        from fsspec.asyn import sync

        async def all_of() -> None:
            gate = asyncio.Semaphore(parallel)

            async def one(pin: Pin) -> None:
                async with gate:
                    try:
                        data = await _get(fs, url, pin)
                    except Exception as exc:
                        raise _named(exc, url, pin) from None
                finish(pin, data)

            await asyncio.gather(*(one(pin) for pin in pins))

        sync(fs.loop, all_of)
    record = {
        "version": version,
        "url": url.url,
        "pins": [p.to_list() for p in pins],
        "sha256": dict(sorted(hashes.items())),
    }
    meta = dest / PINS_FILE
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps(record, indent=1, sort_keys=True))


def _named(exc: BaseException, url: BlobUrl, pin: Pin) -> Exception:
    error = translate(exc, where=url.url_of(pin.path))
    if type(error).__name__ in ("SourceNotFound", "Changed"):
        return Changed(
            f"{url.url_of(pin.path)} was changed or deleted after the deployment pinned it",
            source=url.url,
            hint="redeploy to run the folder's current objects, or deploy with follow_ref "
            "to take the latest objects on every run",
        )
    return error


def verify_pins(path: Path, version: str, pins: Sequence[Pin] | None) -> None:
    """Check the tree at ``path`` against the pins of ``version`` (no network): every pinned
    file is there with its size, MD5 (when pinned) and the sha256 recorded at fetch, and there
    is nothing else."""
    meta = path / PINS_FILE
    try:
        record = json.loads(meta.read_text())
    except (OSError, ValueError):
        raise IntegrityError(f"{PINS_FILE} is missing or unreadable", path=PINS_FILE) from None
    recorded = pins_from_spec(record.get("pins"))
    wanted = list(pins) if pins is not None else recorded
    if pins_version(wanted) != version or pins_version(recorded) != version:
        raise IntegrityError(f"the tree's object pins are not those of {version[:21]}")
    sha = record.get("sha256")
    if not isinstance(sha, dict):
        raise IntegrityError(f"{PINS_FILE} has no file digests", path=PINS_FILE)
    expected = {p.path for p in wanted}
    for pin in wanted:
        file = path / pin.path
        try:
            data = file.read_bytes() if not file.is_symlink() else b""
        except OSError:
            raise IntegrityError(f"{pin.path} is missing", path=pin.path) from None
        if file.is_symlink() or len(data) != pin.size:
            raise IntegrityError(f"{pin.path} is not the pinned object", path=pin.path)
        if pin.md5 is not None and hashlib.md5(data, usedforsecurity=False).hexdigest() != pin.md5:
            raise IntegrityError(f"{pin.path} does not match its pinned MD5", path=pin.path)
        if hashlib.sha256(data).hexdigest() != sha.get(pin.path):
            raise IntegrityError(f"{pin.path} differs from what was fetched", path=pin.path)
    for dirpath, dirnames, filenames in os.walk(path):
        rel_dir = os.path.relpath(dirpath, path)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d != ".conveyor"]
        for name in filenames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
            if rel not in expected:
                raise IntegrityError(f"{rel} is not one of the pinned objects", path=rel)


def pins_as_dicts(pins: Sequence[Pin]) -> list[dict[str, Any]]:
    return [asdict(p) for p in pins]

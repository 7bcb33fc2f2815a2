"""`FlowFileSource`: the one file a first-generation storage stored for one flow, pinned.

A storage's ``build()`` puts a flow somewhere as one file (a signed pickle, or the ``.py``
script); the deployment it registers points at that file through this source:

```python
FlowFileSource({"path": "/home/me/.conveyor/flows/etl/2024-..."}, filename="flow.pickle",
               signed=True)
FlowFileSource({"webhook": {"method": "POST", "kwargs": {...}}}, filename="flow.pickle")
```

The tree is that one file under ``filename``; its version is the bundle version of that tree
(`file_version`: the content digest, the same whatever the file's location). `resolve` reads the
file; `fetch` reads it again on the worker, refuses it unless it has exactly the registered
digest (`VersionNotFound`: the stored file changed since it was registered), checks the pickle's
signature with the server's key (``signed``, `conveyor.sources.pickled`) before anything is
written, and writes it. A stored file is never rewritten in place by Conveyor (keys carry a
timestamp), so the digest pins it: ``supports_versioning`` is True and deploy does not copy it
into the bundle store — the worker reads it from the storage itself, as the first generation
did, and gets exactly what was built.

Where a file is read from is a *location*, found by its one key in `READERS` (a `Registry`):
``path`` (a file on this machine), ``webhook`` (a stored `WebhookRequest`) and ``url`` (an object
on a blob store with its fsspec settings, `conveyor.sources.blob.flowfile`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from conveyor._registry import Entry, Registry
from conveyor.errors import ConfigError, SourceNotFound, VersionNotFound
from conveyor.sources.base import FetchContext, Source, context

__all__ = ["READERS", "FlowFileSource", "file_version", "write_file"]

Reader = Callable[[Mapping[str, Any], FetchContext], bytes]

READERS: Registry[Reader] = Registry(
    "flow file location",
    group="conveyor.flow_file_readers",
    builtins={
        "path": Entry("conveyor.sources.flowfile:read_path"),
        "url": Entry("conveyor.sources.blob.flowfile:read_url"),
        "webhook": Entry("conveyor.sources.webhook:read_webhook"),
    },
)
"""Location key → ``reader(location, ctx) -> bytes``."""


def file_version(filename: str, data: bytes) -> str:
    """The bundle version of a tree holding only ``filename`` with ``data``."""
    from conveyor.bundles import Manifest, ManifestEntry

    entry = ManifestEntry(filename, hashlib.sha256(data).hexdigest(), len(data))
    return Manifest((entry,)).version


def write_file(dest: Path, filename: str, data: bytes) -> None:
    """Write ``dest/filename`` (mode 0644) through a temporary file."""
    from conveyor._fs import atomic_write

    with atomic_write(dest / filename, mode=0o644) as out:
        out.write(data)


def read_path(location: Mapping[str, Any], ctx: FetchContext) -> bytes:
    """The bytes of a file on this machine (the ``path`` location)."""
    path = Path(str(location["path"]))
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SourceNotFound(
            f"flow file {path} does not exist on this machine",
            source=str(path),
            hint="a flow in Local storage runs only on the machine that registered it (its "
            "hostname label); register it again there",
        ) from None
    except OSError as exc:
        raise SourceNotFound(
            f"flow file {path} cannot be read: {exc.strerror or exc}", source=str(path)
        ) from None


def _check_filename(filename: object) -> str:
    if (
        not isinstance(filename, str)
        or not filename
        or "/" in filename
        or "\\" in filename
        or filename in (".", "..")
        or filename.startswith(".conveyor")
    ):
        raise ConfigError(f"{filename!r} is not a file name for a stored flow")
    return filename


class FlowFileSource(Source):
    """The file a storage stored for one flow, at ``location``, as ``filename`` in the tree."""

    kind: ClassVar[str] = "flow-file"

    def __init__(self, location: Mapping[str, Any], *, filename: str, signed: bool = False) -> None:
        if not isinstance(location, Mapping) or len(location) != 1:
            raise ConfigError(
                "a flow file location has exactly one key",
                hint=f"one of: {', '.join(READERS.names())}",
            )
        self.location = dict(location)
        (self.where,) = self.location
        if self.where == "path":
            self.location["path"] = os.path.abspath(str(self.location["path"]))
        self.filename = _check_filename(filename)
        self.signed = bool(signed)

    def read(self, ctx: FetchContext | None = None) -> bytes:
        """The stored bytes, as they are now."""
        return READERS.get(self.where)(self.location, context(ctx))

    def resolve(self, ctx: FetchContext | None = None) -> str:
        return file_version(self.filename, self.read(ctx))

    def fetch(self, version: str, dest: Path, ctx: FetchContext | None = None) -> None:
        ctx = context(ctx)
        data = self.read(ctx)
        got = file_version(self.filename, data)
        if got != version:
            raise VersionNotFound(
                f"the flow stored at {self.shown} changed since it was registered "
                f"(registered {version[:19]}, found {got[:19]})",
                source=self.describe(),
                hint="register the flow again (flow.register() or conveyor register)",
            )
        if self.signed:
            from conveyor.sources.pickled import parse_envelope, verify_envelope

            verify_envelope(parse_envelope(data, where=self.shown), ctx.secrets, where=self.shown)
        write_file(Path(dest), self.filename, data)

    @property
    def shown(self) -> str:
        """Where the file is, for messages (templates as written, never their values)."""
        value = self.location[self.where]
        if self.where == "webhook" and isinstance(value, Mapping):
            from conveyor.sources.webhook import WebhookRequest

            method = str(value.get("method", "GET"))
            return WebhookRequest(method, value.get("kwargs") or {}).shown
        if self.where == "url" and isinstance(value, Mapping):
            return str(value.get("url"))
        return str(value)

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "kind": self.kind,
            "location": self.location,
            "filename": self.filename,
        }
        if self.signed:
            spec["signed"] = True
        return spec

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "location": self.location, "filename": self.filename}

    def describe(self) -> str:
        return f"flow file {self.shown}"

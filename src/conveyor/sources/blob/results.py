"""Results on a blob store: pickled run results as objects, referenced by URL.

`BlobResultStore(url)` keeps a run's pickled result at ``<url>/<run-id>/result.pickle`` and
returns that URL as the run's ``result_ref``, in a `StoredResult` with the SHA-256 and size of
the bytes it uploaded. The run records them, and `load` (like every reader,
`conveyor.run_results`) checks the object against them before it unpickles anything: whoever
can write the bucket must not be able to run code in the reader.

`beside` picks the default place for a run whose code came from a blob store, as the
first-generation storages did (results on the same platform): ``<scheme>://<bucket>/results``
(``.conveyor/results`` under the code's prefix when the code is the whole bucket, so a folder's
pins never include them), with the source's own credentials and settings (a first-generation
``S3``/``GCS``/``Azure`` storage's flow file counts: its object's settings are used). `for_ref`
opens the store behind a ref, for ``conveyor runs result``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conveyor.errors import ConfigError
from conveyor.results import StoredResult
from conveyor.sources.base import FetchContext, context
from conveyor.sources.blob._errors import budget_of, call, translate
from conveyor.sources.blob._fs import BlobUrl, filesystem

__all__ = ["BlobResultStore", "beside", "for_ref", "from_setting"]

RESULT_FILE = "result.pickle"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class BlobResultStore:
    """Pickled results under a blob URL (options from ``credentials``, ``settings`` and the
    context, as for a `BlobStorage`)."""

    def __init__(
        self,
        url: str,
        ctx: FetchContext | None = None,
        *,
        credentials: str | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.location = BlobUrl.parse(url)
        self.ctx = context(ctx)
        self.credentials = credentials
        self.settings = dict(settings or {})

    @property
    def url(self) -> str:
        return self.location.url

    def _fs(self) -> Any:
        return filesystem(self.location, self.settings, self.credentials, self.ctx)

    def ref_for(self, run_id: str) -> str:
        if not _RUN_ID.match(run_id):
            raise ConfigError(f"{run_id!r} is not a run id")
        return self.location.url_of(run_id, RESULT_FILE)

    def put_file(self, run_id: str, source: Path) -> StoredResult:
        """Upload the pickle at ``source``; its record (the URL, the run's ``result_ref``, and
        the digest of the bytes uploaded)."""
        return self.put_bytes(run_id, Path(source).read_bytes())

    def put_bytes(self, run_id: str, data: bytes) -> StoredResult:
        """Upload ``data`` (a pickle) as ``run_id``'s result; its record."""
        ref = self.ref_for(run_id)
        fs = self._fs()

        def upload() -> None:
            try:
                fs.pipe_file(self.location.join(run_id, RESULT_FILE), data)
            except Exception as exc:
                raise translate(exc, where=ref) from None

        call(upload, budget=budget_of(self.ctx))
        return StoredResult.of_bytes(ref, data)

    def put(self, run_id: str, value: Any) -> StoredResult:
        """Pickle ``value`` into the store; its record."""
        import pickle

        return self.put_bytes(run_id, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))

    def read_bytes(self, ref: str) -> bytes:
        """The stored bytes behind ``ref`` (a URL under this store), unchecked
        (`StoredResult.check` them)."""
        if not ref.startswith(self.url + "/"):
            raise ConfigError(f"result ref {ref} is not under {self.url}")
        path = self.location.join(ref[len(self.url) + 1 :])
        fs = self._fs()

        def download() -> bytes:
            try:
                data: bytes = fs.cat_file(path)
            except Exception as exc:
                raise translate(exc, where=ref) from None
            return data

        result: bytes = call(download, budget=budget_of(self.ctx))
        return result

    def load(self, result: StoredResult, *, trust_unverified: bool = False) -> Any:
        """Unpickle the result ``result`` records, once the object's bytes match the record
        (else `IntegrityError`, nothing unpickled)."""
        return result.loads(self.read_bytes(result.ref), trust_unverified=trust_unverified)


def _blob_spec(spec: Mapping[str, Any]) -> tuple[BlobUrl, str | None, dict[str, Any]] | None:
    """(location, credentials, settings) of a source spec whose code is on a blob store."""
    from conveyor.sources.blob._fs import PLATFORMS

    kind = spec.get("kind")
    location = spec.get("location")
    if kind == "flow-file" and isinstance(location, Mapping) and "url" in location:
        where = location["url"]  # a first-generation blob storage's object (its settings)
        if isinstance(where, Mapping) and isinstance(where.get("url"), str):
            settings = {k: v for k, v in where.items() if k != "url"}
            return BlobUrl.parse(where["url"]), None, settings
        return None
    url = spec.get("url")
    if not isinstance(url, str) or "://" not in url:
        return None
    if kind == "store" and url.split("://", 1)[0].lower() in PLATFORMS:
        return BlobUrl.parse(url), None, {}
    if kind != "blob":
        return None
    reserved = {"kind", "url", "credentials", "mode", "version", "pins"}
    settings = {k: v for k, v in spec.items() if k not in reserved}
    credentials = spec.get("credentials")
    return BlobUrl.parse(url), credentials if isinstance(credentials, str) else None, settings


def beside(source_spec: Mapping[str, Any], ctx: FetchContext) -> BlobResultStore | None:
    """The default result store of a run whose code came from a blob store (else None)."""
    found = _blob_spec(source_spec)
    if found is None:
        return None
    location, credentials, settings = found
    base = f"{location.protocol}://{location.bucket}"
    url = f"{location.url}/.conveyor/results" if not location.prefix else f"{base}/results"
    return BlobResultStore(url, ctx, credentials=credentials, settings=settings)


def from_setting(
    value: Any, source_spec: Mapping[str, Any], ctx: FetchContext
) -> BlobResultStore | None:
    """The store a ``result_storage`` names: a blob URL, or a block's spec (None: not blob)."""
    if isinstance(value, Mapping) and value.get("kind") == "blob":
        found = _blob_spec(value)
        assert found is not None
        location, credentials, settings = found
        return BlobResultStore(location.url, ctx, credentials=credentials, settings=settings)
    if isinstance(value, str) and "://" in value:
        return for_ref(value, source_spec, ctx, base=True)
    return None


def for_ref(
    ref: str, source_spec: Mapping[str, Any], ctx: FetchContext, *, base: bool = False
) -> BlobResultStore:
    """The store that holds ``ref`` (a URL), with the run's source credentials when the result is
    on the source's bucket, else the platform's own chain. ``base``: ``ref`` is the store URL."""
    location = BlobUrl.parse(ref)
    url = location.url if base else location.url.rsplit("/", 2)[0]
    found = _blob_spec(source_spec)
    if (
        found is not None
        and found[0].protocol == location.protocol
        and found[0].bucket == location.bucket
    ):
        return BlobResultStore(url, ctx, credentials=found[1], settings=found[2])
    return BlobResultStore(url, ctx)

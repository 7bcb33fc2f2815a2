"""`BlobStorage`: what ``S3``, ``GCS`` and ``Azure`` share (each is a thin subclass).

```python
flow = Flow("s3-flow", storage=S3(bucket="my-bucket"))
flow.storage.build()      # s3://my-bucket/s3-flow/2024-05-01t10-11-12-123456-00-00
```

- the key of a flow is ``key``, or ``<flow slug>/<slugified UTC timestamp>`` (fixed when the
  flow is added; a rebuild in the same process whose bytes differ gets a new timestamp instead
  of rewriting an object a deployment may pin — an explicit key is rewritten: the user chose it);
- pickle mode uploads the signed pickle; script mode uploads ``local_script_path`` (default: the
  script ``conveyor register --path`` is loading when the storage is made), and needs it or an
  explicit ``key`` (the file was put there by hand; ``Azure`` never uploads scripts);
- the deployment's source is a `FlowFileSource` whose ``url`` location is the object's URL plus
  the subclass's `location_options` (fsspec settings: client options, secret *names* as
  ``${NAME}`` templates, never values), pinned to the digest of what was uploaded — a run reads
  the object from the bucket on the worker (`conveyor.sources.blob.flowfile`), with the
  platform's credentials chain there, and refuses other bytes;
- the flow's default result is the subclass's `default_result` (``S3Result(bucket)``, beside it);
  the worker also puts a run's pickled result in the same bucket (``<bucket>/results``).

A subclass sets ``scheme`` and, if it needs them, `location_options` (persisted), `build_options`
(used only here, at build: may hold a `Secret`), `put_options`, `prepare` (before uploading),
`run_env` and `default_result`.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, ClassVar

from conveyor._context import local_script_path
from conveyor.errors import ConfigError
from conveyor.storage._session import Session, default_location
from conveyor.storage.base import PICKLE_FILE, FileStorage

if TYPE_CHECKING:
    from conveyor.flows import Flow
    from conveyor.sources.flowfile import FlowFileSource

__all__ = ["BlobStorage"]


class BlobStorage(FileStorage):
    """Flows as objects ``<scheme>://<bucket>/<key>`` (see the module docstring)."""

    scheme: ClassVar[str]
    bucket_word: ClassVar[str] = "bucket"
    key_argument: ClassVar[str] = "key"
    uploads_scripts: ClassVar[bool] = True
    overwrite: bool = True

    def __init__(
        self,
        bucket: str,
        key: str | None = None,
        stored_as_script: bool = False,
        local_script_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(stored_as_script=stored_as_script, **kwargs)
        if not isinstance(bucket, str) or not bucket.strip() or "/" in bucket or ":" in bucket:
            raise ConfigError(
                f"{bucket!r} is not a valid {self.name} {self.bucket_word} name",
                hint=f"pass the {self.bucket_word}'s name only, e.g. {self.bucket_word}='flows'",
            )
        if key is not None and (not isinstance(key, str) or not key.strip("/")):
            raise ConfigError(f"{self.key_argument}={key!r} is not an object name")
        self.bucket = bucket.strip()
        self.key = key.strip("/") if key else None
        given = local_script_path or _loading_script()
        self.local_script_path = None if given is None else os.path.abspath(given)
        if self.result is None:
            self.result = self.default_result()

    # --- what subclasses say ---------------------------------------------------------------

    def default_result(self) -> Any:
        """The flow's default result beside the storage (None until the subclass says)."""
        return None

    def location_options(self) -> dict[str, Any]:
        """The fsspec settings a run reads the object with (stored: templates, never values)."""
        return {}

    def build_options(self) -> dict[str, Any]:
        """The fsspec settings `build` uploads with (only in memory; default: the stored ones)."""
        return self.location_options()

    def put_options(self) -> dict[str, Any]:
        """Extra arguments of the backend's put call (S3: ``upload_options``)."""
        return {}

    def prepare(self, current: Session) -> None:
        """Called once by `build` before anything is uploaded."""

    # --- building ----------------------------------------------------------------------------

    def url(self, location: str) -> str:
        return f"{self.scheme}://{self.bucket}/{location}"

    def put(self, url: str, data: bytes, current: Session) -> None:
        """Upload ``data`` as the object at ``url`` (``build_options``, ``put_options``)."""
        from conveyor.sources.blob.flowfile import write_url

        write_url(
            {"url": url, **self.build_options()},
            data,
            current.ctx,
            overwrite=self.overwrite,
            extra=self.put_options(),
        )

    def _location(self, flow: Flow[..., Any]) -> str:
        return self.key or default_location(flow.name)

    def script_path(self, flow_name: str) -> str | None:
        if not self.uploads_scripts:
            return None
        return self.local_script_path or local_script_path()

    def _build(self, current: Session) -> None:
        from conveyor.sources.flowfile import file_version

        self.prepare(current)
        for flow_name, location in list(self.flows.items()):
            if self.stored_as_script and self.script_path(flow_name) is None:
                if self.key is None:
                    raise ConfigError(
                        f"A `{self.key_argument}` must be provided to show where flow `.py` "
                        f"file is stored in {self.name} storage.",
                        hint=f"pass {self.key_argument}= (the object you uploaded)"
                        + (" or local_script_path=" if self.uploads_scripts else ""),
                    )
                continue  # the script is in the bucket already
            filename, data = self._payload(flow_name, current)
            _check_size(flow_name, filename, data)
            before = self._versions.get(flow_name)
            if self.key is None and before is not None and before != file_version(filename, data):
                location = default_location(flow_name)  # never rewrite a pinned object
                self.flows[flow_name] = location
            self.put(self.url(location), data, current)
            self._stored(flow_name, filename, data)

    # --- reading back --------------------------------------------------------------------------

    def flow_file(self, flow_name: str, location: str) -> FlowFileSource:
        from conveyor.sources.blob.flowfile import check_location
        from conveyor.sources.flowfile import FlowFileSource

        options = self.location_options()
        try:
            json.dumps(options)
        except (TypeError, ValueError):
            raise ConfigError(
                f"the options of this {self.name} storage cannot be stored (not JSON)",
                hint="pass plain values (strings, numbers, lists, dicts)",
            ) from None
        where = {"url": self.url(location), **options}
        check_location(where)
        if self.stored_as_script:
            script = self.script_path(flow_name)
            name = os.path.basename(script) if script else os.path.basename(location)
            if not name.endswith(".py"):
                name = f"{name}.py" if name else "flow.py"
            return FlowFileSource({"url": where}, filename=name)
        return FlowFileSource({"url": where}, filename=PICKLE_FILE, signed=True)


def _loading_script() -> str | None:
    return local_script_path()


def _check_size(flow_name: str, filename: str, data: bytes) -> None:
    """Refuse, before uploading, a flow file larger than a run may read back."""
    from conveyor.sources.blob.flowfile import MAX_FLOW_FILE_BYTES

    if len(data) <= MAX_FLOW_FILE_BYTES:
        return
    what = "pickles to" if filename == PICKLE_FILE else f"script {filename} is"
    raise ConfigError(
        f"flow {flow_name!r} {what} {len(data)} bytes, more than a flow file may be "
        f"({MAX_FLOW_FILE_BYTES}); nothing was uploaded",
        hint="keep large data out of the flow's module and its tasks' arguments: load it when "
        "the flow runs (from a file, a bucket or a result)",
    )

"""`BlobStorage`: what ``S3``, ``GCS`` and ``Azure`` share (each is a thin subclass).

```python
flow = Flow("s3-flow", storage=S3(bucket="my-bucket"))
flow.storage.build()      # s3://my-bucket/s3-flow/2024-05-01t10-11-12-123456-00-00
```

- the key of a flow is ``key``, or ``<flow slug>/<slugified UTC timestamp>``;
- pickle mode uploads the signed pickle; script mode uploads ``local_script_path`` (default: the
  script ``conveyor register --path`` is loading), and needs it or an explicit ``key`` (the file
  was put there by hand);
- the deployment's source is a `FlowFileSource` whose location is the object's URL plus the
  subclass's `location_options` (names of secrets and the like, never values), pinned to the
  digest of what was uploaded — a run reads the object from the bucket and refuses other bytes;
- the flow's default result is the subclass's `default_result` (``S3Result(bucket)``, beside it).

A subclass sets ``scheme`` and implements `put` (upload bytes to a URL, with the storage's
credentials) and, if it needs them, `location_options` and `default_result`. Reading back goes
through the ``url`` reader of `conveyor.sources.flowfile.READERS`, registered by the blob stores.
"""

from __future__ import annotations

import os
from abc import abstractmethod
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

    def __init__(
        self,
        bucket: str,
        key: str | None = None,
        stored_as_script: bool = False,
        local_script_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(stored_as_script=stored_as_script, **kwargs)
        if not isinstance(bucket, str) or not bucket or "/" in bucket:
            raise ConfigError(f"{bucket!r} is not a {self.name} bucket name")
        self.bucket = bucket
        self.key = key.strip("/") if key else None
        self.local_script_path = (
            None if local_script_path is None else os.path.abspath(local_script_path)
        )
        if self.result is None:
            self.result = self.default_result()

    def default_result(self) -> Any:
        """The flow's default result beside the storage (None until the subclass says)."""
        return None

    def location_options(self) -> dict[str, Any]:
        """What the reader needs besides the URL (secret *names*, client options)."""
        return {}

    @abstractmethod
    def put(self, url: str, data: bytes, current: Session) -> None:
        """Upload ``data`` as the object at ``url``."""

    def url(self, location: str) -> str:
        return f"{self.scheme}://{self.bucket}/{location}"

    def _location(self, flow: Flow[..., Any]) -> str:
        return self.key or default_location(flow.name)

    def script_path(self, flow_name: str) -> str | None:
        return self.local_script_path or local_script_path()

    def _build(self, current: Session) -> None:
        for flow_name, location in self.flows.items():
            if self.stored_as_script and self.script_path(flow_name) is None:
                if self.key is None:
                    raise ConfigError(
                        "A `key` must be provided to show where flow `.py` file is stored "
                        f"in {self.name} storage.",
                        hint="pass key= (the object you uploaded) or local_script_path=",
                    )
                continue  # the script is in the bucket already
            filename, data = self._payload(flow_name, current)
            self.put(self.url(location), data, current)
            self._stored(flow_name, filename, data)

    def flow_file(self, flow_name: str, location: str) -> FlowFileSource:
        from conveyor.sources.flowfile import FlowFileSource

        where = {"url": {"url": self.url(location), **self.location_options()}}
        if self.stored_as_script:
            script = self.script_path(flow_name)
            name = os.path.basename(script) if script else os.path.basename(location)
            if not name.endswith(".py"):
                name = f"{name}.py" if name else "flow.py"
            return FlowFileSource(where, filename=name)
        return FlowFileSource(where, filename=PICKLE_FILE, signed=True)

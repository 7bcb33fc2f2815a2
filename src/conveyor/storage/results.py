"""The first generation's result objects: where a flow's task results are persisted.

``Flow("x", result=LocalResult(dir="/data/results"))``, or the storage's default (`Local` gives
``LocalResult()``), makes a graph flow write each task's result through `Result.write` as it
finishes (`conveyor._graph`). The blob results (``S3Result``, ``GCSResult``, ``AzureResult``,
the defaults of the ``S3``, ``GCS`` and ``Azure`` storages) write
``<scheme>://<bucket>/results/<flow slug>/<task slug>-<UTC timestamp>.result`` through the blob
stores (`conveyor.sources.blob`), with the platform's credentials chain of the process that
writes (in a worker's run: the run's environment, where the storage's ``secrets`` are). As a
flow's ``result`` they also tell the worker where a run's pickled result goes
(``<bucket>/results/<run id>/result.pickle``, `to_spec`).

`LocalResult` writes ``<dir>/<flow slug>/<task slug>-<UTC timestamp>.result`` (cloudpickle,
written through a temporary file). Like Prefect 1, a directory inside the Conveyor home (the
default storage directory, say) means ``$CONVEYOR_HOME/results``, and no directory means that
too; the home is the one of the process that writes (a worker's, for a deployed run).

`Result.read` unpickles whatever is at the location it is given: a task result has no run record
to check it against (unlike a run's result, `conveyor.results.StoredResult`), so read only
locations that nobody you do not trust can write.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from conveyor.errors import ConfigError

__all__ = ["AzureResult", "GCSResult", "LocalResult", "Result", "S3Result"]


class Result:
    """Somewhere task results are written to (``write``) and read back from (``read``)."""

    def write(self, value: Any, *, key: str) -> str:
        """Persist ``value`` (``key``: ``flow/task``); its location."""
        raise NotImplementedError

    def read(self, location: str) -> Any:
        """The value written at ``location``."""
        raise NotImplementedError

    def exists(self, location: str) -> bool:
        raise NotImplementedError


def _home() -> Path:
    return Path(os.environ.get("CONVEYOR_HOME") or Path.home() / ".conveyor").expanduser()


class LocalResult(Result):
    """Results as files in ``dir`` (see the module docstring for the default)."""

    def __init__(
        self,
        dir: str | os.PathLike[str] | None = None,
        validate_dir: bool = True,
        location: str | None = None,
    ) -> None:
        self.dir = None if dir is None else os.path.abspath(os.path.expanduser(os.fspath(dir)))
        self.validate_dir = validate_dir
        self.location = location

    def __repr__(self) -> str:
        return f"LocalResult(dir={self.dir!r})"

    def directory(self) -> Path:
        """Where results go: ``dir``, or ``$CONVEYOR_HOME/results`` (see the module docstring)."""
        home = _home().absolute()
        if self.dir is None or Path(self.dir).is_relative_to(home):
            return home / "results"
        return Path(self.dir)

    def write(self, value: Any, *, key: str) -> str:
        import cloudpickle

        from conveyor._fs import atomic_write
        from conveyor.storage._session import slugify, timestamp_slug

        flow, _, task = key.rpartition("/")
        name = self.location.format(flow=flow, task=task) if self.location else None
        folder = self.directory() / slugify(flow or "flow")
        target = folder / (name or f"{slugify(task)}-{timestamp_slug()}.result")
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(target, mode=0o600) as out:
            out.write(cloudpickle.dumps(value))
        return str(target)

    def read(self, location: str) -> Any:
        import pickle

        with open(location, "rb") as stream:
            return pickle.load(stream)  # noqa: S301 - a result this machine wrote

    def exists(self, location: str) -> bool:
        return Path(location).is_file()


class BlobResult(Result):
    """Results as objects under ``<scheme>://<bucket>/results`` (see the module docstring)."""

    scheme: ClassVar[str]

    def __init__(self, bucket: str, *, location: str | None = None) -> None:
        if not isinstance(bucket, str) or not bucket.strip() or "/" in bucket:
            raise ConfigError(f"{bucket!r} is not a bucket or container name")
        self.bucket = bucket.strip()
        self.location = location

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.bucket!r})"

    @property
    def url(self) -> str:
        """Where results go: ``<scheme>://<bucket>/results``."""
        return f"{self.scheme}://{self.bucket}/results"

    def settings(self) -> dict[str, Any]:
        """fsspec settings that may be stored (templates, never secret values)."""
        return {}

    def options(self) -> dict[str, Any]:
        """fsspec settings for this process (default: the stored ones)."""
        return self.settings()

    def to_spec(self) -> dict[str, Any]:
        """Where the worker puts a run's pickled result (a blob block's spec)."""
        return {"kind": "blob", "url": self.url, **self.settings()}

    def _ctx(self) -> Any:
        from conveyor.sources.base import FetchContext

        return FetchContext(environ=dict(os.environ))

    def write(self, value: Any, *, key: str) -> str:
        import cloudpickle

        from conveyor.sources.blob.flowfile import write_url
        from conveyor.storage._session import slugify, timestamp_slug

        flow, _, task = key.rpartition("/")
        name = self.location.format(flow=flow, task=task) if self.location else None
        name = name or f"{slugify(flow or 'flow')}/{slugify(task)}-{timestamp_slug()}.result"
        target = f"{self.url}/{name.strip('/')}"
        write_url({"url": target, **self.options()}, cloudpickle.dumps(value), self._ctx())
        return target

    def read(self, location: str) -> Any:
        import pickle

        from conveyor.sources.blob.flowfile import read_url

        data = read_url({"url": location, **self.options()}, self._ctx(), limit=None)
        return pickle.loads(data)  # noqa: S301 - a result a run of this flow wrote

    def exists(self, location: str) -> bool:
        from conveyor.errors import SourceNotFound
        from conveyor.sources.blob.flowfile import read_url

        try:
            read_url({"url": location, **self.options()}, self._ctx(), limit=None)
        except SourceNotFound:
            return False
        return True


class S3Result(BlobResult):
    """Results in an S3 bucket; ``boto3_kwargs`` are the client's options (``endpoint_url``,
    ``region_name``; secrets only as ``${NAME}``)."""

    scheme = "s3"

    def __init__(
        self,
        bucket: str,
        boto3_kwargs: Mapping[str, Any] | None = None,
        *,
        location: str | None = None,
    ) -> None:
        super().__init__(bucket, location=location)
        self.boto3_kwargs = dict(boto3_kwargs or {})

    def settings(self) -> dict[str, Any]:
        return {"client_kwargs": dict(self.boto3_kwargs)} if self.boto3_kwargs else {}


class GCSResult(BlobResult):
    """Results in a Google Cloud Storage bucket."""

    scheme = "gs"

    def __init__(
        self, bucket: str, project: str | None = None, *, location: str | None = None
    ) -> None:
        super().__init__(bucket, location=location)
        self.project = project

    def settings(self) -> dict[str, Any]:
        return {"project": self.project} if self.project else {}


class AzureResult(BlobResult):
    """Results in an Azure Blob container. The connection string: ``connection_string`` (in
    this process only: it is dropped when the result is pickled with a flow), else the secret
    ``connection_string_secret`` (the environment, then the worker's store), else
    ``AZURE_STORAGE_CONNECTION_STRING``."""

    scheme = "az"

    def __init__(
        self,
        container: str,
        connection_string: str | None = None,
        connection_string_secret: str | None = None,
        *,
        location: str | None = None,
    ) -> None:
        from conveyor._names import check_secret_name
        from conveyor.secrets import Secret

        super().__init__(container, location=location)
        self.container = self.bucket
        self._literal = None if connection_string is None else Secret(str(connection_string))
        named = connection_string_secret
        self.connection_string_secret = None if named is None else check_secret_name(named)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_literal"] = None  # a secret value never travels with a pickled flow
        return state

    def settings(self) -> dict[str, Any]:
        name = self.connection_string_secret
        return {"connection_string": "${" + name + "}"} if name else {}

    def options(self) -> dict[str, Any]:
        if self._literal is not None:
            return {"connection_string": self._literal}
        name = self.connection_string_secret
        if name and os.environ.get(name):
            return self.settings()
        return {}  # AZURE_STORAGE_CONNECTION_STRING (the run's environment)

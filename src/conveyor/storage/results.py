"""The first generation's result objects: where a flow's task results are persisted.

``Flow("x", result=LocalResult(dir="/data/results"))``, or the storage's default (`Local` gives
``LocalResult()``), makes a graph flow write each task's result through `Result.write` as it
finishes (`conveyor._graph`). The blob results (``S3Result``, ``GCSResult``, ``AzureResult``)
come with the blob storages.

`LocalResult` writes ``<dir>/<flow slug>/<task slug>-<UTC timestamp>.result`` (cloudpickle,
written through a temporary file). Like Prefect 1, a directory inside the Conveyor home (the
default storage directory, say) means ``$CONVEYOR_HOME/results``, and no directory means that
too; the home is the one of the process that writes (a worker's, for a deployed run).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["LocalResult", "Result"]


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

"""`Local`: flows kept as files on this machine (the default storage).

```python
flow = Flow("local-flow", storage=Local())
flow.storage.build()     # ~/.conveyor/flows/local-flow/2024-05-01t10-11-12-123456-00-00
```

- pickle mode (default): `build` writes the flow's signed pickle to ``path``, or to
  ``<directory>/<flow slug>/<slugified UTC timestamp>`` (``directory`` defaults to
  ``$CONVEYOR_HOME/flows``). A rebuild whose bytes differ gets a new timestamp instead of
  rewriting a file a deployment may pin (an explicit ``path`` is rewritten: the user chose it);
- script mode (``stored_as_script=True``): ``path`` is the ``.py`` file, read where it is
  (``conveyor register --path flows.py`` gives flows without storage ``Local(path=...,
  stored_as_script=True)``);
- a location that is not a file is a module path (``pkg.flows``), imported.

Flows registered with it get the host's name as a label (``add_default_labels=False`` turns it
off), so only workers on this machine — which carry their host name as a label — claim them;
their default result is a `LocalResult`, under ``$CONVEYOR_HOME/results``.

Unlike the first generation, nothing is written when a flow is added (the pickle is made by
`build`, so a ``with Flow(...)`` block is complete first) and the constructor creates no
directory.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConfigError
from conveyor.storage._session import Session, default_location
from conveyor.storage.base import PICKLE_FILE, FileStorage

if TYPE_CHECKING:
    from conveyor.flows import Flow
    from conveyor.sources.base import Source
    from conveyor.sources.flowfile import FlowFileSource

__all__ = ["Local"]


class Local(FileStorage):
    """Flows as files on this machine (see the module docstring)."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        validate: bool = True,
        path: str | os.PathLike[str] | None = None,
        stored_as_script: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(stored_as_script=stored_as_script, **kwargs)
        self.validate = bool(validate)
        self.directory = (
            None
            if directory is None
            else (_absolute(directory) if self.validate else os.fspath(directory))
        )
        self.path = None if path is None else _absolute(path)
        if self.result is None:
            from conveyor.storage.results import LocalResult

            self.result = LocalResult(dir=self.directory, validate_dir=self.validate)

    @property
    def default_labels(self) -> list[str]:
        return [socket.gethostname()]

    def _location(self, flow: Flow[..., Any]) -> str:
        if self.stored_as_script:
            if self.path is None:
                raise ConfigError(
                    "A `path` must be provided to show where flow `.py` file is stored.",
                    hint="Local(path='flows.py', stored_as_script=True)",
                )
            return self.path
        return self.path or default_location(flow.name)  # made absolute by build

    def script_path(self, flow_name: str) -> str | None:
        return self.flows.get(flow_name) if self.stored_as_script else None

    def _build(self, current: Session) -> None:
        home = Path(self.directory) if self.directory else current.settings.home / "flows"
        for flow_name, location in list(self.flows.items()):
            if self.stored_as_script:
                if not Path(location).is_file():
                    raise ConfigError(f"flow script {location} does not exist")
                filename, data = self._payload(flow_name, current)
                self._stored(flow_name, filename, data)
                continue
            filename, data = self._payload(flow_name, current)
            target = Path(location) if os.path.isabs(location) else home / location
            if self.path is None and target.is_file() and target.read_bytes() != data:
                target = home / default_location(flow_name)  # never rewrite a pinned file
            target.parent.mkdir(parents=True, exist_ok=True)
            from conveyor._fs import atomic_write

            with atomic_write(target, mode=0o644) as out:
                out.write(data)
            self.flows[flow_name] = str(target)
            self._stored(flow_name, filename, data)

    def flow_file(self, flow_name: str, location: str) -> FlowFileSource:
        from conveyor.sources.flowfile import FlowFileSource

        if not os.path.isabs(location):
            raise ConfigError(
                f"flow {flow_name!r} of this Local storage has not been built",
                hint="call storage.build() (or flow.register()) first",
            )
        if self.stored_as_script:
            return FlowFileSource({"path": location}, filename=os.path.basename(location))
        return FlowFileSource({"path": location}, filename=PICKLE_FILE, signed=True)

    def _load(self, flow_name: str, location: str, current: Session) -> Flow[..., Any]:
        if os.path.isabs(location) and Path(location).is_file():
            if self.stored_as_script:
                from conveyor.storage._serialize import extract_flow_from_file

                return extract_flow_from_file(file_path=location, flow_name=flow_name)
            return super()._load(flow_name, location, current)
        if _is_module(location):
            from conveyor.storage._serialize import extract_flow_from_module

            return extract_flow_from_module(location, flow_name)
        return super()._load(flow_name, location, current)  # says what is missing

    def deployment_source(
        self, flow_name: str, *, attribute: str, current: Session
    ) -> tuple[Source, str]:
        location = self._check_contained(flow_name)
        if not os.path.isabs(location) and _is_module(location):
            from conveyor.sources.module import ModuleSource
            from conveyor.storage._serialize import module_entrypoint

            entrypoint = module_entrypoint(location, flow_name)
            return ModuleSource(entrypoint.partition(":")[0]), entrypoint
        return super().deployment_source(flow_name, attribute=attribute, current=current)


def _absolute(path: str | os.PathLike[str]) -> str:
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def _is_module(location: str) -> bool:
    module = location.partition(":")[0]
    return bool(module) and all(part.isidentifier() for part in module.split("."))

"""`Storage`: the first generation's storage object, over `conveyor.sources`.

A storage is a named mapping ``flows`` (flow name → location) plus the flows themselves.
``Flow("x", storage=s)`` (or ``flow.storage = s``) adds a flow (`add_flow`: a name already there
is a name conflict); `build` stores what has to be stored (a signed pickle, a script) and
returns the storage; `get_flow` loads a flow back, runnable; ``name in storage`` asks by name.
``flow.register()`` (`conveyor.storage.register_flow`) builds, then asks the storage for the
*source* and entrypoint of a flow (`deployment_source`) and deploys that through the one deploy
path (`conveyor.deploy`): resolve → preflight → put. The source pins what was built: a git
commit, or the content digest of the stored file (`conveyor.sources.flowfile.FlowFileSource`).

Common arguments: ``result`` (the flow's default result when it has none), ``secrets`` (secret
*names* resolved on the worker at run time, environment first then the server's store, and given
to the run as environment variables: only the names are stored), ``labels`` and
``add_default_labels`` (`labels` = the given ones plus `default_labels` when on; only `Local` has
any: the host name), ``stored_as_script``.

`FileStorage` is the shared base of the storages that keep one file per flow (Local, Webhook,
and the blob stores): pickle mode writes ``flow.pickle`` (a signed envelope), script mode the
``.py`` file, and a flow's deployment reads that file back from the storage itself.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

from conveyor._context import is_loading
from conveyor._names import check_labels, check_secret_names, closest_name
from conveyor.errors import ConfigError
from conveyor.storage._session import Session, session

if TYPE_CHECKING:
    from conveyor.client import ConveyorClient
    from conveyor.flows import Flow
    from conveyor.settings import Settings
    from conveyor.sources.base import Source
    from conveyor.sources.flowfile import FlowFileSource

__all__ = ["PICKLE_FILE", "FileStorage", "Storage"]

logger = logging.getLogger(__name__)

PICKLE_FILE = "flow.pickle"
"""The name of a pickled flow in the tree a worker checks out (its entrypoint)."""


class Storage(ABC):
    """Base of every first-generation storage (see the module docstring)."""

    scripts_only: ClassVar[bool] = False

    def __init__(
        self,
        result: Any = None,
        secrets: list[str] | None = None,
        labels: list[str] | None = None,
        add_default_labels: bool | None = None,
        stored_as_script: bool = False,
        **unknown: Any,
    ) -> None:
        if unknown:
            raise _unknown_argument(type(self), sorted(unknown)[0])
        self.result = result
        self.secrets = check_secret_names(secrets)
        self._labels = check_labels(labels)
        self.add_default_labels = True if add_default_labels is None else bool(add_default_labels)
        self.stored_as_script = True if self.scripts_only else bool(stored_as_script)
        self.flows: dict[str, str] = {}
        self._flows: dict[str, Flow[..., Any]] = {}

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def default_labels(self) -> list[str]:
        """Labels every flow of this storage gets (none here; `Local`: the host name)."""
        return []

    @property
    def labels(self) -> list[str]:
        """The given labels, plus `default_labels` when ``add_default_labels`` (sorted, once)."""
        extra = self.default_labels if self.add_default_labels else []
        return sorted(set(self._labels) | set(extra))

    def __contains__(self, obj: object) -> bool:
        """True for the *name* of a flow in this storage (a `Flow` object is never "in" it)."""
        return isinstance(obj, str) and obj in self.flows

    def __repr__(self) -> str:
        return f"<{self.name} storage: {sorted(self.flows)}>"

    # --- adding, building, loading ------------------------------------------------------------

    def add_flow(self, flow: Flow[..., Any]) -> str:
        """Add ``flow``; its location. A flow of the same name already here is a conflict."""
        if flow.name in self.flows:
            raise ConfigError(
                f'name conflict: flow "{flow.name}" is already present in this storage',
                hint="give the flow another name, or put it in another storage object",
            )
        location = self._location(flow)
        self.flows[flow.name] = location
        self._flows[flow.name] = flow
        return location

    def _check_contained(self, flow_name: str) -> str:
        if flow_name not in self.flows:
            held = ", ".join(sorted(self.flows)) or "no flows"
            raise ConfigError(
                f"flow {flow_name!r} is not contained in this {self.name} storage (it holds: "
                f"{held})",
                hint="add it first: Flow(name, storage=...) or storage.add_flow(flow)",
            )
        return self.flows[flow_name]

    def build(
        self, *, settings: Settings | None = None, client: ConveyorClient | None = None
    ) -> Self:
        """Store every flow of this storage as it needs to be stored; returns the storage.

        Does nothing while a flow file is being loaded (`conveyor._context.loading`).
        """
        if is_loading():
            logger.debug("storage build skipped while loading flows storage=%s", self.name)
            return self
        with session(settings, client) as current:
            self._build(current)
        return self

    def get_flow(
        self,
        flow_name: str,
        *,
        settings: Settings | None = None,
        client: ConveyorClient | None = None,
    ) -> Flow[..., Any]:
        """The flow ``flow_name`` loaded back from where `build` put it, runnable."""
        location = self._check_contained(flow_name)
        with session(settings, client) as current:
            return self._load(flow_name, location, current)

    # --- for subclasses --------------------------------------------------------------------------

    @abstractmethod
    def _location(self, flow: Flow[..., Any]) -> str:
        """Where ``flow`` goes (checked when it is added)."""

    def _build(self, current: Session) -> None:  # noqa: B027 - script storages store nothing
        """Store the flows (default: nothing; the user pushes scripts)."""

    @abstractmethod
    def _load(self, flow_name: str, location: str, current: Session) -> Flow[..., Any]:
        """Load ``flow_name`` from ``location``."""

    @abstractmethod
    def deployment_source(
        self, flow_name: str, *, attribute: str, current: Session
    ) -> tuple[Source, str]:
        """The source a deployment of ``flow_name`` fetches, and its entrypoint in that source
        (``attribute``: the flow's top-level name in its script)."""

    def built_version(self, flow_name: str) -> str | None:
        """The content digest `build` stored for ``flow_name`` (None: not a file storage)."""
        return None

    def run_env(self) -> dict[str, str]:
        """Environment every run gets, as templates resolved on the worker: each secret name
        as ``${NAME}`` (only the names are stored)."""
        return {name: "${" + name + "}" for name in self.secrets}

    def run_job_variables(self, flow_name: str) -> dict[str, Any]:
        """Job variables of ``flow_name``'s runs besides ``env`` and labels (`Docker`: the
        image); a run config or environment overrides them."""
        return {}


class FileStorage(Storage):
    """A storage that keeps one file per flow: a signed pickle, or the script (script mode)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._versions: dict[str, str] = {}

    def script_path(self, flow_name: str) -> str | None:
        """The local ``.py`` file script mode stores for ``flow_name`` (None: not known)."""
        return None

    def _payload(self, flow_name: str, current: Session) -> tuple[str, bytes]:
        """``(filename in the tree, bytes)`` to store for ``flow_name``."""
        if self.stored_as_script:
            script = self.script_path(flow_name)
            if script is None:
                raise ConfigError(
                    f"{self.name} storage in script mode needs the flow's .py file",
                    hint="pass its path (path=, local_script_path= or flow_script_path=)",
                )
            try:
                return os.path.basename(script), Path(script).read_bytes()
            except OSError as exc:
                raise ConfigError(
                    f"flow script {script} cannot be read: {exc.strerror or exc}",
                    hint="give the path of the flow's .py file",
                ) from None
        from conveyor.sources.pickled import signing_key
        from conveyor.storage._serialize import pickle_flow

        flow = self._flows.get(flow_name)
        if flow is None:
            raise ConfigError(
                f"flow {flow_name!r} of this {self.name} storage is not in this process",
                hint="build the storage in the process that defines the flow",
            )
        return PICKLE_FILE, pickle_flow(flow, signing_key(current.client), result=self.result)

    def _stored(self, flow_name: str, filename: str, data: bytes) -> None:
        from conveyor.sources.flowfile import file_version

        self._versions[flow_name] = file_version(filename, data)

    def built_version(self, flow_name: str) -> str | None:
        return self._versions.get(flow_name)

    @abstractmethod
    def flow_file(self, flow_name: str, location: str) -> FlowFileSource:
        """The source reading back what `build` stored for ``flow_name`` at ``location``."""

    def _load(self, flow_name: str, location: str, current: Session) -> Flow[..., Any]:
        from conveyor.storage._serialize import extract_flow_from_file, flow_from_pickle

        source = self.flow_file(flow_name, location)
        data = source.read(current.ctx)
        if source.signed:
            return flow_from_pickle(data, store=current.client, where=source.shown)
        return extract_flow_from_file(file_contents=data, flow_name=flow_name)

    def deployment_source(
        self, flow_name: str, *, attribute: str, current: Session
    ) -> tuple[Source, str]:
        source = self.flow_file(flow_name, self._check_contained(flow_name))
        if source.signed:
            return source, PICKLE_FILE
        return source, f"{source.filename}:{attribute}"


def _unknown_argument(cls: type[Storage], name: str) -> ConfigError:
    """A one-line error for a keyword no ``__init__`` of ``cls`` takes, with the ones they do
    (``S3(bucket="b", boto3_kwargs=...)``: Python would name ``Storage.__init__()``)."""
    import inspect

    taken: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for parameter in inspect.signature(init).parameters.values():
            if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
                taken.add(parameter.name)
    taken.discard("self")
    close = closest_name(name, sorted(taken))
    return ConfigError(
        f"{cls.__name__} storage does not take {name}="
        + (f" (did you mean {close}=?)" if close else ""),
        hint=f"{cls.__name__} takes: {', '.join(sorted(taken))}",
    )

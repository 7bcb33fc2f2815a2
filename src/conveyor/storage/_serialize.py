"""Flows to bytes and back, the first generation's two ways.

- pickle mode: `pickle_flow` (a signed envelope, `conveyor.sources.pickled`) and `flow_from_pickle`
  (the signature and versions checked before anything is unpickled);
- script mode: `extract_flow_from_file` (run a ``.py`` file, pick a flow by name) and
  `extract_flow_from_module` (import ``pkg.mod`` or ``pkg.mod:attr``), as Prefect 1 did; and
  `flow_attribute`, the module-level name that holds a flow, for a deployment's entrypoint.

Scripts are run under `conveyor._context.loading`: their module-level ``flow.register()`` and
``storage.build()`` do nothing.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import sys
import types
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor._context import loading
from conveyor._loading import a_kind
from conveyor.errors import ConfigError, FlowLoadError
from conveyor.flows import Flow

if TYPE_CHECKING:
    from conveyor.secrets import SecretStore
    from conveyor.sources.pickled import SigningKey

__all__ = [
    "extract_flow_from_file",
    "extract_flow_from_module",
    "flow_attribute",
    "flow_from_pickle",
    "module_entrypoint",
    "pickle_flow",
]


def pickle_flow(flow: Flow[..., Any], key: SigningKey, *, result: Any = None) -> bytes:
    """The signed envelope of ``flow`` (its storage and import scope left out). ``result``:
    the result the flow gets when it has none (its storage's, as registration gives it), so
    ``storage.build()`` and the ``flow.register()`` after it store the same bytes."""
    from conveyor._graph import Graph
    from conveyor.sources.pickled import dump_flow

    bare = copy.copy(flow)
    bare._opts = replace(flow._opts, storage=None)
    bare._scope = None
    if result is not None and flow.result_storage is None:
        bare._opts = replace(bare._opts, result_storage=result)
        if isinstance(flow._fn, Graph):  # what the flow's result setter does, on a copy
            graph = copy.copy(flow._fn)
            graph.result = result
            bare._fn = bare.__wrapped__ = graph
    return dump_flow(bare, key)


def flow_from_pickle(data: bytes, *, store: SecretStore | None, where: str) -> Flow[..., Any]:
    """The flow in a signed envelope, checked with the server's key before it is unpickled."""
    from conveyor.sources.pickled import unpickle_flow

    found = unpickle_flow(data, where=where, store=store)
    if not isinstance(found, Flow):
        raise FlowLoadError(f"{where} holds {a_kind(found)}, not a flow")
    return found


def _flows(namespace: Mapping[str, Any]) -> dict[str, Flow[..., Any]]:
    found: dict[str, Flow[..., Any]] = {}
    for value in namespace.values():
        if isinstance(value, Flow):
            found.setdefault(value.name, value)
    return found


def _pick(found: Mapping[str, Flow[..., Any]], flow_name: str | None, where: str) -> Any:
    if not found:
        raise FlowLoadError(f"no flows found in {where}")
    if flow_name is None:
        return next(iter(found.values()))
    if flow_name not in found:
        names = "".join(f"\n- {name}" for name in found)
        raise FlowLoadError(
            f"flow {flow_name!r} not found in {where}. Found flows:{names}",
            hint="the storage names flows by Flow.name",
        )
    return found[flow_name]


def extract_flow_from_file(
    file_path: str | Path | None = None,
    file_contents: str | bytes | None = None,
    flow_name: str | None = None,
) -> Flow[..., Any]:
    """Run a flow script (from a path, or its contents) and return the flow named ``flow_name``
    (the first one when None). A path's directory is first on ``sys.path`` while it runs."""
    if (file_path is None) == (file_contents is None):
        raise ConfigError("give exactly one of file_path and file_contents")
    if file_contents is not None and not isinstance(file_contents, str | bytes):
        raise ConfigError("file_contents must be str or bytes")
    if file_path is not None:
        path = Path(file_path).resolve()
        try:
            source: str | bytes = path.read_bytes()
        except OSError as exc:
            raise FlowLoadError(f"flow file {path} cannot be read: {exc.strerror or exc}") from None
        where, directory = str(path), str(path.parent)
    else:
        assert file_contents is not None
        source, where, directory = file_contents, "<stored flow script>", ""
    digest = hashlib.sha256(source if isinstance(source, bytes) else source.encode()).hexdigest()
    module = types.ModuleType(f"conveyor_script_{digest[:16]}")
    module.__file__ = where
    added = bool(directory) and directory not in sys.path
    if added:
        sys.path.insert(0, directory)
    sys.modules[module.__name__] = module
    try:
        with loading():
            exec(compile(source, where, "exec"), module.__dict__)  # noqa: S102 - the user's flow
    except BaseException as exc:
        sys.modules.pop(module.__name__, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise FlowLoadError(
            f"could not run {where}: {type(exc).__name__}: {exc}",
            hint="run the script with python to see the traceback",
        ) from exc
    finally:
        if added and directory in sys.path:
            sys.path.remove(directory)
    return _pick(_flows(vars(module)), flow_name, where)  # type: ignore[no-any-return]


def extract_flow_from_module(module_str: str, flow_name: str | None = None) -> Flow[..., Any]:
    """The flow in ``pkg.mod:attr`` (a callable attribute is called) or, without ``:attr``, the
    one flow of ``pkg.mod`` (or the one named ``flow_name``)."""
    name, _, attribute = module_str.partition(":")
    with loading():
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise FlowLoadError(
                f"module {name!r} cannot be imported: {exc}",
                hint="the module must be installed where the flow is loaded",
            ) from exc
    if attribute:
        value: Any = module
        for part in attribute.split("."):
            value = getattr(value, part, None)
        if callable(value) and not isinstance(value, Flow):
            value = value()
        if not isinstance(value, Flow):
            raise FlowLoadError(f"{module_str} is {a_kind(value)}, not a flow")
        if flow_name is not None and value.name != flow_name:
            raise FlowLoadError(f"{module_str} is flow {value.name!r}, not {flow_name!r}")
        return value
    found = _flows(vars(module))
    if flow_name is None and len(found) != 1:
        raise FlowLoadError(
            f"module {name} holds {len(found)} flows: {', '.join(found) or 'none'}",
            hint="name one: 'pkg.mod:attribute', or pass the flow's name",
        )
    return _pick(found, flow_name, f"module {name}")  # type: ignore[no-any-return]


def module_entrypoint(module_str: str, flow_name: str) -> str:
    """``pkg.mod:attr`` for flow ``flow_name`` in ``pkg.mod`` (or ``pkg.mod:attr`` as given)."""
    name, _, attribute = module_str.partition(":")
    if attribute:
        return module_str
    found = extract_flow_from_module(name, flow_name)
    return f"{name}:{flow_attribute(found, vars(importlib.import_module(name)))}"


def flow_attribute(flow: Flow[..., Any], namespace: Mapping[str, Any] | None = None) -> str:
    """The top-level name under which ``flow`` is defined (for ``file.py:name`` entrypoints)."""
    if namespace is None:
        module = sys.modules.get(getattr(flow, "__module__", "") or "")
        namespace = vars(module) if module is not None else {}
    for key, value in namespace.items():
        if value is flow and key.isidentifier():
            return key
    for key, value in namespace.items():
        if isinstance(value, Flow) and value.name == flow.name and key.isidentifier():
            return key
    from conveyor._graph import Graph

    qualname = getattr(flow.fn, "__qualname__", "")
    if not isinstance(flow.fn, Graph) and isinstance(qualname, str) and qualname.isidentifier():
        return qualname  # a decorated function: its own name, at the top level
    raise ConfigError(
        f"cannot tell which top-level name holds flow {flow.name!r}",
        hint="define it at the top level of its file (flow = Flow(...) or @flow def ...)",
    )

"""Loading a flow from an entrypoint, keeping each code tree's modules apart.

Entrypoints (`Entrypoint.parse`):

- ``path/to/file.py:func`` and ``path/to/file.py:Class.method`` (relative to ``root``, or absolute);
- ``package.module:func`` (imported with ``root`` first on ``sys.path``);
- ``path/to/flow.pickle``: a flow pickled by a first-generation storage, in its signed envelope
  (`conveyor.sources.pickled`). The signature was checked when the file was fetched into the
  verified tree it is loaded from; here the envelope's form and versions are checked before it
  is unpickled.

While a module is imported, `conveyor._context.loading` is set: module-level ``flow.register()``
and ``storage.build()`` calls do nothing.

**Isolation.** A file is imported under a name unique to its absolute path
(``conveyor_flow_<hash>``), with its directory and ``root`` first on ``sys.path`` so sibling
modules import (``from helpers import x``). Afterwards, the modules that came from those
directories are taken out of ``sys.modules`` (and anything they shadowed is put back) and kept by
an `ImportScope`, which the loaded flow re-enters around each call, so imports inside the flow
function still find its siblings. Two checkouts of the same project therefore load side by side
in one process without mixing their ``helpers``. The scope changes process-wide state
(``sys.path``, ``sys.modules``) while it is entered: calls of flows from different trees on
different threads at the same time are not isolated from each other (a worker runs each run in
its own process). Standard-library names and ``conveyor`` itself are never shadowed.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
import sysconfig
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

from conveyor._context import loading
from conveyor._names import closest_name
from conveyor.errors import FlowLoadError
from conveyor.flows import Flow, Task

__all__ = ["Entrypoint", "ImportScope", "a_kind", "load_flow"]

_FORMS_HINT = (
    "write path/to/file.py:function (or file.py:Class.method), package.module:function "
    "or path/to/flow.pickle"
)
PICKLE_SUFFIX = ".pickle"
_NEVER_SHADOW = frozenset(sys.stdlib_module_names) | {"conveyor", "__main__"}
_lock = threading.RLock()


@dataclass(frozen=True)
class Entrypoint:
    """A parsed entrypoint: a file path or a module name, and an attribute path in it."""

    attribute: str
    path: str | None = None
    module: str | None = None
    pickled: bool = False
    """``path`` is a pickled flow (``flow.pickle``): no attribute."""

    @classmethod
    def parse(cls, text: str) -> Entrypoint:
        stripped = text.strip()
        if stripped.endswith(PICKLE_SUFFIX) and ":" not in stripped:
            return cls(attribute="", path=stripped, pickled=True)
        where, colon, attribute = stripped.rpartition(":")
        if not colon or not where or not _dotted(attribute):
            raise FlowLoadError(f"entrypoint {text!r} is not valid", hint=_FORMS_HINT)
        if where.endswith(".py"):
            return cls(attribute=attribute, path=where)
        if not _dotted(where):
            raise FlowLoadError(f"entrypoint {text!r} is not valid", hint=_FORMS_HINT)
        return cls(attribute=attribute, module=where)

    def __str__(self) -> str:
        if self.pickled:
            return str(self.path)
        return f"{self.path or self.module}:{self.attribute}"


def _dotted(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def load_flow(
    entrypoint: str, *, root: Path | str | None = None, isolate: bool = True
) -> Flow[..., Any]:
    """The flow at ``entrypoint``, relative to ``root`` (default: the working directory).

    With ``isolate=False`` (one flow per process, as in a worker's child) the directories stay
    on ``sys.path`` and the modules stay in ``sys.modules``: nothing is scoped around calls.
    """
    entry = Entrypoint.parse(entrypoint)
    base = Path(root if root is not None else Path.cwd()).absolute()
    if entry.pickled:
        assert entry.path is not None
        return _load_pickle((base / entry.path).resolve(), base)
    if entry.path is not None:
        file = (base / entry.path).resolve()
        if not file.is_file():
            raise FlowLoadError(f"flow file {file} does not exist", hint=_missing_hint(file, base))
        name = "conveyor_flow_" + hashlib.sha256(str(file).encode()).hexdigest()[:16]
        scope = ImportScope((file.parent, base), keep=(name,), persist=not isolate)
        where = _shown(file, base)
        module = _import_file(file, name, scope, where=where, base=base, flow=entry.attribute)
    else:
        assert entry.module is not None
        scope = ImportScope((base,), persist=not isolate)
        where = entry.module
        module = _import_module(entry.module, scope, base=base)
    found = _lookup(module, entry.attribute, where=where)
    return found._with_scope(scope) if isolate else found


# --- importing ----------------------------------------------------------------------------------


def _import_file(
    file: Path, name: str, scope: ImportScope, *, where: str, base: Path, flow: str = "FLOW"
) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has a loader
        raise FlowLoadError(f"cannot import {where}", hint="is it a Python file?")
    module = importlib.util.module_from_spec(spec)
    try:
        with scope, loading():
            sys.modules[name] = module
            spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        raise _import_error(exc, where=where, scope=scope, base=base, flow=flow) from exc
    return module


def _import_module(name: str, scope: ImportScope, *, base: Path) -> ModuleType:
    try:
        with scope, loading():
            return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise FlowLoadError(
                f"module {name!r} was not found in {base} or in the installed packages",
                hint=f"check the module path; {_FORMS_HINT}",
            ) from exc
        raise _import_error(exc, where=name, scope=scope, base=base) from exc
    except BaseException as exc:
        raise _import_error(exc, where=name, scope=scope, base=base) from exc


def _import_error(
    exc: BaseException, *, where: str, scope: ImportScope, base: Path, flow: str = "FLOW"
) -> BaseException:
    if isinstance(exc, KeyboardInterrupt | FlowLoadError):
        return exc
    if isinstance(exc, SyntaxError):
        file = Path(exc.filename).resolve() if exc.filename else None
        shown = _shown(file, base) if file else where
        text = f"syntax error in {shown}, line {exc.lineno}: {exc.msg}"
        if shown != where:
            text = f"could not import {where}: {text}"
        return FlowLoadError(text, hint="fix the code and deploy again")
    frame = _user_frame(exc.__traceback__, scope, base)
    at = f" ({frame})" if frame else ""
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return FlowLoadError(
            f"could not import {where}: no module named {exc.name!r}{at}",
            hint="install it where the flow runs (requirements, image), or add it to the project",
        )
    if isinstance(exc, ImportError) and "no known parent package" in str(exc):
        # a file of a package that imports relatively (from .helpers import x)
        module = where.removesuffix(".py").replace("/", ".")
        return FlowLoadError(
            f"could not import {where}: {exc}{at}",
            hint=f"a relative import needs its package: name the flow by module, {module}:{flow}",
        )
    if isinstance(exc, ImportError):
        return FlowLoadError(
            f"could not import {where}: {exc}{at}",
            hint="check the names imported and that the sibling modules are in the project",
        )
    if isinstance(exc, SystemExit):
        return FlowLoadError(
            f"could not import {where}: it called sys.exit() while being imported{at}",
            hint="guard script code with `if __name__ == '__main__':`",
        )
    return FlowLoadError(
        f"could not import {where}: {type(exc).__name__}: {exc}{at}",
        hint="the module raised while being imported; run it with python to see the traceback",
    )


def _user_frame(tb: TracebackType | None, scope: ImportScope, base: Path) -> str:
    """``file, line N`` of the innermost traceback frame in the flow's own code."""
    for summary in reversed(traceback.extract_tb(tb)):
        file = Path(summary.filename)
        if file.is_absolute() and scope.owns_file(file):
            return f"{_shown(file.resolve(), base)}, line {summary.lineno}"
    return ""


def _shown(file: Path, base: Path) -> str:
    for parent in (base, base.resolve()):
        if file.is_relative_to(parent):
            return file.relative_to(parent).as_posix()
    return str(file)


def _missing_hint(file: Path, base: Path) -> str:
    folder = file.parent
    if folder.is_dir():
        names = sorted(p.name for p in folder.glob("*.py"))
        close = closest_name(file.name, names)
        if close:
            return f"did you mean {_shown(folder / close, base)}?"
    return f"the path is relative to {base}"


def _load_pickle(file: Path, base: Path) -> Flow[..., Any]:
    """The flow pickled in ``file`` (a verified checkout's copy: see the module docstring)."""
    from conveyor.sources.pickled import unpickle_flow

    if not file.is_file():
        raise FlowLoadError(f"flow file {file} does not exist", hint=_missing_hint(file, base))
    found = unpickle_flow(file.read_bytes(), where=_shown(file, base), verified=True)
    if not isinstance(found, Flow):
        raise FlowLoadError(
            f"{_shown(file, base)} holds {a_kind(found)}, not a flow",
            hint="pickle files are written by the first-generation storages (flow.register())",
        )
    return found


# --- finding the flow ---------------------------------------------------------------------------


def _lookup(module: ModuleType, attribute: str, *, where: str) -> Flow[..., Any]:
    found: Any = module
    owner: Any = None
    part = ""
    for part in attribute.split("."):
        owner = found
        try:
            found = getattr(found, part)
        except AttributeError:
            raise FlowLoadError(
                f"{where} does not define {attribute!r}", hint=_defined_hint(module)
            ) from None
    if isinstance(found, Flow):
        if isinstance(owner, type) and _instance_method(inspect.getattr_static(owner, part, None)):
            raise FlowLoadError(
                f"{where}:{attribute} is an instance method: a flow must be a function, "
                "a staticmethod or a classmethod",
                hint="put @staticmethod or @classmethod above @flow, or move the flow out of "
                "the class (a run has no instance to call it on)",
            )
        return found
    # a flow wrapped in a classmethod on Python versions where classmethod does not chain __get__
    inner = getattr(found, "__func__", None)
    owner = getattr(found, "__self__", None)
    if isinstance(inner, Flow) and owner is not None:
        bound: Flow[..., Any] = inner.__get__(owner, type(owner))
        return bound
    if isinstance(found, Task):
        raise FlowLoadError(
            f"{attribute!r} in {where} is a task, not a flow",
            hint="call the task from a @flow and point the entrypoint at that flow",
        )
    raise FlowLoadError(
        f"{attribute!r} in {where} is {a_kind(found)}, not a flow",
        hint="decorate it with @flow (from conveyor import flow)",
    )


def _instance_method(member: Any) -> bool:
    """Whether a class attribute (as stored, not through the descriptor protocol) is a flow
    defined in a class body as a plain method, which needs an instance to be called on (a
    function assigned in the body, or a flow wrapped in a staticmethod or a classmethod, does
    not)."""
    fn = member.fn if isinstance(member, Flow) else None
    if not inspect.isfunction(fn):
        return False
    defined_in = fn.__qualname__.rpartition(".")[0]
    return bool(defined_in) and not defined_in.endswith("<locals>")


def a_kind(value: object) -> str:
    """What ``value`` is, with its article, for a message: ``an int``, ``a str``, ``a class``."""
    kind = "class" if isinstance(value, type) else type(value).__name__
    return f"{'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind}"


def _defined_hint(module: ModuleType) -> str:
    names = _flows_in(module)
    if names:
        return "it defines: " + ", ".join(names)
    return "it defines no flows; decorate a function with @flow (from conveyor import flow)"


def _flows_in(module: ModuleType) -> list[str]:
    names: list[str] = []
    for name, value in sorted(vars(module).items()):
        if isinstance(value, Flow):
            names.append(name)
        elif isinstance(value, type) and value.__module__ == module.__name__:
            for attr, member in sorted(vars(value).items()):
                target = getattr(member, "__func__", member)  # staticmethod / classmethod
                if isinstance(target, Flow) and not _instance_method(member):
                    names.append(f"{name}.{attr}")
    return names


# --- the import scope ---------------------------------------------------------------------------


class ImportScope:
    """``sys.path`` entries, and the modules imported from them, kept out of ``sys.modules``
    between uses. Re-entrant; entering it shadows modules of the same names from elsewhere.

    ``keep``: module names left in ``sys.modules`` on exit (the uniquely named entry module, so
    its classes pickle and its source is found). ``persist``: leave everything in place on exit.
    """

    def __init__(
        self, directories: tuple[Path, ...], *, keep: tuple[str, ...] = (), persist: bool = False
    ) -> None:
        self.directories = tuple(dict.fromkeys(d.resolve() for d in directories))
        self.modules: dict[str, ModuleType] = {}
        self._keep = frozenset(keep)
        self._persist = persist
        self._provided: frozenset[str] | None = None
        self._foreign: tuple[Path, ...] = ()
        self._stack: list[tuple[list[str], dict[str, ModuleType], dict[str, ModuleType]]] = []

    def __enter__(self) -> ImportScope:
        with _lock:
            if self._provided is None:
                self._provided = self._names_provided()
                self._foreign = self._foreign_paths()
            added = [str(d) for d in self.directories]
            sys.path[0:0] = added
            hidden: dict[str, ModuleType] = {}
            for name, module in list(sys.modules.items()):
                if name.partition(".")[0] not in self._provided:
                    continue
                if self.modules.get(name) is not module and not self.owns_module(module):
                    hidden[name] = sys.modules.pop(name)
            sys.modules.update(self.modules)
            importlib.invalidate_caches()
            self._stack.append((added, hidden, dict(sys.modules)))
        return self

    def __exit__(self, *exc_info: object) -> None:
        with _lock:
            added, hidden, before = self._stack.pop()
            if self._persist:
                return
            for name, module in list(sys.modules.items()):
                if before.get(name) is not module and self.owns_module(module):
                    self.modules[name] = module
            for name, module in self.modules.items():
                if sys.modules.get(name) is module and name not in self._keep:
                    del sys.modules[name]
            for name, module in hidden.items():
                sys.modules.setdefault(name, module)
            for entry in added:
                if entry in sys.path:
                    sys.path.remove(entry)

    def owns_module(self, module: ModuleType) -> bool:
        file = getattr(module, "__file__", None)
        if isinstance(file, str):
            return self.owns_file(Path(file))
        locations = getattr(module, "__path__", None) or ()  # a namespace package
        return any(self.owns_file(Path(p)) for p in locations)

    def owns_file(self, file: Path) -> bool:
        resolved = file.resolve()
        if not any(resolved.is_relative_to(d) for d in self.directories):
            return False
        return not any(resolved.is_relative_to(p) for p in self._foreign)

    def _names_provided(self) -> frozenset[str]:
        """Top-level module names the directories provide (they win over others on sys.path)."""
        names: set[str] = set()
        for directory in self.directories:
            try:
                entries = list(directory.iterdir())
            except OSError:
                continue
            for entry in entries:
                if entry.suffix == ".py" and entry.stem.isidentifier():
                    names.add(entry.stem)
                elif entry.name.isidentifier() and (entry / "__init__.py").is_file():
                    names.add(entry.name)
        return frozenset(names - _NEVER_SHADOW)

    def _foreign_paths(self) -> tuple[Path, ...]:
        """Import roots inside our directories that are not ours: a virtualenv, an ``src/``
        already on sys.path, the standard library."""
        candidates = [p for p in sys.path if p] + [
            v for k, v in sysconfig.get_paths().items() if k in ("stdlib", "purelib", "platlib")
        ]
        foreign: list[Path] = []
        for entry in candidates:
            path = Path(entry).resolve()
            if path not in self.directories and any(
                path.is_relative_to(d) for d in self.directories
            ):
                foreign.append(path)
        return tuple(dict.fromkeys(foreign))

"""Two rich modules that Typer's help imports and Conveyor's command line never uses, deferred.

``typer.rich_utils`` (loaded to print any ``--help``) imports ``rich.markdown`` (markdown-it and
pygments) and ``rich.traceback`` (attrs) at its top: about a third of the time ``conveyor --help``
takes, for Markdown help (Conveyor's help is rich markup) and pretty tracebacks (turned off).

`defer_unused_rich_modules` puts a stand-in for each in ``sys.modules``. A stand-in turns into the
real module the first time anything uses it: reading any other name from it, or calling (or
reading an attribute of) the classes Typer imports from it, imports the real module in its place
and forwards to it. So nothing changes for code that does use them; it just pays for them then.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__all__ = ["defer_unused_rich_modules"]

_DEFERRED: dict[str, tuple[str, ...]] = {
    "rich.markdown": ("Markdown",),
    "rich.traceback": ("Traceback",),
}
"""Module → the names ``typer.rich_utils`` imports from it."""


class _StandIn(types.ModuleType):
    """Stands in for a module not imported yet; any name it lacks comes from the real module."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # the import system asks for __path__ and the like
            raise AttributeError(name)
        return getattr(_real(self.__name__), name)


class _Forwarding(type):
    """A placeholder class: calling it, or reading a class attribute, uses the real class."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return _real_class(cls)(*args, **kwargs)

    def __getattr__(cls, name: str) -> Any:
        return getattr(_real_class(cls), name)


def _real_class(cls: type) -> Any:
    return getattr(_real(cls.__module__), cls.__name__)


def _real(module: str) -> types.ModuleType:
    """The real module, imported in place of its stand-in the first time it is needed."""
    if isinstance(sys.modules.get(module), _StandIn):
        del sys.modules[module]  # the import binds the real one, also on the parent package
    return importlib.import_module(module)


def defer_unused_rich_modules() -> None:
    """Put stand-ins for the modules of `_DEFERRED` that are not imported yet."""
    import rich

    for module, names in _DEFERRED.items():
        if module in sys.modules:
            continue
        stand_in = _StandIn(module)
        for name in names:
            stand_in.__dict__[name] = _Forwarding(name, (), {"__module__": module})
        sys.modules[module] = stand_in
        setattr(rich, module.rpartition(".")[2], stand_in)

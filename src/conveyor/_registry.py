"""`Registry[T]`: a name → lazily imported object table, one per family of plug-ins.

Conveyor has four families: sources (`conveyor.sources.SOURCES`), steps (`conveyor.steps.STEPS`),
executors (`conveyor.worker.executors.EXECUTORS`, keyed by work-pool type) and result stores
(`conveyor.results.RESULT_STORES`, keyed by URL scheme). Each is a `Registry` built from

- a literal table of built-ins, ``name → Entry("package.module:attr", extra=..., packages=...)``,
  imported on first use (so ``import conveyor`` stays cheap and nothing registers itself as an
  import side effect);
- an entry-point group (``conveyor.sources``, ``conveyor.steps``, ...) read once, lazily, for
  third-party packages (``name = "package.module:attr"``);
- `Registry.register` at run time (fsspec's ``register_implementation``: ``replace=True`` to
  override an existing name).

`Registry.get` never lets an import error escape raw: an unknown name is a `ConfigError` listing
the known ones, a missing optional dependency is a `MissingDependency` naming the extra that
installs it (``pip install 'conveyor[s3]'``), and a plug-in that fails to import is a
`ConfigError` naming the package that registered it.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from conveyor.errors import ConfigError, MissingDependency

__all__ = ["Entry", "Registry", "import_target"]

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """Where a plug-in lives, and what installs it when its import fails.

    ``target`` is ``"package.module:attr"`` (or an object registered directly); ``extra`` is the
    ``conveyor[extra]`` that installs ``packages``.
    """

    target: Any
    extra: str | None = None
    packages: tuple[str, ...] = ()
    builtin: bool = False


def import_target(target: str) -> Any:
    """The object named by ``"package.module:attr"``, imported now."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{target!r} is not a 'package.module:attr' target")
    module = importlib.import_module(module_name)
    value = module
    for part in attr.split("."):
        value = getattr(value, part)
    return value


class Registry(Generic[T]):
    """Names of one family (``noun``: "source kind", "step", ...) → lazily imported objects."""

    def __init__(
        self,
        noun: str,
        *,
        group: str,
        builtins: Mapping[str, Entry],
        hint: str | None = None,
    ) -> None:
        self.noun = noun
        self.group = group
        self.hint = hint
        self._builtins = {name: _builtin(entry) for name, entry in builtins.items()}
        self._registered: dict[str, Entry] = {}
        self._plugins: dict[str, Entry] | None = None
        self._loaded: dict[str, T] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Registry({self.noun!r}, group={self.group!r}, names={self.names()})"

    # -- the table -------------------------------------------------------------------------------

    def _table(self) -> dict[str, Entry]:
        if self._plugins is None:
            from importlib.metadata import entry_points

            found = {
                ep.name: Entry(ep.value) for ep in entry_points(group=self.group)
            }  # built-ins win over plug-ins of the same name; register() wins over both
            self._plugins = found
        return {**self._plugins, **self._builtins, **self._registered}

    def names(self) -> list[str]:
        """Every name: built-in, from entry points, and registered."""
        return sorted(self._table())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._table()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def entry(self, name: str) -> Entry:
        """Where ``name`` lives; `ConfigError` listing the known names when it is unknown."""
        entry = self._table().get(name)
        if entry is None:
            known = ", ".join(self.names()) or "none"
            raise ConfigError(
                f"unknown {self.noun} {name!r}",
                hint=self.hint or f"use one of: {known}",
            )
        return entry

    def register(self, name: str, target: Any, *, replace: bool = False) -> None:
        """Add ``name`` → ``target`` (a ``"module:attr"`` string, an `Entry` or the object).

        An existing name is refused unless ``replace`` (fsspec's ``clobber``).
        """
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a {self.noun} name must be a non-empty string")
        with self._lock:
            if not replace and name in self._table():
                raise ConfigError(
                    f"{self.noun} {name!r} is already registered",
                    hint="pass replace=True to override it",
                )
            self._registered[name] = target if isinstance(target, Entry) else Entry(target)
            self._loaded.pop(name, None)

    def unregister(self, name: str) -> None:
        """Remove a name added with `register` (built-ins and plug-ins stay)."""
        with self._lock:
            self._registered.pop(name, None)
            self._loaded.pop(name, None)

    # -- loading ---------------------------------------------------------------------------------

    def get(self, name: str) -> T:
        """The object registered as ``name``, imported now; clear errors when it cannot be."""
        loaded = self._loaded.get(name)
        if loaded is not None:
            return loaded
        entry = self.entry(name)
        value: T = self._import(name, entry) if isinstance(entry.target, str) else entry.target
        self._loaded[name] = value
        return value

    def _import(self, name: str, entry: Entry) -> Any:
        try:
            return import_target(entry.target)
        except ModuleNotFoundError as exc:
            missing = (exc.name or "").split(".")[0]
            wanted = {p.split(".")[0].replace("-", "_") for p in entry.packages}
            if entry.extra and (not wanted or missing in wanted):
                raise MissingDependency(
                    missing or entry.extra, extra=entry.extra, feature=f"the {name} {self.noun}"
                ) from exc
            raise self._broken(name, entry, exc) from exc
        except (ImportError, AttributeError, ConfigError) as exc:
            raise self._broken(name, entry, exc) from exc

    def _broken(self, name: str, entry: Entry, exc: Exception) -> ConfigError:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if entry.builtin:
            return ConfigError(
                f"the built-in {self.noun} {name!r} could not be loaded: {reason}",
                hint="reinstall conveyor; this is a bug if it persists",
            )
        return ConfigError(
            f"{self.noun} {name!r} could not be loaded from {entry.target!r}: {reason}",
            hint=f"check the package that registers {name!r} in the {self.group!r} "
            "entry-point group",
        )


def _builtin(entry: Entry) -> Entry:
    return Entry(entry.target, entry.extra, entry.packages, builtin=True)

"""The architecture, enforced: layers only import downwards, no import cycles, and settings are
read from the environment only at entry points.

Layers, bottom to top (a module may import its own layer and the ones below):

```
entry points   cli/ worker/ deploy _preflight project flows _loading __init__ ...
connect        connect
api            client   server/
steps          steps/   schemas
cache          cache _cachefs _cacheentries _cacheindex _cachecheck _cachefill _verified envs
sources        sources/
credentials    credentials
base           errors settings secrets _fs _process _registry bundles _expected _objects ...
```

Nothing below ``cache`` knows the API exists; the client never builds the server.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "conveyor"

BASE = {
    "conveyor.errors",
    "conveyor.settings",
    "conveyor.secrets",
    "conveyor._fs",
    "conveyor._process",
    "conveyor._registry",
    "conveyor._retry",
    "conveyor._manifest",
    "conveyor._expected",
    "conveyor._stamps",
    "conveyor._collector",
    "conveyor._objects",
    "conveyor._premade",
    "conveyor._tree",
    "conveyor._statcache",
    "conveyor._archive",
    "conveyor._unpack",
    "conveyor._tarstream",
    "conveyor._target",
    "conveyor.bundles",
    "conveyor._params",
    "conveyor._running",
    "conveyor._names",
    "conveyor._urltypo",
    "conveyor._values",
    "conveyor._http",
    "conveyor._version",
    "conveyor._uv",
    "conveyor._jobvars",
    "conveyor._jobs",
    "conveyor._transfers",
}
LAYERS = ["base", "credentials", "sources", "cache", "steps", "api", "connect", "entry"]


def layer_of(module: str) -> str:
    if module in BASE or module.startswith("conveyor.results"):
        return "base"
    if module == "conveyor.credentials":
        return "credentials"
    if module.startswith("conveyor.sources"):
        return "sources"
    if module in (
        "conveyor.cache",
        "conveyor._cachefs",
        "conveyor._cacheentries",
        "conveyor._cacheindex",
        "conveyor._cachecheck",
        "conveyor._cachefill",
        "conveyor._verified",
        "conveyor.envs",
    ):
        return "cache"
    if module.startswith("conveyor.steps") or module == "conveyor.schemas":
        return "steps"
    if module == "conveyor.client" or module.startswith("conveyor.server"):
        return "api"
    if module == "conveyor.connect":
        return "connect"
    return "entry"


ALLOWED_UPWARD = {
    # Public helpers called without a store/client (``creds.save("gh")``) connect the way the
    # command line does: these are entry points, documented as such.
    ("conveyor.credentials", "conveyor.connect"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> Iterator[tuple[str, bool]]:
    """(imported conveyor module, at module level?) for every import in ``path``, skipping
    ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]

    def walk(node: ast.AST, top: bool) -> Iterator[tuple[str, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("conveyor"):
                        yield alias.name, top
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1])
                    base = f"{base}.{child.module}" if child.module else base
                if base.startswith("conveyor"):
                    for alias in child.names:
                        sub = f"{base}.{alias.name}"
                        yield (
                            (
                                sub
                                if (SRC.parent / sub.replace(".", "/")).exists()
                                or (SRC.parent / f"{sub.replace('.', '/')}.py").exists()
                                else base
                            ),
                            top,
                        )
            inner = top and not isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            yield from walk(child, inner)

    yield from walk(tree, True)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in SRC.rglob("*.py") if "migrations" not in p.parts}


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = []
    for module, path in all_modules().items():
        mine = LAYERS.index(layer_of(module))
        for target, _top in imports(path):
            theirs = LAYERS.index(layer_of(target))
            if theirs > mine and (module, target) not in ALLOWED_UPWARD:
                upward.append(f"{module} ({layer_of(module)}) -> {target} ({layer_of(target)})")
    assert upward == []


def test_no_import_cycles_between_modules_at_import_time() -> None:
    modules = all_modules()
    graph: dict[str, set[str]] = {
        name: {t for t, top in imports(path) if top and t in modules and t != name}
        for name, path in modules.items()
    }
    # A package importing its own submodules (re-exports) is not a cycle through the package.
    for name in graph:
        graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*stack[stack.index(target) :], target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_settings_are_read_from_the_environment_only_at_entry_points() -> None:
    entry_points = {
        "conveyor.cli._common",  # every command
        "conveyor.worker.__main__",  # the worker process
        "conveyor.connect",  # connect_from_env, for public helpers
        "conveyor.deploy",  # flow.deploy() without settings
        "conveyor.worker.container",  # the run's process inside a container
    }
    readers = {
        module
        for module, path in all_modules().items()
        if "Settings.from_env(" in path.read_text() and module != "conveyor.settings"
    }
    assert readers <= entry_points, readers - entry_points


def test_nothing_below_the_api_builds_a_client() -> None:
    builders = {
        module
        for module, path in all_modules().items()
        if ("ConveyorClient(" in path.read_text() or "connect(" in path.read_text())
        and LAYERS.index(layer_of(module)) < LAYERS.index("api")
    }
    assert builders <= {"conveyor.credentials"}  # its documented public-helper default

"""Which files of a code tree loading a flow needs: its module and what it imports from the tree.

A git deploy preflights the flow from a sparse checkout instead of the whole tree (see
`conveyor.deploy`). `needed_files` finds that checkout's files statically, round by round (each
round is one fetch of the files found in the previous one):

- the entrypoint's file (``path/to/flow.py:fn``) or module (``package.module:fn``), found the way
  the flow loader finds it (`conveyor._loading`): a file's directory and the working directory
  on ``sys.path``, in that order; for a module, the working directory;
- every ``import a.b.c`` / ``from a.b import c`` / ``from . import x`` (anywhere in the module,
  also inside functions and ``try``) that names a module of the tree, with the ``__init__.py``
  of every package on the way (a compiled module's ``.so`` too); ``from pkg import *`` takes
  every module of ``pkg``; a name the tree does not have (the standard library, an installed
  package) is left to the interpreter;
- string constants that name a file of the tree (relative to the working directory, the
  module's directory or the tree's root): ``open("config.yaml")`` at import time works;
- a symlink brings its target.

It answers None — load from the whole tree — when a module cannot be followed statically: a
dynamic import (``importlib.import_module``, ``__import__``, ``spec_from_file_location``,
``runpy``, ``pkgutil.iter_modules`` / ``walk_packages`` / ``extend_path``, ``exec``), a file
that does not parse, or a pickled flow. Whatever else the static view misses (a data file built
from pieces, a module found through ``sys.path`` edits) makes the preflight fail, and deploy then
retries with the whole tree, so the answer can only cost time, never a wrong result.
"""

from __future__ import annotations

import ast
import posixpath
import sys
from collections.abc import Callable, Iterable, Mapping

__all__ = ["DYNAMIC_CALLS", "needed_files"]

DYNAMIC_CALLS = frozenset(
    {
        "import_module",
        "__import__",
        "spec_from_file_location",
        "module_from_spec",
        "load_source",
        "SourceFileLoader",
        "run_path",
        "run_module",
        "iter_modules",
        "walk_packages",
        "extend_path",
        "exec",
    }
)
_STDLIB = frozenset(sys.stdlib_module_names) | {"conveyor", "__main__", "__future__"}
_MAX_STRING = 255

Loader = Callable[[list[str]], Mapping[str, bytes]]
"""Fetches files of the tree (paths relative to its root) and returns their bytes (a symlink's:
its target)."""


class _Dynamic(Exception):
    """The module cannot be followed statically."""


class _Tree:
    """The tree's paths, with the directories they imply."""

    def __init__(self, files: Iterable[str], links: Iterable[str]) -> None:
        self.files = frozenset(files)
        self.links = frozenset(links)
        self.dirs: set[str] = {""}
        self.extensions = {
            f"{posixpath.dirname(p)}/{posixpath.basename(p).split('.')[0]}".lstrip("/"): p
            for p in self.files
            if p.endswith((".so", ".pyd"))
        }
        """Compiled modules (``name.cpython-311-x86_64-linux-gnu.so``) by their module path."""
        for path in self.files:
            parent = posixpath.dirname(path)
            while parent not in self.dirs:
                self.dirs.add(parent)
                parent = posixpath.dirname(parent)

    def module(self, base: str, name: str) -> tuple[list[str], str | None]:
        """The files of module ``name`` (dotted) searched from directory ``base``, and the
        directory of the package it ends in (None when it is a plain module or not found)."""
        found: list[str] = []
        where = base
        parts = name.split(".")
        for i, part in enumerate(parts):
            directory = _join(where, part)
            if directory in self.dirs:
                init = _join(directory, "__init__.py")
                if init in self.files:
                    found.append(init)
                where = directory
                continue
            module = _join(where, part + ".py")
            compiled = self.extensions.get(_join(where, part))
            if i == len(parts) - 1 and (module in self.files or compiled is not None):
                return [*found, module if module in self.files else str(compiled)], None
            return (found, None) if i else ([], None)
        return found, where


def _join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name


def needed_files(
    files: Iterable[str],
    entrypoint: str,
    *,
    workdir: str = "",
    load: Loader,
    links: Iterable[str] = (),
) -> set[str] | None:
    """The tree paths loading ``entrypoint`` (from directory ``workdir`` of the tree) needs, or
    None when only the whole tree will do (see the module). ``files`` lists every file of the
    tree, ``links`` those that are symlinks; ``load`` fetches a round of them."""
    tree = _Tree(files, links)
    where, colon, _attribute = entrypoint.strip().rpartition(":")
    if not colon or where.endswith(".pickle") or entrypoint.strip().endswith(".pickle"):
        return None
    start: dict[str, str | None] = {}  # path -> its package (None: a top-level file)
    if where.endswith(".py"):
        path = posixpath.normpath(_join(workdir, where))
        if path not in tree.files:
            return None
        roots = [posixpath.dirname(path), workdir]
        start[path] = None
    else:
        roots = [workdir]
        for path in _resolve(tree, roots, where):
            start[path] = _package_of(path, roots)
        if not start:
            return None
    try:
        return _follow(tree, roots, workdir, start, load)
    except _Dynamic:
        return None


def _follow(
    tree: _Tree, roots: list[str], workdir: str, start: dict[str, str | None], load: Loader
) -> set[str]:
    needed = set(start)
    packages = dict(start)
    todo = sorted(start)
    while todo:
        loaded = load(todo)
        found: set[str] = set()
        for path in todo:
            data = loaded.get(path)
            if data is None:
                continue
            if path in tree.links:
                target = posixpath.normpath(
                    posixpath.join(posixpath.dirname(path), data.decode(errors="replace"))
                )
                found.add(target)
                packages.setdefault(target, packages.get(path))
            elif path.endswith(".py"):
                for dep in _dependencies(tree, roots, workdir, path, packages.get(path), data):
                    found.add(dep)
                    packages.setdefault(dep, _package_of(dep, roots))
        todo = sorted(p for p in found - needed if p in tree.files)
        needed.update(todo)
    return needed


def _package_of(path: str, roots: list[str]) -> str | None:
    """The dotted package a file found from one of ``roots`` belongs to ("" for a top-level
    module, None outside every root)."""
    for root in roots:
        prefix = f"{root}/" if root else ""
        if path.startswith(prefix):
            parts = posixpath.dirname(path[len(prefix) :])
            return parts.replace("/", ".") if parts else ""
    return None


def _resolve(tree: _Tree, roots: list[str], name: str, *, relative: bool = False) -> list[str]:
    """The files of module ``name`` from the first of ``roots`` that has its top-level name
    (the standard library and Conveyor are never looked for in the tree)."""
    top = name.split(".")[0]
    if not top or (top in _STDLIB and not relative):
        return []
    for root in roots:
        found, _package = tree.module(root, name)
        if found or _join(root, top) in tree.dirs:
            return found
    return []


def _dependencies(
    tree: _Tree, roots: list[str], workdir: str, path: str, package: str | None, data: bytes
) -> set[str]:
    try:
        module = ast.parse(data, filename=path)
    except (SyntaxError, ValueError):
        raise _Dynamic(path) from None
    found: set[str] = set()
    here = posixpath.dirname(path)
    for node in ast.walk(module):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.update(_resolve(tree, roots, alias.name))
        elif isinstance(node, ast.ImportFrom):
            if any(alias.name in DYNAMIC_CALLS for alias in node.names):  # called by alias
                raise _Dynamic(f"{path}: {node.module}")
            found.update(_from_import(tree, roots, node, path, in_package=bool(package)))
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in DYNAMIC_CALLS:
                raise _Dynamic(f"{path}: {name}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if 0 < len(text) <= _MAX_STRING and "\n" not in text and "\0" not in text:
                for base in (workdir, here, ""):
                    candidate = posixpath.normpath(_join(base, text))
                    if candidate in tree.files:
                        found.add(candidate)
    return found


def _from_import(
    tree: _Tree, roots: list[str], node: ast.ImportFrom, path: str, *, in_package: bool
) -> set[str]:
    """``from X import a, b``: module X and the submodules a and b (names that are not modules
    are attributes of X). Relative imports are resolved from the importing file's directory."""
    name = node.module or ""
    search = roots
    if node.level:
        if not in_package:  # a top-level module cannot import relatively
            return set()
        directory = posixpath.dirname(path)
        for _ in range(node.level - 1):
            if not directory:
                return set()
            directory = posixpath.dirname(directory)
        search = [directory]
    relative = bool(node.level)
    found: set[str] = set()
    if name:
        found.update(_resolve(tree, search, name, relative=relative))
    for alias in node.names:
        if alias.name != "*":
            full = f"{name}.{alias.name}" if name else alias.name
            found.update(_resolve(tree, search, full, relative=relative))
            continue
        package_dir = search[0] if not name else None
        for root in search if name else ():
            _files, package_dir = tree.module(root, name)
            if package_dir is not None:
                break
        if package_dir is not None:
            found.update(
                f for f in tree.files if posixpath.dirname(f) == package_dir and f.endswith(".py")
            )
    return found

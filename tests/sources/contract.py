"""The contract every source backend passes.

Subclass `SourceContract` in ``tests/sources/test_<kind>.py`` (the class name must start with
``Test``) and provide three fixtures:

- ``tree``: a directory holding the known tree (write it with `write_known_tree`);
- ``source``: a source that holds exactly that tree, whose `resolve` returns its version;
- ``missing_source_factory``: a zero-argument callable building a source whose location does not
  exist (a missing folder, bucket, repository or host): constructing it must do no I/O.

The ``ctx`` fixture is the `FetchContext` every call gets, as the cache gives it (a persistent
scratch directory, settings); override it to add a secret store or an environment.

and, when they differ from the defaults, the class attributes ``unknown_version`` (well formed,
but not held by the source) and ``metadata_dirs`` (top-level directories a fetch may add beside
the tree, such as ``.conveyor`` for bundles).
"""

from __future__ import annotations

import builtins
import io
import json
import os
import socket
import stat
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import pytest

from conveyor.errors import IntegrityError, SourceError, VersionNotFound
from conveyor.settings import Settings
from conveyor.sources import Source, source_from_spec
from conveyor.sources.base import FetchContext

__all__ = ["SourceContract", "no_io", "snapshot", "write_known_tree"]

Snapshot = dict[str, tuple[str, bytes, bool]]


def write_known_tree(root: Path, *, symlinks: bool = True) -> Path:
    """A small tree with what code trees hold: nested packages, an executable script, a binary
    file, an empty file, a non-ASCII name and (optionally) an in-tree symlink."""
    files: dict[str, bytes] = {
        "flows/__init__.py": b"",
        "flows/hello.py": b"def hello(name: str = 'world') -> str:\n    return f'hello {name}'\n",
        "flows/lib/util.py": b"ANSWER = 42\n",
        "README.md": b"# known tree\n",
        "bin/run.sh": b"#!/bin/sh\necho run\n",
        "data/blob.bin": bytes((i * 7919 + 13) % 251 for i in range(100_000)),
        "donn\u00e9es/\u00e9t\u00e9.txt": "\u00e9t\u00e9\n".encode(),
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "bin/run.sh").chmod(0o755)
    if symlinks:
        (root / "flows/alias.py").symlink_to("hello.py")
    return root


def snapshot(root: Path, *, skip: tuple[str, ...] = ()) -> Snapshot:
    """Every file and symlink under ``root``: path -> (kind, bytes or link target, executable).

    Top-level names in ``skip`` are left out."""
    found: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in skip]
            filenames = [f for f in filenames if f not in skip]
        for name in [*filenames, *(d for d in dirnames if (Path(dirpath) / d).is_symlink())]:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path).encode(), False)
            else:
                mode = path.stat().st_mode
                found[rel] = ("file", path.read_bytes(), bool(mode & stat.S_IXUSR))
    return found


@contextmanager
def no_io(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Inside the block, opening, listing or stat-ing a file, a socket or a process fails."""

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"I/O during construction: {args[:1]!r}")

    with monkeypatch.context() as patch:
        for target, name in [
            (builtins, "open"),
            (io, "open"),
            (os, "stat"),
            (os, "lstat"),
            (os, "scandir"),
            (os, "listdir"),
            (os, "mkdir"),
            (socket, "socket"),
            (socket, "create_connection"),
            (subprocess, "Popen"),
        ]:
            patch.setattr(target, name, forbidden)
        yield


class SourceContract:
    """What every `Source` does. Subclasses provide ``tree``, ``source`` and
    ``missing_source_factory`` fixtures (see the module docstring)."""

    unknown_version: ClassVar[str] = "sha256-" + "0" * 64
    metadata_dirs: ClassVar[tuple[str, ...]] = (".conveyor",)

    @pytest.fixture
    def dest(self, tmp_path: Path) -> Path:
        """An existing empty directory, as the cache hands to `fetch`."""
        path = tmp_path / "contract-dest"
        path.mkdir()
        return path

    @pytest.fixture
    def ctx(self, tmp_path: Path, settings: Settings) -> FetchContext:
        """The context the cache gives a source: its scratch directory and the settings."""
        scratch = tmp_path / "contract-scratch"
        scratch.mkdir()
        return FetchContext(scratch=scratch, settings=settings, environ=os.environ)

    def test_resolve_returns_a_stable_version(self, source: Source, ctx: FetchContext) -> None:
        first = source.resolve(ctx)
        assert isinstance(first, str)
        assert first
        assert source.resolve(ctx) == first

    def test_fetch_writes_exactly_the_tree(
        self, source: Source, tree: Path, dest: Path, ctx: FetchContext
    ) -> None:
        source.fetch(source.resolve(ctx), dest, ctx)
        assert snapshot(dest, skip=self.metadata_dirs) == snapshot(tree)

    def test_verify_passes_on_a_fetched_tree(
        self, source: Source, dest: Path, ctx: FetchContext
    ) -> None:
        version = source.resolve(ctx)
        source.fetch(version, dest, ctx)
        source.verify(version, dest, ctx)

    def test_a_fresh_source_verifies_what_another_instance_fetched(
        self, source: Source, dest: Path, ctx: FetchContext
    ) -> None:
        # Given a tree fetched by one instance
        version = source.resolve(ctx)
        source.fetch(version, dest, ctx)
        # Then a source rebuilt from the stored spec (as on another worker process) verifies it,
        # and refuses it once it is changed
        fresh = source_from_spec(json.loads(json.dumps(source.to_spec())))
        fresh.verify(version, dest, ctx)
        (dest / "flows/lib/util.py").write_bytes(b"ANSWER = 43\n")
        with pytest.raises(IntegrityError):
            source_from_spec(source.to_spec()).verify(version, dest, ctx)

    def test_verify_rejects_a_modified_tree(
        self, source: Source, dest: Path, ctx: FetchContext
    ) -> None:
        version = source.resolve(ctx)
        source.fetch(version, dest, ctx)
        (dest / "flows/lib/util.py").write_bytes(b"ANSWER = 43\n")
        with pytest.raises(IntegrityError) as caught:
            source.verify(version, dest, ctx)
        assert "\n" not in str(caught.value)

    def test_fetch_of_an_unknown_version_raises_version_not_found(
        self, source: Source, dest: Path, ctx: FetchContext
    ) -> None:
        with pytest.raises(VersionNotFound) as caught:
            source.fetch(self.unknown_version, dest, ctx)
        assert "\n" not in str(caught.value)
        assert list(dest.iterdir()) == []

    def test_spec_is_json_safe(self, source: Source) -> None:
        spec = source.to_spec()
        assert spec["kind"] == source.kind
        assert json.loads(json.dumps(spec)) == spec

    def test_spec_round_trips_through_source_from_spec(
        self, source: Source, ctx: FetchContext
    ) -> None:
        spec = json.loads(json.dumps(source.to_spec()))
        rebuilt = source_from_spec(spec)
        assert type(rebuilt) is type(source)
        assert rebuilt.to_spec() == source.to_spec()
        assert rebuilt.key() == source.key()
        assert rebuilt.resolve(ctx) == source.resolve(ctx)

    def test_key_is_stable_and_short(self, source: Source, ctx: FetchContext) -> None:
        key = source.key()
        assert key == source.key()
        assert len(key) == 16
        assert int(key, 16) >= 0
        source.resolve(ctx)
        assert source.key() == key

    def test_constructor_does_no_io(
        self, missing_source_factory: Callable[[], Source], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        with no_io(monkeypatch):
            missing = missing_source_factory()
            spec = missing.to_spec()
            key = missing.key()
            line = missing.describe()
        assert json.loads(json.dumps(spec)) == spec
        assert len(key) == 16
        assert "\n" not in line

    def test_missing_location_is_a_source_error(
        self, missing_source_factory: Callable[[], Source], ctx: FetchContext
    ) -> None:
        with pytest.raises(SourceError) as caught:
            missing_source_factory().resolve(ctx)
        assert "\n" not in str(caught.value)

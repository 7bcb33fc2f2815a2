"""The code cache with the real local bundle store: push a tree, ensure it, verify what lands."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from cache_helpers import tree_files
from conveyor.bundles import MANIFEST_PATH, verify_tree
from conveyor.cache import CodeCache
from conveyor.errors import IntegrityError, VersionNotFound
from conveyor.sources.store import LocalStoreSource


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "pkg").mkdir(parents=True)
    (root / "flows.py").write_text("from pkg import helper\n\ndef hello():\n    return 42\n")
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "helper.py").write_text("VALUE = 1\n")
    (root / "run.sh").write_text("#!/bin/sh\necho ok\n")
    (root / "run.sh").chmod(0o755)
    return root


@pytest.fixture
def store(tmp_path: Path) -> LocalStoreSource:
    return LocalStoreSource(tmp_path / "storage")


def code_files(path: Path) -> dict[str, bytes]:
    return {k: v for k, v in tree_files(path).items() if not k.startswith(".conveyor/")}


def test_pushed_tree_comes_back_verified_and_read_only(
    tmp_path: Path, tree: Path, store: LocalStoreSource
) -> None:
    version = store.push(tree)
    cache = CodeCache(tmp_path / "cache", max_bytes=10**8)

    path = cache.ensure(store, version)

    assert path == tmp_path / "cache" / store.key() / version
    assert code_files(path) == tree_files(tree)
    assert (path / MANIFEST_PATH).is_file()
    verify_tree(path, version)
    assert stat.S_IMODE((path / "run.sh").stat().st_mode) == 0o555
    assert stat.S_IMODE((path / "flows.py").stat().st_mode) == 0o444
    assert stat.S_IMODE((path / "pkg").stat().st_mode) == 0o555
    [entry] = cache.entries()
    assert entry.size >= sum(len(b) for b in tree_files(tree).values())
    assert entry.source == store.describe()


def test_warm_ensure_does_not_read_the_store(
    tmp_path: Path, tree: Path, store: LocalStoreSource
) -> None:
    version = store.push(tree)
    cache = CodeCache(tmp_path / "cache", max_bytes=10**8)
    first = cache.ensure(store, version)
    shutil.rmtree(store.backend().root)

    assert cache.ensure(store, version) == first
    assert code_files(first) == tree_files(tree)


def test_tampered_archive_is_refused_and_nothing_is_cached(
    tmp_path: Path, tree: Path, store: LocalStoreSource
) -> None:
    # Given the store's archive for version A replaced by the archive of another tree
    version = store.push(tree)
    (tree / "pkg" / "helper.py").write_text("VALUE = 2\n")
    other = store.push(tree)
    root = store.backend().root
    os.replace(root / store.object_name(other), root / store.object_name(version))
    cache = CodeCache(tmp_path / "cache", max_bytes=10**8)

    # When the cache fetches version A, then the digest check refuses it and leaves nothing
    with pytest.raises(IntegrityError):
        cache.ensure(store, version)
    key_dir = tmp_path / "cache" / store.key()
    assert (
        sorted(n for n in os.listdir(key_dir) if not n.endswith(".lock")) == []
    )  # no scratch: a store keeps none
    assert cache.entries() == []


def test_missing_version_is_version_not_found_and_nothing_is_cached(
    tmp_path: Path, tree: Path, store: LocalStoreSource
) -> None:
    store.push(tree)
    cache = CodeCache(tmp_path / "cache", max_bytes=10**8)
    with pytest.raises(VersionNotFound):
        cache.ensure(store, "sha256-" + "0" * 64)
    assert cache.entries() == []
    assert not (tmp_path / "cache" / store.key() / ("sha256-" + "0" * 64)).exists()

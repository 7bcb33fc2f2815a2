"""`LocalStoreSource`: the local bundle store; the contract plus push and store behaviour."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from conveyor.bundles import compute_version
from conveyor.errors import ConfigError, IntegrityError, VersionNotFound
from conveyor.sources.base import Source
from conveyor.sources.store import LocalStoreSource
from sources.contract import SourceContract, no_io, write_known_tree


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_known_tree(tmp_path / "project")


class TestLocalStoreSource(SourceContract):
    @pytest.fixture
    def tree(self, folder: Path) -> Path:
        return folder

    @pytest.fixture
    def source(self, folder: Path, tmp_path: Path) -> LocalStoreSource:
        version = LocalStoreSource(tmp_path / "store").push(folder)
        return LocalStoreSource(tmp_path / "store", version=version)

    @pytest.fixture
    def missing_source_factory(self, tmp_path: Path) -> Callable[[], Source]:
        return lambda: LocalStoreSource(tmp_path / "missing-store", version="sha256-" + "2" * 64)


def test_push_writes_the_archive_under_its_version(folder: Path, tmp_path: Path) -> None:
    store = LocalStoreSource(tmp_path / "store")
    version = store.push(folder)
    assert version == compute_version(folder)
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == [f"{version}.tar.zst"]
    assert store.has(version)
    assert store.versions() == [version]


def test_push_of_a_present_version_rewrites_nothing(folder: Path, tmp_path: Path) -> None:
    # Given a pushed version whose archive has an old mtime
    store = LocalStoreSource(tmp_path / "store")
    version = store.push(folder)
    archive = store.path_for(version)
    os.utime(archive, (1_000_000, 1_000_000))
    before = archive.stat()

    # When the same tree (touched, copied elsewhere) is pushed again
    for path in folder.rglob("*"):
        if not path.is_symlink():
            os.utime(path)
    again = store.push(folder)

    # Then the same version is returned and the file is the same inode, untouched
    after = archive.stat()
    assert again == version
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        before.st_ino,
        before.st_mtime_ns,
        before.st_size,
    )
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == [f"{version}.tar.zst"]


def test_resolve_without_version_explains_there_is_no_ref(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no moving ref") as caught:
        LocalStoreSource(tmp_path / "store").resolve()
    assert caught.value.hint is not None
    assert "version=" in caught.value.hint


def test_resolve_of_an_absent_version_is_version_not_found(tmp_path: Path) -> None:
    with pytest.raises(VersionNotFound):
        LocalStoreSource(tmp_path / "store", version="sha256-" + "3" * 64).resolve()


def test_root_defaults_to_conveyor_home_storage_at_first_use(
    folder: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given a store built before CONVEYOR_HOME is set to its final value
    with no_io(monkeypatch):
        store = LocalStoreSource()
    monkeypatch.setenv("CONVEYOR_HOME", str(tmp_path / "later-home"))

    # When it is first used, the default root is read then
    version = store.push(folder)

    # Then the archive is under that home; the spec does not pin a machine-specific root
    assert (tmp_path / "later-home/storage" / f"{version}.tar.zst").is_file()
    assert store.to_spec() == {"kind": "store"}
    assert LocalStoreSource(version=version).to_spec() == {"kind": "store", "version": version}


def test_tampered_archive_is_an_integrity_error(folder: Path, tmp_path: Path) -> None:
    # Given a stored archive replaced by the archive of another tree
    store = LocalStoreSource(tmp_path / "store")
    version = store.push(folder)
    (folder / "README.md").write_text("other\n")
    other = store.push(folder)
    os.replace(store.path_for(other), store.path_for(version))

    # When it is fetched, then the digest check refuses it and nothing is left
    dest = tmp_path / "dest"
    with pytest.raises(IntegrityError, match="not the expected"):
        store.fetch(version, dest)
    assert not dest.exists()


def test_spec_is_stable_json(tmp_path: Path) -> None:
    store = LocalStoreSource(tmp_path / "s", version="sha256-" + "4" * 64)
    spec = store.to_spec()
    assert (
        json.loads(json.dumps(spec))
        == spec
        == {
            "kind": "store",
            "root": str(tmp_path / "s"),
            "version": "sha256-" + "4" * 64,
        }
    )
    assert store.key() == LocalStoreSource(tmp_path / "s").key()

"""`BundleStore`: the bundle store in a directory and on the server; the contract, push and
store behaviour."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from conveyor.bundles import compute_version
from conveyor.errors import ConfigError, IntegrityError, VersionNotFound
from conveyor.settings import Settings
from conveyor.sources import source_from_spec
from conveyor.sources.base import FetchContext, Source
from conveyor.sources.store import BundleStore, LocalStoreSource
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
    archive = tmp_path / "store" / BundleStore.object_name(version)
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


def test_a_spec_without_a_location_means_the_local_store_of_the_settings(
    folder: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a deployment made before stores were configurable: {"kind": "store"}
    with no_io(monkeypatch):
        legacy = source_from_spec({"kind": "store"})
    version = BundleStore(settings.storage_dir).push(folder)
    # Then it reads the store its context's settings name, and says so without settings
    ctx = FetchContext(settings=settings)
    assert isinstance(legacy, BundleStore)
    assert legacy.has(version, ctx)
    with pytest.raises(ConfigError, match="no settings say where"):
        legacy.has(version)


def test_a_legacy_root_spec_still_loads(folder: Path, tmp_path: Path) -> None:
    version = BundleStore(tmp_path / "s").push(folder)
    legacy = source_from_spec({"kind": "store", "root": str(tmp_path / "s"), "version": version})
    assert legacy.resolve() == version
    assert legacy.to_spec() == {"kind": "store", "url": str(tmp_path / "s"), "version": version}


def test_the_server_store_needs_a_connection(folder: Path) -> None:
    with pytest.raises(ConfigError, match="no connection to a server") as caught:
        BundleStore("server").push(folder)
    assert caught.value.hint is not None
    assert "CONVEYOR_API_URL" in caught.value.hint


def test_tampered_archive_is_an_integrity_error(folder: Path, tmp_path: Path) -> None:
    # Given a stored archive replaced by the archive of another tree
    store = LocalStoreSource(tmp_path / "store")
    version = store.push(folder)
    (folder / "README.md").write_text("other\n")
    other = store.push(folder)
    root = tmp_path / "store"
    os.replace(root / BundleStore.object_name(other), root / BundleStore.object_name(version))

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
            "url": str(tmp_path / "s"),
            "version": "sha256-" + "4" * 64,
        }
    )
    assert store.key() == LocalStoreSource(tmp_path / "s").key()


@pytest.mark.parametrize(
    ("url", "local"),
    [(None, True), ("/srv/bundles", True), ("file:///srv/b", True), ("server", False)],
)
def test_which_stores_only_this_machine_can_read(url: str | None, local: bool) -> None:
    assert BundleStore(url).is_machine_local is local

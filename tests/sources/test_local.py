"""`LocalSource`: a folder whose version is its bundle's; the contract plus folder behaviour."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conveyor.bundles import compute_version
from conveyor.errors import IntegrityError, SourceNotFound, VersionNotFound
from conveyor.sources import Source, source_from_url
from conveyor.sources.local import LocalSource
from sources.contract import SourceContract, write_known_tree


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_known_tree(tmp_path / "project")


class TestLocalSource(SourceContract):
    @pytest.fixture
    def tree(self, folder: Path) -> Path:
        return folder

    @pytest.fixture
    def source(self, folder: Path) -> LocalSource:
        return LocalSource(folder)

    @pytest.fixture
    def missing_source_factory(self, tmp_path: Path) -> Callable[[], Source]:
        return lambda: LocalSource(tmp_path / "no" / "such" / "folder")


def test_version_is_the_folder_bundle_version(folder: Path) -> None:
    assert LocalSource(folder).resolve() == compute_version(folder)


def test_spec_holds_the_absolute_path(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(folder.parent)
    source = LocalSource("project")
    assert source.to_spec() == {"kind": "local", "path": str(folder)}
    assert source_from_url("project").to_spec() == source.to_spec()
    assert source_from_url(f"file://{folder}").to_spec() == source.to_spec()


def test_a_folder_is_not_versioned_by_itself(folder: Path) -> None:
    # deploy snapshots it into the bundle store (tests/test_deploy.py)
    assert LocalSource.supports_versioning is False
    assert LocalSource(folder).materialised() == folder


def test_changed_folder_says_redeploy(folder: Path, tmp_path: Path) -> None:
    source = LocalSource(folder)
    deployed = source.resolve()
    (folder / "README.md").write_text("changed\n")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(VersionNotFound, match="it changed") as caught:
        source.fetch(deployed, dest)
    assert caught.value.hint is not None
    assert "redeploy" in caught.value.hint
    assert list(dest.iterdir()) == []


def test_missing_folder_is_source_not_found(tmp_path: Path) -> None:
    source = LocalSource(tmp_path / "gone")
    with pytest.raises(SourceNotFound, match="does not exist"):
        source.resolve()
    with pytest.raises(SourceNotFound):
        source.fetch("sha256-" + "1" * 64, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("version", ["latest", "../../etc", "sha256-XYZ", "0" * 40])
def test_malformed_version_is_version_not_found(folder: Path, tmp_path: Path, version: str) -> None:
    with pytest.raises(VersionNotFound, match="not a bundle version"):
        LocalSource(folder).fetch(version, tmp_path / "dest")


def test_fetched_tree_leaves_out_ignored_files(folder: Path, tmp_path: Path) -> None:
    (folder / ".gitignore").write_text("*.log\n")
    (folder / "debug.log").write_text("noise\n")
    (folder / "flows/__pycache__").mkdir()
    (folder / "flows/__pycache__/hello.cpython-311.pyc").write_bytes(b"\x00")
    source = LocalSource(folder)
    dest = tmp_path / "dest"
    source.fetch(source.resolve(), dest)
    assert (dest / ".gitignore").is_file()
    assert not (dest / "debug.log").exists()
    assert not (dest / "flows/__pycache__").exists()


def test_tampering_after_fetch_names_the_file(folder: Path, tmp_path: Path) -> None:
    source = LocalSource(folder)
    version = source.resolve()
    dest = tmp_path / "dest"
    source.fetch(version, dest)
    (dest / "bin/run.sh").chmod(0o644)
    with pytest.raises(IntegrityError, match=r"executable bit differs: bin/run\.sh") as caught:
        source.verify(version, dest)
    assert caught.value.path == "bin/run.sh"

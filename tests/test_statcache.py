"""The stat cache (issue 14, item 4): re-versioning an unchanged folder reads no file, gives the
same manifest, and still notices every change, even one that keeps the size and sets the mtime
back.

Reads are counted with an audit hook on ``open`` (`audit_helpers`)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from audit_helpers import opens
from conveyor import _statcache
from conveyor._statcache import StatCache
from conveyor.bundles import build_manifest
from conveyor.sources.local import LocalSource
from sources.contract import write_known_tree


@pytest.fixture
def not_racy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trust entries at once (files in a test are seconds old at most); tests of the racy rule
    itself do not use this."""
    monkeypatch.setattr(_statcache, "RACY_SECONDS", 0.0)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = write_known_tree(tmp_path / "project")
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / ".gitignore").write_text("*.log\n")
    (root / "sub" / "kept.txt").write_text("kept\n")
    (root / "sub" / "skipped.log").write_text("skipped\n")
    return root


def cache_for(tmp_path: Path, root: Path) -> StatCache:
    return StatCache.for_folder(tmp_path / "cache", root)


@pytest.mark.usefixtures("not_racy")
def test_an_unchanged_tree_is_versioned_without_reading_a_file(tmp_path, tree):
    # Given a tree versioned once with its stat cache
    plain = build_manifest(tree)
    first = build_manifest(tree, stat_cache=cache_for(tmp_path, tree))
    # When it is versioned again with a new cache object (a new deploy process)
    with opens(tree) as opened:
        again = build_manifest(tree, stat_cache=cache_for(tmp_path, tree))
    # Then no file of it was opened, not even the ignore files, and the manifest is the same
    assert opened == []
    assert first == plain
    assert again == plain
    assert again.version == plain.version


@pytest.mark.usefixtures("not_racy")
def test_a_same_size_change_with_the_mtime_forced_back_is_noticed(tmp_path, tree):
    # Given a versioned tree
    target = tree / "sub" / "kept.txt"
    before = os.stat(target)
    build_manifest(tree, stat_cache=cache_for(tmp_path, tree))
    # When a file is rewritten with other bytes of the same size and its mtime is set back
    time.sleep(0.05)
    target.write_text("KEPT\n")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(target)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    # Then the ctime gives it away: only that file is read, and the version is the new one
    with opens(tree) as opened:
        manifest = build_manifest(tree, stat_cache=cache_for(tmp_path, tree))
    assert opened == ["sub/kept.txt"]
    assert manifest == build_manifest(tree)


@pytest.mark.usefixtures("not_racy")
def test_a_file_replaced_by_rename_is_noticed(tmp_path, tree):
    # Given a versioned tree
    target = tree / "sub" / "kept.txt"
    before = os.stat(target)
    build_manifest(tree, stat_cache=cache_for(tmp_path, tree))
    # When another file of the same size and mtime is renamed over it (a new inode)
    time.sleep(0.05)
    new = tree / "sub" / "new.tmp"
    new.write_text("kEpT\n")
    os.utime(new, ns=(before.st_atime_ns, before.st_mtime_ns))
    new.replace(target)
    assert os.stat(target).st_ino != before.st_ino
    # Then it is read again and the manifest names its new bytes
    with opens(tree) as opened:
        manifest = build_manifest(tree, stat_cache=cache_for(tmp_path, tree))
    assert opened == ["sub/kept.txt"]
    assert manifest == build_manifest(tree)


@pytest.mark.usefixtures("not_racy")
def test_a_changed_ignore_file_changes_what_is_bundled(tmp_path, tree):
    build_manifest(tree, stat_cache=cache_for(tmp_path, tree))
    time.sleep(0.05)
    (tree / "sub" / ".gitignore").write_text("*.txt\n")
    manifest = build_manifest(tree, stat_cache=cache_for(tmp_path, tree))
    assert manifest == build_manifest(tree)
    paths = [e.path for e in manifest.entries]
    assert "sub/skipped.log" in paths
    assert "sub/kept.txt" not in paths


@pytest.mark.usefixtures("not_racy")
def test_an_executable_bit_change_is_noticed(tmp_path, tree):
    build_manifest(tree, stat_cache=cache_for(tmp_path, tree))
    time.sleep(0.05)
    (tree / "sub" / "kept.txt").chmod(0o755)
    manifest = build_manifest(tree, stat_cache=cache_for(tmp_path, tree))
    assert manifest == build_manifest(tree)
    assert next(e for e in manifest.entries if e.path == "sub/kept.txt").executable


def test_a_racily_clean_file_is_read_again(tmp_path, tree):
    # Given files written just now (within RACY_SECONDS of being hashed)
    build_manifest(tree, stat_cache=cache_for(tmp_path, tree))
    # When the tree is versioned again at once
    with opens(tree) as opened:
        build_manifest(tree, stat_cache=cache_for(tmp_path, tree))
    # Then every file is read again: one written in the same clock tick after it was hashed
    # would have the same stat
    assert "sub/kept.txt" in opened
    assert len(opened) == len(build_manifest(tree).entries) - 1  # the symlink is not opened


@pytest.mark.usefixtures("not_racy")
def test_a_damaged_cache_file_is_an_empty_cache(tmp_path, tree):
    cache = cache_for(tmp_path, tree)
    build_manifest(tree, stat_cache=cache)
    cache.file.write_text("{not json")
    assert build_manifest(tree, stat_cache=cache_for(tmp_path, tree)) == build_manifest(tree)
    # ...and is written again, whole
    assert json.loads(cache.file.read_text())["root"] == os.path.abspath(tree)


@pytest.mark.usefixtures("not_racy")
def test_removed_files_leave_the_cache_and_few_folders_are_kept(tmp_path, tree, monkeypatch):
    cache = cache_for(tmp_path, tree)
    build_manifest(tree, stat_cache=cache)
    (tree / "sub" / "kept.txt").unlink()
    build_manifest(tree, stat_cache=cache_for(tmp_path, tree))
    assert "sub/kept.txt" not in json.loads(cache.file.read_text())["entries"]
    # At most MAX_FOLDERS folders are remembered
    monkeypatch.setattr(_statcache, "MAX_FOLDERS", 2)
    for i in range(4):
        other = tmp_path / f"other{i}"
        other.mkdir()
        (other / "a.py").write_text("a = 1\n")
        time.sleep(0.01)
        build_manifest(other, stat_cache=cache_for(tmp_path, other))
    assert len(list(cache.file.parent.glob("*.json"))) == 2


@pytest.mark.usefixtures("not_racy")
def test_local_source_resolve_keeps_its_stat_cache_under_the_cache_dir(settings, tree):
    from conveyor.sources.base import FetchContext

    source = LocalSource(tree)
    ctx = FetchContext(settings=settings)
    version = source.resolve(ctx)
    with opens(tree) as opened:
        assert source.resolve(ctx) == version
    assert opened == []
    assert list((settings.cache_dir / _statcache.STAT_DIR).glob("*.json"))

# ruff: noqa: F401, F811  (fixtures imported from fixtures.* are parameters here)
"""A git fetch that runs out of disk, on a real 20 MiB tmpfs holding the code cache: the mirror is
rolled back (no wedge), the error names the cache, its path and git's own cause, later fetches
work, and the mirror is a cache entry that ``conveyor cache ls`` lists and ``prune`` frees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cache_helpers import tree_files
from conveyor.cache import CodeCache
from conveyor.cli.cache import format_size
from conveyor.errors import CacheError
from conveyor.settings import Settings
from conveyor.sources.git import GitRepository
from conveyor.sources.git._cmd import OFFLINE
from conveyor.sources.store import BundleStore
from fixtures.git_server import Repos, git_repos_root, repos, run_git
from fixtures.small_disk import SmallDisk, small_disk

MiB = 1024 * 1024


def conveyor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "250"},
        timeout=60,
        check=False,
    )


def test_git_fetch_out_of_disk_leaves_no_wedged_mirror(
    small_disk: SmallDisk,
    repos: Repos,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a code cache on a 20 MiB disk (its budget, 2 GiB, is no help) holding a commit with
    # 6 MiB of incompressible data: its checkout and its git mirror take about 12 MiB
    root = small_disk.path / "cache"
    monkeypatch.setenv("CONVEYOR_CACHE_DIR", str(root))
    settings = Settings.from_env()
    cache = CodeCache.from_settings(settings)
    repo = repos.make("disk")
    first = repo.commit({"flow.py": "WORD = 'first'\n", "data.bin": os.urandom(6 * MiB)})
    source = GitRepository(repo.file_url)
    assert tree_files(cache.ensure(source, first))["flow.py"] == b"WORD = 'first'\n"
    mirror = root / source.key() / ".scratch" / "mirror.git"
    free_before = small_disk.free

    # When a commit that adds 12 MiB more is fetched
    second = repo.commit({"big.bin": os.urandom(12 * MiB)})
    with pytest.raises(CacheError) as caught:
        cache.ensure(source, second)

    # Then the error is one line naming the cache, the checkout's path and git's own cause
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"the code cache at {root} is out of space: could not fetch")
    assert str(root / source.key() / second) in message
    assert "No space left on device" in message
    assert "unpack-objects failed" in message  # git's last line, after the cause
    assert "CONVEYOR_CACHE_MAX_BYTES" in (caught.value.hint or "")
    assert "conveyor cache prune" in (caught.value.hint or "")

    # And what the failed fetch wrote is gone: the disk space is back, the mirror as it was
    assert small_disk.free >= free_before - 256 * 1024
    assert not (root / source.key() / second).exists()
    key_dir = root / source.key()
    assert [n for n in os.listdir(key_dir) if n.startswith((".tmp-", ".trash-"))] == []
    assert not (mirror / "conveyor-journal.json").exists()
    leftovers = [p.name for p in (mirror / "objects").rglob("tmp_*")]
    assert leftovers == []
    offline = ["--git-dir", str(mirror), *OFFLINE]  # no lazy fetch from the promisor remote
    assert run_git(*offline, "cat-file", "-t", first) == "commit"
    with pytest.raises(RuntimeError, match="Not a valid object name"):
        run_git(*offline, "cat-file", "-e", f"{second}^{{commit}}")

    # And later fetches work: another commit through the same mirror, and a 1 KB bundle
    run_git("checkout", "-q", "-b", "side", first, cwd=repo.work)
    side = repo.commit({"flow.py": "WORD = 'side'\n"}, branch="side")
    assert tree_files(cache.ensure(source, side))["flow.py"] == b"WORD = 'side'\n"
    project = tmp_path / "project"
    project.mkdir()
    (project / "flow.py").write_text("WORD = 'bundle'\n" + "#" * 1000 + "\n")
    store = BundleStore(tmp_path / "store")
    version = store.push(project)
    assert tree_files(cache.ensure(store, version))["flow.py"].startswith(b"WORD = 'bundle'")

    # And the mirror is a cache entry: listed with its size, and freed by a prune that says so
    [scratch] = [e for e in cache.entries() if e.kind == "scratch"]
    assert scratch.size > 6 * MiB
    listed = conveyor("cache", "ls")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if " scratch " in line)
    assert format_size(scratch.size) in row
    total = cache.info().used_bytes
    used_before_prune = small_disk.used
    pruned = conveyor("cache", "prune", "--max-bytes", "0")
    assert pruned.returncode == 0, pruned.stderr
    evicted_row = next(line for line in pruned.stdout.splitlines() if " scratch " in line)
    assert format_size(scratch.size) in evicted_row
    assert f"evicted 3 version(s) and 1 scratch directory, freed {format_size(total)}" in (
        pruned.stdout
    )
    assert not mirror.exists()
    assert cache.entries() == []
    assert used_before_prune - small_disk.used >= scratch.size + 6 * MiB

"""The cache's object store: each distinct file once, checkouts as hard links, stamps on use.

Versions share the files they have in common (counted by inode and link count); a new version
writes only what is new; a store file changed on disk is found on its next use (its stamp no
longer matches, so it is hashed) and fetched again, or `IntegrityError`; eviction frees what
it reports, shared files staying.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from pathlib import Path

import pytest

from conveyor import (
    _cacheentries,
    _cachefs,
    _cacheindex,
    _objects,
    _premade,
    _stamps,
    _verified,
)
from conveyor.bundles import compute_version
from conveyor.cache import CodeCache
from conveyor.errors import IntegrityError, VersionNotFound
from conveyor.sources.git import GitRepository
from conveyor.sources.git._checkout import TreeEntry, TreeWriter
from conveyor.sources.store import LocalStoreSource
from fixtures.git_server import Repo, Repos, git_repos_root, repos  # noqa: F401
from sources.contract import snapshot

REFETCH = "cached checkout does not match its version, fetching it again"


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def big_tree(count: int = 40) -> dict[str, bytes]:
    return {f"pkg{i % 4}/mod{i}.py": f"X = {i}\n".encode() * (50 + i) for i in range(count)}


def objects_on_disk(cache: CodeCache) -> dict[str, os.stat_result]:
    found = {}
    for shard in (cache.root / ".objects").iterdir():
        if shard.is_dir():
            found.update({p.name: p.lstat() for p in shard.iterdir()})
    return found


def assert_store_sound(cache: CodeCache) -> None:
    """Every stored object holds the bytes its name says, sealed."""
    for name, st in objects_on_disk(cache).items():
        data = (cache.objects.path(name)).read_bytes()
        assert hashlib.sha256(data).hexdigest() == name[:64], name
        assert stat.S_IMODE(st.st_mode) == (0o555 if name.endswith(".x") else 0o444)


@pytest.fixture
def store(tmp_path: Path) -> LocalStoreSource:
    return LocalStoreSource(tmp_path / "storage")


@pytest.fixture(autouse=True, params=["inline", "threads"])
def writers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test with a bundle's files written on the reading thread (small archives) and on
    the writer threads (large ones)."""
    import conveyor._unpack

    monkeypatch.setattr(conveyor._unpack, "_THREADED", 1 << 62 if request.param == "inline" else 0)
    return str(request.param)


def test_two_versions_sharing_files_store_them_once(
    tmp_path: Path, store: LocalStoreSource
) -> None:
    # Given two versions of a 40-file tree that differ in one file, plus one file that is the
    # same bytes as another but executable
    files = big_tree()
    tree = write_tree(tmp_path / "tree", files)
    (tree / "run.sh").write_bytes(files["pkg0/mod0.py"])
    (tree / "run.sh").chmod(0o755)
    first = store.push(tree)
    (tree / "pkg1/mod1.py").write_bytes(b"X = 'changed'\n")
    second = store.push(tree)
    cache = CodeCache(tmp_path / "cache", max_bytes=10**9)

    # When both are in the cache
    a = cache.ensure(store, first)
    b = cache.ensure(store, second)

    # Then every file they share is one inode linked from both (and from the store)
    for rel in files:
        same = rel != "pkg1/mod1.py"
        assert ((a / rel).stat().st_ino == (b / rel).stat().st_ino) is same, rel
        if same and rel != "pkg0/mod0.py":
            assert (a / rel).stat().st_nlink == 3, rel  # the store, a, b
    # ...the executable twin is an object of its own (a link shares the mode)
    assert (a / "run.sh").stat().st_ino != (a / "pkg0/mod0.py").stat().st_ino
    assert os.access(a / "run.sh", os.X_OK)
    assert not os.access(a / "pkg0/mod0.py", os.X_OK)
    # ...and the store holds each distinct file once: 41 files + 1 changed + 2 manifests
    stored = objects_on_disk(cache)
    assert len(stored) == 44
    info = cache.info()
    assert info.object_count == 44
    assert info.object_bytes == sum(st.st_size for st in stored.values())
    assert info.used_bytes == info.object_bytes
    assert sum(e.size for e in cache.entries()) > info.used_bytes  # as if nothing were shared
    assert_store_sound(cache)


def test_a_new_version_writes_only_the_files_that_are_new(
    tmp_path: Path, store: LocalStoreSource, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a cached version of a 40-file tree
    tree = write_tree(tmp_path / "tree", big_tree())
    cache = CodeCache(tmp_path / "cache", max_bytes=10**9)
    cache.ensure(store, store.push(tree))
    before = set(objects_on_disk(cache))
    # When a version changing one file is filled
    (tree / "pkg2/mod2.py").write_bytes(b"X = 'new'\n")
    caplog.set_level(logging.INFO, logger="conveyor")
    second = cache.ensure(store, store.push(tree))
    # Then 39 files were linked from the store; only the new file and manifest were stored
    assert "files=41 linked=39 " in caplog.text
    assert set(objects_on_disk(cache)) - before == {
        hashlib.sha256(b"X = 'new'\n").hexdigest(),
        hashlib.sha256((second / ".conveyor/manifest.json").read_bytes()).hexdigest(),
    }


def test_a_git_commit_changing_one_file_links_the_others(
    tmp_path: Path,
    repos: Repos,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a repository's commit in the cache
    repo = repos.make("objects")
    first = repo.commit({k: v.decode() for k, v in big_tree(20).items()})
    source = GitRepository(repo.file_url)
    cache = CodeCache(tmp_path / "cache", max_bytes=10**9)
    a = cache.ensure(source, first)
    # When a commit changing one file is filled
    second = repo.commit({"pkg3/mod3.py": "X = 'three'\n"})
    caplog.set_level(logging.INFO, logger="conveyor")
    b = cache.ensure(source, second)
    # Then the 19 unchanged files are the same inodes, found by their git blob ids
    assert "files=20 linked=19 " in caplog.text
    assert (a / "pkg0/mod0.py").stat().st_ino == (b / "pkg0/mod0.py").stat().st_ino
    assert (b / "pkg3/mod3.py").read_text() == "X = 'three'\n"
    with cache.checkout(source, second) as path:
        assert snapshot(path)["pkg3/mod3.py"][1] == b"X = 'three'\n"
    assert_store_sound(cache)


def test_a_warm_use_hashes_nothing_and_a_changed_stat_hashes_only_that_file(
    tmp_path: Path, store: LocalStoreSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a cached version
    tree = write_tree(tmp_path / "tree", big_tree())
    version = store.push(tree)
    cache = CodeCache(tmp_path / "cache", max_bytes=10**9)
    path = cache.ensure(store, version)
    hashed: list[str] = []
    real = _objects.hash_file

    def counting(target: Path | str) -> tuple[str, os.stat_result]:
        hashed.append(os.path.basename(target))
        return real(target)

    monkeypatch.setattr(_objects, "hash_file", counting)
    # When it is used: no file is hashed (every stat matches its stamp)
    with cache.checkout(store, version):
        pass
    assert hashed == []
    # When one object's ctime changes without its bytes (a chmod there and back)
    os.chmod(path / "pkg0/mod4.py", 0o644)
    os.chmod(path / "pkg0/mod4.py", 0o444)
    with cache.checkout(store, version):
        pass
    # Then that file alone is hashed, found intact, and stamped again
    assert hashed == ["mod4.py"]
    with cache.checkout(store, version):
        pass
    assert hashed == ["mod4.py"]


def _tamper_keeping_the_stat(path: Path) -> None:
    """Flip a byte of a sealed file and put its size and mtime back: only the ctime tells."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[0] ^= 0x20
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))
    os.chmod(path, stat.S_IMODE(st.st_mode))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_tampered_store_object_is_found_on_next_use_and_fetched_again(
    tmp_path: Path, store: LocalStoreSource, caplog: pytest.LogCaptureFixture
) -> None:
    # Given two cached versions sharing a file
    tree = write_tree(tmp_path / "tree", big_tree())
    first = store.push(tree)
    (tree / "pkg1/mod1.py").write_bytes(b"X = 1\n")
    second = store.push(tree)
    cache = CodeCache(tmp_path / "cache", max_bytes=10**9)
    cache.ensure(store, first)
    cache.ensure(store, second)
    name = hashlib.sha256(big_tree()["pkg0/mod0.py"]).hexdigest()
    # When the stored object of that file is changed in place, its size and mtime kept
    _tamper_keeping_the_stat(cache.objects.path(name))
    # Then each version's next use finds it, fetches the version again, and holds the bytes
    caplog.set_level(logging.WARNING, logger="conveyor")
    for version in (first, second):
        with cache.checkout(store, version) as path:
            assert (path / "pkg0/mod0.py").read_bytes() == big_tree()["pkg0/mod0.py"]
    assert sum(REFETCH in r.getMessage() for r in caplog.records) == 2
    assert "mod0.py: content differs" in caplog.text
    assert_store_sound(cache)


def test_a_tampered_object_the_source_cannot_fetch_again_is_never_handed_out(
    tmp_path: Path, store: LocalStoreSource, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a cached version whose bundle is then gone from its store, and a tampered file
    tree = write_tree(tmp_path / "tree", big_tree())
    version = store.push(tree)
    cache = CodeCache(tmp_path / "cache", max_bytes=10**9)
    path = cache.ensure(store, version)
    for archive in (tmp_path / "storage").rglob("*.tar.zst"):
        archive.unlink()
    _tamper_keeping_the_stat(path / "pkg3/mod7.py")
    # When it is used, the tampered file is named, and the fetch that would repair it fails
    caplog.set_level(logging.WARNING, logger="conveyor")
    with pytest.raises(VersionNotFound), cache.checkout(store, version):
        pytest.fail("a tampered checkout was handed out")
    assert "pkg3/mod7.py: content differs" in caplog.text
    # ...and neither the checkout nor the tampered object is left to be trusted
    assert not cache.path_for(store, version).exists()
    assert_store_sound(cache)


def test_lost_stamps_only_cost_a_hash(tmp_path: Path, store: LocalStoreSource) -> None:
    # Given a cached version whose stamp database is lost, and one tampered object
    tree = write_tree(tmp_path / "tree", big_tree())
    version = store.push(tree)
    cache = CodeCache(tmp_path / "cache", max_bytes=10**9)
    path = cache.ensure(store, version)
    (tmp_path / "cache/.objects/stamps.log").unlink()
    _stamps._READS.clear()  # as a new process would start
    _tamper_keeping_the_stat(path / "pkg2/mod2.py")
    # When it is used
    with cache.checkout(store, version) as used:
        # Then every file was hashed, the tampered one found and fetched again
        assert (used / "pkg2/mod2.py").read_bytes() == big_tree()["pkg2/mod2.py"]
    assert compute_version(used) == version
    assert len(cache.objects.stamps.get(n for n, _ in _index(used).files.values())) == 41


def _index(path: Path) -> _cacheindex.Index:
    index = _cacheindex.read_index(path)
    assert index is not None
    return index


def test_eviction_with_shared_files_frees_what_it_reports(
    tmp_path: Path, store: LocalStoreSource
) -> None:
    # Given three versions that share all but one 4 kB file each, oldest first
    files = big_tree()
    tree = write_tree(tmp_path / "tree", files)
    versions = []
    for i in range(3):
        (tree / "own.bin").write_bytes(bytes([i]) * 4096)
        versions.append(store.push(tree))
    cache = CodeCache(tmp_path / "cache", max_bytes=10**9)
    for version in versions:
        cache.ensure(store, version)
    used = cache.info().used_bytes
    on_disk = sum(st.st_size for st in objects_on_disk(cache).values())
    assert used == on_disk

    # When the budget leaves room for a little less than everything
    evicted = cache.prune(max_bytes=used - 1)

    # Then the oldest version alone went; it freed its own file and manifest, nothing shared
    assert [e.version for e in evicted] == [versions[0]]
    assert evicted[0].freed == evicted[0].size - sum(len(b) for b in files.values())
    after = sum(st.st_size for st in objects_on_disk(cache).values())
    assert on_disk - after == evicted[0].freed
    assert cache.info().used_bytes == after <= used - 1
    for rel in files:  # the shared files stayed, linked by the two versions left
        assert (cache.path_for(store, versions[1]) / rel).stat().st_nlink == 3
    assert_store_sound(cache)


def test_the_use_right_after_a_fill_is_not_walked_again_but_every_later_one_is(
    tmp_path: Path,
    repos: Repos,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a repository with two commits, the first cached
    repo = repos.make("fresh")
    first = repo.commit({k: v.decode() for k, v in big_tree(12).items()})
    second = repo.commit({"pkg1/mod1.py": "X = 'one'\n"})
    source = GitRepository(repo.file_url)
    cache = CodeCache(tmp_path / "cache", max_bytes=10**9)
    cache.ensure(source, first)
    walks: list[Path] = []
    real = _verified.check
    monkeypatch.setattr(_verified, "check", lambda path, *a: walks.append(path) or real(path, *a))
    # When the second commit is checked out cold: the fill checked every file, so the use it
    # hands back is not walked again
    with cache.checkout(source, second) as path:
        assert (path / "pkg1/mod1.py").read_text() == "X = 'one'\n"
    assert walks == []
    # Then a file changed afterwards is found on the next use, and the version fetched again
    _tamper_keeping_the_stat(path / "pkg0/mod4.py")
    caplog.set_level(logging.WARNING, logger="conveyor")
    with cache.checkout(source, second) as again:
        assert (again / "pkg0/mod4.py").read_bytes() == big_tree(12)["pkg0/mod4.py"]
    assert sum(REFETCH in r.getMessage() for r in caplog.records) == 1
    assert "pkg0/mod4.py: content differs" in caplog.text
    assert walks == [path]  # the walk that found it; the refetch's own use was not walked
    # ...and every later use is walked
    with cache.checkout(source, second):
        pass
    assert walks == [path, path]
    assert_store_sound(cache)


def test_a_git_blob_that_does_not_hash_to_its_id_is_refused_as_it_is_written(
    tmp_path: Path,
) -> None:
    # Given a tree writer filling the cache, and a blob whose bytes are not those of its id
    cache = CodeCache(tmp_path / "cache", max_bytes=10**9)
    fill = _objects.Fill(cache.objects)
    dest = tmp_path / "dest"
    dest.mkdir()
    writer = TreeWriter(dest, fill)
    good = hashlib.sha1(b"blob 6\0X = 1\n").hexdigest()  # git's blob id
    # When it is written, then it is refused, naming the file; a blob that matches is written
    with pytest.raises(IntegrityError, match=r"pkg/a\.py"):
        writer.file(TreeEntry("100644", "blob", good, "pkg/a.py"), b"X = 2\n")
    writer.file(TreeEntry("100644", "blob", good, "pkg/b.py"), b"X = 1\n")
    assert (dest / "pkg/b.py").read_bytes() == b"X = 1\n"
    fill.close()


def _orphan(cache: CodeCache, key_dir: Path, version: str, data: bytes) -> Path:
    """What a fill of ``version`` killed mid-way leaves: its temporary directory linking a stored
    object that no checkout links."""
    name = hashlib.sha256(data).hexdigest()
    obj = cache.objects.path(name)
    obj.parent.mkdir(parents=True, exist_ok=True)
    obj.write_bytes(data)
    obj.chmod(0o444)
    tmp = key_dir / _cachefs.temp_name(_cachefs.TMP_PREFIX, version)
    tmp.mkdir()
    os.link(obj, tmp / "left.py")
    return obj


def test_fills_remove_objects_a_killed_fill_left_and_sweep_the_store_now_and_then(
    tmp_path: Path, store: LocalStoreSource
) -> None:
    # Given a cached version, and the debris of a fill of the next version that was killed
    tree = write_tree(tmp_path / "tree", big_tree())
    cache = CodeCache(tmp_path / "cache", max_bytes=10**9)
    first = cache.ensure(store, store.push(tree))
    (tree / "pkg0/mod0.py").write_bytes(b"X = 'next'\n")
    second = store.push(tree)
    orphan = _orphan(cache, first.parent, second, b"left by a killed fill\n")
    # When that version is filled: its stale directory is removed, and the object only it
    # linked with it (the fill's own prunes sweep the store after removing a tree)
    cache.ensure(store, second)
    assert not orphan.exists()
    # Given an unlinked object nothing announced (an eviction killed between its two steps)
    stray = cache.objects.path(hashlib.sha256(b"stray\n").hexdigest())
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"stray\n")
    (tree / "pkg0/mod0.py").write_bytes(b"X = 'third'\n")
    cache.ensure(store, store.push(tree))
    assert stray.exists()  # a fill right after a sweep does not walk the store again...
    # When the last sweep is older than SWEEP_EVERY, the next fill's prune sweeps
    old = time.time() - _cacheentries.SWEEP_EVERY - 1
    os.utime(cache.objects.root / ".swept", (old, old))
    (tree / "pkg0/mod0.py").write_bytes(b"X = 'fourth'\n")
    cache.ensure(store, store.push(tree))
    assert not stray.exists()
    assert_store_sound(cache)


def _dirs(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir()}


def test_a_git_commit_moving_directories_has_exactly_its_own(
    tmp_path: Path,
    repos: Repos,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a commit in the cache with nested directories (a fill of the next commit makes
    # these ahead, while it fetches)
    repo = repos.make("dirs")
    first = repo.commit({"a/x.py": "A\n", "b/c/y.py": "Y\n", "b/z.py": "Z\n", "top.py": "T\n"})
    source = GitRepository(repo.file_url)
    cache = CodeCache(tmp_path / "cache", max_bytes=10**9)
    assert _dirs(cache.ensure(source, first)) == {"a", "b", "b/c"}
    made: list[list[str]] = []
    real = _premade.Premade.join
    monkeypatch.setattr(_premade.Premade, "join", lambda self: made.append(real(self)) or made[-1])
    # When a commit that removes b/ and adds d/e/ and a file named like the old directory is
    # checked out
    second = repo.commit({"d/e/w.py": "W\n", "b": "now a file\n"}, remove=("b",))
    with cache.checkout(source, second) as path:
        # Then it has exactly that commit's directories and files, none left from the first
        assert _dirs(path) == {"a", "d", "d/e"}
        assert snapshot(path) == {
            "a/x.py": ("file", b"A\n", False),
            "b": ("file", b"now a file\n", False),
            "d/e/w.py": ("file", b"W\n", False),
            "top.py": ("file", b"T\n", False),
        }
    assert _index(path).dirs == {"a", "d", "d/e"}
    assert made == [["a", "b", "b/c"]]  # made ahead from the first commit's shape, then settled


def _spares(key_dir: Path, dirs: set[str], timeout: float = 20.0) -> list[Path]:
    """The source's spare directory sets, once one holds all of ``dirs`` (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        found = sorted(key_dir.glob(f"{_premade.SPARE_PREFIX}*"))
        if any(_dirs(spare) == dirs for spare in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def _cached_with_spare(
    tmp_path: Path, made_by: Repos, name: str, files: dict[str, str], dirs: set[str]
) -> tuple[Repo, GitRepository, CodeCache, Path, Path]:
    """A repository's first commit (``files``) in a new cache, and the spare of its ``dirs``
    made after the fill: (repo, source, cache, the source's directory, the spare)."""
    repo = made_by.make(name)
    first = repo.commit(files)
    source = GitRepository(repo.file_url)
    cache = CodeCache(tmp_path / "cache", max_bytes=10**9)
    key_dir = cache.ensure(source, first).parent
    (spare,) = _spares(key_dir, dirs)
    return repo, source, cache, key_dir, spare


def test_a_git_fill_puts_the_spare_directories_of_the_last_one_in_place(
    tmp_path: Path,
    repos: Repos,  # noqa: F811
) -> None:
    # Given a commit in the cache, and the spare set of its directories made after its fill
    files = {"a/x.py": "A\n", "b/c/y.py": "Y\n", "top.py": "T\n"}
    repo, source, cache, key_dir, spare = _cached_with_spare(
        tmp_path, repos, "spares", files, {"a", "b", "b/c"}
    )
    spare_a = (spare / "a").stat().st_ino
    # When the next commit, which drops b/c and adds d, is checked out
    second = repo.commit({"d/w.py": "W\n"}, remove=("b",))
    with cache.checkout(source, second) as path:
        # Then its directories are the spare's (not made again), exactly the commit's
        assert (path / "a").stat().st_ino == spare_a
        assert _dirs(path) == {"a", "d"}
        assert snapshot(path) == {
            "a/x.py": ("file", b"A\n", False),
            "d/w.py": ("file", b"W\n", False),
            "top.py": ("file", b"T\n", False),
        }
    assert not spare.exists()
    # And a spare of the new shape replaces it, one per source
    (new,) = _spares(key_dir, {"a", "d"})
    assert _dirs(new) == {"a", "d"}
    # And evicting the source's mirror takes its spare too
    evicted = cache.prune(max_bytes=0)
    assert "scratch" in {e.kind for e in evicted}
    assert list(key_dir.glob(f"{_premade.SPARE_PREFIX}*")) == []


def test_a_spare_of_another_shape_or_holding_a_file_never_reaches_a_checkout(
    tmp_path: Path,
    repos: Repos,  # noqa: F811
) -> None:
    # Given a commit in the cache and its spare, with a file planted in it
    files = {"a/x.py": "A\n", "top.py": "T\n"}
    repo, source, cache, key_dir, spare = _cached_with_spare(
        tmp_path, repos, "spare-planted", files, {"a"}
    )
    (spare / "a" / "planted.py").write_text("import os\n")
    # and a spare of another shape, with a directory no commit has
    other = key_dir / f"{_premade.SPARE_PREFIX}{'0' * 16}-00000000"
    (other / "evil").mkdir(parents=True)
    # When the next commit is checked out
    second = repo.commit({"a/y.py": "Y\n"})
    # Then the fill that met the planted file refuses it (nothing of it is kept)
    with pytest.raises(IntegrityError, match=r"planted\.py: unexpected file"):
        with cache.checkout(source, second):
            pass
    # And the next one, with no spare left, checks out the commit
    with cache.checkout(source, second) as path:
        pass
    # And it holds exactly the commit: no planted file, no directory of the other spare
    assert snapshot(path) == {
        "a/x.py": ("file", b"A\n", False),
        "a/y.py": ("file", b"Y\n", False),
        "top.py": ("file", b"T\n", False),
    }
    assert _dirs(path) == {"a"}
    # And the spare of the other shape is gone
    _spares(key_dir, {"a"})
    assert not other.exists()


def test_a_spare_left_half_made_by_a_killed_process_is_completed_by_the_next_fill(
    tmp_path: Path,
    repos: Repos,  # noqa: F811
) -> None:
    # Given a commit in the cache whose spare a killed process left half made (its first
    # directory only: what a SIGKILL in the middle of `make_spare` leaves)
    files = {"a/x.py": "A\n", "b/c/y.py": "Y\n", "b/z.py": "Z\n"}
    repo, source, cache, _key_dir, spare = _cached_with_spare(
        tmp_path, repos, "spare-half", files, {"a", "b", "b/c"}
    )
    for rel in ("b/c", "b"):
        (spare / rel).rmdir()
    # When the next commit is checked out
    second = repo.commit({"b/c/w.py": "W\n"})
    with cache.checkout(source, second) as path:
        # Then it has exactly that commit's directories and files
        assert _dirs(path) == {"a", "b", "b/c"}
        assert snapshot(path) == {
            "a/x.py": ("file", b"A\n", False),
            "b/c/w.py": ("file", b"W\n", False),
            "b/c/y.py": ("file", b"Y\n", False),
            "b/z.py": ("file", b"Z\n", False),
        }
    assert not spare.exists()


def _record_elsewhere(path: Path, name: str, stamp: _stamps.Stamp) -> None:
    """Another process appends a stamp record to the same book (one O_APPEND write)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, _stamps._pack(name, stamp))
    finally:
        os.close(fd)


def test_a_stamp_book_reads_what_others_appended_but_not_its_own_records_again(
    tmp_path: Path,
) -> None:
    # Given a stamp book this process writes to
    path = tmp_path / "stamps.log"
    book = _stamps.StampBook(path)
    mine, theirs, later = ("a" * 64, "b" * 64, "c" * 64 + ".x")
    book.record([(mine, _stamps.Stamp(1, 2, 3, 4))])
    assert book.get([mine]) == {mine: (1, 2, 3, 4)}
    # When another process appends, then this one appends again before reading
    _record_elsewhere(path, theirs, _stamps.Stamp(5, 6, 7, 8))
    book.record([(later, _stamps.Stamp(9, 10, 11, 12))])
    # Then this process sees all three (its own later records did not hide the other's)
    assert book.get([mine, theirs, later]) == {
        mine: (1, 2, 3, 4),
        theirs: (5, 6, 7, 8),
        later: (9, 10, 11, 12),
    }
    # ...and a new process reading the file sees the same
    _stamps._READS.clear()
    assert _stamps.StampBook(path).get([mine, theirs, later]) == book.get([mine, theirs, later])

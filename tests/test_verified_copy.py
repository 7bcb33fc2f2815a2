"""`CodeCache.copy_out`: every copy out of the cache is checked against the version first.

A cached checkout is tampered with on disk (its content, modes, links, an extra module, a fifo,
the evidence kept beside it) between uses: the copy must hold the version's bytes anyway (the
checkout is discarded and fetched again, once), or fail with `IntegrityError` naming the file.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from cache_helpers import FakeSource, expected_files, tree_files
from conveyor.bundles import MANIFEST_PATH, build_manifest, compute_version, lay_out_tree
from conveyor.cache import CodeCache, proof_path
from conveyor.errors import ConfigError, IntegrityError
from conveyor.sources.base import FetchContext
from conveyor.sources.git import GitRepository
from conveyor.sources.local import LocalSource
from fixtures.git_server import Repos, git_repos_root, repos, run_git  # noqa: F401
from sources.contract import snapshot

REFETCH = "cached checkout does not match its version, fetching it again"


def write_project(root: Path, word: str = "pristine") -> Path:
    files = {
        "payload.py": f"WORD = {word!r}\n",
        "flows.py": "from payload import WORD\n",
        "sub/mod.py": "X = 1\n",
        "bin/run.sh": "#!/bin/sh\necho run\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "bin/run.sh").chmod(0o755)
    (root / "alias.py").symlink_to("payload.py")
    return root


def writable(path: Path) -> Path:
    """What a flow running as the cache's owner does first: undo the seal on the way to ``path``
    (the sealed directories only: the system's own, such as a sticky ``/tmp``, keep their mode)."""
    for parent in reversed(path.parents):
        info = os.lstat(parent)
        if stat.S_ISDIR(info.st_mode) and not info.st_mode & stat.S_IWUSR:
            os.chmod(parent, stat.S_IMODE(info.st_mode) | 0o700)
    if path.exists() and not path.is_symlink():
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return path


def _content(checkout: Path) -> None:
    writable(checkout / "payload.py").write_text("WORD = 'tampered'\n")


def _same_size_byte(checkout: Path) -> None:
    data = bytearray((checkout / "payload.py").read_bytes())
    data[8] ^= 0x01
    writable(checkout / "payload.py").write_bytes(bytes(data))


def _mode(checkout: Path) -> None:
    writable(checkout / "payload.py").chmod(0o755)


def _extra_module(checkout: Path) -> None:
    writable(checkout / "json.py").write_text("raise SystemExit('shadowed the stdlib')\n")


def _symlink_out(checkout: Path) -> None:
    writable(checkout / "payload.py").unlink()
    (checkout / "payload.py").symlink_to("/etc/hostname")


def _fifo(checkout: Path) -> None:
    writable(checkout / "payload.py").unlink()
    os.mkfifo(checkout / "payload.py")


def _missing(checkout: Path) -> None:
    writable(checkout / "sub/mod.py").unlink()


def _link_target(checkout: Path) -> None:
    writable(checkout / "alias.py").unlink()
    (checkout / "alias.py").symlink_to("bin/run.sh")


def _dir_swapped_for_link(checkout: Path) -> None:
    elsewhere = checkout.parent.parent / "elsewhere"
    shutil.copytree(checkout / "sub", elsewhere)
    writable(checkout / "sub")
    shutil.rmtree(checkout / "sub")
    (checkout / "sub").symlink_to(elsewhere)


def _proof_tampered(checkout: Path) -> None:
    proof = proof_path(checkout)
    data = proof.read_bytes().replace(b'"size":18', b'"size":19')
    os.chmod(proof, 0o644)
    proof.write_bytes(data)


def _proof_missing(checkout: Path) -> None:
    proof_path(checkout).unlink()


TAMPERING: dict[str, Callable[[Path], None]] = {
    "content": _content,
    "one-byte": _same_size_byte,
    "executable-bit": _mode,
    "extra-module": _extra_module,
    "symlink-out": _symlink_out,
    "fifo": _fifo,
    "missing": _missing,
    "link-target": _link_target,
    "dir-swapped-for-link": _dir_swapped_for_link,
    "proof-tampered": _proof_tampered,
    "proof-missing": _proof_missing,
}


@pytest.mark.parametrize("walked", [False, True], ids=["first-walk", "later-walk"])
@pytest.mark.parametrize("tamper", list(TAMPERING.values()), ids=list(TAMPERING))
def test_a_tampered_checkout_is_fetched_again_and_the_copy_holds_the_version(
    tamper: Callable[[Path], None], walked: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a local folder's version in the cache, copied out once (and, for a later walk,
    # checked once since: the next check of this process stats the files by path)
    project = write_project(tmp_path / "project")
    version = compute_version(project)
    cache = CodeCache(tmp_path / "cache", max_bytes=10**9)
    source = LocalSource(project)
    first = cache.copy_out(source, version, tmp_path / "first")
    assert first.files == 6  # the five files and the bundle manifest (.conveyor/)
    assert snapshot(tmp_path / "first", skip=(".conveyor",)) == snapshot(project)
    assert compute_version(tmp_path / "first") == version
    if walked:
        with cache.checkout(source, version):
            pass
    # When the cached checkout is changed on disk
    checkout = cache.ensure(source, version)
    tamper(checkout)
    # Then the next copy still holds exactly the version (fetched again, once)
    caplog.set_level(logging.WARNING, logger="conveyor")
    cache.copy_out(source, version, tmp_path / "second")
    assert snapshot(tmp_path / "second") == snapshot(tmp_path / "first")
    assert (tmp_path / "second/payload.py").read_text() == "WORD = 'pristine'\n"
    assert sum(REFETCH in r.getMessage() for r in caplog.records) == 1
    # ...and the cache holds the version again: the copy after that needs no fetch
    caplog.clear()
    cache.copy_out(source, version, tmp_path / "third")
    assert snapshot(tmp_path / "third") == snapshot(tmp_path / "first")
    assert not [r for r in caplog.records if REFETCH in r.getMessage()]


class DriftingFolder(LocalSource):
    """A folder source that hands out whatever the folder holds now, with the manifest of the
    version it was asked for (as a bundle store whose archive was tampered with would)."""

    kind = "test-drifting"

    def fetch(self, version: str, dest: Path, ctx: FetchContext | None = None) -> None:
        pinned = self.path.parent / f"{version}.manifest"
        if not pinned.exists():
            pinned.write_bytes(build_manifest(self.path).canonical())
        lay_out_tree(self.path, dest)
        (dest / MANIFEST_PATH).write_bytes(pinned.read_bytes())


def test_a_mismatch_the_source_cannot_repair_fails_naming_the_file(tmp_path: Path) -> None:
    # Given a version in the cache whose source has since changed the same file
    project = write_project(tmp_path / "project")
    version = compute_version(project)
    cache = CodeCache(tmp_path / "cache", max_bytes=10**9)
    source = DriftingFolder(project)
    cache.copy_out(source, version, tmp_path / "first")
    (project / "payload.py").write_text("WORD = 'tampered'\n")
    _content(cache.ensure(source, version))
    # When the version is copied out
    dest = tmp_path / "dest"
    with pytest.raises(IntegrityError, match=r"payload\.py") as caught:
        cache.copy_out(source, version, dest)
    # Then the error names the file, and not a byte of the tampered code was handed out
    assert caught.value.path == "payload.py"
    assert "content differs" in str(caught.value)
    assert dest.is_dir()
    assert list(dest.iterdir()) == []
    assert not cache.path_for(source, version).exists()


def test_copy_out_refuses_a_destination_that_is_not_empty(tmp_path: Path) -> None:
    project = write_project(tmp_path / "project")
    cache = CodeCache(tmp_path / "cache", max_bytes=10**9)
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest/keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an empty directory"):
        cache.copy_out(LocalSource(project), compute_version(project), tmp_path / "dest")
    assert (tmp_path / "dest/keep.txt").read_text() == "mine"


def test_a_source_without_digests_has_every_copy_checked_all_the_same(tmp_path: Path) -> None:
    # Given a source whose versions are not bundles (it only has `verify`: no evidence to keep)
    source = FakeSource("plain", state=str(tmp_path / "state"))
    cache = CodeCache(tmp_path / "cache", max_bytes=10**9)
    cache.copy_out(source, "v1", tmp_path / "first")
    assert not proof_path(cache.path_for(source, "v1")).exists()
    # When its checkout is corrupted on disk
    writable(cache.path_for(source, "v1") / "data.bin").write_bytes(b"corrupt")
    # Then the copy is checked (against the stamps of the files verified when it was fetched),
    # the version fetched again, and the copy is right
    cache.copy_out(source, "v1", tmp_path / "second")
    assert tree_files(tmp_path / "second") == expected_files("v1", 1000)
    assert source.fetches == 2


# -- git: the commit's own objects are the evidence ---------------------------------------------


def _superproject(repos: Repos) -> tuple[str, str]:  # noqa: F811 - the fixture's type
    lib = repos.make("lib")
    lib.commit({"lib.py": "L = 1\n", "deep/x.py": "X = 1\n"})
    app = repos.make("app")
    app.commit(
        {
            "flows/a/main.py": "A = 1\n",
            "flows/b/main.py": "B = 1\n",
            "README.md": "top\n",
            "bin/run.sh": "#!/bin/sh\n",
        },
        executable=("bin/run.sh",),
        symlinks={"flows/a/alias.py": "main.py"},
    )
    run_git("submodule", "add", "-q", f"../{lib.bare.name}", "flows/a/lib", cwd=app.work)
    return app.file_url, app.commit({}, message="add lib")


@pytest.mark.parametrize(
    ("options", "target"),
    [
        ({}, "flows/b/main.py"),
        ({"include_submodules": True}, "flows/a/lib/deep/x.py"),
        ({"directories": ["flows/a"], "include_submodules": True}, "flows/a/lib/lib.py"),
    ],
    ids=["whole-tree", "submodules", "sparse-submodules"],
)
def test_git_checkouts_are_checked_against_the_commit_on_every_copy(
    options: dict[str, object],
    target: str,
    repos: Repos,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a commit (with a submodule, a symlink and an executable) in the cache
    url, sha = _superproject(repos)
    source = GitRepository(url, **options)  # type: ignore[arg-type]
    cache = CodeCache(tmp_path / "cache", max_bytes=10**9)
    cache.copy_out(source, sha, tmp_path / "first")
    checkout = cache.ensure(source, sha)
    assert snapshot(tmp_path / "first") == snapshot(checkout)
    sparse = "directories" in options
    assert ("flows/b/main.py" in snapshot(checkout)) is not sparse
    assert sparse or os.access(tmp_path / "first/bin/run.sh", os.X_OK)
    # When a file is changed in the cached checkout, then the kept objects
    caplog.set_level(logging.WARNING, logger="conveyor")
    writable(checkout / target).write_text("tampered\n")
    cache.copy_out(source, sha, tmp_path / "second")
    proof = proof_path(cache.ensure(source, sha))
    data = proof.read_bytes()
    os.chmod(proof, 0o644)
    proof.write_bytes(data.replace(b"main.py", b"main.pz", 1))
    cache.copy_out(source, sha, tmp_path / "third")
    # Then every copy holds the commit's bytes: the checkout was fetched again each time
    assert snapshot(tmp_path / "second") == snapshot(tmp_path / "first")
    assert snapshot(tmp_path / "third") == snapshot(tmp_path / "first")
    assert sum(REFETCH in r.getMessage() for r in caplog.records) == 2
    assert "does not hash to its id" in caplog.text

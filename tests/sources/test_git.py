# ruff: noqa: F401, F811  (fixtures imported from fixtures.git_server are parameters here)
"""`GitRepository` on ``file://`` repositories: the source contract, resolve, fetch through the
mirror, sparse directories, submodules, verification, validation and specs."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from conveyor.cache import CodeCache
from conveyor.errors import (
    ConfigError,
    IntegrityError,
    SourceNotFound,
    UnsafeArchive,
    VersionNotFound,
)
from conveyor.sources import Source, source_from_spec, source_from_url
from conveyor.sources.base import FetchContext
from conveyor.sources.git import GitRepository
from fixtures.git_server import Repo, Repos, git_repos_root, repos, run_git
from sources.contract import SourceContract, snapshot, write_known_tree


@pytest.fixture
def known(tmp_path: Path) -> Path:
    return write_known_tree(tmp_path / "known")


@pytest.fixture
def known_repo(repos: Repos, known: Path) -> Repo:
    repo = repos.make("known")
    shutil.copytree(known, repo.work, symlinks=True, dirs_exist_ok=True)
    repo.commit({}, message="known tree")
    return repo


class TestGitRepositoryFile(SourceContract):
    unknown_version = "0123456789abcdef0123456789abcdef01234567"
    metadata_dirs = ()

    @pytest.fixture
    def tree(self, known: Path) -> Path:
        return known

    @pytest.fixture
    def source(self, known_repo: Repo) -> GitRepository:
        return GitRepository(known_repo.file_url)

    @pytest.fixture
    def missing_source_factory(self, tmp_path: Path) -> Callable[[], Source]:
        return lambda: GitRepository(f"file://{tmp_path}/no/such/repo.git")


def test_missing_repository_is_source_not_found(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFound, match="not found"):
        GitRepository(f"file://{tmp_path}/nope.git").resolve()


def test_resolve_branch_tag_head_and_short_sha(repos: Repos) -> None:
    repo = repos.make()
    first = repo.commit({"a.py": "A = 1\n"})
    repo.tag("v1")
    repo.tag("light", annotated=False)
    second = repo.commit({"a.py": "A = 2\n"})
    dev = repo.commit({"b.py": "B = 1\n"}, branch="dev")

    assert GitRepository(repo.file_url).resolve() == second
    assert GitRepository(repo.file_url, branch="main").resolve() == second
    assert GitRepository(repo.file_url, branch="dev").resolve() == dev
    assert GitRepository(repo.file_url, branch="v1").resolve() == first  # annotated: peeled
    assert GitRepository(repo.file_url, branch="light").resolve() == first
    assert GitRepository(repo.file_url, branch="refs/heads/dev").resolve() == dev
    assert GitRepository(repo.file_url, commit_sha=first[:8]).resolve() == first
    assert GitRepository(repo.file_url, commit_sha=first.upper()).resolve() == first
    with pytest.raises(VersionNotFound, match="no branch or tag 'nope'") as missing:
        GitRepository(repo.file_url, branch="nope").resolve()
    assert (
        missing.value.hint
        == f"check the name against `git ls-remote --heads --tags {repo.file_url}`"
    )
    # a commit written as the branch (Prefect's git_clone has branch and commit_sha) says so
    with pytest.raises(VersionNotFound, match=f"no branch or tag '{first[:10]}'") as commit:
        GitRepository(repo.file_url, branch=first[:10]).resolve()
    assert commit.value.hint == (
        f"to pin a commit, pass commit_sha='{first[:10]}' (--commit-sha) instead of branch"
    )


def test_short_sha_not_at_a_branch_tip_is_resolved_by_fetching_history(repos: Repos) -> None:
    repo = repos.make()
    old = repo.commit({"a.py": "1"})
    repo.commit({"a.py": "2"})
    assert GitRepository(repo.file_url, commit_sha=old[:10]).resolve() == old
    with pytest.raises(VersionNotFound):
        GitRepository(repo.file_url, commit_sha="abcdef12").resolve()


def test_full_commit_sha_resolves_without_io(monkeypatch: pytest.MonkeyPatch) -> None:
    sha = "a" * 40
    source = GitRepository("https://example.invalid/o/r.git", commit_sha=sha)
    from sources.contract import no_io

    with no_io(monkeypatch):  # no process, no socket, no file
        assert source.resolve() == sha


def test_fetch_reuses_the_mirror_and_fetches_only_missing_commits(
    repos: Repos, tmp_path: Path
) -> None:
    # Given a cache and a repository with two commits
    repo = repos.make()
    one = repo.commit({"flow.py": "V = 1\n", "lib/x.py": "X = 1\n"})
    two = repo.commit({"flow.py": "V = 2\n"})
    cache = CodeCache(tmp_path / "cache", max_bytes=10**9)
    source = GitRepository(repo.file_url, branch="main")

    # When both versions are ensured
    path_two = cache.ensure(source, two)
    path_one = cache.ensure(source, one)

    # Then each checkout holds its commit's files, and one mirror holds both commits
    assert (path_two / "flow.py").read_text() == "V = 2\n"
    assert (path_one / "flow.py").read_text() == "V = 1\n"
    assert not (path_one / ".git").exists()
    mirrors = list((tmp_path / "cache").rglob("mirror.git"))
    assert len(mirrors) == 1
    refs = run_git("--git-dir", mirrors[0], "for-each-ref", "--format=%(refname)").splitlines()
    assert sorted(refs) == sorted([f"refs/conveyor/{one}", f"refs/conveyor/{two}"])
    # and the mirror's config names the repository, nothing else
    config = (mirrors[0] / "config").read_text()
    assert repo.file_url in config


def test_fetch_with_a_warm_mirror_needs_no_remote(repos: Repos, tmp_path: Path) -> None:
    repo = repos.make()
    sha = repo.commit({"flow.py": "V = 1\n"})
    scratch = tmp_path / "scratch"
    source = GitRepository(repo.file_url)
    (tmp_path / "a").mkdir()
    source.fetch(sha, tmp_path / "a", FetchContext(scratch=scratch))
    shutil.rmtree(repo.bare)  # the remote is gone
    (tmp_path / "b").mkdir()
    source.fetch(sha, tmp_path / "b", FetchContext(scratch=scratch))
    source.verify(sha, tmp_path / "b", FetchContext(scratch=scratch))
    assert (tmp_path / "b/flow.py").read_text() == "V = 1\n"


def test_directories_give_a_cone_mode_sparse_checkout(repos: Repos, tmp_path: Path) -> None:
    repo = repos.make()
    sha = repo.commit(
        {
            "README.md": "top\n",
            "flows/a/main.py": "A\n",
            "flows/a/sub/deep.py": "D\n",
            "flows/b/main.py": "B\n",
            "other/x.py": "X\n",
        }
    )
    source = GitRepository(repo.file_url, directories=["flows/a/", "./other"])
    dest = tmp_path / "dest"
    dest.mkdir()
    ctx = FetchContext(scratch=tmp_path / "scratch")
    source.fetch(sha, dest, ctx)
    source.verify(sha, dest, ctx)
    assert sorted(snapshot(dest)) == [
        "README.md",
        "flows/a/main.py",
        "flows/a/sub/deep.py",
        "other/x.py",
    ]
    assert source.to_spec()["directories"] == ["flows/a", "other"]
    with pytest.raises(VersionNotFound, match="no directory 'nope'"):
        GitRepository(repo.file_url, directories=["nope"]).fetch(sha, tmp_path / "dest2")


def test_sparse_fetch_only_downloads_the_blobs_it_needs(repos: Repos, tmp_path: Path) -> None:
    # Given a repository with one big file outside the selected directory
    repo = repos.make()
    sha = repo.commit({"flows/a.py": "A\n", "data/big.bin": os.urandom(2_000_000)})
    scratch = tmp_path / "scratch"
    dest = tmp_path / "dest"
    dest.mkdir()

    # When only flows/ is fetched
    GitRepository(repo.file_url, directories=["flows"]).fetch(
        sha, dest, FetchContext(scratch=scratch)
    )

    # Then the mirror does not hold the big blob
    big = run_git("rev-parse", f"{sha}:data/big.bin", cwd=repo.bare)
    missing = run_git(
        "rev-list", "--objects", "--no-walk", "--missing=print", sha, cwd=scratch / "mirror.git"
    )
    assert f"?{big}" in missing.splitlines()
    assert sum(f.stat().st_size for f in (scratch / "mirror.git").rglob("*.pack")) < 500_000


def test_modes_and_symlinks_are_kept(repos: Repos, tmp_path: Path) -> None:
    repo = repos.make()
    sha = repo.commit(
        {"bin/run.sh": "#!/bin/sh\n", "lib/a.py": "A\n"},
        executable=("bin/run.sh",),
        symlinks={"alias.py": "lib/a.py", "libdir": "lib"},
    )
    dest = tmp_path / "dest"
    dest.mkdir()
    GitRepository(repo.file_url).fetch(sha, dest)
    assert os.access(dest / "bin/run.sh", os.X_OK)
    assert not os.access(dest / "lib/a.py", os.X_OK)
    assert os.readlink(dest / "alias.py") == "lib/a.py"
    assert os.readlink(dest / "libdir") == "lib"


def test_symlink_leaving_the_tree_is_refused(repos: Repos, tmp_path: Path) -> None:
    repo = repos.make()
    sha = repo.commit({"a.py": "A\n"}, symlinks={"escape": "../../etc/passwd"})
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnsafeArchive, match="points outside"):
        GitRepository(repo.file_url).fetch(sha, dest)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: (d / "a.py").write_text("changed\n"), "does not match"),
        (lambda d: (d / "a.py").unlink(), "missing"),
        (lambda d: (d / "extra.py").write_text("x\n"), "not in the commit"),
        (lambda d: (d / "run.sh").chmod(0o644), "executable bit"),
        (lambda d: (d / ".git").mkdir() or (d / ".git/config").write_text(""), "not in the"),
    ],
)
def test_verify_detects_each_kind_of_tampering(
    repos: Repos, tmp_path: Path, change: Callable[[Path], object], message: str
) -> None:
    repo = repos.make()
    sha = repo.commit({"a.py": "A\n", "run.sh": "#!/bin/sh\n"}, executable=("run.sh",))
    dest = tmp_path / "dest"
    dest.mkdir()
    source = GitRepository(repo.file_url)
    ctx = FetchContext(scratch=tmp_path / "scratch")
    source.fetch(sha, dest, ctx)
    change(dest)
    with pytest.raises(IntegrityError, match=message):
        source.verify(sha, dest, ctx)


def test_verify_from_the_mirror_in_another_source_object(repos: Repos, tmp_path: Path) -> None:
    repo = repos.make()
    sha = repo.commit({"a.py": "A\n"})
    dest = tmp_path / "dest"
    dest.mkdir()
    ctx = FetchContext(scratch=tmp_path / "scratch")
    GitRepository(repo.file_url).fetch(sha, dest, ctx)
    fresh = GitRepository(repo.file_url)
    with pytest.raises(IntegrityError, match="cannot verify"):
        fresh.verify(sha, dest)  # no scratch, so no mirror: it must not pass
    fresh.verify(sha, dest, ctx)  # stateless: the mirror in the scratch directory is enough
    (dest / "a.py").write_text("B\n")
    with pytest.raises(IntegrityError):
        fresh.verify(sha, dest, ctx)


def test_submodules_are_fetched_when_asked(repos: Repos, tmp_path: Path) -> None:
    # Given a superproject with a submodule (relative URL) that has its own submodule
    inner = repos.make("inner")
    inner.commit({"inner.py": "I = 1\n"})
    lib = repos.make("lib")
    lib.commit({"lib.py": "L = 1\n"})
    run_git("submodule", "add", "-q", f"../{inner.bare.name}", "vendor/inner", cwd=lib.work)
    lib.commit({}, message="add inner")
    app = repos.make("app")
    app.commit({"main.py": "M = 1\n"})
    run_git("submodule", "add", "-q", f"../{lib.bare.name}", "libs/lib", cwd=app.work)
    sha = app.commit({}, message="add lib")

    # When it is fetched with and without submodules
    with_sub = tmp_path / "with"
    with_sub.mkdir()
    source = GitRepository(app.file_url, include_submodules=True)
    ctx = FetchContext(scratch=tmp_path / "scratch")
    source.fetch(sha, with_sub, ctx)
    source.verify(sha, with_sub, ctx)
    source_from_spec(source.to_spec()).verify(sha, with_sub, ctx)  # stateless, submodules too
    without = tmp_path / "without"
    without.mkdir()
    GitRepository(app.file_url).fetch(sha, without)

    # Then the submodules' files are there only when asked, with no .git anywhere
    assert (with_sub / "libs/lib/lib.py").read_text() == "L = 1\n"
    assert (with_sub / "libs/lib/vendor/inner/inner.py").read_text() == "I = 1\n"
    assert not list(with_sub.rglob(".git"))
    assert (without / "libs/lib").is_dir()
    assert list((without / "libs/lib").iterdir()) == []
    (with_sub / "libs/lib/lib.py").write_text("tampered\n")
    with pytest.raises(IntegrityError, match=r"libs/lib/lib\.py"):
        source.verify(sha, with_sub, ctx)


def test_unknown_commit_leaves_nothing_in_the_mirror_to_trust(repos: Repos, tmp_path: Path) -> None:
    repo = repos.make()
    sha = repo.commit({"a.py": "A\n"})
    source = GitRepository(repo.file_url)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(VersionNotFound):
        source.fetch("f" * 40, dest, FetchContext(scratch=tmp_path / "scratch"))
    source.fetch(sha, dest, FetchContext(scratch=tmp_path / "scratch"))
    assert (dest / "a.py").exists()


def test_stale_git_lock_files_in_the_mirror_are_removed(repos: Repos, tmp_path: Path) -> None:
    repo = repos.make()
    one = repo.commit({"a.py": "1\n"})
    two = repo.commit({"a.py": "2\n"})
    scratch = tmp_path / "scratch"
    source = GitRepository(repo.file_url)
    (tmp_path / "1").mkdir()
    source.fetch(one, tmp_path / "1", FetchContext(scratch=scratch))
    # a git killed mid-fetch leaves these behind
    (scratch / "mirror.git/shallow.lock").write_text("")
    (scratch / "mirror.git/refs/conveyor/x.lock").write_text("")
    (tmp_path / "2").mkdir()
    source.fetch(two, tmp_path / "2", FetchContext(scratch=scratch))
    assert (tmp_path / "2/a.py").read_text() == "2\n"


def test_an_unfinished_mirror_is_made_again(repos: Repos, tmp_path: Path) -> None:
    repo = repos.make()
    sha = repo.commit({"a.py": "1\n"})
    scratch = tmp_path / "scratch"
    (scratch / "mirror.git/objects").mkdir(parents=True)  # no marker: creation was cut short
    dest = tmp_path / "dest"
    dest.mkdir()
    GitRepository(repo.file_url).fetch(sha, dest, FetchContext(scratch=scratch))
    assert (scratch / "mirror.git/conveyor-mirror").is_file()


# -- construction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"branch": "main", "commit_sha": "a" * 40}, "not both"),
        ({"branch": "-oops"}, "may not start with '-'"),
        ({"branch": "a..b"}, "not a valid git ref"),
        ({"branch": "has space"}, "not a valid git ref"),
        ({"commit_sha": "xyz"}, "not a commit hash"),
        ({"commit_sha": "abc"}, "not a commit hash"),
        ({"commit_sha": "--upload-pack=evil"}, "not a commit hash"),
        ({"directories": ["--output=/tmp/x"]}, "may start with '-'"),
        ({"directories": ["../up"]}, "relative path inside"),
        ({"directories": [".git/hooks"]}, "relative path inside"),
        ({"provider": "sourceforge"}, "unknown git provider"),
        ({"commit_sha": "a" * 40, "follow_ref": True}, "never moves"),
    ],
)
def test_constructor_validates_without_io(
    kwargs: dict[str, object], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sources.contract import no_io

    with no_io(monkeypatch), pytest.raises(ConfigError, match=message):
        GitRepository("https://example.invalid/o/r.git", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url", ["codecommit::eu-west-1://flows", "codecommit::eu-west-1://my-profile@flows"]
)
def test_a_git_remote_codecommit_url_is_refused_naming_its_https_url(url: str) -> None:
    with pytest.raises(ConfigError, match="remote-helper URLs") as refused:
        GitRepository(url, credentials="aws")
    assert refused.value.hint == (
        "use https://git-codecommit.eu-west-1.amazonaws.com/v1/repos/flows with "
        "CodeCommitCredentials"
    )


def test_prefects_name_and_pull_interval_are_taken_and_change_nothing() -> None:
    # Prefect's GitRepository(url, name=..., pull_interval=...) as its docs write it
    prefects = GitRepository(
        "https://example.invalid/o/r.git", branch="main", name="flows-main", pull_interval=120
    )
    assert prefects == GitRepository("https://example.invalid/o/r.git", branch="main")
    assert prefects.to_spec() == {
        "kind": "git",
        "url": "https://example.invalid/o/r.git",
        "branch": "main",
    }


@pytest.mark.parametrize(
    "url",
    [
        "https://user:ghp_secret123@github.com/o/r.git",
        "https://x-access-token:ghp_secret123@github.com/o/r.git",
        "ssh://git:ghp_secret123@github.com/o/r.git",
        "https://github.com/o/r.git?access_token=ghp_secret123",
        "https://gitlab.com/o/r.git?private_token=ghp_secret123",
    ],
)
def test_url_with_a_password_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        GitRepository(url)
    assert "ghp_secret123" not in str(caught.value)
    assert "ghp_secret123" not in (caught.value.hint or "")
    assert "credentials" in (caught.value.hint or "")


def test_user_name_is_dropped_from_an_https_url_but_kept_for_ssh() -> None:
    assert GitRepository("https://ghp_tok@github.com/o/r.git").url == "https://github.com/o/r.git"
    assert GitRepository("ssh://git@host:2222/o/r.git").url == "ssh://git@host:2222/o/r.git"
    assert GitRepository("git@github.com:o/r.git").url == "git@github.com:o/r.git"
    with pytest.raises(ConfigError):
        GitRepository("-uevil@host:o/r.git")
    with pytest.raises(ConfigError, match="not supported"):
        GitRepository("ext::sh -c touch% /tmp/pwned")
    with pytest.raises(ConfigError, match="not supported"):
        GitRepository("fd::17")


def test_spec_holds_credentials_by_name_and_round_trips() -> None:
    from conveyor.sources.git.credentials import GitHubCredentials

    source = GitRepository(
        "https://github.com/o/r.git",
        credentials="gh",
        branch="main",
        include_submodules=True,
        directories=["flows"],
        provider="github",
        follow_ref=True,
    )
    spec = source.to_spec()
    assert spec == {
        "kind": "git",
        "url": "https://github.com/o/r.git",
        "branch": "main",
        "include_submodules": True,
        "directories": ["flows"],
        "provider": "github",
        "follow_ref": True,
        "credentials": "gh",
    }
    assert source_from_spec(json.loads(json.dumps(spec))) == source
    unsaved = GitRepository("https://github.com/o/r.git", credentials=GitHubCredentials("t0k"))
    with pytest.raises(ConfigError, match="not saved"):
        unsaved.to_spec()
    assert "t0k" not in repr(unsaved)
    assert "t0k" not in unsaved.describe()


def test_identity_drops_refs_and_credentials_so_refs_share_a_mirror() -> None:
    a = GitRepository("https://h/o/r.git", branch="main", credentials="one")
    b = GitRepository("https://h/o/r.git", branch="dev", credentials="two", provider="github")
    c = GitRepository("https://h/o/r.git", commit_sha="a" * 40)
    assert a.key() == b.key() == c.key()
    assert GitRepository("https://h/o/r.git", directories=["x"]).key() != a.key()
    assert GitRepository("https://h/o/other.git").key() != a.key()


def test_source_from_url_builds_a_git_repository() -> None:
    source = source_from_url("https://github.com/o/r.git", branch="dev", credentials="gh")
    assert isinstance(source, GitRepository)
    assert source.to_spec()["branch"] == "dev"
    assert isinstance(source_from_url("git@github.com:o/r.git"), GitRepository)


def _ensure_in_child(args: tuple[str, str, str, str]) -> str:
    cache_root, url, version, start_flag = args
    import time as _time

    while not Path(start_flag).exists():  # a barrier: start together
        _time.sleep(0.005)
    cache = CodeCache(Path(cache_root), max_bytes=10**9)
    path = cache.ensure(GitRepository(url), version)
    return (path / "v.txt").read_text()


def test_processes_racing_on_one_mirror_each_get_their_commit(repos: Repos, tmp_path: Path) -> None:
    # Given two commits of one repository and six processes ensuring them at the same moment
    import multiprocessing

    repo = repos.make("race")
    one = repo.commit({"v.txt": "one"})
    two = repo.commit({"v.txt": "two"})
    flag = tmp_path / "go"
    jobs = [(str(tmp_path / "cache"), repo.file_url, v, str(flag)) for v in [one, two] * 3]
    with multiprocessing.get_context("fork").Pool(6) as pool:
        pending = pool.map_async(_ensure_in_child, jobs)
        flag.write_text("")
        results = pending.get(timeout=120)

    # Then each got its own commit's content, through one mirror holding both
    assert results == ["one", "two"] * 3
    (mirror,) = (tmp_path / "cache").rglob("mirror.git")
    refs = run_git("--git-dir", mirror, "for-each-ref", "--format=%(refname)").splitlines()
    assert sorted(refs) == sorted([f"refs/conveyor/{one}", f"refs/conveyor/{two}"])


@pytest.mark.parametrize(
    ("directories", "message"),
    [
        (["./--data"], "no part may start with '-'"),
        (["flows/-x"], "no part may start with '-'"),
        (["flows/\x01x"], "no part may start with '-'"),
    ],
)
def test_directory_checks_run_after_normalising(directories: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GitRepository("https://h/o/r.git", directories=directories)


def test_overlapping_directories_are_one_checkout(repos: Repos, tmp_path: Path) -> None:
    # Given a repository and overlapping sparse directories (as a user might list them)
    repo = repos.make()
    sha = repo.commit({"flows/a/x.py": "X\n", "flows/b.py": "B\n", "other.py": "O\n"})
    source = GitRepository(repo.file_url, directories=["flows/a", "flows", "./flows/"])
    assert source.directories == ("flows",)
    # When it is fetched, then the outer directory is checked out once (cone mode: with the
    # files at the top), and it verifies
    dest = tmp_path / "dest"
    dest.mkdir()
    ctx = FetchContext(scratch=tmp_path / "scratch")
    source.fetch(sha, dest, ctx)
    source.verify(sha, dest, ctx)
    assert sorted(snapshot(dest)) == ["flows/a/x.py", "flows/b.py", "other.py"]


@pytest.mark.parametrize("commit", ["a" * 40 + "\n", "abcd\n", " " + "a" * 40])
def test_a_commit_with_a_trailing_newline_is_refused_at_once(commit: str) -> None:
    with pytest.raises(ConfigError, match="is not a commit hash"):
        GitRepository("https://h/o/r.git", commit_sha=commit)


def test_a_branch_with_surrounding_blanks_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="not a valid git ref name"):
        GitRepository("https://h/o/r.git", branch="main\n")

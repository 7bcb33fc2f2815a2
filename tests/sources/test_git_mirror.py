# ruff: noqa: F401, F811  (fixtures imported from fixtures.* are parameters here)
"""The git mirror is never trusted half-written (the fetch journal), an unknown commit says so,
and git's errors keep the line that says why (a full disk as the cache's own error)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from conveyor.errors import VersionNotFound
from conveyor.sources.base import FetchContext
from conveyor.sources.git import GitRepository
from conveyor.sources.git import _journal as journal
from conveyor.sources.git._cmd import OFFLINE, Failure, GitFailed, classify, git
from conveyor.sources.git._mirror import Mirror
from fixtures.git_server import (
    DEFAULT_TOKEN,
    GitHttpServer,
    Repo,
    Repos,
    git_http,
    git_repos_root,
    repos,
    run_git,
)


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def fetched(repos: Repos, tmp_path: Path) -> tuple[Repo, GitRepository, Path, str]:
    """A repository with one commit, fetched once into a scratch mirror."""
    repo = repos.make("journal")
    sha = repo.commit({"a.py": "A = 1\n"})
    source = GitRepository(repo.file_url)
    (tmp_path / "one").mkdir()
    source.fetch(sha, tmp_path / "one", FetchContext(scratch=tmp_path / "scratch"))
    return repo, source, tmp_path / "scratch" / "mirror.git", sha


def write_like_a_failed_fetch(mirror: Path) -> None:
    """What a fetch killed or failing part-way leaves: objects, a temporary pack, a new ref, and
    a changed shallow file."""
    (mirror / "objects" / "ab").mkdir(exist_ok=True)
    (mirror / "objects" / "ab" / ("c" * 38)).write_bytes(b"half a commit")
    (mirror / "objects" / "pack" / "tmp_pack_XyZ").write_bytes(b"\0" * 4096)
    (mirror / "refs" / "conveyor" / ("d" * 40)).write_text("d" * 40 + "\n")
    (mirror / "shallow").write_text("e" * 40 + "\n")


def test_a_failed_fetch_is_rolled_back_to_the_mirror_as_it_was(
    fetched: tuple[Repo, GitRepository, Path, str],
) -> None:
    _, _, mirror, _ = fetched
    before = snapshot(mirror)

    journal.begin(mirror)
    write_like_a_failed_fetch(mirror)
    removed = journal.roll_back(mirror)

    assert snapshot(mirror) == before
    assert sorted(removed) == [
        "objects/ab/" + "c" * 38,
        "objects/pack/tmp_pack_XyZ",
        "refs/conveyor/" + "d" * 40,
    ]
    assert not journal.pending(mirror)


def test_a_fetch_killed_mid_way_is_rolled_back_when_the_mirror_is_next_opened(
    fetched: tuple[Repo, GitRepository, Path, str], tmp_path: Path
) -> None:
    # Given a fetch that began and was killed after writing into the mirror
    repo, source, mirror, _ = fetched
    before = snapshot(mirror)
    journal.begin(mirror)
    write_like_a_failed_fetch(mirror)

    # When the next fetch opens the mirror
    second = repo.commit({"a.py": "A = 2\n"})
    (tmp_path / "two").mkdir()
    source.fetch(second, tmp_path / "two", FetchContext(scratch=tmp_path / "scratch"))

    # Then what the killed fetch wrote is gone, and the new commit came in
    assert (tmp_path / "two" / "a.py").read_text() == "A = 2\n"
    after = snapshot(mirror)
    assert "objects/pack/tmp_pack_XyZ" not in after
    assert "refs/conveyor/" + "d" * 40 not in after
    assert "e" * 40 not in after["shallow"].decode()
    assert set(before) - {"shallow"} <= set(after)
    assert not journal.pending(mirror)


@pytest.mark.parametrize(
    "damage",
    [
        lambda mirror: (mirror / journal.JOURNAL).write_text("{not json"),
        lambda mirror: (mirror / journal.JOURNAL).write_text(
            json.dumps({"files": ["../../outside"], "saved": {}})
        ),
        lambda mirror: next(
            p for p in (mirror / "objects").glob("??/*") if p.name != "c" * 38
        ).unlink(),
    ],
    ids=["unreadable-journal", "journal-escaping-the-mirror", "recorded-object-gone"],
)
def test_a_mirror_that_cannot_be_rolled_back_is_discarded_and_made_again(
    fetched: tuple[Repo, GitRepository, Path, str], tmp_path: Path, damage: object
) -> None:
    _, source, mirror, first = fetched
    journal.begin(mirror)
    write_like_a_failed_fetch(mirror)
    damage(mirror)  # type: ignore[operator]
    with pytest.raises(journal.Broken):
        journal.roll_back(mirror)
    assert journal.pending(mirror)

    (tmp_path / "again").mkdir()
    source.fetch(first, tmp_path / "again", FetchContext(scratch=tmp_path / "scratch"))

    assert (tmp_path / "again" / "a.py").read_text() == "A = 1\n"
    assert "objects/pack/tmp_pack_XyZ" not in snapshot(mirror)
    assert not journal.pending(mirror)


def test_an_unknown_commit_is_version_not_found_naming_commit_and_repository(
    fetched: tuple[Repo, GitRepository, Path, str], tmp_path: Path
) -> None:
    repo, source, mirror, _ = fetched
    before = snapshot(mirror)
    unknown = "0123456789abcdef0123456789abcdef01234567"
    (tmp_path / "unknown").mkdir()

    with pytest.raises(VersionNotFound) as caught:
        source.fetch(unknown, tmp_path / "unknown", FetchContext(scratch=tmp_path / "scratch"))

    assert str(caught.value) == f"commit {unknown} not found in {repo.file_url}"
    assert "pushed" in (caught.value.hint or "")
    assert snapshot(mirror) == before  # the failed fetch left nothing behind


@pytest.mark.service
def test_an_unknown_commit_over_http_is_version_not_found_not_git_jargon(
    repos: Repos, git_http: GitHttpServer, tmp_path: Path
) -> None:
    from conveyor.sources.git.credentials import GitHubCredentials

    repo = repos.make("unknown-http")
    repo.commit({"a.py": "A\n"})
    url = git_http.url(repo)
    source = GitRepository(url, credentials=GitHubCredentials(DEFAULT_TOKEN))
    (tmp_path / "dest").mkdir()
    with pytest.raises(VersionNotFound) as caught:
        source.fetch("ab" * 20, tmp_path / "dest", FetchContext(scratch=tmp_path / "scratch"))
    assert str(caught.value) == f"commit {'ab' * 20} not found in {url}"
    assert "not our ref" not in str(caught.value)


def test_git_errors_keep_the_lines_that_say_why() -> None:
    stderr = (
        "From file:///srv/repo\n"
        " * [new ref]         abc -> refs/conveyor/abc\n"
        "error: unable to write file .git/objects/12/34: No space left on device\n"
        "fatal: unable to write loose object file: No space left on device\n"
        "fatal: unpack-objects failed\n"
    )
    failed = GitFailed(classify(stderr, 128), command="git fetch", returncode=128, stderr=stderr)
    assert failed.failure is Failure.NO_SPACE
    assert failed.tail == "fatal: unpack-objects failed"
    assert failed.detail == (
        "error: unable to write file .git/objects/12/34: No space left on device; "
        "fatal: unable to write loose object file: No space left on device; "
        "fatal: unpack-objects failed"
    )
    assert classify("fatal: the remote end hung up unexpectedly\n" + stderr, 128) is (
        Failure.NO_SPACE  # not retried as a network failure
    )


def test_git_that_runs_out_of_disk_raises_enospc_at_once_with_its_own_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a `git` that fails the way a full disk makes it fail (a logic test: the real thing
    # runs on a 20 MiB tmpfs in test_git_disk_full.py)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "git"
    script.write_text(
        "#!/bin/sh\n"
        f"echo called >> '{tmp_path}/calls'\n"
        "echo 'fatal: unable to write loose object file: No space left on device' >&2\n"
        "echo 'fatal: the remote end hung up unexpectedly' >&2\n"
        "echo 'fatal: unpack-objects failed' >&2\n"
        "exit 128\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    # When a network command runs
    with pytest.raises(OSError) as caught:
        git(["--git-dir", str(tmp_path / "m.git"), "fetch", "origin"], network=True)

    # Then it is ENOSPC carrying git's lines, cause first, and was not retried as a network error
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.strerror == (
        "git fetch: fatal: unable to write loose object file: No space left on device; "
        "fatal: the remote end hung up unexpectedly; fatal: unpack-objects failed"
    )
    assert (tmp_path / "calls").read_text() == "called\n"

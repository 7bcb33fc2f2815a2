# ruff: noqa: F401, F811  (fixtures imported from fixtures.git_server are parameters here)
"""`GitRepository` against real servers on loopback: git smart HTTP behind a token check (each
provider's user-name convention), ``git daemon``, partial-clone fallbacks, classified errors,
retries, and no token anywhere but in git's environment."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conveyor.errors import (
    AuthenticationError,
    ConfigError,
    SourceNotFound,
    SourceUnavailable,
    VersionNotFound,
)
from conveyor.settings import Settings
from conveyor.sources.base import FetchContext, Source
from conveyor.sources.git import GitRepository
from conveyor.sources.git import _cmd as _git_cmd
from conveyor.sources.git.credentials import (
    BitBucketCredentials,
    CodeCommitCredentials,
    GitCredentials,
    GitHubCredentials,
    GitLabCredentials,
    TokenCredentials,
)
from fixtures.git_server import (
    DEFAULT_TOKEN,
    GitDaemon,
    GitHttpServer,
    Repo,
    Repos,
    git_calls,
    git_daemon,
    git_http,
    git_repos_root,
    install_git_wrapper,
    repos,
    run_git,
)
from fixtures.ports import free_port
from sources.contract import SourceContract, write_known_tree

pytestmark = pytest.mark.service

TOKEN = "glpat-RECOGNISABLE-7Qx9"


def _fetch(source: GitRepository, version: str, tmp_path: Path, name: str = "dest") -> Path:
    dest = tmp_path / name
    dest.mkdir()
    ctx = FetchContext(scratch=tmp_path / "scratch")
    source.fetch(version, dest, ctx)
    source.verify(version, dest, ctx)
    return dest


# -- the contract over HTTP (token from a ${TEMPLATE}) and over git:// --------------------------


@pytest.fixture
def known_tree(tmp_path: Path) -> Path:
    return write_known_tree(tmp_path / "known")


def _known_repo(repos: Repos, tree: Path) -> Repo:
    import shutil

    repo = repos.make("contract")
    shutil.copytree(tree, repo.work, symlinks=True, dirs_exist_ok=True)
    repo.commit({})
    return repo


class TestGitRepositoryHttp(SourceContract):
    unknown_version = "0123456789abcdef0123456789abcdef01234567"
    metadata_dirs = ()

    @pytest.fixture
    def tree(self, known_tree: Path) -> Path:
        return known_tree

    @pytest.fixture
    def source(
        self,
        repos: Repos,
        known_tree: Path,
        git_http: GitHttpServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> GitRepository:
        repo = _known_repo(repos, known_tree)
        repo.configure(basic=[f"x-access-token:{TOKEN}"])
        monkeypatch.setenv("CONTRACT_GIT_TOKEN", TOKEN)
        return GitRepository(git_http.url(repo), credentials="${CONTRACT_GIT_TOKEN}")

    @pytest.fixture
    def missing_source_factory(self, git_http: GitHttpServer) -> Callable[[], Source]:
        return lambda: GitRepository(f"http://127.0.0.1:{git_http.port}/no-such-repo.git")


class TestGitRepositoryDaemon(SourceContract):
    unknown_version = "0123456789abcdef0123456789abcdef01234567"
    metadata_dirs = ()

    @pytest.fixture
    def tree(self, known_tree: Path) -> Path:
        return known_tree

    @pytest.fixture
    def source(self, repos: Repos, known_tree: Path, git_daemon: GitDaemon) -> GitRepository:
        return GitRepository(git_daemon.url(_known_repo(repos, known_tree)))

    @pytest.fixture
    def missing_source_factory(self, git_daemon: GitDaemon) -> Callable[[], Source]:
        return lambda: GitRepository(f"git://127.0.0.1:{git_daemon.port}/no-such-repo.git")


# -- provider conventions ------------------------------------------------------------------------

CASES: list[tuple[str, str, Callable[[str], GitCredentials], str | None]] = [
    ("github", f"x-access-token:{TOKEN}", lambda t: GitHubCredentials(token=t), None),
    ("gitlab-pat", f"oauth2:{TOKEN}", lambda t: GitLabCredentials(token=t), None),
    (
        "gitlab-deploy-token",
        f"gitlab+deploy-token-42:{TOKEN}",
        lambda t: GitLabCredentials(token=t, username="gitlab+deploy-token-42"),
        None,
    ),
    (
        "bitbucket-cloud-token",
        f"x-token-auth:{TOKEN}",
        lambda t: BitBucketCredentials(token=t),
        None,
    ),
    (
        "bitbucket-cloud-app-password",
        f"ada:{TOKEN}",
        lambda t: BitBucketCredentials(username="ada", password=t),
        None,
    ),
    (
        "bitbucket-server",
        f"ada:{TOKEN}",
        lambda t: BitBucketCredentials(username="ada", token=t, server=True),
        "bitbucket-server",
    ),
    ("plain-token-gitlab", f"oauth2:{TOKEN}", lambda t: TokenCredentials(token=t), "gitlab"),
    ("plain-token-bitbucket", f"x-token-auth:{TOKEN}", lambda t: TokenCredentials(t), "bitbucket"),
    (
        "plain-user:token",
        f"ada:{TOKEN}",
        lambda t: TokenCredentials(f"ada:{t}"),
        "bitbucket-server",
    ),
]


@pytest.mark.parametrize(("case", "accepted", "make", "provider"), CASES, ids=[c[0] for c in CASES])
def test_each_provider_convention_authenticates(
    case: str,
    accepted: str,
    make: Callable[[str], GitCredentials],
    provider: str | None,
    repos: Repos,
    git_http: GitHttpServer,
    tmp_path: Path,
) -> None:
    # Given a repository that accepts only the provider's user-name convention
    repo = repos.make(case)
    sha = repo.commit({"flow.py": "def main():\n    return 1\n"})
    repo.configure(basic=[accepted])

    # When resolved and fetched with that provider's credentials
    source = GitRepository(git_http.url(repo), credentials=make(TOKEN), provider=provider)
    assert source.resolve() == sha
    dest = _fetch(source, sha, tmp_path)

    # Then the code is there, and a wrong token is an authentication error without the token
    assert (dest / "flow.py").exists()
    wrong = GitRepository(git_http.url(repo), credentials=make("wrong-token"), provider=provider)
    with pytest.raises(AuthenticationError) as caught:
        wrong.resolve()
    assert "wrong-token" not in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_the_user_name_convention_matters(repos: Repos, git_http: GitHttpServer) -> None:
    repo = repos.make("gitlab-only")
    repo.commit({"a.py": "A\n"})
    repo.configure(basic=[f"oauth2:{TOKEN}"])
    with pytest.raises(AuthenticationError):
        GitRepository(git_http.url(repo), credentials=GitHubCredentials(TOKEN)).resolve()
    assert GitRepository(git_http.url(repo), credentials=GitLabCredentials(TOKEN)).resolve()


@pytest.mark.parametrize("session_token", [None, "FwoGZXIvYXdzEPLAIN+session/token=="])
def test_codecommit_sigv4_password(
    session_token: str | None, repos: Repos, git_http: GitHttpServer, tmp_path: Path
) -> None:
    repo = repos.make("codecommit")
    sha = repo.commit({"a.py": "A\n"})
    repo.configure(
        codecommit={"key_id": "AKIAEXAMPLE", "secret": "wJalrEXAMPLEKEY", "region": "eu-west-1"}
    )
    creds = CodeCommitCredentials(
        aws_access_key_id="AKIAEXAMPLE",
        aws_secret_access_key="wJalrEXAMPLEKEY",
        aws_session_token=session_token,
        region="eu-west-1",
    )
    source = GitRepository(git_http.url(repo), credentials=creds)
    assert source.resolve() == sha
    assert (_fetch(source, sha, tmp_path) / "a.py").exists()
    bad = CodeCommitCredentials("AKIAEXAMPLE", "not-the-key", region="eu-west-1")
    with pytest.raises(AuthenticationError):
        GitRepository(git_http.url(repo), credentials=bad).resolve()


def test_credentials_bound_to_another_host_are_never_sent(
    repos: Repos, git_http: GitHttpServer
) -> None:
    repo = repos.make()
    repo.commit({"a.py": "A\n"})
    creds = GitLabCredentials(token=TOKEN, url="https://gitlab.example.com")
    with pytest.raises(ConfigError, match=r"gitlab\.example\.com"):
        GitRepository(git_http.url(repo), credentials=creds).resolve()
    assert git_http.requests(repo) == []


def test_no_credentials_on_a_private_repository_is_an_authentication_error(
    repos: Repos, git_http: GitHttpServer
) -> None:
    repo = repos.make()
    repo.commit({"a.py": "A\n"})
    with pytest.raises(AuthenticationError) as caught:
        GitRepository(git_http.url(repo)).resolve()
    assert str(caught.value) == (
        f"git authentication failed: listing refs of {git_http.url(repo)}: "
        "no credentials were given"
    )
    assert caught.value.hint is not None
    assert caught.value.hint.startswith("pass credentials=NAME")


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_token_is_one_line_naming_repository_credentials_and_user(
    status: int, repos: Repos, git_http: GitHttpServer, tmp_path: Path
) -> None:
    # Given a private repository whose server refuses the token sent (401 as for a wrong
    # token, 403 as for a revoked or under-scoped one)
    repo = repos.make("refused")
    sha = repo.commit({"a.py": "A\n"})
    repo.configure(basic=[f"x-access-token:{TOKEN}"], refuse=status)
    url = git_http.url(repo)
    source = GitRepository(url, credentials=GitHubCredentials("revoked-token-77", name="gh"))

    # When deploy resolves the branch, and a worker fetches the commit
    started = time.monotonic()
    with pytest.raises(AuthenticationError) as at_deploy:
        source.resolve()
    with pytest.raises(AuthenticationError) as at_run:
        _fetch(source, sha, tmp_path)

    # Then each says which repository, which credentials and which user, without the token,
    # at once (no prompt, no retry)
    assert str(at_deploy.value) == (
        f"git authentication failed: listing refs of {url} with credentials 'gh' "
        "(user x-access-token)"
    )
    assert str(at_run.value).startswith("git authentication failed: ")
    assert str(at_run.value).endswith(f"{url} with credentials 'gh' (user x-access-token)")
    assert at_run.value.hint == AuthenticationError.default_hint
    for caught in (at_deploy.value, at_run.value):
        assert "revoked-token-77" not in f"{caught} {caught.hint}"
    assert time.monotonic() - started < 30
    assert {r[3] for r in git_http.requests(repo)} == {status}


def test_a_plain_token_refused_as_githubs_user_says_how_to_name_the_provider(
    repos: Repos, git_http: GitHttpServer, tmp_path: Path
) -> None:
    # Given a Bitbucket Cloud-style repository (x-token-auth) and the token as a plain secret,
    # as a Prefect user brings it (access_token: "{{ prefect.blocks.secret.bb-token }}")
    repo = repos.make("bitbucket-plain")
    sha = repo.commit({"a.py": "A\n"})
    repo.configure(basic=[f"x-token-auth:{TOKEN}"])
    ctx = FetchContext(environ={"bb-token": TOKEN})
    written = "{{ prefect.blocks.secret.bb-token }}"

    # When it is resolved without a provider, then with provider="bitbucket"
    with pytest.raises(AuthenticationError) as refused:
        GitRepository(git_http.url(repo), credentials=written).resolve(ctx)
    named = GitRepository(git_http.url(repo), credentials=written, provider="bitbucket")

    # Then the refusal says the token went as GitHub's user and how to say Bitbucket; that works
    assert str(refused.value).endswith(f"with credentials '{written}' (user x-access-token)")
    assert refused.value.hint is not None
    assert "pass provider='gitlab' / 'bitbucket'" in refused.value.hint
    assert TOKEN not in f"{refused.value} {refused.value.hint}"
    assert named.resolve(ctx) == sha


def test_private_submodules_on_the_same_server_are_pinned_by_the_superprojects_commit(
    repos: Repos, git_http: GitHttpServer, tmp_path: Path
) -> None:
    # Given a private superproject whose private submodule (relative URL, same token-checking
    # server) is pinned at an older commit than its branch's tip
    lib = repos.make("lib")
    old = lib.commit({"lib.py": "L = 1\n"})
    new = lib.commit({"lib.py": "L = 2\n", "extra.py": "E = 1\n"})
    lib.configure(basic=[f"x-access-token:{TOKEN}"])
    app = repos.make("app")
    app.commit({"main.py": "M = 1\n"})
    run_git("submodule", "add", "-q", f"../{lib.bare.name}", "libs/lib", cwd=app.work)
    run_git("checkout", "-q", old, cwd=app.work / "libs/lib")
    run_git("add", "libs/lib", cwd=app.work)
    first = app.commit({}, message="lib at old")
    app.configure(basic=[f"x-access-token:{TOKEN}"])
    source = GitRepository(
        git_http.url(app), credentials=GitHubCredentials(TOKEN), include_submodules=True
    )

    # When it is resolved and fetched, then the pointer moves and it is resolved and fetched again
    pinned = source.resolve()
    at_first = _fetch(source, pinned, tmp_path, "first")
    run_git("checkout", "-q", new, cwd=app.work / "libs/lib")
    run_git("add", "libs/lib", cwd=app.work)
    second = app.commit({}, message="lib at new")
    moved = source.resolve()
    at_second = _fetch(source, moved, tmp_path, "second")
    without = _fetch(
        GitRepository(git_http.url(app), credentials=GitHubCredentials(TOKEN)),
        moved,
        tmp_path,
        "without",
    )

    # Then each version has exactly its submodule commit's files, without submodules the
    # directory is empty (as git leaves it), and no token is in any git config on disk
    assert (pinned, moved) == (first, second)
    assert sorted(p.name for p in (at_first / "libs/lib").iterdir()) == ["lib.py"]
    assert (at_first / "libs/lib/lib.py").read_text() == "L = 1\n"
    assert sorted(p.name for p in (at_second / "libs/lib").iterdir()) == ["extra.py", "lib.py"]
    assert (at_second / "libs/lib/lib.py").read_text() == "L = 2\n"
    assert list((without / "libs/lib").iterdir()) == []
    configs = [p for p in tmp_path.rglob("config") if p.is_file()]
    assert len(configs) >= 2  # the superproject's mirror and the submodule's
    assert not [p for p in configs if TOKEN in p.read_text(errors="replace")]


def test_a_submodule_url_carrying_a_password_is_refused_before_git_sees_it(
    repos: Repos, git_http: GitHttpServer, tmp_path: Path
) -> None:
    # Given a superproject whose .gitmodules names its submodule with a password in the URL
    lib = repos.make("lib")
    lib.commit({"lib.py": "L = 1\n"})
    app = repos.make("app")
    app.commit({"main.py": "M = 1\n"})
    embedded = "ada:s3cret-in-gitmodules"
    with_password = f"http://{embedded}@127.0.0.1:{git_http.port}/{lib.bare.name}"
    run_git("submodule", "add", "-q", lib.file_url, "libs/lib", cwd=app.work)
    run_git("config", "-f", ".gitmodules", "submodule.libs/lib.url", with_password, cwd=app.work)
    sha = app.commit({}, message="add lib")
    source = GitRepository(git_http.url(app), include_submodules=True)
    app.configure(anonymous=True)

    # When its commit is fetched with submodules
    with pytest.raises(ConfigError) as refused:
        _fetch(source, sha, tmp_path)

    # Then it is refused without showing the password, before any git command or request used
    # that URL: no mirror config on disk holds it, and the submodule's repository was not asked
    assert str(refused.value) == (
        f"a submodule URL in .gitmodules of {git_http.url(app)} is not valid: the repository URL "
        "carries a password or token; it would be stored and shown"
    )
    assert embedded not in f"{refused.value} {refused.value.hint}"
    on_disk = [p for p in (tmp_path / "scratch").rglob("*") if p.is_file()]
    assert on_disk  # the superproject's mirror
    assert not [p for p in on_disk if b"s3cret-in-gitmodules" in p.read_bytes()]
    assert git_http.requests(lib) == []


def test_a_private_submodule_on_another_host_says_credentials_are_not_sent_there(
    repos: Repos, git_http: GitHttpServer, tmp_path: Path
) -> None:
    # Given a private superproject whose submodule names the same server by another host name
    # (localhost, not 127.0.0.1): for the credentials, another host
    lib = repos.make("lib")
    lib.commit({"lib.py": "L = 1\n"})
    lib.configure(basic=[f"x-access-token:{TOKEN}"])
    app = repos.make("app")
    app.commit({"main.py": "M = 1\n"})
    elsewhere = f"http://localhost:{git_http.port}/{lib.bare.name}"
    run_git("submodule", "add", "-q", lib.file_url, "libs/lib", cwd=app.work)
    run_git("config", "-f", ".gitmodules", "submodule.libs/lib.url", elsewhere, cwd=app.work)
    sha = app.commit({}, message="add lib")
    app.configure(basic=[f"x-access-token:{TOKEN}"])
    source = GitRepository(
        git_http.url(app),
        credentials=GitHubCredentials(TOKEN, name="gh"),
        include_submodules=True,
    )

    # When its commit is fetched
    with pytest.raises(AuthenticationError) as refused:
        _fetch(source, sha, tmp_path)

    # Then the superproject came with the credentials, the submodule was asked without them,
    # and the error says so and how to fix it
    assert str(refused.value).startswith("git authentication failed: ")
    assert str(refused.value).endswith(
        f"{elsewhere}: credentials 'gh' are sent only to the repository's host"
    )
    assert refused.value.hint is not None
    assert "a relative URL such as ../lib.git" in refused.value.hint


# -- partial clone and its fallbacks -------------------------------------------------------------


def _creds_repo(repos: Repos, name: str) -> tuple[Repo, GitHubCredentials]:
    repo = repos.make(name)
    repo.configure(basic=[f"x-access-token:{TOKEN}"])
    return repo, GitHubCredentials(TOKEN)


def test_partial_clone_fetches_commit_then_only_needed_blobs(
    repos: Repos, git_http: GitHttpServer, tmp_path: Path
) -> None:
    # Given a filter-capable server and a repository with a big file outside flows/
    repo, creds = _creds_repo(repos, "partial")
    sha = repo.commit({"flows/a.py": "A\n", "data/big.bin": os.urandom(1_000_000)})
    source = GitRepository(git_http.url(repo), credentials=creds, directories=["flows"])

    # When fetched
    dest = _fetch(source, sha, tmp_path)

    # Then two fetch requests went out (commit + trees, then the one blob needed), and the
    # mirror's packs stay far below the big file
    fetches = [r for r in git_http.requests(repo) if r[2] == "fetch" and r[3] == 200]
    assert len(fetches) == 2
    assert sorted(p.name for p in dest.rglob("*") if p.is_file()) == ["a.py"]
    packs = (tmp_path / "scratch/mirror.git").rglob("*.pack")
    assert sum(p.stat().st_size for p in packs) < 200_000


def test_whole_tree_comes_with_its_commit_in_one_round_trip(
    repos: Repos, git_http: GitHttpServer, tmp_path: Path
) -> None:
    repo, creds = _creds_repo(repos, "whole")
    sha = repo.commit({"a.py": "A\n", "lib/b.py": "B\n"})
    dest = _fetch(GitRepository(git_http.url(repo), credentials=creds), sha, tmp_path)
    assert (dest / "lib/b.py").read_text() == "B\n"
    assert len([r for r in git_http.requests(repo) if r[2] == "fetch"]) == 1


def test_server_without_filters_falls_back_to_a_whole_fetch(
    repos: Repos, git_http: GitHttpServer, tmp_path: Path
) -> None:
    # Given a server that does not allow filters, and a sparse checkout (which asks for one)
    repo, creds = _creds_repo(repos, "nofilter")
    repo.allow_filter(False)
    sha = repo.commit({"a.py": "A\n", "lib/b.py": "B\n", "other/c.py": "C\n"})
    source = GitRepository(git_http.url(repo), credentials=creds, directories=["lib"])

    # When fetched
    dest = _fetch(source, sha, tmp_path)

    # Then everything came at once (git ignored the filter): no second request for blobs
    assert (dest / "lib/b.py").read_text() == "B\n"
    assert not (dest / "other").exists()
    fetches = [r for r in git_http.requests(repo) if r[2] == "fetch"]
    assert len(fetches) == 1
    missing = run_git(
        "rev-list",
        "--objects",
        "--no-walk",
        "--missing=print",
        sha,
        cwd=tmp_path / "scratch/mirror.git",
    )
    assert "?" not in missing


@pytest.mark.parametrize(
    ("allow_filter", "directories"),
    [(True, None), (False, None), (True, ["lib"]), (False, ["lib"])],
)
def test_protocol_v0_server_refusing_unadvertised_commits_falls_back(
    allow_filter: bool,
    directories: list[str] | None,
    repos: Repos,
    git_http: GitHttpServer,
    tmp_path: Path,
) -> None:
    # Given a server that speaks protocol v0 only (it drops the Git-Protocol header)
    repo = repos.make("v0")
    repo.allow_filter(allow_filter)
    old = repo.commit({"a.py": "old\n", "lib/x.py": "X\n"})
    repo.commit({"a.py": "new\n"})
    repo.configure(basic=[f"x-access-token:{TOKEN}"], v2=False)
    source = GitRepository(
        git_http.url(repo), credentials=GitHubCredentials(TOKEN), directories=directories
    )

    # When a commit that is not a branch tip is fetched
    dest = _fetch(source, old, tmp_path)

    # Then the fallback (fetch all branches and tags) delivered it
    assert (dest / "a.py").read_text() == "old\n"
    assert (dest / "lib/x.py").read_text() == "X\n"
    with pytest.raises(VersionNotFound):
        _fetch(source, "ab" * 20, tmp_path, "dest2")


# -- errors ----------------------------------------------------------------------------------------


def test_unknown_commit_over_http_is_version_not_found(
    repos: Repos, git_http: GitHttpServer, tmp_path: Path
) -> None:
    repo, creds = _creds_repo(repos, "unknown")
    repo.commit({"a.py": "A\n"})
    with pytest.raises(VersionNotFound) as caught:
        _fetch(GitRepository(git_http.url(repo), credentials=creds), "ab" * 20, tmp_path)
    assert "\n" not in str(caught.value)


def test_missing_repository_over_http_is_source_not_found(git_http: GitHttpServer) -> None:
    url = f"http://127.0.0.1:{git_http.port}/no-such.git"
    with pytest.raises(SourceNotFound):
        GitRepository(url, credentials=GitHubCredentials(DEFAULT_TOKEN)).resolve()


def test_network_down_is_retried_over_the_settings_budget_then_source_unavailable(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # Given nothing listening, and a retry budget of 1 s from the settings (not the environment)
    calls = install_git_wrapper(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CONVEYOR_NETWORK_RETRY_SECONDS", "600")  # sources never read this
    ctx = FetchContext(settings=Settings.from_env({"CONVEYOR_NETWORK_RETRY_SECONDS": "1"}))
    url = f"http://127.0.0.1:{free_port()}/repo.git"

    # When the repository is resolved
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="conveyor.sources.git._cmd"):
        with pytest.raises(SourceUnavailable) as caught:
            GitRepository(url, credentials=GitHubCredentials(TOKEN)).resolve(ctx)
    elapsed = time.monotonic() - started

    # Then git was tried again and again for about the budget, and the error is one line
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"git server unreachable: listing refs of {url}")
    tries = len([c for c in git_calls(calls) if "ls-remote" in c])
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert tries >= 2
    assert len(retries) == tries - 1
    assert 1.0 <= elapsed < 10


def test_git_missing_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no git here
    with pytest.raises(ConfigError, match="git"):
        GitRepository("https://example.invalid/o/r.git").resolve()


@pytest.mark.parametrize(
    ("stderr", "kind"),
    [
        ("fatal: Authentication failed for 'https://h/r.git/'", "auth"),
        ("fatal: could not read Username for 'https://h': terminal prompts disabled", "auth"),
        ("remote: HTTP Basic: Access denied\nfatal: Authentication failed", "auth"),
        ("git@h: Permission denied (publickey).\nfatal: Could not read from remote", "auth"),
        ("Host key verification failed.\nfatal: Could not read from remote", "host_key"),
        ("remote: Repository not found.\nfatal: repository 'https://h/r/' not found", "not_found"),
        ("fatal: remote error: access denied or repository not exported: /x.git", "not_found"),
        ("fatal: '/tmp/x' does not appear to be a git repository", "not_found"),
        ("fatal: remote error: upload-pack: not our ref abc", "version"),
        ("fatal: couldn't find remote ref refs/heads/nope", "version"),
        ("error: Server does not allow request for unadvertised object abc", "unadvertised"),
        ("fatal: unable to access 'https://h/': Could not resolve host: h", "unavailable"),
        ("fatal: unable to access 'http://h/': Failed to connect to h port 80", "unavailable"),
        ("error: RPC failed; curl 56 Recv failure: Connection reset by peer", "unavailable"),
        ("fatal: the remote end hung up unexpectedly\nfatal: early EOF", "unavailable"),
        (
            "fatal: unable to access 'https://h/': The requested URL returned error: 503",
            "unavailable",
        ),
        ("fatal: unable to write loose object file: No space left on device", "no_space"),
        ("error: copy-fd: write returned: Disk quota exceeded\nfatal: early EOF", "no_space"),
        ("fatal: something unheard of", "other"),
    ],
)
def test_git_stderr_is_classified(stderr: str, kind: str) -> None:
    assert _git_cmd.classify(stderr, 128).value == kind
    assert _git_cmd.classify("", None) is _git_cmd.Failure.UNAVAILABLE


# -- secrets stay in git's environment -----------------------------------------------------------


def test_token_reaches_git_only_through_its_environment(
    repos: Repos,
    git_http: GitHttpServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a git wrapper recording every argv, and a recognisable token
    calls = install_git_wrapper(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    repo, creds = _creds_repo(repos, "leak")
    sha = repo.commit({"a.py": "A\n"})
    source = GitRepository(git_http.url(repo), credentials=creds)

    # When it is resolved, fetched, and a fetch fails
    with caplog.at_level(logging.DEBUG):
        source.resolve()
        _fetch(source, sha, tmp_path)
        with pytest.raises(VersionNotFound) as caught:
            _fetch(source, "cd" * 20, tmp_path, "dest2")

    # Then the token is in no argv, no log line, no error, no file under scratch
    assert calls.exists()
    assert len(git_calls(calls)) > 3
    assert all(TOKEN not in arg for call in git_calls(calls) for arg in call)
    assert TOKEN not in caplog.text
    assert TOKEN not in str(caught.value)
    for path in (tmp_path / "scratch").rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert "extraheader" not in (tmp_path / "scratch/mirror.git/config").read_text().lower()

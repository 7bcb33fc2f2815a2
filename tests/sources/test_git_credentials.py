# ruff: noqa: F401, F811  (fixtures imported from fixtures.git_server are parameters here)
"""Git credentials: types and their secrecy, save/load through the server's encrypted store,
resolution by name on the worker, and `conveyor credentials`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conveyor.cli import app, main
from conveyor.client import ConveyorClient
from conveyor.connect import connect
from conveyor.errors import ConfigError
from conveyor.secrets import Secret, template_name
from conveyor.settings import Settings
from conveyor.sources.base import FetchContext
from conveyor.sources.git import GitRepository
from conveyor.sources.git._auth import HttpAuth
from conveyor.sources.git._codecommit import codecommit_region, codecommit_url
from conveyor.sources.git.credentials import (
    BitBucketCredentials,
    CodeCommitCredentials,
    GitCredentials,
    GitHubCredentials,
    GitLabCredentials,
    SSHCredentials,
    TokenCredentials,
    load_credentials,
)
from conveyor.steps import source_from_pull_steps
from fixtures.git_server import GitHttpServer, Repos, git_http, git_repos_root, repos

TOKEN = "ghp_RECOGNISABLE_credentials_5511"
KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAsecretkeymaterial\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)

ALL = [
    GitHubCredentials(token=TOKEN),
    GitLabCredentials(token=TOKEN, username="gitlab+deploy-token-1", url="https://gl.example"),
    BitBucketCredentials(token=TOKEN),
    BitBucketCredentials(username="ada", password=TOKEN),
    BitBucketCredentials(username="ada", token=TOKEN, server=True, url="https://bb.example"),
    CodeCommitCredentials("AKIAEXAMPLE", TOKEN, aws_session_token=TOKEN + "s", region="us-east-1"),
    TokenCredentials(token=TOKEN),
    SSHCredentials(private_key=KEY + TOKEN, known_hosts="host ssh-ed25519 AAAA\n"),
]


@pytest.fixture
def api(settings: Settings) -> ConveyorClient:
    with connect(settings) as client:
        yield client


@pytest.mark.parametrize("creds", ALL, ids=lambda c: type(c).__name__)
def test_secret_fields_never_show(creds: GitCredentials) -> None:
    for text in (repr(creds), str(creds), f"{creds}", f"{creds!r}"):
        assert TOKEN not in text
        assert "****" in text
    data = creds.to_data()
    assert TOKEN in json.dumps(data)  # only to_data (for the encrypted store) reveals them
    again = GitCredentials.from_data(data)
    assert again == creds
    assert type(again) is type(creds)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: GitHubCredentials(token=""), "need a token"),
        (lambda: BitBucketCredentials(), "token or a password"),
        (lambda: BitBucketCredentials(password="p"), "needs its username"),
        (lambda: BitBucketCredentials(token="t", password="p", username="u"), "not both"),
        (lambda: BitBucketCredentials(token="t", server=True), "need a username"),
        (lambda: GitLabCredentials(token="t", username="has space"), "not a valid git user"),
        (lambda: SSHCredentials(private_key="not a key"), "does not look like a private key"),
        (lambda: CodeCommitCredentials("", "s"), "access key id"),
    ],
)
def test_invalid_credentials_are_refused(make: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("creds", "provider", "user"),
    [
        (GitHubCredentials(TOKEN), None, "x-access-token"),
        (GitLabCredentials(TOKEN), None, "oauth2"),
        (GitLabCredentials(TOKEN, username="deployer"), None, "deployer"),
        (BitBucketCredentials(token=TOKEN), None, "x-token-auth"),
        (BitBucketCredentials(username="ada", password=TOKEN), None, "ada"),
        (BitBucketCredentials(username="ada", token=TOKEN, server=True), None, "ada"),
        (TokenCredentials(TOKEN), None, "x-access-token"),
        (TokenCredentials(TOKEN), "github", "x-access-token"),
        (TokenCredentials(TOKEN), "gitlab", "oauth2"),
        (TokenCredentials(TOKEN), "bitbucket", "x-token-auth"),
        (TokenCredentials(f"deployer:{TOKEN}"), "gitlab", "deployer"),
        (TokenCredentials(TOKEN, username="ada"), "bitbucket-server", "ada"),
    ],
)
def test_user_name_follows_the_provider_not_the_host(
    creds: GitCredentials, provider: str | None, user: str
) -> None:
    # the host name says "gitlab" but nothing is guessed from it
    auth = creds.git_auth("https://gitlab.example.org/o/r.git", provider=provider)
    assert isinstance(auth, HttpAuth)
    assert auth.username == user
    assert auth.password.reveal() == TOKEN


def test_plain_bitbucket_server_token_needs_a_user_name() -> None:
    with pytest.raises(ConfigError, match="user name"):
        TokenCredentials(TOKEN).git_auth("https://h/r.git", provider="bitbucket-server")


def test_codecommit_url_and_region() -> None:
    url = codecommit_url("my-repo", region="eu-west-1")
    assert url == "https://git-codecommit.eu-west-1.amazonaws.com/v1/repos/my-repo"
    assert codecommit_region(url) == "eu-west-1"
    assert codecommit_region("https://github.com/o/r.git") is None
    creds = CodeCommitCredentials("AKIAEXAMPLE", TOKEN)
    auth = creds.git_auth(url)
    assert isinstance(auth, HttpAuth)
    assert auth.username == "AKIAEXAMPLE"
    stamp, _, signature = auth.password.reveal().partition("Z")
    assert len(stamp) == 15
    assert len(signature) == 64
    with pytest.raises(ConfigError, match="region"):
        creds.git_auth("https://git.example.com/r.git")
    with pytest.raises(ConfigError):
        codecommit_url("-evil", region="eu-west-1")
    assert (
        CodeCommitCredentials("AKIA", "s", region="us-east-2")
        .repository_url("r")
        .startswith("https://git-codecommit.us-east-2.")
    )


def test_provider_must_fit_the_credentials_type() -> None:
    with pytest.raises(ConfigError, match="do not fit"):
        GitRepository("https://h/o/r.git", credentials=GitHubCredentials(TOKEN), provider="gitlab")
    GitRepository(
        "https://h/o/r.git",
        credentials=BitBucketCredentials(username="a", token=TOKEN, server=True),
        provider="bitbucket-server",
    )


def test_save_and_load_through_the_encrypted_store(api: ConveyorClient, settings: Settings) -> None:
    # Given credentials saved by name through the server's secret store
    creds = GitLabCredentials(token=TOKEN, username="deployer")
    assert creds.save("gl", store=api) is creds
    assert creds.name == "gl"

    # Then they load back by name (with the client built from the environment too)
    loaded = GitLabCredentials.load("gl", store=api)
    assert loaded == creds
    assert loaded.name == "gl"
    assert GitCredentials.load("gl") == creds
    with pytest.raises(ConfigError, match="gitlab credentials, not github"):
        GitHubCredentials.load("gl", store=api)
    with pytest.raises(ConfigError, match="no credentials named 'nope'"):
        GitHubCredentials.load("nope", store=api)
    assert [s.name for s in api.list_secrets()] == ["credentials.gl"]

    # and the token is nowhere in clear on disk (the database is encrypted at rest)
    for path in settings.home.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_prefects_dict_of_credentials_is_refused_without_showing_the_token() -> None:
    # Prefect's GitRepository(credentials={"access_token": ...}) would store the token
    with pytest.raises(ConfigError) as refused:
        GitRepository("https://example.invalid/org/flows.git", credentials={"access_token": TOKEN})

    assert (
        str(refused.value) == "credentials must be a credentials object or a saved name, not dict"
    )
    assert refused.value.hint is not None
    assert 'GitHubCredentials(token=...).save("gh")' in refused.value.hint
    assert TOKEN not in str(refused.value) + refused.value.hint


@pytest.mark.parametrize(
    "token",
    [
        "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
        "github_pat_11ABCDEFG0abcdefghijklmn_opqrstuvwxyz",
        "glpat-xXxXxXxXxXxXxXxXxXxX",
        "ATBB4aZmZXQfakefakefakefake8A7E3D71",
    ],
)
def test_a_token_passed_as_the_credentials_name_is_refused_without_echoing_it(
    token: str,
) -> None:
    # Given a token where the name of saved credentials goes (in Python, or a git_clone step)
    for attempt in (
        lambda: GitRepository("https://github.com/o/r.git", credentials=token),
        lambda: source_from_pull_steps(
            [{"git_clone": {"repository": "https://github.com/o/r.git", "credentials": token}}]
        ),
    ):
        # When the repository is made (before anything is stored or looked up)
        with pytest.raises(ConfigError) as refused:
            attempt()

        # Then it is refused, showing only the token's prefix, with how to save it
        assert str(refused.value) == (
            f"credentials take the name of saved credentials, not a token ({token[:4]}… was given)"
        )
        assert refused.value.hint is not None
        assert "conveyor credentials create" in refused.value.hint
        assert token not in f"{refused.value} {refused.value.hint}"
    assert GitRepository("https://github.com/o/r.git", credentials="ghp-tokens").credentials


def test_save_takes_prefects_overwrite_keyword(api: ConveyorClient) -> None:
    # Given credentials saved as Prefect's docs write it (overwrite=True), twice
    GitHubCredentials(token="first-token").save("gh", overwrite=True, store=api)
    GitHubCredentials(token=TOKEN).save("gh", overwrite=True, store=api)

    # When saved again under that name with overwrite=False
    with pytest.raises(ConfigError, match="credentials 'gh' exist already") as refused:
        GitHubCredentials(token="other-token").save("gh", overwrite=False, store=api)

    # Then that is refused with a hint, and the last overwrite is what is stored
    assert refused.value.hint == "pass overwrite=True to replace them"
    assert GitHubCredentials.load("gh", store=api).token == Secret(TOKEN)
    GitHubCredentials(token="new-token").save("new", overwrite=False, store=api)  # a new name
    assert GitHubCredentials.load("new", store=api).token == Secret("new-token")


def test_load_credentials_by_name_typed_then_plain_secret_then_environment(
    api: ConveyorClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    GitHubCredentials(TOKEN).save("gh", store=api)
    api.set_secret("plain", "plain-token")
    monkeypatch.setenv("FROM_ENV", "env-token")
    monkeypatch.setenv("plain", "shadowed-by-the-store")

    env = dict(os.environ)
    typed = load_credentials("gh", store=api, environ=env)
    assert isinstance(typed, GitHubCredentials)
    plain = load_credentials("plain", store=api, environ=env)
    assert isinstance(plain, TokenCredentials)
    assert plain.token == Secret("plain-token")
    from_env = load_credentials("FROM_ENV", store=api, environ=env)
    assert from_env.token == Secret("env-token")  # type: ignore[attr-defined]
    # a ${TEMPLATE} is a plain token: the environment first, like every template
    templated = load_credentials("${plain}", store=api, environ=env)
    assert templated.token == Secret("shadowed-by-the-store")  # type: ignore[attr-defined]
    # {{ prefect.blocks.TYPE.NAME }} names saved credentials
    block = load_credentials("{{ prefect.blocks.github-credentials.gh }}", store=api, environ=env)
    assert isinstance(block, GitHubCredentials)
    with pytest.raises(ConfigError, match="no credentials or secret named 'missing'"):
        load_credentials("missing", store=api, environ=env)


@pytest.mark.parametrize(
    ("ref", "hint"),
    [
        ("github-cl", "did you mean 'github-ci'?"),  # saved credentials
        ("DEPLOY_TOKN", "did you mean 'DEPLOY_TOKEN'?"),  # a plain secret
        ("{{ prefect.blocks.github-credentials.githb-ci }}", "did you mean 'github-ci'?"),
        ("${DEPLOY_TOKN}", "did you mean 'DEPLOY_TOKEN'?"),
        ("{{ prefect.blocks.github-credentials.DEPLOY_TOKN }}", None),  # blocks: not secrets
        ("{{ $DEPLOY_TOKN }}", None),  # only the environment is looked in
        ("unrelated", None),
    ],
)
def test_a_mistyped_credentials_name_gets_a_did_you_mean(
    api: ConveyorClient, ref: str, hint: str | None
) -> None:
    # Given saved credentials and a plain secret
    GitHubCredentials(TOKEN).save("github-ci", store=api)
    api.set_secret("DEPLOY_TOKEN", TOKEN)

    # When a name one typo away from one of them is looked up
    with pytest.raises(ConfigError, match="no credentials or secret named") as missing:
        load_credentials(ref, store=api, environ={})

    # Then the hint names the closest one (of the kind the reference can name), else how to
    # create them
    assert missing.value.hint == (hint or missing.value.hint)
    if hint is None:
        assert "did you mean" not in (missing.value.hint or "")
        assert "conveyor credentials create" in (missing.value.hint or "")
    assert TOKEN not in str(missing.value) + (missing.value.hint or "")


def test_every_credentials_lookup_by_name_suggests_the_closest_saved_one(
    api: ConveyorClient,
) -> None:
    from conveyor.credentials import Credentials
    from conveyor.sources.blob._fs import load_blob_credentials
    from conveyor.sources.blob.credentials import AwsCredentials
    from conveyor.sources.oci.credentials import DockerRegistryCredentials, registry_login

    # Given saved git, blob and registry credentials
    GitHubCredentials(TOKEN).save("github-ci", store=api)
    AwsCredentials(aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key=TOKEN).save(
        "aws-prod", store=api
    )
    DockerRegistryCredentials(username="ci", password=TOKEN, registry_url="reg.example").save(
        "registry-ci", store=api
    )

    # When each kind is loaded by a mistyped name, then the hint names the saved one
    lookups = {
        "Credentials.load": lambda: Credentials.load("githb-ci", store=api),
        "blob": lambda: load_blob_credentials("aws-prd", "s3", FetchContext(secrets=api)),
        "registry": lambda: registry_login(
            "reg.example", credentials="registry-cl", store=api, environ={}
        ),
    }
    hints = {}
    for what, lookup in lookups.items():
        with pytest.raises(ConfigError, match="no credentials named") as missing:
            lookup()
        hints[what] = missing.value.hint
    assert hints == {
        "Credentials.load": "did you mean 'github-ci'?",
        "blob": "did you mean 'aws-prod'?",
        "registry": "did you mean 'registry-ci'?",
    }


def test_deploy_with_a_mistyped_credentials_name_says_which_was_meant(
    api: ConveyorClient,
    repos: Repos,
    git_http: GitHttpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a private repository and the credentials for it saved as github-ci
    repo = repos.make("typo")
    repo.commit({"flows.py": "from conveyor import flow\n\n@flow\ndef main():\n    return 1\n"})
    repo.configure(basic=[f"x-access-token:{TOKEN}"])
    GitHubCredentials(TOKEN).save("github-ci", store=api)

    # When it is deployed with --credentials github-cl
    code = main(
        ["deploy", "flows.py:main", "--name", "typo", "--source", git_http.url(repo),
         "--credentials", "github-cl"]
    )  # fmt: skip

    # Then the deploy fails in two lines: what was not found, and what was meant
    assert code == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: no credentials or secret named 'github-cl'",
        "hint: did you mean 'github-ci'?",
    ]
    assert api.list_deployments() == []


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("${GH_TOKEN}", "GH_TOKEN"),
        ("{{ $GH_TOKEN }}", "GH_TOKEN"),
        ("{{ GH_TOKEN }}", None),  # a bare name is a step output, not a secret
        ("{{ secrets.gh-token }}", "gh-token"),
        ("{{ prefect.blocks.secret.deploy-token }}", "deploy-token"),
        ("ghp_literal", None),
        ("prefix ${X}", None),
    ],
)
def test_template_names(text: str, name: str | None) -> None:
    assert template_name(text) == name


def test_repository_loads_named_credentials_on_fetch(
    api: ConveyorClient, repos: Repos, git_http: GitHttpServer, tmp_path: Path
) -> None:
    # Given credentials saved by name and a repository that needs them
    repo = repos.make("named")
    sha = repo.commit({"a.py": "A\n"})
    repo.configure(basic=[f"oauth2:{TOKEN}"])
    GitLabCredentials(token=TOKEN).save("gl", store=api)

    # When a source that only names them (as a deployment stores it) resolves and fetches
    source = GitRepository.from_spec(
        {"kind": "git", "url": git_http.url(repo), "credentials": "gl"}
    )
    ctx = FetchContext(secrets=api)
    assert source.resolve(ctx) == sha
    dest = tmp_path / "dest"
    dest.mkdir()
    source.fetch(sha, dest, ctx)

    # Then the code arrived
    assert (dest / "a.py").read_text() == "A\n"


def test_cli_reads_secrets_from_stdin(settings: Settings, tmp_path: Path) -> None:
    runner = CliRunner()

    def invoke(args: list[str], stdin: str = "") -> str:
        result = runner.invoke(app, args, input=stdin)
        assert result.exit_code == 0, result.output
        assert TOKEN not in result.output
        return result.output

    invoke(["credentials", "create", "github", "gh"], TOKEN + "\n")
    invoke(["credentials", "create", "gitlab", "gl", "--username", "deployer"], TOKEN)
    invoke(
        ["credentials", "create", "bitbucket", "bb", "--username", "ada", "--app-password"], TOKEN
    )
    invoke(["credentials", "create", "bitbucket", "bbs", "--username", "ada", "--server"], TOKEN)
    invoke(
        [
            "credentials",
            "create",
            "codecommit",
            "cc",
            "--access-key-id",
            "AKIA1",
            "--region",
            "eu-west-1",
        ],
        f"{TOKEN}\nsession-{TOKEN}\n",
    )
    (tmp_path / "known_hosts").write_text("h ssh-ed25519 AAAA\n")
    invoke(
        ["credentials", "create", "ssh", "key", "--known-hosts", str(tmp_path / "known_hosts")],
        KEY,
    )
    listed = invoke(["credentials", "ls"]).split()
    assert listed == ["bb", "bbs", "cc", "gh", "gl", "key"]

    with connect(settings) as client:
        assert GitHubCredentials.load("gh", store=client).token == Secret(TOKEN)
        gl = GitLabCredentials.load("gl", store=client)
        assert gl.username == "deployer"
        bb = BitBucketCredentials.load("bb", store=client)
        assert bb.password == Secret(TOKEN)
        assert bb.token is None
        assert BitBucketCredentials.load("bbs", store=client).server is True
        cc = CodeCommitCredentials.load("cc", store=client)
        assert cc.aws_session_token == Secret(f"session-{TOKEN}")
        ssh = SSHCredentials.load("key", store=client)
        assert ssh.known_hosts == "h ssh-ed25519 AAAA\n"
        assert ssh.accept_new_host_keys is False

    invoke(["credentials", "rm", "gh"])
    assert "gh" not in invoke(["credentials", "ls"]).split()
    empty = runner.invoke(app, ["credentials", "create", "github", "x"], input="")
    assert empty.exit_code != 0

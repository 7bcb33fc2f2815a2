"""The common storage model: name conflicts, ``in``, "not contained", labels, secrets names;
each class's constructor defaults, validation and environment fallback (what its repository or
request resolves to, with which credentials names); the round-2 names say they are coming."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conveyor import Flow, flow
from conveyor.environments import LocalEnvironment
from conveyor.errors import ConfigError
from conveyor.run_configs import LocalRun
from conveyor.secrets import Secret
from conveyor.sources.git.credentials import (
    CodeCommitCredentials,
    TokenCredentials,
    load_credentials,
)
from conveyor.storage import (
    S3,
    Bitbucket,
    CodeCommit,
    Git,
    GitHub,
    GitLab,
    Local,
    LocalResult,
    Module,
    Storage,
    Webhook,
)


class Store:
    """A secret store standing in for the server's (dict-backed)."""

    def __init__(self, **values: str) -> None:
        self.values = values

    def get_secret(self, name: str) -> str | None:
        return self.values.get(name)


def test_a_second_flow_of_the_same_name_is_a_name_conflict() -> None:
    storage = Local()
    Flow("etl", storage=storage)
    with pytest.raises(ConfigError) as error:
        Flow("etl", storage=storage)
    assert str(error.value) == 'name conflict: flow "etl" is already present in this storage'
    assert error.value.hint
    assert "another name" in error.value.hint

    @flow(storage=storage)
    def other() -> None: ...

    @flow(name="etl")
    def etl() -> None: ...

    with pytest.raises(ConfigError, match="name conflict"):
        etl.storage = storage
    assert sorted(storage.flows) == ["etl", "other"]
    # assigning the same flow twice is not a conflict
    other.storage = storage


def test_contains_is_by_name_and_get_flow_names_what_it_holds() -> None:
    storage = Module("json")
    graph_flow = Flow("by-name", storage=storage)
    assert "by-name" in storage
    assert graph_flow not in storage
    assert 3 not in storage
    with pytest.raises(ConfigError, match=r"'nope' is not contained in this Module storage \("):
        storage.get_flow("nope")


def test_labels_secrets_and_defaults_of_the_base() -> None:
    storage = GitHub(
        repo="o/r", path="f.py", labels=["b", "a", "b"], secrets=["GITHUB_ACCESS_TOKEN"]
    )
    assert storage.labels == ["a", "b"]  # no default labels but Local's
    assert storage.secrets == ["GITHUB_ACCESS_TOKEN"]
    assert storage.stored_as_script
    assert storage.add_default_labels is True
    assert storage.result is None
    assert storage.name == "GitHub"
    assert isinstance(storage, Storage)
    with pytest.raises(ConfigError, match="is not a valid secret name"):
        Local(secrets=["not valid!"])
    with pytest.raises(ConfigError, match="is not a valid label"):
        Local(labels=["-bad"])
    assert isinstance(Local().result, LocalResult)


@pytest.mark.parametrize(
    ("make", "message", "hint"),
    [
        (lambda: Local(labels="prod"), "labels must be a list, not 'prod'", 'labels=["prod"]'),
        (
            lambda: S3("flows", secrets="AWS_CREDENTIALS"),
            "secrets must be a list, not 'AWS_CREDENTIALS'",
            'secrets=["AWS_CREDENTIALS"]',
        ),
        (lambda: LocalRun(labels="gpu"), "labels must be a list, not 'gpu'", 'labels=["gpu"]'),
        (
            lambda: LocalEnvironment(labels="gpu"),
            "labels must be a list, not 'gpu'",
            'labels=["gpu"]',
        ),
        (
            lambda: Flow("one-label", storage=Local()).register(labels="prod"),
            "labels must be a list, not 'prod'",
            'labels=["prod"]',
        ),
    ],
    ids=["Local", "S3", "LocalRun", "LocalEnvironment", "register"],
)
def test_labels_or_secrets_given_as_one_string_are_refused_not_split_into_letters(
    make: Callable[[], object], message: str, hint: str
) -> None:
    # Prefect 1 read labels="prod" letter by letter (p, r, o, d): a run no worker would claim
    with pytest.raises(ConfigError) as error:
        make()
    assert str(error.value) == message
    assert error.value.hint == f"write {hint}"


def test_a_keyword_a_storage_does_not_take_is_named_with_the_class_and_what_it_takes() -> None:
    # Python would say "Storage.__init__() got an unexpected keyword argument 'directroy'"
    with pytest.raises(ConfigError) as error:
        Local(directroy="/srv/flows")
    assert str(error.value) == "Local storage does not take directroy= (did you mean directory=?)"
    assert error.value.hint == (
        "Local takes: add_default_labels, directory, labels, path, result, secrets, "
        "stored_as_script, validate"
    )
    with pytest.raises(ConfigError, match=r"^S3 storage does not take boto3_kwargs=$"):
        S3("flows", boto3_kwargs={})


def test_a_first_generation_flow_with_a_schedule_is_refused_in_one_line() -> None:
    # Prefect 1: Flow("etl", schedule=IntervalSchedule(...)); "@flow got an unknown option
    # 'schedule'" said neither that Conveyor has no schedules nor what to do
    with pytest.raises(ConfigError) as error:
        Flow("etl", schedule=object())
    assert str(error.value) == (
        "Flow 'etl': schedule is not supported by Conveyor: it has no schedules"
    )
    assert error.value.hint == (
        "start runs with `conveyor run` or the API (from cron or a scheduler)"
    )
    assert Flow("etl", schedule=None).name == "etl"
    # any other option Prefect 1's Flow took is said of Flow(), not of a decorator
    with pytest.raises(ConfigError) as error:
        Flow("etl", executor=object())
    assert str(error.value) == "Flow 'etl': Flow() got an unknown option 'executor'"
    assert error.value.hint is not None
    assert "result, result_storage, retries" in error.value.hint


def test_github_defaults_and_its_token_fallback() -> None:
    repo = GitHub(repo="org/flows", path="flows/a.py").repository()
    assert repo.to_spec() == {
        "kind": "git",
        "url": "https://github.com/org/flows.git",
        "provider": "github",
        "credentials": "${GITHUB_ACCESS_TOKEN}",
        "credentials_optional": True,
    }
    ghe = GitHub(
        repo="org/flows",
        path="a.py",
        ref="v1",
        access_token_secret="GHE_TOKEN",
        base_url="https://ghe.example.com/api/v3",
    ).repository()
    assert ghe.url == "https://ghe.example.com/org/flows.git"
    assert ghe.branch == "v1"
    assert ghe.credentials == "${GHE_TOKEN}"
    assert not ghe.credentials_optional
    with pytest.raises(ConfigError, match="is not 'owner/name'"):
        GitHub(repo="flows", path="a.py")
    with pytest.raises(ConfigError, match=r"needs the path of the flow's \.py file"):
        Flow("no-py", storage=GitHub(repo="o/r", path="README.md"))


def test_the_default_token_names_resolve_environment_first_then_the_store() -> None:
    ref = "${GITHUB_ACCESS_TOKEN}"
    store = Store(GITHUB_ACCESS_TOKEN="from-store")
    env = {"GITHUB_ACCESS_TOKEN": "from-env"}
    found = load_credentials(ref, store=store, environ=env, optional=True)
    assert isinstance(found, TokenCredentials)
    assert found.token == Secret("from-env")
    found = load_credentials(ref, store=store, environ={}, optional=True)
    assert isinstance(found, TokenCredentials)
    assert found.token == Secret("from-store")
    assert load_credentials(ref, store=Store(), environ={}, optional=True) is None
    with pytest.raises(ConfigError, match="no credentials or secret named 'GITHUB_ACCESS_TOKEN'"):
        load_credentials(ref, store=Store(), environ={})


def test_gitlab_defaults() -> None:
    repo = GitLab(repo="group/project", path="f.py").repository()
    assert repo.url == "https://gitlab.com/group/project.git"
    assert repo.branch == "master"  # the first generation's default, not the default branch
    assert repo.credentials == "${GITLAB_ACCESS_TOKEN}"
    assert repo.provider == "gitlab"
    own = GitLab(repo="g/p", host="https://git.example.com", path="f.py", ref="main")
    assert own.repository().url == "https://git.example.com/g/p.git"
    with pytest.raises(ConfigError, match="cannot be cloned by number"):
        GitLab(repo="12345", path="f.py")


def test_bitbucket_server_cloud_and_their_fallbacks() -> None:
    server = Bitbucket(project="PROJ", repo="flows", host="https://bb.example.com", path="f.py")
    repo = server.repository()
    assert repo.url == "https://bb.example.com/scm/PROJ/flows.git"
    assert (repo.credentials, repo.provider) == ("${BITBUCKET_ACCESS_TOKEN}", "bitbucket-server")
    cloud = Bitbucket(project="P", repo="flows", workspace="team", path="f.py").repository()
    assert cloud.url == "https://bitbucket.org/team/flows.git"
    assert cloud.branch == "master"
    assert cloud.credentials == "${BITBUCKET_CLOUD_USERNAME}:${BITBUCKET_CLOUD_APP_PASSWORD}"
    assert cloud.credentials_optional
    env = {"BITBUCKET_CLOUD_USERNAME": "bob", "BITBUCKET_CLOUD_APP_PASSWORD": "pw"}
    creds = load_credentials(str(cloud.credentials), store=Store(), environ=env, optional=True)
    assert isinstance(creds, TokenCredentials)
    assert creds.token == Secret("bob:pw")
    half = {"BITBUCKET_CLOUD_USERNAME": "bob"}
    assert (
        load_credentials(str(cloud.credentials), store=Store(), environ=half, optional=True) is None
    )
    with pytest.raises(ConfigError, match="not access_token_secret"):
        Bitbucket(project="P", repo="r", workspace="w", access_token_secret="T", path="f.py")


def test_codecommit_region_endpoint_and_aws_credentials() -> None:
    storage = CodeCommit(repo="flows", path="f.py", commit="refs/heads/dev")
    with pytest.raises(ConfigError, match="CodeCommit needs a region"):
        storage.repository({})
    repo = storage.repository({"AWS_DEFAULT_REGION": "eu-west-1"})
    assert repo.url == "https://git-codecommit.eu-west-1.amazonaws.com/v1/repos/flows"
    assert (repo.branch, repo.provider, repo.credentials) == (
        "dev",
        "codecommit",
        "${AWS_CREDENTIALS}",
    )
    endpoint = CodeCommit(repo="flows", path="f.py", client_options={"endpoint_url": "http://h:1"})
    assert endpoint.repository({}).url == "http://h:1/v1/repos/flows"
    # AWS_CREDENTIALS as the first generation stored it, the region from the environment
    secret = '{"ACCESS_KEY": "AKID", "SECRET_ACCESS_KEY": "sk", "SESSION_TOKEN": "st"}'
    creds = load_credentials(
        "${AWS_CREDENTIALS}",
        store=Store(AWS_CREDENTIALS=secret),
        environ={"AWS_DEFAULT_REGION": "us-west-2"},
        provider="codecommit",
    )
    assert isinstance(creds, CodeCommitCredentials)
    assert (creds.aws_access_key_id, creds.region) == ("AKID", "us-west-2")


def test_git_storage_validation_and_urls() -> None:
    with pytest.raises(ConfigError, match="at most one of branch_name, tag and commit"):
        Git("f.py", repo="o/r", branch_name="a", tag="b")
    with pytest.raises(ConfigError, match="needs repo="):
        Git("f.py")
    with pytest.raises(ConfigError, match="git_clone_url_secret_name is not supported"):
        Git("f.py", git_clone_url_secret_name="URL")
    https = Git("f.py", repo="o/r", git_token_secret_name="TOK", tag="v2").repository()
    assert https.url == "https://github.com/o/r.git"
    assert https.branch == "v2"
    assert https.credentials == "o:${TOK}"  # the owner is the default user name
    raw = Git("f.py", repo="o/r", git_token_secret_name="TOK", format_access_token=False)
    assert raw.repository().credentials == "${TOK}"
    ssh = Git("f.py", repo="o/r", use_ssh=True, git_token_secret_name="TOK").repository()
    assert ssh.url == "git@github.com:o/r.git"
    assert ssh.credentials is None
    sha = "a" * 40
    assert Git("f.py", repo="o/r", commit=sha).repository().commit_sha == sha


def test_webhook_requests_keep_templates_and_refuse_unknown_keywords() -> None:
    with pytest.raises(ConfigError, match="request keyword 'stream' is not supported"):
        Webhook(
            build_request_kwargs={"url": "http://127.0.0.1:9/u", "stream": True},
            build_request_http_method="POST",
            get_flow_request_kwargs={"url": "http://127.0.0.1:9/d"},
            get_flow_request_http_method="GET",
        )
    with pytest.raises(ConfigError, match="needs a 'url'"):
        Webhook(
            build_request_kwargs={},
            build_request_http_method="POST",
            get_flow_request_kwargs={"url": "http://127.0.0.1:9/d"},
            get_flow_request_http_method="GET",
        )


def test_every_storage_of_the_document_is_importable_and_unknown_names_are_not() -> None:
    import conveyor.storage

    for name in ("Local", "S3", "GCS", "Azure", "GitHub", "GitLab", "Bitbucket", "CodeCommit"):
        assert isinstance(getattr(conveyor.storage, name), type)
    for name in ("Docker", "Webhook", "Git", "Module", "S3Result", "GCSResult", "AzureResult"):
        assert isinstance(getattr(conveyor.storage, name), type)
    with pytest.raises(AttributeError):
        _ = conveyor.storage.Nope

"""GitHub, GitLab, Bitbucket (Server and Cloud), CodeCommit and Git storages against the real git
smart-HTTP server on 127.0.0.1 (host names swapped for its endpoint), each with the token
auth its provider uses: the flow script is pushed to the repository, registered from a working
copy, and run by a worker with an empty cache — always the commit resolved at registration.

Tokens come from the environment (each class's fallback name) or the server's secret store
(named secrets); none reaches the deployment or the database.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conveyor.client import ConveyorClient
from conveyor.schemas import RunState
from conveyor.settings import Settings
from fixtures.git_server import DEFAULT_TOKEN, GitHttpServer, Repo
from storage.conftest import python, run_and_wait, run_logs

pytestmark = pytest.mark.service

FLOW_FILE = """
from conveyor import Flow, task
from conveyor.storage import __CLASS__

@task
def greet() -> str:
    return "__GREETING__"

with Flow("__FLOW__") as flow:
    greet()

flow.storage = __STORAGE__

if __name__ == "__main__":
    flow.register()
"""


def flow_file(cls: str, flow_name: str, storage: str, greeting: str = "hello") -> str:
    return (
        FLOW_FILE.replace("__CLASS__", cls)
        .replace("__FLOW__", flow_name)
        .replace("__STORAGE__", storage)
        .replace("__GREETING__", greeting)
    )


def repo_under(root: Path, *parts: str) -> Repo:
    return Repo(root.joinpath(*parts), f"flows-{os.getpid()}-{os.urandom(3).hex()}")


def register_and_run(
    repo: Repo,
    path: str,
    text: str,
    *,
    flow_name: str,
    settings: Settings,
    client: ConveyorClient,
    branch: str = "main",
) -> tuple[str, str]:
    """Push the flow file, register it from the working copy, push a change, run it with an
    empty cache; (registered commit, the run's result)."""
    commit = repo.commit({path: text}, branch=branch)
    python(repo.work / path)  # `if __name__ == "__main__": flow.register()`
    deployment = client.get_deployment(flow_name, "default")
    assert deployment.version == commit
    stored = json.dumps(deployment.model_dump(mode="json"))
    for value in (DEFAULT_TOKEN, "app-pass-77", "s3cr3t-key"):
        assert value not in stored
    # A later push does not change what the deployment runs
    repo.commit({path: text.replace('return "', 'return "changed ')}, branch=branch)
    shutil.rmtree(settings.cache_dir, ignore_errors=True)
    run = run_and_wait(settings, client, flow_name)
    assert run.state == RunState.COMPLETED, f"{run.error}\n{run_logs(client, run.id)}"
    assert run.version == commit
    return commit, run.result["greet"]


def test_github_with_the_token_from_the_environment(
    git_http: GitHttpServer,
    git_repos_root: Path,
    settings: Settings,
    client: ConveyorClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = repo_under(git_repos_root, "org")
    monkeypatch.setenv("GITHUB_ACCESS_TOKEN", DEFAULT_TOKEN)
    storage = (
        f'GitHub(repo="org/{repo.bare.stem}", path="flows/github_flow.py", '
        f'base_url="http://127.0.0.1:{git_http.port}")'
    )
    text = flow_file("GitHub", "github-flow", storage, "hello from github")
    _, result = register_and_run(
        repo,
        "flows/github_flow.py",
        text,
        flow_name="github-flow",
        settings=settings,
        client=client,
    )
    assert result == "hello from github"
    deployment = client.get_deployment("github-flow", "default")
    assert deployment.entrypoint == "flows/github_flow.py:flow"
    assert deployment.source["credentials"] == "${GITHUB_ACCESS_TOKEN}"
    assert deployment.source["directories"] == ["flows"]


def test_gitlab_with_a_named_secret_from_the_store_and_master_by_default(
    git_http: GitHttpServer,
    git_repos_root: Path,
    settings: Settings,
    client: ConveyorClient,
) -> None:
    repo = repo_under(git_repos_root, "group")
    repo.configure(basic=[f"oauth2:{DEFAULT_TOKEN}"])
    client.set_secret("GL_TOKEN", DEFAULT_TOKEN)  # not in the environment: the store
    storage = (
        f'GitLab(repo="group/{repo.bare.stem}", host="http://127.0.0.1:{git_http.port}", '
        'path="gitlab_flow.py", access_token_secret="GL_TOKEN")'
    )
    text = flow_file("GitLab", "gitlab-flow", storage, "hello from gitlab")
    _, result = register_and_run(
        repo,
        "gitlab_flow.py",
        text,
        flow_name="gitlab-flow",
        settings=settings,
        client=client,
        branch="master",
    )
    assert result == "hello from gitlab"
    assert client.get_deployment("gitlab-flow", "default").source["branch"] == "master"


def test_bitbucket_server_with_a_user_token_from_the_environment(
    git_http: GitHttpServer,
    git_repos_root: Path,
    settings: Settings,
    client: ConveyorClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = repo_under(git_repos_root, "scm", "PROJ")
    repo.configure(basic=[f"alice:{DEFAULT_TOKEN}"])
    monkeypatch.setenv("BITBUCKET_ACCESS_TOKEN", f"alice:{DEFAULT_TOKEN}")
    storage = (
        f'Bitbucket(project="PROJ", repo="{repo.bare.stem}", '
        f'host="http://127.0.0.1:{git_http.port}", path="bb_flow.py")'
    )
    text = flow_file("Bitbucket", "bitbucket-flow", storage, "hello from bitbucket")
    _, result = register_and_run(
        repo,
        "bb_flow.py",
        text,
        flow_name="bitbucket-flow",
        settings=settings,
        client=client,
        branch="master",
    )
    assert result == "hello from bitbucket"


def test_bitbucket_cloud_with_username_and_app_password_from_the_environment(
    git_http: GitHttpServer,
    git_repos_root: Path,
    settings: Settings,
    client: ConveyorClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = repo_under(git_repos_root, "team-ws")
    repo.configure(basic=["bob:app-pass-77"])
    monkeypatch.setenv("BITBUCKET_CLOUD_USERNAME", "bob")
    monkeypatch.setenv("BITBUCKET_CLOUD_APP_PASSWORD", "app-pass-77")
    storage = (
        f'Bitbucket(project="ignored", repo="{repo.bare.stem}", workspace="team-ws", '
        f'host="http://127.0.0.1:{git_http.port}", path="cloud_flow.py", ref="main")'
    )
    text = flow_file("Bitbucket", "bitbucket-cloud-flow", storage, "hello from the cloud")
    _, result = register_and_run(
        repo,
        "cloud_flow.py",
        text,
        flow_name="bitbucket-cloud-flow",
        settings=settings,
        client=client,
    )
    assert result == "hello from the cloud"


def _codecommit_repo(root: Path, key_id: str, secret: str) -> Repo:
    repo = repo_under(root, "v1", "repos")
    repo.configure(codecommit={"key_id": key_id, "secret": secret, "region": "us-east-1"})
    (repo.bare.parent / repo.bare.stem).symlink_to(repo.bare)  # /v1/repos/<name>, no .git
    return repo


def test_codecommit_with_aws_credentials_from_the_secret_store(
    git_http: GitHttpServer,
    git_repos_root: Path,
    settings: Settings,
    client: ConveyorClient,
) -> None:
    repo = _codecommit_repo(git_repos_root, "AKIDCODECOMMIT", "s3cr3t-key")
    client.set_secret(
        "AWS_CREDENTIALS",
        json.dumps({"ACCESS_KEY": "AKIDCODECOMMIT", "SECRET_ACCESS_KEY": "s3cr3t-key"}),
    )
    storage = (
        f'CodeCommit(repo="{repo.bare.stem}", path="cc_flow.py", '
        f'client_options={{"endpoint_url": "http://127.0.0.1:{git_http.port}"}})'
    )
    text = flow_file("CodeCommit", "codecommit-flow", storage, "hello from codecommit")
    _, result = register_and_run(
        repo, "cc_flow.py", text, flow_name="codecommit-flow", settings=settings, client=client
    )
    assert result == "hello from codecommit"


def test_codecommit_falls_back_to_the_aws_environment_variables(
    git_http: GitHttpServer,
    git_repos_root: Path,
    settings: Settings,
    client: ConveyorClient,
) -> None:
    # the test environment has AWS_ACCESS_KEY_ID=testing, AWS_SECRET_ACCESS_KEY=testing
    repo = _codecommit_repo(git_repos_root, "testing", "testing")
    storage = (
        f'CodeCommit(repo="{repo.bare.stem}", path="cc_env.py", commit="refs/heads/main", '
        f'client_options={{"endpoint_url": "http://127.0.0.1:{git_http.port}"}})'
    )
    text = flow_file("CodeCommit", "codecommit-env", storage, "hello via env")
    _, result = register_and_run(
        repo, "cc_env.py", text, flow_name="codecommit-env", settings=settings, client=client
    )
    assert result == "hello via env"


def test_generic_git_with_a_user_and_token_secret(
    git_http: GitHttpServer,
    git_repos_root: Path,
    settings: Settings,
    client: ConveyorClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = repo_under(git_repos_root, "acme")
    monkeypatch.setenv("GIT_TOKEN", DEFAULT_TOKEN)
    storage = (
        f'Git(flow_path="deep/git_flow.py", repo="acme/{repo.bare.stem}", '
        f'repo_host="http://127.0.0.1:{git_http.port}", git_token_secret_name="GIT_TOKEN", '
        'git_token_username="x-access-token", branch_name="main")'
    )
    text = flow_file("Git", "git-flow", storage, "hello from git")
    _, result = register_and_run(
        repo, "deep/git_flow.py", text, flow_name="git-flow", settings=settings, client=client
    )
    assert result == "hello from git"


def test_a_missing_default_token_means_no_token_and_the_server_says_no(
    git_http: GitHttpServer,
    git_repos_root: Path,
    settings: Settings,
    client: ConveyorClient,
) -> None:
    # No GITHUB_ACCESS_TOKEN anywhere: git is asked without credentials, and the server refuses
    from conveyor import Flow
    from conveyor.errors import AuthenticationError
    from conveyor.storage import GitHub

    repo = repo_under(git_repos_root, "org")
    repo.commit({"f.py": "x = 1\n"})
    storage = GitHub(
        repo=f"org/{repo.bare.stem}", path="f.py", base_url=f"http://127.0.0.1:{git_http.port}"
    )
    flow = Flow("private", storage=storage)
    with pytest.raises(AuthenticationError) as refused:
        storage.get_flow(flow.name, settings=settings, client=client)
    assert str(refused.value).endswith(": no credentials or secret 'GITHUB_ACCESS_TOKEN' was found")
    assert refused.value.hint is not None
    assert "`conveyor secret set GITHUB_ACCESS_TOKEN`" in refused.value.hint


def test_a_path_missing_from_the_repository_is_named_in_it_not_in_the_code_cache(
    git_http: GitHttpServer,
    git_repos_root: Path,
    tmp_path: Path,
    settings: Settings,
) -> None:
    from e2e.conftest import command_env, conveyor

    # Given a repository holding flows/etl.py, and GitHub storages whose path has a typo, or
    # names no file at all
    repo = repo_under(git_repos_root, "org")
    commit = repo.commit({"flows/etl.py": flow_file("GitHub", "etl", "None")})
    base_url = f"http://127.0.0.1:{git_http.port}"
    env = command_env(GITHUB_ACCESS_TOKEN=DEFAULT_TOKEN)

    def register(path: str) -> tuple[str, str]:
        storage = f'GitHub(repo="org/{repo.bare.stem}", path="{path}", base_url="{base_url}")'
        script = tmp_path / f"register_{len(path)}.py"
        script.write_text(flow_file("GitHub", "etl", storage))
        result = conveyor("register", "--path", str(script), env=env)
        assert result.returncode != 0, result.stdout
        error, hint = result.stderr.strip().splitlines()[-2:]
        return error, hint

    # When each is registered, Then the error names the path in the repository, and the file
    # meant or the repository and commit it is relative to — never this machine's code cache
    error, hint = register("flows/etI.py")
    assert error == (
        "error: flow flows/etI.py:flow could not be loaded: flow file flows/etI.py does not exist"
    )
    assert hint == "hint: did you mean flows/etl.py?"
    error, hint = register("zzz.py")
    assert hint == (
        f"hint: the path is relative to the root of {base_url}/org/{repo.bare.stem}.git "
        f"at {commit[:12]}"
    )
    assert str(settings.cache_dir) not in error + hint

# ruff: noqa: F401, F811  (fixtures imported from fixtures.git_server are parameters here)
"""Pull steps (``git_clone``, ``set_working_directory``), their registry, and ``conveyor.yaml``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conveyor._fs import copy_writable
from conveyor.cache import CodeCache
from conveyor.errors import ConfigError
from conveyor.project import deploy_options, load_project
from conveyor.secrets import Secret
from conveyor.sources import source_from_spec
from conveyor.sources.base import FetchContext
from conveyor.sources.git import GitRepository
from conveyor.steps import StepContext, parse_step, run_steps, source_from_pull_steps
from conveyor.steps.builtin import git_clone_source, git_clone_step
from fixtures.git_server import GitHttpServer, Repos, git_http, git_repos_root, repos

TOKEN = "ghp_STEPS_token_8841"


@pytest.mark.parametrize(
    "name",
    [
        "git_clone",
        "conveyor.steps.git_clone",
        "prefect.deployments.steps.git_clone",
        "prefect.deployments.steps.pull.git_clone",
    ],
)
def test_step_names_and_aliases(name: str) -> None:
    assert parse_step({name: {"id": "clone", "repository": "x"}}) == (
        "git_clone",
        {"repository": "x"},
        "clone",
    )


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"nope": {}}, "unknown step 'nope'"),
        ({"git_clone": {}, "other": {}}, "one key"),
        (["git_clone"], "one key"),
        ({"git_clone": "https://x"}, "must map to its arguments"),
    ],
)
def test_malformed_steps(step: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_step(step)


@pytest.mark.parametrize(
    "source",
    [
        GitRepository("https://github.com/o/r.git"),
        GitRepository("https://github.com/o/r.git", branch="dev", credentials="gh"),
        GitRepository("https://github.com/o/r.git", commit_sha="a" * 40, credentials="${GH}"),
        GitRepository(
            "https://gitlab.com/o/r.git", credentials="{{ secrets.gl }}", provider="gitlab"
        ),
        GitRepository(
            "git@github.com:o/r.git",
            branch="main",
            include_submodules=True,
            directories=["flows", "lib"],
            follow_ref=True,
        ),
    ],
)
def test_git_repository_round_trips_through_a_git_clone_step(source: GitRepository) -> None:
    step = json.loads(json.dumps(git_clone_step(source)))
    assert list(step) == ["git_clone"]
    rebuilt = source_from_pull_steps([step])
    assert isinstance(rebuilt, GitRepository)
    assert rebuilt == source
    assert rebuilt.to_spec() == source.to_spec()
    assert git_clone_step(rebuilt) == step


def test_template_token_is_a_step_access_token_and_names_are_credentials() -> None:
    templated = git_clone_step(GitRepository("https://h/r.git", credentials="${GH}"))
    assert templated["git_clone"]["access_token"] == "${GH}"
    named = git_clone_step(GitRepository("https://h/r.git", credentials="gh"))
    assert named["git_clone"]["credentials"] == "gh"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"access_token": TOKEN}, "never the token itself"),
        ({"access_token": "${A}", "credentials": "b"}, "not both"),
        ({"credentials": {"token": TOKEN}}, "never the token itself"),
        ({"credentials": {"username": "ada", "access_token": TOKEN}}, "never the token itself"),
        ({"credentials": {"username": "ada"}}, "one access_token is needed"),
        ({"credentials": {"access_token": "${A}", "user": "ada"}}, "unknown key 'user'"),
        ({"credentials": {"access_token": "${A}", "username": "a:b"}}, "not a valid git user"),
        ({"credentials": ["gh"]}, "must name saved credentials"),
        ({"access_token": "{{ clone.directory }}"}, "is a step output; a token comes from"),
        ({"bogus": 1}, "unexpected keyword"),
    ],
)
def test_git_clone_step_refuses_literal_tokens_and_bad_arguments(
    arguments: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        source_from_pull_steps([{"git_clone": {"repository": "https://h/r.git", **arguments}}])
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize(
    "written", ["{{ credentials.gh }}", "{{ prefect.blocks.github-credentials.gh }}"]
)
def test_credentials_placeholders_name_saved_credentials(written: str) -> None:
    for key in ("credentials", "access_token"):  # a credentials block given as access_token too
        step = {"git_clone": {"repository": "https://h/r.git", key: written}}
        source = source_from_pull_steps([step])
        assert isinstance(source, GitRepository)
        assert source.credentials == "gh"


@pytest.mark.parametrize(
    ("credentials", "accepted", "stored"),
    [
        (
            {"access_token": "{{ prefect.blocks.secret.repo-token }}"},
            f"x-access-token:{TOKEN}",
            "{{ prefect.blocks.secret.repo-token }}",
        ),
        (
            {"username": "ada", "access_token": "{{ prefect.blocks.secret.repo-token }}"},
            f"ada:{TOKEN}",
            "ada:{{ prefect.blocks.secret.repo-token }}",
        ),
    ],
)
def test_prefects_credentials_mapping_with_a_secret_placeholder_authenticates(
    credentials: dict[str, str],
    accepted: str,
    stored: str,
    repos: Repos,
    git_http: GitHttpServer,
    tmp_path: Path,
) -> None:
    # Given a private repository and the git_clone step Prefect's to_pull_step writes (a mapping
    # whose access_token is a secret placeholder, with or without a username)
    repo = repos.make("prefect-dict")
    sha = repo.commit({"flows/etl.py": "X = 1\n"})
    repo.configure(basic=[accepted])
    step = {
        "prefect.deployments.steps.git_clone": {
            "repository": git_http.url(repo),
            "credentials": credentials,
        }
    }

    # When it is deployed (the step names the source, stored as its spec), and a worker with the
    # secret resolves and fetches it, and checks the step's arguments as it resolved them
    source = source_from_pull_steps([step])
    assert source is not None
    spec = json.loads(json.dumps(source.to_spec()))
    worker = source_from_spec(spec)
    ctx = FetchContext(scratch=tmp_path / "scratch", environ={"repo-token": TOKEN})
    version = worker.resolve(ctx)
    dest = tmp_path / "dest"
    dest.mkdir()
    worker.fetch(version, dest, ctx)
    resolved = {**credentials, "access_token": Secret(TOKEN, name="repo-token")}
    git_clone_source(repository=git_http.url(repo), credentials=resolved)

    # Then the deployment stores only the placeholder, and the code came with those credentials
    assert spec["credentials"] == stored
    assert version == sha
    assert (dest / "flows/etl.py").read_text() == "X = 1\n"


@pytest.mark.parametrize(
    "repository", ["{{ $REPO_URL }}", "${REPO_URL}", "https://{{ $GIT_HOST }}/org/flows.git"]
)
def test_a_templated_repository_url_is_refused_at_deploy_in_one_line(
    repository: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a Prefect-style step whose repository comes from the deploying machine's environment
    monkeypatch.setenv("REPO_URL", "https://github.com/org/flows.git")
    monkeypatch.setenv("GIT_HOST", "github.com")
    step = {"prefect.deployments.steps.git_clone": {"repository": repository, "branch": "main"}}

    # When deploy takes the step as the source
    with pytest.raises(ConfigError) as refused:
        source_from_pull_steps([step])

    # Then it says the URL is a template deploy cannot pin, instead of "repository not found"
    assert str(refused.value) == (
        f"the git repository URL {repository} is a template, but deploy needs the URL itself "
        "to pin a commit"
    )
    assert refused.value.hint == (
        "write the repository's URL (credentials go in credentials= or access_token:)"
    )


def test_pull_steps_name_at_most_one_source() -> None:
    assert source_from_pull_steps([{"set_working_directory": {"directory": "x"}}]) is None
    clone = {"git_clone": {"repository": "https://h/r.git"}}
    with pytest.raises(ConfigError, match="more than one"):
        source_from_pull_steps([clone, clone])


def test_run_steps_materialise_the_pinned_commit_and_set_the_directory(
    repos: Repos, git_http: GitHttpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given a private repository, its token in the environment (a ${TEMPLATE}), and the steps a
    # deployment stores
    repo = repos.make("steps")
    sha = repo.commit({"flows/etl.py": "X = 1\n"})
    repo.configure(basic=[f"x-access-token:{TOKEN}"])
    monkeypatch.setenv("STEPS_TOKEN", TOKEN)
    steps = [
        {
            "git_clone": {
                "id": "clone",
                "repository": git_http.url(repo),
                "access_token": "${STEPS_TOKEN}",
            }
        },
        {"set_working_directory": {"directory": "{{ clone.directory }}"}},
        {"set_working_directory": {"directory": "flows"}},
    ]
    source = source_from_pull_steps(steps)
    assert source is not None
    env = {"STEPS_TOKEN": TOKEN}
    cache = CodeCache(tmp_path / "cache", max_bytes=10**9, context=FetchContext(environ=env))
    pinned = source.resolve(cache.context)
    repo.commit({"flows/etl.py": "X = 2\n"})  # the branch moves on after deploy

    def materialise(dest: Path) -> dict[str, str]:
        with cache.checkout(source, pinned) as checkout:
            dest.mkdir()
            copy_writable(checkout, dest)
        return {"commit": pinned}

    # When the worker runs the steps
    context = StepContext(code_dir=tmp_path / "code", materialise=materialise, env=env)
    outputs = run_steps(steps, context)

    # Then the pinned commit is in the code directory, and the working directory is inside it
    assert outputs["clone"]["commit"] == sha
    code = Path(outputs["clone"]["directory"])
    assert code == tmp_path / "code"
    assert (code / "flows/etl.py").read_text() == "X = 1\n"
    assert outputs["directory"] == str((code / "flows").resolve())
    assert context.cwd == (code / "flows").resolve()
    assert TOKEN not in json.dumps({k: str(v) for k, v in outputs.items()})


PROJECT = """
name: analytics
pull:
  - prefect.deployments.steps.git_clone:
      repository: https://github.com/org/flows.git
      branch: main
      credentials: gh
deployments:
  - name: nightly
    entrypoint: flows/etl.py:main
    work_pool: {name: big, job_variables: {env: {A: "1"}}}
    parameters: {days: 1}
    tags: [etl]
  - name: hourly
    entrypoint: flows/etl.py:main
    follow_ref: true
    pull:
      - git_clone:
          repository: https://github.com/org/flows.git
          branch: dev
          access_token: ${GH_TOKEN}
"""


def test_load_project(tmp_path: Path) -> None:
    (tmp_path / "conveyor.yaml").write_text(PROJECT)
    project = load_project(tmp_path)
    assert project.name == "analytics"
    nightly = project.deployment("nightly")
    assert nightly is not None
    assert nightly.work_pool == "big"
    assert nightly.job_variables == {"env": {"A": "1"}}
    assert nightly.parameters == {"days": 1}
    assert project.source(nightly) == GitRepository(
        "https://github.com/org/flows.git", branch="main", credentials="gh"
    )
    hourly = project.deployment("hourly")
    assert hourly is not None
    assert hourly.follow_ref is True
    assert project.source(hourly) == GitRepository(
        "https://github.com/org/flows.git", branch="dev", credentials="${GH_TOKEN}"
    )
    assert project.deployment(entrypoint="flows/etl.py:main") is None  # two match: ambiguous
    options = deploy_options(
        project, hourly, parameters={}, work_pool=None, tags=[], follow_ref=False, description=None
    )
    assert options["follow_ref"] is True
    assert options["pull_steps"][0]["git_clone"]["access_token"] == "${GH_TOKEN}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pull: [\n", "not valid YAML"),
        ("- a\n", "must be a mapping"),
        ("schedules: []\n", "schedules"),
        ("deployments:\n  - name: a\n", "entrypoint"),
        ("deployments:\n  - {name: a, entrypoint: f.py:m, pool: x}\n", "pool"),
        (
            "deployments:\n  - {name: a, entrypoint: f.py:m}\n  - {name: a, entrypoint: g.py:m}\n",
            "defined twice",
        ),
    ],
)
def test_bad_project_files(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "conveyor.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_project(tmp_path / "conveyor.yaml")
    assert "\n" not in str(caught.value)


def test_missing_project_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_project(tmp_path)

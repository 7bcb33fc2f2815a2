# ruff: noqa: F401, F811  (fixtures imported from fixtures.git_server are parameters here)
"""End to end with git: the real CLI in subprocesses (``conveyor server start``, ``conveyor
credentials create``, ``conveyor deploy``, ``conveyor run``, ``conveyor worker start``) against
a token-checking git smart-HTTP server on loopback.

- leak: a recognisable token is in no log, no database byte, no file under the cache, no error
  text and no git argv, after a deploy, three runs and one failed clone;
- pinning: a deployment runs the commit it was deployed at; ``--follow-ref`` runs the new one;
- warm means offline: with the git server stopped, a run of a cached commit completes;
- concurrency: 8 simultaneous runs of one uncached commit make one fetch and all complete;
- ``conveyor.yaml``: ``conveyor deploy`` takes the git_clone pull step as the source.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conveyor.client import ConveyorClient
from conveyor.connect import connect
from conveyor.schemas import Run, RunState
from conveyor.settings import Settings
from fixtures.git_server import (
    GitHttpServer,
    Repo,
    Repos,
    git_calls,
    git_http,
    git_repos_root,
    install_git_wrapper,
    repos,
)
from fixtures.ports import wait_until

pytestmark = [pytest.mark.service, pytest.mark.slow]

TOKEN = "ghp_LEAKCANARY_e2e_93b1f07c"

FLOW = """\
import os
from conveyor import flow

MARKER = {marker!r}


@flow
def main(n: int = 1) -> dict:
    print("running marker", MARKER)
    return {{"marker": MARKER, "version": os.environ["CONVEYOR_RUN_VERSION"], "n": n}}
"""


def flow_files(marker: str) -> dict[str, str]:
    return {"flows/__init__.py": "", "flows/etl.py": FLOW.format(marker=marker)}


@dataclass
class Stack:
    """A Conveyor server process and the environment every CLI subprocess gets."""

    home: Path
    env: dict[str, str]
    calls: Path
    logs: Path
    server: subprocess.Popen[bytes] | None = None
    outputs: list[str] = field(default_factory=list)

    def cli(
        self,
        *args: str,
        input: str | None = None,
        env: dict[str, str] | None = None,
        ok: bool = True,
        timeout: float = 180,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "conveyor", *args],
            input=input,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            check=False,
        )
        self.outputs += [done.stdout, done.stderr]
        if ok:
            assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
        return done

    def worker(self, *extra: str, env: dict[str, str] | None = None, name: str = "w") -> None:
        log = self.logs / f"worker-{name}.log"
        with open(log, "ab") as fh:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "conveyor",
                    "--debug",
                    "worker",
                    "start",
                    "--burst",
                    "--poll-seconds",
                    "0.2",
                    "--name",
                    name,
                    *extra,
                ],
                env={**self.env, **(env or {})},
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=300,
                check=False,
            )
        assert done.returncode == 0, log.read_text()[-3000:]

    def client(self) -> ConveyorClient:
        return connect(Settings.from_env(self.env))

    def run(self, deployment: str) -> str:
        return self.cli("run", deployment).stdout.strip().splitlines()[-1]

    def get_run(self, run_id: str) -> Run:
        with self.client() as api:
            return api.get_run(run_id)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A `conveyor server start` on a free port, a git argv recorder first on PATH."""
    home = tmp_path / "conveyor-home"
    logs = tmp_path / "logs"
    logs.mkdir()
    calls = install_git_wrapper(tmp_path / "bin")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(
        {
            "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
            "CONVEYOR_HOME": str(home),
            "PYTHONUNBUFFERED": "1",
        }
    )
    server_log = open(logs / "server.log", "ab")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conveyor",
            "--debug",
            "server",
            "start",
            "--port",
            "0",
            "--log-level",
            "debug",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=server_log,
    )
    assert server.stdout is not None
    line = server.stdout.readline().decode()
    if "listening on" not in line:
        server.kill()
        server.wait()
        pytest.fail(f"conveyor server did not start: {line}")
    url = line.split("listening on ", 1)[1].split()[0]
    env["CONVEYOR_API_URL"] = url
    stack = Stack(home=home, env=env, calls=calls, logs=logs, server=server)
    with stack.client() as api:
        assert wait_until(lambda: api.health()["status"] == "ok", timeout=15)
    try:
        yield stack
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        (logs / "server-stdout.log").write_bytes(server.stdout.read())
        server.stdout.close()
        server_log.close()


def _private_repo(repos: Repos, name: str, marker: str = "A") -> tuple[Repo, str]:
    repo = repos.make(name)
    sha = repo.commit(flow_files(marker), message=f"marker {marker}")
    repo.configure(basic=[f"x-access-token:{TOKEN}"])
    return repo, sha


def _deploy(stack: Stack, url: str, name: str, *extra: str) -> dict[str, object]:
    stack.cli(
        "deploy",
        "flows/etl.py:main",
        "--name",
        name,
        "--source",
        url,
        "--branch",
        "main",
        "--credentials",
        "gh",
        *extra,
    )
    with stack.client() as api:
        return api.get_deployment("main", name).model_dump(mode="json")


def test_token_never_leaks(stack: Stack, repos: Repos, git_http: GitHttpServer) -> None:
    # Given credentials saved through the CLI and a private repository
    repo, sha = _private_repo(repos, "leak")
    stack.cli("credentials", "create", "github", "gh", input=TOKEN + "\n")

    # When it is deployed (pinned), run three times, and a fourth run's clone fails
    deployment = _deploy(stack, git_http.url(repo), "leak")
    follower = _deploy(stack, git_http.url(repo), "leak-follow", "--follow-ref")
    runs = [stack.run("main/leak") for _ in range(3)]
    worker_cache = {"CONVEYOR_CACHE_DIR": str(stack.home / "worker-cache")}  # cold: it clones
    stack.worker(env=worker_cache, name="w1")
    repo.configure(basic=["x-access-token:rotated-elsewhere"])  # the token is now rejected
    repo.commit({"flows/new.py": "X = 1\n"})
    failing = stack.run("main/leak-follow")
    stack.worker(env=worker_cache, name="w2")

    # Then the three runs completed at the pinned commit and the fourth failed on auth
    assert deployment["version"] == sha
    assert follower["source"]["credentials"] == "gh"  # type: ignore[index]
    for run_id in runs:
        done = stack.get_run(run_id)
        assert done.state is RunState.COMPLETED, done.error
        assert done.version == sha
    failed = stack.get_run(failing)
    assert failed.state is RunState.FAILED
    assert failed.error
    assert "authentication" in failed.error

    # and the token is nowhere: logs, run logs and errors, database, cache, git argv, outputs
    texts: dict[str, bytes] = {}
    for path in stack.logs.rglob("*"):
        if path.is_file():
            texts[f"log {path.name}"] = path.read_bytes()
    for path in stack.home.rglob("*"):
        if path.is_file():
            texts[f"home {path.relative_to(stack.home)}"] = path.read_bytes()
    with stack.client() as api:
        for run_id in [*runs, failing]:
            run = api.get_run(run_id)
            texts[f"run {run_id}"] = run.model_dump_json().encode()
            texts[f"run logs {run_id}"] = "\n".join(
                line.message for line in api.read_logs(run_id)
            ).encode()
        texts["deployments"] = json.dumps(
            [d.model_dump(mode="json") for d in api.list_deployments()]
        ).encode()
    calls = git_calls(stack.calls)
    assert len(calls) > 10
    texts["git argv"] = json.dumps(calls).encode()
    texts["cli output"] = "\n".join(stack.outputs).encode()
    configs = list(stack.home.rglob("config"))
    assert any(p.parent.name == "mirror.git" for p in configs)  # the cache's git config exists
    assert any(p.suffix == ".db" or p.name.endswith(".db") for p in stack.home.rglob("*"))
    # (what was scanned is real: the worker logged its git commands, the argv has the fetches)
    assert b"command=git" in texts["log worker-w1.log"]
    assert any("fetch" in call and any("refs/conveyor/" in a for a in call) for call in calls)
    assert any(p.name == "mirror.git" for p in (stack.home / "worker-cache").rglob("*"))
    leaked = sorted(where for where, data in texts.items() if TOKEN.encode() in data)
    assert leaked == []
    assert "authentication" in failed.error


def test_pinned_by_default_follow_ref_when_asked(
    stack: Stack, repos: Repos, git_http: GitHttpServer
) -> None:
    # Given two deployments of one branch: pinned and following the ref
    repo, first = _private_repo(repos, "pin", marker="A")
    stack.cli("credentials", "create", "github", "gh", input=TOKEN)
    _deploy(stack, git_http.url(repo), "pinned")
    _deploy(stack, git_http.url(repo), "following", "--follow-ref")

    # When a new commit lands on the branch and both are run
    second = repo.commit(flow_files("B"), message="marker B")
    pinned, following = stack.run("main/pinned"), stack.run("main/following")
    stack.worker()

    # Then the pinned one ran the deployed commit, the other the new one, each recording it
    done = stack.get_run(pinned)
    assert done.state is RunState.COMPLETED, done.error
    assert done.result["marker"] == "A"
    assert done.version == first == done.result["version"]
    done = stack.get_run(following)
    assert done.state is RunState.COMPLETED, done.error
    assert done.result["marker"] == "B"
    assert done.version == second == done.result["version"]


def test_warm_run_needs_no_git_server(stack: Stack, repos: Repos, tmp_path: Path) -> None:
    # Given a git server of our own, a deployment, and one run that warmed the cache
    server = GitHttpServer(repos.root).start()
    try:
        repo, sha = _private_repo(repos, "offline")
        stack.cli("credentials", "create", "github", "gh", input=TOKEN)
        _deploy(stack, server.url(repo), "offline")
        first = stack.run("main/offline")
        stack.worker(name="warm-1")
        assert stack.get_run(first).state is RunState.COMPLETED
    finally:
        server.stop()

    # When the git server is gone and the deployment runs again
    calls_before = len(git_calls(stack.calls))
    second = stack.run("main/offline")
    stack.worker(name="warm-2")

    # Then the run completes without running git at all
    done = stack.get_run(second)
    assert done.state is RunState.COMPLETED, done.error
    assert done.version == sha
    assert len(git_calls(stack.calls)) == calls_before


def test_eight_simultaneous_runs_of_an_uncached_commit_fetch_once(
    stack: Stack, repos: Repos, git_http: GitHttpServer, tmp_path: Path
) -> None:
    # Given a deployment and 8 queued runs, and a worker whose cache is empty
    repo, sha = _private_repo(repos, "eight")
    stack.cli("credentials", "create", "github", "gh", input=TOKEN)
    _deploy(stack, git_http.url(repo), "eight")
    runs = [stack.run("main/eight") for _ in range(8)]
    requests_before = len(git_http.requests(repo))
    calls_before = {tuple(c) for c in git_calls(stack.calls)}

    # When a worker runs them 8 at a time
    stack.worker(
        "--limit", "8", env={"CONVEYOR_CACHE_DIR": str(tmp_path / "cold-cache")}, name="eight"
    )

    # Then all completed at the commit, and the repository was fetched exactly once
    for run_id in runs:
        done = stack.get_run(run_id)
        assert done.state is RunState.COMPLETED, done.error
        assert done.version == sha
    new_calls = [c for c in git_calls(stack.calls) if tuple(c) not in calls_before]
    commit_fetches = [c for c in new_calls if "fetch" in c and f"+{sha}:refs/conveyor/{sha}" in c]
    assert len(commit_fetches) == 1
    upload_packs = [r for r in git_http.requests(repo)[requests_before:] if r[2] == "fetch"]
    assert 1 <= len(upload_packs) <= 2  # the commit (+ its blobs when filtered), once


def test_deploy_reads_conveyor_yaml(
    stack: Stack, repos: Repos, git_http: GitHttpServer, tmp_path: Path
) -> None:
    # Given a project folder whose conveyor.yaml names the repository in a git_clone step
    repo, sha = _private_repo(repos, "yaml")
    stack.cli("credentials", "create", "github", "gh", input=TOKEN)
    project = tmp_path / "project"
    project.mkdir()
    (project / "conveyor.yaml").write_text(
        "pull:\n"
        "  - git_clone:\n"
        f"      repository: {git_http.url(repo)}\n"
        "      branch: main\n"
        "      credentials: gh\n"
        "deployments:\n"
        "  - name: from-yaml\n"
        "    entrypoint: flows/etl.py:main\n"
        "    parameters: {n: 7}\n"
    )

    # When `conveyor deploy` runs there without --source, and the deployment is run
    stack.cli("deploy", "flows/etl.py:main", "--name", "from-yaml", cwd=project)
    run_id = stack.run("main/from-yaml")
    stack.worker()

    # Then it was deployed from git (pinned, with its pull step) and ran with the file's params
    with stack.client() as api:
        deployment = api.get_deployment("main", "from-yaml")
    assert deployment.source["kind"] == "git"
    assert deployment.version == sha
    assert deployment.pull_steps[0]["git_clone"]["credentials"] == "gh"
    assert deployment.parameters == {"n": 7}
    result = stack.get_run(run_id)
    assert result.state is RunState.COMPLETED, result.error
    assert result.result["n"] == 7

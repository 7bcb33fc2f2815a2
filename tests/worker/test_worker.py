# ruff: noqa: F811  (fixtures imported from fixtures.git_server are parameters here)
"""The worker loop against the real app (embedded, in this process): claim, execute, report."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.bundles import verify_tree
from conveyor.cache import CodeCache
from conveyor.client import ConveyorClient
from conveyor.connect import connect
from conveyor.deploy import from_source
from conveyor.errors import ConfigError, InvalidRequest, ServerUnavailable
from conveyor.run_results import load_result
from conveyor.schemas import Deployment, DeploymentCreate, Run, RunState
from conveyor.settings import Settings
from conveyor.sources import source_from_spec
from conveyor.sources.git import GitRepository
from conveyor.steps import source_from_pull_steps
from conveyor.worker.loop import Worker
from conveyor.worker.options import WorkerOptions
from fixtures.git_server import Repos, git_repos_root, repos, run_git  # noqa: F401
from fixtures.ports import wait_until


@pytest.fixture
def client(settings: Settings) -> Iterator[ConveyorClient]:
    with connect(settings) as api:
        yield api


@pytest.fixture
def deploy(settings: Settings, client: ConveyorClient, project: Path):
    def deploy_one(function: str, **options: Any) -> Deployment:
        return from_source(project, f"flows.py:{function}").deploy(
            "test", settings=settings, client=client, **options
        )

    return deploy_one


def make_worker(settings: Settings, client: ConveyorClient, **options: Any) -> Worker:
    options.setdefault("lease_seconds", 3.0)
    options.setdefault("poll_seconds", 0.2)
    return Worker.from_settings(
        settings, client, WorkerOptions(pool="default", name="w1", **options)
    )


def start(client: ConveyorClient, deployment: Deployment, **parameters: Any) -> Run:
    return client.create_run(deployment.flow_name, deployment.name, parameters=parameters)


def test_burst_worker_runs_queued_runs_and_reports_everything(settings, client, deploy) -> None:
    # Given two queued runs of a deployment
    deployment = deploy("hello")
    first = start(client, deployment, name="Ada")
    second = start(client, deployment, name="Bo")
    # When a burst worker works
    exit_code = make_worker(settings, client).work(burst=True)
    # Then both completed with their results, the pinned version and every timing
    assert exit_code == 0
    for run, result in ((first, "HELLO ADA"), (second, "HELLO BO")):
        done = client.get_run(run.id)
        assert done.state is RunState.COMPLETED
        assert done.result == result
        assert done.version == deployment.version
        assert done.worker == "w1"
        assert {"queue", "fetch", "start", "run"} <= set(done.timings)
        assert all(value >= 0 for value in done.timings.values())
        messages = [line.message for line in client.read_logs(run.id)]
        assert f"hello {result.split()[1].title()}" in messages
        assert f"logged {result.split()[1].title()}" in messages
    assert not any((settings.home / "work").iterdir())  # workspaces removed


def test_failing_flow_does_not_stop_the_worker(settings, client, deploy) -> None:
    failing = start(client, deploy("boom"))
    fine = start(client, deploy("hello"))

    make_worker(settings, client).work(burst=True)

    failed = client.get_run(failing.id)
    assert failed.state is RunState.FAILED
    assert failed.error == "ValueError: kaboom"
    assert any("Traceback" in line.message for line in client.read_logs(failing.id))
    assert client.get_run(fine.id).state is RunState.COMPLETED


@pytest.mark.parametrize(
    ("parameters", "message", "hint"),
    [
        (
            {"at": "notadate"},
            "parameter 'at': 'notadate' is not a valid datetime or date, input is too short",
            "write an ISO 8601 date and time, such as 2024-01-31T09:30:00Z",
        ),
        (
            {"at": "2024-13-45"},
            "parameter 'at': '2024-13-45' is not a valid datetime or date, month value is "
            "outside expected range of 1-12",
            "write an ISO 8601 date and time, such as 2024-01-31T09:30:00Z",
        ),
        (
            {"at": "2024-01-31T09:30:00Z", "day": "yesterday"},
            "parameter 'day': 'yesterday' is not a valid date or datetime, input is too short",
            "write an ISO 8601 date, such as 2024-01-31",
        ),
        (
            {"at": "2024-01-31T09:30:00Z", "clock": "25:00"},
            "parameter 'clock': '25:00' is not in a valid time format, hour value is outside "
            "expected range of 0-23",
            "write an ISO 8601 time, such as 09:30:00",
        ),
    ],
    ids=["datetime", "datetime-month", "date", "time"],
)
def test_a_date_or_time_that_does_not_convert_creates_no_run(
    client, deploy, parameters, message, hint
) -> None:
    deployment = deploy("dated")

    with pytest.raises(InvalidRequest) as caught:
        start(client, deployment, **parameters)

    assert (caught.value.message, caught.value.hint) == (f"dated/test: {message}", hint)
    assert client.list_runs() == []


def test_dates_and_times_reach_the_flow_as_python_values(settings, client, deploy) -> None:
    # Given runs with ISO 8601 values, and one left to the date's default
    deployment = deploy("dated")
    full = start(
        client, deployment, at="2024-02-29T09:30:00+01:00", day="2024-02-29", clock="09:30"
    )
    default = start(client, deployment, at="2024-02-29")
    # When a burst worker runs them
    make_worker(settings, client).work(burst=True)
    # Then the flow got datetime, date and time objects
    assert client.get_run(full.id).result == (
        "datetime:2024-02-29T09:30:00+01:00 date:2024-02-29 time:09:30:00"
    )
    assert client.get_run(default.id).result == "datetime:2024-02-29T00:00:00 date:2024-01-01"


def test_result_that_is_not_json_is_stored_and_referenced(settings, client, deploy) -> None:
    run = start(client, deploy("pair"))

    make_worker(settings, client).work(burst=True)

    done = client.get_run(run.id)
    assert done.state is RunState.COMPLETED
    assert done.result is None
    assert done.result_ref == f"local:{run.id}/result.pickle"
    assert (settings.results_dir / run.id / "result.pickle").is_file()
    assert done.result_size == len((settings.results_dir / run.id / "result.pickle").read_bytes())
    assert load_result(done, settings=settings) == (1, 2)


def test_limit_runs_that_many_at_the_same_time(settings, client, deploy, tmp_path) -> None:
    deployment = deploy("sleepy")
    runs = [
        start(client, deployment, seconds=1.5, marker=str(tmp_path / f"m{i}")) for i in range(2)
    ]
    started = time.monotonic()

    make_worker(settings, client, limit=2).work(burst=True)

    assert time.monotonic() - started < 2.9  # two 1.5 s runs side by side
    assert all(client.get_run(r.id).state is RunState.COMPLETED for r in runs)


def test_max_runs_stops_after_that_many(settings, client, deploy) -> None:
    deployment = deploy("hello")
    runs = [start(client, deployment) for _ in range(3)]

    make_worker(settings, client).work(max_runs=1)

    states = [client.get_run(r.id).state for r in runs]
    assert states.count(RunState.COMPLETED) == 1
    assert states.count(RunState.SCHEDULED) == 2


def test_cancelling_a_running_run_stops_its_child(settings, client, deploy, tmp_path) -> None:
    marker = tmp_path / "pid"
    run = start(client, deploy("sleepy"), seconds=60, marker=str(marker))

    def cancel_when_started() -> None:
        if wait_until(marker.exists, timeout=20):
            client.cancel_run(run.id)

    threading.Thread(target=cancel_when_started, daemon=True).start()
    started = time.monotonic()
    make_worker(settings, client, lease_seconds=1.5).work(burst=True)

    done = client.get_run(run.id)
    assert done.state is RunState.CANCELLED
    assert time.monotonic() - started < 15


def test_job_variable_templates_resolve_from_the_secret_store(settings, client, deploy) -> None:
    client.set_secret("GREETING_TOKEN", "s3cr3t-value")
    deployment = deploy("env", job_variables={"env": {"GREETING": "${GREETING_TOKEN}"}})
    run = start(client, deployment, name="GREETING")

    make_worker(settings, client).work(burst=True)

    done = client.get_run(run.id)
    assert done.state is RunState.COMPLETED
    assert done.result == "s3cr3t-value"
    stored = client.get_deployment(deployment.flow_name, deployment.name)
    assert stored.job_variables == {"env": {"GREETING": "${GREETING_TOKEN}"}}


def test_missing_template_fails_the_run_before_the_flow_starts(settings, client, deploy) -> None:
    run = start(
        client, deploy("env", job_variables={"env": {"X": "${NOT_DEFINED_ANYWHERE}"}}), name="X"
    )

    make_worker(settings, client).work(burst=True)

    done = client.get_run(run.id)
    assert done.state is RunState.FAILED
    assert done.error == (
        "template ${NOT_DEFINED_ANYWHERE} has no value in the environment or the secret store"
    )
    assert "start" not in done.timings


def test_flow_cannot_modify_the_cached_checkout(settings, client, deploy) -> None:
    deployment = deploy("write_files")
    run = start(client, deployment)

    make_worker(settings, client).work(burst=True)

    done = client.get_run(run.id)
    assert done.state is RunState.COMPLETED
    checkout = CodeCache.from_settings(settings).path_for(
        source_from_spec(deployment.source), deployment.version
    )
    assert (checkout / "data.txt").read_text() == "original"
    assert not (checkout / "new.txt").exists()
    verify_tree(checkout, deployment.version)
    assert not Path(done.result).is_relative_to(checkout)


def test_follow_ref_runs_the_version_the_source_has_at_run_time(
    settings, client, project: Path
) -> None:
    # Given a deployment that follows a local folder instead of pinning a version
    deployment = client.put_deployment(
        DeploymentCreate(
            flow_name="hello",
            name="latest",
            entrypoint="flows.py:hello",
            source={"kind": "local", "path": str(project)},
            version="sha256-" + "0" * 64,
            follow_ref=True,
        )
    )
    # When the folder changes and a run starts
    (project / "helpers.py").write_text("def shout(text):\n    return text + '!'\n")
    run = start(client, deployment, name="Cy")
    make_worker(settings, client).work(burst=True)
    # Then the run used, and reported, the folder's current version
    done = client.get_run(run.id)
    assert done.state is RunState.COMPLETED
    assert done.result == "hello Cy!"
    assert done.version != deployment.version
    assert done.version.startswith("sha256-")


MARKED_FLOW = "from conveyor import flow\n\n@flow\ndef marked() -> str:\n    return {!r}\n"


@pytest.mark.parametrize("how", ["GitRepository(follow_ref=True)", "git_clone follow_ref: true"])
def test_a_git_source_that_follows_its_branch_runs_the_branch_as_it_is_at_run_time(
    settings, client, repos: Repos, how: str
) -> None:
    # Given a repository deployed with follow_ref asked for by the source itself (the README's
    # GitRepository option, or a git_clone step's), not by deploy's keyword
    repo = repos.make("follows")
    repo.commit({"flows.py": MARKED_FLOW.format("A")})
    if how.startswith("GitRepository"):
        source = GitRepository(repo.file_url, branch="main", follow_ref=True)
    else:
        step = {"git_clone": {"repository": repo.file_url, "branch": "main", "follow_ref": True}}
        source = source_from_pull_steps([step])
    deployment = from_source(source, "flows.py:marked").deploy(
        "follows", settings=settings, client=client
    )

    # When the branch moves on and a run starts
    moved = repo.commit({"flows.py": MARKED_FLOW.format("B")})
    run = start(client, deployment)
    make_worker(settings, client).work(burst=True)

    # Then the deployment follows its ref, and the run ran (and recorded) the branch's new commit
    assert deployment.follow_ref is True
    done = client.get_run(run.id)
    assert done.state is RunState.COMPLETED, done.error
    assert done.result == "B"
    assert done.version == moved


def test_a_run_following_a_deleted_branch_fails_in_one_line_and_runs_nothing(
    settings, client, repos: Repos
) -> None:
    # Given a deployment that follows branch "feature"
    repo = repos.make("deleted")
    repo.commit({"flows.py": MARKED_FLOW.format("A")}, branch="feature")
    source = GitRepository(repo.file_url, branch="feature", follow_ref=True)
    deployment = from_source(source, "flows.py:marked").deploy(
        "deleted", settings=settings, client=client
    )

    # When the branch is deleted and a run starts
    run_git("push", "-q", repo.bare, ":refs/heads/feature", cwd=repo.work)
    run = start(client, deployment)
    make_worker(settings, client).work(burst=True)

    # Then the run failed naming the ref, the repository and why, and the flow never started
    # (the deployed commit is not run in its place)
    done = client.get_run(run.id)
    assert done.state is RunState.FAILED
    assert done.error == (
        f"no branch or tag 'feature' in {repo.file_url} (the deployment follows it)"
    )
    assert done.result is None
    assert "start" not in done.timings
    messages = [line.message for line in client.read_logs(run.id)]
    assert (
        "hint: restore the branch or tag, or redeploy with the one to follow now; the deployed "
        "version is not run in its place"
    ) in messages


def test_follow_ref_with_a_commit_sha_is_refused_at_deploy(settings, client, repos: Repos) -> None:
    repo = repos.make("pinned")
    sha = repo.commit({"flows.py": MARKED_FLOW.format("A")})
    deployable = from_source(GitRepository(repo.file_url, commit_sha=sha[:8]), "flows.py:marked")

    with pytest.raises(ConfigError, match="a commit_sha never moves") as refused:
        deployable.deploy("pinned", settings=settings, client=client, follow_ref=True)

    assert refused.value.hint == (
        "deploy with a branch (--branch) to follow it, or without follow_ref"
    )
    assert client.list_deployments() == []


def test_stop_lets_the_running_run_finish(settings, client, deploy, tmp_path) -> None:
    marker = tmp_path / "pid"
    run = start(client, deploy("sleepy"), seconds=1, marker=str(marker))
    worker = make_worker(settings, client)
    threading.Thread(
        target=lambda: wait_until(marker.exists, timeout=20) and worker.stop(), daemon=True
    ).start()

    worker.work()

    assert client.get_run(run.id).state is RunState.COMPLETED


def test_forced_stop_reports_the_run_crashed(settings, client, deploy, tmp_path) -> None:
    marker = tmp_path / "pid"
    run = start(client, deploy("sleepy"), seconds=60, marker=str(marker))
    worker = make_worker(settings, client)
    threading.Thread(
        target=lambda: wait_until(marker.exists, timeout=20) and worker.stop(force=True),
        daemon=True,
    ).start()

    worker.work()

    done = client.get_run(run.id)
    assert done.state in (RunState.CRASHED, RunState.SCHEDULED)  # crashed, or retried
    assert done.error == "worker stopped before the run finished" or done.attempts[0].error == (
        "worker stopped before the run finished"
    )


class FlakyClient:
    """The real client, but the first few claims find the server away."""

    def __init__(self, client: ConveyorClient, failures: int) -> None:
        self._client = client
        self.failures = failures

    def claim_run(self, *args: Any, **kwargs: Any) -> Run | None:
        if self.failures:
            self.failures -= 1
            raise ServerUnavailable("cannot reach http://127.0.0.1:9")
        return self._client.claim_run(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_worker_waits_out_an_unavailable_server_and_says_so_once(
    settings, client, deploy, caplog: pytest.LogCaptureFixture
) -> None:
    run = start(client, deploy("hello"))
    flaky = FlakyClient(client, failures=2)

    with caplog.at_level(logging.INFO, logger="conveyor.worker"):
        make_worker(settings, flaky).work(burst=True)  # type: ignore[arg-type]

    assert client.get_run(run.id).state is RunState.COMPLETED
    messages = [r.getMessage() for r in caplog.records]
    assert sum("server unavailable" in m for m in messages) == 1
    assert sum("server reachable again" in m for m in messages) == 1


def test_the_worker_list_shows_runs_starting_and_ending_within_seconds(
    settings, client, deploy, tmp_path
) -> None:
    # Given a worker with a limit of 2 that has sent its first heartbeat
    deployment = deploy("sleepy")
    worker = make_worker(settings, client, limit=2)
    thread = threading.Thread(target=worker.work, daemon=True)
    thread.start()

    def running() -> int:
        return next((w.running for w in client.list_workers() if w.name == "w1"), -1)

    try:
        assert wait_until(lambda: running() == 0, timeout=20)
        # When two runs start on it
        markers = [tmp_path / f"m{i}" for i in range(2)]
        runs = [start(client, deployment, seconds=60, marker=str(m)) for m in markers]
        assert wait_until(lambda: all(m.exists() for m in markers), timeout=30)
        # Then the worker list says so within seconds, not at the next periodic heartbeat
        assert wait_until(lambda: running() == 2, timeout=4)
        # ...and says so again when they end
        for run in runs:
            client.cancel_run(run.id)
        assert wait_until(lambda: running() == 0, timeout=6)
    finally:
        worker.stop(force=True)
        thread.join(30)

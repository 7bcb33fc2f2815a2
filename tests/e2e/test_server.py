"""The real command line against `conveyor server start` on PostgreSQL (and SQLite for faults):
exactly-once claims across worker processes, a worker killed mid-run, a server restarted
mid-run, and a wrong API key."""

from __future__ import annotations

import collections
import re
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.errors import ObjectNotFound
from e2e.conftest import (
    Server,
    api,
    command_env,
    conveyor,
    ok,
    one_line_error,
    server_env,
    wait_for_run,
)
from fixtures.ports import wait_until
from fixtures.postgres import PostgresCluster, postgres_cluster  # noqa: F401
from fixtures.procs import alive

pytestmark = [pytest.mark.slow, pytest.mark.service]


@pytest.fixture(scope="module")
def pg_server(
    postgres_cluster: PostgresCluster,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """One server on a fresh PostgreSQL database for the whole module."""
    url = postgres_cluster.create_database()
    home = tmp_path_factory.mktemp("pg-server")
    server = Server.start(server_env(home, CONVEYOR_DATABASE_URL=url), log=home / "server.log")
    try:
        yield server
    finally:
        server.stop()
        postgres_cluster.drop_database(url)


@pytest.fixture
def pool(pg_server: Server) -> str:
    """A work pool of this test's own, so no other test's runs are claimed."""
    name = f"p-{uuid.uuid4().hex[:8]}"
    with api(command_env(CONVEYOR_API_URL=pg_server.url)) as client:
        client.create_pool(name)
    return name


@pytest.mark.postgres
def test_deploy_worker_run_completed_on_postgres(
    project: Path, pg_server, pool, background
) -> None:
    env = command_env(CONVEYOR_API_URL=pg_server.url)
    deployment = f"d-{pool}"
    out = ok(
        conveyor(
            "deploy", "flows.py:hello", "--name", deployment, "--pool", pool, env=env, cwd=project
        )
    )
    assert f"deployment hello/{deployment} version sha256-" in out
    background("worker", "start", "--pool", pool, env=env, name="worker")

    watched = conveyor("run", f"hello/{deployment}", "--param", "name=Pg", "--watch", env=env)

    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert "hello Pg" in watched.stdout
    assert '"HELLO PG"' in watched.stdout


@pytest.mark.postgres
def test_exactly_once_with_four_workers_and_200_runs(
    project: Path, pg_server, pool, background, tmp_path: Path
) -> None:
    # Given 200 queued runs whose flow appends its run id to one file
    env = command_env(CONVEYOR_API_URL=pg_server.url)
    ok(
        conveyor(
            "deploy", "flows.py:append_run_id", "--name", pool, "--pool", pool, env=env, cwd=project
        )
    )
    ledger = tmp_path / "ledger.txt"
    with api(env) as client:
        run_ids = [
            client.create_run("append-run-id", pool, parameters={"path": str(ledger)}).id
            for _ in range(200)
        ]
    # When four worker processes race for them
    workers = [
        background(
            "worker", "start", "--pool", pool, "--burst", "--limit", "2", env=env, name=f"w{i}"
        )
        for i in range(4)
    ]
    for worker in workers:
        assert worker.wait(180) == 0, worker.output()
    # Then every run completed, and every id is in the ledger exactly once
    with api(env) as client:
        runs = client.list_runs(deployment=f"append-run-id/{pool}", limit=1000)
    unfinished = [(r.id, r.state.value, r.attempt, r.worker, r.error) for r in runs]
    unfinished = [r for r in unfinished if r[1:3] != ("completed", 1)]
    assert len(runs) == 200
    assert not unfinished, unfinished  # which run, in what state, on which worker, and why
    counts = collections.Counter(ledger.read_text().split())
    assert set(counts) == set(run_ids), set(run_ids) ^ set(counts)
    assert set(counts.values()) == {1}
    assert len({run.worker for run in runs}) > 1


@pytest.mark.postgres
def test_killed_worker_crashes_its_run_within_a_lease_and_another_worker_retries_it(
    project: Path, pg_server, pool, background, tmp_path: Path
) -> None:
    # Given a worker with a 2 s lease running a flow that has one retry
    env = command_env(CONVEYOR_API_URL=pg_server.url)
    ok(
        conveyor(
            "deploy", "flows.py:marked_sleep", "--name", pool, "--pool", pool, env=env, cwd=project
        )
    )
    marks = tmp_path / "marks.txt"
    first = background(
        "worker", "start", "--pool", pool, "--lease-seconds", "2", "--name", "first", env=env
    )
    with api(env) as client:
        run = client.create_run("marked-sleep", pool, parameters={"seconds": 2, "log": str(marks)})
        assert wait_until(lambda: marks.exists() and "start 1" in marks.read_text(), timeout=60)
        child_pid = int(marks.read_text().split()[2])
        # When the worker is SIGKILLed mid-run
        first.stop(sig=signal.SIGKILL)
        killed = time.monotonic()
        # Then its child dies with it, and within one lease the attempt is crashed and requeued
        assert wait_until(lambda: not alive(child_pid), timeout=5)
        assert wait_until(lambda: client.get_run(run.id).attempt == 2, timeout=10)
        assert time.monotonic() - killed < 2 + 1.5
        requeued = client.get_run(run.id)
        assert requeued.attempts[0].state.value == "crashed"
        assert requeued.attempts[0].worker == "first"
        # ...and another worker completes it
        background("worker", "start", "--pool", pool, "--name", "second", env=env)
        done = wait_for_run(client, run.id, timeout=60)
    assert done.state.value == "completed"
    assert (done.worker, done.attempt, done.result) == ("second", 2, 2)
    assert "end 1" not in marks.read_text()
    assert "end 2" in marks.read_text()


@pytest.mark.postgres
def test_sigterm_lets_the_running_run_finish_and_claims_nothing_more(
    project: Path, pg_server, pool, background, tmp_path: Path
) -> None:
    # Given a worker in the middle of a run
    env = command_env(CONVEYOR_API_URL=pg_server.url)
    ok(
        conveyor(
            "deploy", "flows.py:marked_sleep", "--name", pool, "--pool", pool, env=env, cwd=project
        )
    )
    marks = tmp_path / "marks.txt"
    worker = background("worker", "start", "--pool", pool, env=env, name="worker")
    with api(env) as client:
        run = client.create_run(
            "marked-sleep", pool, parameters={"seconds": 1.5, "log": str(marks)}
        )
        assert wait_until(lambda: marks.exists() and "start 1" in marks.read_text(), timeout=60)
        # When it gets SIGTERM, and another run is queued after that
        worker.proc.send_signal(signal.SIGTERM)
        later = client.create_run(
            "marked-sleep", pool, parameters={"seconds": 0, "log": str(marks)}
        )
        # Then the running run finishes, the worker exits 0, and the later run is left queued
        assert worker.wait(60) == 0
        assert client.get_run(run.id).state.value == "completed"
        assert client.get_run(later.id).state.value == "scheduled"


def test_wrong_api_key_is_refused_with_one_line(project: Path, background, tmp_path: Path) -> None:
    home = tmp_path / "server-home"
    server = Server.start(
        server_env(home, CONVEYOR_API_KEY="right-key-123"), log=tmp_path / "server.log"
    )
    try:
        wrong = command_env(CONVEYOR_API_URL=server.url, CONVEYOR_API_KEY="wrong-key-456")
        deploy = conveyor("deploy", "flows.py:hello", "--name", "k", env=wrong, cwd=project)
        run = conveyor("run", "hello/k", env=wrong)
        worker = background("worker", "start", "--burst", env=wrong, name="worker")

        for result in (deploy, run):
            error = one_line_error(result)
            assert "wrong-key-456" not in result.stderr + result.stdout
            assert "key" in error.lower() or "401" in error
        assert worker.wait(30) == 1
        assert "wrong-key-456" not in worker.output()
        storage = Path(wrong["CONVEYOR_HOME"]) / "storage"
        assert not storage.exists() or not any(storage.iterdir())
        right = command_env(CONVEYOR_API_URL=server.url, CONVEYOR_API_KEY="right-key-123")
        with api(right) as client, pytest.raises(ObjectNotFound):
            client.get_deployment("hello", "k")
    finally:
        server.stop()


def test_server_restart_mid_run_loses_nothing(project: Path, background, tmp_path: Path) -> None:
    # Given a server (SQLite), a worker, and a run in the middle of its flow
    server = Server.start(server_env(tmp_path / "server-home"), log=tmp_path / "server.log")
    try:
        env = command_env(CONVEYOR_API_URL=server.url)
        ok(conveyor("deploy", "flows.py:marked_sleep", "--name", "r", env=env, cwd=project))
        worker = background("worker", "start", env=env, name="worker")
        marks = tmp_path / "marks.txt"
        with api(env) as client:
            run = client.create_run(
                "marked-sleep", "r", parameters={"seconds": 3, "log": str(marks)}
            )
        assert wait_until(lambda: marks.exists() and "start 1" in marks.read_text(), timeout=60)
        # When the server stops while the flow runs, stays away past the client's retries
        # (the flow ends and its final state cannot be reported), then starts again
        server.stop()
        assert wait_until(lambda: "end 1" in marks.read_text(), timeout=30)
        time.sleep(2.5)
        server.start_again()
        # Then the run completes on its first attempt, with its output, and the worker goes on
        with api(env) as client:
            done = wait_for_run(client, run.id, timeout=60)
            assert (done.state.value, done.attempt, done.result) == ("completed", 1, 1)
            assert "attempt 1 sleeping 3.0s" in [line.message for line in client.read_logs(run.id)]
            after = client.create_run(
                "marked-sleep", "r", parameters={"seconds": 0, "log": str(marks)}
            )
            assert wait_for_run(client, after.id, timeout=60).state.value == "completed"
        assert worker.proc.poll() is None
        assert "server unavailable" in worker.output()
    finally:
        server.stop()


def test_worker_idle_memory_stays_small(pg_server, pool, background) -> None:
    env = command_env(CONVEYOR_API_URL=pg_server.url)
    worker = background("worker", "start", "--pool", pool, env=env, name="worker")
    assert wait_until(lambda: "worker started" in worker.output(), timeout=30)
    time.sleep(0.5)
    status = Path(f"/proc/{worker.pid}/status").read_text()
    rss_kb = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    assert rss_kb < 48 * 1024, f"idle worker RSS {rss_kb / 1024:.1f} MiB"

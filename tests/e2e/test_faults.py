"""Correctness under faults, against real processes (issue 7, items 3-5): a real PostgreSQL stopped
under a running server, a real `conveyor server start` killed and started again, and a
fault-injecting proxy between a real worker and the server that loses replies. What is checked is
what a user sees: how many times the flow ran (each execution appends to a ledger file), the
run's final state and attempt, and every log line present exactly once."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.conftest import Server, api, command_env, conveyor, ok, server_env, wait_for_run
from fixtures.fault_proxy import Fault, FaultProxy
from fixtures.ports import wait_until
from fixtures.postgres import PostgresCluster, private_postgres_cluster  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.service]

LEASE = "3"
"""The workers' lease in these tests (seconds): every outage below is longer."""


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _messages(env: dict[str, str], run_id: str) -> list[str]:
    with api(env) as client:
        return [line.message for line in client.read_logs(run_id)]


@pytest.mark.postgres
def test_a_database_outage_mid_run_runs_the_flow_once_and_loses_no_line(
    project: Path,
    private_postgres_cluster: PostgresCluster,  # noqa: F811
    background,
    tmp_path: Path,
) -> None:
    # Given a server on PostgreSQL and a worker (3 s lease) in the middle of a flow with a retry
    cluster = private_postgres_cluster
    url = cluster.create_database()
    server = Server.start(
        server_env(tmp_path / "server-home", CONVEYOR_DATABASE_URL=url), log=tmp_path / "server.log"
    )
    try:
        env = command_env(CONVEYOR_API_URL=server.url)
        ok(conveyor("deploy", "flows.py:gated", "--name", "db", env=env, cwd=project))
        worker = background("worker", "start", "--lease-seconds", LEASE, env=env, name="worker")
        ledger, gate = tmp_path / "ledger.txt", tmp_path / "gate"
        with api(env) as client:
            run = client.create_run(
                "gated", "db", parameters={"path": str(ledger), "gate": str(gate)}
            )
        assert wait_until(lambda: "start 1" in _lines(ledger), timeout=60)
        assert wait_until(lambda: "gated line 0" in _messages(env, run.id), timeout=10)
        # When PostgreSQL stops, the flow prints four more lines and ends while it is down, and
        # the database stays away longer than the client's retries and than a lease
        cluster.stop()
        try:
            gate.touch()
            assert wait_until(lambda: "end 1" in _lines(ledger), timeout=30)
            time.sleep(float(LEASE) + 0.5)
        finally:
            assert cluster.start().returncode == 0
        # Then the run completes on its first attempt, the flow ran once, and each of its five
        # lines is on the server exactly once
        with api(env) as client:
            done = wait_for_run(client, run.id, timeout=60)
        assert (done.state.value, done.attempt, done.result) == ("completed", 1, 5)
        messages = _messages(env, run.id)
        assert [messages.count(f"gated line {i}") for i in range(5)] == [1] * 5
        assert _lines(ledger) == ["start 1", "end 1"]
        assert "server unavailable" in worker.output()
    finally:
        server.stop()
        if not cluster.running():
            cluster.start()
        cluster.drop_database(url)


def test_a_server_away_longer_than_a_lease_does_not_rerun_the_run_in_flight(
    project: Path, background, tmp_path: Path
) -> None:
    # Given a server (SQLite) and a worker (3 s lease) in the middle of a flow with a retry
    server = Server.start(server_env(tmp_path / "server-home"), log=tmp_path / "server.log")
    try:
        env = command_env(CONVEYOR_API_URL=server.url)
        ok(conveyor("deploy", "flows.py:gated", "--name", "away", env=env, cwd=project))
        background("worker", "start", "--lease-seconds", LEASE, env=env, name="worker")
        ledger, gate = tmp_path / "ledger.txt", tmp_path / "gate"
        with api(env) as client:
            run = client.create_run(
                "gated", "away", parameters={"path": str(ledger), "gate": str(gate)}
            )
        assert wait_until(lambda: "start 1" in _lines(ledger), timeout=60)
        # When the server is killed and comes back after more than a lease (every lease in the
        # database has expired by then), and the flow goes on for longer than another lease
        server.process.stop(sig=signal.SIGKILL)
        time.sleep(float(LEASE) + 1.5)
        server.start_again()
        time.sleep(float(LEASE) + 1.5)
        with api(env) as client:
            during = client.get_run(run.id)
        gate.touch()
        # Then the worker kept its run (it renewed within the grace), and the flow ran once
        assert (during.state.value, during.attempt) == ("running", 1)
        with api(env) as client:
            done = wait_for_run(client, run.id, timeout=60)
        assert (done.state.value, done.attempt, done.result) == ("completed", 1, 5)
        assert [a.state.value for a in done.attempts] == ["completed"]
        assert _lines(ledger) == ["start 1", "end 1"]
    finally:
        server.stop()


# -- lost replies, through a fault-injecting proxy between the worker and the server ------------


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("faults-server")
    server = Server.start(server_env(home), log=home / "server.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxy(shared_server: Server) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream_port=shared_server.port).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def _ledger_run(
    project: Path, server: Server, proxy: FaultProxy, background, tmp_path: Path
) -> tuple[dict[str, str], str, Path]:
    """Deploy ``ledger`` to a pool of its own, queue one run, and start a worker that reaches the
    server only through ``proxy``; (the test's env, the run id, the ledger file)."""
    env = command_env(CONVEYOR_API_URL=server.url)
    pool = f"p-{uuid.uuid4().hex[:8]}"
    with api(env) as client:
        client.create_pool(pool)
    ok(conveyor("deploy", "flows.py:ledger", "--name", pool, "--pool", pool, env=env, cwd=project))
    ledger = tmp_path / "ledger.txt"
    with api(env) as client:
        run = client.create_run("ledger", pool, parameters={"path": str(ledger)})
    worker_env = command_env(CONVEYOR_API_URL=proxy.url)
    background(
        "worker", "start", "--pool", pool, "--lease-seconds", LEASE, env=worker_env, name="worker"
    )
    return env, run.id, ledger


def test_a_lost_claim_reply_still_runs_the_run_once(
    project: Path, shared_server: Server, proxy: FaultProxy, background, tmp_path: Path
) -> None:
    # Given a proxy that loses the reply to the first claim that took a run (retries=0)
    lost = proxy.add(Fault("drop_reply", "POST", r"/claim$", status=200))
    env, run_id, ledger = _ledger_run(project, shared_server, proxy, background, tmp_path)
    # When the worker claims it
    with api(env) as client:
        done = wait_for_run(client, run_id, timeout=60)
    # Then the claim was lost once, and the worker got the same run back and ran it once
    assert lost.applied == 1
    assert (done.state.value, done.attempt, done.result) == ("completed", 1, 5)
    assert [a.state.value for a in done.attempts] == ["completed"]
    assert _lines(ledger) == ["run 1"]


def test_a_lost_reply_to_the_running_report_does_not_fail_the_run(
    project: Path, shared_server: Server, proxy: FaultProxy, background, tmp_path: Path
) -> None:
    # Given a proxy that loses the reply to the worker's `running` report (the server took it)
    lost = proxy.add(Fault("drop_reply", "POST", r"/state$", body=b'"state":"running"'))
    env, run_id, ledger = _ledger_run(project, shared_server, proxy, background, tmp_path)
    # When the worker runs the run
    with api(env) as client:
        done = wait_for_run(client, run_id, timeout=60)
    # Then it reported again, and the flow ran once to completion
    assert lost.applied == 1
    assert (done.state.value, done.attempt, done.error) == ("completed", 1, None)
    assert _lines(ledger) == ["run 1"]


def test_a_lost_reply_to_a_log_batch_stores_each_line_once(
    project: Path, shared_server: Server, proxy: FaultProxy, background, tmp_path: Path
) -> None:
    # Given a proxy that loses the replies to the first two log batches, and to the final report
    logs = proxy.add(Fault("drop_reply", "POST", r"/logs$", times=2))
    final = proxy.add(Fault("drop_reply", "POST", r"/state$", body=b'"state":"completed"'))
    env, run_id, ledger = _ledger_run(project, shared_server, proxy, background, tmp_path)
    # When the worker runs the run
    with api(env) as client:
        done = wait_for_run(client, run_id, timeout=60)
    # Then every line of the flow is on the server exactly once, in order
    assert (logs.applied, final.applied) == (2, 1)
    assert (done.state.value, done.attempt) == ("completed", 1)
    messages = [m for m in _messages(env, run_id) if m.startswith("ledger line")]
    assert messages == [f"ledger line {i}" for i in range(5)]
    assert _lines(ledger) == ["run 1"]


def test_a_worker_cut_off_longer_than_its_lease_still_reports_the_run_it_finished(
    project: Path, shared_server: Server, proxy: FaultProxy, background, tmp_path: Path
) -> None:
    # Given a worker whose every connection is refused for 4 s as soon as its flow has run:
    # longer than the client's own retries and than its lease, while the server stays up (so
    # the server rightly expires the lease and crashes the run)
    env, run_id, ledger = _ledger_run(project, shared_server, proxy, background, tmp_path)
    assert wait_until(lambda: _lines(ledger) == ["run 1"], timeout=60)
    proxy.refuse(4)
    proxy.cut_all()
    # When connections are taken again
    with api(env) as client:
        assert wait_until(lambda: client.get_run(run_id).state.value == "completed", timeout=60)
        done = client.get_run(run_id)
    # Then the worker's final report replaced the crash (no other attempt had started): the run
    # is completed on its first attempt, with all of its lines, and the flow ran once
    assert (done.attempt, done.result, done.error) == (1, 5, None)
    assert [a.state.value for a in done.attempts] == ["completed"]
    messages = _messages(env, run_id)
    assert [m for m in messages if m.startswith("ledger line")] == [
        f"ledger line {i}" for i in range(5)
    ]
    assert any("the crash is withdrawn" in m for m in messages)
    assert _lines(ledger) == ["run 1"]


def test_watchers_ride_out_a_server_restart_and_print_every_line_once(
    project: Path, background, tmp_path: Path
) -> None:
    # Given a server (SQLite), a worker, and a run watched by `run --watch` and followed by
    # `runs logs --follow`, both having printed its first line
    server = Server.start(server_env(tmp_path / "server-home"), log=tmp_path / "server.log")
    try:
        env = command_env(CONVEYOR_API_URL=server.url)
        ok(conveyor("deploy", "flows.py:gated", "--name", "watched", env=env, cwd=project))
        background("worker", "start", "--lease-seconds", LEASE, env=env, name="worker")
        ledger, gate = tmp_path / "ledger.txt", tmp_path / "gate"
        watch = background(
            "run", "gated/watched", "-p", f"path={ledger}", "-p", f"gate={gate}", "--watch",
            env=env, name="watch",
        )  # fmt: skip
        assert wait_until(lambda: "gated line 0" in watch.output(), timeout=60)
        run_id = watch.output().splitlines()[0].strip()
        follow = background("runs", "logs", run_id, "--follow", env=env, name="follow")
        assert wait_until(lambda: "gated line 0" in follow.output(), timeout=30)
        # When the server is killed and stays away longer than the client's own retries, then
        # starts again, and the flow prints its other lines
        server.process.stop(sig=signal.SIGKILL)
        time.sleep(3)
        server.start_again()
        gate.touch()
        # Then both watchers wait for the server, go on, print every line once and exit 0
        assert watch.wait(60) == 0, watch.output()
        assert follow.wait(60) == 0, follow.output()
        for out in (watch.output(), follow.output()):
            assert [out.count(f"gated line {i}") for i in range(5)] == [1] * 5, out
            assert "waiting for it" in out
            assert "the server answers again" in out
            assert "Traceback" not in out
        assert f"run {run_id} completed" in watch.output()
        assert _lines(ledger) == ["start 1", "end 1"]
    finally:
        server.stop()


def test_a_worker_stopped_while_the_server_is_away_says_what_it_waits_for(
    project: Path, background, tmp_path: Path
) -> None:
    # Given a server (SQLite) and a worker (no shutdown grace) in the middle of a run
    server = Server.start(server_env(tmp_path / "server-home"), log=tmp_path / "server.log")
    try:
        env = command_env(CONVEYOR_API_URL=server.url)
        ok(conveyor("deploy", "flows.py:gated", "--name", "stop", env=env, cwd=project))
        worker = background(
            "worker", "start", "--lease-seconds", LEASE, "--shutdown-timeout", "0",
            env=env, name="worker",
        )  # fmt: skip
        ledger, gate = tmp_path / "ledger.txt", tmp_path / "gate"
        with api(env) as client:
            run = client.create_run(
                "gated", "stop", parameters={"path": str(ledger), "gate": str(gate)}
            )
        assert wait_until(lambda: "start 1" in _lines(ledger), timeout=60)
        # When the server goes away and the worker is told to stop
        server.process.stop(sig=signal.SIGKILL)
        worker.proc.send_signal(signal.SIGTERM)
        # Then it says what it waits for and how to give it up, instead of hanging silently
        assert wait_until(lambda: "to report their final state" in worker.output(), timeout=30)
        assert worker.proc.poll() is None
        # ...and once the server is back, it reports the stopped run and exits
        server.start_again()
        assert worker.wait(60) == 0, worker.output()
        with api(env) as client:
            stopped = client.get_run(run.id)
        assert stopped.attempts[0].state.value == "crashed"
        assert stopped.attempts[0].error == "worker stopped before the run finished"
    finally:
        server.stop()


def test_a_server_stops_at_once_and_cleanly_while_watchers_and_workers_wait_on_it(
    project: Path, background, tmp_path: Path
) -> None:
    # Given a server (SQLite), an idle worker long-polling for runs, and a watcher long-polling
    # a queued run of another pool (nothing will claim it)
    server = Server.start(server_env(tmp_path / "server-home"), log=tmp_path / "server.log")
    env = command_env(CONVEYOR_API_URL=server.url)
    try:
        with api(env) as client:
            client.create_pool("idle")
        ok(
            conveyor(
                "deploy", "flows.py:hello", "--name", "q", "--pool", "idle", env=env, cwd=project
            )
        )
        worker = background("worker", "start", "--poll-seconds", "20", env=env, name="worker")
        with api(env) as client:
            run = client.create_run("hello", "q")
        follow = background("runs", "logs", run.id, "--follow", env=env, name="follow")
        assert wait_until(lambda: "worker started" in worker.output(), timeout=60)
        time.sleep(1)  # both are waiting on the server now
        # When the server is stopped
        stopping = time.monotonic()
        server.process.stop(sig=signal.SIGTERM)
        # Then it exits without waiting out the long polls, and logs no traceback
        assert time.monotonic() - stopping < 4
        assert "Traceback" not in server.process.output(), server.process.output()
        assert follow.proc.poll() is None  # the watcher waits for the server to come back
    finally:
        server.stop()

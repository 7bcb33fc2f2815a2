"""A server that was away — not started yet, or cut off from its database — gives every lease one
lease of grace before expiring it (issue 7, item 4); the embedded front end, where each process is
its own server, expires a dead worker's lease at once."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy.exc import DBAPIError

from conveyor.client import ConveyorClient
from conveyor.connect import connect
from conveyor.schemas import RunState, StateUpdate
from conveyor.server.app import create_app, database_of
from conveyor.server.context import ServerContext
from conveyor.settings import Settings
from fixtures.asgi import AsgiTransport
from fixtures.postgres import PostgresCluster, private_postgres_cluster  # noqa: F401
from server.conftest import deployment_body

LEASE = 2.0  # short, but long enough for a busy machine


@contextmanager
def http_server(settings: Settings) -> Iterator[tuple[ConveyorClient, ServerContext]]:
    """The HTTP front end started now, in this process: a client and its server context."""
    app = create_app(settings, sweep_every=None, dashboard=False)
    try:
        with ConveyorClient("http://conveyor.test", transport=AsgiTransport(app)) as client:
            yield client, app.state.context
    finally:
        database_of(app).dispose()


def running_run(api: ConveyorClient) -> str:
    """A run of ``hello/prod`` (no retries) claimed by ``w1`` with a short lease, running."""
    api.put_deployment(deployment_body())
    run = api.create_run("hello", "prod")
    api.claim_run("default", worker="w1", lease_seconds=LEASE)
    api.set_run_state(run.id, StateUpdate(worker="w1", state=RunState.RUNNING, attempt=1))
    return run.id


@pytest.mark.usefixtures("backend")
def test_a_server_started_after_a_lease_expired_gives_its_holder_one_lease(backend, api):
    # Given a running run whose lease expired while no server was there to sweep it
    run_id = running_run(api)
    time.sleep(LEASE + 0.3)
    # When a server starts and sweeps at once
    with http_server(backend) as (client, ctx):
        assert ctx.sweep(force=True) == []
        # Then the run is still its holder's, who renews its lease within that grace
        assert client.get_run(run_id).state is RunState.RUNNING
        client.heartbeat_run(run_id, worker="w1", lease_seconds=LEASE, attempt=1)
        time.sleep(LEASE / 2)
        assert ctx.sweep(force=True) == []
        # ...and once its holder stops renewing for a whole lease, the run is crashed
        time.sleep(LEASE + 0.3)
        assert ctx.sweep(force=True) == [run_id]
        assert client.get_run(run_id).state is RunState.CRASHED


@pytest.mark.usefixtures("backend")
def test_an_embedded_process_expires_a_dead_workers_lease_at_once(backend, api):
    # Given a running run whose worker died (no more heartbeats) a lease ago
    run_id = running_run(api)
    time.sleep(LEASE + 0.3)
    # When a new embedded process (a `conveyor runs ls`) looks at it
    with connect(backend) as fresh:
        seen = fresh.get_run(run_id)
    # Then it is crashed right away: the holder renews through its own process, so no server
    # of its was away
    assert seen.state is RunState.CRASHED
    assert "stopped renewing its lease" in (seen.error or "")


@pytest.mark.postgres
def test_a_database_outage_gives_every_lease_one_lease_after_it_ends(
    settings: Settings,
    private_postgres_cluster: PostgresCluster,  # noqa: F811
):
    # Given a server on PostgreSQL with a running run
    cluster = private_postgres_cluster
    url = cluster.create_database()
    try:
        with http_server(dataclasses.replace(settings, database_url=url)) as (client, ctx):
            run_id = running_run(client)
            # When the database is away for longer than the lease
            cluster.stop()
            try:
                with pytest.raises(DBAPIError):
                    ctx.sweep(force=True)
                assert ctx.database_down
                time.sleep(LEASE + 0.3)
            finally:
                assert cluster.start().returncode == 0
            # Then the first sweep after it does not expire the lease, the holder renews it...
            assert ctx.sweep(force=True) == []
            assert not ctx.database_down
            client.heartbeat_run(run_id, worker="w1", lease_seconds=LEASE, attempt=1)
            assert client.get_run(run_id).state is RunState.RUNNING
            # ...and a holder that stays silent for a lease after that is crashed
            time.sleep(LEASE + 0.3)
            assert ctx.sweep(force=True) == [run_id]
    finally:
        if not cluster.running():
            cluster.start()
        cluster.drop_database(url)

"""The client against a real server behind a fault-injecting proxy: 502/503/504 and lost
connections are `ServerUnavailable` on every path (the streamed bundle download included), and
the worker's POSTs are repeated after a lost reply only when they are safe to repeat."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.bundles import pack
from conveyor.client import ConveyorClient
from conveyor.errors import ServerUnavailable
from fixtures.fault_proxy import Fault, FaultProxy
from server.conftest import ServerProcess, deployment_body

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server (its own SQLite home) for the module."""
    home = tmp_path_factory.mktemp("client-faults")
    env = {**os.environ, "HOME": str(home), "CONVEYOR_HOME": str(home / ".conveyor")}
    for key in ("CONVEYOR_API_URL", "CONVEYOR_API_KEY", "CONVEYOR_DATABASE_URL"):
        env.pop(key, None)
    server = ServerProcess(env).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxied(server: ServerProcess) -> Iterator[tuple[ConveyorClient, FaultProxy]]:
    """A client that reaches the server only through a fault proxy of the test's own."""
    proxy = FaultProxy(upstream_port=server.port).start()
    try:
        with ConveyorClient(proxy.url, retries=2, timeout=10) as client:
            yield client, proxy
    finally:
        proxy.stop()


@pytest.mark.parametrize("status", [502, 503, 504])
def test_a_gateway_or_outage_status_after_the_last_retry_is_server_unavailable(proxied, status):
    client, proxy = proxied
    proxy.add(Fault("reply", "GET", r"^/api/runs$", status=status, times=3))
    with pytest.raises(ServerUnavailable) as info:
        client.list_runs()
    assert info.value.status_code == status
    assert str(info.value) == (
        f"Conveyor server at {proxy.url} is unavailable (HTTP {status}): "
        "injected by the fault proxy"
    )
    assert len(proxy.done("reply")) == 3  # the first try and two retries


def test_a_bundle_download_rides_out_a_503_and_a_cut_and_then_says_unavailable(
    proxied, tmp_path: Path
):
    # Given a bundle in the server's store
    client, proxy = proxied
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "flows.py").write_text("print('hello')\n")
    archive = tmp_path / "bundle.tar.zst"
    version = pack(tree, archive).version
    assert client.upload_bundle(version, archive) is True
    # When the first download meets a 503 and then a cut connection, it still arrives whole
    proxy.add(Fault("reply", "GET", r"^/api/bundles/", status=503))
    proxy.add(Fault("cut_request", "GET", r"^/api/bundles/"))
    with client.download_bundle(version) as stream:
        assert stream.read() == archive.read_bytes()
    # ...and a server that keeps answering 503 is ServerUnavailable, not an ApiError or httpx's
    proxy.add(Fault("reply", "GET", r"^/api/bundles/", status=503, times=3))
    with pytest.raises(ServerUnavailable) as info, client.download_bundle(version):
        pass
    assert info.value.status_code == 503
    # ...as is a connection cut on every try
    proxy.add(Fault("cut_request", "GET", r"^/api/bundles/", times=3))
    with pytest.raises(ServerUnavailable, match="connection lost"), client.download_bundle(version):
        pass


def test_a_claim_whose_reply_is_lost_is_repeated_and_gets_the_same_run(proxied):
    # Given one queued run, and a proxy that loses the reply of the claim that takes it
    client, proxy = proxied
    pool = f"p-{uuid.uuid4().hex[:8]}"
    client.create_pool(pool)
    client.put_deployment(deployment_body(name=pool, work_pool=pool))
    run = client.create_run("hello", pool)
    proxy.add(Fault("drop_reply", "POST", r"/claim$", status=200))
    # When a worker claims with a claim id
    claimed = client.claim_run(pool, worker="w1", claim_id=uuid.uuid4().hex)
    # Then the client asked again and the server answered with the same run
    assert claimed is not None
    assert claimed.id == run.id
    assert [e.status for e in proxy.exchanges if e.path.endswith("/claim")] == [200, 200]
    assert len(proxy.done("drop_reply")) == 1


def test_a_post_that_is_not_safe_to_repeat_is_not_repeated(proxied):
    # Given a proxy that loses the reply to a run creation
    client, proxy = proxied
    name = f"d-{uuid.uuid4().hex[:8]}"
    client.put_deployment(deployment_body(name=name))
    proxy.add(Fault("drop_reply", "POST", r"/runs$"))
    # When the client creates a run, Then it says the server is unreachable (no second run)
    with pytest.raises(ServerUnavailable, match="connection lost"):
        client.create_run("hello", name)
    assert len(client.list_runs(deployment=f"hello/{name}")) == 1

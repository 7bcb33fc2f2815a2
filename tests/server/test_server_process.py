"""`conveyor server start` as a real process: startup, API key, unreachable server, restarts."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from conveyor.connect import connect
from conveyor.errors import ServerUnavailable, Unauthorized
from conveyor.secrets import Secret
from fixtures.ports import free_port


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_server_starts_prints_its_url_and_is_healthy(backend, server_process):
    extra = {"CONVEYOR_DATABASE_URL": backend.database_url} if backend.database_url else {}
    server = server_process(**extra)
    # How fast it starts is measured by bench/server.py (median of 5), not here: a busy machine
    # would make a timed assertion flaky.
    assert server.started_in is not None
    with urllib.request.urlopen(f"{server.url}/api/health", timeout=5) as response:
        health = json.load(response)
    assert health == {
        "status": "ok",
        "version": "0.1.0",
        "database": "postgresql" if backend.database_url else "sqlite",
    }
    server.stop()
    out, err = server.proc.communicate()
    # uvicorn shuts down gracefully, then re-raises SIGTERM: the conventional exit status.
    assert server.proc.returncode in (0, -15)
    assert "Traceback" not in err
    assert f"conveyor server listening on {server.url}" in out


@pytest.mark.slow
def test_api_key_is_required_when_set(settings, server_process):
    # Given a server started with an API key
    server = server_process(CONVEYOR_API_KEY="right-key")
    # Then a request without the key, or with a wrong one, gets 401
    for headers in ({}, {"X-API-Key": "wrong-key"}):
        request = urllib.request.Request(f"{server.url}/api/pools", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=5)
        assert info.value.code == 401
    remote = dataclasses.replace(settings, api_url=server.url, api_key=Secret("wrong-key"))
    with connect(remote) as api, pytest.raises(Unauthorized) as error:
        api.list_pools()
    assert str(error.value) == "missing or wrong API key"
    # And the CLI says so in one line plus a hint, never echoing the key
    result = cli("pool", "ls", CONVEYOR_API_URL=server.url, CONVEYOR_API_KEY="wrong-key")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: missing or wrong API key",
        "hint: set CONVEYOR_API_KEY to the key the server was started with",
    ]
    assert "wrong-key" not in result.stderr + result.stdout
    missing = cli("pool", "ls", CONVEYOR_API_URL=server.url)
    assert missing.stderr.splitlines()[0] == "error: this server requires an API key"
    # While the right key works
    ok = cli("pool", "ls", "--json", CONVEYOR_API_URL=server.url, CONVEYOR_API_KEY="right-key")
    assert ok.returncode == 0, ok.stderr
    assert [p["name"] for p in json.loads(ok.stdout)] == ["default"]


def test_unreachable_server_is_a_one_line_error():
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = cli("runs", "ls", CONVEYOR_API_URL=url)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith(f"error: Conveyor server at {url} is unreachable: cannot connect")
    assert lines[1].startswith("hint: check CONVEYOR_API_URL")
    assert time.monotonic() - started < 15


def test_port_in_use_is_a_one_line_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = cli("server", "start", "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.splitlines()[0].startswith(f"error: cannot listen on 127.0.0.1:{port}: ")


@pytest.mark.slow
def test_client_rides_out_a_server_restart(settings, server_process):
    # Given a client talking to a server over HTTP
    server = server_process()
    remote = dataclasses.replace(settings, api_url=server.url)
    with connect(remote, retries=8) as api:
        assert [p.name for p in api.list_pools()] == ["default"]
        # When the server stops and comes back on the same port a moment later
        server.stop()
        restarted = {}

        def restart() -> None:
            time.sleep(0.5)
            restarted["server"] = server_process(port=server.port)

        thread = threading.Thread(target=restart)
        thread.start()
        # Then the next call waits for it instead of failing
        api.create_pool("after-restart")
        thread.join(timeout=60)
        assert [p.name for p in api.list_pools()] == ["after-restart", "default"]
    # And with no retries left the client gives a clear error
    restarted["server"].stop()
    with connect(remote, retries=0) as api, pytest.raises(ServerUnavailable) as info:
        api.list_pools()
    assert server.url in str(info.value)

"""How the client reports failures: one line, the right class, nothing secret, bounded retries."""

from __future__ import annotations

import dataclasses
import time

import pytest

from conveyor.connect import connect
from conveyor.errors import ServerUnavailable
from conveyor.secrets import Secret
from fixtures.ports import free_port


def test_unreachable_server_is_retried_with_backoff_then_reported(settings):
    url = f"http://127.0.0.1:{free_port()}"
    remote = dataclasses.replace(settings, api_url=url, api_key=Secret("key-never-shown"))
    started = time.monotonic()
    with connect(remote, retries=2) as api, pytest.raises(ServerUnavailable) as info:
        api.list_runs()
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 5  # waited 0.1 s + 0.2 s between the three tries
    message = str(info.value)
    assert message.startswith(f"Conveyor server at {url} is unreachable: cannot connect")
    assert "\n" not in message
    assert "key-never-shown" not in message + (info.value.hint or "")
    assert info.value.hint == "check CONVEYOR_API_URL and that `conveyor server start` is running"


def test_client_does_no_io_until_the_first_call(settings):
    from conveyor.server.local import LocalTransport

    api = connect(settings)
    assert isinstance(api.transport, LocalTransport)
    assert api.target.startswith("embedded:sqlite:///")
    assert not (settings.home / "conveyor.db").exists()
    api.close()


@pytest.mark.postgres
def test_database_outage_is_a_503_the_client_reports_in_one_line(
    settings, postgres_cluster, postgres_url
):
    # Given an embedded client working against PostgreSQL
    pg = dataclasses.replace(settings, database_url=postgres_url)
    with connect(pg, retries=1) as api:
        api.set_secret("TOKEN", "value-never-shown")
        # When the database goes away under it
        postgres_cluster.drop_database(postgres_url)
        # Then calls fail with one line naming the database problem, after a retry, as a
        # ServerUnavailable (worth retrying: a worker keeps what it has to report)
        with pytest.raises(ServerUnavailable) as info:
            api.set_secret("TOKEN", "value-never-shown")
    assert info.value.status_code == 503
    assert str(info.value).startswith(
        f"Conveyor server at {api.target} is unavailable (HTTP 503): database unavailable: "
    )
    assert info.value.hint == "the server retries; check the database"
    assert "\n" not in str(info.value)
    assert "value-never-shown" not in str(info.value)


def test_the_client_never_imports_the_server_and_the_embedded_path_no_web_framework(
    settings, tmp_path
):
    # Given a fresh interpreter: importing the client imports nothing of the server, and an
    # embedded command-line call answers without FastAPI or Starlette
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import conveyor.client\n"
        "assert not [m for m in sys.modules if m.startswith('conveyor.server')], 'server'\n"
        "from conveyor.cli import main\n"
        "assert main(['runs', 'ls']) == 0\n"
        "assert main(['deployments', 'ls']) == 0\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette',"
        " 'uvicorn', 'alembic'))\n"
        "print('HEAVY', heavy)\n"
    )
    for _ in range(2):  # the first one creates the database (migrations import Alembic)
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout

"""An idle embedded worker costs nothing (issue 14, item 5): waiting claims and watches sleep until
the SQLite database changes (`conveyor.server._dbwatch`), yet wake promptly on a run another
process creates."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.client import ConveyorClient
from conveyor.connect import connect
from conveyor.schemas import RunState
from conveyor.server import _dbwatch, context
from conveyor.server._dbwatch import DatabaseWatch
from conveyor.server.local import LocalTransport
from conveyor.settings import Settings
from server.conftest import deployment_body

CREATE_RUN = """
import time
from conveyor.connect import connect
from conveyor.settings import Settings

with connect(Settings.from_env()) as api:
    api.health()
    run = api.create_run("hello", "prod")
    print(run.id, time.time(), flush=True)
"""


@pytest.fixture(params=["inotify", "stat"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Watch with inotify, or with the stat-polling fallback (as without inotify)."""
    if request.param == "stat":
        monkeypatch.setattr(_dbwatch, "_inotify", lambda directory: None)
    return str(request.param)


@pytest.fixture
def embedded(settings: Settings, sqlite_template: Path) -> Iterator[ConveyorClient]:
    """An embedded client over a migrated SQLite file, with deployment ``hello/prod``."""
    settings.home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sqlite_template, settings.home / "conveyor.db")
    with connect(settings) as client:
        client.put_deployment(deployment_body())
        yield client


def count_reads(client: ConveyorClient, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the time of every read transaction the client's embedded server makes."""
    assert isinstance(client.transport, LocalTransport)
    db = client.transport.context.db
    reads: list[float] = []
    original = db.read

    def counted(fn: Callable[..., Any]) -> Any:
        reads.append(time.monotonic())
        return original(fn)

    monkeypatch.setattr(db, "read", counted)
    return reads


def write_in_another_process(path: Path, sql: str) -> None:
    code = f"import sqlite3; c = sqlite3.connect({str(path)!r}); c.execute({sql!r}); c.commit()"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def settle_rings(rung: threading.Event, quiet: float = 0.3, attempts: int = 20) -> None:
    """Clear ``rung`` until it stays unset for ``quiet`` seconds (bounded)."""
    for _ in range(attempts):
        rung.clear()
        if not rung.wait(quiet):
            return
    raise AssertionError("the watch kept ringing with nothing written")


def test_a_watch_rings_on_another_process_write_and_not_on_reads(tmp_path, mode):
    # Given a WAL database kept open here (as a worker's connection pool keeps it)
    path = tmp_path / "conveyor.db"
    keep = sqlite3.connect(path)
    keep.execute("PRAGMA journal_mode=WAL")
    keep.execute("CREATE TABLE t (x INTEGER)")
    keep.commit()
    rung = threading.Event()
    watch = DatabaseWatch(path, rung.set)
    try:
        assert watch.start()
        assert watch.mode == mode
        # When another process only reads, nothing rings
        code = f"import sqlite3; print(sqlite3.connect({str(path)!r}).execute('select 1').all())"
        subprocess.run([sys.executable, "-c", code.replace(".all()", ".fetchall()")], check=True)
        assert not rung.wait(0.5)
        # When another process writes, the watch rings (bounded wait)
        write_in_another_process(path, "INSERT INTO t VALUES (1)")
        assert rung.wait(10), "no ring after another process wrote"
        # And, once the writer's last events are handled (its close can ring a second time),
        # a file of the same directory that is not the database rings nothing
        settle_rings(rung)
        (tmp_path / "other.log").write_text("x")
        assert not rung.wait(0.5)
    finally:
        watch.close()
        keep.close()
    assert not watch.active


def test_a_closed_watch_starts_again(tmp_path):
    rung = threading.Event()
    watch = DatabaseWatch(tmp_path / "db.sqlite", rung.set)
    watch.start()
    watch.close()
    assert not watch.active
    assert watch.start()
    assert watch.active
    write_in_another_process(tmp_path / "db.sqlite", "CREATE TABLE t (x INTEGER)")
    assert rung.wait(10)
    watch.close()


def test_an_idle_claim_wakes_on_a_run_created_by_another_process(
    embedded, mode, monkeypatch, tmp_path
):
    # Given an embedded claim waiting on an empty pool, whose fallback poll is made so slow
    # that only a change notice can wake it in time
    monkeypatch.setattr(context, "SLOW_POLL_SECONDS", 60.0)
    reads = count_reads(embedded, monkeypatch)
    claimed: list[Any] = []

    def claim() -> None:
        claimed.append(embedded.claim_run("default", worker="w1", wait_seconds=30))
        claimed.append(time.time())

    waiter = threading.Thread(target=claim)
    waiter.start()
    # When it has been idle for 2 s
    time.sleep(2.0)
    idle_reads = len(reads)
    # Then it made a handful of reads, not one per 50 ms (which would be about 40)
    assert idle_reads <= 6, f"{idle_reads} reads while idle"
    # When another process creates a run
    done = subprocess.run(
        [sys.executable, "-c", CREATE_RUN], capture_output=True, text=True, timeout=60, check=True
    )
    run_id, created_at = done.stdout.split()
    waiter.join(timeout=30)
    assert not waiter.is_alive(), "the claim did not return"
    # Then the waiting claim took it promptly (well within the 60 s fallback)
    run, returned_at = claimed
    assert run is not None
    assert run.id == run_id
    assert returned_at - float(created_at) < 2.0
    assert embedded.get_run(run_id).state is RunState.PENDING


def test_a_watch_long_poll_wakes_on_another_processes_state_change(embedded, monkeypatch, settings):
    # Given a watch of a scheduled run, with the fallback poll too slow to matter
    monkeypatch.setattr(context, "SLOW_POLL_SECONDS", 60.0)
    run = embedded.create_run("hello", "prod")
    reads = count_reads(embedded, monkeypatch)
    seen: list[Any] = []

    def watch() -> None:
        seen.append(embedded.watch_run(run.id, after=0, state=RunState.SCHEDULED, wait=25))
        seen.append(time.monotonic())

    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(1.5)
    assert len(reads) <= 4, f"{len(reads)} reads while watching an idle run"
    # When another process cancels the run
    code = (
        "from conveyor.connect import connect\nfrom conveyor.settings import Settings\n"
        f"connect(Settings.from_env()).cancel_run({run.id!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    cancelled = time.monotonic()
    watcher.join(timeout=30)
    # Then the watch answers at once with the new state
    found, answered = seen
    assert found.run.state is not RunState.SCHEDULED
    assert answered - cancelled < 2.0


def test_without_a_file_database_waiters_poll_quickly(settings):
    # PostgreSQL (or SQLite in memory) has no file to watch: waiters keep the fast poll
    from conveyor.server.context import FAST_POLL_SECONDS, ServerContext
    from conveyor.server.db import Database
    from conveyor.server.secrets import SecretBox

    ctx = ServerContext(
        settings=settings,
        db=Database("sqlite:///:memory:"),
        box=SecretBox(key=None, home=settings.home),
        start_grace=False,
    )
    ctx.watch_changes()
    assert ctx.watch is None
    assert ctx.poll_seconds == FAST_POLL_SECONDS
    ctx.close()


def test_the_http_claim_route_wakes_on_a_run_created_by_another_process(
    settings, sqlite_template, monkeypatch
):
    from conveyor.server.app import create_app
    from fixtures.asgi import AsgiTransport

    # Given the HTTP front end over a SQLite file, with a claim waiting on an empty pool and a
    # fallback poll too slow to matter
    monkeypatch.setattr(context, "SLOW_POLL_SECONDS", 60.0)
    settings.home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sqlite_template, settings.home / "conveyor.db")
    app = create_app(settings, sweep_every=None, dashboard=False)
    try:
        with ConveyorClient("http://conveyor.test", transport=AsgiTransport(app)) as client:
            client.put_deployment(deployment_body())
            claimed: list[Any] = []
            waiter = threading.Thread(
                target=lambda: claimed.extend(
                    [client.claim_run("default", worker="w1", wait_seconds=30), time.time()]
                )
            )
            waiter.start()
            time.sleep(1.0)
            # When another process creates a run (through the embedded front end)
            done = subprocess.run(
                [sys.executable, "-c", CREATE_RUN],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            run_id, created_at = done.stdout.split()
            waiter.join(timeout=30)
            # Then the waiting HTTP claim takes it promptly
            run, returned_at = claimed
            assert run is not None
            assert run.id == run_id
            assert returned_at - float(created_at) < 2.0
    finally:
        app.state.context.close()  # the watch thread and the database

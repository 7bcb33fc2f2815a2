"""Run logs and worker heartbeats, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conveyor.errors import ObjectNotFound
from conveyor.schemas import LogRecord

pytestmark = pytest.mark.usefixtures("backend")


def records(*messages, stream="stdout"):
    now = datetime.now(UTC)
    return [LogRecord(timestamp=now, message=m, stream=stream) for m in messages]


def test_batches_are_numbered_in_order(deploy, api):
    deploy()
    run = api.create_run("hello", "prod")
    api.write_logs(run.id, records("one", "two"))
    api.write_logs(run.id, [])
    api.write_logs(run.id, records("three", stream="log"))
    lines = api.read_logs(run.id)
    assert [(line.seq, line.message, line.stream) for line in lines] == [
        (1, "one", "stdout"),
        (2, "two", "stdout"),
        (3, "three", "log"),
    ]


def test_reading_after_a_seq_follows_the_log(deploy, api):
    deploy()
    run = api.create_run("hello", "prod")
    api.write_logs(run.id, records(*[f"line {i}" for i in range(10)]))
    assert [line.seq for line in api.read_logs(run.id, after=7)] == [8, 9, 10]
    assert [line.seq for line in api.read_logs(run.id, after=2, limit=3)] == [3, 4, 5]
    assert api.read_logs(run.id, after=10) == []


def test_logs_of_unknown_run_are_not_found(api):
    with pytest.raises(ObjectNotFound, match="run 'missing-run' not found"):
        api.write_logs("missing-run", records("x"))
    with pytest.raises(ObjectNotFound):
        api.read_logs("missing-run")


def test_worker_heartbeats_show_online_workers(api):
    first = api.worker_heartbeat("w1", pool="default", labels=["gpu"], limit=4, running=1)
    api.worker_heartbeat("w2", pool="default")
    again = api.worker_heartbeat("w1", pool="default", labels=["gpu"], limit=4, running=3)
    assert again.last_heartbeat > first.last_heartbeat
    workers = {w.name: w for w in api.list_workers()}
    assert set(workers) == {"w1", "w2"}
    assert (workers["w1"].status, workers["w1"].running, workers["w1"].labels) == (
        "online",
        3,
        ["gpu"],
    )
    assert [w.name for w in api.list_workers(pool="default")] == ["w1", "w2"]


def test_workers_go_offline_without_heartbeats(api, monkeypatch):
    from conveyor.server.service import workers

    api.worker_heartbeat("w1", pool="default")
    monkeypatch.setattr(workers, "ONLINE_WINDOW", timedelta(0))
    assert [w.status for w in api.list_workers()] == ["offline"]


def test_heartbeat_for_unknown_pool_is_not_found(api):
    with pytest.raises(ObjectNotFound, match="work pool 'nope' not found"):
        api.worker_heartbeat("w1", pool="nope")

"""Run logs and worker heartbeats, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
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


def test_a_worker_whose_last_beat_says_it_stopped_is_offline_at_once(api):
    # Given an online worker
    api.worker_heartbeat("w1", pool="default", running=1)
    assert [w.status for w in api.list_workers()] == ["online"]
    # When its last beat says it is stopping
    last = api.worker_heartbeat("w1", pool="default", stopping=True)
    # Then it is offline at once (its heartbeat is recent), and online again when it beats again
    assert (last.status, [w.status for w in api.list_workers()]) == ("offline", ["offline"])
    assert api.worker_heartbeat("w1", pool="default").status == "online"


def test_a_heartbeat_has_the_shape_it_had_before_unless_it_stops():
    from conveyor.schemas import WorkerHeartbeat

    # A beat that does not stop sends exactly the fields it always did (a server from before
    # `stopping` refuses a field it does not know), and one without the field means not stopping
    before = {"name", "pool", "labels", "limit", "running", "cache_bytes", "cache_entries"}
    before |= {"cache_hits", "cache_misses"}
    beat = WorkerHeartbeat(name="w1", pool="default")
    assert set(json.loads(beat.model_dump_json())) == before
    stopping = WorkerHeartbeat(name="w1", pool="default", stopping=True)
    assert json.loads(stopping.model_dump_json())["stopping"] is True
    assert WorkerHeartbeat.model_validate_json('{"name": "w1", "pool": "default"}') == beat


def test_heartbeat_for_unknown_pool_is_not_found(api):
    with pytest.raises(ObjectNotFound, match="work pool 'nope' not found"):
        api.worker_heartbeat("w1", pool="nope")

"""Size limits: a 10 MB parameter, a 10 MB log line, 20,000 records in one batch and a too-large
request body are each a clear 413 naming the setting to raise; nothing is stored. Limits are
configurable (``CONVEYOR_MAX_*``)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import httpx
import pytest

from conveyor.client import ConveyorClient
from conveyor.connect import connect
from conveyor.errors import InvalidRequest
from conveyor.schemas import LogRecord
from conveyor.settings import Settings

TEN_MB = 10_000_000
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def running_run(api: ConveyorClient, deploy) -> str:
    deploy(parameter_schema={"type": "object"})
    run = api.create_run("hello", "prod")
    api.claim_run("default", worker="w1")
    return run.id


def records(count: int, message: str = "line") -> list[LogRecord]:
    return [LogRecord(timestamp=NOW, message=message) for _ in range(count)]


def test_a_10_mb_parameter_is_a_413(api, deploy):
    deploy(parameter_schema={"type": "object"})

    with pytest.raises(InvalidRequest) as info:
        api.create_run("hello", "prod", parameters={"blob": "x" * TEN_MB})

    assert info.value.status_code == 413
    assert str(info.value) == (
        "the run's parameters are 9.537 MiB as JSON; this server accepts at most 1 MiB"
    )
    assert "CONVEYOR_MAX_PARAMETERS_BYTES" in (info.value.hint or "")
    assert api.list_runs() == []


def test_a_10_mb_default_parameter_is_a_413(api, deploy):
    with pytest.raises(InvalidRequest) as info:
        deploy(parameters={"blob": "x" * TEN_MB}, parameter_schema={"type": "object"})

    assert info.value.status_code == 413
    assert str(info.value).startswith("the default parameters are 9.537 MiB as JSON")
    assert api.list_deployments() == []


def test_a_10_mb_log_line_is_a_413_and_nothing_is_stored(api, deploy):
    run_id = running_run(api, deploy)

    with pytest.raises(InvalidRequest) as info:
        api.write_logs(run_id, [*records(2), *records(1, "y" * TEN_MB)])

    assert info.value.status_code == 413
    assert str(info.value) == (
        "log record 2 is 9.537 MiB; this server accepts lines of at most 1 MiB"
    )
    assert "CONVEYOR_MAX_LOG_LINE_BYTES" in (info.value.hint or "")
    assert api.read_logs(run_id) == []


def test_20000_records_in_one_batch_are_a_413(api, deploy):
    run_id = running_run(api, deploy)

    with pytest.raises(InvalidRequest) as info:
        api.write_logs(run_id, records(20_000))

    assert info.value.status_code == 413
    assert str(info.value) == ("20000 log records in one request; this server accepts at most 1000")
    assert "CONVEYOR_MAX_LOG_BATCH" in (info.value.hint or "")
    assert api.read_logs(run_id) == []


def test_what_a_worker_sends_fits(api, deploy):
    # A worker sends 200 records a batch and cuts a line at 64 Ki characters + a marker;
    # four-byte characters are the worst case.
    run_id = running_run(api, deploy)
    line = "\U0001f600" * (64 * 1024) + " [truncated]"
    api.write_logs(run_id, [*records(199), *records(1, line)])
    lines = api.read_logs(run_id, after=199)
    assert [len(x.message) for x in lines] == [len(line)]


def test_limits_come_from_the_environment(backend: Settings, deploy, api):
    # Given a server whose limits were set through CONVEYOR_MAX_* variables
    env = {
        "CONVEYOR_HOME": str(backend.home),
        "CONVEYOR_MAX_PARAMETERS_BYTES": "100",
        "CONVEYOR_MAX_LOG_LINE_BYTES": "10",
        "CONVEYOR_MAX_LOG_BATCH": "3",
    }
    limited = dataclasses.replace(Settings.from_env(env), database_url=backend.database_url)
    run_id = running_run(api, deploy)
    with connect(limited) as small:
        # Then each limit applies, and values at the limit pass
        assert small.create_run("hello", "prod", parameters={"s": "x" * 80})
        with pytest.raises(InvalidRequest, match="at most 100 bytes"):
            small.create_run("hello", "prod", parameters={"s": "x" * 100})
        small.write_logs(run_id, records(3, "x" * 10))
        with pytest.raises(InvalidRequest, match=r"at most 3$"):
            small.write_logs(run_id, records(4))
        with pytest.raises(InvalidRequest, match="lines of at most 10 bytes"):
            small.write_logs(run_id, records(1, "é" * 6))
    assert len(api.read_logs(run_id)) == 3


def test_a_too_large_body_is_a_413_before_it_is_parsed(server_process):
    # Given a real server on loopback that accepts bodies of at most 1 MiB
    server = server_process(CONVEYOR_MAX_REQUEST_BYTES="1MiB")
    body = json.dumps({"parameters": {"x": "a" * 2_000_000}}).encode()
    headers = {"Content-Type": "application/json"}
    url = f"{server.url}/api/deployments/hello/prod/runs"

    def chunks():
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    # When a 2 MB body is sent with a Content-Length, and again chunked (no length)
    with httpx.Client(timeout=30) as http:
        declared = http.post(url, content=body, headers=headers)
        chunked = http.post(url, content=chunks(), headers=headers)
        health = http.get(f"{server.url}/api/health")

    # Then both are refused with one line naming the limit, and the server carries on
    assert declared.status_code == 413
    assert declared.json() == {
        "detail": "the request body is 1.907 MiB; this server accepts at most 1 MiB",
        "hint": "send less (large data belongs in a file or blob store, passed by reference), "
        "or raise CONVEYOR_MAX_REQUEST_BYTES on the server",
    }
    assert chunked.status_code == 413
    assert chunked.json()["detail"] == (
        "the request body is larger than the 1 MiB this server accepts"
    )
    assert health.status_code == 200


def test_the_client_reports_a_413_as_an_invalid_request(server_process, settings):
    server = server_process(CONVEYOR_MAX_REQUEST_BYTES="64KiB")
    remote = dataclasses.replace(settings, api_url=server.url)
    with connect(remote, retries=0) as api, pytest.raises(InvalidRequest) as info:
        api.set_secret("BIG", "x" * 70_000)
    assert info.value.status_code == 413
    assert str(info.value).endswith("this server accepts at most 64 KiB")
    assert "x" * 20 not in str(info.value) + (info.value.hint or "")

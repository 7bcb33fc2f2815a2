"""What a worker sends is safe to send again (issue 7, item 5), and a holder whose lease the server
expired may still report what happened (item 4), on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from conveyor.errors import InvalidRequest
from conveyor.schemas import LogRecord, RunState, StateUpdate
from fixtures.frontends import FRONT_ENDS, front_end

pytestmark = pytest.mark.usefixtures("backend")


def report(api, run, state, *, worker="w1", attempt=1, **fields):
    update = StateUpdate(worker=worker, state=state, attempt=attempt, **fields)
    return api.set_run_state(run.id, update)


def record(message: str) -> LogRecord:
    return LogRecord(timestamp=datetime.now(UTC), message=message)


LEASE = 1.0
"""Short, but long enough for a report right after the claim on a busy machine."""


def expire(api, run, *, lease: float = LEASE) -> None:
    """Let the run's lease pass and the sweep see it (a read sweeps lazily)."""
    time.sleep(lease + 0.6)
    api.get_run(run.id)


def test_a_claim_id_presented_again_gets_the_same_run_and_no_other(deploy, api):
    # Given two queued runs, and a claim whose reply the worker never saw
    deploy()
    first = api.create_run("hello", "prod")
    second = api.create_run("hello", "prod")
    claimed = api.claim_run("default", worker="w1", lease_seconds=5, claim_id="c" * 32)
    # When the worker presents the same claim id again (even asking to wait)
    again = api.claim_run(
        "default", worker="w1", lease_seconds=30, claim_id="c" * 32, wait_seconds=5
    )
    # Then it gets the same run back at once, with its lease renewed, and the other run waits
    assert claimed.id == again.id == first.id
    assert (again.state, again.attempt) == (RunState.PENDING, 1)
    assert (again.lease_expires - claimed.lease_expires).total_seconds() > 20
    assert api.get_run(second.id).state is RunState.SCHEDULED
    # ...while another worker with that id, or a new claim id, does not get it
    assert api.claim_run("default", worker="w2", claim_id="c" * 32).id == second.id
    assert api.claim_run("default", worker="w1", claim_id="d" * 32) is None


def test_a_claim_id_that_took_nothing_waits_as_a_new_claim(deploy, api):
    deploy()
    assert api.claim_run("default", worker="w1", claim_id="e" * 32) is None
    run = api.create_run("hello", "prod")
    assert api.claim_run("default", worker="w1", claim_id="e" * 32).id == run.id


@pytest.mark.parametrize("kind", FRONT_ENDS)
def test_a_bad_claim_id_or_batch_number_is_a_one_line_422_on_both_front_ends(kind, backend):
    with front_end(kind, backend) as http:
        claim = http.post("/api/pools/default/claim", json={"worker": "w1", "claim_id": "../x"})
        logs = http.post("/api/runs/nope/logs?attempt=1&batch=0", json=[])
    assert claim.status_code == 422
    assert claim.json()["detail"] == "invalid request: claim_id '../x' is not a claim id"
    assert "letters, digits" in claim.json()["hint"]
    assert logs.status_code == 422
    assert "batch" in logs.json()["detail"]


def test_reports_repeated_after_a_lost_reply_change_nothing(deploy, api):
    # Given a run with retries, claimed and running
    deploy(retries=2)
    run = api.create_run("hello", "prod")
    api.claim_run("default", worker="w1")
    first = report(api, run, RunState.RUNNING, timings={"fetch": 0.5})
    # When each report is sent twice (its first reply was lost)
    again = report(api, run, RunState.RUNNING, timings={"fetch": 0.5})
    failed = report(api, run, RunState.FAILED, error="boom")
    repeated = report(api, run, RunState.FAILED, error="boom")
    # Then the second of each answers like the first, and the failure used one retry, not two
    assert again.running_at == first.running_at
    assert (failed.state, failed.attempt) == (RunState.SCHEDULED, 2)
    assert (repeated.state, repeated.attempt) == (RunState.SCHEDULED, 2)
    assert [(a.attempt, a.state) for a in repeated.attempts] == [(1, RunState.FAILED)]
    messages = [line.message for line in api.read_logs(run.id)]
    assert sum("attempt 1 failed" in m for m in messages) == 1


def test_a_report_or_heartbeat_for_another_attempt_is_a_conflict(deploy, api):
    # Given a run that failed once and was claimed again by the same worker
    deploy(retries=1)
    run = api.create_run("hello", "prod")
    api.claim_run("default", worker="w1")
    report(api, run, RunState.RUNNING)
    report(api, run, RunState.FAILED, error="boom")
    assert api.claim_run("default", worker="w1", wait_seconds=2).attempt == 2
    # When a late message of attempt 1 arrives, Then it is refused, and attempt 2 goes on
    with pytest.raises(InvalidRequest, match=r"attempt 1 of run .* is at attempt 2"):
        report(api, run, RunState.COMPLETED, attempt=1)
    with pytest.raises(InvalidRequest, match="attempt 1 of run"):
        api.heartbeat_run(run.id, worker="w1", attempt=1)
    assert api.heartbeat_run(run.id, worker="w1", attempt=2).cancel_requested is False
    report(api, run, RunState.RUNNING, attempt=2)
    assert report(api, run, RunState.COMPLETED, attempt=2).state is RunState.COMPLETED


def test_the_holder_reports_after_its_lease_expired_when_nothing_else_started(deploy, api):
    # Given a run without retries whose worker was cut off past its lease (the sweep crashed it)
    deploy(retries=0)
    run = api.create_run("hello", "prod")
    api.claim_run("default", worker="w1", lease_seconds=LEASE)
    report(api, run, RunState.RUNNING, timings={"fetch": 0.1})
    expire(api, run)
    assert api.get_run(run.id).state is RunState.CRASHED
    # When the worker's report of how the flow ended arrives
    done = report(api, run, RunState.COMPLETED, result=42, timings={"run": 0.3})
    # Then it replaces the crash: that is what happened
    assert (done.state, done.attempt, done.result, done.error) == (RunState.COMPLETED, 1, 42, None)
    assert [(a.attempt, a.state, a.worker) for a in done.attempts] == [
        (1, RunState.COMPLETED, "w1")
    ]
    assert done.attempts[0].timings == {"queue": done.timings["queue"], "fetch": 0.1, "run": 0.3}
    messages = [line.message for line in api.read_logs(run.id)]
    assert any("reported completed after its lease had expired" in m for m in messages)
    # ...and the same report again changes nothing more
    assert report(api, run, RunState.COMPLETED, result=42).state is RunState.COMPLETED


def test_the_holder_reports_after_expiry_while_the_retry_is_still_waiting(deploy, api):
    # Given a run with a retry whose first attempt the sweep crashed and rescheduled
    deploy(retries=1)
    run = api.create_run("hello", "prod")
    api.claim_run("default", worker="w1", lease_seconds=LEASE)
    report(api, run, RunState.RUNNING)
    expire(api, run)
    assert (api.get_run(run.id).state, api.get_run(run.id).attempt) == (RunState.SCHEDULED, 2)
    # When the first worker's final report arrives before any worker claimed the retry
    done = report(api, run, RunState.COMPLETED, result=1)
    # Then the run is completed by its first attempt, and there is nothing left to claim
    assert (done.state, done.attempt) == (RunState.COMPLETED, 1)
    assert [a.state for a in done.attempts] == [RunState.COMPLETED]
    assert api.claim_run("default", worker="w2") is None


def test_the_holder_cannot_report_once_another_attempt_started(deploy, api):
    # Given a run whose first attempt expired and whose retry another worker claimed
    deploy(retries=1)
    run = api.create_run("hello", "prod")
    api.claim_run("default", worker="w1", lease_seconds=LEASE)
    report(api, run, RunState.RUNNING)
    expire(api, run)
    assert api.claim_run("default", worker="w2", wait_seconds=2).attempt == 2
    # When the first worker's late report arrives, Then it is refused, and w2 keeps the run
    with pytest.raises(InvalidRequest) as info:
        report(api, run, RunState.COMPLETED)
    assert info.value.status_code == 409
    assert api.get_run(run.id).worker == "w2"
    report(api, run, RunState.RUNNING, worker="w2", attempt=2)
    done = report(api, run, RunState.COMPLETED, worker="w2", attempt=2)
    assert [(a.attempt, a.state) for a in done.attempts] == [
        (1, RunState.CRASHED),
        (2, RunState.COMPLETED),
    ]


def test_a_late_running_report_after_expiry_is_refused(deploy, api):
    # A flow must not start once the server has given its attempt up
    deploy(retries=0)
    run = api.create_run("hello", "prod")
    api.claim_run("default", worker="w1", lease_seconds=LEASE)
    expire(api, run)
    with pytest.raises(InvalidRequest) as info:
        report(api, run, RunState.RUNNING)
    assert info.value.status_code == 409


def test_a_numbered_log_batch_sent_again_is_stored_once(deploy, api):
    # Given a claimed run
    deploy(retries=1)
    run = api.create_run("hello", "prod")
    api.claim_run("default", worker="w1")
    # When batch 1 is sent twice, then batch 2, then batch 1 again (all of attempt 1)
    api.write_logs(run.id, [record("a"), record("b")], attempt=1, batch=1)
    api.write_logs(run.id, [record("a"), record("b")], attempt=1, batch=1)
    api.write_logs(run.id, [record("c")], attempt=1, batch=2)
    api.write_logs(run.id, [record("a"), record("b")], attempt=1, batch=1)
    # ...and attempt 2 starts its own numbering
    api.write_logs(run.id, [record("d")], attempt=2, batch=1)
    # Then each line is stored once, in order, numbered without gaps
    lines = api.read_logs(run.id)
    assert [line.message for line in lines] == ["a", "b", "c", "d"]
    assert [line.seq for line in lines] == [1, 2, 3, 4]
    # ...and batches without numbers are stored as they come (older workers)
    api.write_logs(run.id, [record("e")])
    api.write_logs(run.id, [record("e")])
    assert [line.message for line in api.read_logs(run.id, after=4)] == ["e", "e"]

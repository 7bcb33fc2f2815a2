"""Claims, leases, state reports, expiry and retries, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time

import pytest

from conveyor.errors import InvalidRequest, ObjectNotFound
from conveyor.schemas import RunState, StateUpdate

pytestmark = pytest.mark.usefixtures("backend")


def report(api, run, state, worker="w1", **fields):
    return api.set_run_state(run.id, StateUpdate(worker=worker, state=state, **fields))


def test_claim_takes_the_oldest_run_with_a_lease(deploy, api):
    deploy()
    first = api.create_run("hello", "prod")
    api.create_run("hello", "prod")
    claimed = api.claim_run("default", worker="w1", lease_seconds=30)
    assert claimed is not None
    assert claimed.id == first.id
    assert (claimed.state, claimed.worker) == (RunState.PENDING, "w1")
    assert claimed.pending_at is not None
    assert claimed.lease_expires is not None
    assert 29 < (claimed.lease_expires - claimed.pending_at).total_seconds() <= 30
    assert claimed.timings["queue"] >= 0


def test_claim_of_an_empty_pool_returns_none_and_unknown_pool_is_404(deploy, api):
    assert api.claim_run("default", worker="w1") is None
    with pytest.raises(ObjectNotFound, match="work pool 'nope' not found"):
        api.claim_run("nope", worker="w1")


def test_claim_honours_required_labels(deploy, api):
    deploy(job_variables={"labels": ["gpu"]})
    run = api.create_run("hello", "prod")
    assert api.claim_run("default", worker="cpu-only") is None
    assert api.claim_run("default", worker="w2", labels=["big", "gpu"]).id == run.id


def test_full_life_of_a_run(deploy, api):
    deploy()
    run = api.create_run("hello", "prod")
    api.claim_run("default", worker="w1")
    running = report(api, run, RunState.RUNNING, timings={"fetch": 0.25, "start": 0.1})
    assert running.running_at is not None
    done = report(
        api, run, RunState.COMPLETED, timings={"run": 0.5}, result={"answer": 42}, version=None
    )
    assert done.state is RunState.COMPLETED
    assert done.result == {"answer": 42}
    assert set(done.timings) == {"queue", "fetch", "start", "run"}
    assert done.ended_at is not None
    assert done.lease_expires is None
    [attempt] = done.attempts
    assert (attempt.attempt, attempt.state, attempt.worker) == (1, RunState.COMPLETED, "w1")


def test_follow_ref_run_records_the_version_it_fetched(deploy, api):
    deploy(follow_ref=True)
    run = api.create_run("hello", "prod")
    assert run.follow_ref is True
    api.claim_run("default", worker="w1")
    updated = report(api, run, RunState.RUNNING, version="0123456789" * 4)
    assert updated.version == "0123456789" * 4


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ((), RunState.COMPLETED),
        ((RunState.RUNNING, RunState.COMPLETED), RunState.RUNNING),
        ((RunState.RUNNING, RunState.COMPLETED), RunState.FAILED),
    ],
)
def test_illegal_transitions_are_conflicts(deploy, api, path, target):
    deploy()
    run = api.create_run("hello", "prod")
    api.claim_run("default", worker="w1")
    for state in path:
        report(api, run, state)
    with pytest.raises(InvalidRequest) as info:
        report(api, run, target)
    assert info.value.status_code == 409


def test_only_the_lease_holder_may_report_or_heartbeat(deploy, api):
    deploy()
    run = api.create_run("hello", "prod")
    api.claim_run("default", worker="w1")
    with pytest.raises(InvalidRequest, match="worker 'w2' does not hold run"):
        report(api, run, RunState.RUNNING, worker="w2")
    with pytest.raises(InvalidRequest, match="worker 'w2' does not hold run"):
        api.heartbeat_run(run.id, worker="w2")
    reply = api.heartbeat_run(run.id, worker="w1", lease_seconds=60)
    assert reply.cancel_requested is False
    assert api.get_run(run.id).lease_expires == reply.lease_expires


def test_heartbeats_keep_a_short_lease_alive(deploy, api):
    deploy()
    run = api.create_run("hello", "prod")
    # A lease of 1.5 s renewed every 0.5 s outlives it (2 s in all); the second of margin keeps a
    # slow heartbeat on a busy machine from expiring it, which a 0.3 s margin did not.
    api.claim_run("default", worker="w1", lease_seconds=1.5)
    report(api, run, RunState.RUNNING)
    for _ in range(4):
        time.sleep(0.5)
        api.heartbeat_run(run.id, worker="w1", lease_seconds=1.5)
    assert report(api, run, RunState.COMPLETED).state is RunState.COMPLETED


def test_expired_lease_without_retries_is_crashed(deploy, api):
    # Given a run claimed with a short lease and no retries
    deploy(retries=0)
    run = api.create_run("hello", "prod")
    api.claim_run("default", worker="w1", lease_seconds=0.2)
    report(api, run, RunState.RUNNING)
    # When the worker stops heartbeating past the lease (and the lazy sweep's throttle)
    time.sleep(0.8)
    crashed = api.get_run(run.id)
    # Then the run is crashed, says why, and the old worker can no longer report
    assert crashed.state is RunState.CRASHED
    assert "stopped renewing its lease" in (crashed.error or "")
    assert [a.state for a in crashed.attempts] == [RunState.CRASHED]
    with pytest.raises(InvalidRequest):
        report(api, run, RunState.COMPLETED)
    messages = [line.message for line in api.read_logs(run.id)]
    assert any("attempt 1 crashed" in m for m in messages)


def test_expired_lease_with_retries_is_rerun_by_another_worker(deploy, api):
    # Given a run with one retry, claimed by w1 with a short lease
    deploy(retries=1)
    run = api.create_run("hello", "prod")
    api.claim_run("default", worker="w1", lease_seconds=1.0)  # long enough for a busy machine
    report(api, run, RunState.RUNNING, timings={"fetch": 0.1})
    # When w1 dies (no heartbeats) and w2 asks for work after the lease expired
    time.sleep(1.6)
    again = api.claim_run("default", worker="w2", wait_seconds=2)
    # Then w2 gets the same run as attempt 2, and w1's late report is refused
    assert again is not None
    assert again.id == run.id
    assert (again.attempt, again.worker, again.state) == (2, "w2", RunState.PENDING)
    with pytest.raises(InvalidRequest):
        report(api, run, RunState.COMPLETED, worker="w1")
    report(api, run, RunState.RUNNING, worker="w2")
    done = report(api, run, RunState.COMPLETED, worker="w2", result=1)
    assert done.state is RunState.COMPLETED
    assert done.error is None
    assert [(a.attempt, a.state, a.worker) for a in done.attempts] == [
        (1, RunState.CRASHED, "w1"),
        (2, RunState.COMPLETED, "w2"),
    ]
    assert done.attempts[0].timings["fetch"] == 0.1
    logs = [line.message for line in api.read_logs(run.id)]
    assert any("attempt 1 crashed" in m and "retrying" in m for m in logs)


def test_failed_run_is_retried_after_its_delay(deploy, api):
    deploy(retries=2, retry_delay_seconds=0.6)
    run = api.create_run("hello", "prod")
    api.claim_run("default", worker="w1")
    report(api, run, RunState.RUNNING)
    rescheduled = report(api, run, RunState.FAILED, error="ValueError: boom")
    assert (rescheduled.state, rescheduled.attempt) == (RunState.SCHEDULED, 2)
    assert rescheduled.error == "ValueError: boom"
    assert (rescheduled.scheduled_at - rescheduled.attempts[0].ended_at).total_seconds() >= 0.59
    assert api.claim_run("default", worker="w1") is None  # not before scheduled_at
    started = time.monotonic()
    claimed = api.claim_run("default", worker="w1", wait_seconds=5)
    assert claimed is not None
    assert claimed.attempt == 2
    assert time.monotonic() - started < 4  # not the full 5 s wait


def test_last_failure_is_final(deploy, api):
    deploy(retries=1)
    run = api.create_run("hello", "prod")
    for attempt in (1, 2):
        claimed = api.claim_run("default", worker="w1")
        assert claimed is not None
        assert claimed.attempt == attempt
        report(api, run, RunState.RUNNING)
        final = report(api, run, RunState.FAILED, error=f"boom {attempt}")
    assert (final.state, final.attempt, final.error) == (RunState.FAILED, 2, "boom 2")
    assert [a.error for a in final.attempts] == ["boom 1", "boom 2"]


def test_long_poll_returns_as_soon_as_a_run_is_created(deploy, api):
    deploy()
    result = {}

    def claim():
        started = time.monotonic()
        result["run"] = api.claim_run("default", worker="w1", wait_seconds=10)
        result["waited"] = time.monotonic() - started

    thread = threading.Thread(target=claim)
    thread.start()
    time.sleep(0.3)
    run = api.create_run("hello", "prod")
    thread.join(timeout=10)
    assert result["run"].id == run.id
    assert 0.25 < result["waited"] < 3.0  # woken by the new run, not at the end of the wait


def test_long_poll_gives_up_after_wait_seconds(api):
    started = time.monotonic()
    assert api.claim_run("default", worker="w1", wait_seconds=0.4) is None
    assert 0.35 < time.monotonic() - started < 3.0

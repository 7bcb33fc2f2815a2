"""Creating, listing, inspecting and cancelling runs, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from conveyor.errors import InvalidRequest, ObjectNotFound
from conveyor.schemas import RunState, StateUpdate

pytestmark = pytest.mark.usefixtures("backend")


def test_run_merges_default_parameters_and_pins_the_deployment(deploy, api):
    deployment = deploy(
        parameters={"n": 1, "name": "team"},
        job_variables={"env": {"A": "1"}, "labels": ["gpu"]},
        pull_steps=[{"set_working_directory": {"directory": "/x"}}],
        retries=2,
        retry_delay_seconds=1.5,
        timeout_seconds=60,
    )
    run = api.create_run("hello", "prod", parameters={"n": 3})
    assert run.state is RunState.SCHEDULED
    assert run.parameters == {"n": 3, "name": "team"}
    assert (run.version, run.source, run.entrypoint) == (
        deployment.version,
        deployment.source,
        deployment.entrypoint,
    )
    assert run.pull_steps == deployment.pull_steps
    assert run.job_variables == {"env": {"A": "1"}, "labels": ["gpu"]}
    assert run.labels == ["gpu"]
    assert (run.max_retries, run.retry_delay_seconds, run.timeout_seconds) == (2, 1.5, 60)
    assert (run.attempt, run.deployment_revision, run.work_pool) == (1, 1, "default")
    assert run.scheduled_at == run.created
    assert api.get_run(run.id) == run


def test_a_redeploy_does_not_change_a_queued_run(deploy, api):
    deploy()
    queued = api.create_run("hello", "prod")
    deploy(version="sha256-" + "c" * 64, entrypoint="other.py:hello")
    assert api.get_run(queued.id).version == "sha256-" + "a" * 64
    assert api.get_run(queued.id).entrypoint == "flows.py:hello"
    fresh = api.create_run("hello", "prod")
    assert (fresh.version, fresh.deployment_revision) == ("sha256-" + "c" * 64, 2)


def test_missing_parameter_is_a_one_line_422(deploy, api):
    deploy(parameters={})
    with pytest.raises(InvalidRequest) as info:
        api.create_run("hello", "prod", parameters={"name": "x"})
    assert info.value.status_code == 422
    assert "'n'" in str(info.value)
    assert "\n" not in str(info.value)
    assert api.list_runs() == []


def test_mistyped_parameter_names_it(deploy, api):
    deploy()
    with pytest.raises(InvalidRequest, match=r"hello/prod: .*'n'") as info:
        api.create_run("hello", "prod", parameters={"n": "three"})
    assert info.value.status_code == 422
    assert api.list_runs() == []


def test_unknown_parameter_is_refused(deploy, api):
    schema = deploy().parameter_schema
    deploy(parameter_schema={**schema, "additionalProperties": False})
    with pytest.raises(InvalidRequest, match="'colour'"):
        api.create_run("hello", "prod", parameters={"colour": "red"})


def test_run_of_unknown_deployment_is_not_found(api):
    with pytest.raises(ObjectNotFound) as info:
        api.create_run("x", "y")
    assert str(info.value) == "deployment 'x/y' not found"
    assert info.value.hint == "conveyor deployments ls"


def test_runs_are_listed_newest_first_and_filtered(deploy, api):
    deploy()
    deploy(flow_name="other", name="dev")
    a = api.create_run("hello", "prod")
    b = api.create_run("other", "dev")
    c = api.create_run("hello", "prod")
    api.cancel_run(c.id)
    assert [r.id for r in api.list_runs()] == [c.id, b.id, a.id]
    assert [r.id for r in api.list_runs(deployment="hello/prod")] == [c.id, a.id]
    assert [r.id for r in api.list_runs(state=RunState.CANCELLED)] == [c.id]
    assert [r.id for r in api.list_runs(limit=1)] == [c.id]
    assert [r.id for r in api.list_runs(pool="default", limit=2)] == [c.id, b.id]
    with pytest.raises(ObjectNotFound):
        api.list_runs(deployment="no/such")


def test_runs_are_found_by_unique_prefix(deploy, api):
    deploy()
    run = api.create_run("hello", "prod")
    assert api.get_run(run.id[:8]).id == run.id
    with pytest.raises(ObjectNotFound, match="run 'zzzzzzzz' not found"):
        api.get_run("zzzzzzzz")


def test_cancel_scheduled_run_is_immediate(deploy, api):
    deploy()
    run = api.create_run("hello", "prod")
    cancelled = api.cancel_run(run.id)
    assert cancelled.state is RunState.CANCELLED
    assert cancelled.ended_at is not None
    assert api.claim_run("default", worker="w1") is None


def test_cancel_pending_run_is_immediate_and_the_worker_is_told(deploy, api):
    deploy()
    run = api.create_run("hello", "prod")
    api.claim_run("default", worker="w1")
    assert api.cancel_run(run.id).state is RunState.CANCELLED
    assert api.heartbeat_run(run.id, worker="w1").cancel_requested is True
    with pytest.raises(InvalidRequest, match="does not hold run") as info:
        api.set_run_state(run.id, StateUpdate(worker="w1", state=RunState.RUNNING))
    assert info.value.status_code == 409
    [attempt] = api.get_run(run.id).attempts
    assert (attempt.state, attempt.worker) == (RunState.CANCELLED, "w1")


def test_cancel_running_run_asks_the_worker(deploy, api):
    deploy(retries=3)
    run = api.create_run("hello", "prod")
    api.claim_run("default", worker="w1")
    api.set_run_state(run.id, StateUpdate(worker="w1", state=RunState.RUNNING))
    requested = api.cancel_run(run.id)
    assert (requested.state, requested.cancel_requested) == (RunState.RUNNING, True)
    assert api.heartbeat_run(run.id, worker="w1").cancel_requested is True
    done = api.set_run_state(run.id, StateUpdate(worker="w1", state=RunState.CANCELLED))
    assert done.state is RunState.CANCELLED


def test_cancelled_run_that_then_fails_is_not_retried(deploy, api):
    deploy(retries=3)
    run = api.create_run("hello", "prod")
    api.claim_run("default", worker="w1")
    api.set_run_state(run.id, StateUpdate(worker="w1", state=RunState.RUNNING))
    api.cancel_run(run.id)
    failed = api.set_run_state(
        run.id, StateUpdate(worker="w1", state=RunState.FAILED, error="killed")
    )
    assert failed.state is RunState.FAILED


def test_cancel_of_a_finished_run_is_a_conflict(deploy, api):
    deploy()
    run = api.create_run("hello", "prod")
    api.cancel_run(run.id)
    with pytest.raises(InvalidRequest, match="already cancelled") as info:
        api.cancel_run(run.id)
    assert info.value.status_code == 409

"""A worker on a container pool that this machine cannot serve — a kubernetes pool with no
cluster configured, a docker pool with no engine reachable — refuses to start in one line and
claims nothing, so the pool's runs keep their state and their retries. Real ``conveyor``
commands in subprocesses against the embedded server."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.conftest import api, command_env, conveyor, ok, one_line_error

pytestmark = pytest.mark.slow

FLOW = """
from conveyor import flow

@flow(retries=1)
def flaky() -> str:
    return "ran"
"""


@pytest.mark.parametrize(
    ("pool_type", "missing"),
    [
        ("kubernetes", "no Kubernetes cluster is configured for this worker"),
        ("docker", "no container engine is reachable for this worker's docker pool"),
    ],
)
def test_a_worker_that_cannot_serve_its_container_pool_refuses_to_start_and_claims_nothing(
    tmp_path: Path, pool_type: str, missing: str
) -> None:
    # Given a machine with no cluster configured (no kube config, not in a cluster) and no
    # container engine (DOCKER_HOST names a socket nobody listens on), a pool of the type, and
    # a run of a flow with a retry queued in it
    env = command_env(
        KUBECONFIG=str(tmp_path / "no-kube-config"),
        KUBERNETES_SERVICE_HOST=None,
        KUBERNETES_SERVICE_PORT=None,
        DOCKER_HOST=f"unix://{tmp_path / 'no-engine.sock'}",
    )
    project = tmp_path / "project"
    project.mkdir()
    (project / "flows.py").write_text(FLOW)
    ok(conveyor("pool", "create", "p", "--type", pool_type, env=env))
    ok(conveyor("deploy", "flows.py:flaky", "--name", "d", "--pool", "p", env=env, cwd=project))
    run_id = ok(conveyor("run", "flaky/d", env=env)).strip().split()[-1]

    for _ in range(2):
        # When a burst worker is started on the pool
        done = conveyor("worker", "start", "--pool", "p", "--burst", env=env, timeout=20)

        # Then it exits non-zero with one line naming what is missing (and a hint how to
        # configure it), before any claim
        assert one_line_error(done) == missing
        assert "hint: " in done.stderr
        assert "worker started" not in done.stderr
        with api(env) as client:
            run = client.get_run(run_id)
        assert run.state.value == "scheduled"
        assert run.attempt == 1
        assert run.worker is None
        assert run.attempts == []

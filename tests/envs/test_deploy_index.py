"""The deploy's check of a run environment asks the index the run will ask: the deployment's own
``job_variables.env`` (and its pool's default ``env``) over the deployer's environment, as the
worker builds it — not the deployer's shell alone. Real ``conveyor`` commands in subprocesses,
uv against wheels in a local directory; the shell's index is a loopback one without them, so
nothing but the deployment's settings could satisfy the check (and no public index is asked).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from e2e.conftest import api, command_env, conveyor, ok, one_line_error, wait_for_run
from fixtures.package_index import PackageIndex, build_wheel

pytestmark = pytest.mark.slow

FLOW = """
import accdemo
from conveyor import flow

@flow
def report() -> str:
    return accdemo.VALUE
"""

PROJECT = """
deployments:
  - name: private
    entrypoint: flows.py:report
    work_pool: {{name: {pool}}}
    pull:
      - pip_install_requirements: {{id: deps}}
{job_variables}
"""


def private_project(root: Path, *, pool: str, job_variables: str = "") -> Path:
    """A flow importing ``accdemo`` at the top of its module (so the deploy's preflight needs
    the run environment), which ``requirements.txt`` pins."""
    root.mkdir(parents=True)
    (root / "flows.py").write_text(FLOW)
    (root / "requirements.txt").write_text("accdemo==1.0\n")
    (root / "conveyor.yaml").write_text(PROJECT.format(pool=pool, job_variables=job_variables))
    return root


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    """A directory holding the one wheel of the private package ``accdemo`` 1.0."""
    directory = tmp_path / "wheels"
    build_wheel(directory, "accdemo", "1.0", 'VALUE = "private 1.0"\n')
    return directory


def test_deploy_checks_requirements_against_the_deployments_own_index_settings(
    index_env: PackageIndex, wheels: Path, tmp_path: Path
) -> None:
    # Given a project whose private requirement is only in a local directory of wheels that
    # its deployment's job variables name (UV_FIND_LINKS, UV_NO_INDEX), and a shell whose
    # index (a loopback one) does not have it
    job_variables = (
        f"    job_variables:\n      env: {{UV_FIND_LINKS: '{wheels}', UV_NO_INDEX: '1'}}\n"
    )
    project = private_project(tmp_path / "p", pool="default", job_variables=job_variables)
    env = command_env()

    # When it is deployed, run and worked on
    out = ok(conveyor("deploy", env=env, cwd=project, timeout=120))
    assert "deployment report/private" in out
    # (the environment the deploy built is listed by what it holds, not as empty)
    listed = ok(conveyor("cache", "ls", env=env))
    assert "environment: requirements.txt" in listed
    assert "no requirements" not in listed
    ok(conveyor("run", "report/private", env=env, timeout=60))
    ok(conveyor("worker", "start", "--burst", env=env, timeout=120))

    # Then the deploy and the run both installed it from the wheels
    with api(env) as client:
        (run,) = client.list_runs()
        done = wait_for_run(client, run.id, timeout=30)
    assert done.error is None
    assert done.result == "private 1.0"


def test_deploy_checks_requirements_against_the_pools_default_index_settings(
    index_env: PackageIndex, wheels: Path, tmp_path: Path
) -> None:
    # Given a pool whose base job template's default env names the wheels, and a deployment
    # that sets other env variables of its own (merged key by key, as for its runs)
    from conveyor._jobvars import PROCESS_JOB_VARIABLES

    env = command_env()
    properties = dict(PROCESS_JOB_VARIABLES["properties"])
    properties["env"] = {
        **properties["env"],
        "default": {"UV_FIND_LINKS": str(wheels), "UV_NO_INDEX": "1"},
    }
    variables: dict[str, Any] = {**PROCESS_JOB_VARIABLES, "properties": properties}
    with api(env) as client:
        client.create_pool(
            "private-pool",
            base_job_template={"job_configuration": {"env": "{{ env }}"}, "variables": variables},
        )
    project = private_project(
        tmp_path / "p",
        pool="private-pool",
        job_variables="    job_variables:\n      env: {OTHER: '1'}\n",
    )

    # When it is deployed, then the check found the package where the runs will
    out = ok(conveyor("deploy", env=env, cwd=project, timeout=120))
    assert "deployment report/private" in out
    ok(conveyor("run", "report/private", env=env, timeout=60))
    ok(conveyor("worker", "start", "--pool", "private-pool", "--burst", env=env, timeout=120))
    with api(env) as client:
        (run,) = client.list_runs()
        done = wait_for_run(client, run.id, timeout=30)
    assert done.result == "private 1.0", done.error


def test_a_failed_check_names_the_job_variable_it_ran_without(
    index_env: PackageIndex, wheels: Path, tmp_path: Path
) -> None:
    # Given a deployment whose runs find their private wheels through a secret the deploying
    # machine does not have (so the check cannot use it), and a shell index without them
    job_variables = "    job_variables:\n      env: {UV_FIND_LINKS: '{{ secrets.WHEELS_DIR }}'}\n"
    project = private_project(tmp_path / "p", pool="default", job_variables=job_variables)
    env = command_env()

    # When it is deployed
    failed = conveyor("deploy", env=env, cwd=project, timeout=120)

    # Then the error is uv's, and the hint says the check ran without that variable and why
    assert one_line_error(failed).startswith("could not install the run's requirements: ")
    assert "accdemo" in failed.stderr
    hint = next(line for line in failed.stderr.splitlines() if line.startswith("hint: "))
    assert hint == (
        "hint: this check ran without job variable env.UV_FIND_LINKS (template "
        "{{ secrets.WHEELS_DIR }} has no value in the environment or the secret store): give "
        "it a value where you deploy too, or check the requirement and the package index"
    )

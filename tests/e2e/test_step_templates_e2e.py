"""Templates in a ``conveyor.yaml``'s pull steps through the real command line (embedded default):
``conveyor deploy`` in the folder, ``conveyor worker start --burst``, ``conveyor runs``."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.schemas import RunState
from e2e.conftest import api, command_env, conveyor, ok, one_line_error, wait_for_run

pytestmark = pytest.mark.slow

PULL = """
pull:
  - set_working_directory: {{directory: "{{{{ $SUBDIR }}}}"}}
  - run_shell_script: {{id: s1, script: "{script}"}}
deployments:
  - name: templated
    entrypoint: flows.py:hello
"""


def write_yaml(project: Path, script: str) -> None:
    (project / "sub").mkdir(exist_ok=True)
    (project / "sub" / "flows.py").write_text((project / "flows.py").read_text())
    (project / "sub" / "helpers.py").write_text((project / "helpers.py").read_text())
    (project / "conveyor.yaml").write_text(PULL.format(script=script))


def test_env_templates_in_pull_steps_are_resolved_by_the_worker(project: Path) -> None:
    # Given a conveyor.yaml whose steps move into $SUBDIR and echo $HOME (both templates)
    write_yaml(project, "echo home is {{ $HOME }}")
    env = command_env(SUBDIR="sub")
    ok(conveyor("deploy", "--name", "templated", env=env, cwd=project))
    run_id = ok(conveyor("run", "hello/templated", env=env)).splitlines()[0].strip()

    # When a worker runs it
    ok(conveyor("worker", "start", "--burst", env=env, timeout=120))

    # Then the steps ran with the worker's values and the flow ran in sub/
    with api(env) as client:
        done = wait_for_run(client, run_id, timeout=10)
        lines = [line.message for line in client.read_logs(run_id)]
    assert done.state is RunState.COMPLETED, done.error
    assert f"home is {env['HOME']}" in lines
    assert "hello world" in lines


@pytest.mark.parametrize("template", ["${MYSECRET}", "{{ secrets.MYSECRET }}"])
def test_a_secret_in_a_script_is_refused_by_deploy_in_one_line(
    project: Path, template: str
) -> None:
    write_yaml(project, f"echo {template}")
    env = command_env(SUBDIR="sub")
    error = one_line_error(conveyor("deploy", "--name", "templated", env=env, cwd=project))
    assert error == (
        f"step run_shell_script (id s1): the secret {template} cannot go into script, where it "
        "would be in a command line; pass it through the step's env instead "
        f'(env: {{TOKEN: "{template}"}}) and have the command read $TOKEN'
    )
    with api(env) as client:
        assert client.list_deployments() == []

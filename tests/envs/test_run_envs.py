"""Runs whose requirements are installed into environments keyed by digest (issue 9, item 1):
real deploys, a real worker, real child processes, uv against a real package index on loopback.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conveyor.cache import CodeCache
from conveyor.client import ConveyorClient
from conveyor.connect import connect
from conveyor.deploy import from_source
from conveyor.errors import ConfigError, InstallError
from conveyor.schemas import Run, RunState
from conveyor.settings import Settings
from conveyor.worker.loop import Worker
from conveyor.worker.options import WorkerOptions
from fixtures.package_index import PackageIndex

pytestmark = pytest.mark.slow

FLOW = """
import sys
import conveyor
from conveyor import flow
{top}
@flow
def report() -> dict:
    import {module}
    return {{
        "value": getattr({module}, "VERSION", None) or getattr({module}, "EXTRA", None),
        "python": sys.executable,
        "conveyor": conveyor.__file__,
    }}
"""

REQUIREMENTS = [{"pip_install_requirements": {"id": "deps"}}]


@pytest.fixture
def client(settings: Settings) -> Iterator[ConveyorClient]:
    with connect(settings) as api:
        yield api


def project(
    root: Path,
    *,
    module: str = "cv_greeting",
    requirements: str | None = None,
    top_level: bool = True,
) -> Path:
    """A flow importing ``module`` (at the top of the module, as users write it: the deploy's
    preflight then needs the run environment too)."""
    root.mkdir(parents=True)
    (root / "flows.py").write_text(
        FLOW.format(module=module, top=f"import {module}" if top_level else "")
    )
    if requirements is not None:
        (root / "requirements.txt").write_text(requirements)
    return root


def deploy(
    settings: Settings, client: ConveyorClient, folder: Path, name: str, **options: Any
) -> tuple[str, str]:
    deployment = from_source(folder, "flows.py:report").deploy(
        name, settings=settings, client=client, **options
    )
    return deployment.flow_name, deployment.name


def on_worker(settings: Settings) -> Settings:
    """The worker's settings: its own cache, as on another machine than the deployer's."""
    return replace(settings, cache_dir=settings.cache_dir.parent / "worker-cache")


def work(settings: Settings, client: ConveyorClient, *, limit: int = 1) -> None:
    options = WorkerOptions(name="w1", poll_seconds=0.2, limit=limit)
    Worker.from_settings(on_worker(settings), client, options).work(burst=True)


def run_once(settings: Settings, client: ConveyorClient, target: tuple[str, str]) -> Run:
    created = client.create_run(*target)
    work(settings, client)
    return client.get_run(created.id)


def env_dirs(settings: Settings) -> list[Path]:
    root = on_worker(settings).cache_dir / ".envs"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def test_the_worker_itself_cannot_import_the_test_packages() -> None:
    done = subprocess.run([sys.executable, "-c", "import cv_greeting"], capture_output=True)
    assert done.returncode != 0


def test_a_flow_gets_its_requirements_and_a_second_run_builds_nothing(
    settings: Settings, client: ConveyorClient, index_env: PackageIndex, tmp_path: Path
) -> None:
    # Given a flow importing a package that only its requirements.txt provides
    folder = project(tmp_path / "p", requirements="cv-greeting==1.0  # pinned\n")
    target = deploy(settings, client, folder, "deps", pull_steps=REQUIREMENTS)
    before = len(index_env.requests())  # (the deploy's preflight built it in its own cache)

    # When it runs twice on one worker
    first = run_once(settings, client, target)
    after_first = len(index_env.requests())
    second = run_once(settings, client, target)

    # Then both runs imported it, with the environment's interpreter and the worker's Conveyor
    assert first.state is RunState.COMPLETED, first.error
    assert second.state is RunState.COMPLETED, second.error
    (env,) = env_dirs(settings)
    assert first.result["value"] == "1.0"
    assert first.result["python"] == str(env / "bin" / "python")
    import conveyor

    assert first.result["conveyor"] == conveyor.__file__
    assert second.result == first.result
    # the first run asked the index, the second made no request at all and built nothing
    assert after_first > before
    assert len(index_env.requests()) == after_first
    assert "env" in first.timings
    logs = [line.message for line in client.read_logs(second.id)]
    assert any(f"environment {env.name} reused" in line for line in logs), logs
    assert not any("Installed" in line for line in logs)
    # and the environment is a cache entry like the checkouts
    kinds = {e.kind for e in CodeCache.from_settings(on_worker(settings)).entries()}
    assert kinds == {"checkout", "env"}


def test_conflicting_pins_in_two_deployments_run_side_by_side(
    settings: Settings, client: ConveyorClient, index_env: PackageIndex, tmp_path: Path
) -> None:
    old = deploy(
        settings,
        client,
        project(tmp_path / "old", requirements="cv-greeting==1.0\n"),
        "old",
        pull_steps=REQUIREMENTS,
    )
    new = deploy(
        settings,
        client,
        project(tmp_path / "new", requirements="cv-greeting==2.0\n"),
        "new",
        pull_steps=REQUIREMENTS,
    )
    runs = [client.create_run(*old), client.create_run(*new)]
    work(settings, client, limit=2)

    done = [client.get_run(r.id) for r in runs]
    assert [r.state for r in done] == [RunState.COMPLETED, RunState.COMPLETED], done
    assert [r.result["value"] for r in done] == ["1.0", "2.0"]
    assert len(env_dirs(settings)) == 2
    assert done[0].result["python"] != done[1].result["python"]


@pytest.mark.parametrize(
    "job_variables",
    [{"env": {"EXTRA_PIP_PACKAGES": "cv-extra"}}, {"EXTRA_PIP_PACKAGES": "cv-extra==1.0"}],
    ids=["env", "top-level"],
)
def test_extra_pip_packages_from_a_job_variable(
    settings: Settings,
    client: ConveyorClient,
    index_env: PackageIndex,
    tmp_path: Path,
    job_variables: dict[str, Any],
) -> None:
    folder = project(tmp_path / "p", module="cv_extra")
    target = deploy(settings, client, folder, "extra", job_variables=job_variables)
    done = run_once(settings, client, target)
    assert done.state is RunState.COMPLETED, done.error
    assert done.result["value"] == "extra 1.0"
    assert len(env_dirs(settings)) == 1


def test_extra_pip_packages_from_the_worker_environment_join_the_requirements(
    settings: Settings,
    client: ConveyorClient,
    index_env: PackageIndex,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EXTRA_PIP_PACKAGES", "cv-extra")
    folder = project(tmp_path / "p", requirements="cv-greeting==2.0\n")
    text = FLOW.format(module="cv_greeting", top="import cv_extra").replace(
        "import cv_greeting", "import cv_greeting, cv_extra"
    )
    (folder / "flows.py").write_text(text)
    target = deploy(settings, client, folder, "both", pull_steps=REQUIREMENTS)
    done = run_once(settings, client, target)
    assert done.state is RunState.COMPLETED, done.error
    assert done.result["value"] == "2.0"
    (env,) = env_dirs(settings)
    installed = {p.name.split("-")[0] for p in env.glob("lib/python*/site-packages/*.dist-info")}
    assert installed == {"cv_greeting", "cv_dep", "cv_extra"}


def test_extra_pip_packages_from_a_pool_default(
    settings: Settings, client: ConveyorClient, index_env: PackageIndex, tmp_path: Path
) -> None:
    from conveyor._jobvars import PROCESS_JOB_VARIABLES

    variables: dict[str, Any] = {
        **PROCESS_JOB_VARIABLES,
        "properties": dict(PROCESS_JOB_VARIABLES["properties"]),
    }
    variables["properties"]["env"] = {
        **variables["properties"]["env"],
        "default": {"EXTRA_PIP_PACKAGES": "cv-extra"},
    }
    template = {"job_configuration": {"env": "{{ env }}"}, "variables": variables}
    client.create_pool("with-extras", base_job_template=template)
    folder = project(tmp_path / "p", module="cv_extra", top_level=False)
    target = deploy(
        settings,
        client,
        folder,
        "pool-default",
        work_pool="with-extras",
        job_variables={"env": {"OTHER": "1"}},
    )
    created = client.create_run(*target)
    options = WorkerOptions(name="w1", poll_seconds=0.2, pool="with-extras")
    Worker.from_settings(on_worker(settings), client, options).work(burst=True)
    done = client.get_run(created.id)
    assert done.state is RunState.COMPLETED, done.error
    assert done.result["value"] == "extra 1.0"


def test_a_requirement_the_workers_index_lacks_fails_the_run_in_one_line_and_leaves_nothing(
    settings: Settings,
    client: ConveyorClient,
    index_env: PackageIndex,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a deployment whose requirement the deploying machine could install, run by a worker
    # whose index (its own UV_INDEX_URL) does not have it
    folder = project(tmp_path / "p", requirements="cv-greeting==1.0\n")
    target = deploy(settings, client, folder, "bad", pull_steps=REQUIREMENTS)
    monkeypatch.setenv("UV_INDEX_URL", index_env.url.replace("/simple", "/nothing-here"))
    done = run_once(settings, client, target)

    # Then the run fails before the flow starts, with one line naming the package and why
    assert done.state is RunState.FAILED
    assert done.running_at is None
    assert done.error is not None
    assert "\n" not in done.error
    assert done.error.startswith("could not install the run's requirements: ")
    assert "cv-greeting" in done.error
    assert "not found" in done.error
    root = on_worker(settings).cache_dir / ".envs"
    assert [p.name for p in root.iterdir() if p.is_dir()] == []  # no env, no .tmp-* left


def test_a_bad_requirement_fails_the_deploy_in_one_line_and_leaves_no_environment(
    settings: Settings, client: ConveyorClient, index_env: PackageIndex, tmp_path: Path
) -> None:
    folder = project(tmp_path / "p", requirements="cv-greeting==9.9\n")
    with pytest.raises(InstallError) as caught:
        deploy(settings, client, folder, "bad", pull_steps=REQUIREMENTS)
    assert str(caught.value).startswith("could not install the run's requirements: ")
    assert "cv-greeting==9.9" in str(caught.value)
    assert "unsatisfiable" in str(caught.value)
    assert client.list_deployments() == []
    root = settings.cache_dir / ".envs"
    assert [p.name for p in root.iterdir() if p.is_dir()] == []


def test_a_requirements_file_that_installs_from_a_path_is_refused_in_one_line(
    settings: Settings, client: ConveyorClient, index_env: PackageIndex, tmp_path: Path
) -> None:
    folder = project(tmp_path / "p", requirements="cv-greeting==1.0\n-e ./libs/mine\n")
    before = len(index_env.requests())
    with pytest.raises(ConfigError) as caught:
        deploy(settings, client, folder, "editable", pull_steps=REQUIREMENTS)
    assert str(caught.value) == (
        "requirements.txt:2: '-e ./libs/mine' installs from a path; run environments are "
        "shared between runs and come from a package index"
    )
    assert len(index_env.requests()) == before  # refused before uv was started


@pytest.mark.parametrize("extra", ["./libs/mine", "-r /etc/hostname"])
def test_extra_pip_packages_that_install_from_a_path_are_refused_in_one_line(
    settings: Settings,
    client: ConveyorClient,
    index_env: PackageIndex,
    tmp_path: Path,
    extra: str,
) -> None:
    # Each token of EXTRA_PIP_PACKAGES became a line of the build's requirements file:
    # paths and options (`-r FILE`) reached uv unchecked
    folder = project(tmp_path / "p", module="cv_extra")
    before = len(index_env.requests())
    with pytest.raises(ConfigError) as caught:
        deploy(settings, client, folder, "pathy", job_variables={"EXTRA_PIP_PACKAGES": extra})
    first = extra.split()[0]
    assert str(caught.value) == (
        f"EXTRA_PIP_PACKAGES: {first!r} is not a package; run environments are "
        "shared between runs and come from a package index"
    )
    assert len(index_env.requests()) == before  # refused before uv was started
    assert client.list_deployments() == []

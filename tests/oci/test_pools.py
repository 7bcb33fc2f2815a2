"""Container pools: base job templates validated against their JSON schema, exactly what a
docker or kubernetes pool submits (`conveyor pool preview`, Kubernetes Jobs checked by the
official client's models), and the run's process inside a container fetching and verifying its
code itself, with secrets passed by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor._jobs import check_job_variables, check_template, default_template, render
from conveyor.client import ConveyorClient
from conveyor.connect import connect
from conveyor.deploy import from_source
from conveyor.docker import DockerImage
from conveyor.errors import ConfigError
from conveyor.schemas import RunState
from conveyor.settings import Settings
from conveyor.worker.executors.container import OUTCOME_PREFIX, validate_kubernetes_job
from conveyor.worker.executors.containers import submission
from e2e.conftest import command_env, conveyor, ok, one_line_error
from fixtures.registry import Registry
from oci.conftest import base_of
from worker.flows_project import write_project

SECRET_VALUE = "tok-value-that-must-stay-inside-7d2"


@pytest.fixture
def client(settings: Settings) -> Iterator[ConveyorClient]:
    with connect(settings) as api:
        yield api


@pytest.mark.parametrize("pool_type", ["process", "docker", "kubernetes"])
def test_default_templates_are_valid_and_render_their_defaults(pool_type: str) -> None:
    template = check_template(default_template(pool_type))
    rendered = render(template, {})
    assert set(rendered) == set(template["job_configuration"])
    assert "{{" not in json.dumps(rendered)


def test_job_variables_are_checked_against_the_schema() -> None:
    template = default_template("docker")
    with pytest.raises(ConfigError, match="image_pull_policy") as caught:
        check_job_variables(template, {"image_pull_policy": "Sometimes"})
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="env"):
        check_job_variables(template, {"env": ["A=1"]})
    values = check_job_variables(template, {"image": "reg.example/a@sha256:" + "1" * 64})
    assert values["image_pull_policy"] == "IfNotPresent"


def test_a_template_using_an_undeclared_variable_is_refused(
    tmp_path: Path, settings: Settings
) -> None:
    bad = {
        "job_configuration": {"image": "{{ imagee }}"},
        "variables": {"type": "object", "properties": {"image": {"type": "string"}}},
    }
    with pytest.raises(ConfigError, match="undeclared variables: imagee"):
        check_template(bad)
    file = tmp_path / "bad.json"
    file.write_text(json.dumps(bad))
    result = conveyor(
        "pool",
        "create",
        "d",
        "--type",
        "docker",
        "--base-job-template",
        str(file),
        env=command_env(),
    )
    assert "undeclared variables: imagee" in one_line_error(result)


def test_a_container_template_with_a_key_the_executor_does_not_read_is_refused(
    tmp_path: Path, settings: Settings, client: ConveyorClient
) -> None:
    # Given a kubernetes template whose memory limit sits under a misspelt key
    template = default_template("kubernetes")
    configuration = template["job_configuration"]
    configuration["memory_limt"] = configuration.pop("memory_limit")
    file = tmp_path / "typo.json"
    file.write_text(json.dumps(template))
    # When the pool is created (CLI, or the API directly)
    result = conveyor(
        "pool",
        "create",
        "k8s",
        "--type",
        "kubernetes",
        "--base-job-template",
        str(file),
        env=command_env(),
    )
    # Then it is refused in one line naming the key, instead of Jobs without a memory limit
    assert "job_configuration has keys a kubernetes pool does not use: memory_limt" in (
        one_line_error(result)
    )
    with pytest.raises(ValueError, match="does not use: memory_limt"):
        client.create_pool("k8s", type="kubernetes", base_job_template=template)
    assert "k8s" not in {pool.name for pool in client.list_pools()}
    # A process pool's template keeps its own keys (its variables are what the worker reads)
    check_template({"job_configuration": {"anything": "x"}}, pool_type="process")


def test_a_template_whose_defaults_do_not_fit_its_own_variables_is_refused(
    tmp_path: Path, settings: Settings, client: ConveyorClient
) -> None:
    # Checked once, when the pool is made: a deploy without job variables then checks nothing.
    bad = {
        "job_configuration": {"retries": "{{ retries }}"},
        "variables": {
            "type": "object",
            "properties": {"retries": {"type": "integer", "default": "three"}},
        },
    }
    message = (
        "base job template: its defaults do not fit its variables: "
        "job variable retries: 'three' is not of type 'integer'"
    )
    with pytest.raises(ConfigError) as caught:
        check_template(bad)
    assert caught.value.message == message
    file = tmp_path / "strict.json"
    file.write_text(json.dumps(bad))
    result = conveyor(
        "pool", "create", "strict", "--base-job-template", str(file), env=command_env()
    )
    assert one_line_error(result) == message
    assert "strict" not in {pool.name for pool in client.list_pools()}


def test_a_pool_keeps_its_own_template_and_deploy_checks_job_variables(
    tmp_path: Path, settings: Settings, client: ConveyorClient
) -> None:
    template = default_template("docker")
    template["variables"]["properties"]["image"]["default"] = "reg.example/team/runtime:1"
    file = tmp_path / "template.json"
    file.write_text(json.dumps(template))
    ok(
        conveyor(
            "pool",
            "create",
            "dock",
            "--type",
            "docker",
            "--base-job-template",
            str(file),
            env=command_env(),
        )
    )
    pool = {p.name: p for p in client.list_pools()}["dock"]
    assert (
        pool.base_job_template["variables"]["properties"]["image"]["default"]
        == "reg.example/team/runtime:1"
    )
    project = write_project(tmp_path / "project")
    with pytest.raises(ConfigError, match="image_pull_policy"):
        from_source(project, "flows.py:hello").deploy(
            "bad",
            settings=settings,
            client=client,
            work_pool="dock",
            job_variables={"image_pull_policy": "Sometimes"},
        )


def _image_deployment(
    settings: Settings, client: ConveyorClient, registry: Registry, project: Path, pool: str
) -> None:
    client.create_pool(pool, type="docker" if pool.startswith("d") else "kubernetes")
    image = DockerImage(f"{registry.host}/flows/pooled", tag="v1", base_image=base_of(registry))
    from_source(project, "flows.py:env").deploy(
        "pooled",
        settings=settings,
        client=client,
        work_pool=pool,
        image=image,
        job_variables={"env": {"GREETING": "${GREETING_TOKEN}", "PLAIN": "1"}, "labels": ["gpu"]},
    )


def test_process_preview_shows_only_what_the_process_worker_applies(
    tmp_path: Path, settings: Settings, client: ConveyorClient
) -> None:
    # Given a process pool whose own template writes keys a process worker does not read (an
    # image, a `name` variable) and a hard-coded stream_output, and a deployment in it with job
    # variables of its own
    template = {
        "job_configuration": {
            "command": "{{ command }}",
            "env": "{{ env }}",
            "stream_output": False,
            "name": "{{ name }}",
            "image": "python:3.12",
        },
        "variables": {
            "type": "object",
            "properties": {
                "command": {"type": ["string", "null"], "default": None},
                "env": {"type": "object", "default": {"FROM_POOL": "1"}},
                "name": {"type": ["string", "null"], "default": "job"},
                "stream_output": {"type": "boolean", "default": True},
            },
        },
    }
    file = tmp_path / "process.json"
    file.write_text(json.dumps(template))
    env = command_env()
    ok(conveyor("pool", "create", "proc", "--type", "process", "--base-job-template", str(file),
                env=env))  # fmt: skip
    from_source(write_project(tmp_path / "project"), "flows.py:hello").deploy(
        "pooled",
        settings=settings,
        client=client,
        work_pool="proc",
        job_variables={"env": {"OWN": "2"}, "working_dir": "sub"},
    )

    # When the pool previews a run of it
    previewed = conveyor("pool", "preview", "proc", "hello/pooled", env=env)

    # Then it prints the job variables the worker applies, as a run gets them (env merged, the
    # variable's stream_output), and nothing it ignores; the ignored keys are named on stderr
    assert previewed.returncode == 0, previewed.stderr
    shown = json.loads(previewed.stdout)
    assert shown == {
        "type": "process",
        "job_configuration": {
            "EXTRA_PIP_PACKAGES": None,
            "command": None,
            "env": {"FROM_POOL": "1", "OWN": "2"},
            "labels": [],
            "stream_output": True,
            "working_dir": "sub",
        },
    }
    applied = shown["job_configuration"]
    run = client.create_run("hello", "pooled")  # its job variables are what its worker reads
    assert {"env", "stream_output", "working_dir"} <= set(run.job_variables)
    assert {k: v for k, v in run.job_variables.items() if k in applied} == {
        k: v for k, v in applied.items() if k in run.job_variables
    }
    assert previewed.stderr.splitlines() == [
        "note: a process worker applies the job variables above and does not render pool "
        "proc's job_configuration: its image, name, stream_output do nothing as written there",
        "note: job variables a process worker does not read: name",
    ]
    # ...and the default process pool's preview says nothing more
    from_source(write_project(tmp_path / "plain"), "flows.py:hello").deploy(
        "plain", settings=settings, client=client
    )
    plain = conveyor("pool", "preview", "default", "hello/plain", env=env)
    assert (plain.returncode, plain.stderr) == (0, "")
    assert json.loads(plain.stdout)["job_configuration"]["env"] == {}


@pytest.mark.parametrize("pool_type", ["docker", "kubernetes"])
def test_container_preview_merges_the_pools_env_as_the_run_gets_it(
    tmp_path: Path, settings: Settings, client: ConveyorClient, pool_type: str
) -> None:
    # Given a container pool whose template gives every run an env variable, and a deployment
    # in it (the image only as the runtime) with an env variable of its own
    template = default_template(pool_type)
    template["variables"]["properties"]["env"]["default"] = {"FROM_POOL": "1"}
    client.create_pool("envpool", type=pool_type, base_job_template=template)
    from_source(write_project(tmp_path / "project"), "flows.py:hello").deploy(
        "merged",
        settings=settings,
        client=client,
        work_pool="envpool",
        image="reg.example/flows/runtime:1",
        build=False,
        job_variables={"env": {"OWN": "2"}},
    )

    # When the pool previews a run of it
    out = ok(conveyor("pool", "preview", "envpool", "hello/merged", env=command_env()))

    # Then the container gets both variables, as a run's job variables have them (env merged
    # key by key), not only the deployment's
    assert client.create_run("hello", "merged").job_variables["env"] == {
        "FROM_POOL": "1",
        "OWN": "2",
    }
    submitted = json.loads(out)
    if pool_type == "docker":
        env = submitted["environment"]
    else:
        [container] = submitted["spec"]["template"]["spec"]["containers"]
        env = {item["name"]: item.get("value") for item in container["env"]}
    assert (env["FROM_POOL"], env["OWN"]) == ("1", "2")


def test_docker_preview_prints_the_container_request_with_secret_names_only(
    tmp_path: Path, settings: Settings, client: ConveyorClient, registry: Registry
) -> None:
    client.set_secret("GREETING_TOKEN", SECRET_VALUE)
    _image_deployment(settings, client, registry, write_project(tmp_path / "project"), "dockerpool")
    out = ok(conveyor("pool", "preview", "dockerpool", "env/pooled", env=command_env()))
    request = json.loads(out)
    deployment = client.get_deployment("env", "pooled")
    assert request["image"] == deployment.source["image"]  # the pinned image
    assert request["command"] == ["python", "-m", "conveyor.worker.container"]
    env = request["environment"]
    assert json.loads(env["CONVEYOR_RUN_SOURCE"]) == deployment.source
    assert env["CONVEYOR_RUN_VERSION"] == deployment.version
    assert json.loads(env["CONVEYOR_SECRET_ENV"]) == {"GREETING": "${GREETING_TOKEN}"}
    assert env["PLAIN"] == "1"
    assert env["CONVEYOR_API_KEY"] == "****"
    assert request["labels"]["conveyor.labels"] == "gpu"
    assert SECRET_VALUE not in out


def test_kubernetes_preview_is_a_job_the_client_models_accept(
    tmp_path: Path, settings: Settings, client: ConveyorClient, registry: Registry
) -> None:
    _image_deployment(settings, client, registry, write_project(tmp_path / "project"), "k8s")
    manifest = json.loads(ok(conveyor("pool", "preview", "k8s", "env/pooled", env=command_env())))
    job = validate_kubernetes_job(manifest)
    container = job.spec.template.spec.containers[0]
    assert container.image == client.get_deployment("env", "pooled").source["image"]
    assert container.image_pull_policy == "IfNotPresent"
    names = {e.name: e for e in container.env}
    assert names["CONVEYOR_API_KEY"].value_from.secret_key_ref.name == "conveyor-api-key"
    assert names["CONVEYOR_API_KEY"].value is None
    assert json.loads(names["CONVEYOR_SECRET_ENV"].value) == {"GREETING": "${GREETING_TOKEN}"}
    assert job.spec.backoff_limit == 0
    assert job.spec.template.spec.restart_policy == "Never"
    # a field the models do not know is refused, not silently dropped
    manifest["spec"]["template"]["spec"]["containerz"] = []
    with pytest.raises(ConfigError, match="do not know"):
        validate_kubernetes_job(manifest)


@pytest.mark.parametrize("pool_type", ["docker", "kubernetes"])
def test_an_env_job_variable_the_worker_sets_is_refused_not_leaked(pool_type: str) -> None:
    with pytest.raises(ConfigError) as caught:
        submission(
            pool_type,
            default_template(pool_type),
            run_id="<run-id>",
            source={"kind": "local"},
            version="v1",
            entrypoint="flows.py:hello",
            flow_name="hello",
            deployment_name="d",
            job_variables={"env": {"CONVEYOR_API_KEY": SECRET_VALUE, "PLAIN": "1"}},
            api_url="http://127.0.0.1:4200",
        )
    message = str(caught.value)
    assert "job variable env.CONVEYOR_API_KEY is set by the worker" in message
    assert SECRET_VALUE not in message
    assert "\n" not in message


def test_the_run_inside_a_container_fetches_verifies_and_resolves_secrets_by_name(
    tmp_path: Path, settings: Settings, client: ConveyorClient, registry: Registry
) -> None:
    # Given an image deployment on a docker pool, a secret, and a run
    client.set_secret("GREETING_TOKEN", SECRET_VALUE)
    _image_deployment(settings, client, registry, write_project(tmp_path / "project"), "dockerpool")
    deployment = client.get_deployment("env", "pooled")
    run = client.create_run("env", "pooled", parameters={"name": "GREETING"})
    pool = {p.name: p for p in client.list_pools()}["dockerpool"]
    request = submission(
        "docker",
        pool.base_job_template,
        run_id=run.id,
        source=deployment.source,
        version=deployment.version,
        entrypoint=deployment.entrypoint,
        flow_name="env",
        deployment_name="pooled",
        job_variables=deployment.job_variables,
        api_url=None,
    )
    # When its command runs with exactly that environment (no engine here: as a process,
    # with its own empty code cache, against the same server)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update({k: v for k, v in request["environment"].items() if k != "CONVEYOR_API_KEY"})
    env.update(
        {
            "CONVEYOR_HOME": str(settings.home),
            "CONVEYOR_CACHE_DIR": str(tmp_path / "container-cache"),
        }
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    done = subprocess.run(
        [sys.executable, *request["command"][1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Then it fetched the code layer into its own cache, ran the flow with the secret resolved
    # inside, and reported the outcome on its last line
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith(OUTCOME_PREFIX)
    outcome = json.loads(last[len(OUTCOME_PREFIX) :])
    assert outcome["state"] == RunState.COMPLETED.value, outcome
    assert outcome["result"] == SECRET_VALUE
    assert list((tmp_path / "container-cache").glob(f"*/{deployment.version}"))
    assert SECRET_VALUE not in json.dumps(request)


def _engine() -> bool:
    from conveyor.docker._engine import engine_reachable

    return engine_reachable(os.environ)


@pytest.mark.engine
def test_docker_executor_runs_a_container_with_an_engine(
    settings: Settings, tmp_path: Path
) -> None:
    if not _engine():
        pytest.skip(
            "no container engine reachable (DOCKER_HOST or /var/run/docker.sock): "
            "this machine cannot run containers"
        )
    from conveyor.worker.executors import Interrupt, RunSpec
    from conveyor.worker.executors.containers import DockerExecutor
    from conveyor.worker.logs import RunLogs
    from worker.conftest import LogSink

    # Given a docker pool whose command prints an outcome (any image with Python will do)
    executor = DockerExecutor(settings=settings)
    image = os.environ.get("CONVEYOR_TEST_PYTHON_IMAGE", "python:3.11-slim")
    line = OUTCOME_PREFIX + json.dumps({"state": "completed", "result": 42})
    spec = RunSpec(
        run_id="engine-run",
        entrypoint="flows.py:hello",
        source={"kind": "oci", "image": image},
        version="sha256:" + "0" * 64,
        job_variables={"image": image, "command": ["python", "-c", f"print({line!r})"]},
    )
    sink = LogSink()
    logs = RunLogs(sink, "engine-run").start()
    # When the executor runs it
    with executor.run(spec, logs=logs, interrupt=Interrupt(), started=lambda _t: True) as outcome:
        logs.close()
        # Then the container ran and its outcome line became the run's outcome
        assert outcome.state is RunState.COMPLETED
        assert outcome.result == 42


class _FakeContainer:
    """A container of `_FakeDocker`: exited at once, its logs an outcome line and one more."""

    id = "c0ffee" + "0" * 58
    status = "exited"
    attrs = {"State": {"ExitCode": 0}}

    def __init__(self) -> None:
        self.removed: list[bool] = []

    def reload(self) -> None:
        pass

    def stop(self, timeout: int) -> None:
        pass

    def logs(self, stream: bool) -> bytes:
        outcome = OUTCOME_PREFIX + json.dumps({"state": "completed", "result": 7})
        return f"hello from the container\n{outcome}\n".encode()

    def remove(self, force: bool) -> None:
        self.removed.append(force)


class _FakeDocker:
    """Stands in for ``docker.from_env()``'s client: the image is present, every
    ``containers.run`` is recorded."""

    def __init__(self) -> None:
        self.containers, self.images = self, self
        self.runs: list[dict[str, object]] = []
        self.container = _FakeContainer()

    def get(self, image: str) -> object:  # images.get: present, nothing is pulled
        return object()

    def run(self, **kwargs: object) -> _FakeContainer:  # containers.run
        self.runs.append(kwargs)
        return self.container

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("auto_remove", "kept"), [(None, False), (True, False), (False, True)])
def test_docker_auto_remove_false_keeps_the_container_and_names_it(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    auto_remove: bool | None,
    kept: bool,
) -> None:
    import logging

    from conveyor.worker.executors import Interrupt, RunSpec
    from conveyor.worker.executors.containers import DockerExecutor
    from conveyor.worker.logs import RunLogs
    from worker.conftest import LogSink

    # Given a docker pool's run (second attempt) with auto_remove as the job variables say,
    # and the Docker SDK's client replaced (no engine here)
    fake = _FakeDocker()
    monkeypatch.setattr("docker.from_env", lambda **_kw: fake)
    variables: dict[str, object] = {"image": "reg.example/flows:1"}
    if auto_remove is not None:
        variables["auto_remove"] = auto_remove
    spec = RunSpec(
        run_id="0123456789abcdef-run",
        entrypoint="flows.py:hello",
        source={"kind": "oci", "image": "reg.example/flows:1"},
        version="sha256:" + "0" * 64,
        attempt=2,
        job_variables=variables,
    )
    sink = LogSink()
    logs = RunLogs(sink, spec.run_id).start()
    # When the executor runs it
    executor = DockerExecutor(settings=settings)
    with caplog.at_level(logging.INFO, logger="conveyor.worker.executors.containers"):
        with executor.run(spec, logs=logs, interrupt=Interrupt(), started=lambda _t: True) as out:
            logs.close()
    # Then the run completed from the container's outcome line
    assert (out.state, out.result) == (RunState.COMPLETED, 7)
    [request] = fake.runs
    assert request["name"] == "conveyor-0123456789ab-2"  # a kept first attempt keeps its name
    assert "auto_remove" not in request  # the SDK's would remove it before its logs are read
    container = fake.container.id
    if kept:
        # ...and the container is kept, its id in the worker's log and in the run's logs
        assert fake.container.removed == []
        assert f"container={container}" in caplog.text
        assert f"container {container} kept (auto_remove: false)" in sink.text()
    else:
        assert fake.container.removed == [True]
        assert container not in caplog.text + sink.text()
    assert "hello from the container" in sink.messages("container")


@pytest.mark.engine
def test_docker_executor_keeps_the_container_with_auto_remove_false_with_an_engine(
    settings: Settings,
) -> None:
    if not _engine():
        pytest.skip(
            "no container engine reachable (DOCKER_HOST or /var/run/docker.sock): "
            "this machine cannot run containers"
        )
    import docker

    from conveyor.worker.executors import Interrupt, RunSpec
    from conveyor.worker.executors.containers import DockerExecutor
    from conveyor.worker.logs import RunLogs
    from worker.conftest import LogSink

    image = os.environ.get("CONVEYOR_TEST_PYTHON_IMAGE", "python:3.11-slim")
    line = OUTCOME_PREFIX + json.dumps({"state": "completed", "result": 1})
    spec = RunSpec(
        run_id="engine-kept",
        entrypoint="flows.py:hello",
        source={"kind": "oci", "image": image},
        version="sha256:" + "0" * 64,
        job_variables={
            "image": image,
            "command": ["python", "-c", f"print({line!r})"],
            "auto_remove": False,
        },
    )
    logs = RunLogs(LogSink(), spec.run_id).start()
    executor = DockerExecutor(settings=settings)
    with executor.run(spec, logs=logs, interrupt=Interrupt(), started=lambda _t: True) as outcome:
        logs.close()
    assert outcome.state is RunState.COMPLETED
    engine = docker.from_env()
    try:
        kept = engine.containers.get("conveyor-engine-kept")
        assert kept.status == "exited"
        kept.remove(force=True)
    finally:
        engine.close()


@pytest.mark.engine
def test_engine_build_push_and_fetch(tmp_path: Path, registry: Registry) -> None:
    if not _engine():
        pytest.skip(
            "no container engine reachable (DOCKER_HOST or /var/run/docker.sock): "
            "this machine cannot build with Docker"
        )
    from conveyor.docker import ImageContext
    from conveyor.sources.oci import ImageSource
    from sources.contract import snapshot, write_known_tree

    tree = write_known_tree(tmp_path / "tree")
    image = DockerImage(f"{registry.host}/flows/engine", tag="v1", base_image=base_of(registry))
    ctx = ImageContext(layout_dir=tmp_path / "images", environ=dict(os.environ), backend="engine")
    built = image.build(tree, ctx)
    assert built.backend == "engine"
    pushed = image.push(built, ctx)
    dest = tmp_path / "dest"
    dest.mkdir()
    source = ImageSource(pushed.image)
    source.fetch(pushed.digest or "", dest)
    source.verify(pushed.digest or "", dest)
    assert snapshot(dest, skip=(".conveyor",)) == snapshot(tree)


def test_a_worker_on_a_container_pool_takes_the_pool_template(
    tmp_path: Path, settings: Settings, client: ConveyorClient
) -> None:
    from conveyor.worker.executors.containers import DockerExecutor, KubernetesExecutor
    from conveyor.worker.loop import Worker
    from conveyor.worker.options import WorkerOptions

    template = default_template("docker")
    template["variables"]["properties"]["image"]["default"] = "reg.example/own:1"
    client.create_pool("own-docker", type="docker", base_job_template=template)
    client.create_pool("kube", type="kubernetes")
    docker_worker = Worker.from_settings(settings, client, WorkerOptions(pool="own-docker"))
    kube_worker = Worker.from_settings(settings, client, WorkerOptions(pool="kube"))
    docker_executor = docker_worker.handler.executor
    assert isinstance(docker_executor, DockerExecutor)
    assert docker_executor.template == template
    assert isinstance(kube_worker.handler.executor, KubernetesExecutor)

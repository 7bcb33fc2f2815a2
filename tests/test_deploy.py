"""Deploying: version pinning, the preflight child, the bundle store, and nothing half-written."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import flow, load_flow
from conveyor._preflight import Preflight
from conveyor.cli.deploy import parse_params, split_deployment
from conveyor.client import ConveyorClient
from conveyor.connect import connect
from conveyor.deploy import DeployableFlow, entrypoint_for, from_source
from conveyor.errors import ConfigError, FlowLoadError, ObjectNotFound
from conveyor.settings import Settings
from conveyor.sources.local import LocalSource
from worker.flows_project import write_project


@pytest.fixture
def client(settings: Settings) -> Iterator[ConveyorClient]:
    with connect(settings) as api:
        yield api


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "project")


def inject(project: Path, code: str) -> None:
    """Add ``code`` to flows.py right after its ``from __future__`` line."""
    text = (project / "flows.py").read_text()
    head, sep, tail = text.partition("from __future__ import annotations\n")
    (project / "flows.py").write_text(head + sep + code + tail)


def stored_bundles(settings: Settings) -> dict[str, int]:
    if not settings.storage_dir.exists():
        return {}
    return {p.name: p.stat().st_mtime_ns for p in settings.storage_dir.iterdir()}


def test_local_folder_is_pinned_and_pushed_to_the_store(settings, client, project) -> None:
    deployment = from_source(project, "flows.py:hello").deploy(
        "nightly", settings=settings, client=client, parameters={"name": "Ada"}, tags=["t"]
    )

    assert deployment.flow_name == "hello"
    assert deployment.source == {"kind": "store", "url": str(settings.storage_dir)}
    assert deployment.version == LocalSource(project).resolve()
    assert deployment.entrypoint == "flows.py:hello"
    assert deployment.parameters == {"name": "Ada"}
    assert deployment.parameter_schema["properties"]["name"]["type"] == "string"
    assert deployment.tags == ["t"]
    assert stored_bundles(settings).keys() == {f"{deployment.version}.tar.zst"}


def test_redeploying_unchanged_code_writes_nothing_new(settings, client, project) -> None:
    first = from_source(project, "flows.py:hello").deploy("n", settings=settings, client=client)
    before = stored_bundles(settings)

    again = from_source(project, "flows.py:hello").deploy("n", settings=settings, client=client)

    assert again.revision == first.revision
    assert again.version == first.version
    assert stored_bundles(settings) == before


@pytest.mark.parametrize(
    ("own", "made"),
    [
        ({"CONVEYOR_BUNDLE_STORE": "./store"}, ["store"]),  # relative: to the project root
        ({"CONVEYOR_HOME": "conveyor-home"}, ["conveyor-home"]),  # its store, cache, database
        (
            {"CONVEYOR_CACHE_DIR": "cache", "CONVEYOR_BUNDLE_STORE": "file://{project}/bundles"},
            ["bundles", "cache"],
        ),
    ],
    ids=["store", "home", "cache-and-file-url"],
)
def test_conveyors_own_folders_inside_the_project_are_not_snapshotted(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys, own: dict[str, str], made: list[str]
) -> None:
    from conveyor.bundles import compute_version
    from conveyor.cli import main

    # Given Conveyor's bundle store, home or cache set to folders inside the project folder
    expected = compute_version(project)
    monkeypatch.chdir(project)
    for key, value in own.items():
        monkeypatch.setenv(key, value.format(project=project))

    # When the project is deployed, run from there, then deployed again
    versions = []
    for _ in range(2):
        assert main(["deploy", "flows.py:hello", "--name", "here"]) == 0, capsys.readouterr()
        with connect(Settings.from_env()) as api:
            deployment = api.get_deployment("hello", "here")
        versions.append((deployment.version, deployment.revision))

    # Then both deploys are the project's own version: the store, home or cache the first one
    # filled is in neither bundle
    assert all(any((project / name).iterdir()) for name in made)
    assert versions == [(expected, 1), (expected, 1)]


def test_changed_code_is_a_new_version_and_revision(settings, client, project) -> None:
    first = from_source(project, "flows.py:hello").deploy("n", settings=settings, client=client)
    (project / "helpers.py").write_text("def shout(text):\n    return text\n")

    second = from_source(project, "flows.py:hello").deploy("n", settings=settings, client=client)

    assert second.version != first.version
    assert second.revision == first.revision + 1
    assert len(stored_bundles(settings)) == 2
    versions = client.list_deployment_versions("hello", "n")
    assert {v.version for v in versions} == {first.version, second.version}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "import nope_not_installed\n",
            "no module named 'nope_not_installed' (flows.py, line 2)",
        ),
        ("def broken(:\n", "syntax error in flows.py, line 2"),
        ("raise RuntimeError('at import')\n", "RuntimeError: at import"),
    ],
)
def test_flow_that_does_not_load_fails_the_deploy_and_writes_nothing(
    settings, client, project, source: str, message: str
) -> None:
    inject(project, source)

    with pytest.raises(FlowLoadError) as caught:
        from_source(project, "flows.py:hello").deploy("n", settings=settings, client=client)

    assert message in caught.value.message
    assert "\n" not in caught.value.message
    assert stored_bundles(settings) == {}
    with pytest.raises(ObjectNotFound):
        client.get_deployment("hello", "n")


def test_unknown_function_names_what_the_file_defines(settings, client, project) -> None:
    with pytest.raises(FlowLoadError) as caught:
        from_source(project, "flows.py:helo").deploy("n", settings=settings, client=client)

    assert "helo" in caught.value.message
    assert caught.value.hint is not None
    assert "hello" in caught.value.hint


def test_unknown_default_parameter_is_refused_before_anything_is_written(
    settings, client, project
) -> None:
    with pytest.raises(ConfigError, match="unknown parameter 'nmae'"):
        from_source(project, "flows.py:hello").deploy(
            "n", settings=settings, client=client, parameters={"nmae": "x"}
        )
    assert stored_bundles(settings) == {}


def test_preflight_writes_no_bytecode_into_the_folder(settings, client, project) -> None:
    from_source(project, "flows.py:hello").deploy("n", settings=settings, client=client)

    assert not list(project.rglob("__pycache__"))
    assert "helpers" not in sys.modules  # the user's code was imported in the child only


def test_what_the_module_prints_at_import_does_not_confuse_the_preflight(project) -> None:
    inject(project, 'print(\'{"not": "the answer"}\')\n')

    info = Preflight(project, "flows.py:hello").start().result()

    assert info.flow_name == "hello"


def test_entrypoint_inside_the_folder_may_be_absolute(project) -> None:
    deployable = from_source(project, f"{project / 'flows.py'}:hello")

    assert deployable.entrypoint == "flows.py:hello"
    assert deployable.source.to_spec() == LocalSource(project).to_spec()
    with pytest.raises(ConfigError, match="not inside the source folder"):
        from_source(project, "/etc/flows.py:hello")


def test_follow_ref_makes_no_sense_for_a_folder(settings, client, project) -> None:
    with pytest.raises(ConfigError, match="follow_ref"):
        from_source(project, "flows.py:hello").deploy(
            "n", settings=settings, client=client, follow_ref=True
        )


def test_source_options_that_do_not_apply_are_a_clear_error(project) -> None:
    with pytest.raises(ConfigError, match="branch"):
        from_source(project, "flows.py:hello", branch="main")


def test_a_loaded_flow_deploys_from_the_folder_it_came_from(
    settings, client, project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    hello = load_flow("flows.py:hello", root=project)

    assert entrypoint_for(hello) == (project.resolve(), "flows.py:hello")
    deployment = hello.deploy("from-flow", settings=settings, client=client)
    assert (deployment.flow_name, deployment.entrypoint) == ("hello", "flows.py:hello")


def test_flow_decorator_from_source_is_the_same_as_deploy_from_source(project) -> None:
    deployable = flow.from_source(project, "flows.py:hello")

    assert isinstance(deployable, DeployableFlow)
    assert deployable.source.to_spec() == {"kind": "local", "path": str(project)}


def test_a_flow_defined_in_a_function_cannot_be_located() -> None:
    @flow
    def local_flow() -> None:
        return None

    with pytest.raises(ConfigError, match="cannot tell where"):
        entrypoint_for(local_flow)


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (["n=3"], {"n": 3}),
        (["name=Ada"], {"name": "Ada"}),
        (['tags=["a", "b"]'], {"tags": ["a", "b"]}),
        (["flag=true", "none=null"], {"flag": True, "none": None}),
        (["expr=a=b"], {"expr": "a=b"}),
        (["empty="], {"empty": ""}),
        (['quoted="3"'], {"quoted": "3"}),
    ],
)
def test_parse_params(items: list[str], expected: dict[str, object]) -> None:
    assert parse_params(items) == expected


@pytest.mark.parametrize("bad", ["novalue", "=3"])
def test_parse_params_refuses_what_is_not_key_value(bad: str) -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_params([bad])


@pytest.mark.parametrize("bad", ["hello", "hello/", "/x", "a/b/c"])
def test_deployment_names_are_flow_slash_name(bad: str) -> None:
    with pytest.raises(ConfigError, match="is not a deployment") as caught:
        split_deployment(bad)
    assert "FLOW/DEPLOYMENT" in (caught.value.hint or "")


def test_preflight_runs_in_a_separate_interpreter(project) -> None:
    inject(project, "import os\nopen('pid.txt', 'w').write(str(os.getpid()))\n")

    Preflight(project, "flows.py:hello").start().result()

    assert int((project / "pid.txt").read_text()) != os.getpid()


def test_unknown_work_pool_is_refused_before_anything_is_written(settings, client, project) -> None:
    with pytest.raises(ConfigError, match="work pool 'nope' does not exist") as caught:
        from_source(project, "flows.py:hello").deploy(
            "n", settings=settings, client=client, work_pool="nope"
        )
    assert "conveyor pool create nope" in (caught.value.hint or "")
    assert stored_bundles(settings) == {}


def test_a_mistyped_default_parameter_is_refused_at_deploy(settings, client, tmp_path) -> None:
    # Given a flow taking a float, and a default that is not one (as `--param f=abc` gives)
    project = tmp_path / "typed"
    project.mkdir()
    (project / "flows.py").write_text(
        "from conveyor import flow\n\n@flow\ndef scale(f: float = 1.0) -> float:\n    return f\n"
    )
    # When it is deployed, then the deploy is refused naming the parameter, and nothing is stored
    with pytest.raises(ConfigError, match="parameter 'f'") as caught:
        from_source(project, "flows.py:scale").deploy(
            "typed", settings=settings, client=client, parameters={"f": "abc"}
        )
    assert "abc" in str(caught.value)
    assert client.list_deployments() == []
    assert stored_bundles(settings) == {}


def test_a_default_that_is_not_a_date_is_refused_at_deploy(settings, client, tmp_path) -> None:
    # Given a flow taking a datetime and a date, and defaults that are not (`--param when=...`)
    project = tmp_path / "dated"
    project.mkdir()
    (project / "flows.py").write_text(
        "from datetime import date, datetime\n"
        "from conveyor import flow\n\n"
        "@flow\n"
        "def types(when: datetime, day: date = date(2024, 1, 1)) -> None: ...\n"
    )
    deployable = from_source(project, "flows.py:types")
    for parameters, message in [
        ({"when": "notadate"}, "parameter 'when': 'notadate' is not a valid datetime or date"),
        ({"day": "yesterday"}, "parameter 'day': 'yesterday' is not a valid date or datetime"),
    ]:
        # When it is deployed, then the deploy is refused naming the value, and nothing is stored
        with pytest.raises(ConfigError) as caught:
            deployable.deploy("t2", settings=settings, client=client, parameters=parameters)
        assert str(caught.value).startswith(message)
        assert client.list_deployments() == []
        assert stored_bundles(settings) == {}
    # ...while ISO 8601 defaults are stored as given
    deployment = deployable.deploy(
        "t2", settings=settings, client=client, parameters={"when": "2024-01-31T09:30:00Z"}
    )
    assert deployment.parameters == {"when": "2024-01-31T09:30:00Z"}


METHODS = """
from conveyor import flow

class Pipeline:
    @flow
    def method_flow(self, x: int = 1) -> int:
        return x

    @staticmethod
    @flow
    def static_flow(x: int = 1) -> int:
        return x

    @classmethod
    @flow
    def class_flow(cls, x: int = 1) -> str:
        return f"{cls.__name__}:{x}"
"""


def test_a_flow_that_is_an_instance_method_is_refused_at_deploy(settings, client, tmp_path) -> None:
    project = tmp_path / "methods"
    project.mkdir()
    (project / "flows.py").write_text(METHODS)

    with pytest.raises(FlowLoadError) as caught:
        from_source(project, "flows.py:Pipeline.method_flow").deploy(
            "m", settings=settings, client=client
        )

    assert caught.value.message == (
        "flow flows.py:Pipeline.method_flow could not be loaded: flows.py:Pipeline.method_flow "
        "is an instance method: a flow must be a function, a staticmethod or a classmethod"
    )
    assert caught.value.hint == (
        "put @staticmethod or @classmethod above @flow, or move the flow out of the class "
        "(a run has no instance to call it on)"
    )
    assert client.list_deployments() == []
    assert stored_bundles(settings) == {}


def test_static_and_class_method_flows_deploy(settings, client, tmp_path) -> None:
    project = tmp_path / "methods"
    project.mkdir()
    (project / "flows.py").write_text(METHODS)

    static = from_source(project, "flows.py:Pipeline.static_flow").deploy(
        "s", settings=settings, client=client
    )
    classy = from_source(project, "flows.py:Pipeline.class_flow").deploy(
        "c", settings=settings, client=client
    )

    assert (static.flow_name, classy.flow_name) == ("static-flow", "class-flow")
    assert list(static.parameter_schema["properties"]) == ["x"]
    assert list(classy.parameter_schema["properties"]) == ["x"]


def test_a_tree_with_a_path_no_worker_can_check_out_is_refused_at_deploy(
    settings, client, project
) -> None:
    # Given a project with a path longer than a checkout can hold
    deep = project
    for _ in range(30):  # 3,000 bytes inside the tree: fine here, past what a checkout allows
        deep = deep / ("d" * 100)
    try:
        deep.mkdir(parents=True)
    except OSError:
        pytest.skip("this filesystem cannot hold the long path")
    (deep / "x.txt").write_text("x")
    # When it is deployed, then a one-line error with a shortened path, and nothing stored
    with pytest.raises(
        ConfigError, match="bytes long; workers can check out paths of at most"
    ) as caught:
        from_source(project, "flows.py:hello").deploy("long", settings=settings, client=client)
    assert len(str(caught.value)) < 300
    assert "…" in str(caught.value)
    assert client.list_deployments() == []


def test_a_deploy_without_job_variables_loads_no_schema_validator(
    settings: Settings, client: ConveyorClient, project: Path
) -> None:
    """The pool's template, defaults included, was checked when the pool was made: a deploy
    that sets no job variables has nothing left to validate (and no jsonschema to import)."""
    script = (
        "import sys\n"
        "from conveyor.connect import connect\n"
        "from conveyor.deploy import from_source\n"
        "from conveyor.settings import Settings\n"
        "settings = Settings.from_env()\n"
        "with connect(settings) as client:\n"
        "    from_source(sys.argv[1], 'flows.py:hello').deploy(\n"
        "        'plain', settings=settings, client=client)\n"
        "print('jsonschema' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(project)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "False"
    assert {d.name for d in client.list_deployments()} == {"plain"}
    with pytest.raises(ConfigError, match="job variable stream_output"):
        from_source(project, "flows.py:hello").deploy(
            "typed", settings=settings, client=client, job_variables={"stream_output": "loud"}
        )


def test_prefects_deploy_spellings_are_taken_or_refused_in_one_line(settings, client, project):
    # Given a second pool, and a flow as Prefect users write its deploy
    client.create_pool("gpu")
    flow_ = flow.from_source(source=project, entrypoint="flows.py:hello")

    # When it is deployed with Prefect's work_pool_name and work_queue_name (and empty
    # scheduling options)
    notes: list[str] = []
    deployment = flow_.deploy(
        name="pf",
        work_pool_name="gpu",
        work_queue_name="high",
        schedules=[],
        cron=None,
        settings=settings,
        client=client,
        notify=notes.append,
    )

    # Then that pool is the deployment's, a note says the queue is not kept; scheduling is
    # refused in one line, conflicting pools too, and nothing more was stored; any other unknown
    # keyword stays Python's TypeError
    assert deployment.work_pool == "gpu"
    assert notes == [
        "work_queue_name 'high' is ignored (Conveyor has no work queues): the runs go to work "
        "pool 'gpu'; give them a pool of their own to keep them apart"
    ]
    refused = [
        ({"cron": "0 * * * *"}, "cron is not supported by Conveyor"),
        ({"interval": 3600}, "interval is not supported by Conveyor"),
        ({"work_pool": "default2", "work_pool_name": "gpu"}, "disagree"),
    ]
    for options, message in refused:
        with pytest.raises(ConfigError, match=message) as caught:
            flow_.deploy("pf2", settings=settings, client=client, **options)
        assert "\n" not in str(caught.value)
    with pytest.raises(TypeError, match="unexpected keyword argument 'work_pol'"):
        flow_.deploy("pf2", settings=settings, client=client, work_pol="gpu")
    assert [d.name for d in client.list_deployments()] == ["pf"]


def test_a_job_variable_the_pool_does_not_declare_is_named_in_a_note(
    settings, client, project
) -> None:
    # Given job variables as Prefect users write them for a process pool, one misspelt
    notes: list[str] = []

    # When the flow is deployed
    deployment = from_source(project, "flows.py:hello").deploy(
        "jv",
        settings=settings,
        client=client,
        job_variables={"working_directory": "sub", "env": {"MODE": "x"}},
        notify=notes.append,
    )

    # Then it is stored as given, and the note says the runs ignore it and what was meant
    assert deployment.job_variables["working_directory"] == "sub"
    assert notes == [
        "job variable working_directory is not a variable of work pool 'default': its runs "
        "ignore it (did you mean working_dir?)"
    ]

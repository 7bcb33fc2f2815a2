"""``conveyor.yaml`` complete (issue 9, item 2) and ``prefect.yaml`` read through one mapping
(item 4): sections, outputs, templates left for the worker, per-deployment overrides, the JSON
schema, and what cannot be mapped named in one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from conveyor._recipes import RECIPES, render
from conveyor.errors import ConfigError
from conveyor.project import _Deployment, _File, deploy_options, load_project, schema_path
from conveyor.steps import STEPS, StepSpec, check_steps, run_deploy_steps

PY = sys.executable

PROJECT = f"""
build:
  - run_shell_script:
      id: stamp
      script: {PY} -c "print('build-7')"
push:
  - run_shell_script:
      id: upload
      script: {PY} -c "import sys; print('uploaded ' + sys.argv[1])" "{{{{ stamp.stdout }}}}"
pull:
  - git_clone:
      id: clone
      repository: https://git.example.com/org/flows.git
      branch: "{{{{ stamp.stdout }}}}"
      access_token: "${{GIT_TOKEN}}"
  - set_working_directory:
      directory: "{{{{ clone.directory }}}}/app"
  - run_shell_script:
      script: echo {{{{ $HOME }}}} {{{{ upload.stdout }}}}
deployments:
  - name: nightly
    entrypoint: app/flows.py:main
    tags: ["{{{{ stamp.stdout }}}}", etl]
    parameters: {{release: "{{{{ stamp.stdout }}}}"}}
    work_pool:
      name: default
      job_variables: {{env: {{RELEASE: "{{{{ upload.stdout }}}}", KEY: "${{API_KEY}}"}}}}
  - name: hourly
    entrypoint: app/flows.py:main
    build: []
    push: []
    pull:
      - set_working_directory: {{directory: app}}
"""


def outputs_of(project_dir: Path) -> tuple[Any, dict[str, Any]]:
    project = load_project(project_dir)
    entry = project.deployment("nightly")
    common: dict[str, Any] = {"folder": project_dir, "secrets": None, "environ": {"PATH": ""}}
    found = run_deploy_steps(project.build_steps(entry), section="build", **common)
    found = run_deploy_steps(project.push_steps(entry), section="push", outputs=found, **common)
    return project, found


def test_build_and_push_outputs_fill_the_deployment_and_leave_the_workers_templates(
    tmp_path: Path,
) -> None:
    (tmp_path / "conveyor.yaml").write_text(PROJECT)
    project, outputs = outputs_of(tmp_path)
    assert outputs["stamp"]["stdout"] == "build-7"
    assert outputs["upload"]["stdout"] == "uploaded build-7"

    entry = project.deployment("nightly")
    options = deploy_options(
        project,
        entry,
        parameters={},
        work_pool=None,
        tags=[],
        follow_ref=False,
        description=None,
        outputs=outputs,
    )
    clone, cd, script = options["pull_steps"]
    # deploy-time outputs are filled in ...
    assert clone["git_clone"]["branch"] == "build-7"
    assert options["tags"] == ["build-7", "etl"]
    assert options["parameters"] == {"release": "build-7"}
    assert options["job_variables"]["env"]["RELEASE"] == "uploaded build-7"
    assert script["run_shell_script"]["script"] == "echo {{ $HOME }} uploaded build-7"
    # ... while secrets, the environment and the pull steps' own outputs wait for the worker
    assert clone["git_clone"]["access_token"] == "${GIT_TOKEN}"
    assert cd["set_working_directory"]["directory"] == "{{ clone.directory }}/app"
    assert options["job_variables"]["env"]["KEY"] == "${API_KEY}"
    spec = project.source(entry, outputs=outputs).to_spec()
    assert (spec["kind"], spec["branch"]) == ("git", "build-7")


def test_a_deployment_replaces_the_files_sections_with_its_own(tmp_path: Path) -> None:
    (tmp_path / "conveyor.yaml").write_text(PROJECT)
    project = load_project(tmp_path)
    hourly = project.deployment("hourly")
    assert project.build_steps(hourly) == []
    assert project.push_steps(hourly) == []
    assert project.pull_steps(hourly) == [{"set_working_directory": {"directory": "app"}}]
    assert len(project.build_steps(project.deployment("nightly"))) == 1


def test_a_step_refused_in_a_section_is_named_at_deploy() -> None:
    with pytest.raises(ConfigError) as caught:
        check_steps([{"pip_install_requirements": {}}], section="build")
    assert str(caught.value) == "step pip_install_requirements cannot run in the build section"
    with pytest.raises(ConfigError, match="cannot run in the push section"):
        check_steps([{"git_clone": {"repository": "https://x/y.git"}}], section="push")


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(schema_path().read_text())
    Draft202012Validator.check_schema(loaded)
    return loaded


def test_the_schema_follows_the_file_model_and_the_built_in_steps() -> None:
    found = schema()
    fields = {f.alias or name for name, f in _File.model_fields.items()}
    assert set(found["properties"]) == fields
    assert set(found["$defs"]["deployment"]["properties"]) == set(_Deployment.model_fields)
    steps = found["$defs"]["step"]["properties"]
    import inspect

    for name in (
        "git_clone",
        "set_working_directory",
        "run_shell_script",
        "pip_install_requirements",
    ):
        spec = STEPS.get(name)
        assert isinstance(spec, StepSpec)
        parameters = set(inspect.signature(spec.function()).parameters) - {"ctx", "arguments"}
        if name == "git_clone":
            from conveyor.steps.builtin import git_clone_source

            parameters = set(inspect.signature(git_clone_source).parameters)
        assert parameters <= set(steps[name]["properties"]), name


@pytest.mark.parametrize("recipe", [r for r in RECIPES if r != "git"])
def test_every_recipe_is_valid_against_the_schema(tmp_path: Path, recipe: str) -> None:
    (tmp_path / "flows.py").write_text(
        "from conveyor import flow\n\n@flow\ndef main():\n    pass\n"
    )
    text = render(recipe, tmp_path)
    errors = list(Draft202012Validator(schema()).iter_errors(yaml.safe_load(text)))
    assert errors == []
    assert "entrypoint: flows.py:main" in text


def test_the_schema_rejects_what_the_loader_rejects(tmp_path: Path) -> None:
    validator = Draft202012Validator(schema())
    for bad in (
        {"pulll": []},
        {"pull": [{"git_clone": {"repository": "x"}, "set_working_directory": {}}]},
        {"deployments": [{"name": "x"}]},
        {"pull": [{"set_working_directory": {"directory": "a", "bogus": 1}}]},
    ):
        assert list(validator.iter_errors(bad)), bad
        (tmp_path / "conveyor.yaml").write_text(yaml.safe_dump(bad))
        with pytest.raises(ConfigError):
            check_steps(load_project(tmp_path).pull)


PREFECT = """
name: flows
prefect-version: 3.4.0
definitions:
  work_pools: &pool
    name: default
    job_variables: {env: {EXTRA_PIP_PACKAGES: "rich"}}
build: null
push: null
pull:
  - prefect.deployments.steps.set_working_directory:
      directory: FOLDER
  - prefect.deployments.steps.git_clone:
      id: clone
      repository: https://github.com/org/flows.git
      branch: main
      access_token: "{{ prefect.blocks.secret.deployment-nightly-repo-token }}"
  - prefect.deployments.steps.pip_install_requirements:
      directory: "{{ clone.directory }}"
      requirements_file: requirements.txt
      requires: prefect>=3
deployments:
  - name: nightly
    version: null
    tags: []
    description: null
    schedule: {}
    flow_name: null
    entrypoint: flows.py:main
    parameters: {}
    work_pool: *pool
    schedules: []
    concurrency_limit: null
    enforce_parameter_schema: true
"""


def write_prefect(tmp_path: Path, text: str = PREFECT) -> Path:
    file = tmp_path / "prefect.yaml"
    file.write_text(text.replace("FOLDER", str(tmp_path)))
    return file


def test_a_prefect_yaml_maps_to_conveyor_steps(tmp_path: Path) -> None:
    project = load_project(write_prefect(tmp_path))
    (entry,) = project.deployments
    assert [next(iter(s)) for s in project.pull] == ["git_clone", "pip_install_requirements"]
    assert project.pull[0]["git_clone"]["access_token"] == (
        "{{ prefect.blocks.secret.deployment-nightly-repo-token }}"
    )
    assert "requires" not in project.pull[1]["pip_install_requirements"]
    assert any("requires 'prefect>=3' is not needed" in n for n in project.notes)
    assert any("set_working_directory to the project folder dropped" in n for n in project.notes)
    assert entry.job_variables == {"env": {"EXTRA_PIP_PACKAGES": "rich"}}
    check_steps(project.pull_steps(entry))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("prefect.deployments.steps.git_clone", "prefect.deployments.steps.pull_with_block"),
            "prefect.yaml: pull: step prefect.deployments.steps.pull_with_block is not supported",
        ),
        (
            ("prefect.deployments.steps.git_clone", "my_company.steps.fetch_code"),
            "prefect.yaml: pull: step my_company.steps.fetch_code has no Conveyor equivalent",
        ),
        (
            ("schedules: []", "schedules: [{cron: '0 * * * *'}]"),
            "prefect.yaml: deployments[0] (nightly): schedules is not supported by Conveyor",
        ),
        (
            ("branch: main", "branch: '{{ prefect.variables.branch }}'"),
            "prefect.yaml: pull[0].git_clone.branch: {{ prefect.variables.branch }} is not "
            "supported (Conveyor has no variables)",
        ),
        (
            ("concurrency_limit: null", "concurrency_limit: null\n    triggers: [{enabled: true}]"),
            "prefect.yaml: deployments[0] (nightly): triggers is not supported by Conveyor",
        ),
        (
            ("    version: null", "    version: null\n    job_variabels: {}"),
            "prefect.yaml: deployments[0] (nightly): job_variabels has no Conveyor equivalent",
        ),
        (
            ("directory: FOLDER", "directory: /elsewhere/entirely"),
            "prefect.yaml: pull: set_working_directory /elsewhere/entirely is outside the "
            "project folder",
        ),
    ],
)
def test_what_a_prefect_yaml_cannot_map_is_named(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    file = write_prefect(tmp_path, PREFECT.replace(*change))
    with pytest.raises(ConfigError) as caught:
        load_project(file)
    assert str(caught.value) == message


def test_a_prefect_variable_is_named_by_where_it_is_and_never_with_the_rest_of_its_string(
    tmp_path: Path,
) -> None:
    text = PREFECT.replace(
        "    description: null", "    description: 'key lit3ral-s3cret {{ prefect.variables.x }}'"
    )
    with pytest.raises(ConfigError) as caught:
        load_project(write_prefect(tmp_path, text))
    assert str(caught.value) == (
        "prefect.yaml: deployments[0].description: {{ prefect.variables.x }} is not supported "
        "(Conveyor has no variables)"
    )
    assert "lit3ral-s3cret" not in str(caught.value)


def test_a_prefect_step_that_maps_to_a_step_not_installed_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an installation whose step table lacks pull_from_s3 (a plug-in build without it)
    builtins = {k: v for k, v in STEPS._builtins.items() if k != "pull_from_s3"}
    monkeypatch.setattr(STEPS, "_builtins", builtins)
    monkeypatch.setattr(STEPS, "_plugins", {})
    text = PREFECT.replace(
        "prefect.deployments.steps.git_clone", "prefect_aws.deployments.steps.pull_from_s3"
    )
    with pytest.raises(ConfigError) as caught:
        load_project(write_prefect(tmp_path, text))
    assert str(caught.value) == (
        "prefect.yaml: pull: step prefect_aws.deployments.steps.pull_from_s3 maps to "
        "pull_from_s3, which this installation of Conveyor does not have"
    )

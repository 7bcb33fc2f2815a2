"""Mistakes a person makes on the command line get one line that says what to do, without
Python's internals or a "this is a bug" hint: a malformed CONVEYOR_API_URL, one ending in /api,
an empty run id, an option the source does not take, an entrypoint that is not a flow, a flow
name where ``runs ls -d`` wants FLOW/NAME, ``prefect deploy``'s ``-p POOL`` (``-p`` is ``--param``
here), a CONVEYOR_HOME, ``--work-dir`` or CONVEYOR_CACHE_DIR that is a file (the worker then
claims nothing), ``credentials rm`` of a name not there, ``server start --log-level`` of an
unknown level; Prefect's state names (``Completed``)
are taken; and a special file in the project is no log line during deploy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from e2e.conftest import Server, command_env, conveyor, ok, one_line_error
from worker.flows_project import write_project

pytestmark = pytest.mark.slow


def test_a_malformed_api_url_is_a_configuration_error(tmp_path: Path) -> None:
    result = conveyor("runs", "ls", env=command_env(CONVEYOR_API_URL="notaurl"), cwd=tmp_path)

    error = one_line_error(result)
    assert "CONVEYOR_API_URL" in error
    assert "'notaurl'" in error
    assert "http://" in error
    assert "unexpected error" not in result.stderr
    assert "hint:" not in result.stderr


@pytest.mark.service
def test_an_api_url_ending_in_api_gets_a_hint_to_use_the_servers_root(tmp_path: Path) -> None:
    server = Server.start(command_env(), log=tmp_path / "server.log")
    try:
        env = command_env(CONVEYOR_API_URL=f"{server.url}/api")

        result = conveyor("runs", "ls", env=env, cwd=tmp_path)

        assert "not found on the server" in one_line_error(result)
        assert f"hint: CONVEYOR_API_URL is the server's root, without /api: {server.url}" in (
            result.stderr
        )
        assert ok(conveyor("runs", "ls", env=command_env(CONVEYOR_API_URL=server.url)))
    finally:
        server.stop()


@pytest.mark.parametrize("command", ["inspect", "logs", "cancel", "code", "result"])
def test_an_empty_run_id_is_refused(command: str, tmp_path: Path) -> None:
    result = conveyor("runs", command, " ", env=command_env(), cwd=tmp_path)

    assert one_line_error(result) == "the run id is empty: give one from `conveyor runs ls`"
    assert "hint:" not in result.stderr


def test_an_option_a_local_source_does_not_take_is_named_without_python_internals(
    tmp_path: Path,
) -> None:
    folder = write_project(tmp_path / "folder")
    args = ("deploy", "flows.py:hello", "--name", "x", "--source", str(folder), "--branch", "main")

    error = one_line_error(conveyor(*args, env=command_env(), cwd=tmp_path))

    assert error == "branch does not apply to a local source"


def test_an_entrypoint_that_is_an_int_says_an_int(tmp_path: Path) -> None:
    project = write_project(tmp_path / "project")
    with (project / "flows.py").open("a") as flows:
        flows.write("\nX = 3\nNAME = 'x'\n")
    env = command_env()

    assert "'X' in flows.py is an int, not a flow" in one_line_error(
        conveyor("deploy", "flows.py:X", "--name", "x", env=env, cwd=project)
    )
    assert "'NAME' in flows.py is a str, not a flow" in one_line_error(
        conveyor("deploy", "flows.py:NAME", "--name", "x", env=env, cwd=project)
    )


def test_a_fifo_in_the_project_is_skipped_without_a_log_line(tmp_path: Path) -> None:
    project = write_project(tmp_path / "project")
    os.mkfifo(project / "fifo")
    env = command_env()

    result = conveyor("deploy", "flows.py:hello", "--name", "x", env=env, cwd=project)

    assert "deployment hello/x version" in ok(result)
    assert "skipping special file" not in result.stderr, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    debug = conveyor("--debug", "deploy", "flows.py:hello", "--name", "x", env=env, cwd=project)
    assert "skipping special file path=fifo" in debug.stderr


def test_runs_ls_takes_prefects_state_names_and_wants_flow_slash_name(tmp_path: Path) -> None:
    # Given one completed run and one failed run of a deployment
    project = write_project(tmp_path / "project")
    env = command_env()
    ok(conveyor("deploy", "flows.py:hello", "--name", "ok", env=env, cwd=project))
    ok(conveyor("deploy", "flows.py:boom", "--name", "bad", env=env, cwd=project))
    ok(conveyor("run", "hello/ok", env=env))
    ok(conveyor("run", "boom/bad", env=env))
    ok(conveyor("worker", "start", "--burst", env=env, timeout=120))

    # When the runs are listed by state as Prefect writes it, and by a flow name alone
    completed = ok(conveyor("runs", "ls", "--state", "Completed", env=env))
    failed = ok(conveyor("runs", "ls", "--state", "FAILED", env=env))
    flow_only = conveyor("runs", "ls", "-d", "hello", env=env)

    # Then each state lists its run, and a flow name alone says how to name a deployment
    assert "hello/ok" in completed
    assert "boom/bad" not in completed
    assert "boom/bad" in failed
    assert "hello/ok" not in failed
    assert one_line_error(flow_only) == "'hello' is not a deployment"
    assert "hint: name it FLOW/DEPLOYMENT" in flow_only.stderr


def test_prefects_deploy_dash_p_for_the_pool_says_dash_p_is_param_here(tmp_path: Path) -> None:
    project = write_project(tmp_path / "project")
    env = command_env()

    result = conveyor("deploy", "flows.py:hello", "-n", "x", "-p", "gpu", env=env, cwd=project)

    assert one_line_error(result) == "--param 'gpu' is not KEY=VALUE"
    assert "hint: -p is --param (e.g. -p n=3); for the work pool write --pool gpu" in (
        result.stderr
    )
    assert ok(conveyor("deployments", "ls", "--json", env=env)).strip() == "[]"


def test_a_conveyor_home_that_is_a_file_is_one_line_for_every_command(tmp_path: Path) -> None:
    # Given CONVEYOR_HOME naming a file (a typo, or a path reused)
    project = write_project(tmp_path / "project")
    home = tmp_path / "home-file"
    home.write_text("")
    env = command_env(CONVEYOR_HOME=str(home))

    # When commands, a worker and a server start with it
    results = [
        conveyor("runs", "ls", env=env, cwd=project),
        conveyor("deploy", "flows.py:hello", "-n", "x", env=env, cwd=project),
        conveyor("worker", "start", "--burst", env=env, cwd=project),
        conveyor("server", "start", "--port", "0", env=env, cwd=project),
        # (and a worker whose --work-dir is that file, with a good home)
        conveyor(
            "worker", "start", "--burst", "--work-dir", str(home),
            env=command_env(), cwd=project,
        ),
    ]  # fmt: skip

    # Then each says so in one line with a hint (no traceback, no "server error (HTTP 500)"),
    # exits 1, and the file is left as it was
    for result in results:
        assert result.returncode == 1, result.stderr
        error = one_line_error(result)
        assert str(home) in error
        assert "HTTP 500" not in result.stderr
        assert "hint: " in result.stderr
    assert home.read_text() == ""


def test_a_worker_whose_cache_dir_is_a_file_refuses_to_start_and_claims_nothing(
    tmp_path: Path,
) -> None:
    # Given a queued run, and a worker whose CONVEYOR_CACHE_DIR names a file
    project = write_project(tmp_path / "project")
    env = command_env()
    ok(conveyor("deploy", "flows.py:hello", "-n", "x", env=env, cwd=project))
    run_id = ok(conveyor("run", "hello/x", env=env)).strip()
    cache_file = tmp_path / "cache-file"
    cache_file.write_text("")

    # When the worker starts
    result = conveyor(
        "worker", "start", "--burst", env=command_env(CONVEYOR_CACHE_DIR=str(cache_file))
    )

    # Then it stops in one line before claiming, and the run still waits for a good worker
    assert result.returncode == 1
    assert one_line_error(result) == f"CONVEYOR_CACHE_DIR {cache_file} is not a folder"
    assert '"state": "scheduled"' in ok(conveyor("runs", "inspect", run_id, "--json", env=env))


def test_removing_credentials_that_are_not_there_says_so_in_credentials_words(
    tmp_path: Path,
) -> None:
    env = command_env()
    created = subprocess.run(
        [sys.executable, "-m", "conveyor", "credentials", "create", "github", "gh"],
        input="tok-0123456789",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr

    missing = conveyor("credentials", "rm", "nope", env=env, cwd=tmp_path)

    assert one_line_error(missing) == "no credentials named 'nope'"
    assert "hint: conveyor credentials ls" in missing.stderr
    assert "credentials." not in missing.stderr  # not the secret store's own name for them
    mistyped = conveyor("credentials", "rm", "ghh", env=env, cwd=tmp_path)
    assert one_line_error(mistyped) == "no credentials named 'ghh'"
    assert "hint: did you mean 'gh'?" in mistyped.stderr
    assert ok(conveyor("credentials", "rm", "gh", env=env)) == "deleted credentials gh\n"


def test_an_unknown_server_log_level_is_one_line_before_listening(tmp_path: Path) -> None:
    result = conveyor(
        "server", "start", "--port", "0", "--log-level", "verbose", env=command_env(), cwd=tmp_path
    )

    assert one_line_error(result) == "unknown --log-level 'verbose'"
    assert "hint: use one of: critical, error, warning, info, debug, trace" in result.stderr
    assert "listening" not in result.stdout
    assert "bug in Conveyor" not in result.stderr

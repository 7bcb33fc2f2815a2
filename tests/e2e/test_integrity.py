"""What runs is what was verified, and a flow cannot poison another deployment's code: the real
command line, real worker processes, the real cache on disk.

- a cached file flipped on disk between runs: the next run still runs (and ``runs code`` still
  writes) the pinned bytes;
- a second deployment's flow, running as the worker's user, finds the cache and rewrites the
  first one's checkout: the first deployment's next run still returns the pinned value, and the
  flow saw none of the worker's ``CONVEYOR_*`` settings;
- with ``--run-as USER`` (a worker started as root), the same flow cannot even reach the cache,
  the worker's key or its database.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from conveyor.bundles import compute_version
from conveyor.schemas import Run, RunState
from e2e.conftest import api, command_env, conveyor, ok, one_line_error, wait_for_run
from fixtures.users import interpreter_for, throwaway_user  # noqa: F401

pytestmark = pytest.mark.slow

VICTIM = {
    "payload.py": "WORD = 'pristine'\n",
    "flows.py": (
        "import payload\n\nfrom conveyor import flow\n\n\n"
        "@flow\ndef word() -> str:\n    return payload.WORD\n"
    ),
}

ATTACKER = {
    "attack.py": '''
import os
import pathlib

from conveyor import flow


def _try(action):
    try:
        action()
    except OSError as exc:
        return exc.strerror
    return "ok"


@flow
def poison(home: str = "", target: str = "") -> dict:
    """What a hostile flow does: find the cache, unseal another deployment's checkout, rewrite it;
    read the worker's key and database; report what worked."""
    default = pathlib.Path.home() / ".conveyor"
    root = pathlib.Path(home or os.environ.get("CONVEYOR_HOME") or default)
    found = sorted(root.glob("cache/*/sha256-*/payload.py"))
    targets = [pathlib.Path(target)] if target else found
    outcome = {}
    for path in targets:
        def rewrite(path=path):
            os.chmod(path.parent, 0o755)
            os.chmod(path, 0o644)
            path.write_text("WORD = 'poisoned'\\n")
        outcome[str(path)] = _try(rewrite)
    return {
        "poison": outcome,
        "secret_key": _try(lambda: (root / "secret.key").read_bytes()),
        "database": _try(lambda: (root / "conveyor.db").read_bytes()),
        "workspace": _try(lambda: pathlib.Path("scratch.txt").write_text("mine")),
        "env": sorted(k for k in os.environ if k.startswith("CONVEYOR_")),
        "uid": os.getuid(),
    }
''',
}

RUN_VARIABLES = {
    "CONVEYOR_RUN_ID",
    "CONVEYOR_FLOW_NAME",
    "CONVEYOR_DEPLOYMENT_NAME",
    "CONVEYOR_RUN_VERSION",
    "CONVEYOR_RUN_ATTEMPT",
    "CONVEYOR_LOG_FD",
    "CONVEYOR_WORKER_PID",
}


def write(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    for rel, text in files.items():
        (root / rel).write_text(text)
    return root


def deploy(env: dict[str, str], folder: Path, entrypoint: str, name: str) -> str:
    out = ok(conveyor("deploy", entrypoint, "--name", name, env=env, cwd=folder))
    return out.split(" version ")[1].split()[0]


def run_once(
    env: dict[str, str], flow: str, deployment: str, worker: list[str], **parameters: Any
) -> Run:
    """One run of ``flow/deployment``, executed by a burst worker started with ``worker``."""
    with api(env) as client:
        run = client.create_run(flow, deployment, parameters=parameters)
    done = subprocess.run(worker, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    with api(env) as client:
        return wait_for_run(client, run.id, timeout=10)


def cached_payloads(home: Path) -> list[Path]:
    return sorted(home.glob("cache/*/sha256-*/payload.py"))


def test_a_cache_file_flipped_on_disk_never_runs_nor_leaves_with_runs_code(
    tmp_path: Path,
) -> None:
    # Given a deployment returning payload.WORD, run once (its checkout is in the cache)
    env = command_env()
    home = Path(env["CONVEYOR_HOME"])
    version = deploy(env, write(tmp_path / "victim", VICTIM), "flows.py:word", "victim")
    worker = [sys.executable, "-m", "conveyor", "worker", "start", "--burst"]
    first = run_once(env, "word", "victim", worker)
    assert (first.state, first.result) == (RunState.COMPLETED, "pristine")
    # When one byte of the cached payload.py is flipped on disk
    (payload,) = cached_payloads(home)
    os.chmod(payload.parent, 0o755)
    os.chmod(payload, 0o644)
    payload.write_bytes(payload.read_bytes().replace(b"pristine", b"pristinf"))
    # Then the next run still runs the pinned bytes, and says so
    second = run_once(env, "word", "victim", worker)
    assert (second.state, second.result, second.version) == (
        RunState.COMPLETED,
        "pristine",
        version,
    )
    assert payload.read_text() == "WORD = 'pristine'\n"  # the checkout was fetched again
    # ...and `runs code` writes only verified bytes, even from a tampered cache
    payload = cached_payloads(home)[0]
    os.chmod(payload.parent, 0o755)
    os.chmod(payload, 0o644)
    payload.write_text("WORD = 'tampered'\n")
    out_dir = tmp_path / "code"
    ok(conveyor("runs", "code", first.id, "--output", str(out_dir), env=env))
    assert (out_dir / "payload.py").read_text() == "WORD = 'pristine'\n"
    assert compute_version(out_dir) == version


def test_another_deployments_flow_cannot_poison_a_checkout(tmp_path: Path) -> None:
    # Given two deployments on one worker (its settings in its environment), the first run once
    env = command_env(
        CONVEYOR_SECRET_KEY="k" * 44,
        CONVEYOR_CACHE_DIR=str(Path(os.environ["CONVEYOR_HOME"]) / "cache"),
    )
    home = Path(env["CONVEYOR_HOME"])
    version = deploy(env, write(tmp_path / "victim", VICTIM), "flows.py:word", "victim")
    deploy(env, write(tmp_path / "attacker", ATTACKER), "attack.py:poison", "attacker")
    worker = [sys.executable, "-m", "conveyor", "worker", "start", "--burst"]
    assert run_once(env, "word", "victim", worker).result == "pristine"
    # When the second deployment's flow rewrites the first one's cached checkout
    attack = run_once(env, "poison", "attacker", worker)
    # Then it could (it runs as the worker's user and found the cache where it always is)...
    assert attack.state is RunState.COMPLETED, attack.error
    (target,) = cached_payloads(home)
    assert attack.result["poison"] == {str(target): "ok"}
    assert target.read_text() == "WORD = 'poisoned'\n"
    # ...but it was told none of the worker's settings
    assert set(attack.result["env"]) <= RUN_VARIABLES
    assert "CONVEYOR_HOME" not in attack.result["env"]
    # ...and the first deployment's next run still runs exactly its pinned version
    again = run_once(env, "word", "victim", worker)
    assert (again.state, again.result, again.version) == (RunState.COMPLETED, "pristine", version)


def test_worker_settings_do_not_resolve_in_a_deployments_templates(tmp_path: Path) -> None:
    env = command_env(CONVEYOR_SECRET_KEY="k" * 44)
    project = write(tmp_path / "victim", VICTIM)
    (project / "conveyor.yaml").write_text(
        "deployments:\n"
        "  - name: greedy\n"
        "    entrypoint: flows.py:word\n"
        "    work_pool: {name: default, job_variables: {env: {K: '${CONVEYOR_SECRET_KEY}'}}}\n"
    )
    ok(conveyor("deploy", env=env, cwd=project))
    worker = [sys.executable, "-m", "conveyor", "worker", "start", "--burst"]
    run = run_once(env, "word", "greedy", worker)
    assert run.state is RunState.FAILED
    assert run.error == (
        "template ${CONVEYOR_SECRET_KEY} has no value in the environment or the secret store"
    )


# -- --run-as: a worker started as root runs flows as another user -------------------------------


def test_run_as_a_user_flows_cannot_reach_the_cache_the_key_or_the_database(
    throwaway_user: str,  # noqa: F811
) -> None:
    # Given a worker home that anyone could enter (a default umask), with a key and a database,
    # and two deployments, the first run once by a root worker with --run-as
    python, extra = interpreter_for(throwaway_user)
    base = Path(tempfile.mkdtemp(prefix="conveyor-run-as-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        home = base / "home"
        home.mkdir(mode=0o755)
        env = command_env(HOME=str(base), CONVEYOR_HOME=str(home), **extra)
        with api(env) as client:
            client.set_secret("SOME_SECRET", "value")
        assert (home / "secret.key").exists()
        assert (home / "conveyor.db").exists()
        version = deploy(env, write(base / "victim", VICTIM), "flows.py:word", "victim")
        deploy(env, write(base / "attacker", ATTACKER), "attack.py:poison", "attacker")
        worker = [
            *python,
            "-m",
            "conveyor",
            "worker",
            "start",
            "--burst",
            "--run-as",
            throwaway_user,
            "--work-dir",
            str(base / "work"),
        ]
        first = run_once(env, "word", "victim", worker)
        assert (first.state, first.result) == (RunState.COMPLETED, "pristine"), first.error
        (target,) = cached_payloads(home)
        # When the second deployment's flow goes for the checkout, the key and the database
        attack = run_once(env, "poison", "attacker", worker, home=str(home), target=str(target))
        # Then it ran as the user, in a workspace of its own, and reached none of them
        assert attack.state is RunState.COMPLETED, attack.error
        uid = pwd.getpwnam(throwaway_user).pw_uid
        assert attack.result == {
            "poison": {str(target): "Permission denied"},
            "secret_key": "Permission denied",
            "database": "Permission denied",
            "workspace": "ok",
            "env": sorted(RUN_VARIABLES),
            "uid": uid,
        }
        assert target.read_text() == "WORD = 'pristine'\n"
        assert oct(home.stat().st_mode & 0o777) == oct(0o700)
        again = run_once(env, "word", "victim", worker)
        assert (again.result, again.version) == ("pristine", version)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_run_as_is_refused_with_one_line_for_an_unknown_user() -> None:
    error = one_line_error(
        conveyor("worker", "start", "--run-as", "no-such-user-zz", env=command_env())
    )
    assert error == "--run-as: no user 'no-such-user-zz' on this machine"

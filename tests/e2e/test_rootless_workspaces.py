"""A worker that is not root mounts overlay workspaces in a user namespace of its own: the real
``conveyor worker start`` as a throwaway user, the embedded database, the real cache on disk.

A flow that rewrites, appends to, truncates, chmods, deletes or replaces shipped files gets its
own copies (as under a root worker's overlay); the cache's checkout and a run of the same
version holding its working directory meanwhile see the pristine files, the flow runs as the
user itself, and the worker leaves no workspace behind. ``--workspace copy`` keeps the worker in
the machine's namespaces.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.schemas import RunState
from e2e.conftest import api, command_env, conveyor, ok, wait_for_run
from fixtures.users import interpreter_for, throwaway_user  # noqa: F401

pytestmark = pytest.mark.slow

FLOWS = """
import hashlib, os, pathlib, time
from conveyor import flow


def digests() -> dict:
    found = {}
    for top, dirs, files in os.walk("."):
        dirs[:] = [d for d in dirs if d not in ("__pycache__", ".conveyor")]
        for name in files:
            path = os.path.join(top, name)[2:]
            found[path] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return found


def attempt(results: dict, name: str, action) -> None:
    try:
        action()
        results[name] = "ok"
    except OSError as exc:
        results[name] = exc.strerror


def replace() -> None:
    pathlib.Path("swap.new").write_text("replaced")
    os.replace("swap.new", "swap.txt")


def unmount() -> None:
    import ctypes, ctypes.util
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.umount2(b".", 2) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


@flow
def mutate(marker: str) -> dict:
    done = {}
    attempt(done, "rewrite", lambda: pathlib.Path("data.txt").write_text("rewritten"))
    attempt(done, "append", lambda: open("helpers.py", "a").write("# appended"))
    attempt(done, "truncate", lambda: os.truncate("big.bin", 0))
    attempt(done, "chmod", lambda: os.chmod("tool.sh", 0o666))
    attempt(done, "delete", lambda: os.unlink("gone.txt"))
    attempt(done, "replace", replace)
    attempt(done, "create", lambda: pathlib.Path("pkg/made.txt").write_text("new"))
    attempt(done, "unmount", unmount)
    done["seen"] = pathlib.Path("data.txt").read_text()
    done["uid"] = os.getuid()
    pathlib.Path(marker).write_text("done")
    return done


@flow
def hold(marker: str) -> dict:
    deadline = time.time() + 60
    while not os.path.exists(marker) and time.time() < deadline:
        time.sleep(0.02)
    return digests()


@flow
def look() -> dict:
    return digests()
"""

PROJECT = {
    "flows.py": FLOWS.encode(),
    "data.txt": b"pristine data\n",
    "helpers.py": b"VALUE = 1\n",
    "big.bin": os.urandom(64 * 1024),
    "tool.sh": b"#!/bin/sh\necho tool\n",
    "gone.txt": b"to be deleted\n",
    "swap.txt": b"to be replaced\n",
    "pkg/__init__.py": b"",
}

PRISTINE = {rel: hashlib.sha256(data).hexdigest() for rel, data in PROJECT.items()}


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="conveyor-rootless-", dir="/tmp"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _deploy(base: Path, env: dict[str, str]) -> None:
    project = base / "project"
    for rel, data in PROJECT.items():
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_bytes(data)
    (project / "tool.sh").chmod(0o755)
    for name in ("mutate", "hold", "look"):
        ok(conveyor("deploy", f"flows.py:{name}", "--name", "d", env=env, cwd=project))


def _chown(base: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for top, dirs, files in os.walk(base):
        for name in [top, *(os.path.join(top, n) for n in (*dirs, *files))]:
            os.lchown(name, entry.pw_uid, entry.pw_gid)


def _worker(
    user: str, python: list[str], env: dict[str, str], *extra: str
) -> subprocess.CompletedProcess[str]:
    entry = pwd.getpwnam(user)
    return subprocess.run(
        [*python, "-m", "conveyor", "worker", "start", "--burst", "--limit", "2", *extra],
        env=env,
        cwd="/",
        user=entry.pw_uid,
        group=entry.pw_gid,
        extra_groups=[entry.pw_gid],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _cached(home: Path) -> dict[str, str]:
    (checkout,) = [p for p in home.glob("cache/*/sha256-*") if p.is_dir()]
    found = {}
    for top, dirs, files in os.walk(checkout):
        dirs[:] = [d for d in dirs if d not in ("__pycache__", ".conveyor")]
        for name in files:
            path = Path(top, name)
            found[path.relative_to(checkout).as_posix()] = hashlib.sha256(
                path.read_bytes()
            ).hexdigest()
    return found


def test_a_worker_that_is_not_root_mounts_overlay_workspaces_in_its_own_namespace(
    throwaway_user: str,  # noqa: F811
    base: Path,
) -> None:
    # Given deployments of a project, and a worker started as a user that is not root
    python, extra = interpreter_for(throwaway_user)
    home = base / "home"
    env = command_env(HOME=str(base), CONVEYOR_HOME=str(home), **extra)
    _deploy(base, env)
    marker = base / "mutated"
    with api(env) as client:
        holder = client.create_run("hold", "d", parameters={"marker": str(marker)})
        mutator = client.create_run("mutate", "d", parameters={"marker": str(marker)})
    _chown(base, throwaway_user)

    # When it runs a flow holding its working directory while another changes shipped files
    done = _worker(throwaway_user, python, env)
    assert done.returncode == 0, done.stdout + done.stderr
    if "no user namespace of its own" in done.stderr:
        from conftest import service_unavailable

        service_unavailable(f"this kernel refuses unprivileged user namespaces: {done.stderr}")
    assert "worker in a user namespace of its own" in done.stderr
    assert "workspaces mode=overlay" in done.stderr

    # Then the flow could do everything in its own copies, nothing more, as its own user
    results: dict[str, Any] = {}
    with api(env) as client:
        for run in (holder, mutator):
            final = wait_for_run(client, run.id, timeout=10)
            assert final.state is RunState.COMPLETED, final.error
            results[run.id] = final.result
    changed = results[mutator.id]
    assert changed == {
        "rewrite": "ok",
        "append": "ok",
        "truncate": "ok",
        "chmod": "ok",
        "delete": "ok",
        "replace": "ok",
        "create": "ok",
        "unmount": "Operation not permitted",
        "seen": "rewritten",
        "uid": pwd.getpwnam(throwaway_user).pw_uid,
    }
    # ...the run holding the same version meanwhile, the cache and the next run see it pristine
    assert results[holder.id] == PRISTINE
    assert _cached(home) == PRISTINE
    with api(env) as client:
        again = client.create_run("look", "d")
    _chown(base, throwaway_user)
    assert _worker(throwaway_user, python, env).returncode == 0
    with api(env) as client:
        assert wait_for_run(client, again.id, timeout=10).result == PRISTINE
    # ...and the worker left no workspace behind
    assert [p.name for p in (home / "work").iterdir()] == []


def test_workspace_copy_keeps_a_worker_that_is_not_root_in_the_machines_namespaces(
    throwaway_user: str,  # noqa: F811
    base: Path,
) -> None:
    python, extra = interpreter_for(throwaway_user)
    home = base / "home"
    env = command_env(HOME=str(base), CONVEYOR_HOME=str(home), **extra)
    _deploy(base, env)
    with api(env) as client:
        run = client.create_run("look", "d")
    _chown(base, throwaway_user)
    done = _worker(throwaway_user, python, env, "--workspace", "copy")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "user namespace" not in done.stderr
    assert "workspaces mode=copy" in done.stderr
    with api(env) as client:
        assert wait_for_run(client, run.id, timeout=10).result == PRISTINE

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conveyor.schemas import RunState
from e2e.conftest import api, command_env, conveyor, ok, wait_for_run
from fixtures.users import as_user, interpreter_for, shared_dir, throwaway_user  # noqa: F401
from worker.shipped_files import PROJECT

pytestmark = pytest.mark.slow

ROOTLESS = """
import ctypes, ctypes.util, os, pathlib
from conveyor import flow
import flows


def unmount() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.umount2(b".", 2) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


@flow
def mutate(marker: str) -> dict:
    done = flows.mutate.fn()
    flows.attempt(done, "unmount", unmount)
    done["seen"] = pathlib.Path("data.txt").read_text()
    done["uid"] = os.getuid()
    pathlib.Path(marker).write_text("done")
    return done
"""

FILES = {**PROJECT, "rootless.py": ROOTLESS.encode()}
PRISTINE = {rel: hashlib.sha256(data).hexdigest() for rel, data in FILES.items()}


@pytest.fixture
def base() -> Iterator[Path]:
    with shared_dir("conveyor-rootless-") as path:
        yield path


@dataclass
class Setup:
    """Deployments of the project in a home the user owns, and a worker to start as the user."""

    user: str
    base: Path
    python: list[str]
    env: dict[str, str]

    @property
    def home(self) -> Path:
        return self.base / "home"

    def give(self) -> None:
        """Everything under the base to the user (the test, as root, may have made files)."""
        entry = pwd.getpwnam(self.user)
        for top, dirs, files in os.walk(self.base):
            for name in [top, *(os.path.join(top, n) for n in (*dirs, *files))]:
                os.lchown(name, entry.pw_uid, entry.pw_gid)

    def worker(self, *extra: str) -> str:
        """Run a burst worker (``--limit 2``) as the user; its log."""
        self.give()
        argv = [*self.python, "-m", "conveyor", "worker", "start", "--burst", "--limit", "2"]
        done = as_user(self.user, [*argv, *extra], self.env)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stderr

    def result(self, run_id: str) -> Any:
        with api(self.env) as client:
            final = wait_for_run(client, run_id, timeout=10)
        assert final.state is RunState.COMPLETED, final.error
        return final.result


@pytest.fixture
def setup(throwaway_user: str, base: Path) -> Setup:  # noqa: F811
    python, extra = interpreter_for(throwaway_user)
    env = command_env(HOME=str(base), CONVEYOR_HOME=str(base / "home"), **extra)
    project = base / "project"
    for rel, data in FILES.items():
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_bytes(data)
    (project / "tool.sh").chmod(0o755)
    for entrypoint in ("rootless.py:mutate", "flows.py:hold", "flows.py:look"):
        ok(conveyor("deploy", entrypoint, "--name", "d", env=env, cwd=project))
    return Setup(throwaway_user, base, python, env)


def _cached(home: Path) -> dict[str, str]:
    (checkout,) = [p for p in home.glob("cache/*/sha256-*") if p.is_dir()]
    found = {}
    for top, dirs, files in os.walk(checkout):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            path = Path(top, name)
            found[path.relative_to(checkout).as_posix()] = hashlib.sha256(
                path.read_bytes()
            ).hexdigest()
    return found


def test_a_worker_that_is_not_root_mounts_overlay_workspaces_in_its_own_namespace(
    setup: Setup,
) -> None:
    # Given a run holding its working directory until another has changed shipped files
    marker, holding = setup.base / "mutated", setup.base / "holding"
    with api(setup.env) as client:
        holder = client.create_run(
            "hold", "d", parameters={"marker": str(marker), "started": str(holding)}
        )
        mutator = client.create_run("mutate", "d", parameters={"marker": str(marker)})

    # When a worker started as a user that is not root runs both
    log = setup.worker()
    if "no user namespace of its own" in log:
        from conftest import service_unavailable

        service_unavailable(f"this kernel refuses unprivileged user namespaces: {log}")
    assert "worker in a user namespace of its own" in log
    assert "workspaces mode=overlay" in log

    # Then the flow could do everything to its own copies, nothing more, as its own user
    assert setup.result(mutator.id) == {
        "rewrite": "ok",
        "append": "ok",
        "truncate": "ok",
        "chmod": "ok",
        "delete": "ok",
        "replace": "ok",
        "create": "ok",
        "unmount": "Operation not permitted",
        "seen": "rewritten",
        "uid": pwd.getpwnam(setup.user).pw_uid,
    }
    # ...the run holding the same version meanwhile, the cache and the next run see it pristine
    cached = _cached(setup.home)
    assert {k: v for k, v in cached.items() if not k.startswith(".conveyor/")} == PRISTINE
    assert setup.result(holder.id) == cached
    with api(setup.env) as client:
        again = client.create_run("look", "d")
    setup.worker()
    assert setup.result(again.id) == cached
    # ...and the worker left no workspace behind
    assert [p.name for p in (setup.home / "work").iterdir()] == []


def test_workspace_copy_keeps_a_worker_that_is_not_root_in_the_machines_namespaces(
    setup: Setup,
) -> None:
    with api(setup.env) as client:
        run = client.create_run("look", "d")
    log = setup.worker("--workspace", "copy")
    assert "user namespace" not in log
    assert "workspaces mode=copy" in log
    assert setup.result(run.id) == _cached(setup.home)

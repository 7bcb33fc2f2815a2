"""Exactly-once claims: real worker processes racing on one database."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conveyor.client import ConveyorClient
from conveyor.schemas import RunState

WORKER = """
import json, sys
from conveyor.connect import connect
from conveyor.schemas import RunState, StateUpdate
from conveyor.settings import Settings

name = sys.argv[1]
api = connect(Settings.from_env())
api.health()
print("ready", flush=True)
sys.stdin.readline()
claimed, idle = [], 0
while idle < 3:
    run = api.claim_run("default", worker=name, wait_seconds=0.3)
    if run is None:
        idle += 1
        continue
    idle = 0
    api.set_run_state(run.id, StateUpdate(worker=name, state=RunState.RUNNING))
    api.set_run_state(
        run.id, StateUpdate(worker=name, state=RunState.COMPLETED, result=run.id)
    )
    claimed.append(run.id)
api.close()
print(json.dumps(claimed), flush=True)
"""


def race(api: ConveyorClient, env: dict[str, str], *, workers: int, runs: int) -> None:
    # Given half the runs queued, and worker processes waiting at a barrier
    ids = [api.create_run("hello", "prod").id for _ in range(runs // 2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, f"w{i}"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(workers)
    ]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    # When they are released together while the other half is created
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    ids += [api.create_run("hello", "prod").id for _ in range(runs - runs // 2)]
    claims: dict[str, list[str]] = {}
    for i, proc in enumerate(procs):
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-2000:]
        claims[f"w{i}"] = json.loads(out.strip().splitlines()[-1])
    # Then every run was claimed exactly once, and completed by the worker that claimed it
    every = [run_id for claimed in claims.values() for run_id in claimed]
    assert sorted(every) == sorted(ids)
    assert sum(1 for claimed in claims.values() if claimed) >= 2, "no contention happened"
    final = {run.id: run for run in api.list_runs(limit=1000)}
    for worker, claimed in claims.items():
        for run_id in claimed:
            assert final[run_id].state is RunState.COMPLETED
            assert final[run_id].worker == worker
            assert final[run_id].result == run_id


def worker_env(backend, **extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    if backend.database_url:
        env["CONVEYOR_DATABASE_URL"] = backend.database_url
    return env


@pytest.mark.slow
def test_embedded_worker_processes_claim_each_run_once(backend, deploy, api):
    deploy()
    race(api, worker_env(backend), workers=4, runs=200)


@pytest.mark.slow
def test_workers_through_one_server_claim_each_run_once(backend, deploy, api, server_process):
    deploy()
    server = server_process(
        **({"CONVEYOR_DATABASE_URL": backend.database_url} if backend.database_url else {})
    )
    race(api, worker_env(backend, CONVEYOR_API_URL=server.url), workers=4, runs=100)

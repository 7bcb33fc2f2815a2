"""Benchmark: every dashboard page's server time with 10,000 runs and 100,000 log lines.

Run: ``.venv/bin/python bench/dashboard.py [--runs 10000] [--lines 100000] [--calls 25]
[--database-url postgresql+psycopg://...]`` (an empty database; SQLite in a temporary home by
default).

The database is filled directly (bulk inserts into the migrated schema): 20 deployments with 3
revisions each, 10,000 runs in every state over 30 days, their finished attempts, 5 workers,
20 secrets and credentials, and 100,000 log lines — 50,000 in one run, the rest 100 each in
500 runs. The code pages use two real bundle versions (a 60-file tree) in the local store,
warmed into the server's code cache once before timing.

Each page is requested ``--calls`` times in-process through the ASGI app (signed in with the
API key, as a browser would be); the figure is the median wall time of a request, which is the
server's time (no network). ``GET /api/health`` is timed the same way as the same-run baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

STATES = ["completed"] * 70 + ["failed"] * 10 + ["crashed"] * 3 + ["cancelled"] * 2
STATES += ["scheduled"] * 5 + ["running"] * 5 + ["pending"] * 5
KEY = "bench-dashboard-key-0123456789"


def make_tree(root: Path, *, variant: int) -> None:
    for i in range(60):
        folder = root / f"pkg{i % 6}"
        folder.mkdir(parents=True, exist_ok=True)
        body = "\n".join(
            f"def f{j}(x: int) -> int:\n    return x * {j + variant * (i == 7)}" for j in range(40)
        )
        (folder / f"mod{i}.py").write_text(f'"""Module {i}."""\n\n{body}\n')
    (root / "flows.py").write_text(
        "from conveyor import flow\n\n@flow\ndef work(n: int = 1) -> int:\n    return n\n"
    )


def fill(db: Any, *, runs: int, lines: int, versions: list[str], storage: str) -> dict[str, Any]:
    """Bulk-insert the benchmark's data; returns ids the pages need."""
    from sqlalchemy import insert

    from conveyor.server.tables import (
        DeploymentRow,
        DeploymentVersionRow,
        LogRow,
        RunAttemptRow,
        RunRow,
        WorkerRow,
    )

    rng = random.Random(7)
    now = datetime.now(UTC)
    source = {"kind": "store", "root": storage}
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "default": 1, "position": 0},
            "name": {"type": "string", "default": "x", "position": 1},
        },
    }
    deployments, revisions = [], []
    for d in range(20):
        dep_id = str(uuid.uuid4())
        deployments.append(
            {
                "id": dep_id,
                "flow_name": f"flow{d % 5}",
                "name": f"deploy{d}",
                "revision": 3,
                "entrypoint": "flows.py:work",
                "source": source,
                "version": versions[-1],
                "follow_ref": False,
                "pull_steps": [],
                "parameters": {"n": d},
                "parameter_schema": schema,
                "work_pool": "default",
                "job_variables": {"labels": ["linux"]},
                "tags": ["bench"],
                "description": "",
                "retries": 1,
                "retry_delay_seconds": 0.0,
                "timeout_seconds": None,
                "created": now - timedelta(days=31),
                "updated": now - timedelta(days=1),
            }
        )
        for r in (1, 2, 3):
            revisions.append(
                {
                    "deployment_id": dep_id,
                    "revision": r,
                    "version": versions[min(r - 1, 1)],
                    "entrypoint": "flows.py:work",
                    "source": source,
                    "config": {},
                    "created": now - timedelta(days=31 - r),
                }
            )
    workers = [f"worker-{i}" for i in range(5)]
    run_rows, attempts = [], []
    for i in range(runs):
        dep = deployments[i % 20]
        state = rng.choice(STATES)
        created = now - timedelta(seconds=(runs - i) * 260)
        started = created + timedelta(seconds=1)
        final = state in ("completed", "failed", "crashed", "cancelled")
        run_id = str(uuid.uuid4())
        run_rows.append(
            {
                "id": run_id,
                "deployment_id": dep["id"],
                "deployment_revision": 3,
                "flow_name": dep["flow_name"],
                "deployment_name": dep["name"],
                "state": state,
                "parameters": {"n": i},
                "version": versions[i % 2],
                "source": source,
                "entrypoint": "flows.py:work",
                "work_pool": "default",
                "pull_steps": [],
                "job_variables": {},
                "labels": [],
                "follow_ref": False,
                "worker": None if state == "scheduled" else workers[i % 5],
                "attempt": 1,
                "max_retries": 1,
                "retry_delay_seconds": 0.0,
                "timeout_seconds": None,
                "cancel_requested": False,
                "created": created,
                "scheduled_at": created,
                "pending_at": None if state == "scheduled" else started,
                "running_at": started if state not in ("scheduled", "pending") else None,
                "ended_at": started + timedelta(seconds=3) if final else None,
                "lease_expires": now + timedelta(days=1)
                if state in ("pending", "running")
                else None,
                "timings": {"queue": 0.8, "fetch": 0.01, "start": 0.05, "run": 2.1}
                if final
                else {},
                "result": {"n": i} if state == "completed" else None,
                "result_ref": None,
                "error": "ValueError: boom" if state == "failed" else None,
                "log_seq": 0,
            }
        )
        if final:
            attempts.append(
                {
                    "run_id": run_id,
                    "attempt": 1,
                    "state": state,
                    "worker": workers[i % 5],
                    "version": versions[i % 2],
                    "pending_at": started,
                    "running_at": started,
                    "ended_at": started + timedelta(seconds=3),
                    "timings": {"run": 2.1},
                    "error": None,
                }
            )
    big = run_rows[-1]["id"]
    per_run: dict[str, int] = {big: lines // 2}
    for row in run_rows[-501:-1]:
        per_run[row["id"]] = (lines - lines // 2) // 500
    for row in run_rows:
        row["log_seq"] = per_run.get(row["id"], 0)

    def write(session: Any) -> None:
        session.execute(insert(DeploymentRow), deployments)
        session.execute(insert(DeploymentVersionRow), revisions)
        for start in range(0, len(run_rows), 2000):
            session.execute(insert(RunRow), run_rows[start : start + 2000])
        for start in range(0, len(attempts), 2000):
            session.execute(insert(RunAttemptRow), attempts[start : start + 2000])
        session.execute(
            insert(WorkerRow),
            [
                {
                    "name": w,
                    "pool": "default",
                    "labels": ["linux"],
                    "limit": 4,
                    "running": 1,
                    "created": now,
                    "last_heartbeat": now,
                    "cache_bytes": 10**8,
                    "cache_entries": 12,
                    "cache_hits": 900,
                    "cache_misses": 30,
                }
                for w in workers
            ],
        )

    db.write(write)
    batch: list[dict[str, Any]] = []
    for run_id, count in per_run.items():
        for seq in range(1, count + 1):
            batch.append(
                {
                    "run_id": run_id,
                    "seq": seq,
                    "timestamp": now,
                    "level": "INFO",
                    "stream": "stdout",
                    "message": f"log line {seq} of the run with some text",
                }
            )
            if len(batch) == 5000:
                db.write(lambda s, b=batch: s.execute(insert(LogRow), b))
                batch = []
    if batch:
        db.write(lambda s, b=batch: s.execute(insert(LogRow), b))
    small = next(r for r in run_rows[-501:-1] if r["state"] == "failed")
    return {
        "big": big,
        "big_seq": lines // 2,
        "small": small["id"],
        "deployment": deployments[0],
        "deep": run_rows[50]["created"].isoformat() + "~" + run_rows[50]["id"],
        "first_v": next(r["id"] for r in run_rows if r["version"] == versions[0]),
        "second_v": next(r["id"] for r in run_rows if r["version"] == versions[1]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=25)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args(argv)

    import warnings

    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

    from conveyor.secrets import Secret
    from conveyor.server.app import create_app, database_of
    from conveyor.settings import Settings
    from conveyor.sources.store import LocalStoreSource

    with tempfile.TemporaryDirectory(prefix="conveyor-bench-dash-") as tmp:
        home = Path(tmp) / "home"
        settings = Settings(
            home=home,
            cache_dir=home / "cache",
            api_key=Secret(KEY),
            database_url=args.database_url,
        )
        store = LocalStoreSource(settings.storage_dir)
        versions = []
        for variant in (0, 1):
            tree = Path(tmp) / f"tree{variant}"
            make_tree(tree, variant=variant)
            versions.append(store.push(tree))
        app = create_app(settings, sweep_every=None)
        started = time.perf_counter()
        ids = fill(
            database_of(app),
            runs=args.runs,
            lines=args.lines,
            versions=versions,
            storage=str(settings.storage_dir),
        )
        print(
            f"filled {args.runs} runs and {args.lines} log lines "
            f"in {time.perf_counter() - started:.1f}s"
        )
        client = TestClient(app)
        for i in range(20):
            client.put(f"/api/secrets/secret{i}", json={"value": "v"}, headers={"X-API-Key": KEY})
        client.put(
            "/api/secrets/credentials.gh",
            json={"value": json.dumps({"type": "github", "token": "t"})},
            headers={"X-API-Key": KEY},
        )
        form = client.get("/login").text
        token = form.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        assert client.post("/login", data={"api_key": KEY, "csrf_token": token}).status_code == 200
        dep = ids["deployment"]
        pages = {
            "GET /api/health (baseline)": "/api/health",
            "runs, newest page": "/runs",
            "runs, state=failed": "/runs?state=failed",
            "runs, worker filter": "/runs?worker=worker-3",
            "runs, deployment filter": f"/runs?deployment={dep['id']}",
            "runs, last 7 days": "/runs?since="
            + (datetime.now(UTC) - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M"),
            "runs, page 199 (keyset)": "/runs?older=" + ids["deep"].replace("+", "%2B"),
            "run with 50,000 log lines (tail)": f"/runs/{ids['big']}",
            "run with 50,000 log lines (first page)": f"/runs/{ids['big']}?log_after=0",
            "live log poll (after=last-10)": f"/runs/{ids['big']}/logs?after={ids['big_seq'] - 10}",
            "failed run (error + hint)": f"/runs/{ids['small']}",
            "deployments": "/deployments",
            "deployment (revisions, form, recent runs)": (
                f"/deployments/{dep['flow_name']}/{dep['name']}"
            ),
            "code tree (warm cache)": f"/runs/{ids['first_v']}/code",
            "code file, highlighted": f"/runs/{ids['first_v']}/code/pkg1/mod7.py",
            "diff of two versions (warm)": (
                f"/code/diff?a=run:{ids['first_v']}&b=run:{ids['second_v']}"
            ),
            "workers": "/workers",
            "pools": "/pools",
            "secrets": "/secrets",
        }
        headers = {"X-API-Key": KEY}
        rows = []
        for label, path in pages.items():
            first = client.get(path, headers=headers)  # warms the code cache too
            assert first.status_code == 200, (path, first.status_code, first.text[:300])
            times = []
            for _ in range(args.calls):
                t0 = time.perf_counter()
                response = client.get(path, headers=headers)
                times.append(time.perf_counter() - t0)
                assert response.status_code == 200
            rows.append(
                (label, statistics.median(times) * 1000, max(times) * 1000, len(response.content))
            )
        base = rows[0][1]
        backend = database_of(app).dialect
        print(
            f"\n{backend}, {args.runs} runs, {args.lines} log lines, "
            f"median of {args.calls} requests\n"
        )
        print("| page | median | max | ratio to /api/health | bytes |")
        print("|---|---:|---:|---:|---:|")
        for label, median, worst, size in rows:
            print(
                f"| {label} | {median:.1f} ms | {worst:.1f} ms | {median / base:.1f}x | {size:,} |"
            )
        slow = [label for label, median, _, _ in rows if median >= 100]
        print(f"\npages at or over 100 ms: {', '.join(slow) if slow else 'none'}")
        client.close()
        os.environ.pop("CONVEYOR_API_KEY", None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

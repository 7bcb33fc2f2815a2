"""Benchmark: `conveyor server start` → healthy, and API latencies on SQLite.

Run: ``.venv/bin/python bench/server.py [--runs 5] [--calls 200]``

- start → healthy: wall time from spawning ``conveyor server start`` to the first 200 from
  ``GET /api/health`` (polled every 5 ms), on an empty CONVEYOR_HOME (migrations run) and on an
  existing database; median of ``--runs``. Measured twice: with bytecode caching (a private
  ``PYTHONPYCACHEPREFIX``, warmed by one untimed start — what a pip/uv install with compiled
  bytecode gives) and exactly as this environment runs (``PYTHONDONTWRITEBYTECODE=1`` if set).
- embedded first call: a fresh process building `ConveyorClient` and answering ``health()``
  in-process (import + app + schema check), median of ``--runs``.
- API latencies: create-run, claim and a state report, median / p95 over ``--calls``, embedded
  (in-process app, SQLite file) and over HTTP to a local server on the same SQLite file.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONVEYOR = [sys.executable, "-m", "conveyor"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def start_server(home: Path, env: dict[str, str]) -> tuple[float, subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*CONVEYOR, "server", "start", "--port", str(port)],
        env={**env, "CONVEYOR_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = started + 30
    while not healthy(url):
        if time.perf_counter() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit("server did not become healthy")
        time.sleep(0.005)
    return time.perf_counter() - started, proc, url


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def bench_start(runs: int, env: dict[str, str], scratch: Path) -> dict[str, float]:
    cold, warm = [], []
    for i in range(runs):
        home = scratch / f"home-{i}"
        elapsed, proc, _ = start_server(home, env)
        stop(proc)
        cold.append(elapsed)
        elapsed, proc, _ = start_server(home, env)
        stop(proc)
        warm.append(elapsed)
    return {
        "empty home (migrates)": statistics.median(cold),
        "existing db": statistics.median(warm),
    }


def bench_embedded_first_call(runs: int, env: dict[str, str], scratch: Path) -> float:
    home = scratch / "embedded"
    code = (
        "import time; t=time.perf_counter()\n"
        "from conveyor.connect import connect\nfrom conveyor.settings import Settings\n"
        "c = connect(Settings.from_env()); c.health(); print(time.perf_counter() - t)"
    )
    subprocess.run(  # creates the database and warms the bytecode cache
        [sys.executable, "-c", code],
        env={**env, "CONVEYOR_HOME": str(home)},
        check=True,
        capture_output=True,
    )
    times = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**env, "CONVEYOR_HOME": str(home)},
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        times.append(float(out.strip()))
    return statistics.median(times)


def bench_api(calls: int, settings_env: dict[str, str]) -> dict[str, tuple[float, float]]:
    from conveyor.connect import connect
    from conveyor.schemas import DeploymentCreate, RunState, StateUpdate
    from conveyor.settings import Settings

    settings = Settings.from_env(settings_env)
    results: dict[str, list[float]] = {"create run": [], "claim": [], "state report": []}
    with connect(settings) as api:
        api.put_deployment(
            DeploymentCreate(
                flow_name="bench",
                name="api",
                entrypoint="flows.py:noop",
                source={"kind": "local", "path": "/tmp"},
                version="sha256-" + "0" * 64,
            )
        )
        api.health()
        ids = []
        for _ in range(calls):
            t = time.perf_counter()
            ids.append(api.create_run("bench", "api").id)
            results["create run"].append(time.perf_counter() - t)
        for _ in range(calls):
            t = time.perf_counter()
            run = api.claim_run("default", worker="bench")
            results["claim"].append(time.perf_counter() - t)
            assert run is not None
            t = time.perf_counter()
            api.set_run_state(run.id, StateUpdate(worker="bench", state=RunState.RUNNING))
            results["state report"].append(time.perf_counter() - t)
    return {
        name: (statistics.median(v), statistics.quantiles(v, n=20)[18])
        for name, v in results.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as tmp:
        scratch = Path(tmp)
        compiled = {k: v for k, v in base_env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        compiled["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
        warm_home = scratch / "warmup"
        _, proc, _ = start_server(warm_home, compiled)  # fills the bytecode cache
        stop(proc)
        print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")
        print(f"\nserver start -> healthy, median of {args.runs}")
        for label, env in (("bytecode cached", compiled), ("this env as is", base_env)):
            for case, value in bench_start(
                args.runs, env, scratch / label.replace(" ", "-")
            ).items():
                print(f"  {label:16} {case:24} {value * 1000:7.0f} ms")
        first = bench_embedded_first_call(args.runs, compiled, scratch)
        print(f"\nembedded client, new process to first answer: {first * 1000:.0f} ms")
        print(f"\nAPI latency on SQLite, {args.calls} calls each: median / p95")
        home = scratch / "api-embedded"
        for name, (median, p95) in bench_api(args.calls, {"CONVEYOR_HOME": str(home)}).items():
            print(f"  embedded  {name:14} {median * 1000:6.2f} ms / {p95 * 1000:6.2f} ms")
        home = scratch / "api-http"
        _, proc, url = start_server(home, compiled)
        try:
            env = {"CONVEYOR_HOME": str(home), "CONVEYOR_API_URL": url}
            for name, (median, p95) in bench_api(args.calls, env).items():
                print(f"  http      {name:14} {median * 1000:6.2f} ms / {p95 * 1000:6.2f} ms")
        finally:
            stop(proc)
        print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

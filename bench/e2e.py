"""End-to-end benchmark: deploy, trigger → completed, throughput and worker memory.

Fixture: a flow project of 200 files / 5 MiB (``flows.py`` with a trivial flow, plus 199 other
files, half Python-like text, half random bytes). For each backend — the embedded default
(SQLite, no server) and a ``conveyor server start`` process (SQLite behind HTTP) — it measures:

- **deploy**: ``from_source(...).deploy(...)`` in-process with a warm client (new code: bundle
  written; unchanged code: nothing written), and the wall time of the ``conveyor deploy`` command;
- **trigger → completed** for the trivial flow against an idle worker (``conveyor worker start``
  in a subprocess): *warm* (the version is in the worker's cache) and *cold* (a new version each
  time: one file changed and redeployed, so the worker fetches from the bundle store). Reported
  from the server's timestamps (``ended_at - created``) and as seen by the client that polls;
- **runs per minute**: 100 trivial runs queued at once, one worker with ``--limit 4``
  (first ``created`` → last ``ended_at``);
- **worker memory**: idle RSS of the worker process, and the peak RSS of the worker plus all its
  children while it works through those 100 runs (sampled every 20 ms from ``/proc``).

Run: ``.venv/bin/python bench/e2e.py [--runs N] [--gap SECONDS] [--work-dir DIR]``. Prints a
Markdown report. Single triggers wait ``--gap`` seconds first (0.5: an idle worker, whose spare
workspace is ready; back-to-back runs are what the throughput figure measures). ``--work-dir``
is passed to the workers (``/dev/shm/...`` takes the disk out of the per-run copy). Subprocesses
run without ``PYTHONDONTWRITEBYTECODE`` (with it, every command recompiles its imports).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "_work" / "e2e"
FILES = 200
POLL_SECONDS = 0.02
"""How often the triggering client asks for the run (the measure itself uses server times)."""
TOTAL = 5 * 1024 * 1024
FLOW = """
from conveyor import flow


@flow
def noop() -> int:
    return 1
"""


def make_project(root: Path) -> int:
    """The 200-file / 5 MiB project; returns its size in bytes."""
    rng = random.Random(20261121)
    root.mkdir(parents=True)
    (root / "flows.py").write_text(FLOW.lstrip())
    written = (root / "flows.py").stat().st_size
    per_file = (TOTAL - written) // (FILES - 1)
    for i in range(FILES - 1):
        folder = root / f"pkg{i % 10}" / f"sub{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        if i % 2:
            data, name = rng.randbytes(per_file), f"data_{i}.bin"
        else:
            words = [f"name_{rng.randrange(10_000)}" for _ in range(per_file // 8)]
            text = "\n".join(f"{w} = compute({w!r}, {j})" for j, w in enumerate(words))
            data, name = text.encode()[:per_file], f"module_{i}.py"
        (folder / name).write_bytes(data)
        written += len(data)
    return written


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(CONVEYOR_HOME=str(home), **extra)
    return env


def conveyor(*args: str, env: dict[str, str], cwd: Path | None = None) -> float:
    """Run a command; its wall time."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "conveyor", *args], env=env, cwd=cwd, check=True, capture_output=True
    )
    return time.perf_counter() - start


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_pids(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    todo.extend(int(c) for c in children.read().split())
        except OSError:
            continue
    return pids


class PeakSampler:
    """The highest summed RSS of a process and its descendants, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_kb = max(self.peak_kb, sum(rss_kb(p) for p in tree_pids(self.pid)))


@contextmanager
def background(
    args: list[str], *, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for(check: Callable[[], bool], timeout: float = 60, every: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step did not finish in time")
        time.sleep(every)


def _all_final(client: Any, ids: list[str]) -> bool:
    runs = client.list_runs(deployment="noop/bench", limit=1000)
    by_id = {run.id: run for run in runs}
    return all(i in by_id and by_id[i].state.is_final for i in ids)


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms"


def spread(values: list[float]) -> str:
    return f"{min(values) * 1000:.0f}-{max(values) * 1000:.0f}"


def bench_backend(
    label: str,
    env: dict[str, str],
    project: Path,
    runs: int,
    *,
    gap: float,
    worker_args: list[str],
) -> dict[str, Any]:
    from conveyor.connect import connect
    from conveyor.deploy import from_source
    from conveyor.settings import Settings

    settings = Settings.from_env(env)
    out: dict[str, Any] = {"label": label}
    home = settings.home
    with connect(settings) as client:
        client.list_pools()  # warm the client (the embedded app is built on first use)
        deployable = from_source(project, "flows.py:noop")
        deployable.deploy("bench", settings=settings, client=client)
        # deploy: new code (one file changed: a bundle is written), then unchanged code
        new, same = [], []
        for i in range(runs):
            (project / "pkg0" / "sub0" / "module_0.py").write_text(f"x = {i}  # {label}\n")
            start = time.perf_counter()
            deployable.deploy("bench", settings=settings, client=client)
            new.append(time.perf_counter() - start)
        for _ in range(runs):
            start = time.perf_counter()
            deployable.deploy("bench", settings=settings, client=client)
            same.append(time.perf_counter() - start)
        out["deploy_new"], out["deploy_same"] = new, same
        conveyor("deploy", "flows.py:noop", "--name", "bench", env=env, cwd=project)  # warm up
        out["deploy_cli"] = [
            conveyor("deploy", "flows.py:noop", "--name", "bench", env=env, cwd=project)
            for _ in range(max(3, runs // 2))
        ]

        phases: dict[str, list[dict[str, float]]] = {"warm": [], "cold": []}

        def trigger(kind: str = "") -> tuple[float, float]:
            if kind:
                time.sleep(gap)  # an idle worker, as between runs triggered by people or schedules
            start = time.perf_counter()
            run = client.create_run("noop", "bench")
            while not (done := client.get_run(run.id)).state.is_final:
                time.sleep(POLL_SECONDS)
            assert done.state.value == "completed", done.error
            assert done.ended_at is not None
            if kind:
                phases[kind].append(dict(done.timings))
            return (done.ended_at - done.created).total_seconds(), time.perf_counter() - start

        with background(
            ["worker", "start", *worker_args], env=env, log=home / "worker.log"
        ) as worker:
            wait_for(lambda: "worker started" in (home / "worker.log").read_text())
            time.sleep(2)
            out["idle_rss_kb"] = rss_kb(worker.pid)
            trigger()  # the current version into the cache
            warm = [trigger("warm") for _ in range(runs * 2)]
            cold = []
            for i in range(runs):
                (project / "pkg0" / "sub0" / "module_0.py").write_text(f"y = {i}  # cold\n")
                deployable.deploy("bench", settings=settings, client=client)
                cold.append(trigger("cold"))
            for kind, samples in phases.items():
                medians = {
                    k: round(statistics.median(p.get(k, 0.0) for p in samples) * 1000)
                    for k in ("queue", "fetch", "workspace", "start", "run")
                }
                print(f"{label} {kind} phases (median ms): {medians}", file=sys.stderr)
            out["warm_server"], out["warm_client"] = [w[0] for w in warm], [w[1] for w in warm]
            out["cold_server"], out["cold_client"] = [c[0] for c in cold], [c[1] for c in cold]

        throughput, peaks = [], []
        for attempt in range(3):
            log = home / f"worker-limit4-{attempt}.log"
            args = ["worker", "start", "--limit", "4", *worker_args]
            with background(args, env=env, log=log) as worker:
                wait_for(lambda log=log: "worker started" in log.read_text())
                trigger()
                with PeakSampler(worker.pid) as sampler:
                    ids = [client.create_run("noop", "bench").id for _ in range(100)]
                    wait_for(lambda ids=ids: _all_final(client, ids), timeout=300, every=0.25)
                done = [client.get_run(i) for i in ids]
                phases = {
                    k: statistics.median(r.timings.get(k, 0.0) for r in done)
                    for k in ("queue", "fetch", "workspace", "start", "run")
                }
                print(f"{label} throughput phases (median s): {phases}", file=sys.stderr)
                assert all(r.state.value == "completed" for r in done)
                span = max(r.ended_at for r in done if r.ended_at) - min(r.created for r in done)
                throughput.append(100 / span.total_seconds() * 60)
                peaks.append(sampler.peak_kb)
        out["per_minute"], out["peak_kb"] = throughput, peaks
    return out


def report(results: list[dict[str, Any]], *, size: int, runs: int) -> str:
    lines = [
        f"Fixture: {FILES} files, {size / 1024 / 1024:.1f} MiB; {runs} runs per figure "
        f"(warm: {runs * 2}); machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}.",
        "",
        "| measure | " + " | ".join(r["label"] for r in results) + " | target |",
        "|---|" + "---|" * len(results) + "---|",
    ]

    def row(name: str, cells: list[str], target: str = "") -> None:
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {target} |")

    row(
        "deploy, new code (bundle written), in-process",
        [median_ms(r["deploy_new"]) for r in results],
        "< 300 ms",
    )
    row(
        "deploy, unchanged code (nothing written), in-process",
        [median_ms(r["deploy_same"]) for r in results],
        "< 300 ms",
    )
    row("`conveyor deploy` command, wall", [median_ms(r["deploy_cli"]) for r in results])
    row(
        "trigger → completed, warm (server clock)",
        [f"{median_ms(r['warm_server'])} ({spread(r['warm_server'])})" for r in results],
        "< 300 ms",
    )
    row(
        "trigger → completed, warm (client polling)", [median_ms(r["warm_client"]) for r in results]
    )
    row(
        "trigger → completed, cold (server clock)",
        [f"{median_ms(r['cold_server'])} ({spread(r['cold_server'])})" for r in results],
    )
    row(
        "trigger → completed, cold (client polling)", [median_ms(r["cold_client"]) for r in results]
    )
    row(
        "runs per minute, 100 runs, `--limit 4`",
        [
            f"{statistics.median(r['per_minute']):.0f} "
            f"({min(r['per_minute']):.0f}-{max(r['per_minute']):.0f})"
            for r in results
        ],
        ">= 300",
    )
    row(
        "worker idle RSS",
        [f"{r['idle_rss_kb'] / 1024:.1f} MiB" for r in results],
        "< 40 MiB (HTTP)",
    )
    row(
        "peak RSS, worker + children, during the 100 runs",
        [f"{max(r['peak_kb']) / 1024:.0f} MiB" for r in results],
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="samples per figure (warm: twice)")
    parser.add_argument(
        "--gap", type=float, default=0.5, help="idle seconds before each single trigger"
    )
    parser.add_argument("--work-dir", default=None, help="the workers' --work-dir")
    args = parser.parse_args()
    options: dict[str, Any] = {
        "gap": args.gap,
        "worker_args": ["--work-dir", args.work_dir] if args.work_dir else [],
    }
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    results = []

    embedded_home = WORK / "embedded"
    project = WORK / "project-embedded"
    size = make_project(project)
    results.append(
        bench_backend("embedded (SQLite)", env_for(embedded_home), project, args.runs, **options)
    )

    server_home = WORK / "server"
    server_env = env_for(server_home / "srv")
    client_home = server_home / "client"
    with background(
        ["server", "start", "--port", "0"], env=server_env, log=WORK / "server.log"
    ) as server:
        wait_for(lambda: "listening on" in (WORK / "server.log").read_text(), timeout=30)
        url = re.search(r"listening on (http://\S+)", (WORK / "server.log").read_text())
        assert url is not None
        assert server.poll() is None
        project = WORK / "project-server"
        make_project(project)
        env = env_for(client_home, CONVEYOR_API_URL=url.group(1))
        results.append(bench_backend("server (HTTP, SQLite)", env, project, args.runs, **options))

    print(report(results, size=size, runs=args.runs))
    print(f"\nCommand: .venv/bin/python bench/e2e.py {' '.join(sys.argv[1:])}".rstrip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

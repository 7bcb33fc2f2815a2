"""CLI latency: wall time of `conveyor` commands, embedded and against a server (issue 8, item 5).

Measures any checkout: pass its venv directory, its venv ``python`` (run as ``python -m
conveyor``) or its ``conveyor`` script; the script imports nothing from Conveyor itself, so the
same file measures the code before and after a change. Every figure is the wall time of one
command, from spawning the process to its exit, median (and min-max) over ``--runs``
repetitions, after ``--warmup`` untimed runs of each command (which also create the database and
fill the bytecode cache). The quick commands are timed round-robin (one of each per repetition),
so a load change on the machine touches them all alike.

Two modes, each on a throwaway ``CONVEYOR_HOME`` and a copy of ``examples/hello``:

- **embedded**: no ``CONVEYOR_API_URL`` (the CLI reaches the SQLite database itself);
- **server**: ``conveyor server start`` on a free 127.0.0.1 port over its own throwaway home; the
  commands get ``CONVEYOR_API_URL``. The server is stopped by PID at the end.

Commands: ``conveyor --help``; ``runs ls``; ``deployments ls``; ``run hello/idle`` (no watch: a
deployment on a pool no worker serves, so the created runs never load the machine); ``deploy
flows.py:hello`` of unchanged code (deployed once untimed, then re-deployed); and ``run
hello/bench --watch`` with a ``conveyor worker start`` running (stopped by PID), each started
``--gap`` seconds after the previous run ended (an idle worker). For ``--watch`` the table puts
the wall time next to the sum of the run's own phases (``timings`` of ``conveyor runs inspect
RUN --json``: queue + fetch + workspace + start + run, as the worker and server report them) and
the difference, per run, whose median is held to the target. ``python -c pass`` is the floor of
any command.

Targets are issue 8's: embedded ``--help`` < 150 ms, ``runs ls`` / ``deployments ls`` < 300 ms,
``run`` < 350 ms, ``deploy`` unchanged < 400 ms, ``run --watch`` <= phases + 200 ms; with a
server, within 50 ms of these (the server column's targets are 50 ms higher).

Run: ``.venv/bin/python bench/cli.py [TARGET] [--runs 15] [--warmup 2] [--gap 0.5]`` (TARGET
defaults to this checkout's ``.venv``). Prints a Markdown report on stdout, progress on stderr.
Subprocesses run without ``PYTHONDONTWRITEBYTECODE`` (with it, every command recompiles its
imports) and without any other ``CONVEYOR_*`` variable. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "hello"
COMMAND_TIMEOUT = 120.0
"""Seconds any single command may take before the benchmark gives up on it."""
WATCH_TIMEOUT = 60
START_TIMEOUT = 60.0
PHASES = ("queue", "fetch", "workspace", "start", "run")

# (row label, command arguments, embedded target in ms)
QUICK: list[tuple[str, list[str], float]] = [
    ("`conveyor --help`", ["--help"], 150),
    ("`conveyor runs ls`", ["runs", "ls"], 300),
    ("`conveyor deployments ls`", ["deployments", "ls"], 300),
    ("`conveyor run hello/idle` (no watch)", ["run", "hello/idle"], 350),
    ("`conveyor deploy` (unchanged code)", ["deploy", "flows.py:hello", "--name", "bench"], 400),
]
WATCH_TARGET_MS = 200.0
SERVER_SLACK_MS = 50.0


class BenchError(Exception):
    """A command failed or a wait ran out; the message says which."""


@dataclass
class Mode:
    """The samples (seconds) of one mode, by row label; errors instead of samples."""

    label: str
    samples: dict[str, list[float]] = field(default_factory=dict)
    phases: list[dict[str, float]] = field(default_factory=list)
    spans: list[float] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def resolve_target(target: Path) -> tuple[list[str], Path]:
    """The argv prefix that runs ``conveyor``, and the venv's python."""
    if target.is_dir():
        for venv in (target, target / ".venv"):
            if (venv / "bin" / "conveyor").is_file():
                return [str(venv / "bin" / "conveyor")], venv / "bin" / "python"
        raise SystemExit(f"no bin/conveyor under {target}: pass a venv, its python or conveyor")
    if not target.is_file():
        raise SystemExit(f"{target} does not exist: pass a venv, its python or conveyor")
    if target.name.startswith("python"):
        return [str(target), "-m", "conveyor"], target
    if not (target.parent / "python").is_file():
        raise SystemExit(f"no python beside {target}: pass a venv, its python or conveyor")
    return [str(target)], target.parent / "python"


def base_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(CONVEYOR_HOME=str(home), COLUMNS="120", **extra)
    return env


def timed(argv: list[str], *, env: dict[str, str], cwd: Path) -> tuple[float, str]:
    """Run one command to its exit; its wall time and stdout. Raises `BenchError` on failure."""
    shown = " ".join(argv[1:]) if len(argv) > 1 else argv[0]
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"`{shown}` did not exit within {COMMAND_TIMEOUT:.0f}s") from None
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or [""]
        raise BenchError(f"`{shown}` exited {proc.returncode}: {last[0]}")
    return elapsed, proc.stdout


def wait_for(check: Callable[[], bool], what: str, proc: subprocess.Popen[bytes]) -> None:
    """Poll ``check`` until true; `BenchError` if ``proc`` exits or ``START_TIMEOUT`` passes."""
    deadline = time.monotonic() + START_TIMEOUT
    while not check():
        if proc.poll() is not None:
            raise BenchError(f"{what}: the process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not ready after {START_TIMEOUT:.0f}s")
        time.sleep(0.01)


@contextmanager
def background(
    argv: list[str], *, env: dict[str, str], cwd: Path, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a long-running command; stop it by PID (SIGTERM, then SIGKILL) on the way out."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)


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


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def bench_quick(
    mode: Mode, conveyor: list[str], env: dict[str, str], cwd: Path, args: argparse.Namespace
) -> None:
    """The quick commands, round-robin: ``--warmup`` untimed rounds, then ``--runs`` timed."""
    for rep in range(args.warmup + args.runs):
        for label, command, _ in QUICK:
            if label in mode.errors:
                continue
            try:
                elapsed, _ = timed([*conveyor, *command], env=env, cwd=cwd)
            except BenchError as exc:
                mode.errors[label] = str(exc)
                print(f"  {mode.label}: {exc}", file=sys.stderr)
                continue
            if rep >= args.warmup:
                mode.samples.setdefault(label, []).append(elapsed)
        print(f"  {mode.label}: round {rep + 1}/{args.warmup + args.runs}", file=sys.stderr)


def bench_watch(
    mode: Mode, conveyor: list[str], env: dict[str, str], cwd: Path, args: argparse.Namespace
) -> None:
    """``run --watch`` against a running worker: wall time, and the run's own phase timings."""
    label = "`conveyor run hello/bench --watch`"
    worker = [*conveyor, "worker", "start", "--shutdown-timeout", "5"]
    log = Path(env["CONVEYOR_HOME"]) / "bench-worker.log"
    try:
        with background(worker, env=env, cwd=cwd, log=log) as proc:

            def started() -> bool:
                return "worker started" in log.read_text(errors="replace")

            wait_for(started, "worker", proc)
            for rep in range(args.warmup + args.runs):
                time.sleep(args.gap)
                command = ["run", "hello/bench", "--watch", "--timeout", str(WATCH_TIMEOUT)]
                elapsed, out = timed([*conveyor, *command], env=env, cwd=cwd)
                run_id = out.strip().splitlines()[0].strip() if out.strip() else ""
                _, shown = timed([*conveyor, "runs", "inspect", run_id, "--json"], env=env, cwd=cwd)
                run = json.loads(shown)
                if run["state"] != "completed":
                    raise BenchError(f"run {run_id} ended {run['state']}: {run.get('error')}")
                if rep < args.warmup:
                    continue
                mode.samples.setdefault(label, []).append(elapsed)
                mode.phases.append({k: float(v) for k, v in run["timings"].items()})
                span = _parse_time(run["ended_at"]) - _parse_time(run["created"])
                mode.spans.append(span.total_seconds())
                print(f"  {mode.label}: watch {rep + 1}/{args.warmup + args.runs}", file=sys.stderr)
    except (BenchError, KeyError, ValueError, IndexError) as exc:
        mode.errors[label] = str(exc)
        print(f"  {mode.label}: {exc}", file=sys.stderr)


def prepare(conveyor: list[str], env: dict[str, str], project: Path) -> None:
    """The idle pool and the two deployments (``hello/bench`` on ``default``, ``hello/idle``)."""
    timed([*conveyor, "pool", "create", "idle"], env=env, cwd=project)
    timed([*conveyor, "deploy", "flows.py:hello", "--name", "bench"], env=env, cwd=project)
    deploy_idle = ["deploy", "flows.py:hello", "--name", "idle", "--pool", "idle"]
    timed([*conveyor, *deploy_idle], env=env, cwd=project)


def bench_mode(
    label: str, conveyor: list[str], env: dict[str, str], scratch: Path, args: argparse.Namespace
) -> Mode:
    mode = Mode(label)
    project = scratch / "project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__"))
    print(f"{label}: preparing", file=sys.stderr)
    try:
        prepare(conveyor, env, project)
    except BenchError as exc:
        mode.errors["set-up (pool create, first deploys)"] = str(exc)
        print(f"  {label}: {exc}", file=sys.stderr)
        return mode
    bench_quick(mode, conveyor, env, project, args)
    bench_watch(mode, conveyor, env, project, args)
    return mode


def bench_floor(python: Path, env: dict[str, str], runs: int) -> list[float]:
    return [timed([str(python), "-c", "pass"], env=env, cwd=ROOT)[0] for _ in range(runs + 1)][1:]


def ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def cell(values: list[float]) -> str:
    return f"{ms(values):.0f} ms ({min(values) * 1000:.0f}-{max(values) * 1000:.0f})"


def verdict(value: float, target: float, *, inclusive: bool = False) -> str:
    return "pass" if (value <= target if inclusive else value < target) else "FAIL"


def report(modes: list[Mode], floor: list[float]) -> list[str]:
    head = "| command |" + "".join(f" {m.label} | target | |" for m in modes)
    lines = [head, "|---|" + "---:|---:|---|" * len(modes)]
    for label, _, target in QUICK:
        cells = []
        for i, mode in enumerate(modes):
            limit = target + (SERVER_SLACK_MS if i else 0)
            if label in mode.errors or label not in mode.samples:
                cells.append(f" error | < {limit:.0f} ms | FAIL |")
                continue
            values = mode.samples[label]
            cells.append(f" {cell(values)} | < {limit:.0f} ms | {verdict(ms(values), limit)} |")
        lines.append(f"| {label} |" + "".join(cells))
    watch = "`conveyor run hello/bench --watch`"
    rows: dict[str, list[str]] = {"wall": [], "phases": [], "diff": [], "span": []}
    for i, mode in enumerate(modes):
        limit = WATCH_TARGET_MS + (SERVER_SLACK_MS if i else 0)
        if watch in mode.errors or watch not in mode.samples:
            for key in rows:
                rows[key].append(" error | | |")
            continue
        walls = mode.samples[watch]
        sums = [sum(p.values()) for p in mode.phases]
        diffs = [w - s for w, s in zip(walls, sums, strict=True)]
        rows["wall"].append(f" {cell(walls)} | | |")
        rows["phases"].append(f" {cell(sums)} | | |")
        rows["diff"].append(
            f" {cell(diffs)} | <= {limit:.0f} ms | {verdict(ms(diffs), limit, inclusive=True)} |"
        )
        rows["span"].append(f" {cell(mode.spans)} | | |")
    names = {
        "wall": f"{watch}, wall",
        "phases": "↳ the run's own phases (sum of `timings`)",
        "diff": "↳ wall - phases (per run)",
        "span": "↳ server clock: created → ended",
    }
    for key, name in names.items():
        lines.append(f"| {name} |" + "".join(rows[key]))
    lines.append(f"| floor: `python -c pass` | {cell(floor)} | | |" + " | | |" * (len(modes) - 1))
    lines.append("")
    for mode in modes:
        if mode.phases:
            medians = ", ".join(
                f"{k} {statistics.median(p.get(k, 0.0) for p in mode.phases) * 1000:.0f}"
                for k in sorted({k for p in mode.phases for k in p}, key=_phase_order)
            )
            lines.append(f"- {mode.label}, `--watch` phases (median ms): {medians}.")
        for label, error in mode.errors.items():
            lines.append(f"- {mode.label}, {label}: error: {error}")
    return lines


def _phase_order(key: str) -> tuple[int, str]:
    return (PHASES.index(key) if key in PHASES else len(PHASES), key)


def describe(conveyor: list[str], python: Path, env: dict[str, str]) -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    version = timed(
        [str(python), "-c", "import platform; print(platform.python_version())"], env=env, cwd=ROOT
    )[1].strip()
    venv = python.absolute().parent.parent
    checkout = venv.parent if python.parent.name == "bin" else None
    commit = ""
    if checkout is not None and (checkout / ".git").exists():
        rev = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        commit = f" at {rev.stdout.strip()}" if rev.returncode == 0 else ""
    where = f"{checkout}{commit}" if checkout else " ".join(conveyor)
    return (
        f"Target: `{' '.join(conveyor)}` ({where}), Python {version}; machine: "
        f"{platform.machine()} {model}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}."
    )


def bench_server(conveyor: list[str], scratch: Path, args: argparse.Namespace) -> Mode:
    """The same commands with ``CONVEYOR_API_URL`` set to a server started for the purpose."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server_env = base_env(scratch / "server-home")
    (scratch / "server-home").mkdir()
    argv = [*conveyor, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    log = scratch / "server.log"
    with background(argv, env=server_env, cwd=scratch, log=log) as proc:
        try:
            wait_for(lambda: healthy(url), f"server on {url}", proc)
        except BenchError as exc:
            mode = Mode("server (HTTP)")
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            mode.errors["`conveyor server start`"] = f"{exc}: {tail[0]}"
            return mode
        env = base_env(scratch / "client-home", CONVEYOR_API_URL=url)
        return bench_mode("server (HTTP)", conveyor, env, scratch / "s", args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "target",
        nargs="?",
        type=Path,
        default=ROOT / ".venv",
        help="a checkout's venv directory, its python, or its conveyor script",
    )
    parser.add_argument("--runs", type=int, default=15, help="timed repetitions per command")
    parser.add_argument("--warmup", type=int, default=2, help="untimed repetitions first")
    parser.add_argument("--gap", type=float, default=0.5, help="idle seconds before each --watch")
    parser.add_argument("--skip-server", action="store_true", help="only the embedded mode")
    args = parser.parse_args()
    conveyor, python = resolve_target(args.target)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-cli-") as tmp:
        scratch = Path(tmp)
        machine = describe(conveyor, python, base_env(scratch / "probe"))
        floor = bench_floor(python, base_env(scratch / "floor"), args.runs)
        modes = [
            bench_mode("embedded", conveyor, base_env(scratch / "embedded"), scratch / "e", args)
        ]
        if not args.skip_server:
            modes.append(bench_server(conveyor, scratch, args))
    load_after = os.getloadavg()
    lines = [
        machine,
        f"Load average (1/5/15 min): before {'/'.join(f'{x:.2f}' for x in load_before)}, "
        f"after {'/'.join(f'{x:.2f}' for x in load_after)}. Medians of {args.runs} runs "
        f"after {args.warmup} warm-up runs (min-max in brackets).",
        "",
        *report(modes, floor),
        "",
        f"Command: `python bench/cli.py {' '.join(sys.argv[1:])}`",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

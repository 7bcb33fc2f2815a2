"""Cost against tree size (issue 14): what a run, a commit, a fetch and a deploy cost at 5 / 50 /
200 MB, each next to the limit it should approach, measured in the same run.

Measures any checkout: pass its venv directory (or its venv ``python``); the measuring code runs
under that python (`bench/_trees_probe.py` and ``conveyor worker start``), and this driver
imports nothing from Conveyor, so the same file measures the code before and after a change.

Fixtures, generated per size: a tree of N MB with 40 files per MB, in mixed sizes (a long-tailed
spread from 64 bytes to about 40x the mean; 60 % Python-like text in packages, 40 % random
bytes), plus ``flow.py`` (a trivial flow importing ``lib/util.py``) and a small ``README.md``.
Each size gets its own throwaway ``CONVEYOR_HOME`` (embedded SQLite, the default directory
bundle store). Rows, medians of ``--runs``:

- **warm run**: trigger → completed (server clock: ``created`` → ``ended_at``) of the trivial
  flow on an idle ``conveyor worker start --limit 4`` whose cache holds the version, ``--gap``
  seconds after the previous run; ``(…)`` is the worker's ``workspace`` timing. Limit: a process
  start (``python -c "import conveyor.worker.child"``);
- **runs/min**: 20 runs queued at once on that worker (first ``created`` → last ``ended_at``).
  Limit: the 5 MB rate of the same run;
- **peak work dir**: the largest size (allocated blocks, hard links counted once, mounts not
  descended into: ``du -x``) of the worker's ``--work-dir`` while 8 runs are queued at once,
  sampled every 0.1 s. Limit: one checkout;
- **one-file commit**: a new commit changing ``README.md``, ``--gap`` seconds after the previous
  one, then `CodeCache.checkout` of it with the git mirror and the previous commit cached (the
  gap leaves the cache idle between commits, as it is between pushes). Limit: ``git fetch
  --depth 1`` of that commit + ``git checkout`` in a plain clone (the changed bytes);
- **cold fetch**: `CodeCache.checkout` of the deployed bundle into an empty cache, as a ratio to
  ``tar -x --zstd`` of the same archive (the limit, ~1.2x);
- **git deploy, cache cold**: ``from_source(GitRepository(url), "flow.py:main").deploy(...)``
  with an empty cache directory. Limit: a sparse blobless clone of the entrypoint's files
  (``git clone --filter=blob:none --depth 1 --no-checkout`` + ``sparse-checkout set`` +
  ``checkout``);
- **local deploy, unchanged**: re-deploying the unchanged folder. Limit: a stat walk of it.

Git is served over smart HTTP with token auth on 127.0.0.1 (``tests/fixtures/git_server.py``
of this checkout, stopped by PID). Besides the table: the idle CPU of an embedded worker
(``conveyor worker start`` with nothing to do: utime + stime from ``/proc/PID/stat`` over
``--idle-seconds``).

Run: ``.venv/bin/python bench/trees.py [TARGET] [--sizes 5,50,200] [--runs 5] [--gap 0.5]
[--idle-seconds 30] [--rows warm,rate,...] [--user NAME] [--workspace MODE]`` (TARGET defaults
to this checkout's ``.venv``; ``--sizes 5,50`` for a quick run, ``--idle-seconds 0`` to skip the
idle measure, ``--rows`` to measure some rows only, ``--user`` to run the worker rows' worker as
a user that is not root, ``--workspace`` to pass it a workspace mode). Prints a Markdown report
on stdout, progress on stderr. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "bench" / "_trees_probe.py"
GIT_SERVER = ROOT / "tests" / "fixtures" / "git_server.py"
FILES_PER_MB = 40
TOKEN = "bench-trees-7f3a"
POOL = "trees"
BURST = 20
PEAK_BURST = 8
PROBE_TIMEOUT = 1800.0
FLOW = (
    "from conveyor import flow\n\nfrom lib.util import double\n\n\n"
    "@flow\ndef main(n: int = 1) -> int:\n    return double(n)\n"
)
UTIL = "def double(n: int) -> int:\n    return n * 2\n"
ENTRY_FILES = ["flow.py", "lib/__init__.py", "lib/util.py"]


class BenchError(Exception):
    """A command failed or a wait ran out; the message says which."""


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def resolve_python(target: Path) -> Path:
    """The python of the venv to measure."""
    if target.is_dir():
        for venv in (target, target / ".venv"):
            if (venv / "bin" / "python").is_file() and (venv / "bin" / "conveyor").is_file():
                return venv / "bin" / "python"
        raise SystemExit(f"no bin/python and bin/conveyor under {target}: pass a venv")
    if not target.is_file():
        raise SystemExit(f"{target} does not exist: pass a venv or its python")
    return target


# -- fixtures ------------------------------------------------------------------------------------


def make_tree(root: Path, megabytes: int, seed: int = 20261214) -> int:
    """The fixture tree; its size in bytes."""
    rng = random.Random(seed + megabytes)
    count = FILES_PER_MB * megabytes
    total = megabytes * 1024 * 1024
    weights = [min(rng.lognormvariate(0, 1.4), 40.0) for _ in range(count)]
    scale = total / sum(weights)
    size = 0
    for i, weight in enumerate(weights):
        length = max(64, int(weight * scale))
        package = f"pkg{i // 40:03d}"
        sub = f"sub{(i // 8) % 5}"
        if i % 5 < 3:
            path = root / package / sub / f"mod{i}.py"
            line = f"def f{i}(x):\n    return x + {i}  # {'y' * (i % 50)}\n".encode()
            data = (line * (length // len(line) + 1))[:length]
        else:
            path = root / package / sub / f"data{i}.bin"
            data = rng.randbytes(length)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        size += len(data)
    (root / "lib").mkdir()
    (root / "lib" / "__init__.py").write_text("")
    (root / "lib" / "util.py").write_text(UTIL)
    (root / "flow.py").write_text(FLOW)
    (root / "README.md").write_text("# bench tree\n")
    return size + len(FLOW) + len(UTIL) + 13


def tree_bytes(root: Path) -> int:
    """Allocated bytes under ``root``, each inode once, on ``root``'s file system only (what
    ``du -x`` says): a mount below it (an overlay workspace shows the cached checkout) is a view
    of files stored elsewhere, not bytes the work directory holds."""
    seen: set[tuple[int, int]] = set()
    total = 0
    try:
        device = os.lstat(root).st_dev
    except OSError:
        return 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in list(dirnames):
            try:
                if os.lstat(os.path.join(dirpath, name)).st_dev != device:
                    dirnames.remove(name)  # a mount point: not descended into, not counted
            except OSError:
                dirnames.remove(name)
        for name in (*dirnames, *filenames):
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key not in seen:
                seen.add(key)
                total += st.st_blocks * 512
    return total


# -- processes -----------------------------------------------------------------------------------


@dataclass
class Target:
    python: Path
    home: Path
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    """Who the worker runs as (``--user``); None: this process's user."""
    workspace: str | None = None
    """The worker's ``--workspace`` mode; None: its default."""

    def probe(self, command: str, **args: Any) -> Any:
        argv = [str(self.python), str(PROBE), command, json.dumps(args)]
        try:
            done = subprocess.run(
                argv, env=self.env, capture_output=True, text=True, timeout=PROBE_TIMEOUT
            )
        except subprocess.TimeoutExpired:
            raise BenchError(f"probe {command} did not finish in {PROBE_TIMEOUT:.0f}s") from None
        if done.returncode != 0:
            tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-5:]
            raise BenchError(f"probe {command} failed: " + " | ".join(tail))
        return json.loads(done.stdout.strip().splitlines()[-1])

    def conveyor(self) -> list[str]:
        return [str(self.python.parent / "conveyor")]


def environment(home: Path, base: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    basic = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    env.update(
        CONVEYOR_HOME=str(home),
        HOME=str(base),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_AUTHOR_NAME="bench",
        GIT_AUTHOR_EMAIL="bench@conveyor.invalid",
        GIT_COMMITTER_NAME="bench",
        GIT_COMMITTER_EMAIL="bench@conveyor.invalid",
        GIT_TERMINAL_PROMPT="0",
        BENCH_GIT_TOKEN=TOKEN,
        BENCH_GIT_BASIC=basic,
    )
    return env


def start_worker(target: Target, work_dir: Path, *, limit: int = 4) -> subprocess.Popen[bytes]:
    argv = [*target.conveyor(), "worker", "start", "--pool", POOL, "--limit", str(limit)]
    argv += ["--work-dir", str(work_dir)]
    if target.workspace is not None:
        argv += ["--workspace", target.workspace]
    as_user: dict[str, Any] = {}
    if target.user is not None:  # the worker's home, cache and work directory become the user's
        import pwd

        entry = pwd.getpwnam(target.user)
        subprocess.run(
            ["chown", "-R", f"{entry.pw_uid}:{entry.pw_gid}", str(target.home), str(work_dir)],
            check=True,
        )
        as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [entry.pw_gid]}
    proc = subprocess.Popen(
        argv,
        env=target.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(target.home / "worker.log", "ab"),  # noqa: SIM115 - closed with the process
        start_new_session=True,
        **as_user,
    )
    time.sleep(1.0)
    if proc.poll() is not None:
        raise BenchError(f"the worker exited at once; see {target.home / 'worker.log'}")
    return proc


def stop(proc: subprocess.Popen[Any], *, timeout: float = 30.0) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)


def git(*argv: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["git", *map(str, argv)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise BenchError(f"git {argv[0]} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def start_git_server(served: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, str(GIT_SERVER), str(served), "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if len(line) != 2 or line[0] != "LISTENING":
        stop(proc)
        raise BenchError("the git server did not start")
    return proc, int(line[1])


def process_start(python: Path, env: dict[str, str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([str(python), "-c", "import conveyor.worker.child"], env=env, check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


# -- one size ------------------------------------------------------------------------------------


@dataclass
class Row:
    """Medians (seconds, or the unit the row names) and the same-run limits, by size."""

    values: dict[int, float] = field(default_factory=dict)
    limits: dict[int, float] = field(default_factory=dict)
    extra: dict[int, float] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)


ROWS = ("warm", "rate", "peak", "commit", "cold", "git_deploy", "local_deploy")


def measure_size(
    python: Path, base: Path, megabytes: int, args: argparse.Namespace, rows: dict[str, Row]
) -> None:
    home = base / f"home-{megabytes}"
    home.mkdir()
    target = Target(python, home, environment(home, base), user=args.user, workspace=args.workspace)
    tree = base / f"tree-{megabytes}"
    tree.mkdir()
    size = make_tree(tree, megabytes)
    log(f"{megabytes} MB: tree of {FILES_PER_MB * megabytes + 4} files, {size / 2**20:.1f} MiB")
    name = f"t{megabytes}"

    def attempt(row: str, what: Callable[[], None]) -> None:
        if row not in args.rows:
            return
        try:
            what()
        except BenchError as exc:
            log(f"{megabytes} MB {row}: {exc}")
            rows[row].errors[megabytes] = str(exc)

    deployed = target.probe(
        "deploy", tree=str(tree), entrypoint="flow.py:main", name=name, pool=POOL
    )

    def local_deploy() -> None:
        got = target.probe(
            "redeploy",
            tree=str(tree),
            entrypoint="flow.py:main",
            name=name,
            pool=POOL,
            repeat=args.runs,
        )
        rows["local_deploy"].values[megabytes] = statistics.median(got["deploy"])
        rows["local_deploy"].limits[megabytes] = statistics.median(got["limit"])

    def cold() -> None:
        found = list(home.rglob(f"{deployed['version']}.tar.zst"))
        if not found:
            raise BenchError("the deployed bundle is not under CONVEYOR_HOME")
        scratch = base / f"scratch-{megabytes}"
        scratch.mkdir(exist_ok=True)
        got = target.probe(
            "cold-fetch",
            source=deployed["source"],
            version=deployed["version"],
            archive=str(found[0]),
            scratch=str(scratch),
            repeat=args.runs,
        )
        rows["cold"].values[megabytes] = statistics.median(got["fetch"])
        rows["cold"].limits[megabytes] = statistics.median(got["limit"])

    attempt("local_deploy", local_deploy)
    log(f"{megabytes} MB: local deploy done")
    attempt("cold", cold)
    log(f"{megabytes} MB: cold fetch done")

    work_dir = base / f"work-{megabytes}"
    work_dir.mkdir()
    worker = start_worker(target, work_dir) if {"warm", "rate", "peak"} & args.rows else None
    try:

        def warm() -> None:
            flow = deployed["flow_name"]
            target.probe("trigger", flow=flow, name=name, count=1, gap=0.1)  # fill the cache
            got = target.probe("trigger", flow=flow, name=name, count=args.runs, gap=args.gap)
            runs = got["runs"]
            bad = [r for r in runs if r["state"] != "completed"]
            if bad:
                raise BenchError(f"a run ended {bad[0]['state']}: {bad[0]['error']}")
            rows["warm"].values[megabytes] = statistics.median(
                r["ended"] - r["created"] for r in runs
            )
            rows["warm"].extra[megabytes] = statistics.median(
                r["timings"].get("workspace", 0.0) for r in runs
            )
            rows["warm"].limits[megabytes] = process_start(python, target.env, args.runs)

        def rate() -> None:
            time.sleep(args.gap)
            got = target.probe(
                "trigger", flow=deployed["flow_name"], name=name, count=BURST, burst=True
            )
            runs = got["runs"]
            span = max(r["ended"] for r in runs) - min(r["created"] for r in runs)
            rows["rate"].values[megabytes] = len(runs) * 60.0 / span

        def peak() -> None:
            time.sleep(args.gap)
            proc = subprocess.Popen(
                [
                    str(python),
                    str(PROBE),
                    "trigger",
                    json.dumps(
                        {
                            "flow": deployed["flow_name"],
                            "name": name,
                            "count": PEAK_BURST,
                            "burst": True,
                        }
                    ),
                ],
                env=target.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            highest = 0
            deadline = time.monotonic() + PROBE_TIMEOUT
            while proc.poll() is None and time.monotonic() < deadline:
                highest = max(highest, tree_bytes(work_dir))
                time.sleep(0.1)
            stop(proc)
            rows["peak"].values[megabytes] = highest
            rows["peak"].limits[megabytes] = tree_bytes(tree)

        attempt("warm", warm)
        log(f"{megabytes} MB: warm runs done")
        attempt("rate", rate)
        log(f"{megabytes} MB: runs/min done")
        attempt("peak", peak)
        log(f"{megabytes} MB: peak work dir done")
    finally:
        if worker is not None:
            stop(worker)
    shutil.rmtree(work_dir, ignore_errors=True)
    if not {"git_deploy", "commit"} & args.rows:
        for path in (tree, home):
            subprocess.run(["chmod", "-R", "u+w", str(path)], check=False)
            shutil.rmtree(path, ignore_errors=True)
        return

    served = base / f"served-{megabytes}"
    bare = served / "trees.git"
    work = base / f"git-{megabytes}"
    shutil.copytree(tree, work)
    git("init", "-q", "-b", "main", work, env=target.env)
    git("add", "-A", cwd=work, env=target.env)
    git("commit", "-q", "-m", "bench tree", cwd=work, env=target.env)
    git("init", "-q", "--bare", "-b", "main", bare, env=target.env)
    git("config", "uploadpack.allowFilter", "true", cwd=bare, env=target.env)
    git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=bare, env=target.env)
    git("push", "-q", bare, "HEAD:refs/heads/main", cwd=work, env=target.env)
    (bare / "conveyor-test.json").write_text(json.dumps({"basic": [f"x-access-token:{TOKEN}"]}))
    server, port = start_git_server(served)
    url = f"http://127.0.0.1:{port}/trees.git"
    scratch = base / f"scratch-{megabytes}"
    scratch.mkdir(exist_ok=True)
    try:

        def git_deploy() -> None:
            got = target.probe(
                "git-deploy",
                url=url,
                entrypoint="flow.py:main",
                name=f"{name}-git",
                pool=POOL,
                files=ENTRY_FILES,
                scratch=str(scratch),
                repeat=args.runs,
            )
            rows["git_deploy"].values[megabytes] = statistics.median(got["deploy"])
            rows["git_deploy"].limits[megabytes] = statistics.median(got["limit"])

        def commit() -> None:
            got = target.probe(
                "git-commit",
                url=url,
                work=str(work),
                bare=str(bare),
                small_file="README.md",
                scratch=str(scratch),
                repeat=args.runs,
                gap=args.gap,
            )
            rows["commit"].values[megabytes] = statistics.median(got["ensure"])
            rows["commit"].limits[megabytes] = statistics.median(got["limit"])

        attempt("git_deploy", git_deploy)
        log(f"{megabytes} MB: git deploy done")
        attempt("commit", commit)
        log(f"{megabytes} MB: one-file commit done")
    finally:
        stop(server)
    for path in (tree, work, served, scratch, home):
        subprocess.run(["chmod", "-R", "u+w", str(path)], check=False)
        shutil.rmtree(path, ignore_errors=True)


def idle_cpu(python: Path, base: Path, seconds: float) -> float:
    """Percent of one core an idle embedded worker uses."""
    home = base / "home-idle"
    home.mkdir()
    target = Target(python, home, environment(home, base))
    subprocess.run(
        [*target.conveyor(), "pool", "create", POOL],
        env=target.env,
        check=True,
        capture_output=True,
    )
    work_dir = base / "work-idle"
    work_dir.mkdir()
    worker = start_worker(target, work_dir, limit=1)
    try:
        time.sleep(3.0)  # past start-up
        before, start = cpu_ticks(worker.pid), time.monotonic()
        time.sleep(seconds)
        after, elapsed = cpu_ticks(worker.pid), time.monotonic() - start
    finally:
        stop(worker)
    return (after - before) / os.sysconf("SC_CLK_TCK") / elapsed * 100


# -- report --------------------------------------------------------------------------------------


def seconds(value: float) -> str:
    return f"{value:.2f} s" if value >= 0.1 else f"{value * 1000:.0f} ms"


def mib(value: float) -> str:
    megabytes = value / 2**20
    return f"{megabytes:.2f} MB" if megabytes < 10 else f"{megabytes:.0f} MB"


def report(rows: dict[str, Row], sizes: list[int], args: argparse.Namespace) -> list[str]:
    def cell(row: str, megabytes: int, show: Callable[[Row, int], str]) -> str:
        found = rows[row]
        if megabytes in found.errors:
            return "error"
        if megabytes not in found.values:
            return "-"
        return show(found, megabytes)

    lines = [
        "| operation | " + " | ".join(f"{s} MB" for s in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    base_rate = rows["rate"].values.get(sizes[0])
    table: list[tuple[str, str, Callable[[Row, int], str]]] = [
        (
            "warm run, trigger → completed (workspace) [limit: process start]",
            "warm",
            lambda r, s: f"{seconds(r.values[s])} ({seconds(r.extra[s])}) [{seconds(r.limits[s])}]",
        ),
        (
            f"one worker `--limit 4`, {BURST} back-to-back runs [limit: the {sizes[0]} MB rate]",
            "rate",
            lambda r, s: (
                f"{r.values[s]:.0f} runs/min" + (f" [{base_rate:.0f}]" if base_rate else "")
            ),
        ),
        (
            f"peak size of the work directory, {PEAK_BURST} runs queued [limit: one checkout]",
            "peak",
            lambda r, s: f"{mib(r.values[s])} [{mib(r.limits[s])}]",
        ),
        (
            "new commit changing one small file, mirror cached [limit: git fetch + checkout]",
            "commit",
            lambda r, s: f"{seconds(r.values[s])} [{seconds(r.limits[s])}]",
        ),
        (
            "cold fetch from the bundle store vs `tar x` of the same [limit ~1.2x]",
            "cold",
            lambda r, s: (
                f"{r.values[s] / r.limits[s]:.1f}x ({seconds(r.values[s])} vs "
                f"{seconds(r.limits[s])})"
            ),
        ),
        (
            "git deploy, deployer's cache cold [limit: sparse blobless fetch of the entrypoint]",
            "git_deploy",
            lambda r, s: f"{seconds(r.values[s])} [{seconds(r.limits[s])}]",
        ),
        (
            "local-folder deploy, unchanged code [limit: a stat walk]",
            "local_deploy",
            lambda r, s: f"{seconds(r.values[s])} [{seconds(r.limits[s])}]",
        ),
    ]
    for label, row, show in table:
        lines.append(f"| {label} | " + " | ".join(cell(row, s, show) for s in sizes) + " |")
    for row in ROWS:
        for megabytes, error in sorted(rows[row].errors.items()):
            lines.append(f"\n- {row} at {megabytes} MB failed: {error}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", nargs="?", type=Path, default=ROOT / ".venv")
    parser.add_argument("--sizes", default="5,50,200", help="tree sizes in MB, comma-separated")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--gap", type=float, default=0.5)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument(
        "--rows", default=",".join(ROWS), help=f"rows to measure (default all: {','.join(ROWS)})"
    )
    parser.add_argument(
        "--user",
        help="run the worker rows' worker as this user (the driver must be root; TARGET's python "
        "must be one the user can run)",
    )
    parser.add_argument("--workspace", help="the worker's --workspace mode (default: its own)")
    args = parser.parse_args()
    if args.user is not None and os.geteuid() != 0:
        raise SystemExit("--user needs the benchmark to run as root")
    args.rows = {r.strip() for r in args.rows.split(",") if r.strip()}
    if args.rows - set(ROWS):
        raise SystemExit(f"unknown rows: {', '.join(sorted(args.rows - set(ROWS)))}")
    python = resolve_python(args.target.absolute())
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    base = Path(tempfile.mkdtemp(prefix="conveyor-bench-trees-"))
    if args.user is not None:
        os.chmod(base, 0o755)  # the user's worker reaches its home and the trees below
    rows = {row: Row() for row in ROWS}
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    try:
        idle = idle_cpu(python, base, args.idle_seconds) if args.idle_seconds > 0 else None
        if idle is not None:
            log(f"idle embedded worker: {idle:.2f} % of a core")
        for megabytes in sizes:
            measure_size(python, base, megabytes, args, rows)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(base)], check=False)
        shutil.rmtree(base, ignore_errors=True)
    version = subprocess.run(
        [str(python), "-c", "import conveyor; print(conveyor.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    print(
        f"Target {python} (conveyor {version}); Python {platform.python_version()}, "
        f"{os.cpu_count()} cores, git {git('--version').split()[-1]}; runs={args.runs}, "
        f"gap={args.gap}s; worker user {args.user or 'this one'}, workspace "
        f"{args.workspace or 'default'}; load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after; "
        f"{time.monotonic() - started:.0f} s; {datetime.now():%Y-%m-%d}.\n"
    )
    if sizes:
        print("\n".join(report(rows, sizes, args)))
    if idle is not None:
        print(
            f"\nIdle embedded worker (`conveyor worker start`, no runs, {args.idle_seconds:.0f} s):"
            f" {idle:.2f} % of one core."
        )


if __name__ == "__main__":
    main()

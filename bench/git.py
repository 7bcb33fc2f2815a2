"""Benchmark of the git source: code-ready and trigger → completed, next to a plain shallow clone.

A 200-file / 5 MiB repository (half Python-like text, half random bytes, one commit, plus a
trivial flow) is served by the token-checking git smart-HTTP server of the tests
(``tests/fixtures/git_server.py``: ``git http-backend`` behind a stdlib HTTP server, filters
allowed) on 127.0.0.1. Medians of several runs:

- ``git clone --depth 1``: the plain shallow clone (token in an ``http.extraHeader`` through the
  environment, as Conveyor sends it), into an empty directory;
- cold code-ready: `CodeCache.ensure` on an empty cache (mirror init, depth-1 fetch of the
  commit with its blobs, files written from ``git cat-file --batch``, verify every blob, seal,
  rename), interleaved run by run with the plain clone;
- cold code-ready, sparse: the same with ``directories=["pkg0"]`` (a tenth of the files): a
  partial ``blob:none`` fetch, then one batch of just those blobs (all cold variants and the
  plain clone take turns, run by run, so that load on the machine hits them alike);
- warm code-ready: `CodeCache.ensure` of the cached commit, **with the git server stopped**;
- trigger → completed: ``create_run`` until the run is final, with a worker (the real process
  executor) already constructed: cold (empty cache) and warm;
- for comparison, the whole tree fetched partially (``PARTIAL_WHOLE_TREE``: ``blob:none``, then
  the blobs: two round trips), which is not the default.

Run: ``.venv/bin/python bench/git.py [--runs 5] [--warm 200]``. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "tests" / "fixtures" / "git_server.py"
FILES = 200
TOTAL = 5 * 1024 * 1024
TOKEN = "bench-token-4c1d"
FLOW = "from conveyor import flow\n\n\n@flow\ndef main(n: int = 1) -> int:\n    return n * 2\n"


def git(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["git", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def make_repo(root: Path) -> tuple[Path, str, int]:
    """A bare repository with the benchmark tree in one commit; (bare path, commit, bytes)."""
    rng = random.Random(20261121)
    work = root / "work"
    work.mkdir()
    per_file = TOTAL // FILES
    size = 0
    for i in range(FILES - 1):
        path = work / f"pkg{i % 10}" / f"mod{i}.py"
        path.parent.mkdir(exist_ok=True)
        if i % 2:
            data = rng.randbytes(per_file)
        else:
            line = f"def f{i}(x):\n    return x + {i}  # {'x' * 40}\n".encode()
            data = (line * (per_file // len(line) + 1))[:per_file]
        path.write_bytes(data)
        size += len(data)
    (work / "flow.py").write_text(FLOW)
    size += len(FLOW)
    git("init", "-q", "-b", "main", work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "bench tree", cwd=work)
    bare = root / "served" / "bench.git"
    git("init", "-q", "--bare", "-b", "main", bare)
    git("config", "uploadpack.allowFilter", "true", cwd=bare)
    git("push", "-q", bare, "HEAD:refs/heads/main", cwd=work)
    (bare / "conveyor-test.json").write_text(f'{{"basic": ["x-access-token:{TOKEN}"]}}')
    return bare, git("rev-parse", "HEAD", cwd=work), size


def start_server(root: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), str(root), "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    word, port = proc.stdout.readline().split()
    assert word == "LISTENING"
    return proc, int(port)


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


def median_of(runs: int, once: Callable[[], float]) -> tuple[float, list[float]]:
    samples = [once() for _ in range(runs)]
    return statistics.median(samples), samples


def plain_clone(url: str, scratch: Path) -> Callable[[], float]:
    header = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {header}",
    }

    def once() -> float:
        dest = Path(tempfile.mkdtemp(dir=scratch))
        start = time.perf_counter()
        git("-c", "credential.helper=", "clone", "-q", "--depth", "1", url, dest / "c", env=env)
        elapsed = time.perf_counter() - start
        shutil.rmtree(dest)
        return elapsed

    return once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warm", type=int, default=200)
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="conveyor-bench-git-"))
    os.environ.update(
        {
            "CONVEYOR_HOME": str(base / "home"),
            "HOME": str(base),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_AUTHOR_NAME": "bench",
            "GIT_AUTHOR_EMAIL": "bench@conveyor.invalid",
            "GIT_COMMITTER_NAME": "bench",
            "GIT_COMMITTER_EMAIL": "bench@conveyor.invalid",
            "BENCH_GIT_TOKEN": TOKEN,
        }
    )
    for key in ("CONVEYOR_API_URL", "CONVEYOR_CACHE_DIR", "CONVEYOR_DATABASE_URL"):
        os.environ.pop(key, None)

    import dataclasses

    import conveyor.sources.git.repository as git_source
    from conveyor.cache import CodeCache
    from conveyor.connect import connect
    from conveyor.deploy import from_source
    from conveyor.schemas import RunState
    from conveyor.settings import Settings
    from conveyor.sources.base import FetchContext
    from conveyor.sources.git import GitRepository
    from conveyor.worker.loop import Worker
    from conveyor.worker.options import WorkerOptions

    try:
        _bare, sha, size = make_repo(base)
        server, port = start_server(base / "served")
        url = f"http://127.0.0.1:{port}/bench.git"
        scratch = base / "scratch"
        scratch.mkdir()
        ctx = FetchContext(environ=os.environ)  # the token template resolves from here
        source = GitRepository(url, credentials="${BENCH_GIT_TOKEN}")
        assert source.resolve(ctx) == sha

        sparse = GitRepository(url, credentials="${BENCH_GIT_TOKEN}", directories=["pkg0"])

        def cold_ensure(which: GitRepository) -> float:
            cache = CodeCache(Path(tempfile.mkdtemp(dir=scratch)), max_bytes=10**10, context=ctx)
            start = time.perf_counter()
            cache.ensure(which, sha)
            elapsed = time.perf_counter() - start
            shutil.rmtree(cache.root, ignore_errors=True)
            return elapsed

        # interleaved, so that load on the machine hits both sides alike
        clone = plain_clone(url, scratch)
        clone_all, cold_all, sparse_all, two_rounds_all = [], [], [], []
        for _ in range(args.runs):
            clone_all.append(clone())
            cold_all.append(cold_ensure(source))
            sparse_all.append(cold_ensure(sparse))
            git_source.PARTIAL_WHOLE_TREE = True
            two_rounds_all.append(cold_ensure(source))
            git_source.PARTIAL_WHOLE_TREE = False
        clone_s, cold_s = statistics.median(clone_all), statistics.median(cold_all)
        sparse_s = statistics.median(sparse_all)
        two_rounds_s = statistics.median(two_rounds_all)

        # trigger -> completed, on the embedded server with a ready worker
        settings = Settings.from_env()
        client = connect(settings)
        deployment = from_source(source, "flow.py:main").deploy(
            "bench", settings=settings, client=client
        )

        def trigger(cache_root: Path | None) -> float:
            root = cache_root or Path(tempfile.mkdtemp(dir=scratch))
            worker = Worker.from_settings(
                dataclasses.replace(settings, cache_dir=root, cache_max_bytes=10**10),
                client,
                WorkerOptions(name="bench", poll_seconds=0.05),
            )
            start = time.perf_counter()
            run = client.create_run(deployment.flow_name, deployment.name, parameters={"n": 2})
            worker.work(burst=True)
            done = client.get_run(run.id)
            elapsed = time.perf_counter() - start
            assert done.state is RunState.COMPLETED, done.error
            assert done.version == sha
            if cache_root is None:
                shutil.rmtree(root, ignore_errors=True)
            return elapsed

        trigger_cold_s, trigger_cold_all = median_of(args.runs, lambda: trigger(None))
        warm_root = Path(tempfile.mkdtemp(dir=scratch))
        trigger(warm_root)  # fill it

        # the git server is stopped from here on: warm means no network at all
        stop_server(server)
        trigger_warm_s, trigger_warm_all = median_of(args.runs, lambda: trigger(warm_root))
        warm_cache = CodeCache(warm_root, max_bytes=10**10, context=ctx)
        warm_cache.ensure(source, sha)
        warm_samples = []
        for _ in range(args.warm):
            start = time.perf_counter()
            warm_cache.ensure(source, sha)
            warm_samples.append(time.perf_counter() - start)
        warm_s = statistics.median(warm_samples)
        client.close()

        def ms(x: float) -> str:
            return f"{x * 1000:.1f} ms" if x >= 0.001 else f"{x * 1000:.3f} ms"

        print(
            f"git {git('--version')}; Python {platform.python_version()}; "
            f"{os.cpu_count()} cores; repository {FILES} files, {size / 2**20:.1f} MiB, "
            f"1 commit; runs={args.runs}, warm calls={args.warm}\n"
        )
        print("| measure | median | all runs |")
        print("|---|---|---|")
        rows = [
            ("plain `git clone --depth 1` (token header)", clone_s, clone_all),
            ("cold code-ready (`ensure`, empty cache)", cold_s, cold_all),
            ("cold code-ready, sparse `directories=[pkg0]` (partial clone)", sparse_s, sparse_all),
            (
                "cold code-ready, whole tree fetched partially (2 round trips, not the default)",
                two_rounds_s,
                two_rounds_all,
            ),
            ("warm code-ready (`ensure`, git server stopped)", warm_s, []),
            ("trigger → completed, cold cache", trigger_cold_s, trigger_cold_all),
            ("trigger → completed, warm (git server stopped)", trigger_warm_s, trigger_warm_all),
        ]
        for label, median, samples in rows:
            shown = ", ".join(ms(s) for s in samples) if samples else f"{args.warm} calls"
            print(f"| {label} | {ms(median)} | {shown} |")
        print(
            f"\ncold / plain shallow clone = {cold_s / clone_s:.2f}x (target <= 1.2x); "
            f"warm = {warm_s * 1000:.2f} ms (target < 10 ms)"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The in-process half of `bench/trees.py`: run under the python of the checkout being measured.

``python bench/_trees_probe.py COMMAND JSON`` does one measurement with that checkout's Conveyor
and prints one JSON line. It uses only APIs that every measured checkout has (``from_source``,
``Settings``, ``connect``, ``CodeCache``, ``GitRepository``), so the same file measures the code
before and after a change. ``CONVEYOR_HOME`` (and a throwaway ``HOME``) come from the driver.

Commands:

- ``deploy``: deploy a folder (first deploy of the tree: bundle written); its deployment;
- ``redeploy``: re-deploy unchanged code ``repeat`` times, each next to a stat walk of the tree
  (the same-run limit), interleaved;
- ``trigger``: create runs one at a time (``gap`` s apart) and wait for each; or ``count`` at
  once (``burst``) and wait for all; the runs' server-side timestamps and timings;
- ``cold-fetch``: `CodeCache.checkout` of a stored bundle into an empty cache, next to
  ``tar -x --zstd`` of the same archive, interleaved;
- ``git-commit``: a commit changing one small file (``gap`` s after the previous one), then
  `CodeCache` of it with the mirror (and the previous commit) cached, next to ``git fetch`` +
  ``git checkout`` in a plain clone;
- ``git-deploy``: deploy from git with an empty cache, next to a sparse blobless clone of the
  entrypoint's files (``git clone --filter=blob:none --sparse --depth 1``), interleaved.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _settings(**changes: Any) -> Any:
    from conveyor.settings import Settings

    settings = Settings.from_env()
    return dataclasses.replace(settings, **changes) if changes else settings


def _client(settings: Any) -> Any:
    from conveyor.connect import connect

    return connect(settings)


def _ensure_pool(client: Any, pool: str) -> None:
    if pool not in {p.name for p in client.list_pools()}:
        client.create_pool(pool)


def _stat_walk(root: Path) -> int:
    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in (".git", "__pycache__")]
        for name in filenames:
            os.lstat(os.path.join(dirpath, name))
            count += 1
    return count


def deploy(args: dict[str, Any]) -> dict[str, Any]:
    from conveyor.deploy import from_source

    settings = _settings()
    with _client(settings) as client:
        _ensure_pool(client, args["pool"])
        start = time.perf_counter()
        deployment = from_source(args["tree"], args["entrypoint"]).deploy(
            args["name"], work_pool=args["pool"], settings=settings, client=client
        )
        elapsed = time.perf_counter() - start
    return {
        "flow_name": deployment.flow_name,
        "name": deployment.name,
        "version": deployment.version,
        "source": deployment.source,
        "seconds": elapsed,
    }


def redeploy(args: dict[str, Any]) -> dict[str, Any]:
    from conveyor.deploy import from_source

    settings = _settings()
    deploys, walks = [], []
    with _client(settings) as client:
        _ensure_pool(client, args["pool"])
        flow = from_source(args["tree"], args["entrypoint"])
        first = flow.deploy(args["name"], work_pool=args["pool"], settings=settings, client=client)
        for _ in range(args["repeat"]):
            start = time.perf_counter()
            again = flow.deploy(
                args["name"], work_pool=args["pool"], settings=settings, client=client
            )
            deploys.append(time.perf_counter() - start)
            assert again.version == first.version, "the tree changed during the benchmark"
            start = time.perf_counter()
            _stat_walk(Path(args["tree"]))
            walks.append(time.perf_counter() - start)
    return {"deploy": deploys, "limit": walks}


def trigger(args: dict[str, Any]) -> dict[str, Any]:
    settings = _settings()
    deadline_each = float(args.get("timeout", 300))
    runs: list[dict[str, Any]] = []
    with _client(settings) as client:
        if args.get("burst"):
            ids = [client.create_run(args["flow"], args["name"]).id for _ in range(args["count"])]
            runs = [_wait(client, run_id, deadline_each * len(ids)) for run_id in ids]
        else:
            for _ in range(args["count"]):
                time.sleep(float(args.get("gap", 0.5)))
                run_id = client.create_run(args["flow"], args["name"]).id
                runs.append(_wait(client, run_id, deadline_each))
    return {"runs": runs}


def _wait(client: Any, run_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = client.get_run(run_id)
        if run.ended_at is not None:
            return {
                "state": str(run.state.value),
                "created": run.created.timestamp(),
                "ended": run.ended_at.timestamp(),
                "timings": dict(run.timings),
                "error": run.error,
            }
        if time.monotonic() > deadline:
            raise SystemExit(f"run {run_id} did not finish within {timeout:.0f}s")
        time.sleep(0.01)


def cold_fetch(args: dict[str, Any]) -> dict[str, Any]:
    from conveyor.cache import CodeCache

    scratch = Path(args["scratch"])
    archive = Path(args["archive"])
    fetches, tars = [], []
    for _ in range(args["repeat"]):
        root = Path(tempfile.mkdtemp(dir=scratch))
        cache = CodeCache(root, max_bytes=10**12)
        start = time.perf_counter()
        with cache.checkout(args["source"], args["version"]):
            fetches.append(time.perf_counter() - start)
        _remove(root)
        dest = Path(tempfile.mkdtemp(dir=scratch))
        start = time.perf_counter()
        subprocess.run(["tar", "-x", "--zstd", "-f", str(archive), "-C", str(dest)], check=True)
        tars.append(time.perf_counter() - start)
        _remove(dest)
    return {"fetch": fetches, "limit": tars}


def _remove(path: Path) -> None:
    for dirpath, dirnames, _ in os.walk(path):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o755)
    shutil.rmtree(path, ignore_errors=True)


def _git(*argv: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    done = subprocess.run(
        ["git", *argv], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def _auth_args() -> list[str]:
    return ["-c", f"http.extraHeader=Authorization: Basic {os.environ['BENCH_GIT_BASIC']}"]


def git_commit(args: dict[str, Any]) -> dict[str, Any]:
    from conveyor.cache import CodeCache
    from conveyor.sources.base import FetchContext
    from conveyor.sources.git import GitRepository

    work, url = Path(args["work"]), args["url"]
    scratch = Path(args["scratch"])
    ctx = FetchContext(environ=os.environ)
    source = GitRepository(url, credentials="${BENCH_GIT_TOKEN}")
    cache = CodeCache(Path(tempfile.mkdtemp(dir=scratch)), max_bytes=10**12, context=ctx)
    with cache.checkout(source, source.resolve(ctx)):
        pass  # the mirror and the current commit are cached
    plain = scratch / f"plain-{time.time_ns()}"
    _git(*_auth_args(), "clone", "-q", "--depth", "1", url, str(plain))
    ensures, fetches = [], []
    for i in range(args["repeat"]):
        time.sleep(float(args.get("gap", 0)))  # the cache idle between commits
        small = work / args["small_file"]
        small.write_text(small.read_text() + f"# change {i} {time.time_ns()}\n")
        _git("commit", "-q", "-am", f"change {i}", cwd=work)
        _git("push", "-q", args["bare"], "HEAD:refs/heads/main", cwd=work)
        sha = _git("rev-parse", "HEAD", cwd=work)
        start = time.perf_counter()
        with cache.checkout(source, sha):
            ensures.append(time.perf_counter() - start)
        start = time.perf_counter()
        _git(*_auth_args(), "fetch", "-q", "--depth", "1", "origin", sha, cwd=plain)
        _git("checkout", "-q", sha, cwd=plain)
        fetches.append(time.perf_counter() - start)
    _remove(cache.root)
    shutil.rmtree(plain, ignore_errors=True)
    return {"ensure": ensures, "limit": fetches}


def git_deploy(args: dict[str, Any]) -> dict[str, Any]:
    from conveyor.deploy import from_source
    from conveyor.sources.git import GitRepository

    scratch = Path(args["scratch"])
    url = args["url"]
    deploys, sparse = [], []
    base = _settings()
    with _client(base) as client:
        _ensure_pool(client, args["pool"])
        for _ in range(args["repeat"]):
            root = Path(tempfile.mkdtemp(dir=scratch))
            settings = dataclasses.replace(base, cache_dir=root)
            source = GitRepository(url, credentials="${BENCH_GIT_TOKEN}")
            start = time.perf_counter()
            from_source(source, args["entrypoint"]).deploy(
                args["name"], work_pool=args["pool"], settings=settings, client=client
            )
            deploys.append(time.perf_counter() - start)
            _remove(root)
            dest = scratch / f"sparse-{time.time_ns()}"
            start = time.perf_counter()
            _git(
                *_auth_args(),
                "clone",
                "-q",
                "--filter=blob:none",
                "--depth",
                "1",
                "--no-checkout",
                url,
                str(dest),
            )
            _git("sparse-checkout", "set", "--no-cone", *args["files"], cwd=dest)
            _git(*_auth_args(), "checkout", "-q", "main", cwd=dest)
            sparse.append(time.perf_counter() - start)
            shutil.rmtree(dest, ignore_errors=True)
    return {"deploy": deploys, "limit": sparse}


COMMANDS = {
    "deploy": deploy,
    "redeploy": redeploy,
    "trigger": trigger,
    "cold-fetch": cold_fetch,
    "git-commit": git_commit,
    "git-deploy": git_deploy,
}


if __name__ == "__main__":
    result = COMMANDS[sys.argv[1]](json.loads(sys.argv[2]))
    print(json.dumps(result))

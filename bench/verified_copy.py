"""Benchmark of the verified workspace copy against the plain copy it replaced.

The same 200-file / 5 MiB tree as ``bench/cache.py`` is pushed to a `LocalStoreSource` and filled
into the cache once; then, with a warm cache, each run copies the checkout into a new directory:

- ``copy_writable``: the plain copy workspaces used before (``shutil.copyfile`` + chmod, the
  kernel copies the bytes, nothing is checked);
- ``CodeCache.copy_out``: lease, read the kept manifest, copy every file through user space
  while hashing it (sha256), list the checkout for extra files.

Also for a git commit of the same tree (``git-sha1`` blob ids from the commit's own objects).

Run: ``.venv/bin/python bench/verified_copy.py [--runs N] [--dir DIR]``. Prints a Markdown table
of medians and the ratio to the plain copy. ``--dir /dev/shm`` takes the disk out of the figures.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cache import make_tree

from conveyor._fs import copy_writable
from conveyor.cache import CodeCache
from conveyor.sources.git import GitRepository
from conveyor.sources.store import LocalStoreSource


def _git_repo(tree: Path, root: Path) -> str:
    work = root / "repo"
    shutil.copytree(tree, work)
    env = ["-c", "user.name=b", "-c", "user.email=b@b", "-c", "init.defaultBranch=main"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "tree"]):
        subprocess.run(["git", *env, *args], cwd=work, check=True)
    return f"file://{work}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-copy-", dir=args.dir))
    try:
        tree = root / "tree"
        size = make_tree(tree)
        store = LocalStoreSource(root / "store")
        version = store.push(tree)
        cache = CodeCache(root / "cache", max_bytes=10**10)
        checkout = cache.ensure(store, version)
        url = _git_repo(tree, root)
        git = GitRepository(url)
        sha = git.resolve()
        cache.ensure(git, sha)

        counter = iter(range(10**6))

        def fresh() -> Path:
            dest = root / "out" / str(next(counter))
            dest.parent.mkdir(exist_ok=True)
            return dest

        def plain() -> None:
            dest = fresh()
            dest.mkdir()
            copy_writable(checkout, dest)

        rows = {
            "plain copy (copy_writable, before)": plain,
            "verified copy, bundle (sha256)": lambda: cache.copy_out(store, version, fresh()),
            "verified copy, git commit (blob ids)": lambda: cache.copy_out(git, sha, fresh()),
        }
        medians = {}
        for name, func in rows.items():
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                func()
                times.append(time.perf_counter() - start)
                shutil.rmtree(root / "out")
            medians[name] = statistics.median(times)
        base = medians["plain copy (copy_writable, before)"]
        print(f"200 files / {size / 2**20:.1f} MiB, median of {args.runs}, dir={root.parent}\n")
        print("| copy | median | ratio to plain |\n|---|---:|---:|")
        for name, value in medians.items():
            print(f"| {name} | {value * 1000:.1f} ms | {value / base:.2f}x |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

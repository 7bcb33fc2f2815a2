"""Benchmark of the code cache with the real local bundle store.

A 200-file / 5 MiB tree (half Python-like text, half random bytes) is pushed to a
`LocalStoreSource`; then:

- warm `ensure`: the checkout is there (median of many calls);
- cold `ensure`: empty cache → unpack + verify + seal + rename (median of several runs), split
  per run into the source's `fetch` (`unpack`, which hashes as it writes), its `verify` (which
  re-hashes the tree) and what the cache itself adds (lock, sweep, chmod, metadata, rename,
  budget check);
- the floor: writing the same 200 files with plain Python into an empty directory.

Run: ``.venv/bin/python bench/cache.py [--runs N] [--warm N] [--dir DIR]``. Prints a Markdown
table. ``--dir /dev/shm`` takes the disk out of the figures (what is left is CPU).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from conveyor.cache import CodeCache
from conveyor.sources.store import LocalStoreSource

FILES = 200
TOTAL = 5 * 1024 * 1024


class TimedStore(LocalStoreSource):
    """The store, recording how long each `fetch` and `verify` took."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.fetch_s: list[float] = []
        self.verify_s: list[float] = []

    def fetch(self, version: str, dest: Path, *, scratch: Path | None = None) -> None:
        start = time.perf_counter()
        super().fetch(version, dest, scratch=scratch)
        self.fetch_s.append(time.perf_counter() - start)

    def verify(self, version: str, path: Path) -> None:
        start = time.perf_counter()
        super().verify(version, path)
        self.verify_s.append(time.perf_counter() - start)


def make_tree(root: Path) -> int:
    """Write the benchmark tree; return its size in bytes."""
    rng = random.Random(20261121)
    per_file = TOTAL // FILES
    written = 0
    for i in range(FILES):
        folder = root / f"pkg{i % 10}" / f"sub{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        if i % 2:
            data = rng.randbytes(per_file)
            name = f"data_{i}.bin"
        else:
            words = [f"name_{rng.randrange(10_000)}" for _ in range(per_file // 8)]
            text = "\n".join(f"    {w} = compute({w!r}, {j})" for j, w in enumerate(words))
            data = text.encode()[:per_file]
            name = f"module_{i}.py"
        (folder / name).write_bytes(data)
        written += len(data)
    return written


def timed(
    func: Callable[[], object], *, runs: int, before: Callable[[], object] | None = None
) -> list[float]:
    """Seconds per call of ``func`` (``before`` runs untimed before each call)."""
    out = []
    for _ in range(runs):
        if before is not None:
            before()
        start = time.perf_counter()
        func()
        out.append(time.perf_counter() - start)
    return out


def _plain_write_floor(tree: Path, dest: Path, *, runs: int) -> list[float]:
    """Seconds to write the tree's files (already in memory) into an empty directory."""
    files = {p.relative_to(tree): p.read_bytes() for p in tree.rglob("*") if p.is_file()}
    out = []
    for _ in range(runs):
        shutil.rmtree(dest, ignore_errors=True)
        start = time.perf_counter()
        for rel, data in files.items():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        out.append(time.perf_counter() - start)
    shutil.rmtree(dest, ignore_errors=True)
    return out


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="cold runs (default 15)")
    parser.add_argument("--warm", type=int, default=2000, help="warm calls (default 2000)")
    parser.add_argument("--dir", default=None, help="where to work (default: the temp directory)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="conveyor-bench-cache-", dir=args.dir) as tmp:
        base = Path(tmp)
        tree = base / "tree"
        size = make_tree(tree)
        store = TimedStore(base / "storage")
        version = store.push(tree)
        archive_size = store.path_for(version).stat().st_size
        cache = CodeCache(base / "cache", max_bytes=10**9)

        def empty_cache() -> None:
            cache.prune(max_bytes=0)

        cold = timed(lambda: cache.ensure(store, version), runs=args.runs, before=empty_cache)
        cache.ensure(store, version)
        floor = _plain_write_floor(tree, base / "floor", runs=args.runs)
        warm = timed(lambda: cache.ensure(store, version), runs=args.warm)
        fetch_s, verify_s = store.fetch_s[: args.runs], store.verify_s[: args.runs]
        overhead = [c - f - v for c, f, v in zip(cold, fetch_s, verify_s, strict=True)]

    mb = size / 1e6
    cold_med, warm_med = statistics.median(cold), statistics.median(warm)
    rows = [
        ("warm `ensure` (median)", f"{warm_med * 1e3:.3f} ms", "< 5 ms"),
        (
            "warm `ensure` (p99)",
            f"{sorted(warm)[int(len(warm) * 0.99) - 1] * 1e3:.3f} ms",
            "",
        ),
        (
            "cold `ensure` (median: unpack + verify + seal + rename)",
            f"{cold_med * 1e3:.1f} ms = {mb / cold_med:.0f} MB/s",
            "< 150 ms",
        ),
        ("cold `ensure` (min / max)", f"{min(cold) * 1e3:.1f} / {max(cold) * 1e3:.1f} ms", ""),
        ("… source `fetch` = `unpack` (median)", _ms(fetch_s), ""),
        ("… source `verify` (median)", _ms(verify_s), ""),
        ("… the cache's own work (median)", _ms(overhead), ""),
        ("floor: plain write of the same files (median)", _ms(floor), ""),
    ]
    print(
        f"tree: {FILES} files, {size} bytes ({mb:.2f} MB); archive {archive_size} bytes; "
        f"{args.runs} cold runs, {args.warm} warm calls; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}; in {base.parent}"
    )
    print()
    print("| measure | result | target |")
    print("|---|---|---|")
    for name, value, target in rows:
        print(f"| {name} | {value} | {target} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

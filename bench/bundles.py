"""Benchmark of bundles: versioning, packing, unpacking and verifying a 200-file / 5 MB tree.

The tree is generated deterministically: 190 Python-like text files (1-10 KB, in nested
packages) and 10 larger binary-ish files (half random bytes, half repetitive records), 5 MB in
all. Medians of ``--runs`` runs (default 7) of:

- bundle + version: `pack` to a file (walk, hash, compress, fsync, rename);
- re-versioning the unchanged tree: `compute_version` (walk + sha256 of every file);
- cold unpack + verify: `unpack` with ``expected_version`` into a new directory (hashes each file
  as it is written), then `verify_tree` (walks and re-hashes), as the code cache does; in MB/s of
  tree content;
- ``python -c "import conveyor"`` and ``"import conveyor.bundles"`` in a fresh interpreter (median
  of 10), beside ``python -c pass``.

Run: ``.venv/bin/python bench/bundles.py [--runs N] [--dir DIR]``. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
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

from conveyor.bundles import ZSTD_LEVEL, compute_version, pack, unpack, verify_tree

SMALL_FILES = 190
LARGE_FILES = 10
TOTAL = 5 * 1000 * 1000


def make_tree(root: Path) -> int:
    """Write the benchmark tree; return its size in bytes."""
    rng = random.Random(20240501)
    words = ["flow", "task", "data", "result", "retry", "value", "config", "load", "save", "item"]
    small_total = 0
    for i in range(SMALL_FILES):
        package = root / f"pkg{i % 8}" / f"sub{i % 3}"
        package.mkdir(parents=True, exist_ok=True)
        lines = [f'"""Module {i}."""', "", "from __future__ import annotations", ""]
        target = rng.randint(1000, 10000)
        n = 0
        while sum(len(line) + 1 for line in lines) < target:
            a, b = rng.choice(words), rng.choice(words)
            lines.append(f"def {a}_{b}_{n}(x: int) -> int:\n    return x * {rng.randint(1, 99)}\n")
            n += 1
        text = "\n".join(lines).encode()
        (package / f"module_{i}.py").write_bytes(text)
        small_total += len(text)
    each = (TOTAL - small_total) // LARGE_FILES
    for i in range(LARGE_FILES):
        half = each // 2
        record = b"%08d,sensor-%03d,%012.4f\n"
        repetitive = b"".join(record % (j, j % 97, j * 0.25) for j in range(half // 30 + 1))
        data = rng.randbytes(half) + repetitive[: each - half]
        (root / "data").mkdir(exist_ok=True)
        (root / "data" / f"blob_{i}.bin").write_bytes(data)
    (root / "bin").mkdir()
    (root / "bin" / "run.sh").write_bytes(b"#!/bin/sh\nexec python -m pkg0\n")
    (root / "bin" / "run.sh").chmod(0o755)
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def timed(
    fn: Callable[[], object], *, runs: int, setup: Callable[[], object] | None = None
) -> float:
    """Median seconds of ``fn`` over ``runs`` runs (``setup`` runs untimed before each)."""
    samples = []
    for _ in range(runs):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def import_time(code: str, *, runs: int = 10) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--dir", default=None, help="where to build the trees (default: /tmp)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="conveyor-bench-") as scratch:
        base = Path(scratch)
        tree = base / "tree"
        tree.mkdir()
        size = make_tree(tree)
        files = sum(1 for p in tree.rglob("*") if p.is_file())
        archive = base / "bundle.tar.zst"
        version = pack(tree, archive).version  # warm: imports, page cache

        t_pack = timed(lambda: pack(tree, archive), runs=args.runs)
        t_version = timed(lambda: compute_version(tree), runs=args.runs)

        dest = base / "dest"

        def clear() -> None:
            shutil.rmtree(dest, ignore_errors=True)
            os.sync()  # start each run with no writeback pending from the last one

        t_unpack = timed(
            lambda: unpack(archive, dest, expected_version=version), runs=args.runs, setup=clear
        )
        t_verify = timed(lambda: verify_tree(dest, version), runs=args.runs)

        def cold() -> None:
            unpack(archive, dest, expected_version=version)
            verify_tree(dest, version)

        t_cold = timed(cold, runs=args.runs, setup=clear)
        archive_size = archive.stat().st_size

    t_import = import_time("import conveyor")
    t_import_bundles = import_time("import conveyor.bundles")
    t_python = import_time("pass")

    mb = size / 1e6
    print(f"tree: {files} files, {mb:.2f} MB; archive {archive_size / 1e6:.2f} MB")
    print(f"zstd level {ZSTD_LEVEL}; {platform.machine()}, {os.cpu_count()} cores, ", end="")
    print(f"Python {platform.python_version()}; trees in {args.dir or tempfile.gettempdir()}")
    load = os.getloadavg()[0]
    print(f"medians of {args.runs} runs (imports: of 10); load average {load:.1f} at the end\n")
    print("| measure | median | rate | target |")
    print("|---|---:|---:|---:|")

    def row(name: str, seconds: float, *, rate: bool = True, target: str = "") -> None:
        speed = f"{mb / seconds:.0f} MB/s" if rate else ""
        print(f"| {name} | {seconds * 1e3:.1f} ms | {speed} | {target} |")

    row("bundle + version (pack to file)", t_pack)
    row("re-version the unchanged tree", t_version, target="< 50 ms")
    row("cold unpack + verify", t_cold, target="< 150 ms")
    row("of which unpack (hashes as it writes)", t_unpack)
    row("of which verify_tree", t_verify)
    row('`python -c "import conveyor"`', t_import, rate=False, target="< 150 ms")
    row('`python -c "import conveyor.bundles"`', t_import_bundles, rate=False)
    row("`python -c pass` (floor)", t_python, rate=False)


if __name__ == "__main__":
    main()

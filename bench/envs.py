"""Benchmark of run environments (`conveyor.envs`) against plain pip, on a real local index.

Three small wheels (cv-alpha, cv-beta, cv-gamma; cv-gamma needs cv-alpha) are written and
served as a PEP 503 index on 127.0.0.1 by the test suite's `PackageIndex`. A requirements file
names the three. Measured (medians over ``--runs``):

- **cold build**: empty environment cache and empty uv cache: `EnvCache.ensure` (uv venv,
  resolve, download, install, bytecode, layer, import check, seal, rename);
- **cold build, uv cache warm**: a new environment whose wheels uv has downloaded before;
- **warm reuse**: `EnvCache.ensure` when the environment exists (what every later run pays);
- **pip, fresh venv**: ``python -m venv`` then ``pip install -r`` from the same index;
- **pip, per run**: ``pip install -r`` again into that venv (all "already satisfied"): what
  Prefect's ``pip_install_requirements`` costs on every run.

Index requests are counted per phase. Run: ``.venv/bin/python bench/envs.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conveyor.envs import EnvCache, EnvSpec, IndexSettings
from fixtures.package_index import PackageIndex, build_wheel

WHEELS = (
    ("cv-alpha", "1.0", "A = 1\n" + "# padding\n" * 200, ()),
    ("cv-beta", "1.0", "B = 2\n" + "# padding\n" * 200, ()),
    ("cv-gamma", "1.0", "from cv_alpha import A\nG = A + 2\n", ("cv-alpha",)),
)
REQUIREMENTS = "cv-alpha==1.0\ncv-beta==1.0\ncv-gamma==1.0\n"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ms(values: list[float]) -> str:
    median = statistics.median(values)
    return f"{median * 1e6:.0f} µs" if median < 0.001 else f"{median * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warm", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, version, source, requires in WHEELS:
            build_wheel(root / "wheels", name, version, source, requires=requires)
        (root / "requirements.txt").write_text(REQUIREMENTS)
        index = PackageIndex.start(root / "wheels", root / "requests.log")
        try:
            run(root, index, args.runs, args.warm)
        finally:
            index.stop()


def run(root: Path, index: PackageIndex, runs: int, warm: int) -> None:
    spec = EnvSpec(requirements=REQUIREMENTS, index=IndexSettings(index_url=index.url))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_"))}
    rows: dict[str, tuple[list[float], list[int]]] = {}

    def measure(label: str, fn: Callable[[int], object]) -> None:
        times: list[float] = []
        requests: list[int] = []
        for i in range(runs):
            before = len(index.requests())
            times.append(timed(lambda i=i: fn(i)))
            requests.append(len(index.requests()) - before)
        rows[label] = (times, requests)

    def cold(i: int) -> None:
        env = {**base_env, "UV_CACHE_DIR": str(root / f"uv-cold-{i}")}
        assert EnvCache(root / f"cold-{i}", max_bytes=10**10, environ=env).ensure(spec).built

    shared_uv = {**base_env, "UV_CACHE_DIR": str(root / "uv-shared")}
    EnvCache(root / "prime", max_bytes=10**10, environ=shared_uv).ensure(spec)

    def cold_uv_warm(i: int) -> None:
        cache = EnvCache(root / f"uvwarm-{i}", max_bytes=10**10, environ=shared_uv)
        assert cache.ensure(spec).built

    measure("cold build (empty caches)", cold)
    measure("cold build, uv download cache warm", cold_uv_warm)

    cache = EnvCache(root / "prime", max_bytes=10**10, environ=shared_uv)
    before = len(index.requests())
    warm_times = [timed(lambda: cache.ensure(spec)) for _ in range(warm)]
    rows["warm reuse (EnvCache.ensure)"] = (warm_times, [len(index.requests()) - before])

    pip_env = {
        **base_env,
        "PIP_INDEX_URL": index.url,
        "PIP_CONFIG_FILE": os.devnull,  # only the benchmark's index, like uv's UV_NO_CONFIG
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    venvs: list[Path] = []

    def pip_fresh(i: int) -> None:
        venv = root / f"venv-{i}"
        venvs.append(venv)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=pip_env)
        subprocess.run(
            [
                str(venv / "bin/pip"),
                "install",
                "-q",
                "--no-cache-dir",
                "-r",
                str(root / "requirements.txt"),
            ],
            check=True,
            env=pip_env,
        )

    def pip_again(i: int) -> None:
        subprocess.run(
            [str(venvs[i] / "bin/pip"), "install", "-q", "-r", str(root / "requirements.txt")],
            check=True,
            env=pip_env,
        )

    measure("pip: python -m venv + pip install -r (fresh venv)", pip_fresh)
    measure("pip: pip install -r again (per run, all satisfied)", pip_again)

    print(f"# run environments ({platform.python_version()}, {runs} runs, 3 wheels)\n")
    print("| measure | median | index requests |")
    print("|---|---:|---:|")
    for label, (times, requests) in rows.items():
        print(f"| {label} | {ms(times)} | {statistics.median(requests):g} |")
    cold_s = statistics.median(rows["cold build (empty caches)"][0])
    warm_s = statistics.median(rows["warm reuse (EnvCache.ensure)"][0])
    pip_s = statistics.median(rows["pip: python -m venv + pip install -r (fresh venv)"][0])
    again_s = statistics.median(rows["pip: pip install -r again (per run, all satisfied)"][0])
    print()
    print(f"cold build / pip fresh venv: {cold_s / pip_s:.2f}x")
    print(f"warm reuse vs pip per run: {again_s / warm_s:,.0f}x faster")


if __name__ == "__main__":
    main()

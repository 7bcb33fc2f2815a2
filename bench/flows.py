"""Benchmark of flows: what the decorator, loading and parameter checks cost.

- ``import conveyor.flows`` in a fresh interpreter (what a worker's child pays before loading);
- calling a plain function, a ``@flow`` and a loaded flow (which re-enters its import scope);
- ``load_flow("flows.py:hello")`` of ``examples/hello`` (a fresh module each time);
- ``parameter_schema()`` (pydantic) and ``validate_parameters`` against a stored schema
  (jsonschema), both warm.

Run: ``.venv/bin/python bench/flows.py [--runs N]``. Prints a Markdown table of medians.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from conveyor import flow, load_flow
from conveyor._params import validate_parameters

HELLO = Path(__file__).resolve().parent.parent / "examples" / "hello"


def per_call(fn: Callable[[], object], *, calls: int, runs: int) -> float:
    """Median seconds per call over ``runs`` batches of ``calls`` calls."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls)
    return statistics.median(samples)


def import_time(runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import conveyor.flows"], check=True)
        samples.append(time.perf_counter() - start)
    baseline = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        baseline.append(time.perf_counter() - start)
    return statistics.median(samples) - statistics.median(baseline)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs

    def plain(n: int = 3) -> int:
        return n

    decorated = flow(plain)
    loaded = load_flow("flows.py:hello", root=HELLO)
    schema = loaded.parameter_schema()
    loaded_plain = loaded.with_options(log_prints=False)

    def load() -> object:
        return load_flow("flows.py:hello", root=HELLO)

    def validate() -> object:
        return validate_parameters(schema, {"name": "a", "n": 2})

    rows = [
        ("import conveyor.flows (fresh process, minus bare startup)", import_time(runs)),
        ("call a plain function", per_call(plain, calls=20000, runs=runs)),
        ("call a @flow (no options)", per_call(decorated, calls=20000, runs=runs)),
        (
            "call the loaded hello flow (n=0, import scope re-entered)",
            per_call(lambda: loaded_plain(n=0), calls=2000, runs=runs),
        ),
        ("load_flow('flows.py:hello')", per_call(load, calls=20, runs=runs)),
        ("Flow.parameter_schema() (warm)", per_call(loaded.parameter_schema, calls=50, runs=runs)),
        ("validate_parameters(stored schema, 2 params)", per_call(validate, calls=200, runs=runs)),
    ]

    print(f"Python {platform.python_version()} on {platform.machine()}, medians of {runs} runs\n")
    print("| what | time |")
    print("|---|---|")
    for what, seconds in rows:
        shown = f"{seconds * 1e6:.1f} µs" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"
        print(f"| {what} | {shown} |")


if __name__ == "__main__":
    main()

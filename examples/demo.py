"""``make demo``: deploy ``examples/hello`` and run it twice (cold, then warm) on one machine.

Everything lives in a throwaway ``CONVEYOR_HOME`` under the repository (``.conveyor-demo/``,
wiped at the start), on the embedded default: no server process, a SQLite file.

1. deploy ``examples/hello/flows.py:hello`` (version pinned, bundle pushed to the local store);
2. queue two runs of it;
3. start ``conveyor worker start --burst`` in a subprocess: it claims both runs, fetches the code
   into its cache once (cold), reuses it for the second run (warm), and exits when the pool is
   empty;
4. print the states, the version, the results and the per-phase timings.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from conveyor import flow
from conveyor.connect import connect
from conveyor.schemas import Run
from conveyor.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / ".conveyor-demo"
PROJECT = ROOT / "examples" / "hello"
PHASES = ("queue", "fetch", "start", "run")

console = Console(highlight=False)


def demo_env() -> dict[str, str]:
    """This environment, pointed at the demo home and the embedded default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # let the worker's imports be cached
    env["CONVEYOR_HOME"] = str(HOME)
    return env


def table(runs: list[tuple[str, Run]]) -> Table:
    grid = Table(title="two runs of hello/demo (milliseconds per phase)", title_justify="left")
    grid.add_column("run")
    grid.add_column("id")
    grid.add_column("state")
    for phase in (*PHASES, "total"):
        grid.add_column(phase, justify="right")
    for label, run in runs:
        colour = "green" if run.state.value == "completed" else "red"
        total = (run.ended_at - run.created).total_seconds() if run.ended_at else None
        grid.add_row(
            label,
            run.id[:8],
            f"[{colour}]{run.state.value}[/]",
            *(f"{run.timings[p] * 1000:.0f}" if p in run.timings else "-" for p in PHASES),
            "-" if total is None else f"{total * 1000:.0f}",
        )
    return grid


def main() -> int:
    shutil.rmtree(HOME, ignore_errors=True)
    env = demo_env()
    settings = Settings.from_env(env)
    with connect(settings) as client:
        started = time.perf_counter()
        deployment = flow.from_source(PROJECT, "flows.py:hello").deploy(
            "demo", parameters={"name": "Conveyor"}, settings=settings, client=client
        )
        console.print(
            f"deployed [bold]{deployment.flow_name}/{deployment.name}[/] "
            f"version {deployment.version[:19]}… (revision {deployment.revision}) "
            f"in {time.perf_counter() - started:.2f}s"
        )
        cold = client.create_run("hello", "demo", parameters={"n": 2})
        warm = client.create_run("hello", "demo", parameters={"n": 3})
        console.print(f"queued runs {cold.id[:8]} (cold) and {warm.id[:8]} (warm)")

        console.print("starting [bold]conveyor worker start --burst[/] …")
        worker = subprocess.run(
            [sys.executable, "-m", "conveyor", "worker", "start", "--burst"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        runs = [("cold", client.get_run(cold.id)), ("warm", client.get_run(warm.id))]
        logs = client.read_logs(warm.id)

    if worker.returncode != 0:
        console.print(f"[red]worker exited with {worker.returncode}[/]\n{worker.stderr}")
        return 1
    console.print()
    console.print(table(runs))
    console.print(
        "[dim]queue: created → claimed (both were queued before the worker started); "
        "fetch: code cache (cold: unpacked from the bundle store; warm: already there); "
        "start: the child (started while the code was checked) let in → flow entered; "
        "run: the flow's body[/]"
    )
    console.print(f"[bold]version[/]: {runs[0][1].version}")
    for label, run in runs:
        shown = json.dumps(run.result) if run.result_ref is None else f"stored as {run.result_ref}"
        console.print(f"[bold]{label} result[/]: {shown}")
        if run.error:
            console.print(f"[red]{label} error[/]: {run.error}")
    console.print("[bold]warm run's logs[/]:")
    for line in logs:
        console.print(f"  {line.message}", markup=False)
    console.print(f"[dim]demo home: {HOME} (delete it freely)[/]")
    return 0 if all(run.state.value == "completed" for _, run in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())

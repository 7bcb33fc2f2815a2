"""The ``conveyor`` process entry (conveyor._entry): the collector off while a command starts, back
for a command that runs on, out of the way at exit; the command's output and exit code intact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_PROBE = """
import gc, json, sys, time
import conveyor._entry as entry
import conveyor.cli as cli
entry.COLLECTOR_OFF_S = float(sys.argv[1])
seen = {"before": gc.isenabled()}
def command(argv=None):
    seen["at_start"] = gc.isenabled()
    time.sleep(float(sys.argv[2]))
    seen["later"] = gc.isenabled()
    print("output of the command")
    return 3
cli.main = command
code = entry.main()
seen["frozen"] = gc.get_freeze_count()
seen["after"] = gc.isenabled()
print(json.dumps(seen))
sys.exit(code)
"""


def _probe(off: float, runs_for: float) -> tuple[int, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(off), str(runs_for)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stderr == ""
    return done.returncode, done.stdout.splitlines()


def test_a_quick_command_runs_without_the_collector_and_leaves_the_heap_frozen() -> None:
    code, lines = _probe(off=30.0, runs_for=0.0)
    assert code == 3
    assert lines[0] == "output of the command"
    seen = json.loads(lines[1])
    assert seen["before"] is True
    assert seen["at_start"] is False
    assert seen["later"] is False
    assert seen["frozen"] > 1000  # everything alive at exit, out of the final collection
    assert seen["after"] is True


def test_a_command_that_runs_on_gets_the_collector_back() -> None:
    code, lines = _probe(off=0.2, runs_for=1.5)
    assert code == 3
    seen = json.loads(lines[1])
    assert seen["at_start"] is False
    assert seen["later"] is True


def test_the_script_prints_and_exits_as_the_command_line_does(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")},
        "CONVEYOR_HOME": str(tmp_path / "home"),
        "COLUMNS": "200",
        "NO_COLOR": "1",
    }
    script = Path(sys.executable).with_name("conveyor")
    made_pools: list[str] = []
    for pool, argv in (
        ("by-script", [str(script)]),
        ("by-module", [sys.executable, "-m", "conveyor"]),
    ):
        made = subprocess.run(
            [*argv, "pool", "create", pool], capture_output=True, text=True, env=env, timeout=60
        )
        assert made.returncode == 0, made.stderr
        listed = subprocess.run(
            [*argv, "pools", "ls", "--json"], capture_output=True, text=True, env=env, timeout=60
        )
        assert listed.returncode == 0, listed.stderr
        made_pools.append(pool)
        assert sorted(p["name"] for p in json.loads(listed.stdout)) == sorted(
            ["default", *made_pools]
        )
        bad = subprocess.run(
            [*argv, "runs", "ls", "--state", "sideways"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert bad.returncode == 1
        assert "unknown state 'sideways'" in bad.stderr

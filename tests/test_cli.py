"""The command line's error contract: one line plus a hint, a traceback only with --debug."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def conveyor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_conveyor_error_is_one_line_and_a_hint(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"

    result = conveyor("bundle", str(missing))

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ")
    assert str(missing) in lines[0]
    assert all(line.startswith(("error: ", "hint: ")) for line in lines), result.stderr
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = conveyor("--debug", "bundle", str(tmp_path / "nowhere"))

    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr


def test_unknown_command_is_a_usage_error() -> None:
    result = conveyor("no-such-command")

    assert result.returncode == 2
    assert "No such command" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_every_command_family() -> None:
    result = conveyor("--help")

    assert result.returncode == 0
    for family in ("bundle", "cache", "deploy", "run", "runs", "worker", "server", "secret"):
        assert family in result.stdout


def test_error_text_with_brackets_is_printed_verbatim(tmp_path: Path) -> None:
    # Rich markup must not eat "[1]"-like parts of a message (paths, parameter names).
    missing = tmp_path / "dir[1]" / "x"

    result = conveyor("bundle", str(missing))

    assert result.returncode == 1
    assert "dir[1]" in result.stderr


def test_version_prints_the_version_and_exits_0() -> None:
    import subprocess
    import sys
    from pathlib import Path

    from conveyor import __version__

    done = subprocess.run(
        [str(Path(sys.executable).parent / "conveyor"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"conveyor {__version__}"

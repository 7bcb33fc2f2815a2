"""The command line's error contract: one line plus a hint, a traceback only with --debug."""

from __future__ import annotations

import json
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


def test_the_command_table_names_every_command_of_every_family() -> None:
    # Each family's module registers exactly the top-level commands the table sends to it, so
    # a command line that builds one family builds the right one (aliases included)
    import importlib

    import typer
    from typer.main import get_command

    from conveyor.cli import COMMANDS, FAMILIES

    for family in FAMILIES:
        alone = typer.Typer()
        alone.callback()(lambda: None)
        importlib.import_module(f"conveyor.cli.{family}").register(alone)
        registered = set(get_command(alone).commands)  # type: ignore[attr-defined]
        assert registered == {word for word, owner in COMMANDS.items() if owner == family}
    assert set(COMMANDS.values()) <= set(FAMILIES)


def test_the_root_options_are_flags_so_the_first_other_word_is_the_command() -> None:
    from typer.main import get_command

    from conveyor.cli import app

    root = get_command(app)
    assert [p.name for p in root.params if not getattr(p, "is_flag", False)] == []


def test_a_command_builds_and_imports_its_own_family_only() -> None:
    # Given a command of one family, after a root option
    probe = (
        "import json, sys\n"
        "from conveyor.cli import main\n"
        "code = main(['--debug', 'runs', 'ls', '--help'])\n"
        "print(json.dumps([code, [m for m in sys.modules if m.startswith('conveyor.cli.')]]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    # Then its help is printed, and no other family's module was imported
    assert "runs ls [OPTIONS]" in done.stdout
    assert "--state" in done.stdout  # an option of runs ls
    code, modules = json.loads(done.stdout.strip().splitlines()[-1])
    assert code == 0
    families = {m.split(".")[2] for m in modules} - {"_common", "_deferred"}
    assert families == {"runs"}

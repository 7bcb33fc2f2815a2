"""`conveyor --help` without the rich modules it never uses, and those modules intact for code that
does use them (conveyor.cli._deferred)."""

from __future__ import annotations

import os
import subprocess
import sys

_HELP = """
import atexit, sys, types
if sys.argv[1] == "eager":
    import rich.markdown, rich.traceback
HEAVY = ("rich.markdown", "rich.traceback", "markdown_it", "pygments", "attr")
def loaded():
    real = [m for m, module in list(sys.modules.items()) if type(module) is types.ModuleType
            and any(m == h or m.startswith(h + ".") for h in HEAVY)]
    print("LOADED", sorted(real), file=sys.stderr)
atexit.register(loaded)
from conveyor.cli import main
sys.argv = ["conveyor", *sys.argv[2:]]
main()
"""


def _help(mode: str, *args: str) -> tuple[str, str]:
    env = {**os.environ, "COLUMNS": "100", "TERM": "dumb", "NO_COLOR": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _HELP, mode, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    loaded = out.stderr.rsplit("LOADED", 1)[1].strip()
    return out.stdout, loaded


def test_help_is_the_same_without_the_unused_rich_modules() -> None:
    for args in (["--help"], ["deploy", "--help"], ["runs", "--help"]):
        deferred, loaded = _help("deferred", *args)
        eager, loaded_eagerly = _help("eager", *args)
        assert deferred == eager
        assert "Usage:" in deferred
        assert "--help" in deferred
        assert loaded == "[]", f"{args}: {loaded}"
        assert "'rich.markdown'" in loaded_eagerly


_USE = """
import io, sys
import conveyor.cli
from rich.console import Console
from rich.markdown import Markdown
console = Console(record=True, width=60, color_system=None, file=io.StringIO())
console.print(Markdown("# Title\\n\\nsome *text* with `code`"))
try:
    raise ValueError("boom")
except ValueError:
    console.print_exception()
from rich.traceback import Traceback
import rich.markdown, rich.traceback
print(type(sys.modules["rich.markdown"]).__name__, type(rich.traceback).__name__,
      Traceback.__module__, hasattr(rich.markdown, "MarkdownIt"))
print(console.export_text())
"""


def test_code_that_uses_the_deferred_modules_gets_the_real_ones() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _USE], capture_output=True, text=True, timeout=120, check=True
    )
    first, text = out.stdout.split("\n", 1)
    assert first == "module module rich.traceback True"
    assert "Title" in text
    assert "some text with code" in text
    assert "Traceback (most recent call last)" in text
    assert "ValueError: boom" in text

"""Running uv: finding its binary, one bounded call with its output streamed, and its errors as
one line.

- `find_uv`: ``uv`` on ``PATH``, else the binary of the ``uv`` package (a dependency of
  Conveyor, so every worker has one); `ConfigError` when there is neither.
- `run_uv`: one uv command in its own session, stderr and stdout merged and passed line by line
  to ``on_line``; killed (its whole process group) after ``timeout`` seconds. Index URLs and
  credentials reach uv through its environment (``UV_INDEX_URL``, ...), never its argv.
- `uv_failure`: uv's error report (``error: ...`` or a cross mark, followed by ``cause:`` or
  ``╰─▶`` lines, and its ``hint:`` lines in parentheses: an index answering 401 is only said
  there) folded into one line with every URL redacted.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from conveyor.errors import ConfigError, InstallError
from conveyor.secrets import redact_url

__all__ = ["UV_ENV_DEFAULTS", "check_uv", "find_uv", "run_uv", "uv_failure"]

UV_ENV_DEFAULTS = {
    "UV_NO_CONFIG": "1",  # only what the environment says (it is part of the digest)
    "UV_PYTHON_DOWNLOADS": "never",  # never fetch an interpreter behind the worker's back
    "UV_NO_PROGRESS": "1",
    "NO_COLOR": "1",
    "COLUMNS": "100000",  # never wrapped: uv_failure reads one line per cause
}
"""Set for every uv call: deterministic, quiet, no downloads of Python itself."""

_MAX_LINE = 400


def find_uv() -> str:
    """The uv binary: ``uv`` on ``PATH``, else the one the ``uv`` package ships."""
    found = shutil.which("uv")
    if found:
        return found
    try:
        import uv

        path: str = uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        raise ConfigError(
            "uv is needed to build run environments and was not found",
            hint="pip install uv (Conveyor depends on it), or put uv on PATH",
        ) from None
    return path


def run_uv(
    uv: str,
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    timeout: float,
    on_line: Callable[[str], None] = lambda _line: None,
) -> tuple[int, list[str]]:
    """Run ``uv ARGS``; (return code, every output line). A timeout kills it and returns -9."""
    proc = subprocess.Popen(
        [uv, *args],
        cwd=cwd,
        env={**env, **UV_ENV_DEFAULTS},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    lines: list[str] = []
    assert proc.stdout is not None

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            if line:
                on_line(_redact(line))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        code = -signal.SIGKILL
    except BaseException:
        _kill(proc)
        raise
    reader.join(5.0)
    return code, lines


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s`'\")]+")
_CROSS = "\u00d7"
_BULLETS = re.compile(r"^[\s│├╰─▶\u00d7\-]*")


def _redact(line: str) -> str:
    return _URL.sub(lambda m: redact_url(m.group(0)), line)


def uv_failure(lines: Sequence[str]) -> str:
    """uv's error report as one line: the error and its causes, joined with ``: ``."""
    parts: list[str] = []
    hints: list[str] = []
    started = False
    for raw in lines:
        text = raw.strip()
        if not text:
            continue
        if text.startswith(("error:", _CROSS)):
            started = True
            parts, hints = [], []  # the last error reported is the one that failed the command
        elif not started:
            continue
        if text.startswith(("help:", "hint:")):
            hint = text.partition(":")[2].strip().rstrip(".")
            if hint and hint not in hints:
                hints.append(hint)  # uv's reason (a 401 from the index reads "not found")
            continue
        if set(text) <= set("^ "):
            continue
        text = _BULLETS.sub("", text)
        for prefix in ("error:", "cause:", "Caused by:"):
            text = text.removeprefix(prefix).strip()
        text = text.rstrip(":").strip()
        if text and text not in parts:
            parts.append(text)
    if not parts:
        tail = [line.strip() for line in lines if line.strip()]
        parts = tail[-1:] or ["uv failed without saying why"]
    message = _redact(": ".join(parts))
    said = _redact("".join(f" ({hint})" for hint in hints))[: _MAX_LINE // 2]
    if len(message) + len(said) > _MAX_LINE:  # the hint stays: it may be the only reason
        message = message[: _MAX_LINE - len(said) - 1] + "…"
    return message + said


def check_uv(code: int, lines: Sequence[str], *, timeout: float) -> None:
    """Raise `InstallError` with uv's one-line reason unless ``code`` is 0."""
    if code == -signal.SIGKILL:
        raise InstallError(f"uv did not finish within {timeout:g}s")
    if code != 0:
        raise InstallError(
            uv_failure(lines),
            hint="check the requirement and the package index (UV_INDEX_URL / PIP_INDEX_URL)",
        )

"""Run external commands whose arguments or environment may hold a `Secret`.

Secrets are revealed only inside the ``subprocess.run`` call; the command line that is logged, or
put in a `CommandError`, shows ``****``, and any secret value echoed on stdout/stderr is redacted
before it is logged or raised. (Prefer passing secrets through ``env``: argv is visible in ``ps``.)
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from conveyor.errors import CommandError, ConfigError
from conveyor.secrets import Secret, redact_text, reveal

__all__ = ["CommandArg", "Completed", "format_command", "run"]

logger = logging.getLogger(__name__)

CommandArg = str | Secret | Path


@dataclass(frozen=True)
class Completed:
    """A finished command: redacted text of what it printed."""

    command: str
    returncode: int
    stdout: str
    stderr: str
    stdout_bytes: bytes = b""
    """What the command printed, unredacted and undecoded: for binary output (``git ls-tree
    -z``) of commands that see no secret; never log it."""


def format_command(cmd: Sequence[CommandArg]) -> str:
    """The command line for logs and errors: secrets show as ``****``."""
    return shlex.join(str(part) for part in cmd)


def _secrets_in(cmd: Sequence[CommandArg], env: Mapping[str, str | Secret] | None) -> list[Secret]:
    found = [part for part in cmd if isinstance(part, Secret)]
    if env:
        found += [v for v in env.values() if isinstance(v, Secret)]
    return found


def run(
    cmd: Sequence[CommandArg],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str | Secret] | None = None,
    extra_env: Mapping[str, str | Secret] | None = None,
    input: bytes | None = None,
    timeout: float | None = None,
    check: bool = True,
    hint: str | None = None,
) -> Completed:
    """Run ``cmd`` and return what it printed, redacted.

    ``env`` replaces the environment (default: a copy of ``os.environ``); ``extra_env`` is added on
    top. Raises `CommandError` (redacted) when ``check`` and the exit code is not 0, or on timeout;
    `ConfigError` when the executable does not exist.
    """
    base: dict[str, str | Secret] = dict(os.environ if env is None else env)
    if extra_env:
        base.update(extra_env)
    secrets = _secrets_in(cmd, base)
    shown = format_command(cmd)
    logger.debug("running command=%s cwd=%s", shown, cwd)
    try:
        proc = subprocess.run(
            [reveal(p) if isinstance(p, Secret) else str(p) for p in cmd],
            cwd=cwd,
            env={k: reveal(v) for k, v in base.items()},
            input=input,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        if cwd is not None and not Path(cwd).is_dir():
            raise ConfigError(f"working directory {str(cwd)!r} does not exist") from None
        raise ConfigError(
            f"executable {str(cmd[0])!r} was not found",
            hint=f"install {str(cmd[0])!r} and make sure it is on PATH",
        ) from None
    except PermissionError:
        raise ConfigError(
            f"executable {str(cmd[0])!r} cannot be run (permission denied)",
            hint="check that the file is executable",
        ) from None
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        raise CommandError(
            shown, returncode=None, stderr=redact_text(err, secrets), hint=hint
        ) from None
    stdout = redact_text(proc.stdout.decode(errors="replace"), secrets)
    stderr = redact_text(proc.stderr.decode(errors="replace"), secrets)
    if check and proc.returncode != 0:
        logger.debug("command failed command=%s returncode=%d", shown, proc.returncode)
        raise CommandError(shown, returncode=proc.returncode, stderr=stderr, hint=hint)
    return Completed(
        command=shown,
        returncode=proc.returncode,
        stdout=stdout,
        stderr=stderr,
        stdout_bytes=b"" if secrets else proc.stdout,
    )

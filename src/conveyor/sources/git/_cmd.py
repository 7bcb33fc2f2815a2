"""Run the ``git`` executable for a source: clean environment, secrets only in the child's
environment, stderr classified into Conveyor errors, network failures retried with backoff.

Every git child gets:

- ``GIT_TERMINAL_PROMPT=0`` and ``-c core.askPass=`` (a bad token fails instead of hanging),
  ``-c credential.helper=`` (no system or user helper is asked, nothing is stored);
- no ``GIT_DIR`` / ``GIT_WORK_TREE`` / ``GIT_INDEX_FILE`` / askpass variables from the parent;
- ``LC_ALL=C`` so that the messages it prints can be classified;
- credentials as `GitEnv`: config entries appended to ``GIT_CONFIG_COUNT/KEY_n/VALUE_n`` (an
  ``http.<url>.extraHeader``), or variables such as ``GIT_SSH_COMMAND``. Values are `Secret`, so
  `conveyor._process.run` reveals them only inside ``Popen`` and redacts whatever git prints.

A network command that fails for a transient reason (`Failure.UNAVAILABLE`) is tried again under
a `conveyor._retry.RetryPolicy` (exponential backoff with full jitter over a time budget, from
``CONVEYOR_NETWORK_RETRY_SECONDS`` through the source's fetch context). A command that ran out of
disk raises ``OSError(ENOSPC)`` carrying git's own lines, so the code cache reports it as its own
disk being full.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from conveyor._process import CommandArg, Completed, format_command, run
from conveyor._retry import RetryPolicy, attempts
from conveyor.errors import (
    AuthenticationError,
    CommandError,
    SourceError,
    SourceNotFound,
    SourceUnavailable,
    VersionNotFound,
)
from conveyor.secrets import Secret, redact_text

__all__ = [
    "OFFLINE",
    "Failure",
    "GitEnv",
    "GitFailed",
    "classify",
    "git",
    "git_environment",
    "raise_for",
]

logger = logging.getLogger(__name__)

NETWORK_TIMEOUT = 600.0
LOCAL_TIMEOUT = 300.0

_UNSET = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_COMMON_DIR",
        "GIT_NAMESPACE",
        "GIT_PREFIX",
        "GIT_ASKPASS",
        "SSH_ASKPASS",
        "GIT_TRACE",
        "GIT_TRACE_CURL",
        "GIT_TRACE_PACKET",
        "GIT_CURL_VERBOSE",
    }
)
OFFLINE: tuple[str, ...] = tuple(
    arg
    for proto in ("", "file.", "git.", "http.", "https.", "ssh.", "ext.", "fd.")
    for arg in ("-c", f"protocol.{proto}allow=never")
)
"""Options that keep a local command offline: a partial clone's lazy fetch of a missing object
fails instead of reaching the remote (``protocol.<name>.allow`` in a user's config would
otherwise win over ``protocol.allow``)."""

_BASE_CONFIG = (
    "-c",
    "credential.helper=",
    "-c",
    "core.askPass=",
    "-c",
    "http.lowSpeedLimit=1000",
    "-c",
    "http.lowSpeedTime=60",
    "-c",
    "init.defaultBranch=main",
    "-c",
    "advice.detachedHead=false",
)


@dataclass(frozen=True)
class GitEnv:
    """What one git child needs to authenticate: config entries and environment variables.

    ``redact`` lists further secret values (a raw token whose header form is in ``config``) that
    must be scrubbed from anything git prints.
    """

    config: tuple[tuple[str, str | Secret], ...] = ()
    env: Mapping[str, str | Secret] = field(default_factory=dict)
    redact: tuple[Secret, ...] = ()


class Failure(Enum):
    """What a failed git command means."""

    AUTH = "auth"
    HOST_KEY = "host_key"
    NOT_FOUND = "not_found"
    VERSION = "version"
    UNADVERTISED = "unadvertised"
    UNAVAILABLE = "unavailable"
    NO_SPACE = "no_space"
    OTHER = "other"


# Order matters: the first matching row wins (a full disk also makes git say "early EOF").
_PATTERNS: tuple[tuple[Failure, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern, re.IGNORECASE))
    for kind, pattern in (
        (Failure.NO_SPACE, r"no space left on device|disk quota exceeded"),
        (Failure.HOST_KEY, r"host key verification failed|no \S+ host key is known"),
        (
            Failure.AUTH,
            r"authentication failed|could not read (username|password)|terminal prompts disabled"
            r"|http basic: access denied|invalid username or password|returned error: 40[13]"
            r"|permission denied \(publickey|permission to \S+ denied|bad credentials"
            r"|load key .*: invalid format|access denied\b(?! or repository not exported)",
        ),
        (
            Failure.NOT_FOUND,
            r"repository '.*' not found|repository not found|not appear to be a git repository"
            r"|returned error: 404|access denied or repository not exported|no such repository"
            r"|project you were looking for could not be found|not a git repository",
        ),
        (
            Failure.UNADVERTISED,
            r"server does not allow request for unadvertised object",
        ),
        (
            Failure.VERSION,
            r"not our ref|couldn't find remote ref|no such remote ref|invalid object name"
            r"|bad object|unknown revision|not a valid object name|no matching remote head",
        ),
        (
            Failure.UNAVAILABLE,
            r"could not resolve host|failed to connect|connection refused|connection timed out"
            r"|operation timed out|timed out|connection reset|early eof|rpc failed"
            r"|remote end hung up unexpectedly|returned error: 5\d\d|ssl_error|gnutls"
            r"|unable to access|network is unreachable|no route to host|temporary failure"
            r"|could not read from remote repository|transfer closed",
        ),
    )
)


def classify(stderr: str, returncode: int | None) -> Failure:
    """The meaning of a failed git command, from its (English) stderr; timeouts are transient."""
    if returncode is None:
        return Failure.UNAVAILABLE
    for kind, pattern in _PATTERNS:
        if pattern.search(stderr):
            return kind
    return Failure.OTHER


class GitFailed(Exception):
    """Internal: a git command failed; carries the classification and the redacted stderr."""

    def __init__(self, failure: Failure, *, command: str, returncode: int | None, stderr: str):
        self.failure = failure
        self.command = command
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"{command}: {failure.value}")

    def _lines(self) -> list[str]:
        lines: list[str] = []
        for raw in self.stderr.splitlines():
            line = raw.strip()
            if not line or line.startswith(_NOISE) or (lines and lines[-1] == line):
                continue
            lines.append(line if len(line) <= 300 else line[:297] + "...")
        return lines

    @property
    def tail(self) -> str:
        """The last meaningful line git printed (already redacted)."""
        lines = self._lines()
        return lines[-1] if lines else f"exit code {self.returncode}"

    @property
    def detail(self) -> str:
        """The last few meaningful lines, joined by ``; ``: git often prints the cause
        (``No space left on device``) a line before its conclusion (``unpack-objects failed``)."""
        lines = self._lines()
        return "; ".join(lines[-_DETAIL_LINES:]) if lines else f"exit code {self.returncode}"


_NOISE = ("hint:", "warning: redirecting", "From ", "* [", "+ ", "- [")
_DETAIL_LINES = 4


def raise_for(exc: GitFailed, *, source: str, action: str) -> SourceError:
    """The Conveyor error for a classified git failure (returned, for ``raise ... from``)."""
    where = f"{action} {source}"
    if exc.failure is Failure.AUTH:
        return AuthenticationError(f"git authentication failed: {where}", source=source)
    if exc.failure is Failure.HOST_KEY:
        return AuthenticationError(
            f"SSH host key verification failed: {where}",
            source=source,
            hint="add the host's key to the credentials' known_hosts "
            "(ssh-keyscan HOST), or create them with accept_new_host_keys=True",
        )
    if exc.failure is Failure.NOT_FOUND:
        return SourceNotFound(f"git repository not found: {where}", source=source)
    if exc.failure in (Failure.VERSION, Failure.UNADVERTISED):
        return VersionNotFound(f"{where}: {exc.tail}", source=source)
    if exc.failure is Failure.UNAVAILABLE:
        return SourceUnavailable(f"git server unreachable: {where}: {exc.detail}", source=source)
    return SourceError(f"git failed: {where}: {exc.detail}", source=source)


def git_environment(auth: GitEnv | None = None) -> dict[str, str | Secret]:
    """The environment of a git child: the parent's, cleaned, plus ``auth``."""
    env: dict[str, str | Secret] = {
        k: v
        for k, v in os.environ.items()
        if k not in _UNSET and not k.startswith(("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_"))
    }
    env.pop("GIT_CONFIG_COUNT", None)
    inherited: list[tuple[str, str | Secret]] = []
    try:
        count = int(os.environ.get("GIT_CONFIG_COUNT", "0") or 0)
    except ValueError:
        count = 0
    for i in range(count):
        key = os.environ.get(f"GIT_CONFIG_KEY_{i}")
        if key is not None:
            inherited.append((key, os.environ.get(f"GIT_CONFIG_VALUE_{i}", "")))
    entries = inherited + list(auth.config if auth else ())
    for i, (key, value) in enumerate(entries):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    if entries:
        env["GIT_CONFIG_COUNT"] = str(len(entries))
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GCM_INTERACTIVE"] = "never"
    env["LC_ALL"] = "C"
    env["LANGUAGE"] = "C"
    if auth:
        env.update(auth.env)
    return env


def git(
    args: Sequence[CommandArg],
    *,
    cwd: Path | None = None,
    auth: GitEnv | None = None,
    network: bool = False,
    input: bytes | None = None,
    timeout: float | None = None,
    retry: RetryPolicy | None = None,
) -> Completed:
    """Run ``git ARGS`` and return what it printed; raise `GitFailed` (classified) on failure.

    With ``network``, transient failures are tried again under ``retry`` (the default
    `RetryPolicy` when None; ``RetryPolicy(budget=0)`` tries once). A full disk raises
    ``OSError(ENOSPC)`` whose text is git's last lines. A missing ``git`` raises `ConfigError`
    (from `conveyor._process.run`).
    """
    cmd: list[CommandArg] = ["git", *_BASE_CONFIG, *args]
    env = git_environment(auth)
    redact = [*(auth.redact if auth else ()), *(v for v in env.values() if isinstance(v, Secret))]
    policy = (retry or RetryPolicy()) if network else RetryPolicy(budget=0)
    limit = timeout if timeout is not None else (NETWORK_TIMEOUT if network else LOCAL_TIMEOUT)
    shown = format_command(cmd)

    def log_retry(number: int, delay: float) -> None:
        logger.info(
            "git network failure, retrying attempt=%d delay_s=%.2f budget_s=%g command=%s",
            number,
            delay,
            policy.budget,
            shown,
        )

    failed: GitFailed | None = None
    for attempt in attempts(policy, on_retry=log_retry):
        try:
            done = run(cmd, cwd=cwd, env=env, input=input, timeout=limit, check=False)
            returncode: int | None = done.returncode
            stderr = redact_text(done.stderr, redact)
        except CommandError as exc:  # only raised for a timeout with check=False
            done = Completed(shown, -1, "", exc.stderr)
            returncode, stderr = None, redact_text(exc.stderr, redact)
        if returncode == 0:
            return Completed(done.command, 0, redact_text(done.stdout, redact), stderr)
        failure = classify(stderr, returncode)
        logger.debug(
            "git failed command=%s returncode=%s failure=%s attempt=%d",
            done.command,
            returncode,
            failure.value,
            attempt.number,
        )
        failed = GitFailed(failure, command=done.command, returncode=returncode, stderr=stderr)
        if failure is Failure.NO_SPACE:
            raise OSError(errno.ENOSPC, f"git {_subcommand(args)}: {failed.detail}")
        if failure is not Failure.UNAVAILABLE:
            break
    assert failed is not None
    raise failed


def _subcommand(args: Sequence[CommandArg]) -> str:
    """The git subcommand in ``args`` (``fetch``), skipping ``--git-dir X`` and ``-c K=V``."""
    skip = False
    for arg in args:
        text = str(arg)
        if skip:
            skip = False
        elif text in ("-c", "--git-dir", "-C"):
            skip = True
        elif not text.startswith("-"):
            return text
    return "command"

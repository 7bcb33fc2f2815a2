"""How credentials reach one git child process, and nothing else.

- HTTP(S): an ``Authorization: Basic …`` header in ``http.<scheme>://<host>/.extraHeader``,
  passed through ``GIT_CONFIG_COUNT/KEY_n/VALUE_n`` in the child's environment. It is scoped to
  the repository's host (submodules on the same host get it, other hosts do not), never in argv,
  never written to any ``.git/config``.
- SSH: ``GIT_SSH_COMMAND`` with ``-i <key file>`` and ``-o UserKnownHostsFile=<file>``, both
  written 0600 into a private temporary directory that is removed when the session ends;
  ``StrictHostKeyChecking=yes`` unless the credentials ask for ``accept-new``.

`AuthSession` builds that environment lazily (the first time a command needs the network) and
cleans up on close, so a fetch that needs no network never looks a credential up. It also carries
the `RetryPolicy` every network command of the session runs under.
"""

from __future__ import annotations

import base64
import os
import shlex
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from conveyor._retry import RetryPolicy
from conveyor.errors import ConfigError
from conveyor.secrets import Secret, reveal
from conveyor.sources.git._cmd import GitEnv

__all__ = ["AuthSession", "HttpAuth", "SshAuth", "http_env", "is_ssh_url", "ssh_command"]


@dataclass(frozen=True)
class HttpAuth:
    """A user name and a password (token) for HTTP Basic authentication."""

    username: str | Secret
    password: Secret

    def __post_init__(self) -> None:
        user = reveal(self.username)
        if not user or ":" in user or "\n" in user:
            raise ConfigError(f"git user name {self.username!r} is not valid")


@dataclass(frozen=True)
class SshAuth:
    """A private key and the host keys to trust."""

    private_key: Secret
    known_hosts: str | None = None
    accept_new_host_keys: bool = False


GitAuth = HttpAuth | SshAuth


def is_ssh_url(url: str) -> bool:
    """True for ``ssh://``, ``git+ssh://`` and scp-like ``user@host:path`` URLs."""
    if "://" in url:
        return url.split("://", 1)[0].lower() in {"ssh", "git+ssh", "ssh+git"}
    head = url.split("/", 1)[0]
    return ":" in head and not os.path.isabs(url)


def _base_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme.lower()}://{host}{port}/"


def http_env(auth: HttpAuth, url: str) -> GitEnv:
    """The git environment that sends ``auth`` to ``url``'s host, and only there."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in {"http", "https"}:
        raise ConfigError(
            f"token credentials need an https:// repository URL, not {scheme or 'scp-like'}",
            hint="use the repository's https URL, or SSHCredentials for an SSH URL",
        )
    pair = f"{reveal(auth.username)}:{auth.password.reveal()}".encode()
    header = Secret(f"Authorization: Basic {base64.b64encode(pair).decode()}", name="git-auth")
    redact = [auth.password]
    if isinstance(auth.username, Secret):
        redact.append(auth.username)
    return GitEnv(config=((f"http.{_base_url(url)}.extraHeader", header),), redact=tuple(redact))


def ssh_command(key_file: Path, known_hosts_file: Path | None, *, accept_new: bool) -> str:
    """The ``GIT_SSH_COMMAND`` for a key file and (optional) known_hosts file."""
    parts = [
        "ssh",
        "-i",
        str(key_file),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        f"StrictHostKeyChecking={'accept-new' if accept_new else 'yes'}",
    ]
    if known_hosts_file is not None:
        parts += ["-o", f"UserKnownHostsFile={known_hosts_file}", "-o", "GlobalKnownHostsFile=none"]
    return shlex.join(parts)


class AuthSession:
    """Lazily built git environment for one fetch or resolve; ``close()`` removes temp files.

    ``load`` returns the `GitAuth` for the repository URL (or None for anonymous access); it is
    called at most once, the first time `env` is used. ``retry`` is how network commands of the
    session are retried (`conveyor._retry`).
    """

    def __init__(
        self,
        url: str,
        load: Callable[[], GitAuth | None],
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.url = url
        self.retry = retry or RetryPolicy()
        self._load = load
        self._env: GitEnv | None = None
        self._loaded = False
        self._tmpdir: Path | None = None

    def __enter__(self) -> AuthSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def loaded(self) -> bool:
        """Whether the credentials were looked up (a network command ran)."""
        return self._loaded

    def env(self) -> GitEnv | None:
        """The git environment carrying the credentials (None when anonymous)."""
        if not self._loaded:
            auth = self._load()
            self._loaded = True
            self._env = self._build(auth)
        return self._env

    def _build(self, auth: GitAuth | None) -> GitEnv | None:
        if auth is None:
            return None
        if isinstance(auth, HttpAuth):
            return http_env(auth, self.url)
        if not is_ssh_url(self.url):
            raise ConfigError(
                "SSH credentials need an SSH repository URL (ssh://… or git@host:org/repo.git)",
                hint="use the repository's SSH URL, or token credentials for an https URL",
            )
        self._tmpdir = Path(tempfile.mkdtemp(prefix="conveyor-ssh-"))
        os.chmod(self._tmpdir, 0o700)
        key_file = _write_private(self._tmpdir / "id", _with_newline(auth.private_key.reveal()))
        known = None
        if auth.known_hosts is not None:
            known = _write_private(self._tmpdir / "known_hosts", _with_newline(auth.known_hosts))
        command = ssh_command(key_file, known, accept_new=auth.accept_new_host_keys)
        return GitEnv(env={"GIT_SSH_COMMAND": command, "GIT_SSH_VARIANT": "ssh"})

    def close(self) -> None:
        """Remove the key and known_hosts files, if any were written."""
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None


def _with_newline(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def _write_private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path

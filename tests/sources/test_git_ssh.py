"""SSH credentials: the ``GIT_SSH_COMMAND`` git gets, host keys checked strictly by default,
key files private and gone afterwards. (No sshd is installed here, so no real SSH server is
involved: ssh's own ``-G`` shows the effective settings, and a stand-in ``ssh`` on PATH shows
what git runs and when.)"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from conveyor.errors import AuthenticationError, ConfigError
from conveyor.sources.git import GitRepository
from conveyor.sources.git._auth import AuthSession, is_ssh_url, ssh_command
from conveyor.sources.git.credentials import GitHubCredentials, SSHCredentials

KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA-SECRET-KEY-MATERIAL\n"
    "-----END OPENSSH PRIVATE KEY-----"
)
HOSTS = (
    "git.example.com ssh-ed25519 "
    "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
)


def _effective(command: str, host: str = "git.example.com") -> dict[str, str]:
    """What ssh would do with ``command`` (``ssh -G`` prints the resolved configuration)."""
    argv = [*shlex.split(command), "-G", host]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


@pytest.mark.parametrize(
    ("url", "ssh"),
    [
        ("git@github.com:o/r.git", True),
        ("ssh://git@host:2222/o/r.git", True),
        ("git+ssh://host/o/r.git", True),
        ("https://github.com/o/r.git", False),
        ("file:///tmp/r.git", False),
        ("/tmp/r.git", False),
    ],
)
def test_ssh_urls_are_recognised(url: str, ssh: bool) -> None:
    assert is_ssh_url(url) is ssh


def test_host_keys_are_checked_strictly_by_default(tmp_path: Path) -> None:
    # Given the session's environment for SSH credentials with known_hosts
    creds = SSHCredentials(private_key=KEY, known_hosts=HOSTS)
    url = "git@git.example.com:o/r.git"
    with AuthSession(url, lambda: creds.git_auth(url)) as session:
        env = session.env()
        assert env is not None
        command = str(env.env["GIT_SSH_COMMAND"])
        parts = shlex.split(command)
        key_file = Path(parts[parts.index("-i") + 1])
        settings = _effective(command)

        # Then ssh checks host keys strictly against exactly that file, uses only that key
        assert settings["stricthostkeychecking"] == "true"
        assert settings["userknownhostsfile"].split()[0] != "~/.ssh/known_hosts"
        known_file = Path(settings["userknownhostsfile"].split()[0])
        assert known_file.read_text() == HOSTS
        assert settings["identitiesonly"] == "yes"
        assert settings["batchmode"] == "yes"
        assert key_file.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
        for path in (key_file, known_file):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
        assert "SECRET-KEY-MATERIAL" not in command

    # and the key and known_hosts files are gone afterwards
    assert not key_file.exists()
    assert not known_file.exists()


def test_accept_new_only_when_asked() -> None:
    relaxed = ssh_command(Path("/k"), Path("/h"), accept_new=True)
    assert _effective(relaxed)["stricthostkeychecking"] == "accept-new"
    strict = ssh_command(Path("/k"), None, accept_new=False)
    assert _effective(strict)["stricthostkeychecking"] == "true"
    assert "UserKnownHostsFile" not in strict  # the user's own known_hosts, still strict


def test_ssh_credentials_need_an_ssh_url_and_tokens_an_https_url() -> None:
    with pytest.raises(ConfigError, match="SSH repository URL"):
        AuthSession(
            "https://h/o/r.git", lambda: SSHCredentials(KEY).git_auth("https://h/o/r.git")
        ).env()
    with pytest.raises(ConfigError, match="https://"):
        AuthSession("git@h:o/r.git", lambda: GitHubCredentials("t").git_auth("git@h:o/r")).env()


def test_git_runs_ssh_with_the_key_and_a_host_key_failure_is_classified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a stand-in `ssh` first on PATH that records its argv and the key file's mode, then
    # fails the way ssh does on an unknown host key
    record = tmp_path / "ssh-call"
    fake = tmp_path / "bin" / "ssh"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > {record}\n'
        'while [ "$#" -gt 0 ]; do if [ "$1" = "-i" ]; then '
        f'stat -c %a "$2" >> {record}; fi; shift; done\n'
        'echo "Host key verification failed." >&2\nexit 255\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    source = GitRepository(
        "ssh://git@git.example.com/o/r.git",
        credentials=SSHCredentials(private_key=KEY, known_hosts=HOSTS),
    )

    # When git is asked to list the repository's refs
    with pytest.raises(AuthenticationError) as caught:
        source.resolve()

    # Then ssh got the key (mode 0600 while it ran) and strict checking, and the error says how
    # to fix the host key without showing the key
    lines = record.read_text().splitlines()
    assert "StrictHostKeyChecking=yes" in lines
    assert "IdentitiesOnly=yes" in lines
    assert lines[-1] == "600"
    assert "git@git.example.com" in lines
    assert "host key" in str(caught.value).lower()
    assert "known_hosts" in (caught.value.hint or "")
    assert "SECRET-KEY-MATERIAL" not in str(caught.value)
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("conveyor-ssh-*/id"))

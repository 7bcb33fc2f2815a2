"""Shared fixtures: every test runs in its own HOME / CONVEYOR_HOME with a clean git identity and
fake cloud credentials, so nothing touches the developer's real configuration or the network."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.settings import Settings

SYSTEM_DIRS = ("/", tempfile.gettempdir())


@pytest.fixture(autouse=True)
def system_dirs_untouched() -> Iterator[None]:
    """No test may change the mode of the machine's own directories (a ``/tmp`` without its
    sticky bit and write rights breaks every other user of the machine, apt among them): one
    that does fails, and the mode is put back."""
    before = {path: os.lstat(path).st_mode for path in SYSTEM_DIRS}
    yield
    changed = {}
    for path, mode in before.items():
        now = os.lstat(path).st_mode
        if now != mode:
            os.chmod(path, stat.S_IMODE(mode))
            changed[path] = f"{stat.S_IMODE(mode):o} -> {stat.S_IMODE(now):o}"
    assert not changed, f"the test changed the mode of system directories: {changed}"


@pytest.fixture(autouse=True)
def isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Own HOME, CONVEYOR_HOME, git identity and fake cloud credentials for each test."""
    home = tmp_path / "home"
    home.mkdir()
    gitconfig = home / ".gitconfig-test"
    gitconfig.write_text(
        "[user]\n\tname = Conveyor Tests\n\temail = tests@conveyor.invalid\n"
        '[init]\n\tdefaultBranch = main\n[protocol "file"]\n\tallow = always\n'
    )
    env = {
        "HOME": str(home),
        "CONVEYOR_HOME": str(home / ".conveyor"),
        "GIT_CONFIG_GLOBAL": str(gitconfig),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "Conveyor Tests",
        "GIT_AUTHOR_EMAIL": "tests@conveyor.invalid",
        "GIT_COMMITTER_NAME": "Conveyor Tests",
        "GIT_COMMITTER_EMAIL": "tests@conveyor.invalid",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "NO_GCE_CHECK": "True",
        "GCE_METADATA_HOST": "127.0.0.1:9",
        "GCE_METADATA_IP": "127.0.0.1:9",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in (
        "CONVEYOR_API_URL",
        "CONVEYOR_API_KEY",
        "CONVEYOR_DATABASE_URL",
        "CONVEYOR_SECRET_KEY",
        "CONVEYOR_CACHE_DIR",
        "CONVEYOR_CACHE_MAX_BYTES",
        "CONVEYOR_MAX_REQUEST_BYTES",
        "CONVEYOR_MAX_PARAMETERS_BYTES",
        "CONVEYOR_MAX_LOG_LINE_BYTES",
        "CONVEYOR_MAX_LOG_BATCH",
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_ASKPASS",
        "SSH_ASKPASS",
        "AZURE_STORAGE_CONNECTION_STRING",
        "GOOGLE_APPLICATION_CREDENTIALS",
    ):
        monkeypatch.delenv(key, raising=False)
    return home


@pytest.fixture
def settings(isolate: Path) -> Settings:
    """Settings read from the isolated environment."""
    return Settings.from_env()


def service_unavailable(reason: str) -> None:
    """Skip locally when a real service cannot start; fail under CI (where it must work)."""
    if os.environ.get("CI"):
        pytest.fail(f"service unavailable under CI: {reason}")
    pytest.skip(reason)

"""A ``CONVEYOR_SECRET_KEY`` too short to be used is refused when the server starts, and when
the embedded default is first used, in one line with a hint — not a failed request (HTTP 500,
with a raw log line) the first time a secret is stored. Real ``conveyor`` commands in
subprocesses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from e2e.conftest import command_env, conveyor, ok, one_line_error

pytestmark = pytest.mark.slow

SHORT = "k3y-abc"
TOO_SHORT = (
    "CONVEYOR_SECRET_KEY is too short (7 bytes): it must be a Fernet key or a random string "
    "of at least 16 bytes"
)


def _secret_set(name: str, value: str, *, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", "secret", "set", name],
        input=value,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_server_start_refuses_a_short_secret_key_in_one_line(tmp_path: Path) -> None:
    env = command_env(CONVEYOR_SECRET_KEY=SHORT)
    done = conveyor("server", "start", "--host", "127.0.0.1", "--port", "0", env=env, timeout=30)
    assert one_line_error(done) == TOO_SHORT
    assert "hint: " in done.stderr
    assert "listening" not in done.stdout
    assert SHORT not in done.stdout + done.stderr


def test_the_embedded_default_refuses_a_short_secret_key_before_any_request(
    tmp_path: Path,
) -> None:
    # Given the embedded default (no server URL) and a short key
    env = command_env(CONVEYOR_SECRET_KEY=SHORT)

    # When a secret is stored, or anything else is asked
    stored = _secret_set("X", "v", env=env)
    listed = conveyor("pool", "ls", env=env)

    # Then each command refuses in one line with a hint: no HTTP 500, no raw log line
    for done in (stored, listed):
        assert one_line_error(done) == TOO_SHORT
        assert "hint: " in done.stderr
        assert "HTTP 500" not in done.stderr
        assert "WARNING" not in done.stderr
        assert SHORT not in done.stdout + done.stderr

    # And a long enough key works, as before
    good = command_env(CONVEYOR_SECRET_KEY="a random string of more than sixteen bytes")
    ok(_secret_set("X", "v", env=good))

"""`conveyor._process.run`: secrets reach the child in clear, and nowhere else."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

import pytest

from conveyor._process import format_command, run
from conveyor.errors import CommandError, ConfigError
from conveyor.secrets import Secret

VALUE = "tok-5up3r-s3cr3t-0042"
ECHO_ARG_AND_FAIL = (
    "import sys; print('out', sys.argv[1]); print('fatal: auth failed for', sys.argv[1], "
    "file=sys.stderr); sys.exit(3)"
)
ECHO_ENV_AND_FAIL = (
    "import os, sys; print('token is', os.environ['APP_TOKEN'], file=sys.stderr); sys.exit(2)"
)


def all_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + str(getattr(exc, "hint", ""))


def test_child_receives_the_clear_value(tmp_path: Path) -> None:
    out = tmp_path / "seen"
    script = "import os, sys; open(sys.argv[1], 'w').write(sys.argv[2] + '|' + os.environ['T'])"
    done = run(
        [sys.executable, "-c", script, out, Secret(VALUE)],
        extra_env={"T": Secret(VALUE)},
    )
    assert out.read_text() == f"{VALUE}|{VALUE}"
    assert done.returncode == 0
    assert VALUE not in done.command
    assert "****" in done.command


def test_failing_command_with_secret_argument_is_redacted_everywhere(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a child that echoes its secret argument on stdout and stderr, then fails
    with caplog.at_level(logging.DEBUG, logger="conveyor"), pytest.raises(CommandError) as caught:
        run([sys.executable, "-c", ECHO_ARG_AND_FAIL, Secret(VALUE)])

    # Then the error, its command, its stderr and the logs show **** and never the value
    exc = caught.value
    assert exc.returncode == 3
    assert "exited with 3" in str(exc)
    assert "fatal: auth failed for ****" in str(exc)
    assert "****" in exc.command
    assert "auth failed for ****" in exc.stderr
    assert "running command=" in caplog.text
    assert "****" in caplog.text
    captured = capsys.readouterr()
    for text in (all_text(exc), exc.command, exc.stderr, caplog.text, captured.out, captured.err):
        assert VALUE not in text


def test_secret_in_the_environment_echoed_by_the_child_is_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="conveyor"), pytest.raises(CommandError) as caught:
        run([sys.executable, "-c", ECHO_ENV_AND_FAIL], extra_env={"APP_TOKEN": Secret(VALUE)})
    assert "token is ****" in str(caught.value)
    assert VALUE not in all_text(caught.value)
    assert VALUE not in caplog.text


def test_replaced_environment_with_a_secret(tmp_path: Path) -> None:
    script = (
        "import os; "
        "print(sorted(k for k in os.environ if k.startswith('APP')), os.environ['APP_TOKEN'])"
    )
    done = run(
        [sys.executable, "-c", script],
        env={"APP_TOKEN": Secret(VALUE), "APP_MODE": "x", "PATH": "/usr/bin:/bin"},
    )
    assert done.stdout.strip() == "['APP_MODE', 'APP_TOKEN'] ****"


def test_output_of_a_successful_command_is_redacted() -> None:
    done = run([sys.executable, "-c", "import sys; print(sys.argv[1] * 2)", Secret(VALUE)])
    assert done.stdout.strip() == "********"


def test_check_false_returns_the_failure() -> None:
    done = run([sys.executable, "-c", "import sys; sys.exit(5)"], check=False)
    assert done.returncode == 5


def test_timeout_is_a_redacted_command_error() -> None:
    script = "import sys, time; print(sys.argv[1], file=sys.stderr, flush=True); time.sleep(30)"
    with pytest.raises(CommandError, match="timed out") as caught:
        run([sys.executable, "-c", script, Secret(VALUE)], timeout=1.0, hint="try again")
    assert caught.value.returncode is None
    assert caught.value.hint == "try again"
    assert VALUE not in all_text(caught.value)


def test_missing_executable_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="executable 'conveyor-no-such-tool' was not found") as e:
        run(["conveyor-no-such-tool", "--version", Secret(VALUE)])
    assert e.value.hint is not None
    assert "PATH" in e.value.hint
    assert VALUE not in all_text(e.value)


def test_missing_working_directory_is_not_reported_as_a_missing_executable(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"working directory .* does not exist"):
        run([sys.executable, "-c", "pass"], cwd=tmp_path / "gone")


def test_non_executable_file_is_a_config_error(tmp_path: Path) -> None:
    script = tmp_path / "tool.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    with pytest.raises(ConfigError, match="permission denied"):
        run([script])


def test_format_command_quotes_and_redacts() -> None:
    shown = format_command(["git", "clone", Secret(VALUE), Path("/a b"), "--depth=1"])
    assert shown == "git clone '****' '/a b' --depth=1"

"""``--param`` values the server could not store: one line and a hint from the real ``conveyor``
process, with the user's own text in it, exit code 1, never a traceback (``run`` and ``deploy``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.connect import connect
from conveyor.errors import ConfigError


def conveyor(*args: str | bytes, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "300"},
    )


def one_error(result: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    """The ``error:`` and ``hint:`` lines, after checking they are all there is."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert [line.split(":")[0] for line in lines] == ["error", "hint"], result.stderr
    return lines[0].removeprefix("error: "), lines[1].removeprefix("hint: ")


NESTED_300 = "x=" + "[" * 300 + "]" * 300


@pytest.mark.parametrize(
    ("param", "error", "hint"),
    [
        (
            "f=NaN",
            "--param f=NaN: NaN is not a finite number",
            "pass a finite number such as 1.5; to pass the text, quote it as JSON: "
            "--param 'f=\"NaN\"'",
        ),
        ("f=Infinity", "--param f=Infinity: Infinity is not a finite number", "quote it"),
        ("f=-Infinity", "--param f=-Infinity: -Infinity is not a finite number", "quote it"),
        ("f=1e999", "--param f=1e999: 1e999 is not a finite number", "pass a finite number"),
        (
            "f=[1, NaN]",
            "--param f=[1, NaN]: f[1]: NaN is not a finite number",
            "JSON numbers must be finite",
        ),
        (
            'x="\\ud800"',
            '--param x="\\ud800": the text contains a lone surrogate (\\ud800), which is not '
            "valid Unicode",
            "send valid Unicode text (UTF-8)",
        ),
        (
            b"x=caf\xff",  # bytes that are not UTF-8 reach Python as a lone surrogate
            "--param x=caf\\udcff: the text contains a lone surrogate (\\udcff)",
            "send valid Unicode text (UTF-8)",
        ),
        (
            NESTED_300,
            "--param x=" + "[" * 57 + "...: it is nested more than 64 levels deep",
            "flatten the value, or pass a reference",
        ),
        (
            "x=" + "[" * 60_000 + "]" * 60_000,  # one argv string is at most 128 KiB
            "--param x: the value is nested more than 64 levels deep",
            "flatten the value",
        ),
        ('x={"a": "\\u0000"}', "x.a: the text contains a NUL character (\\u0000)", "base64"),
    ],
    ids=[
        "nan",
        "infinity",
        "minus-infinity",
        "overflow",
        "nested-nan",
        "json-surrogate",
        "argv-surrogate",
        "nested-300",
        "nested-60000",
        "nul",
    ],
)
@pytest.mark.parametrize("command", ["run", "deploy"])
def test_a_param_that_cannot_be_sent_is_one_line(tmp_path, command, param, error, hint):
    args = ["run", "hello/prod"] if command == "run" else ["deploy", "flows.py:hello", "-n", "x"]

    result = conveyor(*args, "--param", param, cwd=tmp_path)

    shown, said = one_error(result)
    assert error in shown
    assert hint in said


TYPES = """
from datetime import date, datetime
from conveyor import flow

@flow
def types(when: datetime, day: date = date(2024, 1, 1)) -> None: ...
"""


def test_a_date_that_does_not_convert_is_one_line_and_creates_no_run(tmp_path, settings) -> None:
    # Given a deployment of a flow taking a datetime and a date (embedded: no server)
    project = tmp_path / "project"
    project.mkdir()
    (project / "flows.py").write_text(TYPES)
    deployed = conveyor("deploy", "flows.py:types", "--name", "t", cwd=project)
    assert deployed.returncode == 0, deployed.stderr
    # When it is run with values that are not ISO 8601, then each is refused in one line
    when_hint = "write an ISO 8601 date and time, such as 2024-01-31T09:30:00Z"
    for params, error, hint in [
        (
            ["when=notadate"],
            "types/t: parameter 'when': 'notadate' is not a valid datetime or date, input is "
            "too short",
            when_hint,
        ),
        (
            ["when=2024-13-45"],
            "types/t: parameter 'when': '2024-13-45' is not a valid datetime or date, month "
            "value is outside expected range of 1-12",
            when_hint,
        ),
        (
            ["when=2024-01-31T09:30:00Z", "day=yesterday"],
            "types/t: parameter 'day': 'yesterday' is not a valid date or datetime, input is "
            "too short",
            "write an ISO 8601 date, such as 2024-01-31",
        ),
    ]:
        args = [arg for param in params for arg in ("--param", param)]
        result = conveyor("run", "types/t", *args, "--watch", "--timeout", "30", cwd=project)
        assert one_error(result) == (error, hint)
    # ...and no run was created; a deploy with such a default is refused too
    with connect(settings) as client:
        assert client.list_runs() == []
    shown, _ = one_error(
        conveyor("deploy", "flows.py:types", "--name", "t2", "--param", "when=x", cwd=project)
    )
    assert shown == "parameter 'when': 'x' is not a valid datetime or date, input is too short"
    with connect(settings) as client:
        assert [d.name for d in client.list_deployments()] == ["t"]


def test_an_instance_method_flow_is_one_line_at_deploy(tmp_path, settings) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "flows.py").write_text(
        "from conveyor import flow\n\n"
        "class Pipeline:\n"
        "    @flow\n"
        "    def method_flow(self, x: int = 1) -> int:\n"
        "        return x\n"
    )

    result = conveyor("deploy", "flows.py:Pipeline.method_flow", "--name", "m", cwd=project)

    shown, said = one_error(result)
    assert shown.endswith(
        ": flows.py:Pipeline.method_flow is an instance method: a flow must be a function, "
        "a staticmethod or a classmethod"
    )
    assert said.startswith("put @staticmethod or @classmethod above @flow")
    with connect(settings) as client:
        assert client.list_deployments() == []


def test_a_good_param_still_parses() -> None:
    from conveyor._values import parse_params

    assert parse_params(["n=3", "f=1.5", "s=hello", 'j={"a": [1, null]}', "q=a=b", "t=NaNa"]) == {
        "n": 3,
        "f": 1.5,
        "s": "hello",
        "j": {"a": [1, None]},
        "q": "a=b",
        "t": "NaNa",
    }


def test_a_param_without_a_key_is_refused() -> None:
    from conveyor._values import parse_params

    with pytest.raises(ConfigError, match="--param '=3' is not KEY=VALUE"):
        parse_params(["=3"])


def test_a_refused_request_model_is_still_one_line(tmp_path) -> None:
    # A description that is not valid Unicode passes typer and is refused by the request model.
    result = conveyor("pool", "create", "gpu", "--description", b"bad\xff", cwd=tmp_path)

    shown, said = one_error(result)
    assert shown == (
        "invalid request: description: the text contains a lone surrogate (\\udcff), "
        "which is not valid Unicode"
    )
    assert said == "send valid Unicode text (UTF-8)"


def test_a_number_given_for_text_is_refused_with_a_hint_that_works(tmp_path, settings) -> None:
    # Given a deployment of a flow taking a text parameter
    project = tmp_path / "project"
    project.mkdir()
    (project / "flows.py").write_text(
        "from conveyor import flow\n\n@flow\ndef mail(zip: str) -> str:\n    return zip\n"
    )
    assert conveyor("deploy", "flows.py:mail", "--name", "m", cwd=project).returncode == 0

    # When it is run with digits (JSON reads them as a number)
    refused = one_error(conveyor("run", "mail/m", "--param", "zip=12345", cwd=project))

    # Then the hint says how to write them as text, and the shell form it gives works
    shell = "--param zip='\"12345\"'"
    assert refused == (
        "mail/m: parameter 'zip': 12345 is not a string",
        f'got a number; values are JSON, so write the text as "12345" (in a shell: {shell})',
    )
    argv = subprocess.run(
        ["sh", "-c", f'printf "%s\\n" {shell}'], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    done = conveyor("run", "mail/m", *argv, cwd=project)
    assert done.returncode == 0, done.stderr
    with connect(settings) as client:
        (run,) = client.list_runs()
    assert run.parameters == {"zip": "12345"}

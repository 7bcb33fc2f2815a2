"""Parameter schemas from signatures, and validating run parameters against a stored schema."""

from __future__ import annotations

import datetime
import enum
import json
import subprocess
import sys
import uuid
from typing import Any, Literal

import pytest
from pydantic import BaseModel, SecretStr

from conveyor import flow
from conveyor._params import (
    bind_parameters,
    coerce_parameters,
    parameter_schema,
    validate_parameters,
)
from conveyor.errors import ConfigError


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Limits(BaseModel):
    retries: int
    label: str = "x"


class Opaque:
    """A type pydantic cannot describe in JSON Schema."""


@flow
def report(
    name: str,
    n: int = 3,
    ratio: float = 0.5,
    flag: bool = False,
    tags: list[str] | None = None,
    color: Color = Color.RED,
    mode: Literal["fast", "slow"] = "fast",
    limits: Limits | None = None,
    day: datetime.date | None = None,
    anything=None,  # unannotated on purpose
    token: SecretStr | None = None,
) -> None:
    """A flow with one parameter of each kind."""


# --- schema ---------------------------------------------------------------------------------------


def test_schema_describes_the_signature() -> None:
    # Given a flow with one parameter of each kind
    schema = report.parameter_schema()
    # When its schema is built
    props = schema["properties"]

    # Then each parameter is described, in order, and the schema is plain JSON
    assert schema["type"] == "object"
    assert schema["title"] == "Parameters"
    assert schema["required"] == ["name"]
    assert schema["additionalProperties"] is False
    assert list(props) == [
        "name",
        "n",
        "ratio",
        "flag",
        "tags",
        "color",
        "mode",
        "limits",
        "day",
        "anything",
        "token",
    ]
    assert [p["position"] for p in props.values()] == list(range(11))
    assert props["name"] == {"title": "name", "type": "string", "position": 0}
    assert props["n"] == {"title": "n", "type": "integer", "default": 3, "position": 1}
    assert props["ratio"]["type"] == "number"
    assert props["flag"]["type"] == "boolean"
    assert props["tags"]["anyOf"] == [
        {"type": "array", "items": {"type": "string"}},
        {"type": "null"},
    ]
    assert props["color"]["$ref"] == "#/$defs/Color"
    assert schema["$defs"]["Color"]["enum"] == ["red", "blue"]
    assert props["mode"]["enum"] == ["fast", "slow"]
    assert props["anything"] == {"title": "anything", "default": None, "position": 9}
    assert json.loads(json.dumps(schema)) == schema


def test_schema_of_awkward_signatures() -> None:
    marker = object()

    def awkward(
        schema: int,
        model_config: str = "x",
        thing: Opaque | None = None,
        default_not_json: object = marker,
        *args: int,
        **kwargs: str,
    ) -> None: ...

    schema = parameter_schema(awkward)
    props = schema["properties"]

    assert list(props) == ["schema", "model_config", "thing", "default_not_json"]
    assert props["schema"]["type"] == "integer"
    assert props["thing"] == {"title": "thing", "default": None, "position": 2}
    assert "default" not in props["default_not_json"]
    assert schema["additionalProperties"] is True  # **kwargs
    assert schema["required"] == ["schema"]


def test_schema_with_an_annotation_that_does_not_resolve() -> None:
    def uses_a_name_imported_elsewhere(a: int, b: UndefinedName = None) -> None:  # type: ignore[name-defined]  # noqa: F821
        ...

    props = parameter_schema(uses_a_name_imported_elsewhere)["properties"]

    assert props["a"]["type"] == "integer"
    assert "type" not in props["b"]


def test_no_parameters() -> None:
    schema = parameter_schema(lambda: None)
    assert schema["properties"] == {}
    validate_parameters(schema, {})
    with pytest.raises(ConfigError, match="unknown parameter 'x'") as caught:
        validate_parameters(schema, {"x": 1})
    assert caught.value.hint == "the flow takes no parameters"


# --- validation: the same messages from a flow and from its stored (JSON) schema ------------------

TAKES = "the flow takes: name, n, ratio, flag, tags, color, mode, limits, day, anything, token"

CASES: list[tuple[dict[str, Any], str, str | None]] = [
    ({}, "missing required parameter 'name'", TAKES),
    ({"name": "a", "nme": 1}, "unknown parameter 'nme'", "did you mean 'name'?"),
    ({"name": "a", "zzz": 1}, "unknown parameter 'zzz'", TAKES),
    (
        {"name": 1},
        "parameter 'name': 1 is not a string",
        'got a number; values are JSON, so write the text as "1" '
        """(in a shell: --param name='"1"')""",
    ),
    (
        {"name": True},
        "parameter 'name': True is not a string",
        'got a boolean; values are JSON, so write the text as "true" '
        "(in a shell: --param name='\"true\"')",
    ),
    ({"name": "a", "n": "abc"}, "parameter 'n': 'abc' is not a valid integer", "got a string"),
    (
        {"name": "a", "n": "3"},
        "parameter 'n': '3' is not a valid integer",
        "got a string; values are JSON, so write 3 without quotes",
    ),
    ({"name": "a", "n": True}, "parameter 'n': True is not a valid integer", "got a boolean"),
    ({"name": "a", "n": 2.5}, "parameter 'n': 2.5 is not a valid integer", "got a number"),
    ({"name": "a", "ratio": "x"}, "parameter 'ratio': 'x' is not a valid number", "got a string"),
    (
        {"name": "a", "flag": "yes"},
        "parameter 'flag': 'yes' is not a boolean (true or false)",
        "got a string",
    ),
    ({"name": "a", "tags": ["x", 2]}, "parameter 'tags[1]': 2 is not a string", "got a number"),
    ({"name": "a", "tags": "x"}, "parameter 'tags': 'x' is not a list or null", "got a string"),
    (
        {"name": "a", "color": "green"},
        "parameter 'color': 'green' is not one of 'red', 'blue'",
        "got a string",
    ),
    (
        {"name": "a", "mode": "medium"},
        "parameter 'mode': 'medium' is not one of 'fast', 'slow'",
        "got a string",
    ),
    (
        {"name": "a", "limits": {"label": "y"}},
        "parameter 'limits': missing required key 'retries'",
        None,
    ),
    (
        {"name": "a", "limits": {"retries": "z"}},
        "parameter 'limits.retries': 'z' is not a valid integer",
        "got a string",
    ),
    (
        {"name": "a", "token": 12345},
        "parameter 'token': **** is not a string or null",
        "got a number",
    ),
]


@pytest.mark.parametrize(("params", "message", "hint"), CASES)
def test_validation_from_the_stored_schema(
    params: dict[str, Any], message: str, hint: str | None
) -> None:
    stored = json.loads(json.dumps(report.parameter_schema()))  # as the server keeps it

    with pytest.raises(ConfigError) as caught:
        validate_parameters(stored, params)

    assert (str(caught.value), caught.value.hint) == (message, hint)


@pytest.mark.parametrize(("params", "message", "hint"), CASES[:6])
def test_validation_from_the_flow_gives_the_same_messages(
    params: dict[str, Any], message: str, hint: str | None
) -> None:
    for validate in (lambda p: validate_parameters(report, p), report.validate_parameters):
        with pytest.raises(ConfigError) as caught:
            validate(params)
        assert (str(caught.value), caught.value.hint) == (message, hint)


def test_valid_parameters_come_back_unchanged() -> None:
    params = {
        "name": "a",
        "n": 4,
        "tags": ["x"],
        "color": "blue",
        "limits": {"retries": 2},
        "day": "2024-02-29",
        "anything": {"free": ["form"]},
    }

    result = validate_parameters(report.parameter_schema(), params)

    assert result == params
    assert result is not params


@flow
def timed(
    at: datetime.datetime,
    day: datetime.date = datetime.date(2024, 1, 1),
    clock: datetime.time | None = None,
    wait: datetime.timedelta | None = None,
    ref: uuid.UUID | None = None,
    days: list[datetime.date] | None = None,
) -> None:
    """A flow with one parameter of each string format a worker converts."""


AT = {"at": "2024-01-31T09:30:00Z"}
WRITE_AT = "write an ISO 8601 date and time, such as 2024-01-31T09:30:00Z"
WRITE_DAY = "write an ISO 8601 date, such as 2024-01-31"


@pytest.mark.parametrize(
    ("params", "message", "hint"),
    [
        (
            {"at": "notadate"},
            "parameter 'at': 'notadate' is not a valid datetime or date, input is too short",
            WRITE_AT,
        ),
        (
            {"at": "2024-13-45"},
            "parameter 'at': '2024-13-45' is not a valid datetime or date, month value is "
            "outside expected range of 1-12",
            WRITE_AT,
        ),
        (
            {**AT, "day": "yesterday"},
            "parameter 'day': 'yesterday' is not a valid date or datetime, input is too short",
            WRITE_DAY,
        ),
        (
            {**AT, "day": "2024-02-30"},
            "parameter 'day': '2024-02-30' is not a valid date or datetime, day value is outside "
            "expected range",
            WRITE_DAY,
        ),
        (
            {**AT, "day": "2024-01-31T09:30:00"},
            "parameter 'day': Datetimes provided to dates should have zero time - e.g. be exact "
            "dates",
            WRITE_DAY,
        ),
        (
            {**AT, "clock": "25:00"},
            "parameter 'clock': '25:00' is not in a valid time format, hour value is outside "
            "expected range of 0-23",
            "write an ISO 8601 time, such as 09:30:00",
        ),
        (
            {**AT, "wait": "soon"},
            "parameter 'wait': 'soon' is not a valid timedelta, invalid digit in duration",
            "write an ISO 8601 duration, such as PT1H30M, or 01:30:00",
        ),
        (
            {**AT, "ref": "x"},
            "parameter 'ref': 'x' is not a valid UUID, invalid character: found `x` at 0",
            "write a UUID, such as 123e4567-e89b-12d3-a456-426614174000",
        ),
        (
            {**AT, "days": ["2024-01-31", "tomorrow"]},
            "parameter 'days[1]': 'tomorrow' is not a valid date or datetime, input is too short",
            WRITE_DAY,
        ),
        ({"at": 20240131}, "parameter 'at': 20240131 is not a string", "got a number"),
    ],
    ids=[
        "datetime",
        "datetime-month",
        "date",
        "date-day",
        "date-with-time",
        "time",
        "duration",
        "uuid",
        "date-in-list",
        "not-a-string",
    ],
)
def test_dates_and_times_are_checked_from_the_stored_schema(
    params: dict[str, Any], message: str, hint: str
) -> None:
    stored = json.loads(json.dumps(timed.parameter_schema()))

    with pytest.raises(ConfigError) as caught:
        validate_parameters(stored, params)

    assert (str(caught.value), caught.value.hint) == (message, hint)


def test_dates_and_times_are_accepted_exactly_when_the_worker_converts_them() -> None:
    # Given strings the worker's conversion accepts or refuses for each kind of value
    stored = json.loads(json.dumps(timed.parameter_schema()))
    texts = [
        "2024-01-31",
        "2024-01-31T09:30:00",
        "2024-01-31T09:30:00Z",
        "2024-01-31 09:30:00.123+05:30",
        "2024-01-31T00:00:00",
        "2024-02-29",
        "2023-02-29",
        "20240131",
        "1706693400",
        "09:30",
        "09:30:00.5",
        "24:00",
        "P1D",
        "PT1H30M",
        "01:30:00",
        "3600",
        "123e4567-e89b-12d3-a456-426614174000",
        "123e4567e89b12d3a456426614174000",
        "",
        "now",
    ]
    for name in ("at", "day", "clock", "wait", "ref"):
        for text in texts:
            params = {**AT, name: text}
            # When the same value is validated (the API) and converted (the worker)
            try:
                coerce_parameters(timed.fn, params)
                converts = True
            except ConfigError:
                converts = False
            try:
                validate_parameters(stored, params)
                accepted = True
            except ConfigError:
                accepted = False
            # Then both say the same
            assert accepted == converts, (name, text)


def test_good_dates_and_times_come_back_unchanged() -> None:
    params = {
        "at": "2024-01-31T09:30:00+01:00",
        "day": "2024-02-29",
        "clock": "09:30",
        "wait": "PT1H",
        "ref": "123e4567-e89b-12d3-a456-426614174000",
        "days": ["2024-01-31"],
    }

    assert validate_parameters(timed.parameter_schema(), params) == params
    assert coerce_parameters(timed.fn, params) == {
        "at": datetime.datetime(
            2024, 1, 31, 9, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=1))
        ),
        "day": datetime.date(2024, 2, 29),
        "clock": datetime.time(9, 30),
        "wait": datetime.timedelta(hours=1),
        "ref": uuid.UUID("123e4567-e89b-12d3-a456-426614174000"),
        "days": [datetime.date(2024, 1, 31)],
    }


@pytest.mark.parametrize("params", [["name"], {1: "a"}, "name=a"])
def test_parameters_must_be_a_mapping_of_names(params: Any) -> None:
    with pytest.raises(ConfigError, match="parameters must be a mapping of parameter names"):
        validate_parameters(report.parameter_schema(), params)


def test_a_broken_stored_schema_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="the parameter schema is not a valid JSON Schema"):
        validate_parameters({"type": "no-such-type"}, {})
    with pytest.raises(ConfigError, match="the parameter schema could not be applied"):
        validate_parameters({"properties": {"a": {"$ref": "#/$defs/Missing"}}}, {"a": 1})


def test_an_empty_schema_accepts_anything() -> None:
    assert validate_parameters({}, {"x": 1}) == {"x": 1}


def test_no_parameters_for_a_flow_that_requires_none_load_no_validator() -> None:
    """The common run (nothing to pass, nothing required) skips the validator import; what it
    accepts and refuses is the same as with the validator."""
    script = (
        "import sys, json\n"
        "from conveyor._params import validate_parameters\n"
        "schema = json.loads(sys.argv[1])\n"
        "print(validate_parameters(schema, {}), 'jsonschema' in sys.modules)\n"
    )
    schema = report.parameter_schema()
    optional = {**schema, "required": []}
    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps(optional)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.split() == ["{}", "False"]
    with pytest.raises(ConfigError, match="missing"):
        validate_parameters(schema, {})
    with pytest.raises(ConfigError, match="not a valid JSON Schema"):
        validate_parameters({"type": "object", "minProperties": "x"}, {})


# --- coercion and binding (what a worker does before calling) -------------------------------------


def test_coerce_converts_json_to_declared_types() -> None:
    values = coerce_parameters(
        report.fn,
        {"name": "a", "color": "blue", "limits": {"retries": 2}, "day": "2024-02-29", "n": 4},
    )

    assert values == {
        "name": "a",
        "n": 4,
        "color": Color.BLUE,
        "limits": Limits(retries=2),
        "day": datetime.date(2024, 2, 29),
    }


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "missing required parameter 'name'"),
        ({"name": "a", "nme": 1}, "unknown parameter 'nme'"),
        ({"name": "a", "n": "abc"}, "parameter 'n': 'abc' is not a valid integer"),
    ],
)
def test_coerce_errors_name_the_parameter(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        coerce_parameters(report.fn, params)
    assert str(caught.value).startswith(message)


def test_coerce_keeps_extra_keyword_arguments() -> None:
    def takes_kwargs(a: int, **rest: Any) -> None: ...

    assert coerce_parameters(takes_kwargs, {"a": "1", "b": 2}) == {"a": 1, "b": 2}


def test_bind_passes_positional_only_parameters_by_position() -> None:
    def f(a: int, b: int = 2, /, c: int = 3, *, d: int = 4) -> tuple[int, ...]:
        return (a, b, c, d)

    args, kwargs = bind_parameters(f, {"a": 1, "c": 5, "d": 6})

    assert (args, kwargs) == ((1, 2), {"c": 5, "d": 6})
    assert f(*args, **kwargs) == (1, 2, 5, 6)
    with pytest.raises(ConfigError, match="missing required parameter 'a'"):
        bind_parameters(f, {"b": 1})

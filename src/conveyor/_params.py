"""A flow's parameters: a JSON Schema of its signature, and checking run parameters against it.

- `parameter_schema(fn)` builds the JSON Schema of a function's parameters with pydantic
  (unannotated parameters are ``Any``; a type pydantic cannot describe becomes ``Any`` in the
  schema but is still checked by `coerce_parameters`). Each property carries its ``position``.
- `validate_parameters(schema_or_flow, params)` checks JSON values against a schema dict, such as
  the one a deployment stores, without the function (``jsonschema``). It raises a one-line
  `ConfigError` naming the parameter: missing, unknown, or of the wrong type. The string formats
  a worker converts (``date-time``, ``date``, ``time``, ``duration``, ``uuid``: `_COERCED_FORMATS`)
  are checked by that same conversion, so a value is accepted exactly when the worker can convert
  it. It does not convert values: it returns a copy of ``params``.
- `coerce_parameters(fn, params)` converts validated JSON values into the Python types the
  function declares (``"2024-01-01"`` → ``date``), and `bind_parameters` turns them into call
  arguments. This is what a worker does right before calling the flow.

pydantic and jsonschema are imported on first use, never at import time.
"""

from __future__ import annotations

import functools
import inspect
import json
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from conveyor._names import closest_name
from conveyor.errors import ConfigError

if TYPE_CHECKING:
    from jsonschema import ValidationError as JsonSchemaError
    from pydantic import BaseModel

__all__ = [
    "bind_parameters",
    "coerce_parameters",
    "is_secret",
    "masked_parameters",
    "parameter_schema",
    "validate_parameters",
]

_TYPE_WORDS = {
    "integer": "a valid integer",
    "number": "a valid number",
    "string": "a string",
    "boolean": "a boolean (true or false)",
    "array": "a list",
    "object": "an object (a mapping of names to values)",
    "null": "null",
}
_SKIPPED = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


# --- schema -------------------------------------------------------------------------------------


def parameter_schema(fn: Callable[..., Any]) -> dict[str, Any]:
    """The JSON Schema (an object schema) of ``fn``'s parameters."""
    from pydantic import PydanticUserError

    fields = _fields(fn)
    try:
        model = _model(fn, fields)
        schema = _json_schema(model)
    except PydanticUserError:
        # Some annotation cannot be described in JSON Schema: describe those as Any.
        fields = {name: (_describable(ann), default) for name, (ann, default) in fields.items()}
        schema = _json_schema(_model(fn, fields))
    schema["title"] = "Parameters"
    for position, name in enumerate(fields):
        schema["properties"][name]["position"] = position
    return schema


def _fields(fn: Callable[..., Any]) -> dict[str, tuple[Any, Any]]:
    """name -> (annotation, default or ``...`` when required), in signature order."""
    signature = inspect.signature(fn)
    hints = _type_hints(fn, signature)
    return {
        name: (hints.get(name, Any), ... if p.default is p.empty else p.default)
        for name, p in signature.parameters.items()
        if p.kind not in _SKIPPED
    }


def _type_hints(fn: Callable[..., Any], signature: inspect.Signature) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:  # an annotation that does not evaluate: resolve them one by one
        namespace = getattr(inspect.unwrap(fn), "__globals__", {})
        hints: dict[str, Any] = {}
        for name, p in signature.parameters.items():
            annotation = p.annotation
            if annotation is p.empty:
                continue
            if isinstance(annotation, str):
                try:
                    annotation = eval(annotation, dict(namespace))  # noqa: S307 - the flow's own annotation
                except Exception:
                    annotation = Any
            hints[name] = annotation
        return hints


def _model(fn: Callable[..., Any], fields: Mapping[str, tuple[Any, Any]]) -> type[BaseModel]:
    from pydantic import ConfigDict, Field, create_model

    takes_kwargs = any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(fn).parameters.values()
    )
    config = ConfigDict(
        extra="allow" if takes_kwargs else "forbid",
        arbitrary_types_allowed=True,
        protected_namespaces=(),
    )
    # Internal field names p0, p1, ... with the real names as aliases: a parameter may be called
    # anything (``schema``, ``model_config``, ``_private``) without clashing with BaseModel.
    definitions: dict[str, Any] = {
        f"p{i}": (annotation, Field(default, alias=name, title=name))
        for i, (name, (annotation, default)) in enumerate(fields.items())
    }
    model: type[BaseModel] = create_model("Parameters", __config__=config, **definitions)
    return model


def _json_schema(model: type[BaseModel]) -> dict[str, Any]:
    from pydantic.json_schema import PydanticJsonSchemaWarning

    with warnings.catch_warnings():
        # a default that is not JSON (an object) is left out of the schema: that is fine
        warnings.simplefilter("ignore", PydanticJsonSchemaWarning)
        return model.model_json_schema(by_alias=True)


def _describable(annotation: Any) -> Any:
    from pydantic import PydanticUserError, TypeAdapter

    try:
        TypeAdapter(annotation, config={"arbitrary_types_allowed": True}).json_schema()
    except PydanticUserError:
        return Any
    return annotation


# --- validation against a schema ----------------------------------------------------------------


def validate_parameters(schema_or_flow: Any, params: Mapping[str, Any], /) -> dict[str, Any]:
    """Check ``params`` (JSON values) against a parameter schema, or a flow's schema.

    Raises a one-line `ConfigError` naming the parameter; returns a copy of ``params``.
    No parameters against an object schema that requires none are accepted without loading a
    validator (a run of a deployment with nothing to pass is the common case, and the import
    costs more than the rest of ``conveyor run``).
    """
    schema = _schema_of(schema_or_flow)
    if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
        raise ConfigError(
            "parameters must be a mapping of parameter names to values",
            hint='pass them as a JSON object, e.g. {"n": 3}',
        )
    values = dict(params)
    if not values and _accepts_nothing(schema):
        return values
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        _check_schema(json.dumps(schema, sort_keys=True))
        validator = Draft202012Validator(schema, format_checker=_format_checker())
        errors = list(validator.iter_errors(values))
    except SchemaError as exc:
        raise ConfigError(
            f"the parameter schema is not a valid JSON Schema: {exc.message}",
            hint="redeploy the flow to store a fresh schema",
        ) from exc
    except Exception as exc:  # e.g. an unresolvable $ref in a hand-written schema
        raise ConfigError(
            f"the parameter schema could not be applied: {exc}",
            hint="redeploy the flow to store a fresh schema",
        ) from exc
    if errors:
        errors.sort(key=_rank)
        raise _schema_error(_focus(errors[0]), schema, values)
    return values


_INERT_FOR_NOTHING = frozenset(
    {
        "type",
        "title",
        "description",
        "properties",
        "additionalProperties",
        "required",
        "$defs",
        "definitions",
    }
)
"""Keywords of an object schema that no empty object can fail (they constrain keys present;
``required`` only when empty, which `_accepts_nothing` checks)."""


def _accepts_nothing(schema: Mapping[str, Any]) -> bool:
    """Whether ``{}`` fits ``schema`` for certain: an object schema requiring no parameter, with
    no keyword beyond `_INERT_FOR_NOTHING` (such as the schemas `parameter_schema` makes)."""
    return (
        schema.get("type") == "object"
        and schema.get("required", []) == []
        and _INERT_FOR_NOTHING.issuperset(schema)
        and isinstance(schema.get("properties", {}), Mapping)
    )


@functools.lru_cache(maxsize=256)
def _check_schema(text: str) -> None:
    """Meta-validate a schema once per distinct schema (it costs ~100x the validation)."""
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(json.loads(text))


_COERCED_FORMATS: dict[str, tuple[str, str]] = {
    "date-time": ("datetime:datetime", "an ISO 8601 date and time, such as 2024-01-31T09:30:00Z"),
    "date": ("datetime:date", "an ISO 8601 date, such as 2024-01-31"),
    "time": ("datetime:time", "an ISO 8601 time, such as 09:30:00"),
    "duration": ("datetime:timedelta", "an ISO 8601 duration, such as PT1H30M, or 01:30:00"),
    "uuid": ("uuid:UUID", "a UUID, such as 123e4567-e89b-12d3-a456-426614174000"),
}
"""JSON Schema string format -> (the Python type pydantic describes with it, what to write).
A string of one of these formats is checked by converting it to that type as the worker does
(`coerce_parameters`); other formats are not checked."""


@functools.lru_cache(maxsize=1)
def _format_checker() -> Any:
    """A jsonschema ``FormatChecker`` for `_COERCED_FORMATS` only."""
    from jsonschema import FormatChecker

    checker = FormatChecker(formats=())
    for name in _COERCED_FORMATS:
        checker.checks(name, raises=ValueError)(functools.partial(_converts, name))
    return checker


def _converts(format_name: str, instance: object) -> bool:
    """Whether the worker converts ``instance`` to the type of ``format_name``; a `ValueError`
    with pydantic's reason when it does not (only strings are checked: a format applies to them)."""
    if not isinstance(instance, str):
        return True
    from pydantic import ValidationError

    try:
        _adapter(format_name).validate_python(instance)
    except ValidationError as exc:
        raise ValueError(exc.errors(include_url=False)[0]["msg"]) from None
    return True


@functools.lru_cache(maxsize=len(_COERCED_FORMATS))
def _adapter(format_name: str) -> Any:
    import importlib

    from pydantic import TypeAdapter

    module, _, name = _COERCED_FORMATS[format_name][0].partition(":")
    return TypeAdapter(getattr(importlib.import_module(module), name))


def _schema_of(schema_or_flow: Any) -> Mapping[str, Any]:
    if isinstance(schema_or_flow, Mapping):
        return schema_or_flow
    method = getattr(schema_or_flow, "parameter_schema", None)
    if callable(method):
        schema: dict[str, Any] = method()
        return schema
    if callable(schema_or_flow):
        return parameter_schema(schema_or_flow)
    raise TypeError(f"expected a schema dict or a flow, got {type(schema_or_flow).__name__}")


def _rank(error: JsonSchemaError) -> tuple[int, int, str]:
    order = {"additionalProperties": 0, "required": 1}
    return (
        order.get(str(error.validator), 2),
        len(error.absolute_path),
        _where(error.absolute_path),
    )


def _focus(error: JsonSchemaError) -> JsonSchemaError:
    """For ``anyOf``/``oneOf``: the error inside the branch that fits the value's type, if any
    (``tags: list[str] | None`` given ``["a", 2]`` is about ``tags[1]``, not about null)."""
    while error.validator in ("anyOf", "oneOf") and error.context:
        shallow = ("type", "enum", "const")
        deeper = [e for e in error.context if e.relative_path or str(e.validator) not in shallow]
        if not deeper:
            return error
        error = min(deeper, key=_rank)
    return error


def _schema_error(
    error: JsonSchemaError, schema: Mapping[str, Any], values: Mapping[str, Any]
) -> ConfigError:
    properties: Mapping[str, Any] = schema.get("properties", {})
    path = list(error.absolute_path)
    top_level = not path
    instance = error.instance
    node: Any = error.schema
    rule: Any = error.validator_value
    if error.validator == "additionalProperties" and isinstance(instance, Mapping):
        allowed = set(node.get("properties", {}) if isinstance(node, Mapping) else ())
        unknown = sorted(k for k in instance if k not in allowed)
        name = unknown[0] if unknown else "?"
        if top_level:
            close = closest_name(name, properties)
            hint = f"did you mean {close!r}?" if close else _takes(properties)
            return ConfigError(f"unknown parameter {name!r}", hint=hint)
        return ConfigError(
            f"parameter {_where(path)!r}: unknown key {name!r}", hint=_takes(properties)
        )
    if error.validator == "required" and isinstance(instance, Mapping):
        missing = [k for k in rule if k not in instance]
        name = missing[0] if missing else "?"
        if top_level:
            return ConfigError(f"missing required parameter {name!r}", hint=_takes(properties))
        return ConfigError(f"parameter {_where(path)!r}: missing required key {name!r}")
    shown = _show(instance, secret=is_secret(properties.get(str(path[0]), {}) if path else {}))
    where = _where(path)
    if error.validator == "format" and isinstance(error.cause, ValueError):
        example = _COERCED_FORMATS.get(str(rule), ("", ""))[1]
        return ConfigError(
            f"parameter {where!r}: {_not_converted(shown, str(error.cause))}",
            hint=f"write {example}" if example else None,
        )
    expected = _expected(error, schema)
    if expected:
        return ConfigError(
            f"parameter {where!r}: {shown} is not {expected}",
            hint=_type_hint(instance, text=where if _plain_text(expected, path, node) else None),
        )
    return ConfigError(f"parameter {where!r}: {error.message}")


def _plain_text(expected: str, path: Sequence[Any], node: Any) -> bool:
    """Whether a top-level parameter wants plain text (no format such as a date, not a
    secret): then a number given for it is probably text the JSON reading made a number."""
    return (
        expected == "a string"
        and len(path) == 1
        and isinstance(node, Mapping)
        and "format" not in node
        and not node.get("writeOnly")
    )


def _expected(error: JsonSchemaError, root: Mapping[str, Any]) -> str:
    rule: Any = error.validator_value
    if error.validator == "type":
        return _type_words(rule)
    if error.validator == "enum":
        return "one of " + ", ".join(repr(v) for v in rule)
    if error.validator == "const":
        return repr(rule)
    if error.validator in ("anyOf", "oneOf"):
        words = [_describe(_deref(sub, root), root) for sub in rule]
        if all(words):
            return " or ".join(dict.fromkeys(words))
    return ""


def _describe(schema: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    if "enum" in schema:
        return "one of " + ", ".join(repr(v) for v in schema["enum"])
    if "const" in schema:
        return repr(schema["const"])
    if "type" in schema:
        return _type_words(schema["type"])
    return ""


def _deref(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part, {}) if isinstance(node, Mapping) else {}
        return node if isinstance(node, Mapping) else {}
    return schema


def _type_words(value: str | Sequence[str]) -> str:
    names = [value] if isinstance(value, str) else list(value)
    return " or ".join(_TYPE_WORDS.get(n, n) for n in names)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _type_hint(value: Any, *, text: str | None = None) -> str:
    """What was given; for a JSON number, boolean or null where the parameter ``text`` wants a
    string (``--param zip=02134`` reads as text, ``zip=12345`` as a number), how to write it as
    text instead, on a shell too."""
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:
            decoded = value
        if not isinstance(decoded, str):
            return f"got a string; values are JSON, so write {value} without quotes"
    if text is not None and (value is None or isinstance(value, bool | int | float)):
        quoted = json.dumps(json.dumps(value))
        return (
            f"got {_json_type(value)}; values are JSON, so write the text as {quoted} "
            f"(in a shell: --param {text}='{quoted}')"
        )
    return f"got {_json_type(value)}"


def _where(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def masked_parameters(schema: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` to show a person: the value of each secret parameter (``SecretStr``, by the
    flow's ``schema``) as ``****``."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return dict(params)
    return {
        key: "****"
        if value is not None
        and isinstance(properties.get(key), Mapping)
        and is_secret(properties[key])
        else value
        for key, value in params.items()
    }


def is_secret(property_schema: Mapping[str, Any]) -> bool:
    """A ``SecretStr`` parameter (``format: password``): its value is never shown."""
    branches = [
        property_schema,
        *property_schema.get("anyOf", ()),
        *property_schema.get("oneOf", ()),
    ]
    return any(
        isinstance(b, Mapping) and (b.get("format") == "password" or b.get("writeOnly"))
        for b in branches
    )


def _show(value: Any, *, secret: bool) -> str:
    if secret:
        return "****"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _takes(properties: Mapping[str, Any]) -> str:
    if not properties:
        return "the flow takes no parameters"
    return "the flow takes: " + ", ".join(properties)


# --- converting to Python values, and binding ---------------------------------------------------


def coerce_parameters(fn: Callable[..., Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` converted to the types ``fn`` declares; only the given names are returned."""
    from pydantic import ValidationError

    fields = _fields(fn)
    model = _model(fn, fields)
    try:
        instance = model.model_validate(dict(params))
    except ValidationError as exc:
        raise _pydantic_error(exc, fields) from None
    names = list(fields)
    values = {
        names[int(key[1:])]: getattr(instance, key)
        for key in instance.model_fields_set
        if key in type(instance).model_fields
    }
    values.update(instance.model_extra or {})
    return values


def _pydantic_error(exc: Any, fields: Mapping[str, Any]) -> ConfigError:
    first = exc.errors(include_url=False)[0]
    location = list(first["loc"])
    where = _where(location)
    takes = _takes(fields)
    if first["type"] == "missing" and len(location) == 1:
        return ConfigError(f"missing required parameter {where!r}", hint=takes)
    if first["type"] == "extra_forbidden" and len(location) == 1:
        close = closest_name(where, fields)
        return ConfigError(
            f"unknown parameter {where!r}", hint=f"did you mean {close!r}?" if close else takes
        )
    shown = _show(first.get("input"), secret=False)
    return ConfigError(f"parameter {where!r}: {_not_converted(shown, first['msg'])}", hint=takes)


def _not_converted(shown: str, message: str) -> str:
    """pydantic's reason for refusing the value ``shown``, as the end of a sentence."""
    if message.startswith("Input should be "):
        return f"{shown} is not {message.removeprefix('Input should be ')}"
    return message


def bind_parameters(
    fn: Callable[..., Any], params: Mapping[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Call arguments for ``fn`` from a name -> value mapping (positional-only ones by position)."""
    args: list[Any] = []
    kwargs = dict(params)
    for name, p in inspect.signature(fn).parameters.items():
        if p.kind is not inspect.Parameter.POSITIONAL_ONLY:
            break
        if name in kwargs:
            args.append(kwargs.pop(name))
        elif p.default is not p.empty:
            args.append(p.default)
        else:
            raise ConfigError(f"missing required parameter {name!r}")
    return tuple(args), kwargs

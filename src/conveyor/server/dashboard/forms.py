"""The run form: HTML fields from a deployment's parameter JSON Schema, and the form back to JSON.

`parameter_fields` makes one `ParamField` per schema property, in signature order: a text box
for strings, a number box for integers and numbers, a checkbox for booleans, a select for enums
(``Literal`` or `enum.Enum`), a password box (never pre-filled) for secret parameters, and a JSON
text area for everything else (lists, objects, unions). `parse_parameters` turns a submitted form
into parameters: numbers are converted when they parse (otherwise passed on as text, so the
server's validation names the parameter and what it expected), JSON fields are decoded, and an
empty field is left out so the deployment's default applies. The values are then validated by the
same `create_run` the API and the CLI use.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from conveyor._params import is_secret
from conveyor.errors import InvalidRequest

__all__ = ["FIELD_PREFIX", "ParamField", "parameter_fields", "parse_parameters"]

FIELD_PREFIX = "param."
"""Form field names are ``param.<name>``, so no parameter can collide with ``csrf_token``."""

_UNSET = object()


@dataclass(frozen=True)
class ParamField:
    name: str
    widget: str
    """``text``, ``integer``, ``number``, ``checkbox``, ``select``, ``password`` or ``json``."""
    type_label: str
    required: bool
    value: str
    """What the field shows: the submitted text, else the default (never for ``password``)."""
    checked: bool = False
    options: list[tuple[str, str]] = field(default_factory=list)
    """(submitted value, label) of a select."""
    description: str = ""
    nullable: bool = False

    @property
    def input_name(self) -> str:
        return FIELD_PREFIX + self.name


def _with_enums(prop: Mapping[str, Any], defs: Mapping[str, Any]) -> Mapping[str, Any]:
    """``prop`` with a ``$ref`` to an enum of the schema's ``$defs`` (an `enum.Enum` parameter,
    optional or not) replaced by that enum, so it gets a select as a ``Literal`` does."""

    def resolved(node: Any) -> Any:
        ref = node.get("$ref") if isinstance(node, Mapping) else None
        target = defs.get(ref.removeprefix("#/$defs/")) if isinstance(ref, str) else None
        if not isinstance(target, Mapping) or not isinstance(target.get("enum"), list):
            return node
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}

    found: Mapping[str, Any] = resolved(prop)
    for key in ("anyOf", "oneOf"):
        if isinstance(found.get(key), list):
            found = {**found, key: [resolved(branch) for branch in found[key]]}
    return found


def _branches(prop: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], bool]:
    """The non-null alternatives of a property, and whether null is allowed."""
    options = prop.get("anyOf") or prop.get("oneOf")
    if not isinstance(options, list):
        return [prop], prop.get("type") == "null"
    branches = [b for b in options if isinstance(b, Mapping) and b.get("type") != "null"]
    return branches, len(branches) < len(options)


def _widget(prop: Mapping[str, Any]) -> tuple[str, str, bool]:
    """(widget, type label, nullable) for a property."""
    branches, nullable = _branches(prop)
    if is_secret(prop):
        return "password", "secret string", nullable
    if len(branches) != 1:
        return "json", " | ".join(_label(b) for b in branches) or "any (JSON)", nullable
    branch = branches[0]
    if "enum" in branch and isinstance(branch["enum"], list):
        return "select", "one of " + ", ".join(json.dumps(v) for v in branch["enum"]), nullable
    kind = branch.get("type")
    if kind == "string":
        return "text", _label(branch), nullable
    if kind in ("integer", "number"):
        return str(kind), str(kind), nullable
    if kind == "boolean" and not nullable:
        return "checkbox", "boolean", nullable
    return "json", _label(branch) + " (JSON)", nullable


def _label(branch: Mapping[str, Any]) -> str:
    kind = branch.get("type")
    if kind == "string" and branch.get("format"):
        return f"string ({branch['format']})"
    if kind == "array" and isinstance(branch.get("items"), Mapping):
        return f"list of {_label(branch['items'])}"
    if isinstance(kind, str):
        return kind
    if "$ref" in branch:
        return str(branch["$ref"]).rsplit("/", 1)[-1]
    return "any"


def _shown(value: Any, widget: str) -> str:
    if value is _UNSET or (value is None and widget != "json"):
        return ""
    if widget in ("text", "password") and isinstance(value, str):
        return value
    if widget in ("integer", "number") and isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(value, ensure_ascii=False)


def parameter_fields(
    schema: Mapping[str, Any],
    defaults: Mapping[str, Any],
    submitted: Mapping[str, str] | None = None,
) -> list[ParamField]:
    """The run form's fields; ``submitted`` (a form that failed validation) is shown again."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return []
    required = set(schema.get("required") or [])
    ordered = sorted(properties.items(), key=lambda kv: (kv[1].get("position", 1_000_000), kv[0]))
    defs = schema.get("$defs")
    fields = []
    for name, prop in ordered:
        if not isinstance(prop, Mapping):
            continue
        prop = _with_enums(prop, defs if isinstance(defs, Mapping) else {})
        widget, type_label, nullable = _widget(prop)
        default = defaults.get(name, prop.get("default", _UNSET))
        key = FIELD_PREFIX + name
        if submitted is not None and widget != "password":
            text = submitted.get(key, "")
            checked = key in submitted
        else:
            text = "" if widget == "password" else _shown(default, widget)
            checked = default is True
        options = []
        if widget == "select":
            branch = _branches(prop)[0][0]
            options = [(_shown(v, "json"), str(v)) for v in branch["enum"]]
            if submitted is None and default is not _UNSET:
                text = _shown(default, "json")
        fields.append(
            ParamField(
                name=name,
                widget=widget,
                type_label=type_label,
                required=name in required,
                value=text,
                checked=checked,
                options=options,
                description=str(prop.get("description") or ""),
                nullable=nullable,
            )
        )
    return fields


def parse_parameters(
    schema: Mapping[str, Any], form: Mapping[str, str], defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """The parameters a submitted run form asks for (validated afterwards by `create_run`). A
    secret's box is never filled in, so left empty it means the deployment's default (in
    ``defaults``), even for a required parameter."""
    params: dict[str, Any] = {}
    for f in parameter_fields(schema, {}):
        key = f.input_name
        if f.widget == "checkbox":
            params[f.name] = key in form
            continue
        text = form.get(key, "")
        kept_default = f.widget == "password" and f.name in defaults
        if text == "" and (kept_default or not (f.required and f.widget in ("text", "password"))):
            continue  # the deployment's default applies
        if f.widget in ("text", "password"):
            params[f.name] = text
        elif f.widget in ("integer", "number"):
            params[f.name] = _number(text, integer=f.widget == "integer")
        else:
            params[f.name] = _json(f.name, text)
    return params


def _number(text: str, *, integer: bool) -> Any:
    try:
        return int(text) if integer else (int(text) if text.lstrip("-").isdigit() else float(text))
    except ValueError:
        return text  # validation names the parameter and the type it expected


def _json(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"parameter {name!r} is not valid JSON: {exc.msg} (line {exc.lineno})",
            status_code=422,
            hint='write JSON, e.g. ["a", "b"], {"key": 1}, "text" or null',
        ) from None

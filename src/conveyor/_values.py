"""What a value sent to the server may hold, and ``--param KEY=VALUE`` parsing on the CLI.

A value is *storable* when every database Conveyor supports can keep it and every reader can
render it again: JSON types with string keys, nested at most `MAX_DEPTH` levels, finite numbers
(JSON has no NaN or Infinity; PostgreSQL refuses them), and text that is valid Unicode without
NUL characters (a lone surrogate such as ``"\\ud800"`` cannot be encoded as UTF-8; PostgreSQL
cannot store ``\\u0000``). One walk checks all of it:

- `value_problem(value)` → the first `Problem` (its path, what is wrong, a hint) or None;
- `check_value(value, what=...)` raises it as a one-line `ConfigError`; `check_parameters`
  names the parameter (``parameter 'x.a[2]': NaN is not a finite number``);
- `clean_text` / `displayable` replace what cannot be stored or shown (log lines, rows stored
  before these checks existed) instead of refusing it;
- `parse_params` turns ``["n=3", "f=NaN"]`` into values, refusing with the user's own text.

Sizes are measured as compact UTF-8 JSON (`json_size`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from conveyor.errors import ConfigError

__all__ = [
    "MAX_DEPTH",
    "Problem",
    "check_parameters",
    "check_value",
    "clean_text",
    "displayable",
    "displayable_fields",
    "format_size",
    "json_size",
    "parse_params",
    "value_problem",
]

MAX_DEPTH = 64
"""Levels of nesting (lists and objects inside each other) a value may have."""

_REPLACEMENT = "\ufffd"
_TOO_DEEP = f"<nested more than {MAX_DEPTH} levels: not shown>"
_HINT_FINITE = "JSON numbers must be finite: pass a number such as 1.5, or null"
_HINT_NUL = "remove the NUL characters; encode binary data as text (base64)"
_HINT_SURROGATE = "send valid Unicode text (UTF-8)"
_HINT_DEEP = "flatten the value, or pass a reference to the data (a path or URL) instead"


@dataclass(frozen=True)
class Problem:
    """Why a value cannot be stored: where (keys and indexes), what, and how to fix it."""

    path: tuple[str | int, ...]
    message: str
    hint: str

    @property
    def where(self) -> str:
        """``a.b[2]`` for the path ``("a", "b", 2)`` (names escaped when not printable)."""
        return _where(self.path)

    def at(self, name: str) -> str:
        """The one-line message for the value called ``name``: ``name.a.b[2]: message``."""
        return f"{name}{_where(self.path, continued=True)}: {self.message}"


def value_problem(value: Any, *, nul: bool = True, max_depth: int = MAX_DEPTH) -> Problem | None:
    """The first reason ``value`` cannot be stored, or None. Types other than JSON's (dates,
    enums) are left alone; ``nul=False`` lets NUL characters pass (they can be *shown*)."""
    if _clean(value, nul=nul, max_depth=max_depth):
        return None
    stack: list[tuple[Any, tuple[str | int, ...], int]] = [(value, (), 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            problem = _text_problem(item, nul=nul)
            if problem:
                return Problem(path, *problem)
        elif isinstance(item, float):
            if not math.isfinite(item):
                return Problem(path, f"{_number(item)} is not a finite number", _HINT_FINITE)
        elif isinstance(item, Mapping):
            if depth >= max_depth:
                return _too_deep(path)
            for key, child in item.items():
                if not isinstance(key, str):
                    return Problem(path, f"key {key!r} is not a string", "use text keys")
                problem = _text_problem(key, nul=nul)
                if problem:
                    return Problem((*path, key), f"its name: {problem[0]}", problem[1])
                stack.append((child, (*path, key), depth + 1))
        elif isinstance(item, list | tuple):
            if depth >= max_depth:
                return _too_deep(path)
            stack.extend((child, (*path, i), depth + 1) for i, child in enumerate(item))
    return None


_SCALARS = frozenset({int, bool, type(None)})


def _clean(value: Any, *, nul: bool, max_depth: int) -> bool:
    """`value_problem`'s fast pass (no paths kept): True when there is nothing to report.

    Exact type checks first: reading a run list walks every stored value, and an ``isinstance``
    against an abstract ``Mapping`` costs more than the rest of the walk."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is str:
            if (nul and "\x00" in item) or not (item.isascii() or _encodable(item)):
                return False
        elif kind in _SCALARS:
            continue
        elif kind is float:
            if not math.isfinite(item):
                return False
        elif kind is dict:
            if depth >= max_depth:
                return False
            for key, child in item.items():
                if type(key) is not str:
                    return False
                if (nul and "\x00" in key) or not (key.isascii() or _encodable(key)):
                    return False
                stack.append((child, depth + 1))
        elif kind is list or kind is tuple:
            if depth >= max_depth:
                return False
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str | float | Mapping | list | tuple):
            return False  # a subclass: let the full walk judge it
    return True


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_value(value: Any, *, what: str, nul: bool = True) -> None:
    """Raise a one-line `ConfigError` (``{what}.a[2]: ...``) when ``value`` cannot be stored."""
    problem = value_problem(value, nul=nul)
    if problem is not None:
        raise ConfigError(problem.at(what), hint=problem.hint)


def check_parameters(params: Mapping[str, Any], *, what: str = "parameter") -> None:
    """Like `check_value` for a parameter mapping: errors name the parameter
    (``parameter 'x.a[2]': ...``)."""
    problem = value_problem(dict(params))
    if problem is not None:
        if not problem.path:
            raise ConfigError(f"parameters: {problem.message}", hint=problem.hint)
        raise ConfigError(f"{what} {problem.where!r}: {problem.message}", hint=problem.hint)


def clean_text(text: str) -> str:
    """``text`` with NUL characters and lone surrogates replaced by U+FFFD."""
    if "\x00" in text:
        text = text.replace("\x00", _REPLACEMENT)
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join(_REPLACEMENT if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    return text


def displayable(value: Any, *, depth: int = 0) -> Any:
    """A copy of ``value`` that renders as JSON: bad text cleaned, NaN/Infinity as None, and
    anything nested deeper than `MAX_DEPTH` replaced by a placeholder string."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping | list | tuple) and depth >= MAX_DEPTH:
        return _TOO_DEEP
    if isinstance(value, Mapping):
        return {
            clean_text(str(key)): displayable(child, depth=depth + 1)
            for key, child in value.items()
        }
    if isinstance(value, list | tuple):
        return [displayable(child, depth=depth + 1) for child in value]
    return value


def displayable_fields(values: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``values`` (a stored row's fields) with each one that cannot be rendered replaced by its
    `displayable` copy, and the names of the fields replaced (NUL characters render: kept)."""
    shown = dict(values)
    replaced = []
    for name, value in values.items():
        kind = type(value)
        if kind in _SCALARS or (kind is str and value.isascii()):
            continue  # the common case, decided without a walk
        if not _clean(value, nul=False, max_depth=MAX_DEPTH):
            replaced.append(name)
    for name in replaced:
        shown[name] = displayable(values[name])
    return shown, replaced


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON (the value must be storable)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return len(text.encode("utf-8"))


def format_size(size: int) -> str:
    """``1048576`` → ``1 MiB``; ``1536`` → ``1.5 KiB``; ``12`` → ``12 bytes``."""
    if size < 1024:
        return f"{size} bytes"
    value = size / 1024
    units = iter(("MiB", "GiB"))
    unit = "KiB"
    while value >= 1024 and unit != "GiB":
        value /= 1024
        unit = next(units)
    return f"{value:.4g} {unit}"


def parse_params(items: Iterable[str], *, option: str = "--param") -> dict[str, Any]:
    """``["n=3", "name=Ada"]`` → ``{"n": 3, "name": "Ada"}``: JSON when the text parses as JSON,
    else the text itself. A value that cannot be stored (NaN, 1e999, a lone surrogate, nesting
    past `MAX_DEPTH`) is refused with the user's own text in a one-line `ConfigError`."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{option} {item!r} is not KEY=VALUE", hint="e.g. --param n=3")
        try:
            value: Any = json.loads(raw)
        except RecursionError:
            raise ConfigError(
                f"{option} {key}: the value is nested more than {MAX_DEPTH} levels deep",
                hint=_HINT_DEEP,
            ) from None
        except ValueError:
            value = raw
        problem = value_problem({key: value})
        if problem is not None:
            raise _param_error(option, key, raw, problem)
        params[key] = value
    return params


def _param_error(option: str, key: str, raw: str, problem: Problem) -> ConfigError:
    given = f"{option} {_shown(key)}={_shown(raw)}"
    nested = len(problem.path) > 1
    if problem.hint == _HINT_FINITE and not nested:
        return ConfigError(
            f"{given}: {_shown(raw)} is not a finite number",
            hint=f"pass a finite number such as 1.5; to pass the text, quote it as JSON: "
            f"{option} '{key}=\"{raw}\"'",
        )
    where = f"{problem.where}: " if nested else ""
    return ConfigError(f"{given}: {where}{problem.message}", hint=problem.hint)


def _text_problem(text: str, *, nul: bool) -> tuple[str, str] | None:
    if nul and "\x00" in text:
        return "the text contains a NUL character (\\u0000), which cannot be stored", _HINT_NUL
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = f"\\u{ord(text[exc.start]):04x}"
        return f"the text contains a lone surrogate ({char}), which is not valid Unicode", (
            _HINT_SURROGATE
        )
    return None


def _too_deep(path: tuple[str | int, ...]) -> Problem:
    return Problem(path[:1], f"it is nested more than {MAX_DEPTH} levels deep", _HINT_DEEP)


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _where(path: Iterable[str | int], *, continued: bool = False) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = _shown(part, limit=40)
            text += f".{name}" if text or continued else name
    return text


def _shown(text: str, *, limit: int = 60) -> str:
    """User text for a message: escaped (lone surrogates, control characters), cut at ``limit``."""
    out = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    return out if len(out) <= limit else out[: limit - 3] + "..."

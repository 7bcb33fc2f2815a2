"""Where run results that are not JSON go: result stores, found by URL scheme.

A result that survives a JSON round trip unchanged (`is_json_result`) is stored on the run
itself. Anything else is pickled by the child process (``result.pickle``) and put in a result
store by the worker; the run keeps a ``result_ref``. `RESULT_STORES` maps the ref's scheme to the
store class (``local`` built in, `conveyor.results.local`; third parties register in the
``conveyor.result_stores`` entry-point group).

This module is imported by the flow's child process: it stays free of heavy imports.
"""

from __future__ import annotations

import json
from typing import Any

from conveyor._registry import Entry, Registry

__all__ = ["RESULT_FILE", "RESULT_STORES", "is_json_result"]

RESULT_FILE = "result.pickle"

RESULT_STORES: Registry[Any] = Registry(
    "result store scheme",
    group="conveyor.result_stores",
    builtins={
        "local": Entry("conveyor.results.local:LocalResultStore"),
        **{
            scheme: Entry("conveyor.sources.blob.results:BlobResultStore")
            for scheme in ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")
        },
    },
)
"""``result_ref`` scheme → result store class."""


def is_json_result(value: Any) -> bool:
    """True when ``value`` comes back from a JSON round trip exactly as it went in, and the
    server can store it (`conveyor._values`: valid Unicode without NUL, not nested too deep)."""
    from conveyor._values import value_problem

    try:
        if value_problem(value) is not None:
            return False
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return False
    try:
        return bool(json.loads(text) == value) and _same_shape(json.loads(text), value)
    except Exception:  # a user type with a strange __eq__
        return False


def _same_shape(decoded: Any, value: Any) -> bool:
    # ``1 == 1.0 == True`` and ``(1,) != [1]`` hide type changes from ``==``: compare types too.
    if type(decoded) is not type(value):
        return False
    if isinstance(value, dict):
        return all(_same_shape(decoded[k], v) for k, v in value.items())
    if isinstance(value, list):
        return all(_same_shape(d, v) for d, v in zip(decoded, value, strict=True))
    return True

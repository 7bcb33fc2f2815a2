"""Any exception a request raises → the status and the one-line ``{"detail", "hint"}`` body.

Both front ends (the FastAPI app and the embedded `LocalTransport`) answer errors through
`error_response`, so a client sees the same status and message whichever it talks to:

- `ApiError` → its own status (404, 409, 413, 422, ...);
- pydantic's `ValidationError` (a body or query that does not fit its model) → 422;
- another `ConveyorError` → 500 with its message;
- a database error → 409 for a lost write race, 422 for data the database refuses (PostgreSQL
  SQLSTATE class 22: bad encodings, NUL bytes, out-of-range numbers; a lone surrogate the
  driver cannot encode), otherwise 503 (down or busy: the client retries). Only the driver's
  first line is shown, never the statement's parameters.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from conveyor.errors import ApiError, ConveyorError
from conveyor.schemas import describe_errors

__all__ = ["error_body", "error_response", "validation_message"]

logger = logging.getLogger(__name__)


def error_body(message: str, hint: str | None = None) -> dict[str, Any]:
    """The JSON body of every error answer."""
    return {"detail": message, "hint": hint}


def validation_message(errors: list[Any]) -> tuple[str, str | None]:
    """``(invalid request: field: message; ..., hint)`` from pydantic / FastAPI error dicts."""
    return describe_errors(errors)


_INPUT_HINT = "send valid Unicode text without NUL characters, and finite numbers"


def error_response(exc: BaseException) -> tuple[int, dict[str, Any]] | None:
    """``(status, body)`` for an exception a request raised; None for one that is a bug."""
    if isinstance(exc, ApiError):
        return exc.status_code or 400, error_body(exc.message, exc.hint)
    if isinstance(exc, ValidationError):
        message, hint = validation_message(list(exc.errors()))
        return 422, error_body(message, hint)
    if isinstance(exc, UnicodeEncodeError):  # a lone surrogate met the database driver
        char = exc.object[exc.start : exc.start + 1] if isinstance(exc.object, str) else ""
        shown = f" ({char.encode('unicode_escape').decode('ascii')})" if char else ""
        return 422, error_body(
            f"invalid input: the text contains a lone surrogate{shown}", _INPUT_HINT
        )
    if isinstance(exc, ConveyorError):
        logger.warning("request failed error=%s", exc.message)
        return 500, error_body(exc.message, exc.hint)
    if isinstance(exc, DBAPIError):
        return _database_error(exc)
    return None


def _database_error(exc: DBAPIError) -> tuple[int, dict[str, Any]]:
    lines = str(exc.orig).strip().splitlines()
    reason = lines[0] if lines else type(exc.orig).__name__
    if isinstance(exc, IntegrityError):
        return 409, error_body(f"conflicting write: {reason}")
    sqlstate = str(getattr(exc.orig, "sqlstate", "") or "")
    if isinstance(exc, DataError) or sqlstate.startswith("22"):
        # a data exception (NUL byte, NaN in JSON, untranslatable character): the input, not
        # the database, is at fault
        logger.info("database refused a value reason=%s", reason)
        return 422, error_body(f"invalid input: {reason}", _INPUT_HINT)
    logger.warning("database error reason=%s", reason)
    return 503, error_body(
        f"database unavailable: {reason}", "the server retries; check the database"
    )

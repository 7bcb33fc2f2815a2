"""Size limits on what the server accepts (`Settings`: ``CONVEYOR_MAX_*``), each a clear 413.

- `check_body_size`: a request body over ``max_request_bytes`` (the HTTP front end applies it
  in `conveyor.server.middleware.BodyLimitMiddleware` before a byte is parsed; the embedded
  front end to the body it is handed). Bundle uploads have their own limit,
  ``max_bundle_bytes``.
- `check_parameters_size` (a run's parameters, a deployment's defaults) and `check_log_batch`
  (records per request, bytes per line): called by the routes and services before anything is
  stored.

Every refusal is ``{"detail": one line, "hint": which setting to raise}`` with status 413.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from conveyor._values import format_size, json_size
from conveyor.errors import InvalidRequest
from conveyor.schemas import LogRecord
from conveyor.settings import Settings

__all__ = ["BODY_HINT", "TOO_LARGE", "check_body_size", "check_log_batch", "check_parameters_size"]

TOO_LARGE = 413


def check_body_size(size: int, settings: Settings) -> None:
    """413 when a request body of ``size`` bytes is larger than ``max_request_bytes``."""
    if size > settings.max_request_bytes:
        raise InvalidRequest(
            f"the request body is {format_size(size)}; this server accepts at most "
            f"{format_size(settings.max_request_bytes)}",
            status_code=TOO_LARGE,
            hint=BODY_HINT,
        )


BODY_HINT = (
    "send less (large data belongs in a file or blob store, passed by reference), or raise "
    "CONVEYOR_MAX_REQUEST_BYTES on the server"
)


def check_parameters_size(
    parameters: Mapping[str, Any], settings: Settings, *, what: str = "the run's parameters"
) -> None:
    """413 when ``parameters`` (storable JSON) are larger than ``max_parameters_bytes``."""
    size = json_size(parameters)
    if size > settings.max_parameters_bytes:
        raise InvalidRequest(
            f"{what} are {format_size(size)} as JSON; this server accepts at most "
            f"{format_size(settings.max_parameters_bytes)}",
            status_code=TOO_LARGE,
            hint="pass large data by reference (a path or URL the flow reads), or raise "
            "CONVEYOR_MAX_PARAMETERS_BYTES on the server",
        )


def check_log_batch(records: Sequence[LogRecord], settings: Settings) -> None:
    """413 when a batch has more than ``max_log_batch`` records or a line over
    ``max_log_line_bytes``."""
    if len(records) > settings.max_log_batch:
        raise InvalidRequest(
            f"{len(records)} log records in one request; this server accepts at most "
            f"{settings.max_log_batch}",
            status_code=TOO_LARGE,
            hint="send them in smaller batches, or raise CONVEYOR_MAX_LOG_BATCH on the server",
        )
    limit = settings.max_log_line_bytes
    for index, record in enumerate(records):
        if len(record.message) * 4 <= limit:  # no UTF-8 character is longer than 4 bytes
            continue
        size = len(record.message.encode("utf-8"))
        if size > limit:
            raise InvalidRequest(
                f"log record {index} is {format_size(size)}; this server accepts lines of at "
                f"most {format_size(limit)}",
                status_code=TOO_LARGE,
                hint="split or shorten the line, or raise CONVEYOR_MAX_LOG_LINE_BYTES on the "
                "server",
            )

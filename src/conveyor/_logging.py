"""The one logging policy of Conveyor's two long-lived entry points: the command line
(`conveyor.cli`) and the worker process (`conveyor.worker.__main__`).

Conveyor's own loggers keep their levels; the libraries that reach storage, registries and
clusters (`THIRD_PARTY`) are told what they may print:

| process         | third-party records                                        |
|-----------------|------------------------------------------------------------|
| command line    | none (Conveyor prints its own one-line ``error:``)         |
| worker          | WARNING and above, each one line (a traceback is dropped)  |
| either, --debug | everything, tracebacks included                            |

A library's own request/response dumps (azure-core's HTTP logging policy at INFO, botocore's
"Found credentials ...") and its tracebacks when it gives up (gcsfs's ``_request out of
retries``) repeat what Conveyor's error already says, once and in its own words.
"""

from __future__ import annotations

import logging

__all__ = ["THIRD_PARTY", "configure", "is_third_party"]

THIRD_PARTY = (
    "adlfs",
    "aiobotocore",
    "aiohttp",
    "azure",
    "boto3",
    "botocore",
    "docker",
    "fsspec",
    "gcsfs",
    "google",
    "httpcore",
    "httpx",
    "kubernetes",
    "s3fs",
    "s3transfer",
    "urllib3",
)
"""Top-level logger names of the libraries whose records the policy governs (children too)."""

_SILENT = logging.CRITICAL + 1


def is_third_party(name: str) -> bool:
    """Whether logger ``name`` belongs to one of `THIRD_PARTY`."""
    top = name.partition(".")[0]
    return top in THIRD_PARTY


def configure(*, debug: bool, worker: bool, fmt: str, datefmt: str | None = None) -> None:
    """Set up the process's logging: a stderr handler on the root logger (unless the root
    already has one, as `logging.basicConfig` does) at DEBUG with ``debug``, else INFO for the
    worker and WARNING for the command line, and the third-party levels of the module docstring.

    Called again (in-process tests), it resets the third-party levels it set before."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(fmt, datefmt) if debug else _OneLine(fmt, datefmt))
    if debug:
        level, third = logging.DEBUG, logging.NOTSET
    elif worker:
        level, third = logging.INFO, logging.WARNING
    else:
        level, third = logging.WARNING, _SILENT
    logging.basicConfig(level=level, handlers=[handler])
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(third)


class _OneLine(logging.Formatter):
    """A third-party record in one line: its message's first line and, for an exception, its
    ``Type: first line`` in place of the traceback. Conveyor's own records as they are."""

    def format(self, record: logging.LogRecord) -> str:
        if not is_third_party(record.name):
            return super().format(record)
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            text = super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved
        lines = text.splitlines() or [""]
        line = lines[0] + (" …" if len(lines) > 1 else "")
        exc = saved[0][1] if saved[0] else None
        if exc is not None:
            line += f" ({_one_line(exc)})"
        return line


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    name = type(exc).__name__
    return f"{name}: {text[0]}" if text else name

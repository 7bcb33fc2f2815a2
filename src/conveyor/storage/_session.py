"""What a storage needs to build and register: settings, a client, a fetch context; and names.

`session(settings, client)` uses what it is given and fills in the rest the way the command
line does (settings from the environment, a client for the configured server or the embedded
database), closing only what it opened. `slugify` and `default_location` name stored flows the
first generation's way: ``flow-name/2022-12-05t10-11-12-123456-00-00``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conveyor.client import ConveyorClient
    from conveyor.settings import Settings
    from conveyor.sources.base import FetchContext

__all__ = ["Session", "default_location", "session", "slugify", "timestamp_slug"]

_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def slugify(text: str) -> str:
    """Lower case, every run of other characters one ``-``: ``"My Flow!"`` → ``my-flow``."""
    return _NOT_SLUG.sub("-", text.lower()).strip("-") or "flow"


def timestamp_slug(now: datetime | None = None) -> str:
    """The slugified UTC ISO time: ``2022-12-05t10-11-12-123456-00-00``."""
    return slugify((now or datetime.now(UTC)).isoformat())


def default_location(flow_name: str, now: datetime | None = None) -> str:
    """``<slug of the flow name>/<slugified UTC timestamp>``."""
    return f"{slugify(flow_name)}/{timestamp_slug(now)}"


@dataclass(frozen=True)
class Session:
    """Settings, a client and the fetch context built from them, for one build or register."""

    settings: Settings
    client: ConveyorClient

    @property
    def ctx(self) -> FetchContext:
        from conveyor.connect import fetch_context

        return fetch_context(self.settings, self.client)


@contextmanager
def session(
    settings: Settings | None = None, client: ConveyorClient | None = None
) -> Iterator[Session]:
    """A `Session` from what is given, the rest as the command line would make it."""
    from conveyor.connect import connect, settings_from_env

    if settings is None:
        settings = settings_from_env()
    if client is not None:
        yield Session(settings, client)
        return
    with connect(settings) as own:
        yield Session(settings, own)

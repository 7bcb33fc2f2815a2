"""`connect(settings) -> ConveyorClient`: the one place that chooses how to reach the API.

- ``CONVEYOR_API_URL`` set: HTTP to that server (``X-API-Key`` from ``CONVEYOR_API_KEY``);
- unset (the embedded default): the same API answered in this process by
  `conveyor.server.local.LocalTransport` over the SQLite database under ``CONVEYOR_HOME`` (no
  web framework is imported), so separate processes work together through that one file.

`fetch_context` builds what sources get at run and deploy time from the same settings and
client: the client as the secret store, this process's environment, and the server's bundle
store. `connect_from_env` is for public helpers called without a client (``creds.save("gh")``,
``flow.deploy()``): they read the settings once, as the command line does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from conveyor.client import ConveyorClient, ServerBundles
from conveyor.errors import ConfigError
from conveyor.settings import Settings
from conveyor.sources.base import FetchContext

__all__ = ["EMBEDDED_URL", "connect", "connect_from_env", "fetch_context", "settings_from_env"]

EMBEDDED_URL = "http://conveyor.embedded"


def connect(settings: Settings, *, retries: int = 4, timeout: float = 30.0) -> ConveyorClient:
    """A client for the server ``settings`` name, or for the embedded database."""
    if settings.api_url:
        return ConveyorClient(
            settings.api_url, api_key=settings.api_key, retries=retries, timeout=timeout
        )
    from conveyor.server.local import LocalTransport

    home = settings.home
    if home.exists() and not home.is_dir():  # every command and worker would trip over it
        raise ConfigError(
            f"CONVEYOR_HOME {home} is not a folder",
            hint="point CONVEYOR_HOME at a folder (it is made when missing), or remove the file",
        )
    return ConveyorClient(
        EMBEDDED_URL,
        transport=LocalTransport(settings),
        api_key=settings.api_key,
        retries=retries,
        timeout=timeout,
    )


def settings_from_env() -> Settings:
    """The settings of this process's environment, read once (for public helpers such as
    ``flow.register()`` and ``storage.build()``, called without settings)."""
    return Settings.from_env()


@contextmanager
def connect_from_env() -> Iterator[ConveyorClient]:
    """A client from the environment's settings, closed after (for public helpers)."""
    with connect(Settings.from_env()) as client:
        yield client


def fetch_context(settings: Settings, client: ConveyorClient) -> FetchContext:
    """What sources may use in this process: secrets through ``client``, the environment, the
    settings, and the server's bundle store."""
    return FetchContext(
        secrets=client,
        environ=dict(os.environ),
        settings=settings,
        bundle_server=ServerBundles(client),
    )

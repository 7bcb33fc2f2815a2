"""What every command family shares: consoles, settings, the client."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console

from conveyor.settings import Settings

if TYPE_CHECKING:
    from conveyor.client import ConveyorClient

__all__ = ["client", "console", "err_console", "load_settings"]

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def load_settings() -> Settings:
    """Settings for this command, read once from the environment."""
    return Settings.from_env()


def client(settings: Settings | None = None) -> ConveyorClient:
    """A `ConveyorClient` for this command (embedded unless ``CONVEYOR_API_URL`` is set)."""
    from conveyor.connect import connect

    return connect(settings or load_settings())

"""What every command family shares: consoles, settings, the client."""

from __future__ import annotations

from rich.console import Console

from conveyor.settings import Settings

__all__ = ["console", "err_console", "load_settings"]

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def load_settings() -> Settings:
    """Settings for this command, read once from the environment."""
    return Settings.from_env()

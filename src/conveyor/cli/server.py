"""`conveyor server start`: serve the API (uvicorn) over the configured database."""

from __future__ import annotations

import socket
import sys
from types import FrameType
from typing import TYPE_CHECKING, Any

import typer

from conveyor.cli._common import console, load_settings
from conveyor.errors import ConfigError

if TYPE_CHECKING:
    from conveyor.server.context import ServerContext

__all__ = ["register"]

server_app = typer.Typer(name="server", help="Run the Conveyor API server.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(server_app, name="server")


@server_app.command("start")
def start(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(4300, "--port", min=0, max=65535, help="Port to listen on."),
    log_level: str = typer.Option(
        "warning", "--log-level", help="uvicorn log level (debug, info, warning, error)."
    ),
) -> None:
    """Serve the API on HOST:PORT (database: CONVEYOR_DATABASE_URL, or SQLite in CONVEYOR_HOME)."""
    from uvicorn.config import LOG_LEVELS

    from conveyor.secrets import redact_url

    log_level = log_level.lower()
    if log_level not in LOG_LEVELS:
        raise ConfigError(
            f"unknown --log-level {log_level!r}", hint=f"use one of: {', '.join(LOG_LEVELS)}"
        )
    settings = load_settings()
    sock = _listen(host, port)
    import uvicorn

    from conveyor.server.app import create_app

    app = create_app(settings)
    bound_port = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    console.print(
        f"conveyor server listening on http://{shown_host}:{bound_port} "
        f"(database {redact_url(settings.effective_database_url)}"
        f"{', API key required' if settings.api_key else ''})"
    )
    sys.stdout.flush()
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=log_level == "debug",
        lifespan="on",
        ws="none",
        timeout_graceful_shutdown=5,  # long-polling claims are cut short on stop
    )
    _serve(config, app.state.context, sock)


def _serve(config: Any, context: ServerContext, sock: socket.socket) -> None:
    """Run uvicorn on ``sock``; a stop signal also ends the long polls (claims, watches) at once,
    instead of the graceful shutdown waiting them out and then cancelling them."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            context.stop_waiting()
            super().handle_exit(sig, frame)

    Server(config).run(sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:
    """A bound, listening socket, or a one-line error (port in use, bad address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when it sees it
    # (with proto 0, every JSON answer waits ~40 ms for a delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="pick another --port, or stop what is using it",
        ) from exc
    sock.set_inheritable(True)
    return sock

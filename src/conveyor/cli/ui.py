"""`conveyor ui [--port P]`: the web dashboard over the local (embedded) database.

It starts the same app as `conveyor server start` (API under ``/api``, dashboard at ``/``) on
127.0.0.1 only, and prints its URL. With ``CONVEYOR_API_URL`` set there is nothing to start: the
dashboard is that server's, and its URL is printed instead.
"""

from __future__ import annotations

import sys

import typer

from conveyor.cli._common import console, load_settings

__all__ = ["register"]

DEFAULT_PORT = 4301


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("ui")(ui)


def ui(
    port: int = typer.Option(
        DEFAULT_PORT, "--port", min=0, max=65535, help="Port on 127.0.0.1 (0: any free port)."
    ),
) -> None:
    """Open the web dashboard on 127.0.0.1 over the local database; prints its URL."""
    from conveyor.secrets import redact_url

    settings = load_settings()
    if settings.api_url:
        console.print(
            f"the dashboard is served by the server at {redact_url(settings.api_url).rstrip('/')}/"
            " (unset CONVEYOR_API_URL to open the local one)"
        )
        return
    from conveyor.cli.server import _listen, _serve

    sock = _listen("127.0.0.1", port)
    import uvicorn

    from conveyor.server.app import create_app

    app = create_app(settings)
    console.print(
        f"conveyor dashboard at http://127.0.0.1:{sock.getsockname()[1]}/ "
        f"(database {redact_url(settings.effective_database_url)}"
        f"{', sign in with CONVEYOR_API_KEY' if settings.api_key else ''})"
    )
    sys.stdout.flush()
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        ws="none",
        timeout_graceful_shutdown=5,
    )
    _serve(config, app.state.context, sock)

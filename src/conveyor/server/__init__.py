"""The Conveyor API server: `create_app(settings)` (FastAPI, SQLAlchemy, Alembic).

```
app.py        create_app: migrations, routes, error translation, API-key check, lease sweeper
context.py    ServerContext (db, secret box, doorbell for long-polls, throttled lease sweep)
db.py         Database: engine per app, read / write transactions, SQLite WAL + retries
tables.py     typed ORM tables;  migrate.py + migrations/: Alembic, applied at start
secrets.py    SecretBox: Fernet encryption at rest, key from env or a 0600 key file
embedded.py   EmbeddedTransport: the app in-process for ConveyorClient with no server
service/      the state machine and everything else, as functions over a Session
routes/       HTTP only, one module per resource
```

Importing this package is cheap; `create_app` imports FastAPI on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.server.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from conveyor.server.app import create_app

        return create_app
    raise AttributeError(f"module 'conveyor.server' has no attribute {name!r}")

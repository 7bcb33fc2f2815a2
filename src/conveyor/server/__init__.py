"""The Conveyor API server: `create_app(settings)` (FastAPI, SQLAlchemy, Alembic).

```
app.py        create_app: migrations, routes, error translation, API-key check, lease sweeper
api.py        the API's operations over a ServerContext (one per endpoint), used by both:
routes/         the HTTP front end (FastAPI), one module per resource
local.py        LocalTransport: the embedded front end (no FastAPI), for connect()
errors.py     any exception -> status + one-line body, for both front ends
context.py    ServerContext (db, secret box, doorbell for long-polls, throttled lease sweep)
_dbwatch.py   DatabaseWatch: inotify on the SQLite files rings the doorbell on other writes
db.py         Database: engine per app, read / write transactions, SQLite WAL + retries
tables.py     typed ORM tables;  migrate.py + migrations/: Alembic, applied when behind
secrets.py    SecretBox: Fernet encryption at rest, key from env or a 0600 key file
service/      the state machine and everything else, as functions over a Session
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

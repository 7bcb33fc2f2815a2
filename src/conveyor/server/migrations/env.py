"""Alembic environment: always online, on the connection `conveyor.server.migrate` hands over.

Migrations are applied by the server (and the embedded client) at start; nothing here reads
configuration. To write a new revision, change ``conveyor/server/tables.py`` and run::

    python -m conveyor.server.migrate revision "what changed"

then review the generated file in ``versions/`` (autogenerate against a scratch SQLite database).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from conveyor.server.tables import Base

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("conveyor migrations run through conveyor.server.migrate, with a connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()

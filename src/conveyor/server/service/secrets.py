"""The secret store: values encrypted with the server's `SecretBox`; lists never carry values."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from conveyor._names import check_secret_name
from conveyor.errors import ConfigError, InvalidRequest, ObjectNotFound
from conveyor.schemas import SecretInfo, SecretValue
from conveyor.server.secrets import SecretBox
from conveyor.server.tables import SecretRow

__all__ = ["delete_secret", "get_secret_value", "list_secrets", "put_secret"]

_MAX_VALUE = 64 * 1024


def put_secret(
    session: Session, box: SecretBox, name: str, value: str, *, now: datetime
) -> SecretInfo:
    """Create or replace secret ``name``."""
    _check_name(name)
    if len(value) > _MAX_VALUE:
        raise InvalidRequest(f"secret {name!r} is longer than 64 KiB", status_code=422)
    ciphertext = box.encrypt(value)
    row = session.get(SecretRow, name, with_for_update=True)
    if row is None:
        row = SecretRow(name=name, created=now)
        session.add(row)
    row.ciphertext = ciphertext
    row.updated = now
    session.flush()
    return _info(row)


def list_secrets(session: Session) -> list[SecretInfo]:
    return [_info(row) for row in session.scalars(select(SecretRow).order_by(SecretRow.name))]


def get_secret_value(session: Session, box: SecretBox, name: str) -> SecretValue:
    row = session.get(SecretRow, name)
    if row is None:
        raise _not_found(name)
    return SecretValue(name=name, value=box.decrypt(row.ciphertext, name=name))


def delete_secret(session: Session, name: str) -> None:
    result = session.execute(delete(SecretRow).where(SecretRow.name == name))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise _not_found(name)


def _check_name(name: str) -> None:
    try:
        check_secret_name(name)
    except ConfigError as exc:
        raise InvalidRequest(exc.message, status_code=422, hint=exc.hint) from None


def _not_found(name: str) -> ObjectNotFound:
    return ObjectNotFound(f"secret {name!r} not found", status_code=404, hint="conveyor secret ls")


def _info(row: SecretRow) -> SecretInfo:
    return SecretInfo(name=row.name, created=row.created, updated=row.updated)

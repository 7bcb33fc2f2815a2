"""Secret parameters (``SecretStr``) at rest: encrypted with the server's `SecretBox`.

A value of a parameter the stored schema calls secret (`conveyor._params.is_secret`) is kept as
a tagged envelope, ``{"$conveyor_secret": "<Fernet token>"}``, in a run's parameters, a
deployment's default parameters and its kept revisions. The same key and cipher as the secret
store are used (one key to keep).

- `seal` before storing (values that are already envelopes are kept as they are);
- `unseal` for the worker's claim answer, the only place that carries the value;
- `masked` for everything shown: an envelope, and a plain value of a secret parameter stored
  before this existed, are ``****``.

Rows written before sealing hold plain values: they still run (`unseal` leaves them alone) and
are shown masked by the schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conveyor._params import is_secret, masked_parameters
from conveyor.errors import ConfigError
from conveyor.server.secrets import SecretBox

__all__ = ["ENVELOPE", "MASK", "is_sealed", "masked", "seal", "secret_keys", "unseal"]

ENVELOPE = "$conveyor_secret"
MASK = "****"


def is_sealed(value: object) -> bool:
    """Whether ``value`` is an envelope `seal` made."""
    return isinstance(value, Mapping) and len(value) == 1 and isinstance(value.get(ENVELOPE), str)


def seal(box: SecretBox, schema: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with the value of each secret parameter (by ``schema``) encrypted."""
    secret = _secret_names(schema)
    return {
        key: {ENVELOPE: box.encrypt(value).decode("ascii")}
        if key in secret and isinstance(value, str)
        else value
        for key, value in params.items()
    }


def unseal(box: SecretBox, params: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    """``params`` with every envelope decrypted; a `ConfigError` naming the parameter and
    ``where`` (the run or deployment) when this server's key cannot decrypt one."""
    return {
        key: _decrypt(box, value[ENVELOPE], key=key, where=where) if is_sealed(value) else value
        for key, value in params.items()
    }


def _decrypt(box: SecretBox, token: str, *, key: str, where: str) -> str:
    try:
        return box.decrypt(token.encode("ascii"), name=key)
    except ConfigError:
        raise ConfigError(
            f"secret parameter {key!r} of {where} cannot be decrypted with this server's key",
            hint="start the server with the CONVEYOR_SECRET_KEY (or secret.key) it had when "
            "the value was stored, or give the value again",
        ) from None


def masked(schema: Mapping[str, Any] | None, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` to show: envelopes, and non-null values of secret parameters (by ``schema``;
    `conveyor._params.masked_parameters`), as ``****``."""
    shown = {key: MASK if is_sealed(value) else value for key, value in params.items()}
    return masked_parameters(schema or {}, shown)


def secret_keys(schema: Mapping[str, Any] | None, params: Mapping[str, Any]) -> list[str]:
    """The keys of ``params`` whose values are secret: envelopes, and non-null values of
    parameters ``schema`` calls secret; sorted."""
    secret = _secret_names(schema or {})
    return sorted(
        key
        for key, value in params.items()
        if is_sealed(value) or (key in secret and value is not None)
    )


def _secret_names(schema: Mapping[str, Any]) -> frozenset[str]:
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return frozenset()
    return frozenset(
        name for name, prop in properties.items() if isinstance(prop, Mapping) and is_secret(prop)
    )

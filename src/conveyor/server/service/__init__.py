"""The server's service layer: plain functions over a SQLAlchemy `Session`.

Each function takes the session first and the current time as ``now=`` (so tests can move time),
raises `conveyor.errors.ApiError` subclasses carrying the HTTP status, and returns the pydantic
models of `conveyor.schemas`. Routes only translate HTTP to these calls.

- `pools`: create and list work pools.
- `deployments`: create-or-update by ``flow/name``, revisions, look-ups.
- `runs`: create (validated parameters, pinned code), list, inspect, cancel.
- `claims`: the state machine: claims with leases, heartbeats, state reports, expiry, retries.
- `logs`: batched ingestion and reading by ``seq``.
- `workers`: heartbeats and online/offline status.
- `secrets`: the encrypted secret store.
- `sealed`: secret parameters (``SecretStr``) encrypted at rest with the same key, and masked.
"""

"""Signed flow pickles: how the first-generation storages keep a flow as bytes.

A flow is pickled with cloudpickle inside a JSON *envelope* (UTF-8)::

    {"format": "conveyor-flow-pickle/1", "flow_name": "etl",
     "versions": {"python": "3.12.3", "cloudpickle": "3.1.1", "conveyor": "0.1.0"},
     "key_id": "4f1c...", "signature": "<hex HMAC-SHA256>", "flow": "<base64 pickle>"}

The signature is ``HMAC-SHA256(key, canonical JSON of every field but signature and flow +
b"\\n" + pickle)``, with a key held by the Conveyor server in its encrypted secret store:
``_conveyor.flow-signing-key.<key_id>`` holds a key, ``_conveyor.flow-signing-key`` names the
one to sign with (created on first use; two first signers racing each keep a valid key, since
a key is never overwritten and the envelope names its own). Whoever can read the server's
secrets can check a pickle; nobody else can make one that passes.

Loading (`unpickle_flow`) refuses, *before* unpickling anything:

- bytes that are not an envelope (a raw pickle, another tool's file): unsigned;
- an envelope without a signature, or signed with a key this server does not have (foreign);
- a signature that does not match (the bytes were changed after they were built);
- versions that differ from this interpreter's (Python X.Y, cloudpickle, Conveyor): the error
  names both sides.

The signature is checked where the secret store is reachable: by `storage.get_flow` and by the
worker when it fetches the file (`conveyor.sources.flowfile`), before the file enters the code
cache; the child that runs the flow then loads the verified, digest-pinned copy
(``verified=True``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from conveyor.errors import ConfigError, FlowLoadError, IntegrityError
from conveyor.secrets import Secret, SecretStore, WritableSecretStore

__all__ = [
    "FORMAT",
    "KEY_SECRET",
    "Envelope",
    "SigningKey",
    "dump_flow",
    "parse_envelope",
    "runtime_versions",
    "signing_key",
    "unpickle_flow",
    "verify_envelope",
]

FORMAT = "conveyor-flow-pickle/1"
KEY_SECRET = "_conveyor.flow-signing-key"  # noqa: S105 - a secret's name, not a value
"""The secret naming the key to sign with; keys live in ``KEY_SECRET + "." + key_id``."""
_UNSIGNED_HINT = (
    "register the flow again with this Conveyor server (flow.register() or conveyor register), "
    "or store it as a script (stored_as_script=True)"
)


@dataclass(frozen=True)
class SigningKey:
    """A key of the server's, and its id (the suffix of its secret's name)."""

    key_id: str
    key: Secret


def _key_name(key_id: str) -> str:
    return f"{KEY_SECRET}.{key_id}"


def signing_key(store: SecretStore) -> SigningKey:
    """The key to sign with, created in ``store`` on first use."""
    key_id = store.get_secret(KEY_SECRET)
    if key_id:
        value = store.get_secret(_key_name(key_id))
        if value:
            return SigningKey(key_id, Secret(value, name=_key_name(key_id)))
    if not isinstance(store, WritableSecretStore):
        raise ConfigError(
            "no flow signing key exists yet, and this secret store cannot create one",
            hint="register a flow once with a client of the Conveyor server",
        )
    key_id = secrets.token_hex(8)
    value = secrets.token_hex(32)
    store.set_secret(_key_name(key_id), value)  # the key first: the pointer never dangles
    store.set_secret(KEY_SECRET, key_id)
    return SigningKey(key_id, Secret(value, name=_key_name(key_id)))


def runtime_versions() -> dict[str, str]:
    """The versions an envelope records: Python, cloudpickle and Conveyor of this process."""
    import cloudpickle

    from conveyor._version import __version__

    info = sys.version_info
    return {
        "python": f"{info.major}.{info.minor}.{info.micro}",
        "cloudpickle": str(cloudpickle.__version__),
        "conveyor": __version__,
    }


def _signed_bytes(header: Mapping[str, Any], payload: bytes) -> bytes:
    canonical = json.dumps(dict(header), sort_keys=True, separators=(",", ":"))
    return canonical.encode() + b"\n" + payload


def _sign(key: Secret, header: Mapping[str, Any], payload: bytes) -> str:
    digest = hmac.new(key.reveal().encode(), _signed_bytes(header, payload), hashlib.sha256)
    return digest.hexdigest()


def dump_flow(flow: Any, key: SigningKey) -> bytes:
    """``flow`` pickled with cloudpickle in a signed envelope (the flow's ``name`` recorded)."""
    import cloudpickle

    payload = cloudpickle.dumps(flow, protocol=5)
    header = {
        "format": FORMAT,
        "flow_name": str(getattr(flow, "name", "")),
        "versions": runtime_versions(),
        "key_id": key.key_id,
    }
    document = {
        **header,
        "signature": _sign(key.key, header, payload),
        "flow": base64.b64encode(payload).decode("ascii"),
    }
    return json.dumps(document, sort_keys=True).encode("utf-8")


@dataclass(frozen=True)
class Envelope:
    """A parsed envelope: its signed header, signature and pickle bytes (not unpickled)."""

    header: Mapping[str, Any]
    signature: str
    payload: bytes

    @property
    def flow_name(self) -> str:
        return str(self.header.get("flow_name", ""))

    @property
    def key_id(self) -> str:
        return str(self.header.get("key_id", ""))

    @property
    def versions(self) -> Mapping[str, str]:
        found = self.header.get("versions")
        return found if isinstance(found, Mapping) else {}


def parse_envelope(data: bytes, *, where: str) -> Envelope:
    """The envelope in ``data``; `IntegrityError` for anything else (an unsigned pickle)."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        document = None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise IntegrityError(
            f"{where} is not a signed Conveyor flow pickle (an unsigned or foreign file); "
            "it was not unpickled",
            path=where,
            hint=_UNSIGNED_HINT,
        )
    signature, encoded = document.get("signature"), document.get("flow")
    if not isinstance(signature, str) or not signature or not document.get("key_id"):
        raise IntegrityError(
            f"{where} is an unsigned flow pickle; it was not unpickled",
            path=where,
            hint=_UNSIGNED_HINT,
        )
    try:
        payload = base64.b64decode(str(encoded), validate=True)
    except (binascii.Error, ValueError):
        raise IntegrityError(f"{where} is a damaged flow pickle", path=where) from None
    header = {k: v for k, v in document.items() if k not in ("signature", "flow")}
    return Envelope(header, signature, payload)


def verify_envelope(envelope: Envelope, store: SecretStore | None, *, where: str) -> None:
    """Check the signature with the server's key; `IntegrityError` when it does not match."""
    if store is None:
        raise ConfigError(
            f"cannot check the signature of {where}: no secret store to read the server's key",
            hint="load it through a client of the Conveyor server that registered it",
        )
    value = store.get_secret(_key_name(envelope.key_id)) if envelope.key_id.isalnum() else None
    if not value:
        raise IntegrityError(
            f"{where} was signed with key {envelope.key_id[:16]!r}, which this Conveyor server "
            "does not have (a flow registered with another server, or the key was deleted); "
            "it was not unpickled",
            path=where,
            hint=_UNSIGNED_HINT,
        )
    expected = _sign(Secret(value), envelope.header, envelope.payload)
    if not hmac.compare_digest(expected, envelope.signature):
        raise IntegrityError(
            f"the signature of {where} does not match: the file was changed after the flow was "
            "built; it was not unpickled",
            path=where,
            hint="register the flow again, and find out who changed the stored file",
        )


def _check_versions(envelope: Envelope, *, where: str) -> None:
    built, here = envelope.versions, runtime_versions()

    def python(text: str) -> str:
        return ".".join(str(text).split(".")[:2])

    differs = (
        python(built.get("python", "?")) != python(here["python"])
        or built.get("cloudpickle") != here["cloudpickle"]
        or built.get("conveyor") != here["conveyor"]
    )
    if not differs:
        return

    def side(v: Mapping[str, str]) -> str:
        return (
            f"Python {python(v.get('python', '?'))}, cloudpickle {v.get('cloudpickle', '?')}, "
            f"Conveyor {v.get('conveyor', '?')}"
        )

    raise FlowLoadError(
        f"flow {envelope.flow_name!r} in {where} was pickled with {side(built)}; this machine "
        f"has {side(here)}; it was not unpickled",
        hint="register it again where the versions match the workers', or store it as a "
        "script (stored_as_script=True)",
    )


def unpickle_flow(
    data: bytes, *, where: str, store: SecretStore | None = None, verified: bool = False
) -> Any:
    """The object pickled in the envelope ``data``, once it is known to be ours.

    The signature is checked with ``store`` unless the caller says the bytes were ``verified``
    already (a digest-pinned copy of a file checked at fetch). The versions are always checked.
    """
    envelope = parse_envelope(data, where=where)
    if not verified:
        verify_envelope(envelope, store, where=where)
    _check_versions(envelope, where=where)
    import pickle

    try:
        return pickle.loads(envelope.payload)  # noqa: S301 - signed by our server, checked above
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        raise FlowLoadError(
            f"flow {envelope.flow_name!r} in {where} needs the Python module {missing!r}, which "
            "is not installed here",
            hint="install it where the flow runs (the image, the worker's environment), or "
            "store the flow as a script",
        ) from exc
    except Exception as exc:
        raise FlowLoadError(
            f"flow {envelope.flow_name!r} in {where} could not be unpickled: "
            f"{type(exc).__name__}: {exc}",
            hint="register it again from the same versions of Python and its libraries",
        ) from exc

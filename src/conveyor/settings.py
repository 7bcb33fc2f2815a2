"""Settings, read once from the environment and passed down.

Nothing in Conveyor reads configuration at import time or in a default argument: the CLI, the
worker and the server each call `Settings.from_env()` once and hand the object to what they build.

| variable | default | meaning |
|---|---|---|
| ``CONVEYOR_HOME`` | ``~/.conveyor`` | root of everything local |
| ``CONVEYOR_CACHE_DIR`` | ``$CONVEYOR_HOME/cache`` | the code cache |
| ``CONVEYOR_CACHE_MAX_BYTES`` | ``2GiB`` | cache byte budget (``500MB``, ``2GiB``) |
| ``CONVEYOR_API_URL`` | unset: embedded | the server to talk to |
| ``CONVEYOR_API_KEY`` | unset | sent to, or required by, the server |
| ``CONVEYOR_DATABASE_URL`` | ``sqlite:///$CONVEYOR_HOME/conveyor.db`` | the server's database |
| ``CONVEYOR_SECRET_KEY`` | key file under home | the key that encrypts stored secrets (*) |
| ``CONVEYOR_BUNDLE_STORE`` | ``$CONVEYOR_HOME/storage`` | where deploys snapshot code (**) |
| ``CONVEYOR_MAX_BUNDLE_BYTES`` | ``1GiB`` | server: the largest bundle its bundle store accepts |
| ``CONVEYOR_MAX_REQUEST_BYTES`` | ``32MiB`` | server: largest request body (bundles excepted) |
| ``CONVEYOR_MAX_PARAMETERS_BYTES`` | ``1MiB`` | server: a run's parameters, as JSON |
| ``CONVEYOR_MAX_LOG_LINE_BYTES`` | ``1MiB`` | server: one log line (workers cut at 64 Ki chars) |
| ``CONVEYOR_MAX_LOG_BATCH`` | ``1000`` | server: log records per request (workers send 200) |
| ``CONVEYOR_NETWORK_RETRY_SECONDS`` | ``30`` | seconds a failing network call is retried (0: off) |

(*) a Fernet key (``python -c "from cryptography.fernet import Fernet;
print(Fernet.generate_key().decode())"``) or any random string of 32 characters or more.
(**) a directory, ``server`` (the Conveyor server keeps the bundles), or a blob URL.

The server answers 413 with the setting's name when a request passes one of the limits.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from conveyor.errors import ConfigError
from conveyor.secrets import Secret, redact_url

__all__ = ["DEFAULT_LEASE_SECONDS", "Settings", "parse_seconds", "parse_size"]

DEFAULT_LEASE_SECONDS = 30.0
"""How long a claim lasts without a heartbeat, unless the worker asks for another length."""

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str, *, name: str = "size") -> int:
    """``"500MB"`` → 500000000; ``"2GiB"`` → 2147483648; a plain number is bytes."""
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        raise ConfigError(
            f"{name} {text!r} is not a size", hint="write it like 1048576, 500MB or 2GiB"
        )
    return int(float(match.group(1)) * _UNITS[unit])


def _limits(env: Mapping[str, str]) -> dict[str, int]:
    """The ``CONVEYOR_MAX_*`` server limits that are set (each must be a positive number)."""
    limits: dict[str, int] = {}
    for field in ("max_request_bytes", "max_parameters_bytes", "max_log_line_bytes"):
        name = "CONVEYOR_" + field.upper()
        if env.get(name):
            limits[field] = parse_size(env[name], name=name)
    if env.get("CONVEYOR_MAX_LOG_BATCH"):
        text = env["CONVEYOR_MAX_LOG_BATCH"]
        limits["max_log_batch"] = int(text) if text.strip().isdigit() else 0
    for field, value in limits.items():
        if value < 1:
            name = "CONVEYOR_" + field.upper()
            raise ConfigError(f"{name}={env[name]!r} is not a positive number", hint="e.g. 1000")
    return limits


def parse_seconds(text: str, *, name: str = "seconds") -> float:
    """``"30"`` → 30.0, ``"2.5"`` → 2.5: a finite number of seconds, 0 or more."""
    try:
        value = float(text.strip().removesuffix("s"))
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ConfigError(
            f"{name} {text!r} is not a number of seconds", hint="write it like 30 or 2.5 (0: off)"
        )
    return value


def _api_url(text: str | None) -> str | None:
    """``CONVEYOR_API_URL``, refused unless it is an http(s) URL with a host."""
    if text is None:
        return None
    try:
        parts = urlsplit(text.strip())
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        usable = False
    if not usable:
        raise ConfigError(
            f"CONVEYOR_API_URL {redact_url(text)!r} is not a server URL: "
            "write the server's root, like http://127.0.0.1:4300"
        )
    return text.strip()


def _check_bundle_store(text: str) -> None:
    """Refuse a malformed URL (``s3:/bucket``, ``s3://``): it would become a local folder."""
    from conveyor._urltypo import refuse_store_typo, shown

    refuse_store_typo(text, named=f"CONVEYOR_BUNDLE_STORE={shown(text)!r}")


@dataclass(frozen=True)
class Settings:
    """Everything configurable, resolved to concrete values."""

    home: Path
    cache_dir: Path
    cache_max_bytes: int = 2 * 1024**3
    api_url: str | None = None
    api_key: Secret | None = None
    database_url: str | None = None
    secret_key: Secret | None = None
    bundle_store: str | None = None
    """``CONVEYOR_BUNDLE_STORE``: None means the local directory `storage_dir`."""
    max_bundle_bytes: int = 1024**3
    max_request_bytes: int = 32 * 1024**2
    max_parameters_bytes: int = 1024**2
    max_log_line_bytes: int = 1024**2
    max_log_batch: int = 1000
    network_retry_seconds: float = 30.0
    """``CONVEYOR_NETWORK_RETRY_SECONDS``: the retry budget of a failing network call."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the ``CONVEYOR_*`` variables (``os.environ`` by default) once."""
        env = os.environ if environ is None else environ
        home = Path(env.get("CONVEYOR_HOME") or Path.home() / ".conveyor").expanduser()
        cache_dir = Path(env.get("CONVEYOR_CACHE_DIR") or home / "cache").expanduser()
        max_bytes = env.get("CONVEYOR_CACHE_MAX_BYTES")
        api_key = env.get("CONVEYOR_API_KEY")
        secret_key = env.get("CONVEYOR_SECRET_KEY")
        max_bundle = env.get("CONVEYOR_MAX_BUNDLE_BYTES")
        retry_seconds = env.get("CONVEYOR_NETWORK_RETRY_SECONDS")
        bundle_store = (env.get("CONVEYOR_BUNDLE_STORE") or "").strip() or None
        if bundle_store is not None:
            _check_bundle_store(bundle_store)
        return cls(
            home=home.absolute(),
            cache_dir=cache_dir.absolute(),
            cache_max_bytes=(
                parse_size(max_bytes, name="CONVEYOR_CACHE_MAX_BYTES")
                if max_bytes
                else cls.cache_max_bytes
            ),
            api_url=_api_url(env.get("CONVEYOR_API_URL") or None),
            api_key=Secret(api_key, name="CONVEYOR_API_KEY") if api_key else None,
            database_url=env.get("CONVEYOR_DATABASE_URL") or None,
            secret_key=Secret(secret_key, name="CONVEYOR_SECRET_KEY") if secret_key else None,
            bundle_store=bundle_store,
            max_bundle_bytes=(
                parse_size(max_bundle, name="CONVEYOR_MAX_BUNDLE_BYTES")
                if max_bundle
                else cls.max_bundle_bytes
            ),
            **_limits(env),
            network_retry_seconds=(
                parse_seconds(retry_seconds, name="CONVEYOR_NETWORK_RETRY_SECONDS")
                if retry_seconds
                else cls.network_retry_seconds
            ),
        )

    @property
    def storage_dir(self) -> Path:
        """The local bundle store: ``$CONVEYOR_HOME/storage``."""
        return self.home / "storage"

    @property
    def effective_bundle_store(self) -> str:
        """Where deploy snapshots code: ``CONVEYOR_BUNDLE_STORE``, or `storage_dir`."""
        return self.bundle_store or str(self.storage_dir)

    @property
    def results_dir(self) -> Path:
        """Where non-JSON run results are persisted: ``$CONVEYOR_HOME/results``."""
        return self.home / "results"

    @property
    def effective_database_url(self) -> str:
        """The configured database, or the embedded SQLite file under home."""
        return self.database_url or f"sqlite:///{self.home / 'conveyor.db'}"

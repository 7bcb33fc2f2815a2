"""Per-request bounds of the blob backends, from ``CONVEYOR_NETWORK_RETRY_SECONDS``.

A store that accepts the connection and never answers would otherwise hold a deploy or a run for
many minutes: each library retries on its own (s3fs 5 times over botocore's 5 attempts, gcsfs 6
times, Azure 4) and waits long for each answer (gcsfs forever). `bounded_options` gives each
library the limits of `conveyor._retry.TryLimits` through its own options, unless the storage's
settings set that option themselves (they win):

========  ===================================================================================
s3        ``config_kwargs`` (botocore ``Config``; a ``Config`` in ``client_kwargs`` is merged
          into them): ``connect_timeout``, ``read_timeout``,
          ``retries={"total_max_attempts": tries, "mode": "standard"}`` (not when
          ``AWS_MAX_ATTEMPTS`` is set); s3fs's own retry loop around botocore makes one try
gcs       ``requests_timeout``: ``aiohttp.ClientTimeout(connect, sock_read)``; ``retries``:
          the tries of gcsfs's own retry loop (`conveyor.sources.blob._gcs`)
azure     ``connection_timeout``, ``read_timeout`` (adlfs's), and ``retry_total``: adlfs's
          service client is rebuilt with them (`bound_filesystem`)
========  ===================================================================================

Read timeouts bound the wait for the *next* bytes, so a large transfer that keeps moving is
never cut off.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from conveyor._retry import TryLimits

__all__ = ["bound_filesystem", "bounded_options"]

_AZURE_RETRY = "retry_total"


def bounded_options(
    platform: str,
    options: Mapping[str, Any],
    limits: TryLimits,
    *,
    environ: Mapping[str, str],
) -> dict[str, Any]:
    """``options`` with the per-request limits of ``platform`` added where they are not set
    (``environ``: the context's; botocore reads ``AWS_MAX_ATTEMPTS`` from the process's)."""
    found = dict(options)
    if platform == "s3":
        config = {**_given_config(found), **dict(found.get("config_kwargs") or {})}
        config.setdefault("connect_timeout", limits.connect)
        config.setdefault("read_timeout", limits.read)
        attempts = environ.get("AWS_MAX_ATTEMPTS") or os.environ.get("AWS_MAX_ATTEMPTS")
        if "retries" not in config and not attempts:
            config["retries"] = {"total_max_attempts": limits.tries, "mode": "standard"}
        found["config_kwargs"] = config
    elif platform == "gcs":
        if found.get("requests_timeout") is None:
            import aiohttp

            found["requests_timeout"] = aiohttp.ClientTimeout(
                total=None,
                connect=limits.connect,
                sock_connect=limits.connect,
                sock_read=limits.read,
            )
        found.setdefault("retries", limits.tries)
    elif platform == "azure":
        found.setdefault("connection_timeout", limits.connect)
        found.setdefault("read_timeout", limits.read)
    return found


def _given_config(options: dict[str, Any]) -> dict[str, Any]:
    """The options of a botocore ``Config`` given as ``client_kwargs["config"]`` (boto3's way,
    e.g. S3 storage's ``client_options``), taken out of ``client_kwargs``: s3fs passes its own
    ``config=`` to the client, and both at once are a TypeError. Only what the user set counts
    (``Config._user_provided_options``), so the bounds fill the rest."""
    client_kwargs = options.get("client_kwargs")
    if not isinstance(client_kwargs, Mapping) or client_kwargs.get("config") is None:
        return {}
    given = client_kwargs["config"]
    provided = getattr(given, "_user_provided_options", None)
    if not isinstance(provided, Mapping):
        return {}
    options["client_kwargs"] = {k: v for k, v in client_kwargs.items() if k != "config"}
    return dict(provided)


def bound_filesystem(fs: Any, platform: str, options: Mapping[str, Any], limits: TryLimits) -> None:
    """Apply what a library takes only after its filesystem is built: s3fs's retry loop makes
    one try (botocore's retries, bounded above, are the ones left), and adlfs's Azure service
    client is rebuilt with the timeouts and retry count (adlfs passes them to transfers only)."""
    if platform == "s3":
        fs.retries = 1
    elif platform == "azure" and getattr(fs, "_conveyor_limits", None) != limits:
        _bound_azure(fs, options, limits)
        fs._conveyor_limits = limits


def _bound_azure(fs: Any, options: Mapping[str, Any], limits: TryLimits) -> None:
    from azure.storage.blob.aio import BlobServiceClient

    current = getattr(fs, "service_client", None)
    if current is None:
        return
    config: dict[str, Any] = {
        "connection_timeout": options.get("connection_timeout", limits.connect),
        "read_timeout": options.get("read_timeout", limits.read),
        _AZURE_RETRY: limits.tries - 1,
        # Azure Storage waits 15 s, then 18 s, ... before its retries: 1 s, then 3 s here
        "initial_backoff": 1,
        "increment_base": 2,
    }
    if fs.connection_string:
        fs.service_client = BlobServiceClient.from_connection_string(fs.connection_string, **config)
    else:
        fs.service_client = BlobServiceClient(
            account_url=current.url, credential=current.credential, **config
        )

"""Third-party blob-store errors, translated at the boundary; retries of transient ones.

`translate` turns whatever s3fs/botocore, gcsfs/google-auth, adlfs/azure-core, aiohttp or the OS
raised into a `SourceError` whose one-line message names the location (a redacted URL or an
object key) and the kind of failure, and never the third party's text (which may quote a
request, a signature or a connection string): `SourceNotFound` (bucket, container or object
missing), `AuthenticationError` (credentials missing or rejected), `SourceUnavailable` (the
service could not be reached, after retries); an S3 redirect (``PermanentRedirect``: the client
is set to another region) names the bucket's region. `Changed` marks a pinned object that was
replaced or deleted since deploy.

`call` retries a transient failure through the shared `conveyor._retry` (exponential backoff,
full jitter) over the budget of ``CONVEYOR_NETWORK_RETRY_SECONDS`` that the context's settings
carry (`budget_of`).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Mapping
from typing import TypeVar

from conveyor._retry import RetryPolicy
from conveyor._retry import call as retry_call
from conveyor.errors import (
    AuthenticationError,
    ConveyorError,
    SourceError,
    SourceNotFound,
    SourceUnavailable,
)
from conveyor.sources.base import FetchContext

__all__ = ["Changed", "budget_of", "call", "is_transient", "translate"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

DETAILS_HINT = (
    "run the command again as `conveyor --debug ...` (a worker: `conveyor --debug worker start`) "
    "for the details"
)

_NOT_FOUND_CODES = {"NoSuchBucket", "NoSuchKey", "NoSuchVersion", "404", "NotFound"}
_AUTH_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AuthorizationHeaderMalformed",
    "403",
    "401",
}
_CHANGED_CODES = {"PreconditionFailed", "412", "ConditionNotMet"}
_REDIRECT_CODES = {"PermanentRedirect", "TemporaryRedirect", "301", "307"}


class Changed(SourceError):
    """A pinned object was replaced or deleted after it was pinned."""


def _status(exc: BaseException) -> int | None:
    for attr in ("status_code", "code", "status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        meta = response.get("ResponseMetadata")
        if isinstance(meta, Mapping) and isinstance(meta.get("HTTPStatusCode"), int):
            return int(meta["HTTPStatusCode"])
    return None


def _code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        error = response.get("Error")
        if isinstance(error, Mapping) and error.get("Code"):
            return str(error["Code"])
    code = getattr(exc, "error_code", None)
    return str(code) if code else None


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 8:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _region(exc: BaseException) -> str | None:
    """The bucket's region an S3 redirect names (``x-amz-bucket-region``, or ``<Region>``)."""
    for item in _chain(exc):
        response = getattr(item, "response", None)
        if not isinstance(response, Mapping):
            continue
        meta = response.get("ResponseMetadata")
        headers = meta.get("HTTPHeaders") if isinstance(meta, Mapping) else None
        if isinstance(headers, Mapping) and headers.get("x-amz-bucket-region"):
            return str(headers["x-amz-bucket-region"])
        error = response.get("Error")
        if isinstance(error, Mapping) and error.get("Region"):
            return str(error["Region"])
    return None


def _classify(exc: BaseException) -> str:
    """One of: changed, not_found, auth, unavailable, exists, wrong_region, other."""
    for item in _chain(exc):
        name = type(item).__name__
        code = _code(item)
        status = _status(item)
        if code in _REDIRECT_CODES or status in (301, 307):
            return "wrong_region"
        if name in ("ResourceModifiedError",) or code in _CHANGED_CODES or status == 412:
            return "changed"
        if isinstance(item, FileExistsError) or name == "ResourceExistsError":
            return "exists"
        if isinstance(item, FileNotFoundError) or name == "ResourceNotFoundError":
            return "not_found"
        if code in _NOT_FOUND_CODES or status == 404:
            return "not_found"
        if isinstance(item, PermissionError) or name in (
            "NoCredentialsError",
            "PartialCredentialsError",
            "ClientAuthenticationError",
            "RefreshError",
            "DefaultCredentialsError",
            "TransportError",
        ):
            return "auth"
        if code in _AUTH_CODES or status in (401, 403):
            return "auth"
        if isinstance(item, OSError) and item.errno == errno.EINVAL and "Precondition" in str(item):
            return "changed"
        if (
            isinstance(item, ConnectionError | TimeoutError)
            or name
            in (
                "EndpointConnectionError",
                "ConnectTimeoutError",
                "ReadTimeoutError",
                "ClientConnectorError",
                "ServerDisconnectedError",
                "ClientOSError",
                "ServiceRequestError",
                "ServiceResponseError",
                "ClientPayloadError",
            )
            or (status is not None and (status >= 500 or status == 429))
        ):
            return "unavailable"
    return "other"


_TIMEOUTS = frozenset(
    {
        "ReadTimeoutError",
        "ConnectTimeoutError",
        "ServerTimeoutError",
        "SocketTimeoutError",
        "ConnectionTimeoutError",
        "ServiceRequestTimeoutError",
        "ServiceResponseTimeoutError",
    }
)
TIMEOUT_HINT = (
    "check that the endpoint is up and answers from this machine (endpoint_url, "
    "AWS_ENDPOINT_URL_S3, STORAGE_EMULATOR_HOST or the connection string's BlobEndpoint); "
    "CONVEYOR_NETWORK_RETRY_SECONDS sets how long each request may wait"
)


def _timed_out(exc: BaseException) -> bool:
    """Whether a request waited out its connect or read timeout (a hung endpoint)."""
    return any(
        isinstance(item, TimeoutError) or type(item).__name__ in _TIMEOUTS for item in _chain(exc)
    )


def _endpoint(exc: BaseException) -> str | None:
    """``scheme://host:port`` of the request that failed, when the error says (botocore's
    ``endpoint_url``): never a path, query or user information."""
    from urllib.parse import urlsplit

    for item in _chain(exc):
        kwargs = getattr(item, "kwargs", None)
        url = kwargs.get("endpoint_url") if isinstance(kwargs, Mapping) else None
        if isinstance(url, str) and "://" in url:
            parts = urlsplit(url)
            host = parts.hostname or ""
            port = f":{parts.port}" if parts.port else ""
            return f"{parts.scheme}://{host}{port}" if host else None
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether retrying may help (the service could not be reached, or said "later"): a
    library's error of that kind, or the `SourceUnavailable` `translate` made of one."""
    if isinstance(exc, SourceUnavailable):
        return True
    return not isinstance(exc, ConveyorError) and _classify(exc) == "unavailable"


WRITE_HINT = "check that the credentials are correct, not expired and allowed to write there"


def translate(
    exc: BaseException, *, where: str, source: str = "", writing: bool = False
) -> ConveyorError:
    """The `SourceError` for ``exc`` raised while working on ``where`` (a redacted location);
    Conveyor's own errors pass through. ``writing``: the operation stored an object (a
    refusal then says the credentials must be allowed to write, not to read)."""
    if isinstance(exc, ConveyorError):
        return exc
    kind = _classify(exc)
    code = next((c for c in (_code(e) for e in _chain(exc)) if c), None)
    why = f" ({code})" if code else ""
    if kind == "changed":
        return Changed(f"{where} changed since it was pinned{why}", source=source)
    if kind == "not_found":
        return SourceNotFound(f"{where} does not exist{why}", source=source)
    if kind == "auth":
        return AuthenticationError(
            f"{where}: the credentials were missing or rejected{why}",
            source=source,
            hint=WRITE_HINT if writing else None,
        )
    if kind == "unavailable":
        if _timed_out(exc):
            endpoint = _endpoint(exc)
            at = f" at {endpoint}" if endpoint else ""
            return SourceUnavailable(
                f"{where}: the store{at} did not answer in time{why}",
                source=source,
                hint=TIMEOUT_HINT,
            )
        return SourceUnavailable(f"{where} could not be reached{why}", source=source)
    if kind == "exists":
        return SourceError(f"{where} already exists", source=source)
    if kind == "wrong_region":
        region = _region(exc)
        if region is None:
            return SourceError(
                f"{where}: the bucket is in another region{why}; set the region "
                "(AWS_DEFAULT_REGION, or region_name in client_kwargs or the saved credentials)",
                source=source,
            )
        return SourceError(
            f"{where}: the bucket is in {region}; set the region (AWS_DEFAULT_REGION={region}, "
            "or region_name in client_kwargs or the saved credentials)",
            source=source,
        )
    return SourceError(
        f"{where}: the store failed with {type(exc).__name__}{why}",
        source=source,
        hint=DETAILS_HINT,
    )


def budget_of(ctx: FetchContext) -> float:
    """The retry budget the context's settings give (``CONVEYOR_NETWORK_RETRY_SECONDS``)."""
    return RetryPolicy.from_settings(ctx.settings).budget


def call(
    fn: Callable[[], T],
    *,
    budget: float,
    retry_if: Callable[[Exception], bool] = is_transient,
) -> T:
    """``fn()``, tried again while it raises a transient exception and ``budget`` seconds have
    not passed since the first attempt (`conveyor._retry`: exponential backoff, full jitter)."""

    def log(number: int, delay: float) -> None:
        logger.info("blob store call failed, retrying attempt=%d delay=%.2fs", number, delay)

    policy = RetryPolicy(budget=budget, base=0.25, cap=5.0)
    return retry_call(fn, policy=policy, retry_if=retry_if, on_retry=log)

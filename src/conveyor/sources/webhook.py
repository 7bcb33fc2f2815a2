"""Code behind an HTTP request: `WebhookRequest` (one request, templated, retried) and
`WebhookSource` (a file served over HTTP, as a source; alias `WebhookStorage`).

`WebhookRequest(method, kwargs)` is what the first-generation ``Webhook`` storage sends to store
a flow and to fetch it back. ``kwargs`` are the ``requests``-style keyword arguments ``url``,
``headers``, ``params``, ``cookies``, ``json``, ``data``, ``timeout``, ``auth``, ``verify`` and
``allow_redirects``; the methods are GET, PATCH, POST and PUT. Every ``${NAME}`` template in
them (``"Authorization": "Bearer ${DBOX_OAUTH2_TOKEN}"``) is resolved when the request is sent,
from the environment first and then the secret store of the `FetchContext`, and revealed only
inside the call: the stored kwargs, logs and errors hold the templates, never the values. A
failure to connect, a timeout, 429 and 5xx answers are retried (`conveyor._retry`, within
``CONVEYOR_NETWORK_RETRY_SECONDS``); without a ``timeout`` of its own, each try waits at most
the connect and read timeouts that setting gives (`conveyor._retry.TryLimits`: a server that
accepts the connection and never answers fails in seconds, a download that keeps moving is
never cut off); 401/403 are `AuthenticationError`, 404 `SourceNotFound`.

`WebhookSource` (kind ``webhook``, URLs ``webhook+https://host/path/flows.py``) serves the modern
style: ``flow.from_source("webhook+https://host/flows.py", "flows.py:hello")``. Its tree is the
one file the request returns (named after the URL's last segment, or ``filename=``); a webhook
does not keep versions (``supports_versioning = False``), so deploy snapshots what it returned
into the bundle store and runs use that snapshot.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from conveyor.errors import (
    AuthenticationError,
    ConfigError,
    SourceError,
    SourceNotFound,
    SourceUnavailable,
    VersionNotFound,
)
from conveyor.secrets import Secret, redact_url, resolve_templates
from conveyor.sources.base import FetchContext, Source, context

if TYPE_CHECKING:
    import httpx

    from conveyor._retry import TryLimits

__all__ = ["METHODS", "WebhookRequest", "WebhookSource", "WebhookStorage", "read_webhook"]

logger = logging.getLogger(__name__)

METHODS = ("GET", "PATCH", "POST", "PUT")
_KWARGS = frozenset(
    {"url", "headers", "params", "cookies", "json", "data", "timeout", "auth", "verify"}
    | {"allow_redirects"}
)
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class _Retryable(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def _reveal(value: Any) -> Any:
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, Mapping):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_reveal(v) for v in value)
    return value


@dataclass(frozen=True)
class WebhookRequest:
    """One HTTP request with ``requests``-style ``kwargs`` (templates resolved when sent)."""

    method: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        method = self.method.upper() if isinstance(self.method, str) else self.method
        if method not in METHODS:
            raise ConfigError(
                f"HTTP method {self.method!r} not recognized",
                hint=f"use one of {', '.join(METHODS)}",
            )
        object.__setattr__(self, "method", method)
        if not isinstance(self.kwargs, Mapping):
            raise ConfigError("request kwargs must be a mapping with at least a 'url'")
        unknown = sorted(set(self.kwargs) - _KWARGS)
        if unknown:
            raise ConfigError(
                f"request keyword {unknown[0]!r} is not supported",
                hint=f"use: {', '.join(sorted(_KWARGS))}",
            )
        url = self.kwargs.get("url")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https", ""):
            raise ConfigError("the request needs a 'url' starting with http:// or https://")
        if "://" not in url and "${" not in url:
            raise ConfigError(f"request url {url!r} is not an http(s) URL")

    @property
    def shown(self) -> str:
        """``METHOD url`` with the templates as written (and any password redacted)."""
        return f"{self.method} {redact_url(str(self.kwargs['url']))}"

    def send(self, ctx: FetchContext | None, *, content: bytes | None = None) -> httpx.Response:
        """Resolve the templates, send the request (retried), raise for an error status."""
        from conveyor._retry import RetryPolicy, TryLimits, call

        ctx = context(ctx)
        limits = TryLimits.from_settings(ctx.settings)
        rendered = _reveal(
            resolve_templates(
                dict(self.kwargs), store=ctx.secrets, environ=ctx.environ, kinds={"secret", "env"}
            )
        )
        if content is not None:
            if "data" in rendered:
                logger.warning("request data replaced by the flow's bytes request=%s", self.shown)
            rendered["data"] = content

        def on_retry(number: int, delay: float) -> None:
            logger.info("retrying request=%s attempt=%d in=%.1fs", self.shown, number, delay)

        try:
            return call(
                lambda: self._once(rendered, limits),
                policy=RetryPolicy.from_settings(ctx.settings),
                retry_if=lambda exc: isinstance(exc, _Retryable | _transport_errors()),
                on_retry=on_retry,
            )
        except _Retryable as exc:
            raise SourceUnavailable(
                f"{self.shown} answered HTTP {exc.status} until the retries ran out",
                source=self.shown,
            ) from None
        except _transport_errors() as exc:
            if _timed_out(exc):
                raise SourceUnavailable(
                    f"{self.shown} did not answer in time ({type(exc).__name__})",
                    source=self.shown,
                    hint="check that the server is up and answers from this machine; "
                    "CONVEYOR_NETWORK_RETRY_SECONDS sets how long each request may wait",
                ) from None
            raise SourceUnavailable(
                f"{self.shown} failed: {type(exc).__name__}", source=self.shown
            ) from None

    def _once(self, rendered: dict[str, Any], limits: TryLimits) -> httpx.Response:
        import httpx

        args = dict(rendered)
        url = args.pop("url")
        verify = args.pop("verify", True)
        follow = bool(args.pop("allow_redirects", True))
        timeout = args.pop("timeout", None)
        if timeout is None:  # per wait, so a download that keeps moving is never cut off
            timeout = httpx.Timeout(limits.read, connect=limits.connect, pool=limits.connect)
        data = args.pop("data", None)
        if isinstance(data, bytes | str):
            args["content"] = data
        elif data is not None:
            args["data"] = data
        if isinstance(args.get("auth"), list):
            args["auth"] = tuple(args["auth"])
        with httpx.Client(verify=verify, follow_redirects=follow, timeout=timeout) as client:
            response = client.request(self.method, url, **args)
            response.read()
        status = response.status_code
        if status in _RETRY_STATUS:
            raise _Retryable(status)
        if status in (401, 403):
            raise AuthenticationError(
                f"{self.shown} was refused: HTTP {status}",
                source=self.shown,
                hint="check the token its ${NAME} templates resolve to (environment, then "
                "`conveyor secret set NAME`)",
            )
        if status == 404:
            raise SourceNotFound(f"{self.shown} answered HTTP 404", source=self.shown)
        if status >= 400:
            raise SourceError(f"{self.shown} answered HTTP {status}", source=self.shown)
        return response

    def to_spec(self) -> dict[str, Any]:
        return {"method": self.method, "kwargs": dict(self.kwargs)}


def _timed_out(exc: Exception) -> bool:
    import httpx

    return isinstance(exc, httpx.TimeoutException)


def _transport_errors() -> type[Exception]:
    import httpx

    return httpx.TransportError


def read_webhook(location: Mapping[str, Any], ctx: FetchContext) -> bytes:
    """The body a stored request answers with (the ``webhook`` flow-file location)."""
    spec = location.get("webhook")
    if not isinstance(spec, Mapping):
        raise ConfigError("a webhook location needs its request: {'method', 'kwargs'}")
    request = WebhookRequest(str(spec.get("method", "GET")), spec.get("kwargs") or {})
    return request.send(ctx).content


class WebhookSource(Source):
    """One file served over HTTP (``webhook+https://host/path/flows.py``, or the request).

    ``get_flow_request_kwargs`` / ``get_flow_request_http_method`` (the first generation's
    names) give the request in full; ``headers`` add to a URL; ``filename`` names the file in
    the tree (default: the URL's last path segment).
    """

    kind: ClassVar[str] = "webhook"
    supports_versioning: ClassVar[bool] = False

    def __init__(
        self,
        url: str | None = None,
        *,
        get_flow_request_kwargs: Mapping[str, Any] | None = None,
        get_flow_request_http_method: str = "GET",
        headers: Mapping[str, str] | None = None,
        filename: str | None = None,
    ) -> None:
        if (url is None) == (get_flow_request_kwargs is None):
            raise ConfigError("give a webhook source a url or get_flow_request_kwargs, not both")
        kwargs = dict(get_flow_request_kwargs or {})
        if url is not None:
            kwargs["url"] = url.split("+", 1)[1] if url.lower().startswith("webhook+") else url
        if headers:
            kwargs["headers"] = {**dict(kwargs.get("headers") or {}), **dict(headers)}
        self.request = WebhookRequest(get_flow_request_http_method, kwargs)
        name = filename or posixpath.basename(urlsplit(str(kwargs["url"])).path)
        if not name or "/" in name or name in (".", "..") or "${" in name:
            raise ConfigError(
                f"cannot name the file {self.request.shown} returns",
                hint="pass filename='flows.py' (the entrypoint's file)",
            )
        self.filename = name

    def download(self, ctx: FetchContext | None = None) -> bytes:
        return self.request.send(ctx).content

    def resolve(self, ctx: FetchContext | None = None) -> str:
        from conveyor.sources.flowfile import file_version

        return file_version(self.filename, self.download(ctx))

    def fetch(self, version: str, dest: Path, ctx: FetchContext | None = None) -> None:
        from conveyor.sources.flowfile import file_version, write_file

        data = self.download(ctx)
        got = file_version(self.filename, data)
        if got != version:
            raise VersionNotFound(
                f"{self.request.shown} no longer returns version {version[:19]} (now {got[:19]})",
                source=self.describe(),
                hint="deploy again to run what it returns now",
            )
        write_file(Path(dest), self.filename, data)

    def to_spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "get_flow_request_kwargs": dict(self.request.kwargs),
            "get_flow_request_http_method": self.request.method,
            "filename": self.filename,
        }

    def describe(self) -> str:
        return f"webhook {self.request.shown}"


WebhookStorage = WebhookSource
"""The first generation's name, for ``flow.from_source(WebhookStorage(...), "flows.py:f")``."""

"""Typed client for the Conveyor API (see `conveyor.schemas` for the endpoints).

``ConveyorClient(base_url, *, transport=None, api_key=None)`` speaks HTTP through httpx and knows
nothing of the server: `conveyor.connect.connect(settings)` is what chooses a real server
(``CONVEYOR_API_URL``) or the embedded default, an in-process transport over the local database
(`conveyor.server.local.LocalTransport`). Any httpx transport can be injected (tests, tools).

Errors are translated at this boundary: no answer, and 502/503/504 → `ServerUnavailable` (after
a few retries with backoff, so a worker rides out a server restart; on every path, the streamed
bundle download included), 401 → `Unauthorized`, 404 → `ObjectNotFound`, 400/409/413/422 →
`InvalidRequest`, anything else → `ApiError`; each a one-line message with the server's hint.
Secret values never appear in messages or logs. `ConveyorClient` satisfies
`conveyor.secrets.SecretStore` (`get_secret`).

A request cut after it was sent (the reply lost) is repeated only when repeating it is safe: GET,
PUT, DELETE, HEAD, heartbeats, and the worker's POSTs that carry what makes them idempotent (a
claim with a ``claim_id``, a state report with its ``attempt``, a numbered log batch: see
`conveyor.schemas`).
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from conveyor.errors import (
    ApiError,
    InvalidRequest,
    ObjectNotFound,
    ServerUnavailable,
    Unauthorized,
)
from conveyor.schemas import (
    DEFAULT_LEASE_SECONDS,
    ClaimRequest,
    Deployment,
    DeploymentCreate,
    DeploymentVersion,
    LogLine,
    LogRecord,
    Pool,
    PoolCreate,
    Run,
    RunCreate,
    RunHeartbeat,
    RunHeartbeatReply,
    RunParameters,
    RunParametersRequest,
    RunState,
    RunWatch,
    SecretInfo,
    SecretPut,
    SecretValue,
    StateUpdate,
    Worker,
    WorkerHeartbeat,
)
from conveyor.secrets import Secret, redact_url, reveal

if TYPE_CHECKING:
    from collections.abc import Iterator
    from contextlib import AbstractContextManager
    from pathlib import Path
    from typing import BinaryIO

    import httpx

__all__ = ["ConveyorClient", "ServerBundles", "plain_http_transport"]

logger = logging.getLogger(__name__)
_IDEMPOTENT = frozenset({"GET", "PUT", "DELETE", "HEAD"})
_INVALID = frozenset({400, 409, 413, 422})
_RETRY_STATUS = frozenset({502, 503, 504})


def plain_http_transport(base_url: str) -> httpx.BaseTransport | None:
    """The transport of a client of a plain ``http://`` server (None for any other URL: httpx's
    default, which verifies certificates against the system's or certifi's authorities).

    Such a client makes no TLS connection (every request goes to its base URL, and redirects are
    not followed), yet httpx's default transport loads a whole CA bundle into a TLS context when
    it is built: ~20 ms of every command and worker start. This one's TLS context is created
    empty instead. It still requires a verified certificate and a matching host name, and trusts
    no authority, so a TLS connection through it could only fail, never go unverified."""
    if not base_url.lower().startswith("http://"):
        return None
    import ssl

    import httpx

    return httpx.HTTPTransport(verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))


class ConveyorClient:
    """One object per process; `close()` (or ``with``) releases its connections.

    ``retries``: how many times a request that could not reach the server is repeated (with
    backoff from 0.1 s, doubling: 4 retries wait 1.5 s in all). ``timeout``: seconds to wait for
    an answer (a claim adds its ``wait_seconds``). The constructor does no I/O; the HTTP client,
    or the embedded app, is built on the first request.
    """

    def __init__(
        self,
        base_url: str,
        *,
        transport: httpx.BaseTransport | None = None,
        api_key: Secret | str | None = None,
        retries: int = 4,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.transport = transport
        self.api_key = api_key
        self.retries = retries
        self.timeout = timeout
        self._http: httpx.Client | None = None
        self._lock = threading.Lock()

    @property
    def target(self) -> str:
        """Where requests go, redacted: the server URL, or what the transport says it is."""
        describe = getattr(self.transport, "describe", None)
        if callable(describe):
            return str(describe())
        return redact_url(self.base_url)

    def __repr__(self) -> str:
        return f"ConveyorClient({self.target!r})"

    def close(self) -> None:
        with self._lock:
            http, self._http = self._http, None
        if http is not None:
            http.close()
        elif self.transport is not None:
            self.transport.close()

    def __enter__(self) -> ConveyorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # health
    def health(self) -> dict[str, Any]:
        data = self._request("GET", "/api/health").json()
        assert isinstance(data, dict)
        return data

    # pools
    def create_pool(
        self,
        name: str,
        *,
        type: str = "process",
        description: str = "",
        base_job_template: dict[str, Any] | None = None,
    ) -> Pool:
        body = PoolCreate(
            name=name, type=type, description=description, base_job_template=base_job_template
        )
        return Pool.model_validate(self._request("POST", "/api/pools", body=body).json())

    def list_pools(self) -> list[Pool]:
        return [Pool.model_validate(p) for p in self._request("GET", "/api/pools").json()]

    # deployments ("FLOW/NAME")
    def put_deployment(self, deployment: DeploymentCreate) -> Deployment:
        response = self._request("PUT", "/api/deployments", body=deployment)
        return Deployment.model_validate(response.json())

    def get_deployment(self, flow_name: str, name: str) -> Deployment:
        response = self._request("GET", f"/api/deployments/{_q(flow_name)}/{_q(name)}")
        return Deployment.model_validate(response.json())

    def list_deployments(self) -> list[Deployment]:
        return [
            Deployment.model_validate(d) for d in self._request("GET", "/api/deployments").json()
        ]

    def list_deployment_versions(self, flow_name: str, name: str) -> list[DeploymentVersion]:
        path = f"/api/deployments/{_q(flow_name)}/{_q(name)}/versions"
        return [DeploymentVersion.model_validate(v) for v in self._request("GET", path).json()]

    # runs
    def create_run(
        self,
        flow_name: str,
        name: str,
        *,
        parameters: dict[str, Any] | None = None,
        follow_ref: bool | None = None,
    ) -> Run:
        body = RunCreate(parameters=parameters or {}, follow_ref=follow_ref)
        path = f"/api/deployments/{_q(flow_name)}/{_q(name)}/runs"
        return Run.model_validate(self._request("POST", path, body=body).json())

    def get_run(self, run_id: str) -> Run:
        return Run.model_validate(self._request("GET", f"/api/runs/{_q(run_id)}").json())

    def list_runs(
        self,
        *,
        deployment: str | None = None,
        state: RunState | None = None,
        limit: int = 100,
        pool: str | None = None,
    ) -> list[Run]:
        params: dict[str, Any] = {"limit": limit}
        if deployment:
            params["deployment"] = deployment
        if state is not None:
            params["state"] = RunState(state).value
        if pool:
            params["pool"] = pool
        runs = self._request("GET", "/api/runs", params=params).json()
        return [Run.model_validate(r) for r in runs]

    def cancel_run(self, run_id: str) -> Run:
        return Run.model_validate(self._request("POST", f"/api/runs/{_q(run_id)}/cancel").json())

    # worker side
    def claim_run(
        self,
        pool: str,
        *,
        worker: str,
        labels: list[str] | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        wait_seconds: float = 0,
        claim_id: str | None = None,
    ) -> Run | None:
        """A run for ``worker``, or None. With ``claim_id`` the request is repeated when its reply
        is lost, and the caller should re-present the same id until it gets a run (see
        `conveyor.schemas`)."""
        body = ClaimRequest(
            worker=worker,
            labels=labels or [],
            lease_seconds=lease_seconds,
            wait_seconds=wait_seconds,
            claim_id=claim_id,
        )
        response = self._request(
            "POST",
            f"/api/pools/{_q(pool)}/claim",
            body=body,
            timeout=self.timeout + max(wait_seconds, 0),
            idempotent=claim_id is not None,
        )
        return None if response.status_code == 204 else Run.model_validate(response.json())

    def heartbeat_run(
        self,
        run_id: str,
        *,
        worker: str,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        attempt: int | None = None,
    ) -> RunHeartbeatReply:
        body = RunHeartbeat(worker=worker, lease_seconds=lease_seconds, attempt=attempt)
        path = f"/api/runs/{_q(run_id)}/heartbeat"
        return RunHeartbeatReply.model_validate(
            self._request("POST", path, body=body, idempotent=True).json()
        )

    def run_parameters(self, run_id: str, *, worker: str, attempt: int) -> dict[str, Any]:
        """The parameters of the run ``worker`` holds, secret values included (409 otherwise)."""
        body = RunParametersRequest(worker=worker, attempt=attempt)
        path = f"/api/runs/{_q(run_id)}/parameters"
        response = self._request("POST", path, body=body, idempotent=True)
        return RunParameters.model_validate(response.json()).parameters

    def set_run_state(self, run_id: str, update: StateUpdate) -> Run:
        """Report a state; repeated when the reply is lost if ``update.attempt`` is set."""
        response = self._request(
            "POST",
            f"/api/runs/{_q(run_id)}/state",
            body=update,
            idempotent=update.attempt is not None,
        )
        return Run.model_validate(response.json())

    def write_logs(
        self,
        run_id: str,
        records: list[LogRecord],
        *,
        attempt: int | None = None,
        batch: int | None = None,
    ) -> None:
        """Send one batch; a numbered one (``attempt``, ``batch``) is stored once, so it is
        repeated when the reply is lost. An empty numbered batch is sent too (it keeps the
        numbering)."""
        if not records and batch is None:
            return
        payload = [r.model_dump(mode="json") for r in records]
        numbered = attempt is not None and batch is not None
        params = {"attempt": attempt, "batch": batch} if numbered else None
        self._request(
            "POST",
            f"/api/runs/{_q(run_id)}/logs",
            json=payload,
            params=params,
            idempotent=numbered,
        )

    def read_logs(self, run_id: str, *, after: int = 0, limit: int = 1000) -> list[LogLine]:
        params = {"after": after, "limit": limit}
        lines = self._request("GET", f"/api/runs/{_q(run_id)}/logs", params=params).json()
        return [LogLine.model_validate(line) for line in lines]

    def watch_run(
        self, run_id: str, *, after: int = 0, state: RunState | None = None, wait: float = 10.0
    ) -> RunWatch:
        """The run and its lines after ``after``, as soon as there are some or its state is no
        longer ``state`` (the server waits up to ``wait`` seconds)."""
        params: dict[str, Any] = {"after": after, "wait": wait}
        if state is not None:
            params["state"] = RunState(state).value
        response = self._request(
            "GET",
            f"/api/runs/{_q(run_id)}/watch",
            params=params,
            timeout=self.timeout + wait,
        )
        return RunWatch.model_validate(response.json())

    def worker_heartbeat(
        self,
        name: str,
        *,
        pool: str,
        labels: list[str] | None = None,
        limit: int = 1,
        running: int = 0,
        cache: Mapping[str, int] | None = None,
        stopping: bool = False,
    ) -> Worker:
        """``cache``: the code cache figures of `WorkerHeartbeat` (``cache_bytes``, ...);
        ``stopping``: the worker's last beat (it is shown offline from now on)."""
        body = WorkerHeartbeat(
            name=name,
            pool=pool,
            labels=labels or [],
            limit=limit,
            running=running,
            stopping=stopping,
            **(cache or {}),
        )
        response = self._request("POST", "/api/workers/heartbeat", body=body, idempotent=True)
        return Worker.model_validate(response.json())

    def list_workers(self, *, pool: str | None = None) -> list[Worker]:
        params = {"pool": pool} if pool else None
        workers = self._request("GET", "/api/workers", params=params).json()
        return [Worker.model_validate(w) for w in workers]

    # secrets (values only through get_secret, for `${NAME}` resolution on workers)
    def set_secret(self, name: str, value: str) -> SecretInfo:
        body = SecretPut(value=value)
        response = self._request("PUT", f"/api/secrets/{_q(name)}", body=body)
        return SecretInfo.model_validate(response.json())

    def list_secrets(self) -> list[SecretInfo]:
        return [SecretInfo.model_validate(s) for s in self._request("GET", "/api/secrets").json()]

    def secret_names(self) -> list[str]:
        return [s.name for s in self.list_secrets()]

    def delete_secret(self, name: str) -> None:
        self._request("DELETE", f"/api/secrets/{_q(name)}")

    def get_secret(self, name: str) -> str | None:
        try:
            response = self._request("GET", f"/api/secrets/{_q(name)}/value")
        except ObjectNotFound:
            return None
        return SecretValue.model_validate(response.json()).value

    # the server's bundle store
    def bundle_exists(self, version: str) -> bool:
        path = f"/api/bundles/{_q(version)}"
        try:
            self._request("HEAD", path)
        except ObjectNotFound:
            return False
        return True

    def upload_bundle(self, version: str, archive: Path) -> bool:
        """Upload the archive of ``version``; False when the server had it already."""
        response = self._request(
            "PUT",
            f"/api/bundles/{_q(version)}",
            content=archive.read_bytes(),
            timeout=max(self.timeout, 300.0),
        )
        return response.status_code == 201

    @contextmanager
    def download_bundle(self, version: str) -> Iterator[BinaryIO]:
        """A stream of the archive of ``version`` (`ObjectNotFound` when the server lacks it)."""
        import httpx

        client = self._client()
        request = client.build_request("GET", f"/api/bundles/{_q(version)}")
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if last:
                    raise self._unavailable(f"cannot connect ({_reason(exc)})") from exc
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                if last:
                    raise self._unavailable(f"connection lost ({_reason(exc)})") from exc
            else:
                if response.status_code not in _RETRY_STATUS or last:
                    break
                response.read()
                response.close()
            time.sleep(0.1 * 2**attempt)
        try:
            if response.status_code >= 400:
                response.read()
                raise _error(response, method="GET", path=request.url.path, target=self.target)
            yield io.BufferedReader(_ResponseStream(response, self), 1 << 20)
        finally:
            response.close()

    # transport
    def _client(self) -> httpx.Client:
        if self._http is None:
            with self._lock:
                if self._http is None:
                    self._http = self._build()
        return self._http

    def _build(self) -> httpx.Client:
        import httpx

        headers = {"X-API-Key": reveal(self.api_key)} if self.api_key else {}
        return httpx.Client(
            base_url=self.base_url,
            transport=self.transport or plain_http_transport(self.base_url),
            headers=headers,
            timeout=httpx.Timeout(self.timeout, connect=5.0),
        )

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        json: Any = None,
        content: bytes | None = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
        idempotent: bool = False,
    ) -> httpx.Response:
        import httpx

        client = self._client()
        headers = None
        if body is not None:
            content = body.model_dump_json().encode()
            headers = {"Content-Type": "application/json"}
        retry_reads = idempotent or method in _IDEMPOTENT
        delay = 0.1
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = client.request(
                    method,
                    path,
                    content=content,
                    json=json,
                    params=params,
                    headers=headers,
                    timeout=httpx.USE_CLIENT_DEFAULT
                    if timeout is None
                    else httpx.Timeout(timeout, connect=5.0),
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if last:
                    raise self._unavailable(f"cannot connect ({_reason(exc)})") from exc
            except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                if last or not retry_reads:
                    raise self._unavailable(f"connection lost ({_reason(exc)})") from exc
            except httpx.TimeoutException as exc:
                raise self._unavailable("no answer in time") from exc
            else:
                if response.status_code in _RETRY_STATUS and not last:
                    logger.debug("api retry status=%d path=%s", response.status_code, path)
                elif response.status_code >= 400:
                    raise _error(response, method=method, path=path, target=self.target)
                else:
                    return response
            logger.debug("api retry attempt=%d delay=%.2f path=%s", attempt + 1, delay, path)
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def _unavailable(self, reason: str) -> ServerUnavailable:
        return ServerUnavailable(
            f"Conveyor server at {self.target} is unreachable: {reason}", status_code=None
        )


class _ResponseStream(io.RawIOBase):
    """A streamed response body as a readable binary file (for the unpacker)."""

    def __init__(self, response: httpx.Response, client: ConveyorClient) -> None:
        self._chunks = response.iter_bytes(1 << 20)
        self._client = client
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        import httpx

        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
            except httpx.HTTPError as exc:
                raise self._client._unavailable(f"download cut ({_reason(exc)})") from exc
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


class ServerBundles:
    """The Conveyor server's bundle store, as the bundle store's backend (``/api/bundles``)."""

    def __init__(self, client: ConveyorClient) -> None:
        self.client = client

    def describe(self) -> str:
        return f"the bundle store of {self.client.target}"

    def exists(self, name: str) -> bool:
        return self.client.bundle_exists(_version_of(name))

    def open(self, name: str) -> AbstractContextManager[BinaryIO]:
        return self.client.download_bundle(_version_of(name))

    def put(self, name: str, path: Path) -> bool:
        return self.client.upload_bundle(_version_of(name), path)


def _version_of(name: str) -> str:
    return name.removesuffix(".tar.zst")


def _q(segment: str) -> str:
    return quote(segment, safe="")


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text and text[-1] else type(exc).__name__


def _error(response: httpx.Response, *, method: str, path: str, target: str) -> ApiError:
    """The error for an answer >= 400 (502/503/504: `ServerUnavailable`, worth retrying)."""
    status = response.status_code
    detail: str | None = None
    hint: str | None = None
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        raw = data.get("detail")
        detail = raw if isinstance(raw, str) else None
        hint = data.get("hint") if isinstance(data.get("hint"), str) else None
    if status == 401:
        return Unauthorized(detail or "the server requires an API key", status_code=status)
    if status == 404:
        if not detail or detail == "Not Found":
            detail = f"{method} {path}: not found on the server"
            root = target.rstrip("/")
            if path.startswith("/api/") and root.endswith("/api"):
                hint = f"CONVEYOR_API_URL is the server's root, without /api: {root[:-4]}"
        return ObjectNotFound(detail, status_code=status, hint=hint)
    message = detail or f"{method} {path} failed with HTTP {status}"
    if status in _RETRY_STATUS:
        return ServerUnavailable(
            f"Conveyor server at {target} is unavailable (HTTP {status}): {message}",
            status_code=status,
            hint=hint,
        )
    if status in _INVALID:
        return InvalidRequest(message, status_code=status, hint=hint)
    return ApiError(f"server error (HTTP {status}): {message}", status_code=status, hint=hint)

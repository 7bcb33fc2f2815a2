"""A registry client over httpx: the OCI distribution API, with basic and bearer-token auth.

Auth is negotiated as Docker does: a request is sent (with the token already held for its
scope, if any); a ``401`` carries ``WWW-Authenticate``:

- ``Basic realm=...``: the login is sent as HTTP basic auth and the request retried;
- ``Bearer realm=URL,service=S,scope=X``: a token is fetched from ``URL?service=S&scope=X``
  (with the login as basic auth when there is one, anonymously otherwise), kept for the scope,
  and the request retried with ``Authorization: Bearer``. A login is never sent to a token
  server over plain HTTP unless that server is on this machine.

Every pull is verified: a manifest's bytes must hash to the digest asked for (or, fetched by tag,
to the registry's ``Docker-Content-Digest``), a blob's stream is hashed as it is read and
`IntegrityError` is raised at its end when it is not the digest asked for. Pushes check first
(``HEAD``) and upload only missing blobs, monolithically or in chunks (``PATCH`` with
``Content-Range`` then ``PUT ?digest=``), or mount them from another repository of the same
registry. Connection failures, ``429`` and ``5xx`` answers are retried with backoff; then they
are `SourceUnavailable`. Registry errors map to `SourceNotFound` (``NAME_UNKNOWN``),
`VersionNotFound` (``MANIFEST_UNKNOWN``, ``BLOB_UNKNOWN``) and `AuthenticationError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlencode, urljoin, urlsplit

import httpx

from conveyor.errors import (
    AuthenticationError,
    IntegrityError,
    SourceError,
    SourceNotFound,
    SourceUnavailable,
    VersionNotFound,
)
from conveyor.sources.oci._auth import RegistryAuth
from conveyor.sources.oci._reference import digest_of
from conveyor.sources.oci._retry import retry_call
from conveyor.sources.oci._stream import VerifiedStream
from conveyor.sources.oci.credentials import Login

__all__ = [
    "MANIFEST_TYPES",
    "Fetched",
    "RegistryClient",
    "VerifiedStream",
]  # VerifiedStream: re-exported

logger = logging.getLogger(__name__)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
CHUNK = 1 << 20
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Fetched:
    """A manifest's exact bytes, its media type and its (verified) digest."""

    data: bytes
    media_type: str
    digest: str


class _Retryable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)


class RegistryClient:
    """One registry (``base_url``, e.g. ``http://127.0.0.1:5000``) for one login (or none)."""

    def __init__(
        self,
        base_url: str,
        *,
        login: Login | None = None,
        timeout: float = 60.0,
        attempts: int = 4,
        chunk_size: int | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.login = login
        self.attempts = attempts
        self.chunk_size = chunk_size
        """Upload blobs larger than this in chunks of this size (None: monolithic)."""
        self.bytes_uploaded = 0
        self.blobs_uploaded = 0
        self._http = httpx.Client(timeout=timeout, follow_redirects=True)
        self._auth = RegistryAuth(login, where=self.describe(), http=self._http, attempts=attempts)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        return urlsplit(self.base_url).netloc

    # -- the requests ----------------------------------------------------------------------

    def _send(
        self,
        method: str,
        url: str,
        *,
        scope: str,
        headers: dict[str, str] | None = None,
        content: Callable[[], Any] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """One request, authenticated (negotiating once on a 401), retried when transient."""
        target = url if "://" in url else self.base_url + url

        def attempt() -> httpx.Response:
            response = self._once(method, target, scope, headers, content, stream)
            if response.status_code == 401:
                _drain(response)
                self._auth.negotiate(response, scope)
                response = self._once(method, target, scope, headers, content, stream)
                if response.status_code == 401 and self.login is not None:
                    _drain(response)
                    raise self._auth.rejected()
            if response.status_code in _RETRY_STATUS:
                _drain(response)
                raise _Retryable(
                    f"{method} {urlsplit(target).path} answered {response.status_code}"
                )
            return response

        try:
            return retry_call(
                attempt,
                retry_on=lambda e: isinstance(e, _Retryable | httpx.TransportError),
                attempts=self.attempts,
                what=f"registry {method}",
            )
        except _Retryable as exc:
            raise SourceUnavailable(str(exc), source=self.describe()) from None
        except httpx.TransportError as exc:
            raise SourceUnavailable(
                f"registry {self.describe()} cannot be reached: {type(exc).__name__}",
                source=self.describe(),
            ) from None

    def _once(
        self,
        method: str,
        url: str,
        scope: str,
        headers: dict[str, str] | None,
        content: Callable[[], Any] | None,
        stream: bool,
    ) -> httpx.Response:
        request = self._http.build_request(
            method,
            url,
            headers={**(headers or {}), **self._auth.headers(scope)},
            content=content() if content is not None else None,
        )
        return self._http.send(request, stream=stream)

    def _error(self, response: httpx.Response, what: str) -> SourceError:
        code = ""
        try:
            errors = response.json().get("errors") or []
            code = str(errors[0].get("code", "")) if errors else ""
        except (ValueError, AttributeError, IndexError):
            pass
        status = response.status_code
        where = self.describe()
        if status in (401, 403) or code in ("UNAUTHORIZED", "DENIED"):
            return AuthenticationError(f"registry {where} denied access to {what}", source=where)
        if code == "NAME_UNKNOWN":
            return SourceNotFound(f"repository of {what} does not exist on {where}", source=where)
        if status == 404 or code in ("MANIFEST_UNKNOWN", "BLOB_UNKNOWN"):
            pinned = "@sha256:" in what or what.startswith("blob ")
            return VersionNotFound(
                f"{what} is not on registry {where}",
                source=where,
                hint="the image a deployment pinned was deleted from the registry (or cleaned "
                "up): deploy again to push it or to pin the tag's current image"
                if pinned
                else "check the repository and tag (conveyor pushes an image when you deploy "
                "with --image)",
            )
        return SourceError(
            f"registry {where} refused {what}: {status} {code}".rstrip(), source=where
        )

    # -- manifests -------------------------------------------------------------------------

    def get_manifest(self, repository: str, reference: str) -> Fetched:
        """The manifest ``reference`` (a tag or a digest) of ``repository``, verified."""
        what = f"{repository}:{reference}" if ":" not in reference else f"{repository}@{reference}"
        response = self._send(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            scope=f"repository:{repository}:pull",
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
        )
        if response.status_code != 200:
            raise self._error(response, what)
        data = response.content
        if len(data) > MAX_MANIFEST_BYTES:
            raise IntegrityError(f"manifest {what} is larger than {MAX_MANIFEST_BYTES} bytes")
        digest = digest_of(data)
        expected = reference if reference.startswith("sha256:") else None
        claimed = response.headers.get("Docker-Content-Digest")
        if expected is not None and digest != expected:
            raise IntegrityError(
                f"manifest {what} does not match its digest (got {digest[:19]}…)",
                hint="the registry returned a different manifest; it may have been tampered with",
            )
        if expected is None and claimed and claimed.startswith("sha256:") and claimed != digest:
            raise IntegrityError(
                f"manifest {what}: the registry says {claimed[:19]}… but its bytes are "
                f"{digest[:19]}…",
                hint="the registry returned a different manifest; it may have been tampered with",
            )
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return Fetched(data, media_type, digest)

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest the registry has under ``reference`` (HEAD), or None when it has none."""
        response = self._send(
            "HEAD",
            f"/v2/{repository}/manifests/{reference}",
            scope=f"repository:{repository}:pull",
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._error(response, f"{repository}:{reference}")
        claimed = response.headers.get("Docker-Content-Digest")
        return str(claimed) if claimed else None

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        """Store manifest ``data`` as ``reference``; its digest (checked against the answer)."""
        response = self._send(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            scope=f"repository:{repository}:pull,push",
            headers={"Content-Type": media_type},
            content=lambda: data,
        )
        if response.status_code not in (200, 201):
            raise self._error(response, f"manifest {repository}:{reference}")
        digest = digest_of(data)
        claimed = response.headers.get("Docker-Content-Digest")
        if claimed and claimed != digest:
            raise IntegrityError(f"registry stored manifest {claimed[:19]}…, not {digest[:19]}…")
        self.bytes_uploaded += len(data)
        return digest

    # -- blobs -----------------------------------------------------------------------------

    def blob_exists(self, repository: str, digest: str) -> bool:
        response = self._send(
            "HEAD", f"/v2/{repository}/blobs/{digest}", scope=f"repository:{repository}:pull"
        )
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise self._error(response, f"blob {digest[:19]}")

    @contextmanager
    def open_blob(
        self, repository: str, digest: str, size: int | None = None
    ) -> Iterator[IO[bytes]]:
        """The blob's bytes as a verified stream (see `VerifiedStream`)."""
        response = self._send(
            "GET",
            f"/v2/{repository}/blobs/{digest}",
            scope=f"repository:{repository}:pull",
            stream=True,
        )
        try:
            if response.status_code != 200:
                response.read()
                raise self._error(response, f"blob {digest[:19]} of {repository}")
            stream = VerifiedStream(
                response.iter_bytes(CHUNK), digest, size, f"{repository}@{digest[:19]}"
            )
            yield stream  # type: ignore[misc]
        finally:
            response.close()

    def mount_blob(self, repository: str, digest: str, source_repository: str) -> bool:
        """Mount ``digest`` from another repository of this registry; True when it worked."""
        query = urlencode({"mount": digest, "from": source_repository})
        response = self._send(
            "POST",
            f"/v2/{repository}/blobs/uploads/?{query}",
            scope=f"repository:{repository}:pull,push",
        )
        if response.status_code == 201:
            return True
        if response.status_code == 202:  # not mountable: an upload session we do not need
            location = response.headers.get("Location")
            if location:
                self._send("DELETE", self._url(location), scope=f"repository:{repository}:push")
            return False
        raise self._error(response, f"mount of blob {digest[:19]}")

    def push_blob(
        self, repository: str, digest: str, size: int, opener: Callable[[], IO[bytes]]
    ) -> None:
        """Upload a blob (``opener`` gives a fresh stream of its ``size`` bytes each attempt)."""
        scope = f"repository:{repository}:pull,push"

        def upload() -> None:
            with opener() as stream:
                if self.chunk_size and size > self.chunk_size:
                    self._chunked(repository, digest, stream, scope)
                else:
                    self._monolithic(repository, digest, stream.read(), scope)

        retry_call(
            upload,
            retry_on=lambda e: isinstance(e, SourceUnavailable),
            attempts=2,
            what="blob upload",
        )
        self.bytes_uploaded += size
        self.blobs_uploaded += 1

    def _start(self, repository: str, scope: str) -> str:
        response = self._send("POST", f"/v2/{repository}/blobs/uploads/", scope=scope)
        location = response.headers.get("Location")
        if response.status_code != 202 or not location:
            raise self._error(response, f"upload to {repository}")
        return self._url(location)

    def _monolithic(self, repository: str, digest: str, data: bytes, scope: str) -> None:
        location = self._start(repository, scope)
        response = self._send(
            "PUT",
            _with_query(location, digest=digest),
            scope=scope,
            headers={"Content-Type": "application/octet-stream"},
            content=lambda: data,
        )
        if response.status_code != 201:
            raise self._error(response, f"blob {digest[:19]}")

    def _chunked(self, repository: str, digest: str, stream: IO[bytes], scope: str) -> None:
        location = self._start(repository, scope)
        assert self.chunk_size is not None
        offset = 0
        while chunk := stream.read(self.chunk_size):
            end = offset + len(chunk) - 1
            response = self._send(
                "PATCH",
                location,
                scope=scope,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{end}",
                    "Content-Length": str(len(chunk)),
                },
                content=lambda data=chunk: data,  # type: ignore[misc]
            )
            if response.status_code != 202 or not response.headers.get("Location"):
                raise self._error(response, f"chunk of blob {digest[:19]}")
            location = self._url(response.headers["Location"])
            offset = end + 1
        response = self._send("PUT", _with_query(location, digest=digest), scope=scope)
        if response.status_code != 201:
            raise self._error(response, f"blob {digest[:19]}")

    def _url(self, location: str) -> str:
        return urljoin(self.base_url + "/", location)


def _with_query(url: str, **params: str) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params)


def _drain(response: httpx.Response) -> None:
    try:
        response.read()
    finally:
        response.close()

"""Registry authentication as Docker negotiates it (see `conveyor.sources.oci._client`): basic
auth after a ``Basic`` challenge, or a bearer token fetched from the ``Bearer`` challenge's realm,
kept per scope. A login is never sent to a plain-HTTP token server off this machine."""

from __future__ import annotations

import base64
import re
from urllib.parse import urlencode, urlsplit

import httpx

from conveyor.errors import AuthenticationError, SourceUnavailable
from conveyor.secrets import reveal
from conveyor.sources.oci._reference import is_loopback
from conveyor.sources.oci._retry import retry_call
from conveyor.sources.oci.credentials import Login

__all__ = ["RegistryAuth"]

_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryAuth:
    """The login of one client, the tokens it got, and whether basic auth was asked for."""

    def __init__(
        self, login: Login | None, *, where: str, http: httpx.Client, attempts: int
    ) -> None:
        self.login = login
        self.where = where
        self.http = http
        self.attempts = attempts
        self.tokens: dict[str, str] = {}
        self.basic = False

    def headers(self, scope: str) -> dict[str, str]:
        token = self.tokens.get(scope)
        if token is not None:
            return {"Authorization": f"Bearer {token}"}
        if self.basic and self.login is not None:
            pair = f"{self.login.username}:{reveal(self.login.password)}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        return {}

    def negotiate(self, response: httpx.Response, scope: str) -> None:
        challenge = response.headers.get("WWW-Authenticate", "")
        kind = challenge.split(" ", 1)[0].lower()
        params = dict(_PARAM.findall(challenge))
        if kind == "basic":
            if self.login is None:
                raise AuthenticationError(
                    f"registry {self.where} requires a login",
                    source=self.where,
                    hint="save credentials with `conveyor credentials create docker NAME "
                    "--username U --registry HOST` and name them (credentials=NAME)",
                )
            if self.basic:
                raise self.rejected()
            self.basic = True
            return
        if kind != "bearer" or "realm" not in params:
            raise AuthenticationError(
                f"registry {self.where} asks for an unsupported authentication {kind or 'scheme'}",
                source=self.where,
            )
        if scope in self.tokens:  # the token we had was refused
            del self.tokens[scope]
        self.tokens[scope] = self._token(params)

    def _token(self, params: dict[str, str]) -> str:
        realm = params["realm"]
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https"):
            raise AuthenticationError(f"token realm {realm[:80]!r} is not an http(s) URL")
        login = self.login
        if login is not None and parts.scheme == "http" and not is_loopback(parts.netloc):
            raise AuthenticationError(
                f"registry {self.where} sends logins to a token server over plain HTTP",
                source=self.where,
                hint="the token server must use HTTPS",
            )
        query: list[tuple[str, str]] = []
        if "service" in params:
            query.append(("service", params["service"]))
        for one in params.get("scope", "").split():
            query.append(("scope", one))
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        auth = httpx.BasicAuth(login.username, reveal(login.password)) if login else None
        try:
            answer = retry_call(
                lambda: self.http.get(url, auth=auth),
                retry_on=lambda e: isinstance(e, httpx.TransportError),
                attempts=self.attempts,
                what="token request",
            )
        except httpx.TransportError as exc:
            raise SourceUnavailable(
                f"token server {parts.netloc} cannot be reached: {type(exc).__name__}",
                source=self.where,
            ) from None
        if answer.status_code in (401, 403):
            raise self.rejected()
        if answer.status_code != 200:
            raise AuthenticationError(
                f"token server {parts.netloc} answered {answer.status_code}", source=self.where
            )
        try:
            body = answer.json()
        except ValueError:
            body = None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise AuthenticationError(f"token server {parts.netloc} returned no token")
        return token

    def rejected(self) -> AuthenticationError:
        who = f" ({self.login.source})" if self.login else ""
        return AuthenticationError(
            f"registry {self.where} rejected the login{who}", source=self.where
        )

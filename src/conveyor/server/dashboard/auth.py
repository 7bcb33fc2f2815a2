"""Dashboard sign-in and CSRF protection: signed cookies, no server-side state.

- **Session** (only when the server has ``CONVEYOR_API_KEY``): the login form exchanges the key
  for the cookie ``conveyor_session = <expiry>.<nonce>.<mac>``, HttpOnly, SameSite=Lax (a link
  from elsewhere still opens the page; every change needs a CSRF token anyway), Secure over
  HTTPS. ``mac`` is HMAC-SHA256 over the expiry and nonce with a key derived from the API key, so
  any server process with the same key accepts it, and changing the key signs everyone out.
- **CSRF**: every visitor gets ``conveyor_csrf = <nonce>`` (HttpOnly, SameSite=Strict); every
  form carries ``csrf_token = HMAC(key, nonce)``, checked on every POST. A page on another site
  can neither read the cookie nor compute the token. Without an API key the signing key is random
  per process: a form left open across a restart asks to be reloaded.

Nothing here is logged or rendered that could reveal the key: the login form never echoes it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from conveyor.secrets import Secret

__all__ = ["CSRF_COOKIE", "CSRF_FIELD", "SESSION_COOKIE", "SESSION_SECONDS", "Guard"]

SESSION_COOKIE = "conveyor_session"
CSRF_COOKIE = "conveyor_csrf"
CSRF_FIELD = "csrf_token"
SESSION_SECONDS = 12 * 3600
"""How long a sign-in lasts."""
_NONCE_BYTES = 18


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Guard:
    """Checks keys, signs and verifies session cookies, makes and checks CSRF tokens."""

    signing_key: bytes
    api_key: bytes | None
    """The server's API key; None: no sign-in (the embedded, local dashboard)."""

    @classmethod
    def create(cls, api_key: Secret | None) -> Guard:
        if api_key is None:
            return cls(signing_key=secrets.token_bytes(32), api_key=None)
        raw = api_key.reveal().encode()
        key = hmac.new(raw, b"conveyor dashboard signing key v1", hashlib.sha256).digest()
        return cls(signing_key=key, api_key=raw)

    @property
    def login_required(self) -> bool:
        return self.api_key is not None

    def _mac(self, *parts: str) -> str:
        message = "|".join(parts).encode()
        return _b64(hmac.new(self.signing_key, message, hashlib.sha256).digest())

    # --- the API key and the session ----------------------------------------------------------

    def key_matches(self, offered: str) -> bool:
        """Whether ``offered`` is the server's API key (constant time)."""
        if self.api_key is None:
            return True
        return hmac.compare_digest(offered.encode(), self.api_key)

    def new_session(self, *, now: float | None = None) -> str:
        expires = int((now if now is not None else time.time()) + SESSION_SECONDS)
        nonce = _b64(secrets.token_bytes(_NONCE_BYTES))
        return f"{expires}.{nonce}.{self._mac('session', str(expires), nonce)}"

    def signed_in(self, request: Request) -> bool:
        """True when no sign-in is needed, or the request carries a valid, unexpired session."""
        if self.api_key is None:
            return True
        cookie = request.cookies.get(SESSION_COOKIE, "")
        parts = cookie.split(".")
        if len(parts) != 3 or not parts[0].isdigit():
            return False
        expires, nonce, mac = parts
        if int(expires) < time.time():
            return False
        return hmac.compare_digest(mac, self._mac("session", expires, nonce))

    def set_session(self, response: Response, request: Request) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            self.new_session(),
            max_age=SESSION_SECONDS,
            path="/",
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )

    @staticmethod
    def clear_session(response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")

    # --- CSRF ------------------------------------------------------------------------------------

    @staticmethod
    def csrf_nonce(request: Request) -> tuple[str, bool]:
        """The visitor's CSRF nonce, and whether it is new (then it must be set as a cookie)."""
        nonce = request.cookies.get(CSRF_COOKIE, "")
        if 16 <= len(nonce) <= 64 and all(c.isalnum() or c in "-_" for c in nonce):
            return nonce, False
        return _b64(secrets.token_bytes(_NONCE_BYTES)), True

    def csrf_token(self, nonce: str) -> str:
        return self._mac("csrf", nonce)

    def csrf_ok(self, request: Request, token: object) -> bool:
        """Whether a POST's ``csrf_token`` belongs to the visitor's CSRF cookie."""
        nonce = request.cookies.get(CSRF_COOKIE, "")
        if not nonce or not isinstance(token, str) or not token:
            return False
        return hmac.compare_digest(token, self.csrf_token(nonce))

    @staticmethod
    def set_csrf(response: Response, request: Request, nonce: str) -> None:
        response.set_cookie(
            CSRF_COOKIE,
            nonce,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

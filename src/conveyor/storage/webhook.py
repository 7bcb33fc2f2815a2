"""`Webhook`: flows stored and fetched with HTTP requests (Dropbox, an in-house file service).

```python
Webhook(
    build_request_kwargs={"url": "https://content.dropboxapi.com/2/files/upload",
                          "headers": {"Authorization": "Bearer ${DBOX_OAUTH2_TOKEN}", ...}},
    build_request_http_method="POST",
    get_flow_request_kwargs={"url": "https://content.dropboxapi.com/2/files/download", ...},
    get_flow_request_http_method="POST",
)
```

`build` sends the flow (a signed pickle, or ``flow_script_path``'s text in script mode) as the
body of the build request and keeps the response (``storage._build_responses[flow_name]``, to
read an id the service returned); the deployment's source is the get request
(`conveyor.sources.flowfile.FlowFileSource` with a ``webhook`` location), pinned to the digest of
what was sent. ``${NAME}`` templates are resolved when a request is sent — on this machine at
build, on the worker at run — from the environment first, then the server's secret store: their
values are never stored and never sent to the server (`conveyor.sources.webhook`). Requests are
retried on connection failures, 429 and 5xx.

One flow per storage: adding a flow replaces the one there (no name conflict).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConfigError
from conveyor.sources.webhook import WebhookRequest
from conveyor.storage._session import Session
from conveyor.storage.base import PICKLE_FILE, FileStorage

if TYPE_CHECKING:
    import httpx

    from conveyor.flows import Flow
    from conveyor.sources.flowfile import FlowFileSource

__all__ = ["Webhook"]


class Webhook(FileStorage):
    """Flows stored by one HTTP request and fetched by another (see the module docstring)."""

    def __init__(
        self,
        build_request_kwargs: Mapping[str, Any],
        build_request_http_method: str,
        get_flow_request_kwargs: Mapping[str, Any],
        get_flow_request_http_method: str,
        stored_as_script: bool = False,
        flow_script_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(stored_as_script=stored_as_script, **kwargs)
        self.build_request = WebhookRequest(
            build_request_http_method, _braced(build_request_kwargs)
        )
        self.get_flow_request = WebhookRequest(
            get_flow_request_http_method, _braced(get_flow_request_kwargs)
        )
        _refuse_literal_secrets(self.get_flow_request.kwargs)
        self.flow_script_path = (
            None if flow_script_path is None else os.path.abspath(flow_script_path)
        )
        self._build_responses: dict[str, httpx.Response] = {}

    @property
    def build_request_kwargs(self) -> dict[str, Any]:
        return dict(self.build_request.kwargs)

    @property
    def build_request_http_method(self) -> str:
        return self.build_request.method

    @property
    def get_flow_request_kwargs(self) -> dict[str, Any]:
        return dict(self.get_flow_request.kwargs)

    @property
    def get_flow_request_http_method(self) -> str:
        return self.get_flow_request.method

    def add_flow(self, flow: Flow[..., Any]) -> str:
        """Make ``flow`` this storage's one flow (replacing any other)."""
        self.flows = {flow.name: flow.name}
        self._flows = {flow.name: flow}
        return flow.name

    def _location(self, flow: Flow[..., Any]) -> str:
        return flow.name

    def script_path(self, flow_name: str) -> str | None:
        return self.flow_script_path

    def _build(self, current: Session) -> None:
        if self.stored_as_script and (
            self.flow_script_path is None or not os.path.isfile(self.flow_script_path)
        ):
            raise ConfigError(
                "Webhook storage in script mode needs flow_script_path, the flow's .py file",
                hint="Webhook(..., stored_as_script=True, flow_script_path='flows.py')",
            )
        for flow_name in list(self.flows):
            filename, data = self._payload(flow_name, current)
            response = self.build_request.send(current.ctx, content=data)
            self._build_responses[flow_name] = response
            self._stored(flow_name, filename, data)

    def flow_file(self, flow_name: str, location: str) -> FlowFileSource:
        from conveyor.sources.flowfile import FlowFileSource

        where = {"webhook": self.get_flow_request.to_spec()}
        if self.stored_as_script:
            if self.flow_script_path is None:
                raise ConfigError("Webhook storage in script mode needs flow_script_path")
            return FlowFileSource(where, filename=os.path.basename(self.flow_script_path))
        return FlowFileSource(where, filename=PICKLE_FILE, signed=True)


_SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
        "api-key",
        "apikey",
        "x-auth-token",
        "x-access-token",
        "private-token",
        "x-vault-token",
    }
)
_AUTH_SCHEMES = frozenset({"bearer", "basic", "token", "bot", "digest", "apikey"})


def _literal(text: Any) -> str:
    """What ``text`` holds besides its ``${NAME}`` / ``{{ $NAME }}`` templates."""
    from conveyor.secrets import template_refs

    if not isinstance(text, str):
        return "" if text is None or isinstance(text, bool) else str(text)
    rest: str = text
    for ref in template_refs(text):
        if ref.kind in ("secret", "env"):
            rest = rest.replace(ref.text, "")
    return rest


def _refuse_literal_secrets(kwargs: Mapping[str, Any]) -> None:
    """Refuse a literal secret in the get request's kwargs, which are stored with the
    deployment: an auth header's value, ``auth``'s password, cookies, and a URL's (or
    ``params``') password or credential query parameter must be ``${NAME}`` templates."""
    from urllib.parse import urlencode, urlsplit

    from conveyor.secrets import redact_url

    found: str | None = None
    example = "${NAME}"
    headers = kwargs.get("headers")
    for name, value in headers.items() if isinstance(headers, Mapping) else ():
        words = _literal(value).split()
        if str(name).lower() in _SECRET_HEADERS and [
            w for w in words if w.lower() not in _AUTH_SCHEMES
        ]:
            found, example = f"headers[{name!r}]", "'Bearer ${NAME}'"
            break
    auth = kwargs.get("auth")
    if found is None and isinstance(auth, list | tuple) and len(auth) == 2 and _literal(auth[1]):
        found = "auth (the password)"
    cookies = kwargs.get("cookies")
    if (
        found is None
        and isinstance(cookies, Mapping)
        and any(_literal(v) for v in cookies.values())
    ):
        found = "cookies"
    url = urlsplit(_literal(kwargs.get("url") or ""))
    if found is None and (url.username or url.password):
        found = "url (a user name or password)"
    params = kwargs.get("params")
    query = url.query
    if isinstance(params, Mapping):
        query += "&" + urlencode({str(k): _literal(v) for k, v in params.items()})
    if found is None and redact_url(f"http://h/?{query}") != f"http://h/?{query}":
        found = "a credential query parameter (url or params)"
    if found is not None:
        raise ConfigError(
            f"get_flow_request_kwargs {found} holds a literal secret: it would be stored with "
            f"the deployment; write it as a template such as {example}",
            hint="store the value with `conveyor secret set NAME` (or set NAME in the worker's "
            "environment); templates are resolved when the request is sent",
        )


_BARE = re.compile(r"(?<!\$)\$([A-Za-z_][A-Za-z0-9_]*)")


def _braced(kwargs: Any) -> Any:
    """``kwargs`` with Prefect 1's ``$NAME`` templates written ``${NAME}``: its Webhook
    substituted both spellings (``string.Template``) in every string value of the dicts, so
    ``"Bearer $DBOX_OAUTH2_TOKEN"`` was resolved, not sent as written."""
    if isinstance(kwargs, Mapping):
        return {key: _braced(value) for key, value in kwargs.items()}
    if isinstance(kwargs, str):
        return _BARE.sub(r"${\1}", kwargs)
    return kwargs

"""What the secrets page can create: a plain secret, or git credentials of one of the types of
`conveyor.credentials`, each with its form fields. Secret fields are password boxes or text areas
that are never filled in again, whatever happens to the form.

`build_value` turns a submitted form into the stored secret: the plain value, or the credentials'
JSON under ``credentials.<name>`` (exactly what `GitCredentials.save` stores, so workers load
them by name). `kind_of` says what a stored secret is, from its name and (for credentials) the
``type`` in its JSON, never showing the value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from conveyor.errors import ConfigError, InvalidRequest

__all__ = ["KINDS", "Kind", "SecretField", "build_value", "kind_of"]


@dataclass(frozen=True)
class SecretField:
    name: str
    label: str
    secret: bool = False
    multiline: bool = False
    checkbox: bool = False
    required: bool = False


@dataclass(frozen=True)
class Kind:
    key: str
    label: str
    fields: tuple[SecretField, ...]


_TOKEN = SecretField("token", "Token", secret=True, required=True)
KINDS: dict[str, Kind] = {
    k.key: k
    for k in (
        Kind(
            "secret", "Plain secret", (SecretField("value", "Value", secret=True, required=True),)
        ),
        Kind("github", "GitHub token", (_TOKEN,)),
        Kind(
            "gitlab",
            "GitLab token",
            (_TOKEN, SecretField("username", "Deploy-token user"), SecretField("url", "Host URL")),
        ),
        Kind(
            "bitbucket",
            "Bitbucket",
            (
                SecretField("token", "Access token", secret=True),
                SecretField("username", "User"),
                SecretField("password", "App password", secret=True),
                SecretField("url", "Host URL"),
                SecretField("server", "Bitbucket Server / Data Center", checkbox=True),
            ),
        ),
        Kind(
            "codecommit",
            "AWS CodeCommit",
            (
                SecretField("aws_access_key_id", "Access key id", required=True),
                SecretField(
                    "aws_secret_access_key", "Secret access key", secret=True, required=True
                ),
                SecretField("aws_session_token", "Session token", secret=True),
                SecretField("region", "Region"),
            ),
        ),
        Kind(
            "ssh",
            "SSH private key",
            (
                SecretField(
                    "private_key", "Private key", secret=True, multiline=True, required=True
                ),
                SecretField("known_hosts", "known_hosts lines", multiline=True),
                SecretField("accept_new_host_keys", "Accept new host keys", checkbox=True),
            ),
        ),
        Kind(
            "docker",
            "Container registry",
            (
                SecretField("username", "User", required=True),
                SecretField("password", "Password or token", secret=True, required=True),
                SecretField("registry_url", "Registry (e.g. ghcr.io)", required=True),
            ),
        ),
    )
}


def build_value(kind_key: str, name: str, form: Mapping[str, str]) -> tuple[str, str]:
    """(secret name, value to store) for a submitted form; `InvalidRequest` naming the problem."""
    kind = KINDS.get(kind_key)
    if kind is None:
        raise InvalidRequest(f"unknown kind {kind_key!r}", status_code=422)
    values: dict[str, object] = {}
    for f in kind.fields:
        key = f"{kind.key}.{f.name}"
        if f.checkbox:
            values[f.name] = key in form
            continue
        text = form.get(key, "")
        text = text if f.multiline else text.strip()
        if not text.strip():
            if f.required:
                raise InvalidRequest(
                    f"{f.label.lower()} is required for {kind.label}", status_code=422
                )
            continue
        values[f.name] = text
    if kind.key == "secret":
        return name, str(values["value"])
    from conveyor.credentials import CREDENTIAL_TYPES, credentials_secret_name

    try:
        secret_name = credentials_secret_name(name)
        made = CREDENTIAL_TYPES.get(kind.key)(**values)
    except ConfigError as exc:
        raise InvalidRequest(exc.message, status_code=422, hint=exc.hint) from None
    except TypeError as exc:
        raise InvalidRequest(f"{kind.label}: {exc}", status_code=422) from None
    return secret_name, json.dumps(made.to_data(), sort_keys=True)


def kind_of(name: str, value: str | None) -> str:
    """``secret``, or ``<type> credentials`` for a stored ``credentials.<name>``."""
    from conveyor.credentials import CREDENTIALS_PREFIX

    if not name.startswith(CREDENTIALS_PREFIX):
        return "secret"
    try:
        data = json.loads(value or "")
    except ValueError:
        return "credentials (unreadable)"
    kind = data.get("type") if isinstance(data, dict) else None
    return f"{kind} credentials" if isinstance(kind, str) else "credentials (unreadable)"

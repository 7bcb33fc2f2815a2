"""Storage settings are stored with the deployment: a literal secret in any shape (a
service-account key as a dict, a URL with a password) is refused in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conveyor.errors import ConfigError
from conveyor.sources.base import FetchContext
from conveyor.sources.blob import BlobStorage

PRIVATE_KEY = (
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"
)


@pytest.mark.parametrize(
    "settings",
    [
        {"token": {"type": "service_account", "private_key": PRIVATE_KEY, "client_email": "x@y"}},
        {"credentials": {"private_key": PRIVATE_KEY}},
        {"token": ["not", "a", "template"]},
        {"client_kwargs": {"private_key": PRIVATE_KEY}},
        {"client_kwargs": {"endpoint_url": "http://minio:s3cr3t-value@127.0.0.1:9000"}},
        {"endpoint_url": "https://s3cr3t-value@storage.example"},
        {"endpoint_url": "https://user:${PASSWORD}extra-s3cr3t-value@storage.example"},
    ],
)
def test_a_literal_secret_in_any_shape_is_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        BlobStorage("gs://bucket/flows", **settings).to_spec()
    shown = f"{caught.value} {caught.value.hint}"
    assert "\n" not in shown
    assert "PRIVATE KEY" not in shown
    assert "s3cr3t" not in shown
    assert "credentials" in shown  # pointed to the credentials mechanism


@pytest.mark.parametrize(
    "settings",
    [
        {"token": "anon"},
        {"token": "${GCS_TOKEN}"},
        {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000", "region_name": "eu-west-1"}},
        {"endpoint_url": "https://${MINIO_USER}:${MINIO_PASSWORD}@storage.example"},
        {"endpoint_url": "https://storage.example/path@v1"},
    ],
)
def test_public_settings_and_templates_pass(settings: dict[str, Any]) -> None:
    spec = BlobStorage("gs://bucket/flows", **settings).to_spec()
    assert {k: spec[k] for k in settings} == settings


# -- Azure without a usable connection string ---------------------------------------------------


def test_azure_without_a_connection_string_says_how_to_give_one() -> None:
    with pytest.raises(ConfigError) as caught:
        BlobStorage("az://aflows/flows").resolve(FetchContext(environ={}))
    assert str(caught.value) == "no Azure connection string to reach az://aflows/flows"
    assert "AZURE_STORAGE_CONNECTION_STRING" in str(caught.value.hint)
    assert "connection_string=" in str(caught.value.hint)


def test_a_malformed_azure_connection_string_is_named_but_not_shown() -> None:
    env = {"AZURE_STORAGE_CONNECTION_STRING": "garbage-s3cr3t-value"}
    with pytest.raises(ConfigError) as caught:
        BlobStorage("az://aflows/flows").resolve(FetchContext(environ=env))
    assert "connection string to reach az://aflows/flows is malformed" in str(caught.value)
    assert "s3cr3t" not in f"{caught.value} {caught.value.hint}"


def test_deploy_from_azure_without_credentials_says_how_to_give_them(tmp_path: Path) -> None:
    from e2e.conftest import command_env, conveyor, one_line_error
    from worker.flows_project import write_project

    project = write_project(tmp_path / "project")
    result = conveyor(
        "deploy", "flows.py:hello", "--name", "x", "--source", "az://aflows/flows",
        env=command_env(AZURE_STORAGE_CONNECTION_STRING=None), cwd=project,
    )  # fmt: skip
    assert one_line_error(result) == "no Azure connection string to reach az://aflows/flows"
    assert "hint: pass connection_string=" in result.stderr

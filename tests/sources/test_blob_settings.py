"""Storage settings are stored with the deployment: a literal secret in any shape (a
service-account key as a dict, a URL with a password) is refused in one line."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.errors import ConfigError
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

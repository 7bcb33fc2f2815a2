"""Code in OCI / Docker images: `ImageSource` (``oci://`` and ``docker://`` URLs), the registry
client (`RegistryClient`: basic and bearer-token auth, verified pulls, HEAD-before-push), image
layouts on disk, the deterministic code layer and `DockerRegistryCredentials`."""

from __future__ import annotations

from conveyor.sources.oci._client import RegistryClient
from conveyor.sources.oci._layout import ImageLayout
from conveyor.sources.oci._reference import ImageRef, parse_reference
from conveyor.sources.oci.credentials import DockerRegistryCredentials, registry_login
from conveyor.sources.oci.source import ImageSource

__all__ = [
    "DockerRegistryCredentials",
    "ImageLayout",
    "ImageRef",
    "ImageSource",
    "RegistryClient",
    "parse_reference",
    "registry_login",
]

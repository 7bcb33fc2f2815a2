"""Docker and OCI images: `DockerImage` (build with or without an engine, push, pin by digest),
`DockerRegistryCredentials`, and the ``build_docker_image`` / ``push_docker_image`` steps
(`conveyor.docker.steps`)."""

from __future__ import annotations

from conveyor.docker.image import BuiltImage, DockerImage, ImageContext
from conveyor.sources.oci.credentials import DockerRegistryCredentials

__all__ = ["BuiltImage", "DockerImage", "DockerRegistryCredentials", "ImageContext"]

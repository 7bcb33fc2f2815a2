"""`Docker`: flows baked into an image's code layer, pushed and pinned by digest.

```python
flow = Flow("etl", storage=Docker(registry_url="registry.example.com", image_name="my_flow"))
flow.storage.build()     # registry.example.com/my_flow:2024-05-01t10-11-12-123456-00-00
```

The first generation's constructor, over the image builder (`conveyor.docker.DockerImage`):
``Docker(registry_url=None, base_image=None, dockerfile=None, dockerignore=None,
python_dependencies=None, image_name=None, image_tag=None, env_vars=None, files=None,
prefect_version=None, local_image=False, ignore_healthchecks=False, base_url=None,
tls_config=False, build_kwargs=None, prefect_directory="/opt/conveyor", path=None,
stored_as_script=False, extra_dockerfile_commands=None, secrets=None, labels=None, ...)``.

- the flow (its signed pickle at ``<prefect_directory>/flows/<flow slug>.pickle``, or in script
  mode the file ``path``, which ``files`` copies in) and ``files`` become the image's code layer
  (`conveyor.storage._dockerbuild`); ``image_name`` defaults to the flow's slug (one flow) or a
  random id, ``image_tag`` to the slugified UTC time;
- `build` uses a Docker engine when one is reachable (``base_url`` or ``DOCKER_HOST``), else
  builds without one — which cannot RUN anything: ``python_dependencies`` and ``RUN`` in
  ``extra_dockerfile_commands`` are then a one-line error with a hint;
- with ``registry_url`` the image is pushed (Docker's login file for credentials) and the
  deployment pinned to its digest; without, it is kept in ``$CONVEYOR_HOME/images`` on this
  machine only, a warning says so, and with a Conveyor server the deployment is labelled with
  this host;
- a worker of any pool fetches only the code layer, by digest, verified; container pools run
  the image itself (the ``image`` job variable is the pinned reference);
- the health check (``ignore_healthchecks=False``) runs here: a script must define its flow, and
  an image whose ``PYTHON_VERSION`` differs from this interpreter's gets a warning (pickles load
  only under the Python that made them).

The default base image is ``$CONVEYOR_DOCKER_BASE_IMAGE`` when set (an organisation's mirror),
else the official Python image of this interpreter. ``prefect_version`` is ignored (the base
image brings Conveyor); ``tls_config`` is not supported (use ``DOCKER_TLS_VERIFY`` and
``DOCKER_CERT_PATH``).
"""

from __future__ import annotations

import logging
import os
import posixpath
import socket
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from conveyor.errors import ConfigError
from conveyor.storage._session import Session, slugify, timestamp_slug
from conveyor.storage.base import Storage

if TYPE_CHECKING:
    from conveyor.client import ConveyorClient
    from conveyor.docker.image import BuiltImage
    from conveyor.flows import Flow
    from conveyor.settings import Settings
    from conveyor.sources.base import Source

__all__ = ["BASE_IMAGE_ENV", "Docker"]

logger = logging.getLogger(__name__)

BASE_IMAGE_ENV = "CONVEYOR_DOCKER_BASE_IMAGE"


def _strings(value: Sequence[str] | None, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"Docker {what} must be a list of strings")
    return list(value)


class Docker(Storage):
    """Flows in a Docker/OCI image (see the module docstring)."""

    def __init__(
        self,
        registry_url: str | None = None,
        base_image: str | None = None,
        dockerfile: str | None = None,
        dockerignore: str | None = None,
        python_dependencies: Sequence[str] | None = None,
        image_name: str | None = None,
        image_tag: str | None = None,
        env_vars: Mapping[str, str] | None = None,
        files: Mapping[str, str] | None = None,
        prefect_version: str | None = None,
        local_image: bool = False,
        ignore_healthchecks: bool = False,
        base_url: str | None = None,
        tls_config: Any = False,
        build_kwargs: Mapping[str, Any] | None = None,
        prefect_directory: str = "/opt/conveyor",
        path: str | None = None,
        stored_as_script: bool = False,
        extra_dockerfile_commands: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(stored_as_script=stored_as_script, **kwargs)
        if base_image is not None and dockerfile is not None:
            raise ConfigError("Only one of `base_image` and `dockerfile` can be provided.")
        if tls_config not in (False, None):
            raise ConfigError(
                "Docker tls_config is not supported",
                hint="set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH for the engine instead",
            )
        if prefect_version is not None:
            logger.info("Docker storage ignores prefect_version: the base image brings Conveyor")
        self.registry_url = registry_url.strip().rstrip("/") if registry_url else None
        self.base_image = base_image
        self.dockerfile = dockerfile
        self.dockerignore = dockerignore
        self.python_dependencies = _strings(python_dependencies, "python_dependencies")
        self.image_name = image_name
        self.image_tag = image_tag
        if env_vars is not None and not all(
            isinstance(k, str) and isinstance(v, str) for k, v in dict(env_vars).items()
        ):
            raise ConfigError("Docker env_vars must map names to strings")
        self.env_vars = dict(env_vars or {})
        self.files = dict(files or {})
        relative = [p for p in self.files if not os.path.isabs(p)]
        if relative:
            raise ConfigError(
                f"Provided paths {relative} are not absolute file paths, please provide "
                "absolute paths only."
            )
        directory = posixpath.normpath(prefect_directory or "/")
        if not posixpath.isabs(directory) or directory == "/":
            raise ConfigError(f"prefect_directory {prefect_directory!r} must be an absolute path")
        self.prefect_directory = directory
        from conveyor.storage._dockerbuild import in_image

        for target in self.files.values():
            in_image(target, directory, what="files destination")
        self.path = path
        if path is not None:
            in_image(path, directory, what="path")
        self.local_image = bool(local_image)
        self.ignore_healthchecks = bool(ignore_healthchecks)
        self.base_url = base_url
        self.build_kwargs = dict(build_kwargs or {})
        self.extra_dockerfile_commands = _strings(
            extra_dockerfile_commands, "extra_dockerfile_commands"
        )
        self._push = True
        self._built: BuiltImage | None = None
        self._host_labels: list[str] = []

    @property
    def name(self) -> str:
        """``registry_url/image_name:image_tag`` once both are known, else ``Docker``."""
        if not self.image_name or not self.image_tag:
            return "Docker"
        repository = posixpath.join(self.registry_url or "", self.image_name)
        return f"{repository}:{self.image_tag}"

    @property
    def default_labels(self) -> list[str]:
        return list(self._host_labels)

    def _location(self, flow: Flow[..., Any]) -> str:
        if self.stored_as_script:
            if self.path is None:
                raise ConfigError(
                    "A `path` must be provided to show where flow `.py` file is stored in "
                    "the image.",
                    hint="Docker(path='/opt/conveyor/flows/etl.py', files={'/abs/etl.py': "
                    "'/opt/conveyor/flows/etl.py'}, stored_as_script=True)",
                )
            return self.path
        return self.path or f"{self.prefect_directory}/flows/{slugify(flow.name)}.pickle"

    # --- building -------------------------------------------------------------------------------

    def build(
        self,
        push: bool = True,
        *,
        settings: Settings | None = None,
        client: ConveyorClient | None = None,
    ) -> Self:
        """Build the image (and push it when ``push`` and there is a ``registry_url``)."""
        self._push = bool(push)
        return super().build(settings=settings, client=client)

    def _build(self, current: Session) -> None:
        from conveyor.storage._dockerimage import bake

        if not self.flows:
            raise ConfigError("Docker storage holds no flows to build", hint="add a flow first")
        if not self.image_name:
            only = len(self.flows) == 1
            self.image_name = slugify(next(iter(self.flows))) if only else uuid.uuid4().hex
        if not self.image_tag:
            self.image_tag = timestamp_slug()
        self._built = bake(self, current, push=self._push and self.registry_url is not None)
        self._host_labels = []
        if not self._built.pushed:
            where = self._built.layout
            logger.warning(
                "Docker storage has no registry_url: image %s was not pushed to a registry; it "
                "lives only on this machine (%s)",
                self.name,
                where,
            )
            if current.settings.api_url:
                self._host_labels = [socket.gethostname()]

    # --- what a deployment and get_flow use -------------------------------------------------

    def _entry(self, flow_name: str, attribute: str) -> str:
        location = self._check_contained(flow_name)
        relative = posixpath.relpath(location, self.prefect_directory)
        if self.stored_as_script:
            if not attribute:
                raise ConfigError(f"cannot tell which top-level name holds flow {flow_name!r}")
            return f"{relative}:{attribute}"
        return relative

    def _image(self) -> BuiltImage:
        if self._built is None:
            raise ConfigError(
                f"this {self.name} storage has not been built",
                hint="call storage.build() (or flow.register()) first",
            )
        return self._built

    def deployment_source(
        self, flow_name: str, *, attribute: str, current: Session
    ) -> tuple[Source, str]:
        return self._image().source(), self._entry(flow_name, attribute)

    def built_version(self, flow_name: str) -> str | None:
        return self._built.digest if self._built is not None else None

    def run_job_variables(self, flow_name: str) -> dict[str, Any]:
        return {"image": self._built.image} if self._built is not None else {}

    def _load(self, flow_name: str, location: str, current: Session) -> Flow[..., Any]:
        from conveyor.storage._serialize import extract_flow_from_file, flow_from_pickle

        if self._built is None and Path(location).is_file():  # inside the image itself
            if self.stored_as_script:
                return extract_flow_from_file(file_path=location, flow_name=flow_name)
            data = Path(location).read_bytes()
            return flow_from_pickle(data, store=current.client, where=location)
        source = self._image().source()
        version = self._image().digest or ""
        relative = posixpath.relpath(location, self.prefect_directory)
        with tempfile.TemporaryDirectory(prefix="conveyor-image-") as tmp:
            source.fetch(version, Path(tmp), current.ctx)
            file = Path(tmp) / relative
            if self.stored_as_script:
                return extract_flow_from_file(file_path=file, flow_name=flow_name)
            where = f"{self.name}:{location}"
            return flow_from_pickle(file.read_bytes(), store=current.client, where=where)

"""`bake`: build (and push) a `Docker` storage's image with the image builder.

1. the base: ``base_image``, else the given ``dockerfile``'s text, else
   ``$CONVEYOR_DOCKER_BASE_IMAGE``, else the official Python image of this interpreter;
2. the backend: without a push, daemonless (the image must stay readable here, in
   ``$CONVEYOR_HOME/images``); with one, the Docker engine when reachable (``base_url`` or
   ``DOCKER_HOST``), else daemonless. What only an engine can do (``RUN``) is a one-line error
   (`conveyor.storage._dockerbuild.needs_engine`), as is ``local_image`` without an engine;
3. the code tree (signed pickles, ``files``, ``dockerignore``) and the Dockerfile are written to
   a temporary directory; the health check loads each script back (unless
   ``ignore_healthchecks``);
4. `conveyor.docker.DockerImage` builds it (and pushes it), and the built image's
   ``PYTHON_VERSION`` is compared with this interpreter's for pickled flows (a warning).
"""

from __future__ import annotations

import logging
import posixpath
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.errors import ConfigError
from conveyor.storage._dockerbuild import (
    add_files,
    dockerfile_text,
    needs_engine,
    python_version,
)
from conveyor.storage._session import Session

if TYPE_CHECKING:
    from conveyor.docker.image import BuiltImage
    from conveyor.storage.docker import Docker

__all__ = ["bake"]

logger = logging.getLogger(__name__)


def _base_dockerfile(path: str) -> str:
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read dockerfile {path}: {exc.strerror or exc}") from None


def _write_tree(storage: Docker, tree: Path, current: Session) -> None:
    from conveyor.sources.pickled import signing_key
    from conveyor.storage._serialize import extract_flow_from_file, pickle_flow

    directory = storage.prefect_directory
    add_files(tree, storage.files, directory)
    key = None
    for flow_name, location in storage.flows.items():
        target = tree / posixpath.relpath(location, directory)
        if storage.stored_as_script:
            if not target.is_file():
                raise ConfigError(
                    f"Docker storage path {location} is not among the files copied into the "
                    f"image ({', '.join(sorted(storage.files.values())) or 'no files'})",
                    hint=f"files={{'/absolute/local/flow.py': {location!r}}}",
                )
            if not storage.ignore_healthchecks:
                extract_flow_from_file(file_path=target, flow_name=flow_name)
            continue
        flow = storage._flows.get(flow_name)
        if flow is None:
            raise ConfigError(
                f"flow {flow_name!r} of this Docker storage is not in this process",
                hint="build the storage in the process that defines the flow",
            )
        key = key or signing_key(current.client)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(pickle_flow(flow, key))
    if storage.dockerignore:
        rules = Path(storage.dockerignore).expanduser()
        try:
            (tree / ".conveyorignore").write_text(rules.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read dockerignore {rules}: {exc.strerror}") from None


def bake(storage: Docker, current: Session, *, push: bool) -> BuiltImage:
    """Build ``storage``'s image, push it when ``push``; the built image (module docstring)."""
    from conveyor.docker._engine import engine_reachable
    from conveyor.docker.image import DockerImage, ImageContext, default_base_image, images_dir
    from conveyor.storage.docker import BASE_IMAGE_ENV

    ctx = current.ctx
    environ = dict(ctx.environ)
    if storage.base_url:
        environ["DOCKER_HOST"] = storage.base_url
    text = dockerfile_text(
        base=storage.base_image or environ.get(BASE_IMAGE_ENV) or default_base_image(),
        base_dockerfile=_base_dockerfile(storage.dockerfile) if storage.dockerfile else None,
        env_vars=storage.env_vars,
        python_dependencies=storage.python_dependencies,
        directory=storage.prefect_directory,
        extra_commands=storage.extra_dockerfile_commands,
        flow_names=sorted(storage.flows),
    )
    engine = push and engine_reachable(environ)
    problem = needs_engine(storage.python_dependencies, storage.extra_dockerfile_commands)
    if problem is not None and not engine:
        if not push and engine_reachable(environ):
            raise ConfigError(
                "an image that runs commands is built by the Docker engine, and its code can "
                "only be fetched once it is pushed: give Docker storage a registry_url",
                hint="or use a base_image that already has what the RUN steps install",
            )
        raise problem
    if storage.local_image and not engine:
        raise ConfigError(
            "Docker storage local_image=True takes the base image from a Docker engine, and "
            "none is reachable",
            hint="push the base image to a registry and drop local_image, or build where "
            "Docker runs (DOCKER_HOST, or base_url=)",
        )
    assert storage.image_name
    assert storage.image_tag
    name = posixpath.join(storage.registry_url or "", storage.image_name)
    build_kwargs = dict(storage.build_kwargs) if engine else {}
    with tempfile.TemporaryDirectory(prefix="conveyor-docker-storage-") as tmp:
        tree = Path(tmp) / "code"
        tree.mkdir()
        _write_tree(storage, tree, current)
        dockerfile = Path(tmp) / "Dockerfile"
        dockerfile.write_text(text, encoding="utf-8")
        image = DockerImage(name, tag=storage.image_tag, dockerfile=str(dockerfile), **build_kwargs)
        context = ImageContext(
            layout_dir=images_dir({"CONVEYOR_HOME": str(current.settings.home)}),
            secrets=ctx.secrets,
            environ=environ,
            backend="engine" if engine else "daemonless",
        )
        built = image.build(tree, context)
        if push:
            built = image.push(built, context)
    _check_python(storage, built)
    return built


def _check_python(storage: Docker, built: BuiltImage) -> None:
    if storage.ignore_healthchecks or storage.stored_as_script or built.layout is None:
        return
    found = python_version(built.layout, built.digest or "")
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if found is not None and ".".join(found.split(".")[:2]) != here:
        logger.warning(
            "image %s has Python %s (PYTHON_VERSION) but its flows were pickled with Python %s: "
            "they load only where the versions match (a container of this image will refuse "
            "them); use a Python %s base image or stored_as_script=True",
            storage.name,
            found,
            here,
            here,
        )

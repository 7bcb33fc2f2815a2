"""The ``build_docker_image`` and ``push_docker_image`` steps (``build:`` / ``push:`` sections of
``conveyor.yaml``), with Prefect's names, arguments and outputs.

```yaml
build:
  - build_docker_image:
      id: build-image
      image_name: ghcr.io/org/flows
      tag: v3
      dockerfile: auto
push:
  - push_docker_image:
      image_name: "{{ build-image.image_name }}"
      tag: "{{ build-image.tag }}"
      credentials: ghcr
deployments:
  - name: nightly
    entrypoint: flows/etl.py:main
    work_pool: {name: k8s, job_variables: {image: "{{ build-image.image }}"}}
```

They run at deploy time, in the project folder (`conveyor.steps.run_deploy_steps`).
``build_docker_image`` builds the folder's bundle tree (engine when reachable, else daemonless
into the image layout) and returns ``image_name``, ``tag``, ``image`` (``name:tag@sha256:…``
once the digest is known), ``image_id``, ``additional_tags``, ``digest`` and ``source`` (the
`ImageSource` spec the deployment stores). ``push_docker_image`` pushes it and returns the same
keys, with ``source`` now the registry image pinned by digest.
``prefect_docker.deployments.steps.*`` names work too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conveyor.docker.image import BuiltImage, DockerImage, ImageContext, images_dir
from conveyor.errors import ConfigError
from conveyor.sources.oci._image import CODE_VERSION_KEY
from conveyor.sources.oci._layout import ImageLayout
from conveyor.sources.oci._reference import parse_reference
from conveyor.steps import StepContext

__all__ = ["build_docker_image", "push_docker_image"]

_BACKENDS = {None: None, "docker-py": "engine", "engine": "engine", "daemonless": "daemonless"}


def _context(ctx: StepContext, backend: str | None) -> ImageContext:
    if backend not in _BACKENDS:
        raise ConfigError(
            f"unknown build_backend {backend!r}", hint="use docker-py, engine or daemonless"
        )
    env = {k: str(v) for k, v in ctx.env.items()}
    return ImageContext(
        layout_dir=images_dir(env),
        secrets=ctx.secrets,
        environ=env,
        log=lambda line: ctx.log(line, "stdout"),
        backend=_BACKENDS[backend],
    )


def _image(image_name: str, tag: str | None) -> tuple[str, str | None]:
    if not isinstance(image_name, str) or any(ch.isspace() for ch in image_name):
        raise ConfigError(f"image_name {image_name!r} must be an image name without spaces")
    return image_name, tag


def build_docker_image(
    ctx: StepContext,
    image_name: str,
    dockerfile: str = "Dockerfile",
    tag: str | None = None,
    additional_tags: Sequence[str] | None = None,
    ignore_cache: bool = False,
    persist_dockerfile: bool = False,
    dockerfile_output_path: str = "Dockerfile.generated",
    build_backend: str | None = None,
    base_image: str | None = None,
    platform: str | None = None,
    credentials: str | None = None,
    **build_kwargs: Any,
) -> dict[str, Any]:
    """Build the project folder into ``image_name:tag`` (see the module docstring)."""
    del ignore_cache  # every build is content-addressed: an unchanged tree makes the same image
    name, tag = _image(image_name, tag)
    if additional_tags:
        raise ConfigError("additional_tags are not supported yet", hint="deploy once per tag")
    image = DockerImage(
        name,
        tag=tag,
        dockerfile=dockerfile,
        base_image=base_image,
        platform=platform,
        credentials=credentials,
        **build_kwargs,
    )
    context = _context(ctx, build_backend)
    if persist_dockerfile:
        text = image.dockerfile_text(ctx.cwd)
        (ctx.cwd / dockerfile_output_path).write_text(text, encoding="utf-8")
    built = image.build(ctx.cwd, context)
    return _outputs(built)


def push_docker_image(
    ctx: StepContext,
    image_name: str,
    tag: str | None = None,
    credentials: str | None = None,
    additional_tags: Sequence[str] | None = None,
    ignore_cache: bool = False,
    build_backend: str | None = None,
) -> dict[str, Any]:
    """Push ``image_name:tag`` (built by ``build_docker_image``) to its registry."""
    del ignore_cache
    name, tag = _image(image_name, tag)
    if additional_tags:
        raise ConfigError("additional_tags are not supported yet", hint="deploy once per tag")
    ref = parse_reference(name)
    if tag is not None:
        ref = ref.with_tag(tag)
    if ref.digest is not None:  # "{{ build-image.image }}" passed as the name: pinned
        ref = ref.with_tag(ref.tag)
    context = _context(ctx, build_backend)
    layout = ImageLayout(context.layout_dir)
    image = DockerImage(str(ref), credentials=credentials)
    if context.backend != "engine" and (layout.root / "index.json").is_file():
        digest = layout.resolve(str(ref))
        manifest = layout.read_blob(digest)
        bundle = _bundle_version(manifest)
        built = BuiltImage(ref, digest, bundle, "daemonless", layout.root, "")
    else:
        built = BuiltImage(ref, None, "", "engine", None, "")
    return _outputs(image.push(built, context))


def _bundle_version(manifest: bytes) -> str:
    import json

    notes = json.loads(manifest).get("annotations") or {}
    return str(notes.get(CODE_VERSION_KEY, ""))


def _outputs(built: BuiltImage) -> dict[str, Any]:
    outputs = built.outputs()
    outputs["source"] = built.source().to_spec() if built.digest else None
    return outputs

"""Building and pushing through a Docker engine, with the Docker SDK for Python (extra
``docker``), when one is reachable (``DOCKER_HOST``, or the default socket).

The build context is made here, as a tar: the bundle tree (the same files a bundle holds, with
``.conveyor/manifest.json``) plus the Dockerfile under ``.conveyor-build/``, which a generated
``.dockerignore`` keeps out of ``COPY .``. Progress lines are streamed to ``log``; an error
line fails the build or push with its text (a ``denied`` push gets a hint about credentials).
The pushed digest is read from the engine's answer.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from conveyor.errors import ConfigError, MissingDependency, SourceError

__all__ = ["build", "engine_reachable", "push"]

_SOCKET = "/var/run/docker.sock"
_BUILD_DIR = ".conveyor-build"


def engine_reachable(environ: Mapping[str, str]) -> bool:
    """True when a Docker engine answers (``DOCKER_HOST`` or the default socket)."""
    if not environ.get("DOCKER_HOST") and not os.path.exists(_SOCKET):
        return False
    try:
        import docker
    except ImportError:
        return False
    try:
        client = docker.DockerClient(
            base_url=environ.get("DOCKER_HOST") or f"unix://{_SOCKET}", timeout=3
        )
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _client(environ: Mapping[str, str]) -> Any:
    try:
        import docker
    except ImportError as exc:
        raise MissingDependency(
            "docker", extra="docker", feature="building with an engine"
        ) from exc
    return docker.DockerClient(base_url=environ.get("DOCKER_HOST") or f"unix://{_SOCKET}")


def _context(tree: Path, dockerfile: str) -> io.BytesIO:
    from conveyor.bundles import lay_out_tree

    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="conveyor-context-") as tmp:
        laid = Path(tmp) / "tree"
        lay_out_tree(tree, laid)
        (laid / _BUILD_DIR).mkdir()
        (laid / _BUILD_DIR / "Dockerfile").write_text(dockerfile)
        ignore = laid / ".dockerignore"
        extra = ignore.read_text() if ignore.exists() else ""
        ignore.write_text(f"{extra}\n{_BUILD_DIR}\n.dockerignore\n")
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(laid, arcname=".")
    buffer.seek(0)
    return buffer


def _follow(
    lines: Iterable[Mapping[str, Any]], log: Callable[[str], None], what: str
) -> dict[str, Any]:
    aux: dict[str, Any] = {}
    for line in lines:
        if "error" in line or "errorDetail" in line:
            text = str(line.get("error") or line.get("errorDetail", {}).get("message", ""))
            hint = (
                "log in (credentials=NAME) or check the repository name"
                if "denied" in text
                else None
            )
            raise SourceError(f"{what} failed: {text.strip()}", hint=hint)
        if isinstance(line.get("aux"), dict):
            aux.update(line["aux"])
        text = str(line.get("stream") or line.get("status") or "").rstrip()
        if text:
            log(text)
    return aux


def build(
    *,
    tree: Path,
    dockerfile: str,
    tag: str,
    labels: Mapping[str, str],
    platform: str | None,
    build_kwargs: Mapping[str, Any],
    environ: Mapping[str, str],
    log: Callable[[str], None],
) -> str:
    """Build with the engine; the image id."""
    client = _client(environ)
    try:
        lines = client.api.build(
            fileobj=_context(tree, dockerfile),
            custom_context=True,
            dockerfile=f"{_BUILD_DIR}/Dockerfile",
            tag=tag,
            labels=dict(labels),
            platform=platform,
            pull=True,
            rm=True,
            decode=True,
            **dict(build_kwargs),
        )
        aux = _follow(lines, log, f"docker build of {tag}")
        image_id = aux.get("ID") or client.images.get(tag).id
        return str(image_id)
    finally:
        client.close()


def push(
    *,
    repository: str,
    tag: str,
    auth: Mapping[str, str] | None,
    environ: Mapping[str, str],
    log: Callable[[str], None],
) -> str:
    """Push ``repository:tag`` with the engine; the manifest digest the registry stored."""
    client = _client(environ)
    try:
        lines = client.api.push(
            repository, tag=tag, stream=True, decode=True, auth_config=dict(auth) if auth else None
        )
        aux = _follow(lines, log, f"docker push of {repository}:{tag}")
    finally:
        client.close()
    digest = aux.get("Digest")
    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        raise ConfigError(f"docker push of {repository}:{tag} did not report a digest")
    return digest

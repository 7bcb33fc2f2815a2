"""The code a run used, on the server: which tree, its files, its archive, and diffs of two trees.

`CodeRef` names a tree by what used it: ``run:<run id>`` (the version the run ran, or was pinned
to) or ``rev:<deployment id>:<revision>`` (a deployment revision). `checkout` is the one place
that materialises a version on this machine: the server's own code cache, filled and verified
exactly as a worker's is, leased while a page reads it. Credentials named by the source resolve
through the server's own secret store (environment first, like on a worker).

Paths from URLs go through `safe_path`: nothing outside the checkout is ever read, and symlinks
are shown, not followed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy.orm import Session

from conveyor.errors import InvalidRequest, ObjectNotFound
from conveyor.server.context import ServerContext
from conveyor.server.service import secrets as secret_service
from conveyor.server.tables import DeploymentRow, DeploymentVersionRow, RunRow

__all__ = ["CodeRef", "Entry", "checkout", "list_dir", "resolve_ref", "safe_path", "walk_files"]


@dataclass(frozen=True)
class CodeRef:
    """A code tree by what used it."""

    key: str
    """``run:<id>`` or ``rev:<deployment id>:<revision>``."""
    label: str
    source: dict[str, Any]
    version: str
    base_url: str
    """The URL of its tree page (files are ``base_url + "/" + path``)."""
    flow_name: str


def resolve_ref(session: Session, key: str) -> CodeRef:
    """The tree ``key`` names, or 404."""
    kind, _, rest = key.partition(":")
    if kind == "run" and rest:
        from conveyor.server.service.runs import find_run

        run = find_run(session, rest, prefix=True)
        return _run_ref(run)
    if kind == "rev" and rest.count(":") == 1:
        deployment_id, _, number = rest.partition(":")
        if number.isdigit():
            return _revision_ref(session, deployment_id, int(number))
    raise InvalidRequest(
        f"{key!r} does not name a code tree",
        status_code=400,
        hint="use run:<run id> or rev:<deployment id>:<revision>",
    )


def _run_ref(run: RunRow) -> CodeRef:
    from conveyor.server.dashboard.fmt import url_segment

    return CodeRef(
        key=f"run:{run.id}",
        label=f"run {run.id[:8]} ({run.flow_name}/{run.deployment_name})",
        source=dict(run.source),
        version=run.version,
        base_url=f"/runs/{url_segment(run.id)}/code",
        flow_name=run.flow_name,
    )


def _revision_ref(session: Session, deployment_id: str, revision: int) -> CodeRef:
    from conveyor.server.dashboard.fmt import url_segment

    deployment = session.get(DeploymentRow, deployment_id)
    row = session.get(DeploymentVersionRow, (deployment_id, revision))
    if deployment is None or row is None:
        raise ObjectNotFound(
            f"deployment revision {deployment_id}:{revision} not found", status_code=404
        )
    path = f"/deployments/{url_segment(deployment.flow_name)}/{url_segment(deployment.name)}"
    return CodeRef(
        key=f"rev:{deployment_id}:{revision}",
        label=f"{deployment.flow_name}/{deployment.name} revision {revision}",
        source=dict(row.source),
        version=row.version,
        base_url=f"{path}/revisions/{revision}/code",
        flow_name=deployment.flow_name,
    )


class _ServerSecrets:
    """The server's encrypted secret store as a `SecretStore` (for credential names)."""

    def __init__(self, context: ServerContext) -> None:
        self._context = context

    def get_secret(self, name: str) -> str | None:
        from conveyor.errors import ObjectNotFound as Missing

        box = self._context.box
        try:
            found = self._context.db.read(lambda s: secret_service.get_secret_value(s, box, name))
        except Missing:
            return None
        return found.value


@contextmanager
def checkout(context: ServerContext, spec: Mapping[str, Any], version: str) -> Iterator[Path]:
    """The verified checkout of ``version`` of the source ``spec``, leased for the block.

    The one function through which the dashboard touches sources and the cache.
    """
    import os

    from conveyor.cache import CodeCache
    from conveyor.sources.base import FetchContext
    from conveyor.sources.store import LocalDirBackend

    settings = context.settings
    fetch = FetchContext(
        secrets=_ServerSecrets(context),
        environ=os.environ,
        settings=settings,
        bundle_server=LocalDirBackend(settings.storage_dir),  # this server's own bundle store
    )
    with CodeCache.from_settings(settings, context=fetch).checkout(dict(spec), version) as path:
        yield path


@dataclass(frozen=True)
class Entry:
    """One name in a directory of a checkout."""

    name: str
    path: str
    """Relative to the checkout root, ``/``-separated."""
    kind: str
    """``dir``, ``file`` or ``link``."""
    size: int
    target: str = ""
    """Where a symlink points."""


def safe_path(root: Path, rel: str) -> Path:
    """``root / rel`` when ``rel`` stays inside ``root`` (no ``..``, no absolute path), else 404."""
    parts = PurePosixPath(rel.strip("/")).parts if rel.strip("/") else ()
    if any(p in ("..", "") or "\\" in p or "\x00" in p for p in parts):
        raise ObjectNotFound(f"no such path {rel!r} in this tree", status_code=404)
    path = root.joinpath(*parts)
    current = root
    for part in parts[:-1]:  # no directory on the way may be a link
        current = current / part
        if current.is_symlink():
            raise ObjectNotFound(f"no such path {rel!r} in this tree", status_code=404)
    if not os.path.lexists(path):
        raise ObjectNotFound(f"no such path {rel!r} in this tree", status_code=404)
    return path


def list_dir(root: Path, rel: str) -> list[Entry]:
    """The entries of directory ``rel``: directories first, then by name."""
    directory = safe_path(root, rel)
    entries = []
    with os.scandir(directory) as it:
        for item in it:
            info = item.stat(follow_symlinks=False)
            path = f"{rel.strip('/')}/{item.name}".lstrip("/")
            if stat.S_ISLNK(info.st_mode):
                entries.append(Entry(item.name, path, "link", 0, os.readlink(item.path)))
            elif stat.S_ISDIR(info.st_mode):
                entries.append(Entry(item.name, path, "dir", 0))
            elif stat.S_ISREG(info.st_mode):
                entries.append(Entry(item.name, path, "file", info.st_size))
    entries.sort(key=lambda e: (e.kind != "dir", e.name))
    return entries


def walk_files(root: Path, *, skip: tuple[str, ...] = (".conveyor",)) -> dict[str, Path]:
    """Every file and symlink under ``root`` by relative path (top-level ``skip`` left out)."""
    found: dict[str, Path] = {}
    for here, dirs, files in os.walk(root):
        rel_dir = os.path.relpath(here, root)
        if rel_dir == ".":
            dirs[:] = [d for d in dirs if d not in skip]
        links = [d for d in dirs if os.path.islink(os.path.join(here, d))]
        dirs[:] = sorted(d for d in dirs if d not in links)
        for name in [*files, *links]:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            found[rel.replace(os.sep, "/")] = Path(here) / name
    return dict(sorted(found.items()))

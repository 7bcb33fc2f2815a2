"""Code pages: the tree a run (or a deployment revision) used, one file highlighted, the tree as
the verified archive, and the diff between any two runs or revisions.

| path | page |
|---|---|
| ``/runs/<id>/code[/<path>]`` | directory listing or highlighted file |
| ``/deployments/<flow>/<name>/revisions/<n>/code[/<path>]`` | the same for a revision |
| ``/runs/<id>/code.tar.zst``, ``.../revisions/<n>/code.tar.zst`` | the tree as a bundle |
| ``/code/raw/<ref>/<path>`` | one file, as an attachment (never rendered by the browser) |
| ``/code/diff?a=<ref>&b=<ref>`` | what changed from tree ``a`` to tree ``b`` |

The archive is `bundles.pack` of the leased, verified checkout; for a bundle version the packed
manifest must give back the run's version (else `IntegrityError`), so a download is checked the
way a worker's fetch is.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.background import BackgroundTask
from starlette.responses import FileResponse, Response

from conveyor.errors import IntegrityError
from conveyor.server.dashboard.code import CodeRef, checkout, list_dir, resolve_ref, safe_path
from conveyor.server.dashboard.codeview import diff_trees, view_file
from conveyor.server.dashboard.pages import SECURITY_HEADERS, PageRoute, dashboard_of

__all__ = ["router"]

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _ref(request: Request, key: str) -> CodeRef:
    return dashboard_of(request).context.db.read(lambda s: resolve_ref(s, key))


def _revision_key(request: Request, flow_name: str, name: str, revision: int) -> str:
    from conveyor.server.service.deployments import find_deployment

    row = dashboard_of(request).context.db.read(lambda s: find_deployment(s, flow_name, name))
    return f"rev:{row.id}:{revision}"


def _tree_page(request: Request, ref: CodeRef, rel: str) -> Response:
    dashboard = dashboard_of(request)
    with checkout(dashboard.context, ref.source, ref.version) as root:
        path = safe_path(root, rel)
        crumbs = _crumbs(rel)
        if path.is_dir() and not path.is_symlink():
            return dashboard.render(
                request,
                "code_tree.html",
                ref=ref,
                rel=rel.strip("/"),
                crumbs=crumbs,
                entries=list_dir(root, rel),
            )
        target = os.readlink(path) if path.is_symlink() else ""
        view = None if target else view_file(path, path.name)
        return dashboard.render(
            request,
            "code_file.html",
            ref=ref,
            rel=rel.strip("/"),
            crumbs=crumbs,
            view=view,
            target=target,
        )


def _crumbs(rel: str) -> list[tuple[str, str]]:
    parts = [p for p in rel.strip("/").split("/") if p]
    return [(part, "/".join(parts[: i + 1])) for i, part in enumerate(parts)]


@router.get("/runs/{run_id}/code")
def run_tree(request: Request, run_id: str) -> Response:
    return _tree_page(request, _ref(request, f"run:{run_id}"), "")


@router.get("/runs/{run_id}/code.tar.zst")
def run_archive(request: Request, run_id: str) -> Response:
    return _archive(request, _ref(request, f"run:{run_id}"))


@router.get("/runs/{run_id}/code/{rel:path}")
def run_file(request: Request, run_id: str, rel: str) -> Response:
    return _tree_page(request, _ref(request, f"run:{run_id}"), rel)


@router.get("/deployments/{flow_name}/{name}/revisions/{revision}/code")
def revision_tree(request: Request, flow_name: str, name: str, revision: int) -> Response:
    key = _revision_key(request, flow_name, name, revision)
    return _tree_page(request, _ref(request, key), "")


@router.get("/deployments/{flow_name}/{name}/revisions/{revision}/code.tar.zst")
def revision_archive(request: Request, flow_name: str, name: str, revision: int) -> Response:
    return _archive(request, _ref(request, _revision_key(request, flow_name, name, revision)))


@router.get("/deployments/{flow_name}/{name}/revisions/{revision}/code/{rel:path}")
def revision_file(request: Request, flow_name: str, name: str, revision: int, rel: str) -> Response:
    key = _revision_key(request, flow_name, name, revision)
    return _tree_page(request, _ref(request, key), rel)


@router.get("/code/raw/{key}/{rel:path}")
def raw_file(request: Request, key: str, rel: str) -> Response:
    """One file of a tree as a download (``nosniff``, attachment: never shown as a page)."""
    ref = _ref(request, key)
    with checkout(dashboard_of(request).context, ref.source, ref.version) as root:
        path = safe_path(root, rel)
        if not path.is_file() or path.is_symlink():
            from conveyor.errors import ObjectNotFound

            raise ObjectNotFound(f"{rel!r} is not a file", status_code=404)
        data = path.read_bytes()
    headers = {
        **SECURITY_HEADERS,
        "Content-Disposition": f'attachment; filename="{_ascii(path.name)}"',
    }
    return Response(data, media_type="application/octet-stream", headers=headers)


def _ascii(name: str) -> str:
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)


def _archive(request: Request, ref: CodeRef) -> Response:
    from conveyor.bundles import pack

    context = dashboard_of(request).context
    handle, name = tempfile.mkstemp(prefix="conveyor-code-", suffix=".tar.zst")
    os.close(handle)
    out = Path(name)
    try:
        with checkout(context, ref.source, ref.version) as root:
            manifest = pack(root, out)
        if ref.version.startswith("sha256-") and manifest.version != ref.version:
            raise IntegrityError(
                f"the checkout of {ref.version} packs to {manifest.version}",
                hint="the server's code cache is damaged: `conveyor cache prune --max-bytes 0`",
            )
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    filename = _ascii(f"{ref.flow_name}-{ref.version[:19]}.tar.zst")
    headers = {**SECURITY_HEADERS, "X-Conveyor-Bundle-Version": manifest.version}
    return FileResponse(
        out,
        media_type="application/zstd",
        filename=filename,
        headers=headers,
        background=BackgroundTask(out.unlink, missing_ok=True),
    )


@router.get("/code/diff")
def diff_page(request: Request, a: str = "", b: str = "") -> Response:
    dashboard = dashboard_of(request)
    if not a or not b:
        from conveyor.errors import InvalidRequest

        raise InvalidRequest(
            "a diff needs two trees: ?a=...&b=...",
            status_code=400,
            hint="open it from a run page (compare with) or a deployment's revisions",
        )
    left, right = _ref(request, a), _ref(request, b)
    values: dict[str, Any] = {"a": left, "b": right}
    if left.version == right.version and left.source == right.source:
        values["diff"] = None
    else:
        with (
            checkout(dashboard.context, left.source, left.version) as root_a,
            checkout(dashboard.context, right.source, right.version) as root_b,
        ):
            values["diff"] = diff_trees(root_a, root_b)
    return dashboard.render(request, "diff.html", **values)

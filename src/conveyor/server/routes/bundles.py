"""``/api/bundles/{version}``: the server's content-addressed bundle store.

``HEAD`` says whether a version is stored (deploy skips the upload); ``PUT`` uploads an archive
(streamed, size-limited, checked to hold exactly that version; 201 when stored, 200 when it was
there already); ``GET`` streams it back to a worker.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from conveyor.server import api
from conveyor.server.routes import Ctx

__all__ = ["router"]

router = APIRouter(tags=["bundles"])


@router.head("/bundles/{version}")
def bundle_exists(version: str, ctx: Ctx) -> Response:
    return Response(status_code=200 if api.bundle_exists(ctx, version) else 404)


@router.get("/bundles/{version}")
def get_bundle(version: str, ctx: Ctx) -> FileResponse:
    path, _size = api.open_bundle(ctx, version)
    return FileResponse(path, media_type="application/zstd")


@router.put("/bundles/{version}")
async def put_bundle(version: str, request: Request, ctx: Ctx) -> Response:
    import tempfile

    # Spool the body to a temporary file first (the check runs in a thread, off the loop).
    with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > ctx.settings.max_bundle_bytes:
                break
            spool.write(chunk)
        if size > ctx.settings.max_bundle_bytes:
            from conveyor.errors import InvalidRequest

            raise InvalidRequest(
                f"bundle upload is larger than the server's limit of "
                f"{ctx.settings.max_bundle_bytes} bytes",
                status_code=413,
                hint="raise CONVEYOR_MAX_BUNDLE_BYTES on the server, or leave large files out "
                "with .conveyorignore",
            )
        spool.seek(0)
        written = await run_in_threadpool(api.put_bundle, ctx, version, spool)
    return Response(status_code=201 if written else 200)

"""HTTP routes, one module per resource; each exposes ``router`` (mounted under ``/api``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from conveyor.server.context import ServerContext

__all__ = ["Ctx", "get_context"]


def get_context(request: Request) -> ServerContext:
    context = request.app.state.context
    assert isinstance(context, ServerContext)
    return context


Ctx = Annotated[ServerContext, Depends(get_context)]

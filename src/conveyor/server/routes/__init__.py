"""HTTP routes, one module per resource; each exposes ``router`` (mounted under ``/api``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from conveyor._values import value_problem
from conveyor.errors import InvalidRequest
from conveyor.schemas import build_models
from conveyor.server.context import ServerContext

__all__ = ["Ctx", "get_context"]

build_models()  # before any route declares a request or response model


def get_context(request: Request) -> ServerContext:
    """The server's context, once the URL's own values are known to be storable text (a NUL
    in a path or query would otherwise reach the database)."""
    problem = value_problem([*request.path_params.values(), *request.query_params.values()])
    if problem is not None:
        raise InvalidRequest(
            f"invalid request: URL: {problem.message}", status_code=422, hint=problem.hint
        )
    context = request.app.state.context
    assert isinstance(context, ServerContext)
    return context


Ctx = Annotated[ServerContext, Depends(get_context)]

"""``/runs``: the filterable, paged run list; one run (state history, attempts, phase timings,
parameters, result, error with its hint, logs that follow the run live); its logs as text; its
pickled result as a download; cancelling it.

Live logs: the run page shows up to `LOG_PAGE` lines and, while the run is not final, an element
that htmx polls every second at ``/runs/<id>/logs?after=<last seq>``; each answer appends the
new lines and replaces the poller (and the state badge) out of band, and the last answer, once
the run is final, has no poller. Without JavaScript the page refreshes itself while the run is
live (``<noscript>`` meta refresh).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from conveyor._params import masked_parameters
from conveyor.errors import ObjectNotFound
from conveyor.schemas import Run, RunState
from conveyor.server.dashboard import queries
from conveyor.server.dashboard.fmt import url_segment
from conveyor.server.dashboard.history import hint_for, history, timing_bar
from conveyor.server.dashboard.pages import SECURITY_HEADERS, PageRoute, dashboard_of
from conveyor.server.db import utcnow
from conveyor.server.service import deployments, logs, runs

__all__ = ["LOG_PAGE", "router"]

router = APIRouter(route_class=PageRoute, include_in_schema=False)

LOG_PAGE = 500
"""Log lines on one page of a run (the rest: earlier/later pages, or the text download)."""


def _moment(text: str | None, name: str) -> datetime | None:
    """A ``datetime-local`` value (UTC) or an ISO time; None when empty."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        from conveyor.errors import InvalidRequest

        raise InvalidRequest(
            f"{name} {text!r} is not a time", status_code=400, hint="use YYYY-MM-DDTHH:MM (UTC)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@router.get("/")
def home() -> Response:
    return RedirectResponse("/runs", status_code=303, headers={**SECURITY_HEADERS})


@router.get("/runs")
def run_list(
    request: Request,
    state: str | None = None,
    deployment: str | None = None,
    worker: str | None = None,
    since: str | None = None,
    until: str | None = None,
    older: str | None = None,
    newer: str | None = None,
) -> Response:
    dashboard = dashboard_of(request)
    if state and state not in {s.value for s in RunState}:
        state = None
    f = queries.RunFilter(
        state=state or None,
        deployment_id=deployment or None,
        worker=worker or None,
        since=_moment(since, "since"),
        until=_moment(until, "until"),
    )
    dashboard.context.sweep()

    def read(session: Any) -> dict[str, Any]:
        return {
            "page": queries.run_page(
                session,
                f,
                older_than=queries.Cursor.parse(older),
                newer_than=queries.Cursor.parse(newer),
            ),
            "deployment_choices": queries.deployment_choices(session),
            "worker_choices": queries.worker_names(session),
        }

    filters = {
        "state": state or "",
        "deployment": deployment or "",
        "worker": worker or "",
        "since": since or "",
        "until": until or "",
    }
    return dashboard.render(
        request,
        "runs.html",
        filters=filters,
        states=[s.value for s in RunState],
        **dashboard.context.db.read(read),
    )


@router.get("/runs/{run_id}")
def run_page(request: Request, run_id: str, log_after: int | None = Query(None, ge=0)) -> Response:
    dashboard = dashboard_of(request)
    dashboard.context.sweep()

    def read(session: Any) -> dict[str, Any]:
        run = runs.get_run(session, run_id)
        row = runs.find_run(session, run.id)
        tail = log_after is None
        after = max(row.log_seq - LOG_PAGE, 0) if tail else min(log_after or 0, row.log_seq)
        lines = logs.read_logs(session, run.id, after=after, limit=LOG_PAGE)
        failed = run.state in (RunState.FAILED, RunState.CRASHED)
        try:  # secret parameters (SecretStr) are shown as ****, as in the run form
            schema = deployments.find_deployment(
                session, run.flow_name, run.deployment_name
            ).parameter_schema
        except ObjectNotFound:
            schema = {}
        return {
            "run": run,
            "parameters": masked_parameters(schema, run.parameters),
            "lines": lines,
            "log_after": after,
            "log_total": row.log_seq,
            "log_next": lines[-1].seq if lines else after,
            "following": tail or (lines[-1].seq if lines else after) >= row.log_seq,
            "hint": hint_for(run, queries.logged_hint(session, run.id) if failed else None),
            "others": queries.comparable_runs(session, run.deployment_id, limit=20),
        }

    values = dashboard.context.db.read(read)
    run: Run = values["run"]
    return dashboard.render(
        request,
        "run.html",
        history=history(run),
        bar=timing_bar(run.timings),
        log_page=LOG_PAGE,
        **values,
    )


@router.get("/runs/{run_id}/logs")
def log_fragment(request: Request, run_id: str, after: int = Query(0, ge=0)) -> Response:
    """The lines after ``after`` as HTML to append, and the next poller (none once final)."""
    dashboard = dashboard_of(request)
    dashboard.context.sweep()

    def read(session: Any) -> tuple[Run, list[Any]]:
        run = runs.get_run(session, run_id)
        seen = min(after, runs.find_run(session, run.id).log_seq)  # a huge number: no overflow
        return run, logs.read_logs(session, run.id, after=seen, limit=1000)

    run, lines = dashboard.context.db.read(read)
    more = len(lines) == 1000
    return dashboard.render(
        request,
        "_log_lines.html",
        run=run,
        lines=lines,
        log_next=lines[-1].seq if lines else after,
        polling=more or not run.state.is_final,
    )


@router.get("/runs/{run_id}/logs.txt")
def log_text(request: Request, run_id: str) -> Response:
    """Every line of the run as text, read from the database in batches."""
    context = dashboard_of(request).context
    run = context.db.read(lambda s: runs.get_run(s, run_id))

    def lines() -> Iterator[bytes]:
        after = 0
        while True:
            batch = context.db.read(
                functools.partial(queries.log_batch, run_id=run.id, after=after)
            )
            if not batch:
                return
            yield "".join(
                f"{stamp.isoformat()} {level} [{stream}] {message}\n"
                for _, stamp, level, stream, message in batch
            ).encode()
            after = batch[-1][0]

    headers = {
        **SECURITY_HEADERS,
        "Content-Disposition": f'attachment; filename="run-{run.id[:8]}.log"',
    }
    return StreamingResponse(lines(), media_type="text/plain; charset=utf-8", headers=headers)


@router.get("/runs/{run_id}/result")
def result_file(request: Request, run_id: str) -> Response:
    """The pickled result of a run, when it is on this machine and its bytes are the ones the run
    recorded (size and SHA-256; never unpickled here): anything else is refused (409)."""
    from conveyor.errors import ConfigError, IntegrityError, InvalidRequest
    from conveyor.results import StoredResult
    from conveyor.results.local import ResultStore

    context = dashboard_of(request).context
    run = context.db.read(lambda s: runs.get_run(s, run_id))
    stored = StoredResult.of_run(run)
    if stored is None:
        raise ObjectNotFound(f"run {run.id} has no stored result", status_code=404)
    try:
        data = stored.check(ResultStore.from_settings(context.settings).read_bytes(stored.ref))
    except ConfigError:  # not on this machine (or not a local result)
        raise ObjectNotFound(
            f"the result of run {run.id} is not on the server's machine ({stored.ref})",
            status_code=404,
            hint=f"it is in the results directory of the machine of worker {run.worker}",
        ) from None
    except IntegrityError as exc:
        hint = None if stored.verified else "conveyor runs result RUN --trust-unverified -o FILE"
        raise InvalidRequest(exc.message, status_code=409, hint=hint) from None
    headers = {
        **SECURITY_HEADERS,
        "Content-Disposition": f'attachment; filename="run-{run.id[:8]}-result.pickle"',
    }
    return Response(data, media_type="application/octet-stream", headers=headers)


@router.post("/runs/{run_id}/cancel")
def cancel(request: Request, run_id: str) -> Response:
    context = dashboard_of(request).context
    run = context.db.write(lambda s: runs.cancel_run(s, run_id, now=utcnow()))
    return RedirectResponse(
        f"/runs/{url_segment(run.id)}", status_code=303, headers={**SECURITY_HEADERS}
    )

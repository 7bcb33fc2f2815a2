"""`conveyor runs ls | inspect RUN | logs RUN [--follow] | cancel RUN | code RUN --output DIR |
result RUN [--output FILE] [--trust-unverified]`.

RUN is a run id or a unique prefix of one (``conveyor runs ls`` shows the first 8 characters).
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from conveyor.cli._common import (
    client,
    console,
    exit_code,
    load_settings,
    print_table,
    through_outages,
)
from conveyor.errors import ConfigError

if TYPE_CHECKING:
    from conveyor.client import ConveyorClient
    from conveyor.schemas import LogLine, Run, RunState

__all__ = ["print_log_line", "register"]

runs_app = typer.Typer(
    name="runs", help="Runs: list, inspect, logs, cancel, code, result.", no_args_is_help=True
)

_STATE_STYLE = {
    "scheduled": "cyan",
    "pending": "yellow",
    "running": "blue",
    "completed": "green",
    "failed": "red",
    "crashed": "magenta",
    "cancelled": "dim",
}


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(runs_app, name="runs")


def _run_id(value: str) -> str:
    """A RUN argument, refused when empty (it would name the list of runs, not a run)."""
    if not value.strip():
        raise ConfigError("the run id is empty: give one from `conveyor runs ls`")
    return value


def _when(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _state(state: str) -> str:
    return f"[{_STATE_STYLE.get(state, 'white')}]{state}[/]"


def _duration(run: Run) -> str:
    if run.running_at is None:
        return "-"
    end = run.ended_at or datetime.now(run.running_at.tzinfo)
    return f"{(end - run.running_at).total_seconds():.2f}s"


@runs_app.command("ls")
def ls(
    deployment: str | None = typer.Option(None, "--deployment", "-d", help="Only FLOW/NAME."),
    state: str | None = typer.Option(
        None, "--state", help="Only runs in this state (completed, failed, ...; any case)."
    ),
    pool: str | None = typer.Option(None, "--pool", help="Only runs of this work pool."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=1000, help="How many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List runs, newest first."""
    from rich.table import Table

    from conveyor.schemas import RunState

    try:  # any case: Prefect writes Completed, its API COMPLETED
        wanted = RunState(state.lower()) if state else None
    except ValueError:
        choices = ", ".join(s.value for s in RunState)
        raise ConfigError(f"unknown state {state!r}", hint=f"use one of: {choices}") from None
    if deployment is not None:
        from conveyor.cli.deploy import split_deployment

        split_deployment(deployment)  # FLOW/NAME, or a one-line error saying so
    with client() as api:
        runs = api.list_runs(deployment=deployment, state=wanted, limit=limit, pool=pool)
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in runs], indent=2))
        return
    if not runs:
        console.print("no runs")
        return
    table = Table(title_justify="left")
    table.add_column("run", no_wrap=True, min_width=8)
    table.add_column("deployment", overflow="fold")
    table.add_column("state", no_wrap=True, min_width=9)
    table.add_column("try", no_wrap=True)
    table.add_column("worker", overflow="fold")
    table.add_column("created", no_wrap=True, min_width=14)
    table.add_column("duration", no_wrap=True)
    for run in runs:
        table.add_row(
            run.id[:8],
            f"{run.flow_name}/{run.deployment_name}",
            _state(run.state.value),
            f"{run.attempt}/{run.max_retries + 1}",
            run.worker or "-",
            run.created.astimezone().strftime("%m-%d %H:%M:%S"),
            _duration(run),
        )
    print_table(table)


def _parameter_schema(api: ConveyorClient, run: Run) -> dict[str, Any]:
    """The parameter schema of the run's deployment, to show its secret parameters as ``****``
    (none when the deployment is gone)."""
    from conveyor.errors import ObjectNotFound

    try:
        return api.get_deployment(run.flow_name, run.deployment_name).parameter_schema
    except ObjectNotFound:
        return {}


@runs_app.command("inspect")
def inspect(
    run_id: str = typer.Argument(..., metavar="RUN", callback=_run_id),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a run: state, code version, worker, timings, attempts, result or error."""
    from rich.table import Table

    from conveyor._params import masked_parameters

    with client() as api:
        run = api.get_run(run_id)
        schema = {} if as_json else _parameter_schema(api, run)
    if as_json:
        typer.echo(run.model_dump_json(indent=2))
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    state = _state(run.state.value) + (" (cancel requested)" if run.cancel_requested else "")
    timings = ", ".join(f"{k} {v:.3f}s" for k, v in run.timings.items()) or "-"
    rows = [
        ("run", run.id),
        (
            "deployment",
            f"{run.flow_name}/{run.deployment_name} (revision {run.deployment_revision})",
        ),
        ("state", state),
        ("attempt", f"{run.attempt} of {run.max_retries + 1}"),
        ("version", run.version + (" (follows ref)" if run.follow_ref else "")),
        ("entrypoint", run.entrypoint),
        ("source", json.dumps(run.source, sort_keys=True)),
        ("work pool", run.work_pool + (f" (labels {', '.join(run.labels)})" if run.labels else "")),
        ("worker", run.worker or "-"),
        ("parameters", json.dumps(masked_parameters(schema, run.parameters), sort_keys=True)),
        ("created", _when(run.created)),
        ("scheduled", _when(run.scheduled_at)),
        ("pending", _when(run.pending_at)),
        ("running", _when(run.running_at)),
        ("ended", _when(run.ended_at)),
        ("timings", timings),
    ]
    if run.result is not None:
        rows.append(("result", json.dumps(run.result)))
    if run.result_ref:
        rows.append(("result ref", run.result_ref))
        check = f"sha256 {run.result_sha256}, {run.result_size} bytes" if run.result_sha256 else "-"
        rows.append(("result check", check))
    if run.error:
        rows.append(("error", run.error))
    for key, value in rows:
        grid.add_row(key, value)
    print_table(grid)
    if run.attempts:
        table = Table(title="attempts", title_justify="left")
        table.add_column("#", no_wrap=True)
        table.add_column("state", no_wrap=True, min_width=9)
        table.add_column("worker", overflow="fold")
        table.add_column("version", overflow="fold")
        table.add_column("ended", no_wrap=True, min_width=14)
        table.add_column("error", overflow="fold")
        for attempt in run.attempts:
            table.add_row(
                str(attempt.attempt),
                _state(attempt.state.value),
                attempt.worker or "-",
                attempt.version[:19],
                attempt.ended_at.astimezone().strftime("%m-%d %H:%M:%S"),
                attempt.error or "",
            )
        print_table(table)


def print_log_line(line: LogLine) -> None:
    """One log line as ``HH:MM:SS LEVEL message`` (stdout/stderr lines without a level)."""
    from rich.markup import escape

    stamp = line.timestamp.astimezone().strftime("%H:%M:%S")
    level = "" if line.stream in {"stdout", "stderr"} else f"{line.level:<7} "
    console.print(f"[dim]{stamp}[/] {escape(level + line.message)}", highlight=False)


@runs_app.command("logs")
def logs(
    run_id: str = typer.Argument(..., metavar="RUN", callback=_run_id),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the run ends."),
    after: int = typer.Option(0, "--after", min=0, help="Only lines after this seq."),
) -> None:
    """Print a run's logs (with --follow, until the run reaches a final state; then exit 1
    unless it completed, as `conveyor run --watch` does)."""
    with client() as api:
        run = api.get_run(run_id)
        try:
            final = _print_logs(api, run.id, after=after, follow=follow)
        except KeyboardInterrupt:
            return
    if final is not None:
        raise typer.Exit(exit_code(final))


def _print_logs(api: ConveyorClient, run_id: str, *, after: int, follow: bool) -> RunState | None:
    """Print the lines after ``after``; with ``follow``, until the run is final, and return its
    final state."""
    if not follow:
        while lines := api.read_logs(run_id, after=after):
            for line in lines:
                print_log_line(line)
                after = line.seq
        return None
    state: RunState | None = None
    while True:  # each request waits on the server for news: new lines, or another state
        wait = 0.0 if state is not None and state.is_final else 10.0  # final: drain, no wait
        news = through_outages(partial(api.watch_run, run_id, after=after, state=state, wait=wait))
        for line in news.logs:
            print_log_line(line)
            after = line.seq
        state = news.run.state
        if state.is_final and not news.logs:
            return state


@runs_app.command("cancel")
def cancel(run_id: str = typer.Argument(..., metavar="RUN", callback=_run_id)) -> None:
    """Cancel a run (a running run is stopped by its worker)."""
    with client() as api:
        run = api.cancel_run(run_id)
    if run.state.value == "cancelled":
        console.print(f"cancelled run {run.id}")
    else:
        console.print(
            f"cancellation requested: run {run.id} is {run.state.value}; its worker stops it"
        )


@runs_app.command("code")
def code(
    run_id: str = typer.Argument(..., metavar="RUN", callback=_run_id),
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write the code into."),
) -> None:
    """Write the exact code version a run used into an empty (or new) directory."""
    from conveyor.cache import CodeCache
    from conveyor.connect import fetch_context

    settings = load_settings()
    with client(settings) as api:
        run = api.get_run(run_id)
        if not run.version:
            raise ConfigError(f"run {run.id} has no resolved code version yet")
        if output.exists() and (not output.is_dir() or any(output.iterdir())):
            raise ConfigError(
                f"{output} exists and is not an empty directory", hint="pick a new --output"
            )
        cache = CodeCache.from_settings(settings, context=fetch_context(settings, api))
        created = not output.exists()
        try:
            count = cache.copy_out(run.source, run.version, output).files
        except BaseException:
            if created:
                shutil.rmtree(output, ignore_errors=True)
            raise
    console.print(
        f"wrote {run.version} ({count} files) of {run.flow_name}/{run.deployment_name} to {output}"
    )


@runs_app.command("result")
def result(
    run_id: str = typer.Argument(..., metavar="RUN", callback=_run_id),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the result to FILE (JSON, or the pickle's bytes)."
    ),
    trust_unverified: bool = typer.Option(
        False,
        "--trust-unverified",
        help="Read a result stored before results were recorded with a digest (it cannot be "
        "checked: only if you trust everyone who can write its store).",
    ),
) -> None:
    """Print a run's result, or write it to a file. Results that are not JSON are fetched from
    their result store (a blob URL, or this machine's results directory), checked against the
    size and SHA-256 the run recorded, and only then unpickled for printing (or written): a
    result that does not match is refused, and nothing of it is unpickled."""
    from conveyor.cli._progress import transfer_progress
    from conveyor.results import StoredResult

    settings = load_settings()
    with client(settings) as api:
        run = api.get_run(run_id)
        stored = StoredResult.of_run(run)
        if stored is None:
            if run.state.value != "completed":
                raise ConfigError(f"run {run.id} has no result (it is {run.state.value})")
            data = json.dumps(run.result, indent=2).encode()
        else:
            from conveyor.run_results import read_result

            with transfer_progress():
                data = read_result(
                    run, settings=settings, client=api, trust_unverified=trust_unverified
                )
    if output is not None:
        output.write_bytes(data)
        console.print(f"wrote {len(data)} bytes to {output}")
        return
    if stored is None:
        typer.echo(data.decode())
        return
    import pickle

    try:
        value = pickle.loads(data)  # noqa: S301 - the bytes the run recorded (checked above)
    except Exception as exc:
        raise ConfigError(
            f"result of run {run.id} ({len(data)} bytes) cannot be unpickled here: "
            f"{type(exc).__name__}",
            hint="write it to a file with --output and load it where the flow's code is",
        ) from None
    typer.echo(repr(value))

"""The one child entry point that loads user code: ``python -m conveyor.worker.child CONTROL_DIR``
runs one flow; ``python -m conveyor.worker.child --describe ROOT ENTRYPOINT`` serves deploy's
preflight (`conveyor._preflight`): it loads the flow from the tree alone and prints one JSON line,
``{"flow_name", "parameter_schema", "retries", "retry_delay_seconds", "timeout_seconds",
"description"}`` or ``{"error", "hint"}`` (exit status 1).

The worker starts it with the run's writable workspace as the working directory (so
``sys.path[0]`` is the workspace and sibling imports work) and a control directory holding
``input.json``::

    {"run_id": "...", "entrypoint": "flow.py:hello", "parameters": {...}}

(the entrypoint may also be ``flow.pickle``: a first-generation storage's signed pickle, whose
signature the worker checked when it fetched the file; see `conveyor._loading`).
It loads the flow and calls it once with its parameters converted to the declared types
(`Flow.bind_parameters`: a value that does not convert fails the run with a one-line error, no
traceback). Retries are new attempts, made by the server; the flow's own timeout applies, and
the worker kills a child that outlives it. It writes ``output.json`` (plus ``result.pickle`` for
a result that is not JSON)::

    {"status": "completed" | "failed", "result": ..., "result_file": "result.pickle" | null,
     "error": "ValueError: ..." | null, "entered": <time.time()>, "finished": <time.time()>}

Started early (``python -P -m conveyor.worker.child --gate CONTROL_DIR``, see
`conveyor.worker.executors.local`), the child starts its interpreter and imports Conveyor's own
modules while the worker still checks the code, with neither the workspace on ``sys.path`` nor
as its working directory; then it waits for one JSON line on stdin (the gate): ``{"cwd",
"path", "env"}`` — where to work, the entries to put first on ``sys.path`` and the variables to
set — and goes on as above; stdin is then ``/dev/null``. End of input instead means the worker
gave it up: it exits at once, having loaded nothing of the run.

Deploy's preflight may be started early too (``python -P -m conveyor.worker.child --describe
--gate``, see `conveyor._preflight.Preflight.ahead`): it imports what loading and describing a
flow needs while deploy still fetches the code, then reads one JSON line, ``{"root",
"entrypoint"}``, and answers as ``--describe ROOT ENTRYPOINT`` does (end of input: it exits).
It prints `DESCRIBE_READY` once at its gate, so that a child that died before (it could not
import Conveyor) is told from one whose flow's import killed it.

``print`` output goes to stdout/stderr pipes; `logging` records go, one JSON object per line, to
the file descriptor named by ``CONVEYOR_LOG_FD``; a traceback is logged there too. The worker
streams all three to the server. Nothing heavy is imported here before a run's flow: no
pydantic, no httpx, so a run starts in tens of milliseconds (a preflight needs pydantic for the
parameters' schema anyway; started early, it imports it before its gate).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import pickle
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from conveyor._fs import atomic_write

if TYPE_CHECKING:
    from conveyor.errors import ConfigError

__all__ = [
    "CODE_ROOT_ENV",
    "DESCRIBE_READY",
    "GATE_ARG",
    "INPUT_FILE",
    "LIFELINE_FD_ENV",
    "LOG_FD_ENV",
    "OUTPUT_FILE",
    "describe_flow",
    "main",
    "one_line",
    "run_flow",
]

INPUT_FILE = "input.json"
OUTPUT_FILE = "output.json"
LOG_FD_ENV = "CONVEYOR_LOG_FD"
WORKER_PID_ENV = "CONVEYOR_WORKER_PID"
LIFELINE_FD_ENV = "CONVEYOR_LIFELINE_FD"
"""The read end of a pipe whose write end only the worker holds: end of file means the worker
is gone (or done with the run), and the run's whole process group is killed."""
CODE_ROOT_ENV = "CONVEYOR_CODE_ROOT"
"""The flow's import root when its working directory is elsewhere (job variable working_dir)."""
GATE_ARG = "--gate"
DESCRIBE_READY = "conveyor: preflight at its gate"
"""What an early preflight child prints once it waits at its gate (not JSON: not an answer)."""

_FLOW_LOGGER = "conveyor.flow"


class JsonLineHandler(logging.Handler):
    """Writes each record as one JSON line to a stream (the log pipe to the worker)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(level=logging.DEBUG)
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
            line = json.dumps(
                {
                    "t": record.created,
                    "level": record.levelname,
                    "logger": record.name,
                    "message": message,
                }
            )
            self.acquire()
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            finally:
                self.release()
        except Exception:
            self.handleError(record)


def _die_with_parent() -> int | None:
    """Ask Linux to SIGKILL us when the worker dies, so no run outlives a killed worker, and
    watch the lifeline for what the flow starts (the watcher's pid, or None)."""
    expected = os.environ.get(WORKER_PID_ENV)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
        except (OSError, AttributeError):
            pass
    if expected and os.getppid() != int(expected):  # the worker died before prctl took effect
        os._exit(137)
    lifeline = os.environ.pop(LIFELINE_FD_ENV, None)
    return None if lifeline is None else _watch_lifeline(int(lifeline))


_WATCHER = "trap '' HUP INT TERM; while read -r _; do :; done; kill -KILL 0"
"""The lifeline's watcher, a POSIX shell reading the lifeline (its standard input) until end of
file, then SIGKILLing its process group: the run's. It ignores the signals of a cancel."""


def _watch_lifeline(fd: int) -> int:
    """Start a watcher in this process group that SIGKILLs the group once the worker's end of
    the lifeline closes. PR_SET_PDEATHSIG kills only this process: without the watcher, what the
    flow started (a subprocess it waits on) would run on after a killed worker, beside the
    retry another worker starts. The watcher holds nothing else of the run's (no log pipe, no
    other descriptor); the flow does not inherit the lifeline. A child that ends normally takes
    its watcher down and reaps it (`_end_watch`), so no run leaves an orphan behind for an init
    that may not reap (a worker that is a container's PID 1).

    It is a shell started with ``posix_spawn``, not a fork of this interpreter: a fork would
    share this process's memory copy-on-write, and the imports that follow would copy most of
    it (~8 ms of every run's start)."""
    actions: list[tuple[Any, ...]] = [
        (os.POSIX_SPAWN_DUP2, fd, 0),
        (os.POSIX_SPAWN_CLOSE, fd),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
    ]
    log = os.environ.get(LOG_FD_ENV)
    if log is not None and log.isdigit() and int(log) > 2:
        actions.append((os.POSIX_SPAWN_CLOSE, int(log)))
    try:
        return os.posix_spawn("/bin/sh", ["sh", "-c", _WATCHER], {}, file_actions=actions)
    finally:
        os.close(fd)


def _end_watch(watcher: int | None) -> None:
    if watcher is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(watcher, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(watcher, 0)


def _install_logging() -> None:
    fd = os.environ.get(LOG_FD_ENV)
    stream: TextIO = (
        os.fdopen(int(fd), "w", encoding="utf-8", errors="replace") if fd else sys.stderr
    )
    root = logging.getLogger()
    root.handlers[:] = [JsonLineHandler(stream)]
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)


def one_line(exc: BaseException, *, bare_conveyor_errors: bool = False) -> str:
    """``Type: first line`` of an exception (with ``bare_conveyor_errors``, a Conveyor error is
    its own one-line message)."""
    message = getattr(exc, "message", None)
    if (
        bare_conveyor_errors
        and isinstance(message, str)
        and type(exc).__module__ == "conveyor.errors"
    ):
        return message
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    name = type(exc).__name__
    return f"{name}: {first}" if first else name


def _store_result(result: Any, control: Path) -> dict[str, Any]:
    from conveyor.results import RESULT_FILE, is_json_result

    if is_json_result(result):
        return {"result": result, "result_file": None}
    try:
        data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # unpicklable: the run still completed
        logging.getLogger(_FLOW_LOGGER).warning(
            "result of type %s could not be stored: %s", type(result).__name__, one_line(exc)
        )
        return {"result": None, "result_file": None}
    (control / RESULT_FILE).write_bytes(data)
    return {"result": None, "result_file": RESULT_FILE}


def _result_storage(flow: Any) -> Any:
    """The flow's ``result_storage`` as the worker can use it: a URL, or a block's spec."""
    storage = getattr(flow, "result_storage", None)
    if storage is None or isinstance(storage, str):
        return storage
    to_spec = getattr(storage, "to_spec", None)
    return to_spec() if callable(to_spec) else str(storage)


_PLAIN_TYPES: frozenset[Any] = frozenset({str, int, float, bool, list, dict, Any})


def _plain_call(function: Any, parameters: dict[str, Any]) -> bool:
    """True when the values already have the declared types (nothing to convert).

    Then the flow is called directly; otherwise `Flow.bind_parameters` converts them (with
    pydantic, whose import alone costs a short flow most of its start-up time).
    """
    import typing

    try:
        signature = inspect.signature(function)
        hints = typing.get_type_hints(function)
    except Exception:  # an annotation that does not evaluate: let pydantic say what is wrong
        return False
    for name, value in parameters.items():
        param = signature.parameters.get(name)
        if param is None or param.kind in (param.POSITIONAL_ONLY, param.VAR_POSITIONAL):
            return False
        if param.kind is param.VAR_KEYWORD:
            return False
        hint = hints.get(name, Any)
        if hint not in _PLAIN_TYPES:
            return False
        if hint is not Any and type(value) is not hint:
            return False
    return True


def _arguments(flow: Any, parameters: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The flow's call arguments (a `ConfigError` when a value does not convert)."""
    if _plain_call(flow.fn, parameters):
        return (), parameters
    arguments: tuple[tuple[Any, ...], dict[str, Any]] = flow.bind_parameters(parameters)
    return arguments


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def run_flow(control: Path, workspace: Path) -> dict[str, Any]:
    """Load and call the flow described in ``control/input.json``; return the output record."""
    spec = json.loads((control / INPUT_FILE).read_text(encoding="utf-8"))
    entrypoint: str = spec["entrypoint"]
    parameters: dict[str, Any] = spec.get("parameters") or {}
    log = logging.getLogger(_FLOW_LOGGER)
    entered = finished = time.time()
    try:
        from conveyor._loading import load_flow
        from conveyor.errors import ConfigError

        # One attempt per process: retries are new attempts, made by the server.
        flow = load_flow(entrypoint, root=workspace).with_options(retries=0)
        try:
            args, kwargs = _arguments(flow, parameters)
        except ConfigError as exc:  # a value does not fit the flow: one line, no traceback
            return _refused(exc, log)
        entered = time.time()
        try:
            result = flow(*args, **kwargs)
            if inspect.isawaitable(result):
                import asyncio

                result = asyncio.run(_awaited(result))
        finally:
            finished = time.time()
    except BaseException as exc:  # user code: every failure is data on the run
        finished = max(finished, entered)
        log.error("flow run failed\n%s", traceback.format_exc().rstrip())
        if isinstance(exc, KeyboardInterrupt):
            error = "flow interrupted"
        elif isinstance(exc, SystemExit):
            error = f"flow called sys.exit({exc.code!r})"
        else:
            error = one_line(exc)
        return {"status": "failed", "error": error, "entered": entered, "finished": finished}
    stored = _store_result(result, control)
    if stored.get("result_file"):
        stored["result_storage"] = _result_storage(flow)
    return {
        "status": "completed",
        "error": None,
        "entered": entered,
        "finished": finished,
        **stored,
    }


def _refused(exc: ConfigError, log: logging.Logger) -> dict[str, Any]:
    """The output of a run whose parameters do not convert (a `ConfigError`): never entered."""
    log.error("flow run failed: %s", exc.message)
    if exc.hint:
        log.error("hint: %s", exc.hint)
    now = time.time()
    return {"status": "failed", "error": exc.message, "entered": now, "finished": now}


def _write_output(control: Path, output: dict[str, Any]) -> None:
    with atomic_write(control / OUTPUT_FILE) as out:
        out.write(json.dumps(output).encode())


def describe_flow(root: Path, entrypoint: str) -> dict[str, Any]:
    """What a deployment needs to know about the flow at ``entrypoint`` under ``root``."""
    from conveyor._loading import load_flow

    flow = load_flow(entrypoint, root=root)
    delay = flow.retry_delay_seconds
    if isinstance(delay, tuple):  # one delay per retry: the deployment keeps the first
        delay = delay[0] if delay else 0.0
    return {
        "flow_name": flow.name,
        "parameter_schema": flow.parameter_schema(),
        "retries": flow.retries,
        "retry_delay_seconds": float(delay),
        "timeout_seconds": flow.timeout_seconds,
        "description": flow.description or "",
    }


def _describe(root: Path, entrypoint: str) -> int:
    import contextlib

    sys.dont_write_bytecode = True  # the tree may be a read-only checkout
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        with contextlib.redirect_stdout(sys.stderr):  # what the module prints is not our answer
            text = json.dumps(describe_flow(root, entrypoint))
    except BaseException as exc:  # anything the user's import does is reported, not raised
        error = one_line(exc, bare_conveyor_errors=True)
        print(json.dumps({"error": error, "hint": getattr(exc, "hint", None)}))
        return 1
    print(text)
    return 0


def _describe_at_gate() -> int:
    """``--describe --gate``: ready what describing a flow loads (`conveyor._params` builds
    the parameters' schema with pydantic, whose modules and plugins load on first use: one
    schema built here loads them), then describe the flow the gate line names."""
    import conveyor._loading  # noqa: F401
    from conveyor._params import parameter_schema

    def warm(n: int = 1) -> int:
        return n

    parameter_schema(warm)
    _loaded_for_good()
    print(DESCRIBE_READY, flush=True)  # nothing of the tree is loaded before this line
    line = sys.stdin.buffer.readline()
    if not line.strip():
        return 0
    gate = json.loads(line)
    root = Path(gate["root"])
    os.chdir(root)
    return _describe(root, str(gate["entrypoint"]))


def _loaded_for_good() -> None:
    """What is loaded before the flow's code (Conveyor's modules) stays for the child's life:
    out of the cyclic collector's way, so that its collections, and the last one at exit, which
    the worker or deploy waits for, walk only what the flow's code made."""
    import gc

    gc.freeze()


def _ready_for_a_run() -> None:
    """Load what every run needs of Conveyor, for good (see `_loaded_for_good`)."""
    import conveyor._loading
    import conveyor.flows  # noqa: F401  (what every flow module imports first)

    _loaded_for_good()


def _wait_at_gate() -> bool:
    """Wait for the worker's gate line and act on it (see the module docstring); False when
    the worker gave this child up."""
    line = sys.stdin.buffer.readline()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    if not line.strip():
        return False
    gate = json.loads(line)
    os.environ.update(gate["env"])
    sys.path[:0] = gate["path"]
    os.chdir(gate["cwd"])
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the flow described in the control directory given as the only argument."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 3 and args[0] == "--describe":
        return _describe(Path(args[1]), args[2])
    if args == ["--describe", GATE_ARG]:
        return _describe_at_gate()
    gated = len(args) == 2 and args[0] == GATE_ARG
    if len(args) != 1 and not gated:
        print(
            "usage: python -m conveyor.worker.child [--gate] CONTROL_DIR\n"
            "       python -m conveyor.worker.child --describe ROOT ENTRYPOINT\n"
            "       python -P -m conveyor.worker.child --describe --gate",
            file=sys.stderr,
        )
        return 2
    watcher = _die_with_parent()
    try:
        return _run(Path(args[-1]), gated=gated)
    finally:
        _end_watch(watcher)


def _run(control: Path, *, gated: bool) -> int:
    _install_logging()
    _ready_for_a_run()
    if gated and not _wait_at_gate():
        return 0
    workspace = Path(os.environ.get(CODE_ROOT_ENV) or Path.cwd())
    if str(workspace) not in sys.path:
        sys.path.insert(0, str(workspace))
    output = run_flow(control, workspace)
    _write_output(control, output)
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

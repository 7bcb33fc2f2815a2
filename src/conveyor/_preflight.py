"""Deploy's preflight: load the flow in a fresh interpreter, from the code tree alone.

`Preflight(root, entrypoint).start()` spawns ``python -m conveyor.worker.child --describe ROOT
ENTRYPOINT`` (the same child entry point a worker runs flows with), so the user's module is
imported exactly as a worker will import it, and whatever the import does stays out of the
deploying process. `Preflight.result` waits for its one JSON line and returns a `FlowInfo`, or
raises `FlowLoadError` with the child's one-line error.

`PreflightCache` keeps successful results under ``<cache_dir>/.preflight/``, keyed by
`preflight_key`: the code version, the source's identity, the entrypoint, the working directory
inside the tree (what ``set_working_directory`` steps made of it) and the interpreter that loads
it (`interpreter_identity`: a run environment's python, or this interpreter with its version,
``PYTHONPATH`` and the modification times of its site-packages directories, which change when a
package is installed or removed). Re-deploying unchanged code then starts no child process. A
failed preflight is not kept. Left out of the key, as a worker's run is too: environment
variables the module reads at import time, and the source of editable installs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import site
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.errors import FlowLoadError

__all__ = [
    "PREFLIGHT_DIR",
    "PREFLIGHT_TIMEOUT_SECONDS",
    "FlowInfo",
    "Preflight",
    "PreflightCache",
    "interpreter_identity",
    "preflight_key",
]

logger = logging.getLogger(__name__)

PREFLIGHT_TIMEOUT_SECONDS = 120.0
PREFLIGHT_DIR = ".preflight"
_MAX_ENTRIES = 512
_FORMAT = 1


@dataclass(frozen=True)
class FlowInfo:
    """What the preflight learnt about the flow."""

    flow_name: str
    parameter_schema: dict[str, Any]
    retries: int = 0
    retry_delay_seconds: float = 0.0
    timeout_seconds: float | None = None
    description: str = ""


class Preflight:
    """Loading the flow at ``entrypoint`` under ``root`` in a child interpreter."""

    def __init__(self, root: Path, entrypoint: str, *, python: str | None = None) -> None:
        self.root = root
        self.entrypoint = entrypoint
        self.python = python or sys.executable
        """The interpreter that loads it (a run environment's, when the deployment has one)."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._gate: bytes | None = None
        self._started = 0.0

    def start(self) -> Preflight:
        self._started = time.monotonic()
        self._proc = self._spawn(
            ["--describe", str(self.root), self.entrypoint], cwd=self.root, early=False
        )
        return self

    @classmethod
    def ahead(cls) -> Preflight:
        """A preflight of this interpreter started before the tree is there (deploy is still
        fetching it): the child imports what loading and describing a flow needs, then waits
        (``--describe --gate`` in `conveyor.worker.child`, started with ``-P`` so that nothing
        of the directory it starts in can be imported) until `aim` says which flow; `cancel`
        it when it is not used."""
        from conveyor.worker.child import GATE_ARG

        early = cls(Path(os.curdir), "")
        early._proc = early._spawn(["--describe", GATE_ARG], cwd=None, early=True)
        return early

    def aim(self, root: Path, entrypoint: str, *, python: str | None = None) -> Preflight:
        """This preflight, started `ahead`, for the flow at ``entrypoint`` under ``root``; a
        new one (and this one cancelled) when it cannot serve: another interpreter loads the
        flow, or its child is no longer waiting."""
        usable = (
            self._proc is not None
            and self._gate is None
            and self._proc.poll() is None
            and (python is None or os.path.realpath(python) == os.path.realpath(self.python))
        )
        if not usable:
            self.cancel()
            return Preflight(root, entrypoint, python=python).start()
        self.root, self.entrypoint = root, entrypoint
        self._gate = (json.dumps({"root": str(root), "entrypoint": entrypoint}) + "\n").encode()
        self._started = time.monotonic()
        return self

    def _spawn(self, args: list[str], *, cwd: Path | None, early: bool) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        isolated = ["-P"] if early else []
        return subprocess.Popen(
            [self.python, "-B", *isolated, "-m", "conveyor.worker.child", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE if early else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def cancel(self) -> None:
        """Stop the child (the deploy failed for another reason)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.communicate()

    def result(self, *, timeout: float = PREFLIGHT_TIMEOUT_SECONDS) -> FlowInfo:
        if self._proc is None:
            self.start()
        assert self._proc is not None
        try:
            out, err = self._proc.communicate(input=self._gate, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.cancel()
            raise FlowLoadError(
                f"loading flow {self.entrypoint} took longer than {timeout:g}s",
                hint="does the module do slow work at import time?",
            ) from None
        logger.debug(
            "preflight done entrypoint=%s seconds=%.3f",
            self.entrypoint,
            time.monotonic() - self._started,
        )
        answer = _last_json_line(out)
        if answer is None and self._gate is not None and not _reached_gate(out):
            # started ahead, it died before its gate (nothing of the tree ran): start afresh
            logger.info("preflight started ahead did not reach its gate; starting it again")
            again = Preflight(self.root, self.entrypoint, python=self.python).start()
            return again.result(timeout=timeout)
        if answer is None:
            tail = err.decode(errors="replace").strip().splitlines()
            why = tail[-1] if tail else f"exit status {self._proc.returncode}"
            raise FlowLoadError(f"flow {self.entrypoint} could not be loaded: {why}")
        if "error" in answer:
            raise FlowLoadError(
                f"flow {self.entrypoint} could not be loaded: {answer['error']}",
                hint=answer.get("hint") or None,
            )
        return FlowInfo(
            flow_name=str(answer["flow_name"]),
            parameter_schema=dict(answer.get("parameter_schema") or {}),
            retries=int(answer.get("retries") or 0),
            retry_delay_seconds=float(answer.get("retry_delay_seconds") or 0.0),
            timeout_seconds=answer.get("timeout_seconds"),
            description=str(answer.get("description") or ""),
        )


def _reached_gate(out: bytes) -> bool:
    """Whether an early child's output says it waited at its gate (so it may have run code)."""
    from conveyor.worker.child import DESCRIBE_READY

    return DESCRIBE_READY.encode() in out.splitlines()


def _last_json_line(out: bytes) -> dict[str, Any] | None:
    for line in reversed(out.decode(errors="replace").strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


# -- the cache of results ------------------------------------------------------------------------


def interpreter_identity(python: str | None) -> dict[str, Any]:
    """What identifies the interpreter a preflight runs: a run environment's python (its path
    names its requirements' digest, and it never changes once built), or this one."""
    from conveyor._version import __version__

    if python is not None and os.path.realpath(python) != os.path.realpath(sys.executable):
        return {"python": os.path.abspath(python), "conveyor": __version__}
    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    stamps = {}
    for directory in dirs:
        try:
            stamps[directory] = os.stat(directory).st_mtime_ns
        except OSError:
            continue
    return {
        "python": os.path.realpath(sys.executable),
        "prefix": sys.prefix,
        "version": sys.version,
        "conveyor": __version__,
        "pythonpath": os.environ.get("PYTHONPATH", ""),
        "site": stamps,
    }


def preflight_key(
    *,
    version: str,
    source: dict[str, Any],
    entrypoint: str,
    workdir: str,
    python: str | None,
) -> str:
    """The key of a preflight result (see the module)."""
    material = {
        "format": _FORMAT,
        "version": version,
        "source": source,
        "entrypoint": entrypoint,
        "workdir": workdir,
        "interpreter": interpreter_identity(python),
    }
    blob = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class PreflightCache:
    """Successful preflight results by `preflight_key`, one small JSON file each under
    ``<cache_dir>/.preflight/`` (written atomically; beyond 512 entries the least recently used
    go). An
    unreadable entry is a miss, never an error."""

    def __init__(self, cache_dir: Path) -> None:
        self.root = Path(cache_dir) / PREFLIGHT_DIR

    def get(self, key: str) -> FlowInfo | None:
        path = self.root / f"{key}.json"
        try:
            data = json.loads(path.read_bytes())
            info = FlowInfo(**data["info"])
            os.utime(path)  # recently used: trimmed last
        except (OSError, ValueError, TypeError, KeyError):
            return None
        if data.get("key") != key or not isinstance(info.parameter_schema, dict):
            return None
        return info

    def put(self, key: str, info: FlowInfo) -> None:
        data = {"key": key, "info": dataclasses.asdict(info)}
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(data, fh)
                os.replace(tmp, self.root / f"{key}.json")
            except BaseException:
                os.unlink(tmp)
                raise
            self._trim()
        except OSError as exc:
            logger.debug("preflight result not cached error=%s", exc)

    def _trim(self) -> None:
        entries = [(p.stat().st_mtime_ns, p) for p in self.root.glob("*.json")]
        for _, path in sorted(entries)[: max(len(entries) - _MAX_ENTRIES, 0)]:
            path.unlink(missing_ok=True)

"""Run results that are not JSON: pickled and kept under ``$CONVEYOR_HOME/results/<run-id>/``.

A result that survives a JSON round trip unchanged is stored on the run itself. Anything else is
pickled by the child process, moved here by the worker, and referenced from the run by a
``result_ref`` of the form ``local:<run-id>/result.pickle`` (relative to the results directory of
the machine that ran it). Files are written to a temporary sibling and renamed, so a reader never
sees half a result.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor._fs import atomic_write
from conveyor._values import value_problem
from conveyor.errors import ConfigError
from conveyor.settings import Settings

__all__ = ["RESULT_FILE", "ResultStore", "is_json_result"]

RESULT_FILE = "result.pickle"
_REF_PREFIX = "local:"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def is_json_result(value: Any) -> bool:
    """True when ``value`` comes back from a JSON round trip exactly as it went in, and the server
    can store it (`conveyor._values`: valid Unicode without NUL, not nested too deep)."""
    try:
        if value_problem(value) is not None:
            return False
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return False
    try:
        return bool(json.loads(text) == value) and _same_shape(json.loads(text), value)
    except Exception:  # a user type with a strange __eq__
        return False


def _same_shape(decoded: Any, value: Any) -> bool:
    # ``1 == 1.0 == True`` and ``(1,) != [1]`` hide type changes from ``==``: compare types too.
    if type(decoded) is not type(value):
        return False
    if isinstance(value, dict):
        return all(_same_shape(decoded[k], v) for k, v in value.items())
    if isinstance(value, list):
        return all(_same_shape(d, v) for d, v in zip(decoded, value, strict=True))
    return True


@dataclass(frozen=True)
class ResultStore:
    """Pickled run results under one directory (``Settings.results_dir``)."""

    root: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> ResultStore:
        return cls(settings.results_dir)

    def ref_for(self, run_id: str) -> str:
        """The ``result_ref`` a run's pickled result is stored under."""
        return f"{_REF_PREFIX}{_check_run_id(run_id)}/{RESULT_FILE}"

    def path_for(self, ref: str) -> Path:
        """The file behind ``ref``; `ConfigError` for a ref this store does not hold."""
        if not ref.startswith(_REF_PREFIX):
            raise ConfigError(f"result ref {ref!r} is not a local result")
        run_id, _, name = ref[len(_REF_PREFIX) :].partition("/")
        if name != RESULT_FILE:
            raise ConfigError(f"result ref {ref!r} is not a local result")
        return self.root / _check_run_id(run_id) / RESULT_FILE

    def put_file(self, run_id: str, source: Path) -> str:
        """Move (or copy) the pickle at ``source`` into the store; returns its ref."""
        ref = self.ref_for(run_id)
        dest = self.path_for(ref)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=dest.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            shutil.move(source, tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return ref

    def put(self, run_id: str, value: Any) -> str:
        """Pickle ``value`` into the store; returns its ref."""
        ref = self.ref_for(run_id)
        dest = self.path_for(ref)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(dest, mode=0o600) as out:
            pickle.dump(value, out, protocol=pickle.HIGHEST_PROTOCOL)
        return ref

    def load(self, ref: str) -> Any:
        """Unpickle the result behind ``ref`` (only for results this machine produced).

        Unpickling runs code: load results of your own runs only. Classes defined in the flow's
        code must be importable here.
        """
        path = self.path_for(ref)
        if not path.is_file():
            raise ConfigError(
                f"result {ref} is not on this machine",
                hint="results are kept under CONVEYOR_HOME/results of the worker that ran the flow",
            )
        with path.open("rb") as stream:
            return pickle.load(stream)  # noqa: S301 - our own worker wrote it


def _check_run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id):
        raise ConfigError(f"{run_id!r} is not a run id")
    return run_id

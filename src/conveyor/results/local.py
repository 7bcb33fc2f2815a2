"""The local result store: pickled results under ``$CONVEYOR_HOME/results/<run-id>/``.

A result that survives a JSON round trip unchanged is stored on the run itself. Anything else is
pickled by the child process, moved here by the worker, and referenced from the run by a
``result_ref`` of the form ``local:<run-id>/result.pickle`` (relative to the results directory of
the machine that ran it). Files are written to a temporary sibling and renamed, so a reader never
sees half a result. Storing returns a `StoredResult` (the ref, and the SHA-256 and size of the
bytes as stored, which the run records); `load` checks the file against such a record before
it unpickles anything (`conveyor.results`).
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor._fs import atomic_write
from conveyor.errors import ConfigError
from conveyor.results import RESULT_FILE, StoredResult
from conveyor.settings import Settings

__all__ = ["LocalResultStore", "ResultStore"]

_REF_PREFIX = "local:"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class LocalResultStore:
    """Pickled run results under one directory (``Settings.results_dir``)."""

    root: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalResultStore:
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

    def put_file(self, run_id: str, source: Path) -> StoredResult:
        """Move (or copy) the pickle at ``source`` into the store; its record (the digest of
        the bytes as they are in the store, read after the move)."""
        ref = self.ref_for(run_id)
        dest = self.path_for(ref)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=dest.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            shutil.move(source, tmp)
            stored = StoredResult.of_bytes(ref, tmp.read_bytes())
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return stored

    def put(self, run_id: str, value: Any) -> StoredResult:
        """Pickle ``value`` into the store; its record."""
        ref = self.ref_for(run_id)
        dest = self.path_for(ref)
        dest.parent.mkdir(parents=True, exist_ok=True)
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        with atomic_write(dest, mode=0o600) as out:
            out.write(data)
        return StoredResult.of_bytes(ref, data)

    def read_bytes(self, ref: str) -> bytes:
        """The stored bytes behind ``ref``, unchecked (`StoredResult.check` them)."""
        path = self.path_for(ref)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise ConfigError(
                f"result {ref} is not on this machine",
                hint="local results stay under CONVEYOR_HOME/results of the worker that ran "
                "the flow; set result_storage to a blob URL to reach them from anywhere",
            ) from None

    def load(self, result: StoredResult, *, trust_unverified: bool = False) -> Any:
        """Unpickle the result ``result`` records, once its bytes match the record (else
        `IntegrityError`, nothing unpickled). Classes of the flow's code must be importable here.
        """
        return result.loads(self.read_bytes(result.ref), trust_unverified=trust_unverified)


def _check_run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id):
        raise ConfigError(f"{run_id!r} is not a run id")
    return run_id


ResultStore = LocalResultStore
"""The name the local result store had when it was the only one."""

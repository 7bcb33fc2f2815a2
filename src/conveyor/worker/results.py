"""Where a run's pickled result goes: the flow's ``result_storage``, else the deployment's
(``job_variables.result_storage``), else beside the code when it came from a blob store, else
the worker's local result store. Returns what the run records: the ``result_ref`` with the
SHA-256 and size of the bytes stored (a `StoredResult`), which every reader checks before it
unpickles the result."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.results import StoredResult
    from conveyor.results.local import LocalResultStore
    from conveyor.schemas import Run
    from conveyor.sources.base import FetchContext

__all__ = ["put_result"]


def put_result(
    run: Run, file: Path, flow_setting: Any, local: LocalResultStore, ctx: FetchContext
) -> StoredResult:
    """Store the pickle at ``file`` for ``run``; its record."""
    from conveyor.sources.blob.results import beside, from_setting

    setting = flow_setting or run.job_variables.get("result_storage")
    store = from_setting(setting, run.source, ctx) if setting else None
    if store is None and not setting:
        store = beside(run.source, ctx)
    if store is None:
        return local.put_file(run.id, file)
    return store.put_file(run.id, file)

"""Reading a run's stored result back: the bytes, checked against the run's record, and the value.

`read_result` finds the store behind the run's ``result_ref`` (this machine's results directory
for ``local:``, a blob store for a URL, with the run's source credentials when the result is on
the source's bucket), reads the bytes and checks them against the run's ``result_sha256`` and
``result_size`` (`StoredResult.check`). `load_result` unpickles them only after that check::

    from conveyor.run_results import load_result

    value = load_result(run, settings=settings, client=api)  # api: a ConveyorClient

A mismatch is an `IntegrityError` naming the ref; a run without a recorded digest (stored before
results were verified) is refused the same way unless ``trust_unverified=True``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conveyor.errors import ConfigError
from conveyor.results import StoredResult

if TYPE_CHECKING:
    from conveyor.client import ConveyorClient
    from conveyor.schemas import Run
    from conveyor.settings import Settings
    from conveyor.sources.base import FetchContext

__all__ = ["load_result", "read_result"]


def stored_result(run: Run) -> StoredResult:
    """The record of ``run``'s stored result; `ConfigError` when it has none."""
    stored = StoredResult.of_run(run)
    if stored is None:
        raise ConfigError(f"run {run.id} has no stored result")
    return stored


def read_result(
    run: Run,
    *,
    settings: Settings,
    client: ConveyorClient | None = None,
    context: FetchContext | None = None,
    trust_unverified: bool = False,
) -> bytes:
    """The bytes of ``run``'s stored result, exactly as the run stored them (else
    `IntegrityError`). ``context`` (default: from ``client``) gives blob stores their secrets."""
    stored = stored_result(run)
    if stored.ref.startswith("local:"):
        from conveyor.results.local import LocalResultStore

        data = LocalResultStore.from_settings(settings).read_bytes(stored.ref)
    else:
        from conveyor.sources.blob.results import for_ref

        if context is None:
            context = _context(settings, client)
        data = for_ref(stored.ref, run.source, context).read_bytes(stored.ref)
    return stored.check(data, trust_unverified=trust_unverified)


def _context(settings: Settings, client: ConveyorClient | None) -> FetchContext:
    import os

    from conveyor.connect import fetch_context
    from conveyor.sources.base import FetchContext

    if client is not None:
        return fetch_context(settings, client)
    return FetchContext(environ=dict(os.environ), settings=settings)


def load_result(
    run: Run,
    *,
    settings: Settings,
    client: ConveyorClient | None = None,
    context: FetchContext | None = None,
    trust_unverified: bool = False,
) -> Any:
    """``run``'s stored result, unpickled once its bytes match the run's record (`read_result`).
    Unpickling runs code: the flow's classes must be importable here."""
    import pickle

    data = read_result(
        run, settings=settings, client=client, context=context, trust_unverified=trust_unverified
    )
    return pickle.loads(data)  # noqa: S301 - checked against the run's record above

"""What the first-generation API needs to know about the code that is running right now.

- `loading` / `is_loading`: a flow file is being loaded to *find* its flows (a worker's child,
  deploy's preflight, ``conveyor register``, ``storage.get_flow``), not run as a script. While it
  is, ``flow.register()`` and ``storage.build()`` written at module level do nothing (Prefect 1's
  ``loading_flow`` guard), so loading a script never registers or uploads it again.
- `local_script_path`: the absolute path of the script ``conveyor register --path`` is loading;
  script-mode storages that upload the file (S3, GCS) read it when no path was given.

Both are context variables: set only inside the ``with`` block, per thread and task.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["is_loading", "loading", "local_script_path"]

_LOADING: contextvars.ContextVar[bool] = contextvars.ContextVar("conveyor_loading", default=False)
_SCRIPT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "conveyor_local_script_path", default=None
)


@contextmanager
def loading(script_path: str | None = None) -> Iterator[None]:
    """Mark the block as loading flows (and, optionally, from the script at ``script_path``)."""
    token = _LOADING.set(True)
    script = _SCRIPT.set(script_path) if script_path is not None else None
    try:
        yield
    finally:
        if script is not None:
            _SCRIPT.reset(script)
        _LOADING.reset(token)


def is_loading() -> bool:
    """True inside `loading`: module-level ``register()`` / ``build()`` calls are skipped."""
    return _LOADING.get()


def local_script_path() -> str | None:
    """The script ``conveyor register --path`` is loading, if any."""
    return _SCRIPT.get()

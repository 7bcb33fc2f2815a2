"""gcsfs's filesystem with its retry count as an option.

gcsfs retries every request 6 times (about 31 s of backoff besides the requests themselves), a
count fixed when its class is defined. `GCSFileSystem` takes ``retries=N`` and runs each request
through gcsfs's own retry loop (`gcsfs.retry.retry_request`) with that count, so a hung endpoint
costs what `conveyor.sources.blob._limits` allows. Imported only when a ``gs://`` store is used.
"""

from __future__ import annotations

from typing import Any

from gcsfs.core import GCSFileSystem as _GCSFileSystem
from gcsfs.retry import retry_request

__all__ = ["GCSFileSystem"]


class GCSFileSystem(_GCSFileSystem):  # type: ignore[misc]  # gcsfs is untyped
    """``gcsfs.GCSFileSystem`` whose requests are tried ``retries`` times (gcsfs: 6)."""

    def __init__(self, *args: Any, retries: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if retries is not None:
            self.retries = max(1, int(retries))

    async def _request(self, *args: Any, **kwargs: Any) -> Any:
        once = _GCSFileSystem._request.__wrapped__
        return await retry_request(once, self.retries)(self, *args, **kwargs)

"""The first generation's storage API, over `conveyor.sources`.

```python
from conveyor import Flow
from conveyor.storage import Local

flow = Flow("local-flow", storage=Local())
flow.storage.build()                     # ~/.conveyor/flows/local-flow/<timestamp>
flow.register(labels=["etl"])            # deployment local-flow/default
```

- `Local`: a signed pickle (or the script) on this machine; runs read the file, here only;
- `GitHub`, `GitLab`, `Bitbucket`, `CodeCommit`, `Git`: your script in git; runs check out the
  commit resolved at registration;
- `S3`, `GCS`, `Azure`: an object in a bucket or container (`conveyor.storage.blob`); runs read
  it on the worker with the platform's credentials; results go to the same bucket
  (`S3Result`, `GCSResult`, `AzureResult`);
- `Docker`: the flow baked into an image's code layer, pushed and pinned by digest (or kept on
  this machine without ``registry_url``); runs pull only that layer;
- `Webhook`: a request's body (Dropbox, any file service); runs send the get request;
- `Module`: an installed module; runs import it.

Every run loads exactly what was registered: a git commit, or the digest of the stored file,
checked before it is used; pickles are signed with a key the Conveyor server keeps
(`conveyor.sources.pickled`). See `conveyor.storage.base` for the common model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.storage._register import register_flow as register_flow
    from conveyor.storage._register import register_flows as register_flows
    from conveyor.storage.azure import Azure as Azure
    from conveyor.storage.base import Storage as Storage
    from conveyor.storage.docker import Docker as Docker
    from conveyor.storage.gcs import GCS as GCS
    from conveyor.storage.git import Bitbucket as Bitbucket
    from conveyor.storage.git import CodeCommit as CodeCommit
    from conveyor.storage.git import Git as Git
    from conveyor.storage.git import GitHub as GitHub
    from conveyor.storage.git import GitLab as GitLab
    from conveyor.storage.local import Local as Local
    from conveyor.storage.module import Module as Module
    from conveyor.storage.results import AzureResult as AzureResult
    from conveyor.storage.results import GCSResult as GCSResult
    from conveyor.storage.results import LocalResult as LocalResult
    from conveyor.storage.results import S3Result as S3Result
    from conveyor.storage.s3 import S3 as S3
    from conveyor.storage.webhook import Webhook as Webhook

_EXPORTS = {
    "Azure": "conveyor.storage.azure",
    "AzureResult": "conveyor.storage.results",
    "Bitbucket": "conveyor.storage.git",
    "CodeCommit": "conveyor.storage.git",
    "Docker": "conveyor.storage.docker",
    "GCS": "conveyor.storage.gcs",
    "GCSResult": "conveyor.storage.results",
    "Git": "conveyor.storage.git",
    "GitHub": "conveyor.storage.git",
    "GitLab": "conveyor.storage.git",
    "Local": "conveyor.storage.local",
    "LocalResult": "conveyor.storage.results",
    "Module": "conveyor.storage.module",
    "S3": "conveyor.storage.s3",
    "S3Result": "conveyor.storage.results",
    "Storage": "conveyor.storage.base",
    "Webhook": "conveyor.storage.webhook",
    "register_flow": "conveyor.storage._register",
    "register_flows": "conveyor.storage._register",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'conveyor.storage' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

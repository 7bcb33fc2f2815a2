"""Environments: the first generation's way to say which image a flow runs in (deprecated there
in favour of run configs, `conveyor.run_configs`; both work here).

```python
flow.storage = Local()   # or S3(bucket="my-flows") with the blob stores
flow.environment = LocalEnvironment(metadata={"image": "repo/name:tag"})
```

At registration ``metadata["image"]`` becomes the deployment's ``image`` job variable and
``labels`` its labels; inside that container the flow is fetched from its storage, pinned to
what was built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from conveyor._names import check_labels
from conveyor.errors import ConfigError

__all__ = ["Environment", "LocalEnvironment"]


class Environment:
    """``metadata`` (``image``) and ``labels`` of the flow's runs."""

    def __init__(
        self,
        *,
        metadata: Mapping[str, Any] | None = None,
        labels: Sequence[str] | None = None,
    ) -> None:
        self.metadata = dict(metadata or {})
        image = self.metadata.get("image")
        if image is not None and (not isinstance(image, str) or not image.strip()):
            raise ConfigError("environment metadata 'image' must be an image name")
        self.labels = sorted(set(check_labels(labels)))

    def job_variables(self) -> dict[str, Any]:
        variables: dict[str, Any] = {}
        if self.metadata.get("image"):
            variables["image"] = self.metadata["image"]
        if self.labels:
            variables["labels"] = list(self.labels)
        return variables

    def __repr__(self) -> str:
        return f"{type(self).__name__}(metadata={self.metadata!r}, labels={self.labels!r})"


class LocalEnvironment(Environment):
    """Runs the flow in the worker's process model; ``metadata={"image": ...}`` picks an image."""

    def __init__(
        self,
        metadata: Mapping[str, Any] | None = None,
        labels: Sequence[str] | None = None,
        executor: Any = None,
        on_start: Any = None,
        on_exit: Any = None,
    ) -> None:
        super().__init__(metadata=metadata, labels=labels)
        if executor is not None or on_start is not None or on_exit is not None:
            raise ConfigError(
                "LocalEnvironment executor/on_start/on_exit are not supported",
                hint="call setup code from the flow itself",
            )

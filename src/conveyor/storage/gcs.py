"""`GCS`: flows as objects in a Google Cloud Storage bucket.

```python
flow = Flow("gcs-flow", storage=GCS(bucket="my-bucket"))
flow.storage.build()     # gs://my-bucket/gcs-flow/2024-05-01t10-11-12-123456-00-00
```

``GCS(bucket, key=None, project=None, stored_as_script=False, local_script_path=None,
secrets=None, labels=None, add_default_labels=True, result=None)``:

- credentials, at build and on the worker: ``GCP_CREDENTIALS`` (a service account's JSON, looked
  up in the environment, then in the server's secret store), else Application Default
  Credentials; ``STORAGE_EMULATOR_HOST`` names an emulator (reached anonymously, as Google's
  clients do). ``secrets=["GCP_CREDENTIALS"]`` also hands it to the run's environment;
- ``project`` is stored with the deployment (the billing project of the requests);
- the flow's default result is ``GCSResult(bucket)``.

See `conveyor.storage.blob` for keys, both modes and what a run reads.
"""

from __future__ import annotations

from typing import Any

from conveyor.errors import ConfigError
from conveyor.storage.blob import BlobStorage

__all__ = ["GCS"]


class GCS(BlobStorage):
    """Flows in a Google Cloud Storage bucket (see the module docstring)."""

    scheme = "gs"

    def __init__(
        self,
        bucket: str,
        key: str | None = None,
        project: str | None = None,
        stored_as_script: bool = False,
        local_script_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        if project is not None and (not isinstance(project, str) or not project.strip()):
            raise ConfigError(f"GCS project {project!r} is not a project id")
        self.project = project
        super().__init__(bucket, key, stored_as_script, local_script_path, **kwargs)

    def location_options(self) -> dict[str, Any]:
        return {"project": self.project} if self.project else {}

    def default_result(self) -> Any:
        from conveyor.storage.results import GCSResult

        return GCSResult(self.bucket, project=self.project)

"""`Azure`: flows as blobs in an Azure Blob Storage container.

```python
flow = Flow("azure-flow", storage=Azure(container="flows", connection_string="..."))
flow.storage.build()     # az://flows/azure-flow/2024-05-01t10-11-12-123456-00-00
```

``Azure(container, connection_string=None, connection_string_secret=None, blob_name=None,
overwrite=False, stored_as_script=False, secrets=None, labels=None, add_default_labels=True,
result=None)``. The connection string, at build and on the worker:

1. ``connection_string``, given literally (as the storage document writes it): used at build,
   and saved in the server's encrypted secret store as ``_conveyor.azure-connection.<16 hex of
   its SHA-256>``; only that *name* is stored with the deployment, and workers fetch the value;
2. else the secret ``connection_string_secret`` (the environment, then the secret store);
3. else ``AZURE_STORAGE_CONNECTION_STRING`` (the environment, then the secret store).

None at all is a one-line error naming the three. The run's environment gets
``AZURE_STORAGE_CONNECTION_STRING`` from the secret of 1., 2. or 3., resolved on the worker (the
flow's `AzureResult` writes its results from there). ``overwrite=False`` (the default) refuses
to replace a blob that exists with other content. Script mode never uploads: put the file at
``blob_name`` yourself (required).

See `conveyor.storage.blob` for names, both modes and what a run reads.
"""

from __future__ import annotations

import hashlib
from typing import Any

from conveyor._names import check_secret_name
from conveyor.errors import ConfigError
from conveyor.secrets import Secret, WritableSecretStore, reveal
from conveyor.sources.blob._fs import check_container_name
from conveyor.storage._session import Session
from conveyor.storage.blob import BlobStorage

__all__ = ["CONNECTION_SECRET_PREFIX", "DEFAULT_SECRET", "Azure"]

CONNECTION_SECRET_PREFIX = "_conveyor.azure-connection."  # noqa: S105 - a name's prefix
"""Prefix of the secret a literal connection string is saved as (then 16 hex of its SHA-256)."""
DEFAULT_SECRET = "AZURE_STORAGE_CONNECTION_STRING"  # noqa: S105 - a secret's name


class Azure(BlobStorage):
    """Flows in an Azure Blob container (see the module docstring)."""

    scheme = "az"
    bucket_word = "container"
    key_argument = "blob_name"
    uploads_scripts = False

    def __init__(
        self,
        container: str,
        connection_string: str | None = None,
        connection_string_secret: str | None = None,
        blob_name: str | None = None,
        overwrite: bool = False,
        stored_as_script: bool = False,
        **kwargs: Any,
    ) -> None:
        if connection_string is not None and connection_string_secret is not None:
            raise ConfigError(
                "Azure takes connection_string or connection_string_secret, not both",
                hint="keep connection_string_secret (the name of a stored secret)",
            )
        if connection_string is not None and (
            not isinstance(connection_string, str | Secret) or not reveal(connection_string)
        ):
            raise ConfigError("Azure connection_string must be a non-empty string")
        self._literal = None if connection_string is None else Secret(reveal(connection_string))
        named = connection_string_secret
        self.connection_string_secret = None if named is None else check_secret_name(named)
        self.overwrite = bool(overwrite)
        kwargs.pop("local_script_path", None)
        super().__init__(container, blob_name, stored_as_script, None, **kwargs)
        check_container_name(self.bucket)

    @property
    def container(self) -> str:
        return self.bucket

    @property
    def blob_name(self) -> str | None:
        return self.key

    @property
    def secret_name(self) -> str | None:
        """The secret the connection string is read from on the worker (None: the default)."""
        if self._literal is not None:
            digest = hashlib.sha256(reveal(self._literal).encode()).hexdigest()
            return CONNECTION_SECRET_PREFIX + digest[:16]
        return self.connection_string_secret

    def location_options(self) -> dict[str, Any]:
        name = self.secret_name
        return {"connection_string": "${" + name + "}"} if name else {}

    def build_options(self) -> dict[str, Any]:
        if self._literal is not None:
            return {"connection_string": self._literal}
        return self.location_options()

    def prepare(self, current: Session) -> None:
        """Save a literal connection string under its derived name (unless it is there)."""
        name = self.secret_name
        if self._literal is None or name is None:
            return
        store = current.client
        value = reveal(self._literal)
        if store.get_secret(name) == value:
            return
        if not isinstance(store, WritableSecretStore):
            raise ConfigError(
                "the Azure connection string cannot be saved: this client has no secret store",
                hint="save it yourself (`conveyor secret set NAME`) and pass "
                "connection_string_secret='NAME'",
            )
        store.set_secret(name, value)

    def run_env(self) -> dict[str, str]:
        env = super().run_env()
        name = self.secret_name or DEFAULT_SECRET
        env.setdefault(DEFAULT_SECRET, "${" + name + "}")
        return env

    def default_result(self) -> Any:
        from conveyor.storage.results import AzureResult

        result = AzureResult(self.bucket, connection_string_secret=self.secret_name)
        result._literal = self._literal  # this process only (dropped when pickled)
        return result

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_literal"] = None  # never pickled; the derived secret name stays valid
        state["connection_string_secret"] = self.secret_name
        return state

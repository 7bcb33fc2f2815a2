"""`S3`: flows as objects in an AWS S3 (or S3-compatible) bucket.

```python
flow = Flow("s3-flow", storage=S3(bucket="my-bucket"))
flow.storage.build()     # s3://my-bucket/s3-flow/2024-05-01t10-11-12-123456-00-00
```

``S3(bucket, key=None, stored_as_script=False, local_script_path=None, client_options=None,
upload_options=None, secrets=None, labels=None, add_default_labels=True, result=None)``:

- ``client_options``: the boto3 client's options (``endpoint_url``, ``region_name``, ...),
  stored with the deployment and used on the worker; a secret among them only as ``${NAME}``;
- ``upload_options``: extra arguments of the upload (boto3's ``ExtraArgs``:
  ``ServerSideEncryption``, ``Metadata``, ``ContentType``, ...), used at build only;
- credentials, at build and on the worker, as boto3 finds them, after ``AWS_CREDENTIALS``
  (``{"ACCESS_KEY": ..., "SECRET_ACCESS_KEY": ..., "SESSION_TOKEN": ...}``, looked up in the
  environment, then in the server's secret store); ``AWS_ENDPOINT_URL_S3`` names an endpoint.
  ``secrets=["AWS_CREDENTIALS"]`` also hands it to the run's environment (results are written
  from there);
- the flow's default result is ``S3Result(bucket, boto3_kwargs=client_options)``.

See `conveyor.storage.blob` for keys, both modes and what a run reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from conveyor._names import closest_name
from conveyor.errors import ConfigError
from conveyor.storage.blob import BlobStorage

if TYPE_CHECKING:
    from conveyor.storage._session import Session

__all__ = ["S3"]


class S3(BlobStorage):
    """Flows in an S3 bucket (see the module docstring)."""

    scheme = "s3"

    def __init__(
        self,
        bucket: str,
        key: str | None = None,
        stored_as_script: bool = False,
        local_script_path: str | None = None,
        client_options: Mapping[str, Any] | None = None,
        upload_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        from conveyor.sources.blob._fs import check_settings

        for what, value in (("client_options", client_options), ("upload_options", upload_options)):
            if value is not None and not isinstance(value, Mapping):
                raise ConfigError(f"S3 {what} must be a dict, not {type(value).__name__}")
        self.client_options = dict(client_options or {})
        self.upload_options = dict(upload_options or {})
        check_settings(self.client_options, where="client_options.")
        _check_client_options(self.client_options)
        super().__init__(bucket, key, stored_as_script, local_script_path, **kwargs)

    def location_options(self) -> dict[str, Any]:
        return {"client_kwargs": dict(self.client_options)} if self.client_options else {}

    def put_options(self) -> dict[str, Any]:
        return dict(self.upload_options)

    def prepare(self, current: Session) -> None:
        """Refuse an ``upload_options`` key the upload does not take, before anything is
        uploaded: s3fs drops unknown arguments silently, so ``ServerSideEncription`` would
        store the object unencrypted (boto3's ``upload_fileobj`` refused it in Prefect 1)."""
        allowed = _upload_arguments()
        if allowed is None:
            return  # no botocore: the upload itself says which extra to install
        for key in self.upload_options:
            if key not in allowed:
                close = closest_name(str(key), sorted(allowed))
                raise ConfigError(
                    f"S3 upload_options key {key!r} is not an argument of an S3 upload"
                    + (f" (did you mean {close!r}?)" if close else ""),
                    hint="use boto3's ExtraArgs names, e.g. ServerSideEncryption, Metadata, "
                    "ContentType, StorageClass, SSEKMSKeyId",
                )

    def default_result(self) -> Any:
        from conveyor.storage.results import S3Result

        return S3Result(self.bucket, boto3_kwargs=self.client_options)


_SET_BY_CONVEYOR = frozenset({"Bucket", "Key", "Body", "ContentLength", "IfMatch", "IfNoneMatch"})


def _upload_arguments() -> frozenset[str] | None:
    """The arguments of S3's PutObject that an upload may be given (None without botocore)."""
    try:
        import botocore.session
    except ImportError:
        return None
    model = botocore.session.get_session().get_service_model("s3")
    members = model.operation_model("PutObject").input_shape.members
    return frozenset(members) - _SET_BY_CONVEYOR


_CLIENT_ARGUMENTS = frozenset(
    {
        "region_name",
        "api_version",
        "use_ssl",
        "verify",
        "endpoint_url",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "aws_account_id",
        "config",
    }
)
"""The keyword arguments of ``boto3.client("s3", ...)``, which ``client_options`` are."""


def _check_client_options(options: Mapping[str, Any]) -> None:
    """A one-line `ConfigError` for a ``client_options`` key boto3's client does not take
    (``endpoint``, ``region``) and an ``endpoint_url`` that is not an http(s) URL, instead of
    the upload failing with a bare TypeError or ValueError."""
    from conveyor.secrets import template_ref

    for key in options:
        if key not in _CLIENT_ARGUMENTS:
            close = closest_name(str(key), sorted(_CLIENT_ARGUMENTS))
            raise ConfigError(
                f"S3 client_options key {key!r} is not an argument of boto3's client"
                + (f" (did you mean {close!r}?)" if close else ""),
                hint="use " + ", ".join(sorted(_CLIENT_ARGUMENTS - {"config"})),
            )
    endpoint = options.get("endpoint_url")
    if (
        isinstance(endpoint, str)
        and template_ref(endpoint) is None
        and not endpoint.lower().startswith(("http://", "https://"))
    ):
        raise ConfigError(
            f"S3 client_options endpoint_url {endpoint!r} is not an http(s) URL",
            hint=f"write it with its scheme, e.g. endpoint_url='https://{endpoint}'",
        )

"""Every error Conveyor raises on purpose, under one root.

```
ConveyorError                       .message, .hint; str() is one line
├── ConfigError                     bad settings, bad input from the user
│   └── MissingDependency           an optional extra is not installed (.extra)
├── SourceError                     a source could not do its job (.source: redacted identity)
│   ├── SourceNotFound              the repository / bucket / path / URL does not exist
│   ├── AuthenticationError         credentials missing or rejected (never the credential itself)
│   ├── VersionNotFound             the branch, tag, commit or bundle version does not exist
│   └── SourceUnavailable           network or service down after retries
├── BundleError                     packing or unpacking a bundle
│   ├── UnsafeArchive               absolute path, `..`, escaping link, device, limits exceeded
│   └── IntegrityError              fetched code does not match its version, or a stored run
│                                   result its recorded digest (.path: the file or result ref)
├── FlowLoadError                   an entrypoint could not be turned into a flow
├── FlowTimeout                     a flow or task ran past timeout_seconds (a TimeoutError)
├── CommandError                    an external command failed (.command, .returncode: redacted)
├── CacheError                      the code cache could not hold a version
├── InstallError                    a run's environment could not be built (.reason: uv's)
└── ApiError                        talking to the Conveyor server (.status_code)
    ├── ObjectNotFound              404: unknown deployment, run, pool, secret
    ├── Unauthorized                401: missing or wrong API key
    ├── ServerUnavailable           the server cannot be reached, or answered 502/503/504
    └── InvalidRequest              400/409/413/422: the server refused the request
```

Raise sites are one line: each class builds its own message from structured attributes, and
third-party exceptions are translated at the boundary of the module that called them
(``raise SourceNotFound(...) from exc``).
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "AuthenticationError",
    "BundleError",
    "CacheError",
    "CommandError",
    "ConfigError",
    "ConveyorError",
    "FlowLoadError",
    "FlowTimeout",
    "InstallError",
    "IntegrityError",
    "InvalidRequest",
    "MissingDependency",
    "ObjectNotFound",
    "ServerUnavailable",
    "SourceError",
    "SourceNotFound",
    "SourceUnavailable",
    "Unauthorized",
    "UnsafeArchive",
    "VersionNotFound",
]


class ConveyorError(Exception):
    """Root of every error Conveyor raises on purpose.

    ``message`` is one line saying what went wrong; ``hint`` (optional) says how to fix it.
    Neither may contain a secret: build them from redacted values only.
    """

    default_hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = " ".join(message.split()) if "\n" in message else message
        self.hint = hint if hint is not None else self.default_hint
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class ConfigError(ConveyorError):
    """Bad settings or bad input from the user."""


class MissingDependency(ConfigError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, *, extra: str, feature: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{feature} needs the Python package {package!r}, which is not installed",
            hint=f"pip install 'conveyor[{extra}]'",
        )


class SourceError(ConveyorError):
    """A source could not resolve or fetch. ``source`` is a redacted identity."""

    def __init__(self, message: str, *, source: str = "", hint: str | None = None) -> None:
        self.source = source
        super().__init__(message, hint=hint)


class SourceNotFound(SourceError):
    """The repository, bucket, folder or URL does not exist (or is invisible to us)."""

    default_hint = "check the location and that the credentials can see it"


class AuthenticationError(SourceError):
    """Credentials are missing or were rejected."""

    default_hint = "check that the credentials are correct, not expired and allowed to read"


class VersionNotFound(SourceError):
    """The branch, tag, commit or bundle version does not exist in the source."""


class SourceUnavailable(SourceError):
    """The source could not be reached, after retries."""

    default_hint = "check the network and that the service is up, then try again"


class BundleError(ConveyorError):
    """A bundle could not be packed or unpacked."""


class UnsafeArchive(BundleError):
    """An archive tried to escape its directory, or exceeded a limit."""


class IntegrityError(BundleError):
    """Fetched code does not match the version it claims to be, or a run's stored result does
    not match the size and SHA-256 the run recorded (``path``: the result ref)."""

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None) -> None:
        self.path = path
        super().__init__(message, hint=hint)


class FlowLoadError(ConveyorError):
    """An entrypoint could not be loaded as a flow."""


class FlowTimeout(ConveyorError, TimeoutError):
    """A flow or task ran longer than its ``timeout_seconds``."""


class CommandError(ConveyorError):
    """An external command failed. ``command`` is already redacted."""

    def __init__(
        self,
        command: str,
        *,
        returncode: int | None,
        stderr: str = "",
        hint: str | None = None,
    ) -> None:
        self.command = command
        self.returncode = returncode
        self.stderr = stderr
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        why = "timed out" if returncode is None else f"exited with {returncode}"
        text = f"command `{command}` {why}"
        super().__init__(f"{text}: {tail}" if tail else text, hint=hint)


class CacheError(ConveyorError):
    """The code cache could not hold a version."""


class InstallError(ConveyorError):
    """A run's environment could not be built: ``reason`` is the installer's, on one line."""

    def __init__(self, reason: str, *, hint: str | None = None) -> None:
        self.reason = reason
        super().__init__(f"could not install the run's requirements: {reason}", hint=hint)


class ApiError(ConveyorError):
    """The Conveyor server answered with an error, or could not be reached."""

    def __init__(self, message: str, *, status_code: int | None = None, hint: str | None = None):
        self.status_code = status_code
        super().__init__(message, hint=hint)


class ObjectNotFound(ApiError):
    """The server has no such deployment, run, pool, worker or secret."""


class Unauthorized(ApiError):
    """The server requires an API key, and none or a wrong one was sent."""

    default_hint = "set CONVEYOR_API_KEY to the key the server was started with"


class ServerUnavailable(ApiError):
    """The server could not be reached, or could not serve for now (502, 503, 504: its database
    is down, a proxy in front of it has no upstream). Worth retrying."""

    default_hint = "check CONVEYOR_API_URL and that `conveyor server start` is running"


class InvalidRequest(ApiError):
    """The server refused the request as invalid."""

"""Where run results that are not JSON go: result stores, found by URL scheme.

A result that survives a JSON round trip unchanged (`is_json_result`) is stored on the run
itself. Anything else is pickled by the child process (``result.pickle``) and put in a result
store by the worker; the run keeps a ``result_ref`` and, beside it, the stored bytes' SHA-256
and size (``result_sha256``, ``result_size``: a `StoredResult`). `RESULT_STORES` maps the ref's
scheme to the store class (``local`` built in, `conveyor.results.local`; third parties register
in the ``conveyor.result_stores`` entry-point group).

**A stored result is checked before it is unpickled.** Unpickling runs code, and whoever can
write a result store's prefix could otherwise put any pickle there. `StoredResult.check`
compares the bytes read back with the run's record (size first, then the digest) and raises a
one-line `IntegrityError` naming the ref on any difference, before anything is unpickled. A run
stored before results carried a digest has no record: its result is refused too (`IntegrityError`
with a hint) unless the reader says it trusts everyone who can write the store
(``trust_unverified``, ``conveyor runs result --trust-unverified``). `conveyor.run_results`
reads and checks a run's result wherever it is stored.

This module is imported by the flow's child process: it stays free of heavy imports.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor._registry import Entry, Registry

if TYPE_CHECKING:
    from conveyor.schemas import Run

__all__ = ["RESULT_FILE", "RESULT_STORES", "StoredResult", "is_json_result"]

RESULT_FILE = "result.pickle"

SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
"""A result's recorded digest: the SHA-256 of its stored bytes, lowercase hex."""

RESULT_STORES: Registry[Any] = Registry(
    "result store scheme",
    group="conveyor.result_stores",
    builtins={
        "local": Entry("conveyor.results.local:LocalResultStore"),
        **{
            scheme: Entry("conveyor.sources.blob.results:BlobResultStore")
            for scheme in ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")
        },
    },
)
"""``result_ref`` scheme → result store class."""


@dataclass(frozen=True)
class StoredResult:
    """A run's pickled result: where it is (``ref``) and what its bytes must be (``sha256``,
    ``size``; both None for a run stored before results were recorded with a digest)."""

    ref: str
    sha256: str | None = None
    size: int | None = None

    @classmethod
    def of_bytes(cls, ref: str, data: bytes) -> StoredResult:
        """The record of ``data`` stored at ``ref``."""
        import hashlib

        return cls(ref, hashlib.sha256(data).hexdigest(), len(data))

    @classmethod
    def of_run(cls, run: Run) -> StoredResult | None:
        """The record ``run`` carries (None: its result, if any, is on the run itself)."""
        if run.result_ref is None:
            return None
        return cls(run.result_ref, run.result_sha256, run.result_size)

    @property
    def verified(self) -> bool:
        """Whether there is a record to check the bytes against."""
        return self.sha256 is not None and self.size is not None

    def check(self, data: bytes, *, trust_unverified: bool = False) -> bytes:
        """``data`` when it is exactly the bytes the run stored; else `IntegrityError` (nothing
        may unpickle them). Without a record, refused unless ``trust_unverified``."""
        import hashlib
        import hmac

        from conveyor.errors import IntegrityError

        if not self.verified:
            if trust_unverified:
                return data
            raise IntegrityError(
                f"result {self.ref} has no recorded digest (stored before results were "
                "verified): refusing to unpickle it",
                path=self.ref,
                hint="run the flow again to store a verified result, or pass "
                "--trust-unverified (trust_unverified=True) if you trust everyone who can "
                "write that store",
            )
        if len(data) != self.size:
            raise IntegrityError(
                f"result {self.ref} is {len(data)} bytes, the run stored {self.size}: "
                "refusing to unpickle it",
                path=self.ref,
            )
        actual = hashlib.sha256(data).hexdigest()
        if not hmac.compare_digest(actual, str(self.sha256)):
            raise IntegrityError(
                f"result {self.ref} does not match the digest the run recorded "
                f"(sha256 {actual[:12]}…, expected {str(self.sha256)[:12]}…): "
                "refusing to unpickle it",
                path=self.ref,
            )
        return data

    def loads(self, data: bytes, *, trust_unverified: bool = False) -> Any:
        """Unpickle ``data`` once `check` has passed (classes of the flow's code must be
        importable here)."""
        import pickle

        checked = self.check(data, trust_unverified=trust_unverified)
        return pickle.loads(checked)  # noqa: S301 - exactly the bytes the run recorded


def is_json_result(value: Any) -> bool:
    """True when ``value`` comes back from a JSON round trip exactly as it went in, and the
    server can store it (`conveyor._values`: valid Unicode without NUL, not nested too deep)."""
    from conveyor._values import value_problem

    try:
        if value_problem(value) is not None:
            return False
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return False
    try:
        return bool(json.loads(text) == value) and _same_shape(json.loads(text), value)
    except Exception:  # a user type with a strange __eq__
        return False


def _same_shape(decoded: Any, value: Any) -> bool:
    # ``1 == 1.0 == True`` and ``(1,) != [1]`` hide type changes from ``==``: compare types too.
    if type(decoded) is not type(value):
        return False
    if isinstance(value, dict):
        return all(_same_shape(decoded[k], v) for k, v in value.items())
    if isinstance(value, list):
        return all(_same_shape(d, v) for d, v in zip(decoded, value, strict=True))
    return True

"""Hiding the secret values a worker handed to a run, in everything the run's logs carry.

The worker knows every secret it injects into a run: the job variables' ``env`` values that are
`Secret`\\ s after template resolution, and what ``${NAME}`` / ``{{ secrets.NAME }}`` templates of
the run's pull steps resolved to. A flow can still print them; CI systems answer that by masking
the known values in the output stream, and so does `SecretMask`:

- `SecretMask.add` registers a value together with its base64 forms: standard and URL-safe
  alphabets, with and without padding, and the stretch of base64 that encodes the value inside a
  longer base64 text at each of the three byte alignments (``user:<token>`` encoded for a basic
  auth header still shows the token's stretch);
- `SecretMask.apply` replaces every occurrence of every registered form with ``****``, longest
  first, in one regular-expression pass.

Values shorter than `MIN_LENGTH` characters are not masked (masking ``1`` or ``on`` would garble
every line and such a value protects nothing); neither are base64 stretches shorter than
`MIN_LENGTH`.
"""

from __future__ import annotations

import base64
import re
import threading

from conveyor.secrets import REDACTED

__all__ = ["MIN_LENGTH", "SecretMask", "encoded_forms"]

MIN_LENGTH = 4


def encoded_forms(value: str) -> set[str]:
    """``value`` and the base64 texts that reveal it (see the module docstring)."""
    raw = value.encode()
    forms = {value}
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode()
        forms.update({whole, whole.rstrip("=")})
        for shift in range(3):
            padded = encode(b"\0" * shift + raw + b"\0\0").decode()
            start = -(-8 * shift // 6)  # the first character made only of the value's bits
            end = 8 * (shift + len(raw)) // 6  # one past the last such character
            forms.add(padded[start:end])
    return {form for form in forms if len(form) >= MIN_LENGTH}


class SecretMask:
    """The secret values of one run, and the function that hides them in a text (thread-safe)."""

    def __init__(self) -> None:
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        """Hide ``value`` (and its base64 forms) from now on."""
        if len(value) < MIN_LENGTH:
            return
        forms = encoded_forms(value)
        with self._lock:
            if forms <= self._forms:
                return
            self._forms |= forms
            ordered = sorted(self._forms, key=lambda f: (-len(f), f))
            self._pattern = re.compile("|".join(re.escape(f) for f in ordered))

    def apply(self, text: str) -> str:
        """``text`` with every registered form replaced by ``****``."""
        pattern = self._pattern
        return text if pattern is None else pattern.sub(REDACTED, text)

    def __bool__(self) -> bool:
        return self._pattern is not None

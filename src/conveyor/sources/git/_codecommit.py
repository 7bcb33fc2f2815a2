"""AWS CodeCommit over HTTPS with IAM credentials: the SigV4-derived git password.

This is what ``git-remote-codecommit`` and ``aws codecommit credential-helper`` compute: the user
name is the access key id (``%<session token>`` appended for temporary credentials), the password
is ``<timestamp>Z<signature>`` where the signature is AWS Signature Version 4 over the canonical
request ``GIT\\n<path>\\n\\nhost:<host>\\n\\nhost\\n`` for service ``codecommit``. Stdlib only;
no boto3 needed. It is tested against a loopback server that checks the same signature, not
against AWS itself (no network in tests).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime
from urllib.parse import urlsplit

from conveyor.errors import ConfigError

__all__ = ["codecommit_region", "codecommit_url", "sign_codecommit"]

_HOST = re.compile(r"^git-codecommit(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")
_REPO = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_REGION = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d$")


def codecommit_url(repository: str, *, region: str) -> str:
    """``https://git-codecommit.<region>.amazonaws.com/v1/repos/<repository>``."""
    if not _REPO.match(repository) or repository.startswith("-"):
        raise ConfigError(f"{repository!r} is not a CodeCommit repository name")
    if not _REGION.match(region):
        raise ConfigError(f"{region!r} is not an AWS region", hint="e.g. us-east-1")
    return f"https://git-codecommit.{region}.amazonaws.com/v1/repos/{repository}"


def codecommit_region(url: str) -> str | None:
    """The region in a CodeCommit HTTPS URL's host name, or None for any other host."""
    match = _HOST.match(urlsplit(url).hostname or "")
    return match.group(1) if match else None


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sign_codecommit(
    url: str, *, secret_access_key: str, region: str, now: datetime | None = None
) -> str:
    """The git password for ``url``: ``<YYYYmmddTHHMMSS>Z<hex signature>`` (valid ~15 minutes)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    path = parts.path or "/"
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S")
    day = stamp[:8]
    scope = f"{day}/{region}/codecommit/aws4_request"
    canonical = f"GIT\n{path}\n\nhost:{host}\n\nhost\n"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(f"AWS4{secret_access_key}".encode(), day)
    for part in (region, "codecommit", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{stamp}Z{signature}"

"""How blob-store failures read: an S3 bucket in another region (a 301 from a real HTTP server on
loopback), and the hint of an unclassified failure."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from conveyor.errors import SourceError
from conveyor.settings import Settings
from conveyor.sources.base import FetchContext
from conveyor.sources.blob import BlobStorage
from conveyor.sources.blob._errors import translate

_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>PermanentRedirect</Code>'
    b"<Message>The bucket you are attempting to access must be addressed using the specified "
    b"endpoint.</Message><Endpoint>b.s3.eu-west-1.amazonaws.com</Endpoint></Error>"
)


class _Redirect(BaseHTTPRequestHandler):
    """S3 as it answers a client set to the wrong region: 301 with ``x-amz-bucket-region``."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = b"" if self.command == "HEAD" else _BODY
        self.send_response(301)
        self.send_header("x-amz-bucket-region", "eu-west-1")
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = _answer


@pytest.fixture
def redirecting_s3() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirect)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.mark.parametrize("mode", ["auto", "folder"])  # a HEAD first, a listing first
def test_a_bucket_in_another_region_names_the_region(
    redirecting_s3: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", redirecting_s3)
    monkeypatch.setenv("CONVEYOR_NETWORK_RETRY_SECONDS", "0")
    ctx = FetchContext(settings=Settings.from_env())
    with pytest.raises(SourceError) as caught:
        BlobStorage("s3://b/flows", mode=mode).resolve(ctx)
    message = str(caught.value)
    assert "the bucket is in eu-west-1; set the region (AWS_DEFAULT_REGION=eu-west-1" in message
    assert "\n" not in message


def test_an_unclassified_failure_points_to_the_debug_option() -> None:
    error = translate(RuntimeError("odd"), where="s3://b/x")
    assert "--verbose" not in str(error.hint)
    assert "conveyor --debug worker start" in str(error.hint)

"""TLS and the client: a client of an ``https://`` server verifies the server's certificate
(against ``SSL_CERT_FILE`` when set), and the transport of a plain ``http://`` server's client,
built without a CA bundle, can never make an unverified TLS connection: through it, a TLS
handshake fails even with a server that a verifying client trusts.

The TLS server is a real one on 127.0.0.1 (Python's HTTP server behind a self-signed
certificate for 127.0.0.1), answering ``GET /api/pools`` with an empty list."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conveyor.client import ConveyorClient, plain_http_transport
from conveyor.errors import ServerUnavailable


class _Pools(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"[]" if self.path == "/api/pools" else b'{"detail": "not found"}'
        self.send_response(200 if self.path == "/api/pools" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``(https URL, certificate file)`` of a TLS server on a free loopback port."""
    cert_file, key_file = _self_signed(tmp_path_factory.mktemp("tls"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pools)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert_file
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_the_server_answers_a_client_that_trusts_its_certificate(tls_server):
    # The control for the tests below: their failures are the verification's, not the server's
    url, cert_file = tls_server
    trusting = ssl.create_default_context(cafile=str(cert_file))
    response = httpx.get(f"{url}/api/pools", verify=trusting, timeout=10)
    assert response.status_code == 200
    assert response.json() == []


def test_an_https_servers_client_verifies_the_certificate(tls_server, monkeypatch):
    url, cert_file = tls_server
    assert plain_http_transport(url) is None  # httpx's verifying default
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with ConveyorClient(url, retries=0, timeout=10) as client:
        with pytest.raises(ServerUnavailable) as info:
            client.list_pools()
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    # ...and trusts it once the environment names it, as httpx's default does
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    with ConveyorClient(url, retries=0, timeout=10) as client:
        assert client.list_pools() == []


def test_a_plain_http_servers_transport_cannot_make_an_unverified_tls_connection(
    tls_server, monkeypatch
):
    # Given the transport a client of an http:// server gets (no CA bundle loaded), built while
    # the environment names the TLS server's certificate (which httpx's default would trust)
    url, cert_file = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    transport = plain_http_transport("HTTP://127.0.0.1:9")
    assert transport is not None
    # When a TLS connection is forced through it, to that server (its certificate valid for
    # the address and trusted by the control above)
    with httpx.Client(transport=transport, timeout=10) as http:
        with pytest.raises(httpx.ConnectError) as info:
            http.get(f"{url}/api/pools")
    # Then the handshake fails: it trusts no authority at all
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)

"""A small synchronous client for the daemon's API, over TCP or its unix admin socket.

Over HTTPS the client pins the box's certificate: the SHA-256 of its DER form, given as the
address's fragment (`https://HOST:PORT#sha256=HEX`), else `$STOREBOX_API_PIN`; with a
config, `api_address` adds the pin of the certificate in the state directory (or
`api.tls_cert_file`). Without any pin the system's CA store verifies the server.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from firmware.config import Config
from firmware.config.listeners import wants_tls
from firmware.errors import ApiClientError
from firmware.tls import (
    CERT_NAME,
    PinMismatch,
    cert_sha256,
    check_pin,
    normalise_pin,
    pinning_client_context,
)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


class _PinnedConnection(http.client.HTTPSConnection):
    """HTTPS that trusts exactly one certificate: the one whose SHA-256 is `pin`."""

    def __init__(self, host: str, port: int | None, timeout: float, pin: str) -> None:
        super().__init__(host, port, timeout=timeout, context=pinning_client_context())
        self.pin = pin

    def connect(self) -> None:
        super().connect()
        assert isinstance(self.sock, ssl.SSLSocket)
        try:
            check_pin(self.sock, self.pin)
        except PinMismatch:
            self.sock.close()
            raise


def certificate_pin(config: Config) -> str | None:
    """The SHA-256 of the API's certificate as this box keeps it, if readable here."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    path = Path(config.api.tls_cert_file or Path(config.device.state_dir) / CERT_NAME)
    try:
        cert = x509.load_pem_x509_certificates(path.read_bytes())[0]
    except (OSError, ValueError, IndexError):
        return None
    return cert_sha256(cert.public_bytes(Encoding.DER))


def with_pin(address: str, pin: str | None) -> str:
    """`address` carrying `pin` as its fragment (https:// only)."""
    parts = urlsplit(address)
    if parts.scheme != "https" or not pin or parts.fragment:
        return address
    return urlunsplit(parts._replace(fragment=f"sha256={normalise_pin(pin)}"))


def api_address(config: Config | None, override: str | None) -> str:
    """The API's address: `--api` if given, else the admin socket, else the TCP listener."""
    if override:
        return override
    if config is None:
        return "http://127.0.0.1:8470"
    if config.api.admin_socket and Path(config.api.admin_socket).exists():
        return f"unix:{config.api.admin_socket}"
    host, _, port = config.api.listen.rpartition(":")
    if host in ("0.0.0.0", "", "[::]", "::"):
        host = "127.0.0.1"
    if not wants_tls(config.api.tls, host):
        return f"http://{host}:{port}"
    return with_pin(f"https://{host}:{port}", certificate_pin(config))


def read_token(config: Config | None) -> str:
    """The token the CLI presents: `$STOREBOX_TOKEN`, else the first plain token of a
    tokens file in the old form, else none. A file of hashes (`storebox token`) holds no
    token to present; on the box the CLI goes over the admin socket, which needs none
    (its file permissions make the caller admin)."""
    from_env = os.environ.get("STOREBOX_TOKEN", "").strip()
    if from_env or config is None:
        return from_env
    try:
        lines = Path(config.api.tokens_file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return ""
    return next((t.strip() for t in lines
                 if t.strip() and not t.lstrip().startswith("#") and len(t.split()) == 1), "")


def get_json(address: str, path: str, token: str, timeout: float = 5.0,
             method: str = "GET") -> dict[str, Any]:
    """GET (or `method`) `path` from the API at `address` (http://HOST:PORT or unix:/PATH)."""
    conn: http.client.HTTPConnection
    if address.startswith("unix:"):
        conn = _UnixConnection(address[5:], timeout)
    else:
        parts = urlsplit(address)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ApiClientError(address, "expected http://HOST:PORT or unix:/PATH")
        conn = _tcp_connection(address, timeout)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        body = response.read()
    except PinMismatch as exc:
        raise ApiClientError(address, f"not the pinned box: {exc}") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise ApiClientError(address, str(exc) or type(exc).__name__) from exc
    finally:
        conn.close()
    if response.status == 401:
        raise ApiClientError(address, "401 unauthorized: no valid token (set STOREBOX_TOKEN, "
                                      "or use the admin socket on the box)")
    if response.status == 403:
        raise ApiClientError(address, f"403 forbidden: the token lacks the scope {path} needs "
                                      "(`storebox token list` shows each token's scopes)")
    if response.status == 429:
        raise ApiClientError(address, "429: too many failed authentications from this "
                                      f"address; retry after {response.getheader('Retry-After')} s")
    if response.status not in (200, 202):
        raise ApiClientError(address, f"HTTP {response.status} for {path}")
    try:
        data: dict[str, Any] = json.loads(body)
    except ValueError as exc:
        raise ApiClientError(address, f"answer to {path} is not JSON") from exc
    return data


def _tcp_connection(address: str, timeout: float) -> http.client.HTTPConnection:
    """http://, or https:// pinned by the fragment or $STOREBOX_API_PIN (else CA-verified)."""
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiClientError(address, "expected http(s)://HOST:PORT or unix:/PATH")
    if parts.scheme == "http":
        return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    from os import environ

    pin = parts.fragment.removeprefix("sha256=") or environ.get("STOREBOX_API_PIN", "")
    if not pin:
        return http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        pin = normalise_pin(pin)
    except ValueError as exc:
        raise ApiClientError(address, str(exc)) from exc
    return _PinnedConnection(parts.hostname, parts.port, timeout, pin)

"""A small synchronous client for the daemon's API, over TCP or its unix admin socket."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from firmware.config import Config
from firmware.errors import ApiClientError


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


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
    return f"http://{host}:{port}"


def read_token(config: Config | None) -> str:
    if config is None:
        return ""
    try:
        lines = Path(config.api.tokens_file).read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    return next((t.strip() for t in lines if t.strip() and not t.startswith("#")), "")


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
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(parts.hostname, parts.port, timeout=timeout)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise ApiClientError(address, str(exc) or type(exc).__name__) from exc
    finally:
        conn.close()
    if response.status == 401:
        raise ApiClientError(address, "401 unauthorized: no valid token (check api.tokens_file)")
    if response.status not in (200, 202):
        raise ApiClientError(address, f"HTTP {response.status} for {path}")
    try:
        data: dict[str, Any] = json.loads(body)
    except ValueError as exc:
        raise ApiClientError(address, f"answer to {path} is not JSON") from exc
    return data

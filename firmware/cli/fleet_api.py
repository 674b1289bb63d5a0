"""The fleet server's JSON API as the CLI reaches it: which server (`--server URL`, else
the `listen` of `--config`, else http://127.0.0.1:8480), GET and POST."""

from __future__ import annotations

import argparse
import contextlib
import json
import urllib.error
import urllib.request
from typing import Any

DEFAULT_SERVER = "http://127.0.0.1:8480"
#: What a failed request raises (the caller prints it as one line).
API_ERRORS = (urllib.error.URLError, OSError, ValueError)


def add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default=None, help=f"the fleet server (default "
                        f"{DEFAULT_SERVER} or the listen of --config)")
    parser.add_argument("--config", default=None, help="TOML with [fleet_server]")


def server_url(args: argparse.Namespace) -> str:
    if args.server:
        return str(args.server).rstrip("/")
    if args.config:
        from firmware.fleet_server.config import load

        host, port = load(args.config).host_port
        return f"http://{host}:{port}"
    return DEFAULT_SERVER


def fetch(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (http only)
        return json.load(response)


def post(url: str, body: dict[str, Any]) -> Any:
    """POST JSON; an HTTP error becomes ValueError with the server's own message."""
    request = urllib.request.Request(  # noqa: S310 (http only)
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return json.load(response)
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        with contextlib.suppress(ValueError, KeyError, TypeError):
            text = json.loads(text)["error"]
        raise ValueError(f"HTTP {exc.code}: {text}") from None

"""The local HTTP API: /healthz, /v1/status, /metrics, and the routes other packages add.

Every request but `GET /healthz` needs `Authorization: Bearer <token>`
(CONTRACTS §3). A refused request is logged with its path and peer, never the
token.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from firmware.state import BoxState
from firmware.status import status_document
from firmware.tokens import TokenStore

log = logging.getLogger("storebox.api")

STATE_KEY = web.AppKey("state", BoxState)
TOKENS_KEY = web.AppKey("tokens", TokenStore)
REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)

#: Event data come from many components; anything not JSON-native is shown as text.
_dumps = functools.partial(json.dumps, default=str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return {"error": error}


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "GET" and request.path == "/healthz":
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not request.app[TOKENS_KEY].check(token.strip()):
        log.warning("401 %s %s from %s: %s", request.method, request.path,
                    request.remote or "unix socket",
                    "no token presented" if not token else "token not accepted")
        return web.json_response(
            error_body("unauthorized", "a valid bearer token is required"), status=401,
            headers={"WWW-Authenticate": 'Bearer realm="storebox"'})
    return await handler(request)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "phase": request.app[STATE_KEY].phase})


async def status(request: web.Request) -> web.Response:
    return web.json_response(status_document(request.app[STATE_KEY]), dumps=_dumps)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(state: BoxState, tokens: TokenStore, registry: CollectorRegistry,
              client_max_size: int = 16 * 1024) -> web.Application:
    """The aiohttp application; callers add their own routes before it starts."""
    app = web.Application(middlewares=[auth_middleware], client_max_size=client_max_size)
    app[STATE_KEY] = state
    app[TOKENS_KEY] = tokens
    app[REGISTRY_KEY] = registry
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/metrics", metrics)
    return app

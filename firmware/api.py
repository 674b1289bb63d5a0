"""The local HTTP API: /healthz, /v1/openapi.json, /v1/status, /metrics, and the routes other
packages add (every route and its answers: docs/openapi.json).

Every request but `GET /healthz` needs `Authorization: Bearer <token>` (docs/openapi.json)
whose token has the route's scope (§3a): `ROUTE_SCOPES` below is the one table of every
route and the scope it needs. A route missing from it is refused to everyone (403, and an
error logged at start-up), so a new route cannot be reachable by accident.

- no or unknown token: 401; a token without the route's scope: 403 `forbidden`.
- A caller on the admin unix socket (`api.admin_socket`) is admin by the socket's file
  permissions (socket not accessible to others, its directory owned by the daemon's user
  and writable by nobody else): it needs no token. When those permissions are wrong the
  socket gets no such trust and its callers need a token like anyone else.
- Failed authentications are limited per source address (`AuthLimiter`, a token bucket):
  after `burst` failures a source gets 429 with Retry-After, without its token even being
  looked at, until the bucket refills. Refusals are logged once per window per source,
  with a count, never per request and never with the token.
- `Authorization` or `Idempotency-Key` sent twice: 400 `duplicate_header` (the header
  named in `field`), whatever the route, before the token is looked at.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.resources
import json
import logging
import math
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from firmware.state import BoxState
from firmware.status import status_document
from firmware.tokens import SCOPES, TokenStore

log = logging.getLogger("storebox.api")

#: Needs no token at all.
OPEN = "open"
#: (method, canonical path) → the scope a token needs, or OPEN. HEAD goes as GET. Every
#: route the box registers must be here (tests/security/test_scopes.py checks it).
ROUTE_SCOPES: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): OPEN,
    # open: the interface's description (docs/openapi.json), the same for every box of a
    # version and published with the source; it names nothing about this box and an
    # integrator reads it before any token is issued
    ("GET", "/v1/openapi.json"): OPEN,
    # read: the box's state for technicians and monitoring
    ("GET", "/v1/status"): "read",
    ("GET", "/metrics"): "read",
    ("GET", "/v1/queue"): "read",
    # pos: the tills (payments_cache/api.py)
    ("POST", "/v1/payments"): "pos",
    ("GET", "/v1/payments/{payment_id}"): "pos",
    # admin: changes what the box does (firmware/components/payments.py)
    ("POST", "/v1/queue/drain"): "admin",
    ("POST", "/v1/keys/rotate"): "admin",
    ("POST", "/v1/queue/{payment_id}/requeue"): "admin",
}
assert set(ROUTE_SCOPES.values()) <= {OPEN, *SCOPES}, "ROUTE_SCOPES names an unknown scope"
#: For a path that matches no route (404/405): any valid token, then the 404/405.
AUTHENTICATED = "any"

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


# --------------------------------------------------------------------------- scopes


def route_scope(method: str, canonical: str) -> str | None:
    """The scope `method canonical` needs, OPEN, or None when the route declared none."""
    return ROUTE_SCOPES.get(("GET" if method == "HEAD" else method, canonical))


def registered_routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, canonical path) of every route on `app` (HEAD twins included)."""
    return [(route.method, route.resource.canonical) for route in app.router.routes()
            if route.resource is not None]


def undeclared_routes(app: web.Application) -> list[tuple[str, str]]:
    """Routes on `app` missing from ROUTE_SCOPES: refused to everyone."""
    return [r for r in registered_routes(app) if route_scope(*r) is None]


async def _check_scopes(app: web.Application) -> None:
    for method, path in undeclared_routes(app):
        log.error("route %s %s has no scope in firmware.api.ROUTE_SCOPES: it is refused "
                  "(403) to everyone", method, path)


# --------------------------------------------------------------------------- rate limit


@dataclass
class _Source:
    tokens: float
    updated: float
    #: Start of the current log window, None when none is open.
    window_start: float | None = None
    #: Refusals in the window after the first (which was logged).
    unlogged: int = 0
    #: Of all refusals in the window, how many were 429 (token not even looked at).
    limited: int = 0


class AuthLimiter:
    """Failed authentications per source address: a token bucket (`burst` failures, one
    more every `refill_s`), and log lines at most one per `window_s` per source plus one
    summary with the count. `monotonic` is injectable so the tests need no sleep."""

    def __init__(self, burst: int = 10, refill_s: float = 6.0, window_s: float = 60.0,
                 max_sources: int = 4096, monotonic: Callable[[], float] = time.monotonic,
                 logger: logging.Logger | None = None, timers: bool = True) -> None:
        self.burst = burst
        self.refill_s = refill_s
        self.window_s = window_s
        self.max_sources = max_sources
        self.monotonic = monotonic
        self.log = logger or log
        #: Flush summaries from the event loop at the end of a window (off in tests, which
        #: call flush() with their own monotonic clock).
        self.timers = timers
        self._sources: dict[str, _Source] = {}
        self._timer: asyncio.TimerHandle | None = None

    def _source(self, source: str, now: float) -> _Source:
        entry = self._sources.get(source)
        if entry is None:
            if len(self._sources) >= self.max_sources:
                self.flush()
            while len(self._sources) >= self.max_sources:  # still full: forget the oldest
                self._sources.pop(next(iter(self._sources)))
            entry = self._sources[source] = _Source(float(self.burst), now)
        else:
            entry.tokens = min(float(self.burst),
                               entry.tokens + (now - entry.updated) / self.refill_s)
            entry.updated = now
        return entry

    def retry_after(self, source: str, what: str) -> float | None:
        """Seconds until `source` may try again, or None when it may try now. A refused
        attempt counts (and is logged as `what` if it opens a window)."""
        entry = self._sources.get(source)
        if entry is None:
            return None
        now = self.monotonic()
        entry = self._source(source, now)
        if entry.tokens >= 1.0:
            return None
        entry.limited += 1
        self._note(source, entry, now, f"429 {what}: too many failed authentications")
        return (1.0 - entry.tokens) * self.refill_s

    def failed(self, source: str, what: str) -> None:
        """A failed authentication from `source`: one token from its bucket."""
        now = self.monotonic()
        entry = self._source(source, now)
        entry.tokens = max(0.0, entry.tokens - 1.0)
        self._note(source, entry, now, what)

    def _note(self, source: str, entry: _Source, now: float, what: str) -> None:
        if entry.window_start is not None and now - entry.window_start < self.window_s:
            entry.unlogged += 1
            return
        self._summarise(source, entry)
        entry.window_start, entry.unlogged, entry.limited = now, 0, 0
        self.log.warning("%s (further refusals from %s are counted, logged once per %.0f s)",
                         what, source, self.window_s)
        self._arm()

    def _summarise(self, source: str, entry: _Source) -> None:
        if entry.unlogged:
            self.log.warning("%d more refused authentications from %s in %.0f s (%d answered "
                             "429 without looking at the token)", entry.unlogged, source,
                             self.window_s, entry.limited)
        entry.window_start, entry.unlogged, entry.limited = None, 0, 0

    def flush(self) -> None:
        """Log the summary of every window that has ended; forget sources that are quiet
        and whole again."""
        now = self.monotonic()
        for source in list(self._sources):
            entry = self._sources[source]
            if entry.window_start is not None and now - entry.window_start >= self.window_s:
                self._summarise(source, entry)
            refilled = entry.tokens + (now - entry.updated) / self.refill_s >= self.burst
            if entry.window_start is None and refilled:
                del self._sources[source]

    def _arm(self) -> None:
        if not self.timers or self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return

        def fire() -> None:
            self._timer = None
            self.flush()
            if any(e.window_start is not None for e in self._sources.values()):
                self._arm()

        self._timer = loop.call_later(self.window_s, fire)


LIMITER_KEY = web.AppKey("auth_limiter", AuthLimiter)


# --------------------------------------------------------------------------- the socket

_untrusted_sockets: set[str] = set()


def socket_is_private(path: str) -> str | None:
    """None when the admin socket at `path` may stand for admin: a socket, owned by this
    process's user, no access for others; its directory owned by this user and writable
    by nobody else. Otherwise why not."""
    uid = os.geteuid()
    try:
        st = os.stat(path)
        parent = os.stat(os.path.dirname(os.path.abspath(path)))
    except OSError as exc:
        return f"cannot stat it: {exc.strerror or exc}"
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != uid or st.st_mode & 0o007:
        return (f"the socket must be ours and not accessible to others (uid {st.st_uid}, "
                f"mode {stat.S_IMODE(st.st_mode):04o})")
    if parent.st_uid != uid or parent.st_mode & 0o022:
        return (f"its directory must be ours and writable by nobody else (uid "
                f"{parent.st_uid}, mode {stat.S_IMODE(parent.st_mode):04o})")
    return None


def on_admin_socket(request: web.Request) -> bool:
    """Whether the request came over the daemon's unix admin socket, trusted as admin."""
    transport = request.transport
    if transport is None:
        return False
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return False
    path = transport.get_extra_info("sockname")
    if not isinstance(path, str) or not path:
        return False
    why = socket_is_private(path)
    if why is None:
        _untrusted_sockets.discard(path)
        return True
    if path not in _untrusted_sockets:
        _untrusted_sockets.add(path)
        log.error("admin socket %s is not private (%s): its callers are not admin and need "
                  "a token", path, why)
    return False


# --------------------------------------------------------------------------- middleware


def _refusal(status: int, code: str, message: str,
             headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    body = error_body(code, message)
    body["error"].update(extra)
    return web.json_response(body, status=status, headers=headers)


#: Headers a request carries at most once. With two, which one counts depends on who
#: reads it (the first, the last, both joined by a comma): a request authenticated by one
#: token and stored under another's name, or stored under one key and replayed under the
#: other, so neither counts: 400 `duplicate_header`, before anything is looked at.
SINGLE_HEADERS = ("Authorization", "Idempotency-Key")


def duplicate_header(request: web.Request) -> str | None:
    """The first of `SINGLE_HEADERS` that `request` carries more than once, or None."""
    for name in SINGLE_HEADERS:
        if len(request.headers.getall(name, ())) > 1:
            return name
    return None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    duplicate = duplicate_header(request)
    if duplicate is not None:
        return _refusal(400, "duplicate_header",
                        f"the {duplicate} header may be sent only once", field=duplicate)
    match = request.match_info
    resource = match.route.resource
    if match.http_exception is not None or resource is None:
        required = AUTHENTICATED  # no such route: who asks must still prove who they are
    else:
        declared = route_scope(request.method, resource.canonical)
        if declared is None:
            log.error("refused %s %s: the route has no scope in ROUTE_SCOPES",
                      request.method, resource.canonical)
            return _refusal(403, "forbidden", "this route declares no scope; refused")
        required = declared
    if required == OPEN or on_admin_socket(request):
        return await handler(request)

    source = request.remote or "unknown"
    what = f"{request.method} {request.path} from {source}"
    limiter = request.app[LIMITER_KEY]
    wait = limiter.retry_after(source, what)
    if wait is not None:
        return _refusal(429, "too_many_failures",
                        "too many failed authentications from this address; try later",
                        headers={"Retry-After": str(max(1, math.ceil(wait)))})
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    entry = None
    if scheme.lower() == "bearer" and token.strip():
        entry = request.app[TOKENS_KEY].authenticate(token.strip())
    if entry is None:
        limiter.failed(source, f"401 {what}: " + (
            "token not accepted" if token.strip() else "no token presented"))
        return _refusal(401, "unauthorized", "a valid bearer token is required",
                        headers={"WWW-Authenticate": 'Bearer realm="storebox"'})
    if required != AUTHENTICATED and required not in entry.scopes:
        log.warning("403 %s: token %r lacks scope %r", what, entry.name, required)
        return _refusal(403, "forbidden", f"this token lacks the {required!r} scope",
                        scope=required)
    return await handler(request)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "phase": request.app[STATE_KEY].phase})


async def status(request: web.Request) -> web.Response:
    return web.json_response(status_document(request.app[STATE_KEY]), dumps=_dumps)


@functools.cache
def openapi_document() -> bytes:
    """docs/openapi.json, shipped in the package as firmware/data/openapi.json."""
    return importlib.resources.files("firmware").joinpath("data/openapi.json").read_bytes()


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=openapi_document(), content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(state: BoxState, tokens: TokenStore, registry: CollectorRegistry,
              client_max_size: int = 16 * 1024,
              limiter: AuthLimiter | None = None) -> web.Application:
    """The aiohttp application; callers add their own routes before it starts (each with a
    scope in ROUTE_SCOPES)."""
    app = web.Application(middlewares=[auth_middleware], client_max_size=client_max_size)
    app[STATE_KEY] = state
    app[TOKENS_KEY] = tokens
    app[REGISTRY_KEY] = registry
    app[LIMITER_KEY] = limiter or AuthLimiter()
    app.on_startup.append(_check_scopes)

    def tokens_reloaded(problem: str | None) -> None:
        if problem:
            state.events.emit("fault", problem, severity="error", reason="tokens_file_refused")

    tokens.on_reload = tokens_reloaded
    tokens_reloaded(tokens.problem)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/openapi.json", openapi)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/metrics", metrics)
    return app

"""The POS API's trust boundary (docs/openapi.json, issue #8): every route has a scope, each
token only its scopes, the admin socket by its permissions, failed authentications rate
limited and logged once per window.

The scope matrix runs against the application the daemon builds (every component's routes,
in-process, aiohttp's test server); the socket and the CLI against the real daemon."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from firmware.api import (
    LIMITER_KEY,
    OPEN,
    ROUTE_SCOPES,
    AuthLimiter,
    build_app,
    registered_routes,
    route_scope,
    undeclared_routes,
)
from firmware.cli.main import main
from firmware.config import load_config
from firmware.daemon import Daemon
from firmware.errors import ApiClientError
from firmware.metrics import registry_for
from firmware.state import BoxState
from firmware.tokens import TokenStore
from tests.support import openapi
from tests.support.clock import ManualClock
from tests.support.daemon import DaemonProcess, write_config, write_tokens

TOKENS = {
    "pos": "pos-only-token-0123456789",
    "read": "read-only-token-0123456789",
    "admin": "admin-only-token-0123456789",
    "all": "all-scopes-token-0123456789",
}
SCOPES_OF = {"pos": {"pos"}, "read": {"read"}, "admin": {"admin"},
             "all": {"pos", "read", "admin"}}
#: No Authorization header; a token the box does not know.
UNKNOWN = {"none": "", "bogus": "bogus-token-0123456789abcdef"}

#: The routes the contract names, with the scope §3a gives them.
CONTRACT = {
    ("GET", "/healthz"): OPEN,
    ("GET", "/v1/openapi.json"): OPEN,
    ("POST", "/v1/payments"): "pos",
    ("GET", "/v1/payments/{payment_id}"): "pos",
    ("GET", "/v1/status"): "read",
    ("GET", "/metrics"): "read",
    ("GET", "/v1/queue"): "read",
    ("POST", "/v1/queue/drain"): "admin",
    ("POST", "/v1/keys/rotate"): "admin",
}


def tokens_for(tmp: Path) -> Path:
    return write_tokens(tmp / "pos-tokens", [
        ("till", "pos", TOKENS["pos"]), ("monitor", "read", TOKENS["read"]),
        ("ops", "admin", TOKENS["admin"]), ("everything", "pos,read,admin", TOKENS["all"])])


def concrete(path: str) -> str:
    return path.replace("{payment_id}", "pay_doesnotexist")


@pytest.fixture
async def daemon_app(tmp_path: Path) -> AsyncIterator[tuple[web.Application, Daemon]]:
    """The application exactly as the daemon builds it: every component's routes."""
    config_path = write_config(tmp_path)
    tokens_for(tmp_path)
    daemon = Daemon(load_config(config_path))
    daemon.app[LIMITER_KEY] = AuthLimiter(burst=100_000, timers=False)
    await daemon._build()
    try:
        yield daemon.app, daemon
    finally:
        await daemon._close()


# --------------------------------------------------------------------------- the table


async def test_every_registered_route_has_a_scope(
        daemon_app: tuple[web.Application, Daemon]) -> None:
    app = daemon_app[0]
    routes = registered_routes(app)
    assert len(routes) >= len(CONTRACT)
    assert undeclared_routes(app) == []
    for method, path in routes:
        assert route_scope(method, path) in (OPEN, "pos", "read", "admin"), (method, path)
    # the contract's routes are there, with the contract's scopes
    for (method, path), scope in CONTRACT.items():
        assert (method, path) in routes
        assert ROUTE_SCOPES[(method, path)] == scope
    # only /healthz and the API's own description (docs/openapi.json) are open
    assert {r for r in routes if route_scope(*r) == OPEN} == {
        ("GET", "/healthz"), ("HEAD", "/healthz"),
        ("GET", "/v1/openapi.json"), ("HEAD", "/v1/openapi.json")}
    # and docs/openapi.json documents exactly the routes the daemon registers
    documented = {(m.upper(), p) for p, item in openapi.spec()["paths"].items() for m in item}
    assert {(m, p) for m, p in routes if m != "HEAD"} == documented


async def test_the_scope_matrix(daemon_app: tuple[web.Application, Daemon]) -> None:
    """Each route by each token: 401 without a known token, 403 `forbidden` without the
    route's scope, through to the handler with it."""
    app = daemon_app[0]
    cells: list[tuple[str, str, str, int]] = []
    async with TestClient(TestServer(app), trace_configs=openapi.trace_configs()) as client:
        for method, path in registered_routes(app):
            scope = route_scope(method, path)
            for who, token in {**TOKENS, **UNKNOWN}.items():
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                async with client.request(method, concrete(path), headers=headers) as r:
                    status = r.status
                    body = await r.json() if r.content_type == "application/json" and \
                        method != "HEAD" else None
                cells.append((method, path, who, status))
                if scope == OPEN:
                    assert status == 200, (method, path, who)
                elif who in UNKNOWN:
                    assert status == 401, (method, path, who, status)
                    if body is not None:
                        assert body["error"]["code"] == "unauthorized"
                elif scope in SCOPES_OF[who]:
                    assert status not in (401, 403, 429), (method, path, who, status, body)
                else:
                    assert status == 403, (method, path, who, status)
                    if body is not None:
                        assert body["error"]["code"] == "forbidden"
                        assert body["error"]["scope"] == scope
    # the case in plain words: a POS token cannot rotate keys nor drain the queue
    assert ("POST", "/v1/keys/rotate", "pos", 403) in cells
    assert ("POST", "/v1/queue/drain", "pos", 403) in cells
    assert ("POST", "/v1/keys/rotate", "admin", 200) in cells
    assert ("POST", "/v1/queue/drain", "admin", 202) in cells
    assert ("GET", "/v1/status", "pos", 403) in cells
    assert ("GET", "/v1/status", "read", 200) in cells
    assert ("POST", "/v1/payments", "read", 403) in cells
    assert ("POST", "/v1/payments", "pos", 400) in cells  # reached validation


async def test_unknown_paths_need_a_token_before_the_404(
        daemon_app: tuple[web.Application, Daemon]) -> None:
    async with TestClient(TestServer(daemon_app[0])) as client:
        assert (await client.get("/v1/nothing")).status == 401
        assert (await client.get("/v1/nothing", headers={
            "Authorization": f"Bearer {TOKENS['pos']}"})).status == 404
        assert (await client.delete("/v1/status", headers={
            "Authorization": f"Bearer {TOKENS['read']}"})).status == 405


def small_app(tmp_path: Path, limiter: AuthLimiter | None = None) -> web.Application:
    state = BoxState("store-test", "test")
    tokens = TokenStore(str(tokens_for(tmp_path)))
    return build_app(state, tokens, registry_for(state), limiter=limiter)


async def test_a_route_without_a_scope_is_refused_to_everyone(tmp_path: Path,
                                                              caplog: Any) -> None:
    app = small_app(tmp_path)

    async def secret(request: web.Request) -> web.Response:
        return web.json_response({"leaked": True})

    app.router.add_post("/v1/new-thing", secret)
    assert undeclared_routes(app) == [("POST", "/v1/new-thing")]
    async with TestClient(TestServer(app)) as client:
        assert "route POST /v1/new-thing has no scope" in caplog.text  # logged at start
        for token in TOKENS.values():
            r = await client.post("/v1/new-thing", headers={"Authorization": f"Bearer {token}"})
            assert r.status == 403
            assert (await r.json())["error"]["code"] == "forbidden"
        assert (await client.post("/v1/new-thing")).status == 403


# --------------------------------------------------------------------------- the admin socket


async def test_the_admin_socket_is_admin_only_while_it_is_private(tmp_path: Path,
                                                                  caplog: Any) -> None:
    app = small_app(tmp_path)

    async def drain(request: web.Request) -> web.Response:
        return web.json_response({"draining": True}, status=202)

    app.router.add_post("/v1/queue/drain", drain)
    sock_dir = tmp_path / "run"
    sock_dir.mkdir(mode=0o700)
    path = sock_dir / "api.sock"
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.UnixSite(runner, str(path)).start()
        os.chmod(path, 0o600)
        connector = aiohttp.UnixConnector(path=str(path))
        async with aiohttp.ClientSession(connector=connector) as session:
            async def status(method: str, url: str, token: str = "") -> int:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                async with session.request(method, f"http://box{url}", headers=headers) as r:
                    return r.status

            assert await status("GET", "/v1/status") == 200
            assert await status("POST", "/v1/queue/drain") == 202
            assert await status("POST", "/v1/queue/drain", TOKENS["pos"]) == 202  # ignored
            os.chmod(path, 0o660)  # the group may connect: still private enough
            assert await status("POST", "/v1/queue/drain") == 202

            os.chmod(path, 0o666)  # anyone may connect: no longer admin by permissions
            assert await status("GET", "/v1/status") == 401
            assert await status("POST", "/v1/queue/drain", TOKENS["pos"]) == 403
            assert await status("POST", "/v1/queue/drain", TOKENS["admin"]) == 202
            assert "is not private" in caplog.text
            os.chmod(path, 0o600)
            sock_dir.chmod(0o777)  # a directory others may write: refused as well
            assert await status("GET", "/v1/status") == 401
            sock_dir.chmod(0o700)
            assert await status("GET", "/v1/status") == 200
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------- rate limit


async def test_1000_bad_attempts_get_429_and_two_log_lines(tmp_path: Path, caplog: Any) -> None:
    clock = ManualClock()
    limiter = AuthLimiter(burst=10, refill_s=6.0, window_s=60.0, monotonic=clock.monotonic,
                          timers=False)
    app = small_app(tmp_path, limiter)
    caplog.set_level(logging.INFO, logger="storebox.api")
    statuses: list[int] = []
    retry_after: set[str] = set()
    async with TestClient(TestServer(app), trace_configs=openapi.trace_configs()) as client:
        for i in range(1000):
            async with client.get("/v1/status", headers={
                    "Authorization": f"Bearer guess-{i:04d}-0123456789"}) as r:
                statuses.append(r.status)
                if r.status == 429:
                    retry_after.add(r.headers["Retry-After"])
                    assert (await r.json())["error"]["code"] == "too_many_failures"
        assert statuses[:10] == [401] * 10
        assert statuses[10:] == [429] * 990
        assert retry_after == {"6"}
        # locked out: even the right token is not looked at
        read = {"Authorization": f"Bearer {TOKENS['read']}"}
        assert (await client.get("/v1/status", headers=read)).status == 429
        api_lines = [r for r in caplog.records if r.name == "storebox.api"]
        assert len(api_lines) == 1, [r.getMessage() for r in api_lines]
        assert api_lines[0].getMessage().startswith("401 GET /v1/status from 127.0.0.1: "
                                                    "token not accepted")
        # the window ends: one summary with the count
        clock.advance(60.0)
        limiter.flush()
        api_lines = [r for r in caplog.records if r.name == "storebox.api"]
        assert len(api_lines) == 2
        assert api_lines[1].getMessage() == (
            "1000 more refused authentications from 127.0.0.1 in 60 s (991 answered 429 "
            "without looking at the token)")
        # the bucket refilled (one failure per 6 s): the right token works again
        assert (await client.get("/v1/status", headers=read)).status == 200
        assert not any("guess-" in r.getMessage() for r in caplog.records)


def test_limiter_per_source_refill_and_forgetting(caplog: Any) -> None:
    clock = ManualClock()
    limiter = AuthLimiter(burst=3, refill_s=10.0, window_s=60.0, monotonic=clock.monotonic,
                          timers=False)
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1", "x") is None
        limiter.failed("10.0.0.1", "401 x")
    assert limiter.retry_after("10.0.0.1", "x") == pytest.approx(10.0)
    assert limiter.retry_after("10.0.0.2", "y") is None  # another till is not affected
    clock.advance(4.0)
    assert limiter.retry_after("10.0.0.1", "x") == pytest.approx(6.0)
    clock.advance(6.0)
    assert limiter.retry_after("10.0.0.1", "x") is None  # one attempt more
    limiter.failed("10.0.0.1", "401 x")
    assert limiter.retry_after("10.0.0.1", "x") is not None
    clock.advance(3600.0)
    limiter.flush()
    assert limiter._sources == {}  # quiet and whole again: forgotten


def test_limiter_table_is_bounded() -> None:
    clock = ManualClock()
    limiter = AuthLimiter(burst=2, max_sources=50, monotonic=clock.monotonic, timers=False,
                          logger=logging.getLogger("test.quiet"))
    for i in range(5000):
        limiter.failed(f"10.1.{i // 256}.{i % 256}", "401")
    assert len(limiter._sources) <= 50


def test_one_log_line_per_window_per_source(caplog: Any) -> None:
    clock = ManualClock()
    logger = logging.getLogger("test.limiter")
    limiter = AuthLimiter(burst=5, window_s=60.0, monotonic=clock.monotonic, timers=False,
                          logger=logger)
    caplog.set_level(logging.INFO, logger="test.limiter")
    for _window in range(3):
        for _ in range(100):
            if limiter.retry_after("10.0.0.9", "GET /x from 10.0.0.9") is None:
                limiter.failed("10.0.0.9", "401 GET /x from 10.0.0.9: token not accepted")
            clock.advance(0.5)
        clock.advance(10.0)
    limiter.flush()
    messages = [r.getMessage() for r in caplog.records if r.name == "test.limiter"]
    # a first line and a summary per window: 3 windows (100 attempts each) → 6 lines
    assert len(messages) == 6, messages
    assert sum("more refused authentications from 10.0.0.9" in m for m in messages) == 3


# --------------------------------------------------------------------------- the real daemon


@pytest.fixture
def daemon(netns: str, tmp_path: Path) -> Iterator[DaemonProcess]:
    config = write_config(tmp_path)
    tokens_for(tmp_path)
    proc = DaemonProcess(netns, config, env={"WATCHDOG_USEC": "400000"})
    try:
        proc.notify.wait_for("READY", "1")
        yield proc
    finally:
        proc.stop()


def test_on_the_box_the_cli_needs_no_token(daemon: DaemonProcess,
                                           capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The tokens file holds only hashes: the CLI has no token to send and goes over the
    admin socket, which makes it admin."""
    monkeypatch.delenv("STOREBOX_TOKEN", raising=False)
    config = str(daemon.config)
    assert main(["status", "--json", "--config", config]) == 0
    assert main(["queue", "drain", "--config", config]) == 0
    assert main(["keys", "rotate", "--config", config]) == 0
    assert main(["queue", "stats", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "forwarding the queue now" in out and "new data key" in out


def test_over_tcp_the_token_decides(daemon: DaemonProcess) -> None:
    for path, method in (("/v1/keys/rotate", "POST"), ("/v1/queue/drain", "POST"),
                         ("/v1/status", "GET"), ("/metrics", "GET"), ("/v1/queue", "GET")):
        with pytest.raises(ApiClientError, match="403 forbidden"):
            daemon.get_tcp(path, TOKENS["pos"], method=method)
    with pytest.raises(ApiClientError, match="HTTP 404"):  # reached the handler
        daemon.get_tcp("/v1/payments/pay_doesnotexist", TOKENS["pos"])
    with pytest.raises(ApiClientError, match="403 forbidden"):
        daemon.get_tcp("/v1/payments/pay_doesnotexist", TOKENS["read"])
    assert daemon.get_tcp("/v1/status", TOKENS["read"])["device_id"] == "store-test"
    assert daemon.get_tcp("/v1/queue/drain", TOKENS["admin"], method="POST") == {
        "draining": True}
    with pytest.raises(ApiClientError, match="403 forbidden"):
        daemon.get_tcp("/v1/status", TOKENS["admin"])  # scopes do not imply each other
    log = daemon.log()
    assert "token 'till' lacks scope 'admin'" in log
    assert not any(token in log for token in TOKENS.values())


def test_a_flood_of_bad_tokens_over_tcp_is_limited_and_logged_once(
        daemon: DaemonProcess) -> None:
    statuses = []
    for i in range(40):
        try:
            daemon.get_tcp("/v1/status", f"guess-{i:04d}-0123456789")
        except ApiClientError as exc:
            statuses.append(str(exc).split(": ", 1)[1][:3])
    assert statuses == ["401"] * 10 + ["429"] * 30
    refusals = [line for line in daemon.log().splitlines()
                if "refused authentications" in line or "401 GET /v1/status" in line]
    assert len(refusals) == 1, refusals
    with pytest.raises(ApiClientError, match="429"):  # the right token waits too
        daemon.get_tcp("/v1/status", TOKENS["read"])
    assert daemon.get("/v1/status")["device_id"] == "store-test"  # the socket is not limited


def test_sighup_applies_a_scope_change(daemon: DaemonProcess) -> None:
    with pytest.raises(ApiClientError, match="403"):
        daemon.get_tcp("/v1/status", TOKENS["pos"])
    write_tokens(daemon.config.parent / "pos-tokens", [("till", "pos,read", TOKENS["pos"])])
    before = sum(e["kind"] == "config_reloaded" for e in daemon.get("/v1/status")[
        "recent_events"])
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while sum(e["kind"] == "config_reloaded" for e in daemon.get("/v1/status")[
            "recent_events"]) == before:
        assert time.monotonic() < deadline
        daemon.notify.wait_for("WATCHDOG", "1")
    assert daemon.get_tcp("/v1/status", TOKENS["pos"])["device_id"] == "store-test"
    with pytest.raises(ApiClientError, match="401"):
        daemon.get_tcp("/v1/status", TOKENS["read"])  # the monitor's token is gone

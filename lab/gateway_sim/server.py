"""The simulated gateway as a server: its listeners (the gateway's, and optionally a
separate admin one that keeps working while the gateway refuses connections), its
lifecycle, and the knobs and accounting tests reach in-process. The parts it is made of:
`ledger` (state), `faults` (injection), `rules` (the acquirer's decision), `routes` (the
gateway endpoints) and `admin` (``/_sim/*``)."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from lab.gateway_sim.admin import AdminRoutes
from lab.gateway_sim.faults import FaultInjector, Faults
from lab.gateway_sim.ledger import Ledger, SimStats, StoredAuthorization
from lab.gateway_sim.routes import GatewayRoutes
from lab.gateway_sim.rules import Acquirer, DeclineRules
from payments_cache.sealing import SealOpener

_log = logging.getLogger(__name__)


class GatewaySimulator:
    """The simulated gateway. ``async with GatewaySimulator(key) as sim: sim.url`` or
    ``url = await sim.start()`` … ``await sim.stop()``. `port=0` picks a free port."""

    def __init__(self, merchant_key: str, *, host: str = "127.0.0.1", port: int = 0,
                 faults: Faults | None = None, rules: DeclineRules | None = None,
                 seed: int | None = None, admin_host: str | None = None,
                 admin_port: int | None = None, seal_private_keys: Iterable[bytes] = (),
                 seal_opener: SealOpener | None = None) -> None:
        """`seal_private_keys` (PEM PKCS8 X25519) open ``card_sealed``; they are added to
        `seal_opener` when one is given (shared: keys added to it later count too)."""
        if not merchant_key:
            raise ValueError("merchant_key must not be empty")
        opener = seal_opener if seal_opener is not None else SealOpener()
        for pem in seal_private_keys:
            opener.add_private_key(pem)
        self._merchant_key = merchant_key.encode()
        self._host = host
        self._port = port
        self._admin_host = admin_host if admin_host is not None else host
        self._admin_port = admin_port
        rng = random.Random(seed)  # noqa: S311 - a simulator, not cryptography
        self._ledger = Ledger()
        self._injector = FaultInjector(faults or Faults(), rng, self._ledger)
        self._acquirer = Acquirer(rules or DeclineRules(), rng, opener)
        self._routes = GatewayRoutes(self._merchant_key, self._ledger, self._injector,
                                     self._acquirer)
        self._runner: web.AppRunner | None = None
        self._gateway_site: web.SockSite | None = None
        self._admin_site: web.SockSite | None = None
        self._url: str | None = None
        self._admin_url: str | None = None
        if self.faults.down and self.faults.down_mode == "refuse" and admin_port is None:
            _log.warning("starting with down_mode=refuse and no separate admin listener")

    def __repr__(self) -> str:
        return f"<GatewaySimulator url={self._url!r} faults={self.faults!r}>"

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> str:
        """Listen; return the gateway's base URL (``http://host:port``)."""
        if self._runner is not None:
            raise RuntimeError("the simulator is already running")
        self._routes.stopping = asyncio.Event()
        app = web.Application()
        app.add_routes([*self._routes.routes(), *AdminRoutes(self).routes()])
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        self._runner = runner
        try:
            await self._listen_all(runner)
        except BaseException:
            await self.stop()
            raise
        _log.info("gateway simulator listening on %s", self._url)
        return self.url

    async def _listen_all(self, runner: web.AppRunner) -> None:
        gateway_sock = _listen(self._host, self._port)
        self._port = gateway_sock.getsockname()[1]
        self._url = _base_url(self._host, self._port)
        if self._admin_port is not None:
            admin_sock = _listen(self._admin_host, self._admin_port)
            self._admin_port = admin_sock.getsockname()[1]
            self._admin_url = _base_url(self._admin_host, self._admin_port)
            self._admin_site = web.SockSite(runner, admin_sock)
            await self._admin_site.start()
        else:
            self._admin_url = self._url
        if self.faults.down and self.faults.down_mode == "refuse":
            gateway_sock.close()
        else:
            self._gateway_site = web.SockSite(runner, gateway_sock)
            await self._gateway_site.start()

    async def stop(self) -> None:
        """Stop listening; requests still being processed are abandoned unstored."""
        self._routes.stopping.set()
        self._routes.released.set()
        runner, self._runner = self._runner, None
        self._gateway_site = self._admin_site = None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """The gateway's base URL (the same while it is down)."""
        if self._url is None:
            raise RuntimeError("the simulator is not started")
        return self._url

    @property
    def admin_url(self) -> str:
        """Where the ``/_sim/*`` endpoints are reachable: `url` unless separate."""
        if self._admin_url is None:
            raise RuntimeError("the simulator is not started")
        return self._admin_url

    @property
    def merchant_key(self) -> str:
        return self._merchant_key.decode()


    @property
    def seal_opener(self) -> SealOpener:
        """The private keys that open ``card_sealed`` (add keys to rotate)."""
        return self._acquirer.opener

    @property
    def has_admin_listener(self) -> bool:
        """Whether ``/_sim/*`` has a listener of its own (running)."""
        return self._admin_site is not None

    # ---------------------------------------------------------------- faults and rules

    @property
    def faults(self) -> Faults:
        return self._injector.faults

    async def set_faults(self, faults: Faults | None = None, /, **changes: Any) -> Faults:
        """Replace the faults (`faults`) and/or change some (`changes`, by field name).
        Taking the gateway down in ``refuse`` mode closes its listener; bringing it up
        listens again on the same port. Returns the faults now in force."""
        new = (faults or self.faults).merged(changes)
        old, self._injector.faults = self.faults, new
        refuse_before = old.down and old.down_mode == "refuse"
        refuse_now = new.down and new.down_mode == "refuse"
        if self._runner is not None and refuse_before != refuse_now:
            if refuse_now:
                await self._close_gateway_listener()
            else:
                await self._open_gateway_listener()
        _log.info("faults now %s", new)
        return new

    @property
    def rules(self) -> DeclineRules:
        return self._acquirer.rules

    def set_rules(self, rules: DeclineRules | None = None, /, **changes: Any) -> DeclineRules:
        """Replace the decline rules and/or change some of them by field name."""
        self._acquirer.rules = (rules or self.rules).merged(changes)
        return self._acquirer.rules

    async def _close_gateway_listener(self) -> None:
        site, self._gateway_site = self._gateway_site, None
        if site is not None:
            await site.stop()
        runner = self._runner
        server = runner.server if runner is not None else None
        if server is None:
            return
        for handler in server.connections:
            transport = handler.transport
            if transport is None:
                continue
            sockname = transport.get_extra_info("sockname")
            if isinstance(sockname, tuple) and sockname[1] == self._port:
                handler.close()  # idle keep-alive: now; busy: after its answer

    async def _open_gateway_listener(self) -> None:
        if self._gateway_site is not None or self._runner is None:
            return
        site = web.SockSite(self._runner, _listen(self._host, self._port))
        await site.start()
        self._gateway_site = site


    # ---------------------------------------------------------------- accounting

    def stats(self) -> SimStats:
        """A snapshot of every counter."""
        return self._ledger.stats()

    def processed_count(self, payment_id: str) -> int:
        """How many times `payment_id` was processed: 0 or 1, by construction."""
        return self._ledger.processed_count(payment_id)

    def stored(self, payment_id: str) -> StoredAuthorization | None:
        return self._ledger.stored(payment_id)

    def authorizations(self) -> list[StoredAuthorization]:
        return self._ledger.authorizations()

    def reset(self) -> None:
        """Forget every stored authorization and counter (not the in-progress ones)."""
        self._ledger.reset()

    # ---------------------------------------------------------------- test hooks

    def hold(self) -> None:
        """Keep every new authorization in progress (after its latency) until `release`."""
        self._routes.released.clear()

    def release(self) -> None:
        self._routes.released.set()

    async def wait_in_progress(self, payment_id: str) -> None:
        """Return once the first request for `payment_id` has started processing."""
        ledger = self._ledger
        await ledger.wait_until(lambda: payment_id in ledger.in_progress
                                or payment_id in ledger.store)

    async def wait_stored(self, payment_id: str) -> StoredAuthorization:
        """Return the stored result for `payment_id` once there is one."""
        ledger = self._ledger
        await ledger.wait_until(lambda: payment_id in ledger.store)
        return ledger.store[payment_id]


def _listen(host: str, port: int) -> socket.socket:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                flags=socket.AI_PASSIVE)[0][0]
    sock = socket.create_server((host, port), family=family, backlog=128)
    sock.setblocking(False)
    return sock


def _base_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


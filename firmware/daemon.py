"""The daemon: the composition root that builds every component and runs them on one loop.

One asyncio event loop; one `asyncio.TaskGroup` owns every long-running task.
SIGTERM/SIGINT stop accepting work, let in-flight requests finish, stop the
components, and exit 0 within `SHUTDOWN_TIMEOUT_S`. SIGHUP reloads what can be
reloaded safely (log level, API tokens, and whatever reload hooks components
register); anything else is reported as needing a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import importlib
import logging
import os
import resource
import signal
import ssl
from pathlib import Path
from typing import Any

from aiohttp import web

from firmware import __version__
from firmware.api import build_app
from firmware.components.context import BoxContext, ComponentFactory
from firmware.components.failover import build_failover
from firmware.components.fleet import ReloadConfig, build_fleet
from firmware.components.lan_services import build_lan_services
from firmware.components.ledger import build_ledger
from firmware.components.leds import build_leds
from firmware.components.modem import build_modem
from firmware.components.payments import build_payments
from firmware.components.resolvers import build_uplink_resolvers
from firmware.config import Config, load_config
from firmware.config.listeners import api_problems, is_loopback, wants_tls
from firmware.errors import ConfigError, FirmwareError
from firmware.hardening import harden_memory
from firmware.http_limits import (
    ConnectionGuard,
    LimitedSite,
    Limits,
    cap_tls_read_buffers,
    connection_budget,
    raise_nofile_limit,
)
from firmware.logs import set_level
from firmware.metrics import registry_for
from firmware.sdnotify import Notifier, watchdog_interval_s
from firmware.state import BoxState
from firmware.status import status_line
from firmware.supervisor import Component, Supervisor
from firmware.tls import PLAIN_HTTP_FAULT, TlsSetupError, api_certificate, server_context
from firmware.tokens import TokenStore

log = logging.getLogger("storebox.daemon")

SHUTDOWN_TIMEOUT_S = 4.0
#: Config sections whose changes SIGHUP applies without a restart.
RELOADABLE = {"device.log_level", "api.tokens_file", "fleet.command_key_file",
              "payments.offline_max_amount",
              "payments.offline_max_total", "payments.offline_max_count",
              "payments.online_deadline_s", "payments.offline_max_age_s",
              "payments.velocity_window_s", "payments.velocity_max_count",
              "payments.velocity_max_amount", "payments.blocked_bins",
              "payments.seal_key_file", "payments.merchant_key_file",
              "payments.retention_days", "payments.key_cryptoperiod_days"}


class ComponentLoadError(FirmwareError):
    def __init__(self, spec: str, reason: str) -> None:
        self.spec = spec
        self.reason = reason
        super().__init__(f"cannot load component {spec!r}: {reason}")


async def compose(context: BoxContext, *,
                  reload_config: ReloadConfig | None = None) -> list[Component]:
    """The built-in components, in start order, each handed what it uses of another.

    This is the one place the order is written: the payments first (the POS routes),
    the modem, then the failover engine with the modem's `switch_sim` (its last resort
    before offline mode, with `lte.dual_sim`), the outage ledger (nothing to supervise:
    it follows the uplink states the failover component writes), the LEDs, and the fleet
    agent with the payments' `drain_queue` and the daemon's `reload_config`. The LAN's
    DHCP and DNS (`lan.enabled`) come before the failover engine, which is handed their
    `follow`: the LAN's upstream resolvers switch with the active uplink. Both take each
    uplink's resolvers from one `UplinkResolvers` (probe names resolve through the
    uplink probed, with what it learnt)."""
    config = context.config
    payments = await build_payments(context)
    modem = await build_modem(context)
    resolvers = build_uplink_resolvers(context)
    lan = await build_lan_services(context, resolvers=resolvers)
    failover = await build_failover(
        context, resolvers=resolvers,
        switch_sim=modem.switch_sim if config.lte.dual_sim else None,
        on_switch=lan.follow if lan is not None else None)
    await build_ledger(context)
    leds = await build_leds(context)
    fleet = await build_fleet(context, drain_queue=payments.drain_queue,
                              reload_config=reload_config)
    return [c for c in (payments, modem, lan, failover, leds, fleet) if c is not None]


def load_component(spec: str, context: BoxContext) -> Component:
    """Build a component from a "module:factory" spec (debug.extra_components)."""
    module_name, _, attr = spec.partition(":")
    try:
        factory: ComponentFactory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ComponentLoadError(spec, str(exc)) from exc
    return factory(context)


class Daemon:
    def __init__(self, config: Config, notifier: Notifier | None = None, *,
                 freeze_heap: bool = False) -> None:
        self.config = config
        # `storebox run` only: a test's in-process daemon leaves its process's heap alone
        self.freeze_heap = freeze_heap
        self.notifier = notifier or Notifier()
        self.state = BoxState(config.device.id, __version__)
        self.state.uplink.wired.interface = config.wired.interface
        self.state.uplink.lte.interface = config.lte.interface
        self.tokens = TokenStore(config.api.tokens_file)
        self.app = build_app(self.state, self.tokens, registry_for(self.state))
        self.context = BoxContext(config, self.state, self.tokens, self.app)
        self.components: list[Component] = []
        self._stop = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._guard: ConnectionGuard | None = None

    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("stop requested")
            self._stop.set()

    def reload(self) -> dict[str, Any]:
        """SIGHUP: re-read the config file and apply what is safe to apply."""
        try:
            new = load_config(self.config.source)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused: %s", problem)
            return {"ok": False, "problems": [str(p) for p in exc.problems]}
        changed = _changed_keys(self.config, new)
        restart_needed = sorted(k for k in changed if k not in RELOADABLE)
        if new.device.log_level != self.config.device.log_level:
            set_level(new.device.log_level)
        self.tokens.path = new.api.tokens_file
        count = self.tokens.reload()
        for hook in self.context.reload_hooks:
            hook(new)
        self.config = self.context.config = _with_keys(self.config, new, changed - set(
            restart_needed))
        log.info("configuration reloaded (%d API tokens)%s", count,
                 f"; needs a restart to apply: {', '.join(restart_needed)}"
                 if restart_needed else "")
        self.state.events.emit("config_reloaded", "configuration reloaded",
                               tokens=count, restart_needed=restart_needed)
        return {"ok": True, "tokens": count, "restart_needed": restart_needed}

    async def run(self) -> int:
        harden_memory()  # before any card can arrive: no core dumps, no ptrace attach
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            await self._serve()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            for cleanup in reversed(self.context.cleanups):
                cleanup()
            self.notifier.close()
        log.info("stopped")
        return 0

    async def _build(self) -> None:
        self.components = await compose(self.context, reload_config=self.reload)
        self.components += [load_component(spec, self.context)
                            for spec in self.config.debug.extra_components]

    async def _close(self) -> None:
        for closer in reversed(self.context.closers):
            try:
                await closer()
            except Exception:
                log.exception("error while closing")

    async def _serve(self) -> None:
        _ensure_state_dir(self.config.device.state_dir)
        try:
            await self._build()
            await self._start_api()
            await self._run_components()
        finally:
            await self._close()

    async def _run_components(self) -> None:
        supervisor = Supervisor(self.state)
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(supervisor.supervise(c), name=f"component:{c.name}")
                     for c in self.components]
            tasks.append(tg.create_task(self._report_status(), name="sd-status"))
            interval = watchdog_interval_s()
            if interval:
                tasks.append(tg.create_task(self._watchdog(interval), name="sd-watchdog"))
            self.state.phase = "running"
            self.state.touch()
            self.state.events.emit("started", f"storebox {__version__} serving")
            self.notifier.notify(READY=1, STATUS=status_line(self.state))
            log.info("serving; device %s, version %s", self.config.device.id, __version__)
            if self.freeze_heap:
                freeze_startup_heap()
            await self._stop.wait()
            self.state.phase = "stopping"
            self.state.events.emit("stopping", "shutting down")
            self.notifier.notify(STOPPING=1, STATUS="stopping")
            try:
                async with asyncio.timeout(SHUTDOWN_TIMEOUT_S):
                    await self._stop_api()
            except TimeoutError:
                log.warning("in-flight requests did not finish within %.1fs", SHUTDOWN_TIMEOUT_S)
            for task in tasks:
                task.cancel()

    async def _start_api(self) -> None:
        """The POS listener (HTTPS beyond loopback, `firmware.tls`; connection caps and
        timeouts, `firmware.http_limits`) and the plain admin socket."""
        api = self.config.api
        for key, message in api_problems(api):
            raise TlsSetupError(key, message)
        cap_tls_read_buffers()
        host, _, port = api.listen.rpartition(":")
        host = host.strip("[]")
        context = self._tls_context(host)
        limits = Limits.from_config(api)
        raise_nofile_limit()
        guard = ConnectionGuard(limits, self.state.api.connections,
                                connection_budget(limits.max_connections))
        self.app.on_response_prepare.append(guard.on_response_prepare)
        self.context.cleanups.append(guard.quiet_accept_errors(asyncio.get_running_loop()))
        runner = web.AppRunner(self.app, handle_signals=False, access_log=None,
                               shutdown_timeout=SHUTDOWN_TIMEOUT_S - 1,
                               **limits.runner_kwargs())
        await runner.setup()
        self._runner = runner
        self._guard = guard
        site = LimitedSite(runner, host, int(port), guard=guard, ssl_context=context)
        await site.start()
        self.state.api.listen = [site.name]
        log.info("API connections: at most %d, %d per address (open-file limit %s)",
                 guard.budget, limits.max_connections_per_address,
                 _nofile_soft_limit())
        sock = self.config.api.admin_socket
        if sock:
            _prepare_socket_path(sock)
            await web.UnixSite(runner, sock).start()
            os.chmod(sock, 0o600)
            self.context.cleanups.append(lambda: Path(sock).unlink(missing_ok=True))
        log.info("API listening on %s%s", self.config.api.listen,
                 f" and {sock}" if sock else "")

    async def _stop_api(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._guard is not None:
            self._guard.close_all()
            self._guard = None

    def _tls_context(self, host: str) -> ssl.SSLContext | None:
        """The server context for `host` under `api.tls`, and the api section of the state;
        None for plain HTTP (a fault beyond loopback)."""
        api = self.config.api
        if not wants_tls(api.tls, host):
            if not is_loopback(host):
                message = (f"the POS API serves plain HTTP on {api.listen} "
                           "(api.allow_plain_http): card data and tokens cross the LAN in "
                           "clear text")
                log.error("api fault %s: %s", PLAIN_HTTP_FAULT, message)
                self.state.api.faults = [PLAIN_HTTP_FAULT]
                self.state.events.emit("fault", message, severity="error",
                                       reason=PLAIN_HTTP_FAULT)
            return None
        cert = api_certificate(api, self.config.device.state_dir, self.config.device.id)
        context = server_context(cert, api.client_ca_file)
        self.state.update(self.state.api, tls=True, cert_sha256=cert.sha256,
                          spki_sha256_b64=cert.spki_sha256_b64, cert_source=cert.source,
                          cert_subject=cert.subject, cert_not_after=cert.not_after,
                          client_certificates=bool(api.client_ca_file))
        log.info("API certificate (%s) SHA-256 %s", cert.source, cert.sha256)
        return context

    async def _report_status(self) -> None:
        """Keep systemd's STATUS= line in step with the box state, at most once a second."""
        seen = self.state.revision
        last = ""
        while True:
            seen = await self.state.wait_changed(seen)
            line = status_line(self.state)
            if line != last:
                self.notifier.notify(STATUS=line)
                last = line
            await asyncio.sleep(1.0)

    async def _watchdog(self, interval: float) -> None:
        """Send WATCHDOG=1 only while the loop keeps time and the API is serving."""
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(interval)
            lag = loop.time() - before - interval
            if lag > interval / 2:
                log.warning("event loop stalled for %.2fs; withholding watchdog ping", lag)
            elif self._runner is None:
                log.warning("API not serving; withholding watchdog ping")
            else:
                self.notifier.notify(WATCHDOG=1)


def _nofile_soft_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _prepare_socket_path(path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).unlink(missing_ok=True)


def _ensure_state_dir(path: str) -> None:
    Path(path).mkdir(parents=True, exist_ok=True, mode=0o700)


def _changed_keys(old: Config, new: Config) -> set[str]:
    changed = set()
    for section in dataclasses.fields(old):
        if section.name == "source":
            continue
        a, b = getattr(old, section.name), getattr(new, section.name)
        for f in dataclasses.fields(a):
            if getattr(a, f.name) != getattr(b, f.name):
                changed.add(f"{section.name}.{f.name}")
    return changed


def _with_keys(old: Config, new: Config, keys: set[str]) -> Config:
    """`old` with just the dotted `keys` taken from `new`."""
    sections: dict[str, object] = {}
    for key in keys:
        section, name = key.split(".", 1)
        current = sections.get(section, getattr(old, section))
        sections[section] = dataclasses.replace(current, **{name: getattr(
            getattr(new, section), name)})  # type: ignore[type-var]
    return dataclasses.replace(old, **sections)  # type: ignore[arg-type]


async def run_daemon(config: Config) -> int:
    return await Daemon(config).run()


def freeze_startup_heap() -> None:
    """Move what start-up built (~90,000 objects: modules, config, the components) out of
    the cyclic garbage collector's sight, after one last collection of its garbage.

    Why: the full collections the probes' garbage sets off now and then walked all of it,
    ~30 ms of CPU each, though none of it ever becomes garbage while the box serves
    (issue #13's idle CPU, BENCHMARKS.md). Frozen objects are still freed by reference
    counting; only cycles among them would stay (none are made at start-up on purpose),
    and `gc.get_objects()` no longer lists them (why only the real daemon freezes: the
    tests that scan a process for card data run daemons in-process). Called after
    READY=1, so that start-up is not slower."""
    gc.collect()
    gc.freeze()


"""Composes the payments side: store, gateway client, POS service, forwarder.

`payments_cache` knows nothing of the box; this module hands it what it needs (an
`UplinkSignal`, event and change callbacks) and makes `BoxState.payments` follow the
store.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from firmware.config import Config
from firmware.daemon import BoxContext
from firmware.state import BoxState
from payments_cache.api import add_routes
from payments_cache.errors import GatewayUnavailable, PaymentsError
from payments_cache.forwarder import Forwarder
from payments_cache.gateway import AuthorizationPayload, Gateway
from payments_cache.gateway_client import HttpGateway
from payments_cache.models import GatewayResult
from payments_cache.risk import RiskLimits
from payments_cache.service import PaymentService, ServiceSettings
from payments_cache.async_store import AsyncStore
from payments_cache.uplinks import UplinkSignal

log = logging.getLogger("storebox.payments")

_SEVERITY = {"fault": "error", "declined_after_offline": "warning", "offline_mode": "warning"}
REFRESH_EVERY_S = 10.0


def settings_from(config: Config) -> ServiceSettings:
    p = config.payments
    return ServiceSettings(
        merchant_id=p.merchant_id, online_deadline_s=p.online_deadline_s,
        limits=RiskLimits(
            max_amount=p.offline_max_amount, max_total=p.offline_max_total,
            max_count=p.offline_max_count, max_age_s=float(p.offline_max_age_s),
            velocity_window_s=float(p.velocity_window_s),
            velocity_max_count=p.velocity_max_count, velocity_max_amount=p.velocity_max_amount,
            blocked_bins=tuple(p.blocked_bins)))


def kek_path(config: Config) -> Path:
    return Path(config.payments.kek_file or Path(config.device.state_dir) / "kek")


def read_merchant_key(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        log.error("cannot read payments.merchant_key_file %r: %s; the gateway will refuse "
                  "every request", path, exc.strerror)
        return ""


class NoCredentials:
    """The gateway as seen without a merchant key: unreachable, so the box stands in."""

    def __init__(self, path: str) -> None:
        self.reason = f"no merchant key in {path!r}"

    async def authorize(self, payload: AuthorizationPayload, timeout_s: float) -> GatewayResult:
        raise GatewayUnavailable(payload.payment_id, self.reason)

    async def lookup(self, payment_id: str, timeout_s: float) -> GatewayResult | None:
        raise GatewayUnavailable(payment_id, self.reason)


class PaymentsComponent:
    """Runs the forwarder and keeps `BoxState.payments` in step with the store."""

    name = "payments"

    def __init__(self, state: BoxState, store: AsyncStore, service: PaymentService,
                 forwarder: Forwarder, uplinks: UplinkSignal) -> None:
        self.state = state
        self.store = store
        self.service = service
        self.forwarder = forwarder
        self.uplinks = uplinks
        self._dirty = asyncio.Event()
        self._full = True
        uplinks.on_change(lambda reach: forwarder.wake() if reach != "down" else None)

    def changed(self) -> None:
        self._dirty.set()

    def on_event(self, kind: str, **fields: Any) -> None:
        message = str(fields.pop("message", "") or kind.replace("_", " "))
        self.state.events.emit(kind, message, severity=_SEVERITY.get(kind, "info"), **fields)  # type: ignore[arg-type]
        self._full = True
        self._dirty.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.forwarder.run(), name="payments-forwarder")
            tg.create_task(self._follow_store(), name="payments-state")

    async def refresh(self) -> None:
        stats = await self.store.queue_stats()
        self.state.update(
            self.state.payments, queued=stats.count, queued_amount=stats.amount,
            oldest_queued_at=stats.oldest_created_at,
            forwarded_total=stats.by_state.get("forwarded", 0),
            declined_after_offline_total=stats.by_state.get("declined_after_offline", 0),
            dead=stats.by_state.get("dead", 0),
            quarantined=stats.by_state.get("quarantined", 0),
            mode=self.service.last_mode)

    async def refresh_totals(self) -> None:
        totals = await self.store.queue_totals()
        self.state.update(self.state.payments, queued=totals.count,
                          queued_amount=totals.amount,
                          oldest_queued_at=totals.oldest_created_at,
                          mode=self.service.last_mode)

    async def _follow_store(self) -> None:
        """Queue totals follow every payment at once (O(1)); the counts by state (a scan)
        follow the forwarder's events and at least every REFRESH_EVERY_S."""
        loop = asyncio.get_running_loop()
        full_at = loop.time()
        while True:
            self._dirty.clear()
            if self._full or loop.time() - full_at >= REFRESH_EVERY_S:
                self._full = False
                full_at = loop.time()
                await self.refresh()
            else:
                await self.refresh_totals()
            try:
                async with asyncio.timeout(REFRESH_EVERY_S):
                    await self._dirty.wait()
            except TimeoutError:
                pass


async def build_payments(context: BoxContext) -> PaymentsComponent:
    config = context.config
    store = await AsyncStore.open(config.device.state_dir, kek_path(config),
                                  scrub_interval_s=1.0)
    context.closers.append(store.close)
    report = store.report
    if report.recovered_pending:
        log.warning("%d payments were interrupted by a restart and will be resolved",
                    len(report.recovered_pending))
    merchant_key = read_merchant_key(config.payments.merchant_key_file)
    gateway: Gateway
    if merchant_key:
        http = HttpGateway(config.payments.gateway_url, merchant_key)
        context.closers.append(http.close)
        gateway = http
    else:
        gateway = NoCredentials(config.payments.merchant_key_file)
        context.state.events.emit(
            "fault", "no merchant key: every payment stands in until it is configured",
            severity="error", reason="no_merchant_key")
    uplinks = context.uplinks
    component: PaymentsComponent
    service = PaymentService(store, gateway, uplinks, settings_from(config),
                             on_event=lambda kind, **f: component.on_event(kind, **f),
                             on_change=lambda: component.changed())
    forwarder = Forwarder(store, gateway, config.payments.merchant_id,
                          concurrency=config.payments.forward_concurrency,
                          on_event=lambda kind, **f: component.on_event(kind, **f))
    component = PaymentsComponent(context.state, store, service, forwarder, uplinks)
    add_routes(context.app, service)

    async def drain_now(request: web.Request) -> web.Response:
        forwarder.wake()
        return web.json_response({"draining": True}, status=202)

    async def rotate_keys(request: web.Request) -> web.Response:
        try:
            report = await store.rotate_keys()
        except PaymentsError as exc:
            log.error("key rotation failed: %s", exc)
            return web.json_response({"error": {"code": "rotation_failed",
                                                "message": str(exc)}}, status=503)
        context.state.events.emit(
            "keys_rotated", f"data key rotated to {report.new_key_id}",
            reencrypted=report.reencrypted, retired=report.retired_keys,
            quarantined=report.quarantined)
        component.changed()
        return web.json_response({"new_key_id": report.new_key_id,
                                  "reencrypted": report.reencrypted,
                                  "retired_keys": report.retired_keys,
                                  "quarantined": report.quarantined})

    context.app.router.add_post("/v1/queue/drain", drain_now)
    context.drain_queue = forwarder.wake
    context.app.router.add_post("/v1/keys/rotate", rotate_keys)
    context.reload_hooks.append(lambda new: service.reconfigure(settings_from(new)))
    await component.refresh()
    return component

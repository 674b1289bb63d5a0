"""Composes the payments side: store, gateway client, POS service, forwarder, upkeep.

`payments_cache` knows nothing of the box; this module hands it what it needs (an
`UplinkSignal`, event and change callbacks, the keys and the seal key chosen in the
config: `firmware.payment_keys`) and makes `BoxState.payments` follow the store,
including the faults a person must fix (`payments.faults`: no merchant key, card keys
unavailable, a seal key that cannot be read, keys on disk).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import web

from firmware.components.context import BoxContext
from firmware.config import Config
from firmware.payment_keys import (
    MerchantGateway,
    legacy_kek,
    protection_plan,
    provider_factory,
)
from payments_cache.api import add_routes
from payments_cache.async_store import AsyncStore
from payments_cache.claims import Claims
from payments_cache.desk import PaymentsDesk
from payments_cache.errors import KeyMaterialError, PaymentsError
from payments_cache.forward_settings import ForwarderSettings
from payments_cache.forwarder import Forwarder
from payments_cache.keyproviders import KeyProvider
from payments_cache.models import RotationReport
from payments_cache.risk import CurrencyLimits, RiskLimits
from payments_cache.service import PaymentService, ServiceSettings

log = logging.getLogger("storebox.payments")

_SEVERITY = {"fault": "error", "declined_after_offline": "warning", "offline_mode": "warning"}
REFRESH_EVERY_S = 10.0
#: How often to try the store again while its keys are unavailable.
REOPEN_EVERY_S = 30.0
#: How often expired data is erased and the cryptoperiod checked.
UPKEEP_EVERY_S = 600.0
#: A "not found" is trusted when a second look this much later agrees.
NOT_FOUND_CONFIRM_S = 5.0
#: The faults `apply_protection` owns.
PROTECTION_FAULTS = ("keys_on_disk", "seal_key_unreadable", "cannot_protect_card")


def settings_from(config: Config) -> ServiceSettings:
    p = config.payments
    return ServiceSettings(
        merchant_id=p.merchant_id, online_deadline_s=p.online_deadline_s,
        online_replays=p.online_replays,
        lost_attempt_lifetime_s=p.lost_attempt_lifetime_s,
        limits=RiskLimits(
            max_amount=p.offline_max_amount, max_total=p.offline_max_total,
            max_count=p.offline_max_count, max_age_s=float(p.offline_max_age_s),
            velocity_window_s=float(p.velocity_window_s),
            velocity_max_count=p.velocity_max_count, velocity_max_amount=p.velocity_max_amount,
            blocked_bins=tuple(p.blocked_bins), currency=p.currency,
            other_currencies=tuple(
                (code, CurrencyLimits(
                    max_amount=caps["offline_max_amount"], max_total=caps["offline_max_total"],
                    velocity_max_amount=caps.get("velocity_max_amount",
                                                 2 * caps["offline_max_amount"])))
                for code, caps in sorted(p.currency_limits.items()))))


def lost_attempt_s(config: Config) -> float:
    """How long after it starts an online attempt may still reach the gateway."""
    return config.payments.online_deadline_s + config.payments.lost_attempt_lifetime_s


class PaymentsComponent:
    """Opens the store, runs the forwarder and upkeep, keeps `BoxState.payments` in step.

    When the store cannot open because its keys are unavailable (the key provider's
    token or credential missing), the box keeps answering the POS through the desk's
    clerk (offline declines `cannot_protect_card`, nothing stored), shows the fault, and
    tries again every `REOPEN_EVERY_S` and on SIGHUP."""

    name = "payments"

    def __init__(self, context: BoxContext, gateway: MerchantGateway, desk: PaymentsDesk) -> None:
        self.context = context
        self.state = context.state
        self.gateway = gateway
        self.desk = desk
        self.uplinks = context.uplinks
        self.store: AsyncStore | None = None
        self.service: PaymentService | None = None
        self.forwarder: Forwarder | None = None
        self.provider: KeyProvider | None = None
        self._dirty = asyncio.Event()
        self._reopen = asyncio.Event()
        self._full = True
        self.uplinks.on_change(self._uplinks_changed)

    # opening

    async def open(self) -> bool:
        """Open the store and build the service and forwarder; False (and a fault) when
        the keys are unavailable."""
        config = self.context.config
        providers: list[KeyProvider] = []

        def open_provider(create: bool) -> KeyProvider:
            providers.append(provider_factory(config)(create))
            return providers[-1]
        try:
            store = await AsyncStore.open(
                config.device.state_dir, open_provider, scrub_interval_s=1.0,
                merchant_id=config.payments.merchant_id, legacy_kek=legacy_kek(config),
                lost_attempt_s=lost_attempt_s(config))
        except KeyMaterialError as exc:
            self.set_fault("key_provider_unavailable",
                           f"the card keys are unavailable ({exc}): offline payments are "
                           "declined and nothing is stored until they are back")
            return False
        self.provider = providers[-1]
        self.clear_fault("key_provider_unavailable")
        self.context.closers.append(store.close)
        self.context.closers.append(self._close_provider)
        self._build(store)
        await self.apply_protection()
        report = store.report
        if report.recovered_pending:
            log.warning("%d payments were interrupted by a restart and will be resolved",
                        len(report.recovered_pending))
        if report.unusable_keys:
            self.set_fault("payments_quarantined", (
                f"{len(report.quarantined)} payments quarantined: their keys "
                f"{report.unusable_keys} cannot be unwrapped by this key provider; they "
                "stay owed (and counted in the offline caps) and are released when the "
                "right key is back"))
        if report.released:
            self.state.events.emit("payments_released", f"{len(report.released)} quarantined "
                                   "payments released: their key is back", severity="warning",
                                   released=report.released)
        await self.refresh()
        return True

    def _build(self, store: AsyncStore) -> None:
        config = self.context.config
        self.store = store
        claims = Claims()  # who is sending which payment: the service and the forwarder
        self.service = PaymentService(
            store, self.gateway, self.uplinks, settings_from(config),
            on_event=self.on_event, on_change=self.changed,
            can_protect=lambda: store.protection_mode != "none", claims=claims,
            on_lost_attempt=lambda pid, s: self.forwarder.lost_attempt(pid, s)
            if self.forwarder is not None else None)
        self.forwarder = Forwarder(
            store, self.gateway, config.payments.merchant_id, ForwarderSettings(
                concurrency=config.payments.forward_concurrency,
                not_found_confirm_s=min(NOT_FOUND_CONFIRM_S,
                                        config.payments.lost_attempt_lifetime_s),
                lost_attempt_s=lost_attempt_s(config)),
            on_event=self.on_event, claims=claims)
        self.desk.service = self.service

    async def _close_provider(self) -> None:
        if self.provider is not None:
            self.provider.close()

    async def apply_protection(self) -> None:
        """Seal key and provider → how cards are kept; faults follow."""
        if self.store is None or self.provider is None:
            return
        plan = protection_plan(self.context.config, self.provider.protects_at_rest)
        await self.store.set_protection(plan.seal_key, plan.local_allowed)
        for code in PROTECTION_FAULTS:
            if code in plan.faults:
                self.set_fault(code, plan.faults[code])
            else:
                self.clear_fault(code)
        self.state.update(self.state.payments, protection=plan.mode,
                          seal_kid=plan.seal_key.kid if plan.seal_key else None,
                          key_provider=self.provider.name)

    # faults

    def set_fault(self, code: str, message: str) -> None:
        faults = self.state.payments.faults
        if code in faults:
            return
        log.error("payments fault %s: %s", code, message)
        self.state.update(self.state.payments, faults=[*faults, code])
        self.state.events.emit("fault", message, severity="error", reason=code)

    def clear_fault(self, code: str) -> None:
        faults = self.state.payments.faults
        if code in faults:
            self.state.update(self.state.payments, faults=[f for f in faults if f != code])
            log.info("payments fault %s cleared", code)

    def merchant_key_changed(self) -> None:
        if self.gateway.has_key:
            self.clear_fault("no_merchant_key")
            if self.forwarder is not None:
                self.forwarder.wake()
        else:
            self.set_fault("no_merchant_key", "no merchant key in "
                           f"{self.gateway.key_file!r}: every payment stands in and nothing "
                           "is forwarded until it is there (then SIGHUP)")

    # reload (SIGHUP)

    def reload(self, config: Config) -> None:
        """SIGHUP: limits, the merchant key, the seal key (re-read after the daemon has
        taken the new config), and another try at the store if it is closed."""
        self.gateway.key_file = config.payments.merchant_key_file
        if self.service is not None:
            self.service.reconfigure(settings_from(config))
        if self.gateway.reload():
            self.merchant_key_changed()
        self._reopen.set()

    # running

    def changed(self) -> None:
        self._dirty.set()

    def on_event(self, kind: str, **fields: Any) -> None:
        message = str(fields.pop("message", "") or kind.replace("_", " "))
        self.state.events.emit(kind, message, severity=_SEVERITY.get(kind, "info"), **fields)  # type: ignore[arg-type]
        self._full = True
        self._dirty.set()

    def drain_queue(self) -> None:
        """Forward the queue now (`storebox queue drain`, the fleet's `queue_drain`)."""
        if self.forwarder is not None:
            self.forwarder.wake()

    def _uplinks_changed(self, reach: str) -> None:
        if reach != "down" and self.forwarder is not None:
            self.forwarder.wake()

    async def run(self) -> None:
        while self.store is None:
            self._reopen.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REOPEN_EVERY_S):
                    await self._reopen.wait()
            await self.open()
        assert self.forwarder is not None
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.forwarder.run(), name="payments-forwarder")
            tg.create_task(self._follow_store(), name="payments-state")
            tg.create_task(self._upkeep(), name="payments-upkeep")
            tg.create_task(self._follow_reloads(), name="payments-reload")

    async def _follow_reloads(self) -> None:
        while True:
            await self._reopen.wait()
            self._reopen.clear()
            await self.apply_protection()

    async def _upkeep(self) -> None:
        """Erase what expired; replace keys (and the KEK) once their cryptoperiod is over."""
        while True:
            try:
                await self.upkeep_once()
            except PaymentsError as exc:
                log.error("payments upkeep failed: %s", exc)
            await asyncio.sleep(UPKEEP_EVERY_S)

    async def upkeep_once(self) -> None:
        assert self.store is not None
        p = self.context.config.payments
        report = await self.store.expire(velocity_window_s=p.velocity_window_s,
                                         retention_days=p.retention_days)
        if report.rows_purged or report.fingerprints_erased:
            log.info("expired: %d fingerprints erased, %d settled payments purged",
                     report.fingerprints_erased, report.rows_purged)
        if await self.store.key_age_s() >= p.key_cryptoperiod_days * 86400:
            await self.rotate_keys(reason="cryptoperiod")

    async def rotate_keys(self, reason: str) -> RotationReport:
        assert self.store is not None
        report = await self.store.rotate_keys()
        kek_note = ""
        if self.provider is not None:
            try:
                retired = await self.store.rotate_kek(self.provider)
                kek_note = f"; KEK rotated (retired {len(retired)})"
            except KeyMaterialError as exc:  # e.g. systemd-creds: provisioned by a person
                kek_note = f"; KEK not rotated: {exc}"
                log.warning("KEK not rotated: %s", exc)
        self.state.events.emit(
            "keys_rotated", f"data key rotated to {report.new_key_id} ({reason}){kek_note}",
            reencrypted=report.reencrypted, retired=report.retired_keys,
            quarantined=report.quarantined)
        self.changed()
        return report

    async def refresh(self) -> None:
        if self.store is None or self.service is None:
            return
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
        assert self.store is not None and self.service is not None
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
    gateway = MerchantGateway(config.payments.gateway_url, config.payments.merchant_key_file)
    context.closers.append(gateway.close)
    desk = PaymentsDesk()
    component = PaymentsComponent(context, gateway, desk)
    component.merchant_key_changed()
    await component.open()
    add_routes(context.app, desk)

    async def drain_now(request: web.Request) -> web.Response:
        component.drain_queue()
        return web.json_response({"draining": True}, status=202)

    async def rotate_keys(request: web.Request) -> web.Response:
        if component.store is None:
            return web.json_response({"error": {"code": "keys_unavailable", "message":
                                                "the payment store is closed"}}, status=503)
        try:
            report = await component.rotate_keys(reason="requested")
        except PaymentsError as exc:
            log.error("key rotation failed: %s", exc)
            return web.json_response({"error": {"code": "rotation_failed",
                                                "message": str(exc)}}, status=503)
        return web.json_response({"new_key_id": report.new_key_id,
                                  "new_hmac_key_id": report.new_hmac_key_id,
                                  "reencrypted": report.reencrypted,
                                  "retired_keys": report.retired_keys,
                                  "quarantined": report.quarantined})

    context.app.router.add_post("/v1/queue/drain", drain_now)
    context.app.router.add_post("/v1/keys/rotate", rotate_keys)
    context.reload_hooks.append(component.reload)
    return component

"""Online first after a failover: what the payments side learnt on the dead path is stale.

After online attempts time out (a blackhole), the service stands in at once for
`unreachable_pause_s` instead of making every POS wait out the deadline. When traffic
moves to another uplink (`UplinkSignal.switched()`), the next payment tries online again
at once; an attempt that started on the old path and times out after the move does not
pause the new one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from payments_cache.async_store import AsyncStore
from payments_cache.errors import UnknownOutcome
from payments_cache.gateway import AuthorizationPayload
from payments_cache.models import GatewayResult
from payments_cache.service import PaymentService, ServiceSettings
from payments_cache.uplinks import UplinkSignal


class ScriptedGateway:
    """Answers from a script: "timeout", "approve", or "hold" (wait for `release`, then
    time out, as an attempt caught on the dead path does)."""

    def __init__(self) -> None:
        self.script: list[str] = []
        self.calls: list[str] = []
        self.release = asyncio.Event()
        self.holding = asyncio.Event()

    async def authorize(self, payload: AuthorizationPayload, timeout_s: float) -> GatewayResult:
        step = self.script.pop(0)
        self.calls.append(step)
        if step == "hold":
            self.holding.set()
            await self.release.wait()
            step = "timeout"
        if step == "timeout":
            raise UnknownOutcome(payload.payment_id, "no answer within the deadline",
                                 timed_out=True)
        return GatewayResult("approved", auth_code="A1")

    async def lookup(self, payment_id: str, timeout_s: float) -> GatewayResult | None:
        return None


def body(n: int) -> bytes:
    return json.dumps({"amount": 1000 + n, "currency": "KRW",
                       "card": {"pan": "4111111111111111", "exp_month": 12,
                                "exp_year": 2030, "cvc": "123"}}).encode()


EVENTS: list[dict[str, object]] = []


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[PaymentService, ScriptedGateway,
                                                         UplinkSignal]]:
    EVENTS.clear()
    store = await AsyncStore.open(tmp_path / "state", tmp_path / "state" / "kek.key")
    gateway = ScriptedGateway()
    uplinks = UplinkSignal("up")
    settings = ServiceSettings(merchant_id="m-1", unreachable_pause_s=3600.0)
    try:
        yield (PaymentService(store, gateway, uplinks, settings,
                              on_event=lambda kind, **f: EVENTS.append({"kind": kind, **f})),
               gateway, uplinks)
    finally:
        await store.close()


async def test_after_a_switch_the_next_payment_tries_online_at_once(
        service: tuple[PaymentService, ScriptedGateway, UplinkSignal]) -> None:
    svc, gateway, uplinks = service
    gateway.script = ["timeout", "approve"]
    first = await svc.submit("k1", body(1))
    assert first["status"] == "approved_offline"
    paused = await svc.submit("k2", body(2))  # the pause: no online attempt at all
    assert paused["status"] == "approved_offline" and gateway.calls == ["timeout"]
    uplinks.switched()  # the failover engine moved traffic to LTE
    online = await svc.submit("k3", body(3))
    assert online["status"] == "approved" and online["mode"] == "online"
    assert gateway.calls == ["timeout", "approve"]
    assert [e["message"] for e in EVENTS] == [
        "the gateway did not answer in time: standing in", "gateway reachable again: online"]


async def test_with_no_uplink_the_event_says_so(
        service: tuple[PaymentService, ScriptedGateway, UplinkSignal]) -> None:
    svc, gateway, uplinks = service
    uplinks.set("down")
    assert (await svc.submit("k1", body(1)))["status"] == "approved_offline"
    assert gateway.calls == []
    assert [e["message"] for e in EVENTS] == ["no uplink reaches the gateway: standing in"]


async def test_a_timeout_from_before_the_switch_does_not_pause_the_new_path(
        service: tuple[PaymentService, ScriptedGateway, UplinkSignal]) -> None:
    svc, gateway, uplinks = service
    gateway.script = ["hold", "approve"]
    caught = asyncio.create_task(svc.submit("k1", body(1)))
    await gateway.holding.wait()
    uplinks.switched()
    gateway.release.set()
    assert (await caught)["status"] == "approved_offline"
    online = await svc.submit("k2", body(2))
    assert online["status"] == "approved"
    assert gateway.calls == ["hold", "approve"]


async def test_switched_tells_listeners_the_state_again() -> None:
    uplinks = UplinkSignal("up")
    heard: list[str] = []
    uplinks.on_change(heard.append)
    before = uplinks.generation
    uplinks.switched()
    assert heard == ["up"] and uplinks.generation == before + 1

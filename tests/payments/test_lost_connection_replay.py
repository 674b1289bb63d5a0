"""An online answer lost with its connection is asked for again under the same key.

The drill found it (brownout phase): when the box steered the gateway's traffic to LTE
it closed the old path's sockets, a 61,000 KRW sale already charged online lost its
answer, and the stand-in declined it (over the offline amount limit) while the customer
was charged. The gateway replays a key's stored result (docs/gateway-protocol.md,
Idempotency), so asking again on a new connection gets the real answer and charges
nothing twice. A timeout is not asked again (the deadline is spent, and a blackhole
answers nothing), nor a malformed answer, nor when too little of the deadline is left.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from payments_cache.async_store import AsyncStore
from payments_cache.errors import UnknownOutcome
from payments_cache.gateway import AuthorizationPayload
from payments_cache.models import GatewayResult
from payments_cache.service import REPLAY_MIN_S, PaymentService, ServiceSettings
from payments_cache.uplinks import UplinkSignal
from tests.support.clock import ManualClock

OVER_THE_OFFLINE_LIMIT = 61_000  # the drill's sale; offline_max_amount is 50,000


class IdempotentGateway:
    """A gateway that charges each payment id once and replays its result; `losses` says
    how each call's answer is lost after the charge ("reset", "timeout", "malformed"), and
    `takes_s` how long each call lasts on the test's clock."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.charged: dict[str, GatewayResult] = {}
        self.calls = 0
        self.deadlines: list[float] = []
        self.losses: list[str] = []
        self.takes_s = 0.1

    async def authorize(self, payload: AuthorizationPayload, timeout_s: float) -> GatewayResult:
        self.calls += 1
        self.deadlines.append(timeout_s)
        self.clock.advance(self.takes_s)
        result = self.charged.setdefault(payload.payment_id,
                                         GatewayResult("approved", auth_code="A77"))
        loss = self.losses.pop(0) if self.losses else ""
        if loss:
            raise UnknownOutcome(payload.payment_id, f"answer lost: {loss}",
                                 timed_out=loss == "timeout", malformed=loss == "malformed")
        return result

    async def lookup(self, payment_id: str, timeout_s: float) -> GatewayResult | None:
        return self.charged.get(payment_id)


def sale(amount: int) -> bytes:
    return json.dumps({"amount": amount, "currency": "KRW",
                       "card": {"pan": "4111111111111111", "exp_month": 12,
                                "exp_year": 2030, "cvc": "123"}}).encode()


Rig = tuple[PaymentService, IdempotentGateway, ManualClock]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = await AsyncStore.open(tmp_path / "state", tmp_path / "state" / "kek.key")
    clock = ManualClock()
    gateway = IdempotentGateway(clock)
    service = PaymentService(store, gateway, UplinkSignal("up"),
                             ServiceSettings(merchant_id="m-1", online_deadline_s=3.0),
                             monotonic=clock.monotonic, wall=clock.wall)
    try:
        yield service, gateway, clock
    finally:
        await store.close()


async def test_a_charged_sale_whose_connection_was_closed_is_answered_approved(
        rig: Rig) -> None:
    service, gateway, _ = rig
    gateway.losses = ["reset"]
    answer = await service.submit("k-steer", sale(OVER_THE_OFFLINE_LIMIT))
    assert (answer["status"], answer["auth_code"]) == ("approved", "A77")
    assert gateway.calls == 2 and len(gateway.charged) == 1
    # the second ask has what is left of the one deadline, not a new one
    assert gateway.deadlines == [pytest.approx(3.0), pytest.approx(2.9)]


async def test_without_replays_that_sale_was_declined_while_charged(rig: Rig) -> None:
    """What the drill saw; `payments.online_replays = 0` keeps it (and the forwarder's
    lookup then raises `approved_after_declined_offline`)."""
    service, gateway, _ = rig
    service.reconfigure(ServiceSettings(merchant_id="m-1", online_replays=0))
    gateway.losses = ["reset"]
    answer = await service.submit("k-steer", sale(OVER_THE_OFFLINE_LIMIT))
    assert answer["status"] == "declined_offline" and gateway.calls == 1
    assert len(gateway.charged) == 1


async def test_replays_stop_at_the_configured_count(rig: Rig) -> None:
    service, gateway, _ = rig
    gateway.losses = ["reset", "reset", "reset"]
    answer = await service.submit("k-3", sale(1000))
    assert answer["status"] == "approved_offline"  # stood in with an unknown outcome
    assert gateway.calls == 3 and len(gateway.charged) == 1


@pytest.mark.parametrize("loss", ["timeout", "malformed"])
async def test_a_timeout_or_a_malformed_answer_is_not_asked_again(rig: Rig, loss: str) -> None:
    service, gateway, _ = rig
    gateway.losses = [loss]
    answer = await service.submit(f"k-{loss}", sale(1000))
    assert answer["status"] == "approved_offline" and gateway.calls == 1


async def test_not_asked_again_with_too_little_of_the_deadline_left(rig: Rig) -> None:
    service, gateway, _ = rig
    gateway.takes_s = 3.0 - REPLAY_MIN_S + 0.01  # the reset came late in the deadline
    gateway.losses = ["reset"]
    answer = await service.submit("k-late", sale(1000))
    assert answer["status"] == "approved_offline" and gateway.calls == 1

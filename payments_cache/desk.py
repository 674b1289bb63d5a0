"""What answers the POS: the payment service, or a stand-in clerk while there is none.

The service needs the store, and the store needs its keys. When the key provider is
unavailable at start (the token unplugged, the credential not loaded), the box still
answers every POS request at once and truthfully: a valid payment is declined offline
with reason ``cannot_protect_card`` — nothing stored, nothing sent, nobody charged — and
bad input still gets its 400. As soon as the store opens, the service takes over.

Those declines keep the Idempotency-Key promise (docs/openapi.json): the desk remembers, in
memory only, each key's request hash (`crypto.request_hash`: no PAN, no CVC) and its
answer, so a retry gets the same answer (also after the store has opened, instead of a
new payment) and another body under that key gets 409.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from payments_cache.cards import brand
from payments_cache.crypto import request_hash
from payments_cache.rows import new_payment_id
from payments_cache.service import IdempotencyConflict, PaymentService
from payments_cache.validation import parse_idempotency_key, parse_payment_request

CANNOT_PROTECT = "cannot_protect_card"
#: Answers the desk remembers for retries (the oldest forgotten first).
REMEMBER = 10_000


class PaymentsDesk:
    """Routes POS requests to `service` when there is one, else declines them offline."""

    def __init__(self, service: PaymentService | None = None) -> None:
        self.service = service
        #: Idempotency-Key -> (request hash, the answer given while there was no service)
        self._answered: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()

    async def submit(self, idempotency_key: str | None, body: bytes) -> dict[str, Any]:
        if self.service is not None and not self._answered:
            return await self.service.submit(idempotency_key, body)
        key = parse_idempotency_key(idempotency_key)
        request = parse_payment_request(body, datetime.now(UTC).date())
        digest = request_hash(request)
        if key in self._answered:
            first_hash, first = self._answered[key]
            if first_hash != digest:
                raise IdempotencyConflict(key, first["id"])
            return first
        if self.service is not None:
            return await self.service.submit(idempotency_key, body)
        answer = {
            "id": new_payment_id(), "status": "declined_offline", "mode": "offline",
            "auth_code": None, "decline_reason": CANNOT_PROTECT,
            "card": {"brand": brand(request.card.pan), "last4": request.card.last4},
            "amount": request.amount, "currency": request.currency,
            "reference": request.reference,
            "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        self._answered[key] = (digest, answer)
        while len(self._answered) > REMEMBER:
            self._answered.popitem(last=False)
        return answer

    async def get(self, payment_id: str) -> dict[str, Any] | None:
        return None if self.service is None else await self.service.get(payment_id)

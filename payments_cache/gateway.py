"""What the payments side needs from the upstream gateway (docs/gateway-protocol.md), as a protocol.

`gateway_client.HttpGateway` implements it over HTTP; tests may hand in any
object with the same two methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from payments_cache.models import Card, GatewayResult
from payments_cache.sealing import SealedCard


@dataclass(frozen=True)
class AuthorizationPayload:
    """The body of `POST /v1/authorizations`. Deterministic: the same payment always
    serialises to the same JSON, so a retry under the same Idempotency-Key is a replay.

    `card` is the card itself (online, or an offline card the box encrypted locally) or
    the card sealed to the gateway (docs/gateway-protocol.md: sent as ``card_sealed`` with the
    optional ``card_hint`` of brand and last4)."""

    payment_id: str
    amount: int
    currency: str
    card: Card | SealedCard
    merchant_id: str
    offline: bool
    captured_at: datetime
    terminal_id: str | None = None
    reference: str | None = None
    card_hint: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "payment_id": self.payment_id, "amount": self.amount, "currency": self.currency,
            **self._card_fields(), "terminal_id": self.terminal_id,
            "reference": self.reference, "merchant_id": self.merchant_id,
            "offline": self.offline,
            "captured_at": self.captured_at.isoformat(timespec="milliseconds"),
        }
        return doc

    def _card_fields(self) -> dict[str, Any]:
        if isinstance(self.card, SealedCard):
            fields: dict[str, Any] = {"card_sealed": self.card.to_json()}
            if self.card_hint is not None:
                fields["card_hint"] = self.card_hint
            return fields
        return {"card": self.card.to_dict(include_cvc=not self.offline)}


class Gateway(Protocol):
    async def authorize(self, payload: AuthorizationPayload, timeout_s: float) -> GatewayResult:
        """POST the authorization with `Idempotency-Key: payload.payment_id`.

        Raises `GatewayUnavailable` (not processed, or safely replayable: connection
        refused, 5xx, 409, 429 with `retry_after_s`), `UnknownOutcome` (sent, answer
        lost: timeout or reset after sending) or `GatewayRejected` (any other 4xx).
        """
        ...

    async def lookup(self, payment_id: str, timeout_s: float) -> GatewayResult | None:
        """GET the stored result; None when the gateway never received the payment (404).

        Raises `GatewayUnavailable` when the gateway cannot be asked right now.
        """
        ...

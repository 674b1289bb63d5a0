"""Value types shared by the payments modules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, Protocol


@dataclass(frozen=True)
class Card:
    """A card as the POS sent it. `cvc` is for online authorization only, never stored."""

    pan: str = field(repr=False)
    exp_month: int
    exp_year: int
    cvc: str | None = field(default=None, repr=False)

    @property
    def first6(self) -> str:
        return self.pan[:6]

    @property
    def last4(self) -> str:
        return self.pan[-4:]

    @property
    def masked(self) -> str:
        return f"{self.pan[:6]}{'*' * (len(self.pan) - 10)}{self.pan[-4:]}"

    def to_dict(self, *, include_cvc: bool) -> dict[str, Any]:
        """The card as JSON fields, the one place a card becomes a dict: PAN and expiry,
        and the CVC (when the POS sent one) only with `include_cvc`. Only an online
        authorization and the POS's own request body carry it; whatever is kept, sealed,
        hashed or forwarded offline is made with ``include_cvc=False`` (PCI DSS 3.3.1.2:
        no CVC after authorization)."""
        doc: dict[str, Any] = {"pan": self.pan, "exp_month": self.exp_month,
                               "exp_year": self.exp_year}
        if include_cvc and self.cvc is not None:
            doc["cvc"] = self.cvc
        return doc


@dataclass(frozen=True)
class PaymentRequest:
    """A validated `POST /v1/payments` body (docs/openapi.json)."""

    amount: int
    currency: str
    card: Card
    terminal_id: str | None = None
    reference: str | None = None


@dataclass(frozen=True)
class GatewayResult:
    """The gateway's answer to an authorization (docs/gateway-protocol.md)."""

    status: Literal["approved", "declined"]
    auth_code: str | None = None
    decline_code: str | None = None


class PaymentStatus(StrEnum):
    """What the POS was told (docs/openapi.json); PENDING while the online attempt runs."""

    PENDING = "pending"
    APPROVED = "approved"
    DECLINED = "declined"
    APPROVED_OFFLINE = "approved_offline"
    DECLINED_OFFLINE = "declined_offline"


class ForwardState(StrEnum):
    """Where an offline-approved payment is on its way to the gateway (docs/openapi.json)."""

    NONE = "none"              # online payment, or declined offline: nothing to forward
    UNKNOWN = "unknown"        # an online attempt's answer was lost: look it up first
    QUEUED = "queued"
    FORWARDED = "forwarded"
    DEAD = "dead"


@dataclass(frozen=True)
class QueueStats:
    count: int
    amount: int                  # every currency's minor units added up
    oldest_created_at: datetime | None
    by_state: dict[str, int]
    #: The owed amount of each currency with any (quarantined and stuck included, as
    #: `amount`): the offline caps are per currency.
    amount_by_currency: dict[str, int] = field(default_factory=dict)


# --- what the store answers ------------------------------------------------------------


class OfflineDecision(Protocol):
    """The offline risk rules' verdict (e.g. `risk.RiskDecision`)."""

    @property
    def approved(self) -> bool: ...

    @property
    def reason(self) -> str | None: ...


@dataclass(frozen=True)
class StandInDecision:
    """A plain `OfflineDecision`."""

    approved: bool
    reason: str | None = None          # the decline reason when not approved


@dataclass(frozen=True)
class OfflineRequest:
    """One payment for `Store.take_offline_many`."""

    idempotency_key: str
    request: PaymentRequest
    decide: Callable[[QueueStats, tuple[int, int]], OfflineDecision]
    velocity_since: datetime
    brand: str | None = None


@dataclass(frozen=True)
class Payment:
    """A stored payment as the rest of the box sees it: masked, never the PAN or CVC."""

    id: str
    idempotency_key: str
    created_at: datetime
    amount: int
    currency: str
    merchant_id: str | None
    terminal_id: str | None
    reference: str | None
    brand: str
    last4: str
    fingerprint: str | None        # None once the velocity window has passed
    has_card: bool                 # a card is kept (sealed or encrypted) for forwarding
    key_id: str | None             # the data key of a locally encrypted card
    seal_kid: str | None           # the gateway's seal key of a sealed card
    status: PaymentStatus
    forward_state: ForwardState
    attempts: int
    next_attempt_at: datetime | None
    final_status: str | None
    auth_code: str | None
    decline_reason: str | None
    last_error: str | None
    quarantined: bool
    quarantine_reason: str | None
    #: Until then a lost online attempt may still reach the gateway: "not found" proves
    #: nothing before it.
    lost_attempt_until: datetime | None = None
    #: The first trusted "not found"; a second one at least a moment later confirms it.
    not_found_at: datetime | None = None
    #: Set when forwarding kept failing for reasons other than the network: out of the
    #: queue (and its age rule) until an operator requeues it; still owed, still capped.
    stuck_at: datetime | None = None
    #: Attempts that failed for reasons other than the network, and since when.
    error_attempts: int = 0
    first_error_at: datetime | None = None

    @property
    def interrupted(self) -> bool:
        """The online attempt was cut short (crash, or stale) before the POS got an answer."""
        return self.status is PaymentStatus.PENDING and self.forward_state is ForwardState.UNKNOWN


@dataclass(frozen=True)
class OpenReport:
    """What `Store.open` found and did."""

    applied_migrations: list[str]
    recovered_pending: list[str]       # PENDING rows turned into interrupted ones
    unusable_keys: list[str]           # keys this KEK cannot unwrap
    quarantined: list[str]             # payments quarantined because of those keys
    upgraded: list[str] = field(default_factory=list)  # cards re-protected (upgrade)
    released: list[str] = field(default_factory=list)  # un-quarantined: their key is back


@dataclass(frozen=True)
class RotationReport:
    new_key_id: str
    reencrypted: int
    retired_keys: list[str]
    quarantined: list[str]             # records that failed authentication on the way
    new_hmac_key_id: str | None = None

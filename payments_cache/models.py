"""Value types shared by the payments modules."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal


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


@dataclass(frozen=True)
class PaymentRequest:
    """A validated `POST /v1/payments` body (CONTRACTS §3)."""

    amount: int
    currency: str
    card: Card
    terminal_id: str | None = None
    reference: str | None = None


@dataclass(frozen=True)
class GatewayResult:
    """The gateway's answer to an authorization (CONTRACTS §5)."""

    status: Literal["approved", "declined"]
    auth_code: str | None = None
    decline_code: str | None = None


class PaymentStatus(StrEnum):
    """What the POS was told (CONTRACTS §3); PENDING while the online attempt runs."""

    PENDING = "pending"
    APPROVED = "approved"
    DECLINED = "declined"
    APPROVED_OFFLINE = "approved_offline"
    DECLINED_OFFLINE = "declined_offline"


class ForwardState(StrEnum):
    """Where an offline-approved payment is on its way to the gateway (CONTRACTS §3)."""

    NONE = "none"              # online payment, or declined offline: nothing to forward
    UNKNOWN = "unknown"        # an online attempt's answer was lost: look it up first
    QUEUED = "queued"
    FORWARDED = "forwarded"
    DEAD = "dead"


@dataclass(frozen=True)
class QueueStats:
    count: int
    amount: int
    oldest_created_at: datetime | None
    by_state: dict[str, int]

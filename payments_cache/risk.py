"""The offline stand-in risk rules (docs/openapi.json): may the box approve this payment
without asking the gateway?

When no uplink reaches the gateway within the online deadline, the box approves
offline and forwards later; the merchant carries the loss if the issuer then
declines. These rules cap that exposure. `evaluate` is pure and deterministic: the
caller passes in everything it needs (the queue and per-card counters as they were
just before this payment, and today's date), so a decision can be replayed.

Rules, in the order they are checked; the first failing rule is the reason:

1. `invalid_pan` -- the PAN is not 12-19 digits or fails Luhn. Validation rejects
   these first; the rule is repeated so that a request built by other code cannot
   slip through.
2. `card_expired` -- the expiry month is over (a card is good through the last day
   of its expiry month), or the month is not 1..12.
3. `blocked_bin` -- the PAN falls under `blocked_bins` (prefixes such as "411111" or
   ranges such as "520000-520099", see `cards.bin_blocked`): issuers or ranges the
   merchant has been burnt by.
4. `currency_not_allowed_offline` -- the payment is not in the box's currency
   (`currency`) and the config gives its currency no limits of its own
   (`currency_limits`): amounts are minor units of *a* currency, so 50,000 caps KRW
   50,000 (about 35 USD) but would let USD 500.00 through; another currency is
   approved offline only under caps written for it. Such a payment also fails the
   amount rules below (its caps are 0).
5. `amount_over_limit` -- `amount > max_amount`: one large payment is the single
   biggest exposure.
6. `queue_too_old` -- the oldest queued payment is older than `max_age_s`. Card
   schemes and acquirers stop honouring offline payments that are presented late;
   once the queue is that old the outage is not a blip any more, so stop approving
   until it drains.
7. `queue_count_over_limit` -- `queue.count + 1 > max_count`: this payment would be
   one too many in the queue.
8. `queue_total_over_limit` -- `queue.total_amount + amount > max_total`: this
   payment would push the total queued amount over the cap.
9. `card_velocity_count` -- `velocity.count + 1 > velocity_max_count`: this card has
   already been used offline that many times within `velocity_window_s` (a cloned
   or stolen card is typically run again and again while the shop is offline).
10. `card_velocity_amount` -- `velocity.amount + amount > velocity_max_amount`, same
   window.

Card checks come first because they would decline online too and say the most to
the cashier; then the payment's own size; then the box-wide queue; then the card's
recent history. Since approval requires every rule to hold and each rule only gets
harder to pass as its limit is lowered, tightening any limit can never turn a
decline into an approval.

Amount caps are per currency: `max_amount`, `max_total` and `velocity_max_amount` are
minor units of the box's `currency`; `other_currencies` gives another currency caps of
its own (`CurrencyLimits`), the counts and the age rule stay box-wide. The queue total
compared with a currency's `max_total` is that currency's queued amount
(`QueueSnapshot.amount_by_currency`); when the caller only knows the total over every
currency (`amount_by_currency` None) that total is used: never less than the true one,
so it can only decline more. The per-card velocity amount is likewise the card's
offline amount in every currency. `velocity_window_s` is not used by `evaluate` itself: it tells the
caller which queued payments to count into `CardVelocity`.

Where the defaults come from (they match `firmware.config.schema.PaymentsConfig`):

- `max_age_s` = 24 h: Square expires offline payments that are not uploaded within
  24 hours of going offline (Square Support, "Process offline payments").
- `max_amount` (50,000) and `max_total` (2,000,000): Stripe Terminal's offline mode
  advises restricting each offline transaction to an amount and failing all offline
  payments once the stored total exceeds a cap (Stripe docs, "Collect payments while
  offline"); Square's offline mode has a per-transaction limit defaulting to 100
  units of the local currency (USD 100, GBP 100). In the example shop's KRW, 50,000
  is a modest basket and the total allows 40 such payments.
- `max_count` (500): Moneris Go's default maximum offline record count.
- Velocity 3 payments / 100,000 per card per hour: a conservative per-card cap in
  the spirit of the schemes' offline floor limits; no provider publishes one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Final, Literal

from payments_cache.cards import bin_blocked, expired, is_digits, luhn_valid, parse_bin_entry
from payments_cache.models import PaymentRequest

RiskReason = Literal[
    "invalid_pan", "card_expired", "blocked_bin", "currency_not_allowed_offline",
    "amount_over_limit", "queue_too_old",
    "queue_count_over_limit", "queue_total_over_limit", "card_velocity_count",
    "card_velocity_amount",
    "cannot_protect_card",  # not a rule: the box has no way to keep the card safe now
    "clock_unset",          # not a rule: the wall clock is before any real date
    "gateway_rejected",     # not a rule: the gateway refused the online request (4xx)
]

# The check order of `evaluate`: the first failing rule is the decline reason.
REASONS: Final[tuple[RiskReason, ...]] = (
    "invalid_pan", "card_expired", "blocked_bin", "currency_not_allowed_offline",
    "amount_over_limit", "queue_too_old",
    "queue_count_over_limit", "queue_total_over_limit", "card_velocity_count",
    "card_velocity_amount",
)


def _non_negative(owner: object, **values: float) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or value < 0:
            raise ValueError(f"{type(owner).__name__}.{name} must be >= 0, got {value!r}")


@dataclass(frozen=True)
class CurrencyLimits:
    """The amount caps of one currency, minor units of it (0 disables offline approval)."""

    max_amount: int
    max_total: int
    velocity_max_amount: int

    def __post_init__(self) -> None:
        _non_negative(self, max_amount=self.max_amount, max_total=self.max_total,
                      velocity_max_amount=self.velocity_max_amount)


#: The caps of a currency the box has none for: nothing of it is approved offline.
NOT_ALLOWED: Final = CurrencyLimits(0, 0, 0)


def _currency_code(owner: object, value: object) -> str:
    if not isinstance(value, str) or len(value) != 3 or not value.isascii() \
            or not value.isupper() or not value.isalpha():
        raise ValueError(f"{type(owner).__name__}: currency must be a 3-letter ISO 4217 "
                         f"code, got {value!r}")
    return value


@dataclass(frozen=True)
class RiskLimits:
    """The offline caps. Amounts in minor units; a limit of 0 disables offline approval.

    Raises ValueError for a negative limit or a malformed `blocked_bins` entry.
    """

    max_amount: int = 50_000
    max_total: int = 2_000_000
    max_count: int = 500
    max_age_s: float = 86_400.0
    velocity_window_s: float = 3_600.0
    velocity_max_count: int = 3
    velocity_max_amount: int = 100_000
    blocked_bins: tuple[str, ...] = ()
    #: The box's currency: the amount caps above are minor units of it.
    currency: str = "KRW"
    #: Other currencies approved offline, each with its own amount caps (code, caps).
    other_currencies: tuple[tuple[str, CurrencyLimits], ...] = ()

    def __post_init__(self) -> None:
        _non_negative(self, max_amount=self.max_amount, max_total=self.max_total,
                      max_count=self.max_count, max_age_s=self.max_age_s,
                      velocity_window_s=self.velocity_window_s,
                      velocity_max_count=self.velocity_max_count,
                      velocity_max_amount=self.velocity_max_amount)
        if not isinstance(self.blocked_bins, tuple):
            raise ValueError("RiskLimits.blocked_bins must be a tuple of strings")
        for entry in self.blocked_bins:
            parse_bin_entry(entry)
        _currency_code(self, self.currency)
        if not isinstance(self.other_currencies, tuple):
            raise ValueError("RiskLimits.other_currencies must be a tuple of (code, "
                             "CurrencyLimits)")
        seen = {self.currency}
        for item in self.other_currencies:
            if not (isinstance(item, tuple) and len(item) == 2
                    and isinstance(item[1], CurrencyLimits)):
                raise ValueError(f"RiskLimits.other_currencies: {item!r} is not "
                                 "(code, CurrencyLimits)")
            code = _currency_code(self, item[0])
            if code in seen:
                raise ValueError(f"RiskLimits.other_currencies: {code} given twice (or it "
                                 "is the box's currency)")
            seen.add(code)

    def for_currency(self, currency: str) -> CurrencyLimits | None:
        """The amount caps of `currency`; None when it is not approved offline."""
        if currency == self.currency:
            return CurrencyLimits(self.max_amount, self.max_total, self.velocity_max_amount)
        return next((caps for code, caps in self.other_currencies if code == currency), None)


@dataclass(frozen=True)
class QueueSnapshot:
    """The offline queue just before this payment: payments not yet forwarded."""

    count: int
    total_amount: int            # every currency's minor units added up
    oldest_age_s: float | None   # None when the queue is empty
    #: The queued amount of each currency (absent: 0); None when only the total is known.
    amount_by_currency: Mapping[str, int] | None = None

    def __post_init__(self) -> None:
        _non_negative(self, count=self.count, total_amount=self.total_amount)
        if self.oldest_age_s is not None:
            _non_negative(self, oldest_age_s=self.oldest_age_s)
        if self.amount_by_currency is not None:
            _non_negative(self, **{f"amount_by_currency[{k!r}]": v
                                   for k, v in self.amount_by_currency.items()})

    def queued_amount(self, currency: str) -> int:
        """The amount queued in `currency` (the total when not known per currency)."""
        if self.amount_by_currency is None:
            return self.total_amount
        return self.amount_by_currency.get(currency, 0)


@dataclass(frozen=True)
class CardVelocity:
    """This card's offline payments within `RiskLimits.velocity_window_s`, before this one."""

    count: int
    amount: int

    def __post_init__(self) -> None:
        _non_negative(self, count=self.count, amount=self.amount)


@dataclass(frozen=True)
class RiskDecision:
    approved: bool
    reason: RiskReason | None   # None exactly when approved

    @classmethod
    def approve(cls) -> RiskDecision:
        return cls(True, None)

    @classmethod
    def decline(cls, reason: RiskReason) -> RiskDecision:
        return cls(False, reason)


def failing_rules(request: PaymentRequest, limits: RiskLimits, queue: QueueSnapshot,
                  velocity: CardVelocity, today: date) -> list[RiskReason]:
    """Every rule this payment breaks, in check order (for diagnostics and tests)."""
    card = request.card
    amount = request.amount
    failed: list[RiskReason] = []
    pan_ok = is_digits(card.pan) and 12 <= len(card.pan) <= 19 and luhn_valid(card.pan)
    if not pan_ok:
        failed.append("invalid_pan")
    if not 1 <= card.exp_month <= 12 or expired(card.exp_month, card.exp_year, today):
        failed.append("card_expired")
    if bin_blocked(card.pan, limits.blocked_bins):
        failed.append("blocked_bin")
    caps = limits.for_currency(request.currency)
    if caps is None:
        failed.append("currency_not_allowed_offline")
        caps = NOT_ALLOWED
    if amount > caps.max_amount:
        failed.append("amount_over_limit")
    if queue.oldest_age_s is not None and queue.oldest_age_s > limits.max_age_s:
        failed.append("queue_too_old")
    if queue.count + 1 > limits.max_count:
        failed.append("queue_count_over_limit")
    if queue.queued_amount(request.currency) + amount > caps.max_total:
        failed.append("queue_total_over_limit")
    if velocity.count + 1 > limits.velocity_max_count:
        failed.append("card_velocity_count")
    if velocity.amount + amount > caps.velocity_max_amount:
        failed.append("card_velocity_amount")
    return failed


def evaluate(request: PaymentRequest, limits: RiskLimits, queue: QueueSnapshot,
             velocity: CardVelocity, today: date) -> RiskDecision:
    """Approve offline only when every rule holds; otherwise decline with the first
    failing rule in `REASONS` order (see the module docstring)."""
    failed = failing_rules(request, limits, queue, velocity, today)
    return RiskDecision.decline(failed[0]) if failed else RiskDecision.approve()

"""payments_cache.risk: the offline stand-in rules."""

from __future__ import annotations

import calendar
import dataclasses
from datetime import date
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments_cache.models import Card, PaymentRequest
from payments_cache.risk import (
    REASONS,
    CardVelocity,
    CurrencyLimits,
    QueueSnapshot,
    RiskDecision,
    RiskLimits,
    evaluate,
    failing_rules,
)

TODAY = date(2026, 5, 15)
PAN = "4111111111111111"
LIMITS = RiskLimits(max_amount=1000, max_total=5000, max_count=10, max_age_s=3600,
                    velocity_window_s=600, velocity_max_count=3, velocity_max_amount=2000,
                    blocked_bins=("520000-520099", "6011"))
EMPTY = QueueSnapshot(count=0, total_amount=0, oldest_age_s=None)
FRESH = CardVelocity(count=0, amount=0)


def luhn_check_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d // 10 + d % 10
    return str((10 - total % 10) % 10)


def req(amount: int = 500, pan: str = PAN, exp_month: int = 12,
        exp_year: int = 2028) -> PaymentRequest:
    return PaymentRequest(amount=amount, currency="KRW",
                          card=Card(pan=pan, exp_month=exp_month, exp_year=exp_year))


def decide(request: PaymentRequest | None = None, limits: RiskLimits = LIMITS,
           queue: QueueSnapshot = EMPTY, velocity: CardVelocity = FRESH) -> RiskDecision:
    return evaluate(request or req(), limits, queue, velocity, TODAY)


# --- one rule at a time ---------------------------------------------------------

def test_an_ordinary_payment_is_approved() -> None:
    assert decide() == RiskDecision(approved=True, reason=None)


def test_defaults_match_the_config_schema() -> None:
    from firmware.config.schema import PaymentsConfig

    fields = {f.name: f.default for f in dataclasses.fields(PaymentsConfig)}
    d = RiskLimits()
    assert (d.max_amount, d.max_total, d.max_count) == (
        fields["offline_max_amount"], fields["offline_max_total"], fields["offline_max_count"])
    assert d.max_age_s == fields["offline_max_age_s"] == 24 * 3600
    assert (d.velocity_window_s, d.velocity_max_count, d.velocity_max_amount) == (
        fields["velocity_window_s"], fields["velocity_max_count"],
        fields["velocity_max_amount"])
    assert d.blocked_bins == ()


def _valid(prefix: str, length: int = 16) -> str:
    body = prefix + "0" * (length - 1 - len(prefix))
    return body + luhn_check_digit(body)


Case = tuple[str, dict[str, Any], str | None]

CASES: list[Case] = [
    ("amount at the limit", {"request": req(amount=1000)}, None),
    ("amount over", {"request": req(amount=1001)}, "amount_over_limit"),
    ("queue total reaches the cap",
     {"queue": QueueSnapshot(1, 4500, 10.0)}, None),
    ("queue total would pass the cap",
     {"queue": QueueSnapshot(1, 4501, 10.0)}, "queue_total_over_limit"),
    ("queue total already over",
     {"queue": QueueSnapshot(1, 6000, 10.0)}, "queue_total_over_limit"),
    ("queue count: this one is the last allowed",
     {"queue": QueueSnapshot(9, 900, 10.0)}, None),
    ("queue count: this one would be one too many",
     {"queue": QueueSnapshot(10, 1000, 10.0)}, "queue_count_over_limit"),
    ("queue age at the limit", {"queue": QueueSnapshot(1, 100, 3600.0)}, None),
    ("queue age over", {"queue": QueueSnapshot(1, 100, 3600.5)}, "queue_too_old"),
    ("empty queue has no age", {"queue": QueueSnapshot(0, 0, None)}, None),
    ("velocity count: last allowed", {"velocity": CardVelocity(2, 1000)}, None),
    ("velocity count: one too many", {"velocity": CardVelocity(3, 0)}, "card_velocity_count"),
    ("velocity amount reaches cap", {"velocity": CardVelocity(1, 1500)}, None),
    ("velocity amount would pass", {"velocity": CardVelocity(1, 1501)},
     "card_velocity_amount"),
    ("blocked range", {"request": req(pan=_valid("520050"))}, "blocked_bin"),
    ("range start is blocked", {"request": req(pan=_valid("520000"))}, "blocked_bin"),
    ("range end is blocked", {"request": req(pan=_valid("520099"))}, "blocked_bin"),
    ("just outside the range", {"request": req(pan=_valid("520100"))}, None),
    ("blocked prefix", {"request": req(pan="6011111111111117")}, "blocked_bin"),
    ("expired last month", {"request": req(exp_month=4, exp_year=2026)}, "card_expired"),
    ("expires this month", {"request": req(exp_month=5, exp_year=2026)}, None),
    ("month out of range", {"request": req(exp_month=13)}, "card_expired"),
    ("luhn fails", {"request": req(pan="4111111111111112")}, "invalid_pan"),
    ("too short", {"request": req(pan="41111111116")}, "invalid_pan"),
    ("not digits", {"request": req(pan="4111-1111-1111-1111")}, "invalid_pan"),
]


@pytest.mark.parametrize(("kwargs", "reason"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_rules(kwargs: dict[str, Any], reason: str | None) -> None:
    decision = decide(**kwargs)
    assert decision.reason == reason
    assert decision.approved is (reason is None)


def test_first_failing_rule_wins_in_documented_order() -> None:
    everything_wrong = req(amount=10_000, pan="6011000000000000", exp_month=1, exp_year=2020)
    limits = dataclasses.replace(LIMITS, blocked_bins=("6011",))
    queue = QueueSnapshot(count=50, total_amount=50_000, oldest_age_s=99_999.0)
    velocity = CardVelocity(count=9, amount=99_999)
    assert failing_rules(dataclasses.replace(everything_wrong, currency="USD"), limits, queue,
                         velocity, TODAY) == list(REASONS)
    assert failing_rules(everything_wrong, limits, queue, velocity, TODAY) == [
        r for r in REASONS if r != "currency_not_allowed_offline"]
    assert decide(everything_wrong, limits, queue, velocity).reason == "invalid_pan"
    # Fix the rules one by one, front to back: the next one becomes the reason.
    fixed_pan = req(amount=10_000, pan=_valid("6011"), exp_month=1, exp_year=2020)
    assert decide(fixed_pan, limits, queue, velocity).reason == "card_expired"
    fixed_exp = dataclasses.replace(fixed_pan, card=dataclasses.replace(
        fixed_pan.card, exp_year=2030))
    assert decide(fixed_exp, limits, queue, velocity).reason == "blocked_bin"
    unblocked = dataclasses.replace(limits, blocked_bins=())
    assert decide(dataclasses.replace(fixed_exp, currency="JPY"), unblocked, queue,
                  velocity).reason == "currency_not_allowed_offline"
    assert decide(fixed_exp, unblocked, queue, velocity).reason == "amount_over_limit"
    small = dataclasses.replace(fixed_exp, amount=100)
    assert decide(small, unblocked, queue, velocity).reason == "queue_too_old"
    queue = dataclasses.replace(queue, oldest_age_s=1.0)
    assert decide(small, unblocked, queue, velocity).reason == "queue_count_over_limit"
    queue = dataclasses.replace(queue, count=1)
    assert decide(small, unblocked, queue, velocity).reason == "queue_total_over_limit"
    queue = dataclasses.replace(queue, total_amount=1)
    assert decide(small, unblocked, queue, velocity).reason == "card_velocity_count"
    velocity = dataclasses.replace(velocity, count=0)
    assert decide(small, unblocked, queue, velocity).reason == "card_velocity_amount"
    velocity = dataclasses.replace(velocity, amount=0)
    assert decide(small, unblocked, queue, velocity).approved


def test_zero_limits_disable_offline_approval() -> None:
    assert decide(limits=dataclasses.replace(LIMITS, max_count=0)).reason == \
        "queue_count_over_limit"
    assert decide(limits=dataclasses.replace(LIMITS, velocity_max_count=0)).reason == \
        "card_velocity_count"


@pytest.mark.parametrize("change", [
    {"max_amount": -1}, {"max_total": -1}, {"max_count": -1}, {"max_age_s": -0.5},
    {"velocity_window_s": -1}, {"velocity_max_count": -1}, {"velocity_max_amount": -1},
    {"blocked_bins": ("52x",)}, {"blocked_bins": ("520099-520000",)},
    {"blocked_bins": ["411111"]},
])
def test_bad_limits_raise(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(LIMITS, **change)


@pytest.mark.parametrize("make", [
    lambda: QueueSnapshot(-1, 0, None), lambda: QueueSnapshot(0, -1, None),
    lambda: QueueSnapshot(0, 0, -1.0), lambda: CardVelocity(-1, 0),
    lambda: CardVelocity(0, -1),
])
def test_negative_counters_raise(make: Any) -> None:
    with pytest.raises(ValueError):
        make()


def test_values_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        LIMITS.max_amount = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        EMPTY.count = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        decide().approved = False  # type: ignore[misc]


# --- properties -----------------------------------------------------------------

small = st.integers(0, 60)


@st.composite
def pans(draw: st.DrawFn) -> str:
    prefix = draw(st.sampled_from(["4", "51", "52005", "6011", "35", "9"]))
    length = draw(st.integers(12, 19))
    rest = draw(st.text("0123456789", min_size=length - 1 - len(prefix),
                        max_size=length - 1 - len(prefix)))
    pan = prefix + rest + luhn_check_digit(prefix + rest)
    if draw(st.integers(0, 9)) == 0:   # sometimes a bad check digit
        pan = pan[:-1] + str((int(pan[-1]) + 1) % 10)
    return pan


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[PaymentRequest, RiskLimits, QueueSnapshot,
                                        CardVelocity, date]:
    request = PaymentRequest(
        amount=draw(st.integers(1, 60)), currency=draw(st.sampled_from(["KRW", "KRW", "USD"])),
        card=Card(pan=draw(pans()), exp_month=draw(st.integers(1, 12)),
                  exp_year=draw(st.integers(2024, 2028))))
    bins = draw(st.lists(st.sampled_from(["4", "52005", "520000-520099", "6011", "35-36",
                                          "411111", "9"]), max_size=2))
    limits = RiskLimits(max_amount=draw(small), max_total=draw(st.integers(0, 200)),
                        max_count=draw(st.integers(0, 8)),
                        max_age_s=draw(st.floats(0, 100)),
                        velocity_window_s=draw(st.floats(0, 100)),
                        velocity_max_count=draw(st.integers(0, 5)),
                        velocity_max_amount=draw(st.integers(0, 120)),
                        blocked_bins=tuple(bins),
                        other_currencies=draw(st.sampled_from([(), (
                            ("USD", CurrencyLimits(draw(small), draw(st.integers(0, 200)),
                                                   draw(st.integers(0, 120)))),)])))
    krw, usd = draw(st.integers(0, 200)), draw(st.integers(0, 200))
    queue = QueueSnapshot(count=draw(st.integers(0, 8)), total_amount=krw + usd,
                          oldest_age_s=draw(st.none() | st.floats(0, 100)),
                          amount_by_currency=draw(st.sampled_from(
                              [None, {"KRW": krw, "USD": usd}, {"KRW": krw}])))
    velocity = CardVelocity(count=draw(st.integers(0, 5)), amount=draw(st.integers(0, 120)))
    today = draw(st.dates(date(2024, 1, 1), date(2029, 12, 31)))
    return request, limits, queue, velocity, today


def oracle(request: PaymentRequest, limits: RiskLimits, queue: QueueSnapshot,
           velocity: CardVelocity, today: date) -> dict[str, bool]:
    """Each rule written out independently of the implementation: True = it holds."""
    pan = request.card.pan
    body, check = pan[:-1], pan[-1:]
    last_day = date(request.card.exp_year, request.card.exp_month,
                    calendar.monthrange(request.card.exp_year, request.card.exp_month)[1])

    def under(entry: str) -> bool:
        low, _, high = entry.partition("-")
        high = high or low
        return (low <= pan[:len(low)] and pan[:len(high)] <= high
                and len(pan) >= max(len(low), len(high)))

    caps = {limits.currency: (limits.max_amount, limits.max_total, limits.velocity_max_amount)}
    caps.update((code, (c.max_amount, c.max_total, c.velocity_max_amount))
                for code, c in limits.other_currencies)
    max_amount, max_total, velocity_max_amount = caps.get(request.currency, (0, 0, 0))
    queued = (queue.total_amount if queue.amount_by_currency is None
              else queue.amount_by_currency.get(request.currency, 0))
    return {
        "invalid_pan": pan.isdigit() and 12 <= len(pan) <= 19
        and luhn_check_digit(body) == check,
        "card_expired": today <= last_day,
        "blocked_bin": not any(under(e) for e in limits.blocked_bins),
        "currency_not_allowed_offline": request.currency in caps,
        "amount_over_limit": request.amount <= max_amount,
        "queue_too_old": queue.oldest_age_s is None or queue.oldest_age_s <= limits.max_age_s,
        "queue_count_over_limit": queue.count + 1 <= limits.max_count,
        "queue_total_over_limit": queued + request.amount <= max_total,
        "card_velocity_count": velocity.count + 1 <= limits.velocity_max_count,
        "card_velocity_amount": velocity.amount + request.amount <= velocity_max_amount,
    }


@given(scenarios())
def test_approval_iff_every_limit_holds(scenario: Any) -> None:
    holds = oracle(*scenario)
    decision = evaluate(*scenario)
    assert decision.approved is all(holds.values())
    if decision.approved:
        request, limits, queue, velocity, _ = scenario
        caps = limits.for_currency(request.currency)
        assert caps is not None  # only a currency with caps is ever approved offline
        assert request.amount <= caps.max_amount
        assert queue.queued_amount(request.currency) + request.amount <= caps.max_total
        assert queue.count + 1 <= limits.max_count
        assert queue.oldest_age_s is None or queue.oldest_age_s <= limits.max_age_s
        assert velocity.count + 1 <= limits.velocity_max_count
        assert velocity.amount + request.amount <= caps.velocity_max_amount
        assert decision.reason is None


@given(scenarios())
def test_reason_is_the_first_failing_rule(scenario: Any) -> None:
    holds = oracle(*scenario)
    decision = evaluate(*scenario)
    expected = next((r for r in REASONS if not holds[r]), None)
    assert decision.reason == expected
    assert failing_rules(*scenario) == [r for r in REASONS if not holds[r]]


TIGHTENABLE = ["max_amount", "max_total", "max_count", "max_age_s", "velocity_max_count",
               "velocity_max_amount", "blocked_bins"]


@given(scenarios(), st.lists(st.sampled_from(TIGHTENABLE), min_size=1, unique=True),
       st.data())
def test_tightening_never_turns_a_decline_into_an_approval(
        scenario: Any, fields: list[str], data: st.DataObject) -> None:
    request, limits, queue, velocity, today = scenario
    changes: dict[str, Any] = {}
    for name in fields:
        current = getattr(limits, name)
        if name == "blocked_bins":
            extra = data.draw(st.lists(st.sampled_from(["4", "51-55", "6", "3528-3589"]),
                                       min_size=1, max_size=2), label="extra bins")
            changes[name] = current + tuple(extra)
        elif isinstance(current, float):
            changes[name] = data.draw(st.floats(0, current), label=name)
        else:
            changes[name] = data.draw(st.integers(0, current), label=name)
    tight = dataclasses.replace(limits, **changes)
    loose_decision = evaluate(request, limits, queue, velocity, today)
    tight_decision = evaluate(request, tight, queue, velocity, today)
    if not loose_decision.approved:
        assert not tight_decision.approved
    if tight_decision.approved:
        assert loose_decision.approved


@given(scenarios(), st.integers(1, 1000))
def test_a_bigger_amount_never_turns_a_decline_into_an_approval(scenario: Any,
                                                                extra: int) -> None:
    request, limits, queue, velocity, today = scenario
    bigger = dataclasses.replace(request, amount=request.amount + extra)
    if not evaluate(request, limits, queue, velocity, today).approved:
        assert not evaluate(bigger, limits, queue, velocity, today).approved


@given(scenarios())
def test_evaluate_is_deterministic_and_consistent(scenario: Any) -> None:
    first = evaluate(*scenario)
    assert evaluate(*scenario) == first
    assert (first.reason is None) is first.approved
    assert first.reason is None or first.reason in REASONS


# --- currencies -------------------------------------------------------------------

USD = CurrencyLimits(max_amount=100, max_total=300, velocity_max_amount=150)
WITH_USD = dataclasses.replace(LIMITS, other_currencies=(("USD", USD),))


def in_(currency: str, amount: int = 50) -> PaymentRequest:
    return dataclasses.replace(req(amount=amount), currency=currency)


CURRENCY_CASES: list[Case] = [
    ("the box's currency", {"request": in_("KRW")}, None),
    ("another currency, no limits for it", {"request": in_("USD")},
     "currency_not_allowed_offline"),
    ("another currency, 1 minor unit", {"request": in_("USD", 1)},
     "currency_not_allowed_offline"),
    ("limits for USD: USD within them", {"request": in_("USD", 100), "limits": WITH_USD}, None),
    ("limits for USD: its own amount cap", {"request": in_("USD", 101), "limits": WITH_USD},
     "amount_over_limit"),
    ("limits for USD: JPY still declined", {"request": in_("JPY"), "limits": WITH_USD},
     "currency_not_allowed_offline"),
    ("limits for USD: KRW keeps the box's caps", {"request": in_("KRW", 1000),
                                                   "limits": WITH_USD}, None),
    ("USD queue total per currency: KRW queued does not count",
     {"request": in_("USD", 100), "limits": WITH_USD,
      "queue": QueueSnapshot(3, 4000, 1.0, {"KRW": 3900, "USD": 100})}, None),
    ("USD queue total per currency: over USD's cap",
     {"request": in_("USD", 100), "limits": WITH_USD,
      "queue": QueueSnapshot(3, 4000, 1.0, {"KRW": 3799, "USD": 201})},
     "queue_total_over_limit"),
    ("KRW queue total per currency: USD queued does not count",
     {"request": in_("KRW", 1000), "queue": QueueSnapshot(2, 4100, 1.0, {"KRW": 4000,
                                                                         "USD": 100})}, None),
    ("only the total known: it counts for every currency (never approves more)",
     {"request": in_("USD", 100), "limits": WITH_USD, "queue": QueueSnapshot(3, 250, 1.0)},
     "queue_total_over_limit"),
    ("USD velocity amount cap", {"request": in_("USD", 100), "limits": WITH_USD,
                                 "velocity": CardVelocity(1, 51)}, "card_velocity_amount"),
    ("counts stay box-wide", {"request": in_("USD", 1), "limits": WITH_USD,
                              "queue": QueueSnapshot(10, 0, 1.0, {})},
     "queue_count_over_limit"),
]


@pytest.mark.parametrize(("kwargs", "reason"), [c[1:] for c in CURRENCY_CASES],
                         ids=[c[0] for c in CURRENCY_CASES])
def test_currency_rules(kwargs: dict[str, Any], reason: str | None) -> None:
    decision = decide(**kwargs)
    assert decision.reason == reason
    assert decision.approved is (reason is None)


@pytest.mark.parametrize("change", [
    {"currency": "krw"}, {"currency": "KR"}, {"currency": 410},
    {"other_currencies": (("KRW", USD),)}, {"other_currencies": (("USD", USD), ("USD", USD))},
    {"other_currencies": {"USD": USD}}, {"other_currencies": (("USD", 100),)},
])
def test_bad_currency_limits_raise(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(LIMITS, **change)
    with pytest.raises(ValueError):
        CurrencyLimits(-1, 0, 0)


def config_limits(payments: str) -> RiskLimits:
    from firmware.components.payments import settings_from
    from firmware.config import load_config_text

    config = load_config_text('[device]\nid = "s"\n[payments]\n'
                              'gateway_url = "https://gw.example"\n' + payments)
    return settings_from(config).limits


def test_the_config_sets_the_currency_and_its_caps() -> None:
    default = config_limits("")
    assert (default.currency, default.other_currencies) == ("KRW", ())
    assert decide(in_("USD"), default).reason == "currency_not_allowed_offline"
    limits = config_limits(
        'currency = "JPY"\noffline_max_amount = 20000\n'
        "[payments.currency_limits.USD]\noffline_max_amount = 10000\n"
        "offline_max_total = 300000\n"
        "[payments.currency_limits.EUR]\noffline_max_amount = 5000\n"
        "offline_max_total = 100000\nvelocity_max_amount = 7000\n")
    assert (limits.currency, limits.max_amount) == ("JPY", 20000)
    assert limits.other_currencies == (("EUR", CurrencyLimits(5000, 100000, 7000)),
                                       ("USD", CurrencyLimits(10000, 300000, 20000)))
    assert limits.for_currency("KRW") is None


@pytest.mark.parametrize(("payments", "problem"), [
    ('currency = "XYZ"\n', "payments.currency: must be an active ISO 4217"),
    ("[payments.currency_limits.USD]\noffline_max_amount = 1\n",
     "offline_max_total must be set"),
    ("[payments.currency_limits.usd]\noffline_max_amount = 1\noffline_max_total = 2\n",
     "the table name must be an active ISO 4217"),
    ("[payments.currency_limits.USD]\noffline_max_amount = 1\noffline_max_total = 2\n"
     "max_count = 3\n", "unknown key 'max_count'"),
    ("[payments.currency_limits.USD]\noffline_max_amount = -1\noffline_max_total = 2\n",
     "must be 0 or more"),
    ('[payments.currency_limits.USD]\noffline_max_amount = "1"\noffline_max_total = 2\n',
     "must be a table whose values are each a table"),
    ("[payments.currency_limits.KRW]\noffline_max_amount = 1\noffline_max_total = 2\n",
     "KRW is the box's currency"),
])
def test_bad_currency_config_is_refused(payments: str, problem: str) -> None:
    from firmware.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        config_limits(payments)
    assert problem in str(info.value)


@pytest.mark.parametrize(("payments", "refused"), [
    ('gateway_url = "http://gw.example"\n', True),
    ('gateway_url = "http://gw.example"\nallow_insecure_gateway = false\n', True),
    ('gateway_url = "http://gw.example"\nallow_insecure_gateway = true\n', False),
    ('gateway_url = "https://gw.example"\n', False),
])
def test_a_plain_http_gateway_needs_allow_insecure_gateway(payments: str, refused: bool) -> None:
    from firmware.config import load_config_text
    from firmware.errors import ConfigError

    text = '[device]\nid = "s"\n[payments]\n' + payments
    if not refused:
        assert load_config_text(text).payments.gateway_url.endswith("gw.example")
        return
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "box.toml")
    assert [str(p) for p in info.value.problems] == [
        "box.toml:4: payments.gateway_url: must be https:// (card numbers cross it); a plain "
        "http:// gateway only with payments.allow_insecure_gateway = true (drills and tests), "
        "got 'http://gw.example'"]

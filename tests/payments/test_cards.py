"""payments_cache.cards: Luhn, brand, expiry and blocked BINs; `Card.to_dict`, the one
card serialisation, and where the CVC goes."""

from __future__ import annotations

import calendar
import json
from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments_cache.cards import bin_blocked, brand, expired, luhn_valid, parse_bin_entry
from payments_cache.crypto import card_plaintext as crypto_plaintext
from payments_cache.gateway import AuthorizationPayload
from payments_cache.models import Card, PaymentRequest
from payments_cache.sealing import card_plaintext as sealed_plaintext
from payments_cache.validation import request_to_body


def luhn_check_digit(body: str) -> str:
    """Independent oracle: the digit that makes `body + digit` pass Luhn."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)  # the check digit will shift parity
        total += d // 10 + d % 10
    return str((10 - total % 10) % 10)


digits = st.text(alphabet="0123456789", min_size=1, max_size=18)
valid_pans = st.text(alphabet="0123456789", min_size=11, max_size=18).map(
    lambda body: body + luhn_check_digit(body))


# --- Luhn -----------------------------------------------------------------------

@pytest.mark.parametrize("pan", [
    "4111111111111111",      # Visa test card
    "5555555555554444",      # Mastercard
    "2223003122003222",      # Mastercard 2-series
    "378282246310005",       # Amex
    "6011111111111117",      # Discover
    "3530111333300000",      # JCB
    "6200000000000005",      # UnionPay
    "79927398713",           # the textbook example
    "000000000000",
])
def test_luhn_accepts_known_good_numbers(pan: str) -> None:
    assert luhn_valid(pan)


@pytest.mark.parametrize("pan", [
    "4111111111111112", "4111111111111121", "5555555555554440", "378282246310006",
    "79927398710", "", "0", "7",
    "4111 1111 1111 1111", "4111-1111-1111-1111", " 4111111111111111",
    "".join(chr(0xFF10 + int(d)) for d in "4111111111111111"),  # fullwidth: isdigit()
    "4111111111111111\n", "411111111111111²",
])
def test_luhn_rejects_bad_or_non_digit_strings(pan: str) -> None:
    assert not luhn_valid(pan)


@given(valid_pans)
def test_luhn_accepts_every_number_with_the_right_check_digit(pan: str) -> None:
    assert luhn_valid(pan)


@given(valid_pans, st.data())
def test_changing_any_single_digit_breaks_luhn(pan: str, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(pan) - 1), label="position")
    new = data.draw(st.sampled_from([d for d in "0123456789" if d != pan[i]]), label="digit")
    assert not luhn_valid(pan[:i] + new + pan[i + 1:])


@given(digits, st.data())
def test_only_one_check_digit_passes(body: str, data: st.DataObject) -> None:
    good = luhn_check_digit(body)
    other = data.draw(st.sampled_from([d for d in "0123456789" if d != good]))
    assert luhn_valid(body + good)
    assert not luhn_valid(body + other)


# --- brand ----------------------------------------------------------------------

@pytest.mark.parametrize(("pan", "expected"), [
    ("4111111111111111", "visa"),
    ("4000056655665556", "visa"),
    ("5105105105105100", "mastercard"),
    ("5555555555554444", "mastercard"),
    ("5100000000000008", "mastercard"),
    ("2221000000000009", "mastercard"),
    ("2720999999999996", "mastercard"),
    ("2220990000000000", "unknown"),      # just below the 2-series
    ("2721000000000000", "unknown"),      # just above it
    ("378282246310005", "amex"),
    ("341111111111111", "amex"),
    ("351111111111111", "unknown"),
    ("6011111111111117", "discover"),
    ("6445644564456445", "discover"),
    ("6495000000000000", "discover"),
    ("6500000000000002", "discover"),
    ("6430000000000000", "unknown"),
    ("3530111333300000", "jcb"),
    ("3528000000000007", "jcb"),
    ("3589000000000000", "jcb"),
    ("3527000000000000", "unknown"),
    ("3590000000000000", "unknown"),
    ("6200000000000005", "unionpay"),
    ("6221260000000000", "unionpay"),
    ("8171999927660000", "unionpay"),
    ("6304000000000000", "maestro"),
    ("6759649826438453", "maestro"),
    ("6761000000000000", "maestro"),
    ("5018000000000009", "maestro"),
    ("5600000000000000", "maestro"),
    ("5900000000000000", "unknown"),
    ("9000000000000000", "unknown"),
    ("1234567812345670", "unknown"),
    ("", "unknown"),
    ("4111-1111", "unknown"),
    ("4", "visa"),
    ("2", "unknown"),                     # too short to tell a 2-series Mastercard
])
def test_brand(pan: str, expected: str) -> None:
    assert brand(pan) == expected


@given(st.integers(2221, 2720), digits)
def test_every_mastercard_2_series_prefix_is_mastercard(prefix: int, rest: str) -> None:
    assert brand(f"{prefix}{rest}") == "mastercard"


@given(st.integers(51, 55), digits)
def test_every_mastercard_5_series_prefix_is_mastercard(prefix: int, rest: str) -> None:
    assert brand(f"{prefix}{rest}") == "mastercard"


# --- expiry ---------------------------------------------------------------------

@pytest.mark.parametrize(("month", "year", "today", "is_expired"), [
    (3, 2026, date(2026, 3, 1), False),
    (3, 2026, date(2026, 3, 31), False),     # valid through the month's last day
    (3, 2026, date(2026, 4, 1), True),
    (2, 2024, date(2024, 2, 29), False),
    (2, 2024, date(2024, 3, 1), True),
    (12, 2025, date(2025, 12, 31), False),
    (12, 2025, date(2026, 1, 1), True),
    (1, 2027, date(2026, 12, 31), False),
    (12, 2026, date(2027, 1, 1), True),
    (6, 2030, date(2026, 5, 15), False),
])
def test_expired(month: int, year: int, today: date, is_expired: bool) -> None:
    assert expired(month, year, today) is is_expired


@pytest.mark.parametrize("month", [0, 13, -1])
def test_expired_rejects_a_month_outside_1_to_12(month: int) -> None:
    with pytest.raises(ValueError, match="exp_month"):
        expired(month, 2030, date(2026, 1, 1))


@given(st.integers(1, 12), st.integers(2000, 2100),
       st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 12, 31)))
def test_expired_matches_last_day_of_month(month: int, year: int, today: date) -> None:
    last_day = date(year, month, calendar.monthrange(year, month)[1])
    assert expired(month, year, today) is (today > last_day)


# --- blocked BINs ---------------------------------------------------------------

PAN = "5200501234567890"


@pytest.mark.parametrize(("ranges", "blocked"), [
    ([], False),
    (["5200501"], True),                   # plain prefix
    (["520050"], True),
    (["52005"], True),
    (["411111"], False),
    (["520000-520099"], True),             # inside
    (["520050-520050"], True),             # a one-BIN range
    (["520051-520099"], False),            # starts above
    (["520000-520049"], False),            # ends below
    (["411111", "520000-520099"], True),   # any entry matches
    (["5200-5201"], True),                 # shorter bounds compare shorter prefixes
    (["5201-5299"], False),
    (["52-5200"], True),                   # LOW and HIGH of different lengths
    (["53-5400"], False),
    (["52005012345678901234"], False),     # longer than the PAN never matches
    ([" 520050 "], True),                  # config whitespace tolerated
])
def test_bin_blocked(ranges: list[str], blocked: bool) -> None:
    assert bin_blocked(PAN, ranges) is blocked


def test_bin_range_bounds_are_inclusive() -> None:
    ranges = ["520000-520099"]
    assert bin_blocked("5200001234567890", ranges)
    assert bin_blocked("5200991234567890", ranges)
    assert not bin_blocked("5201001234567890", ranges)
    assert not bin_blocked("5199991234567890", ranges)


@pytest.mark.parametrize("entry", ["", "abc", "41-", "-41", "41x", "520099-520000", "1-2-3"])
def test_malformed_bin_entries_raise(entry: str) -> None:
    with pytest.raises(ValueError, match="BIN"):
        bin_blocked(PAN, [entry])
    with pytest.raises(ValueError, match="BIN"):
        parse_bin_entry(entry)


@given(valid_pans, st.integers(1, 8), st.data())
def test_bin_range_matches_integer_comparison(pan: str, width: int,
                                              data: st.DataObject) -> None:
    top = 10**width - 1
    low = data.draw(st.integers(0, top), label="low")
    high = data.draw(st.integers(low, top), label="high")
    entry = f"{low:0{width}d}-{high:0{width}d}"
    assert bin_blocked(pan, [entry]) is (low <= int(pan[:width]) <= high)


@given(valid_pans, st.integers(1, 8))
def test_every_pan_is_blocked_by_its_own_prefix(pan: str, width: int) -> None:
    assert bin_blocked(pan, [pan[:width]])
    assert bin_blocked(pan, [f"{pan[:width]}-{pan[:width]}"])


# --- one card serialisation: the CVC only where it is asked for -----------------


def _card_forms(card: Card) -> dict[str, bytes | dict[str, Any]]:
    """Every form payments_cache turns a card into, by where it goes."""
    at = datetime(2026, 1, 2, tzinfo=UTC)
    payload = dict(payment_id="pay_1", amount=100, currency="KRW", card=card,
                   merchant_id="m", captured_at=at)
    return {
        "online authorization": AuthorizationPayload(offline=False, **payload).to_json(),
        "offline authorization": AuthorizationPayload(offline=True, **payload).to_json(),
        "POS request body": request_to_body(PaymentRequest(100, "KRW", card)),
        "locally encrypted": crypto_plaintext(card),
        "sealed to the gateway": sealed_plaintext(card),
    }


def test_the_cvc_is_in_exactly_the_forms_that_ask_for_it() -> None:
    card = Card("4111111111111111", 12, 2030, cvc="4729")
    forms = _card_forms(card)
    with_cvc = {name for name, form in forms.items() if b"4729" in json.dumps(
        form if isinstance(form, dict) else form.decode()).encode()}
    assert with_cvc == {"online authorization", "POS request body"}
    assert card.to_dict(include_cvc=False) == {"pan": "4111111111111111", "exp_month": 12,
                                               "exp_year": 2030}
    assert card.to_dict(include_cvc=True)["cvc"] == "4729"
    assert "cvc" not in Card("4111111111111111", 12, 2030).to_dict(include_cvc=True)

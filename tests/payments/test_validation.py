"""payments_cache.validation and payments_cache.currency: the POS request body."""

from __future__ import annotations

import copy
import json
import re
import sqlite3
import string
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments_cache.cards import luhn_valid
from payments_cache.currency import MINOR_UNITS, NO_MINOR_UNIT, UnknownCurrency, minor_units
from payments_cache.database import DB_NAME
from payments_cache.errors import InvalidRequest
from payments_cache.models import Card, PaymentRequest
from payments_cache.validation import (
    MAX_AMOUNT,
    MAX_BODY_BYTES,
    parse_idempotency_key,
    parse_payment_request,
    request_to_body,
)
from tests.support.box import payment_body, store_box

TODAY = date(2026, 5, 15)
PAN = "4111111111111111"
CVC = "987"


def luhn_check_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d // 10 + d % 10
    return str((10 - total % 10) % 10)


def valid_body() -> dict[str, Any]:
    return {"amount": 12500, "currency": "KRW",
            "card": {"pan": PAN, "exp_month": 12, "exp_year": 2028, "cvc": CVC},
            "terminal_id": "pos-1", "reference": "order-991"}


def encode(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def with_(path: str, value: Any) -> bytes:
    """The valid body with `path` ("amount", "card.pan") set to `value`."""
    body = valid_body()
    *parents, last = path.split(".")
    target = body
    for p in parents:
        target = target[p]
    target[last] = value
    return encode(body)


def without(path: str) -> bytes:
    body = valid_body()
    *parents, last = path.split(".")
    target = body
    for p in parents:
        target = target[p]
    del target[last]
    return encode(body)


def reject(body: bytes, today: date = TODAY) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_payment_request(body, today)
    return info.value


# --- the happy path -------------------------------------------------------------

def test_contract_example_parses() -> None:
    req = parse_payment_request(encode(valid_body()), TODAY)
    assert req == PaymentRequest(
        amount=12500, currency="KRW",
        card=Card(pan=PAN, exp_month=12, exp_year=2028, cvc=CVC),
        terminal_id="pos-1", reference="order-991")


def test_optional_fields_may_be_absent_or_null() -> None:
    minimal: dict[str, Any] = {"amount": 1, "currency": "USD",
               "card": {"pan": PAN, "exp_month": 5, "exp_year": 2026}}
    expected = PaymentRequest(1, "USD", Card(PAN, 5, 2026))
    assert parse_payment_request(encode(minimal), TODAY) == expected
    nulls = copy.deepcopy(minimal)
    nulls.update(terminal_id=None, reference=None)
    nulls["card"]["cvc"] = None
    assert parse_payment_request(encode(nulls), TODAY) == expected


@pytest.mark.parametrize(("path", "value"), [
    ("amount", 1),
    ("amount", MAX_AMOUNT - 1),
    ("card.pan", "411111111117"),               # 12 digits
    ("card.pan", "4111111111111111110"),        # 19 digits
    ("card.exp_month", 5),                      # this month: still valid
    ("card.exp_year", TODAY.year + 20),         # the furthest expiry accepted
    ("card.cvc", "0000"),
    ("terminal_id", "t" * 64),
    ("reference", "Ünïcødé ok — 注文 #1"),
    ("reference", ""),
])
def test_boundary_values_are_accepted(path: str, value: Any) -> None:
    body = valid_body()
    if path == "card.exp_month":
        body["card"].update(exp_month=value, exp_year=TODAY.year)
        raw = encode(body)
    else:
        raw = with_(path, value)
    parsed = parse_payment_request(raw, TODAY)
    assert parsed.amount > 0 and parsed.card.pan


def test_body_of_exactly_the_limit_is_accepted() -> None:
    raw = encode(valid_body())
    padded = raw[:-1] + b" " * (MAX_BODY_BYTES - len(raw)) + b"}"
    assert len(padded) == MAX_BODY_BYTES
    parse_payment_request(padded, TODAY)


# --- table of rejections ---------------------------------------------------------

DEEP = b"[" * 5000 + b"]" * 5000

REJECTIONS: list[tuple[str, bytes, str, str | None]] = [
    ("too large", encode(valid_body())[:-1] + b" " * MAX_BODY_BYTES + b"}",
     "body_too_large", None),
    ("empty", b"", "invalid_json", None),
    ("not json", b"amount=1", "invalid_json", None),
    ("truncated", encode(valid_body())[:-1], "invalid_json", None),
    ("not utf-8", b'{"amount": "\xff"}', "invalid_json", None),
    ("array", b"[1, 2]", "invalid_json", None),
    ("string", b'"hello"', "invalid_json", None),
    ("null", b"null", "invalid_json", None),
    ("NaN", b'{"amount": NaN}', "invalid_json", None),
    ("Infinity", b'{"amount": Infinity}', "invalid_json", None),
    ("duplicate key", b'{"amount": 1, "amount": 2}', "invalid_json", None),
    ("nested duplicate", b'{"card": {"pan": "1", "pan": "2"}}', "invalid_json", None),
    ("too deep", b'{"amount": ' + DEEP + b"}", "invalid_json", None),
    ("too many digits", b'{"amount": ' + b"9" * 5000 + b"}", "invalid_json", None),
    ("unknown top", with_("tip", 5), "unknown_field", "tip"),
    ("unknown card", with_("card.pin", "1234"), "unknown_field", "card.pin"),
    ("missing amount", without("amount"), "missing_field", "amount"),
    ("missing currency", without("currency"), "missing_field", "currency"),
    ("missing card", without("card"), "missing_field", "card"),
    ("missing pan", without("card.pan"), "missing_field", "card.pan"),
    ("missing month", without("card.exp_month"), "missing_field", "card.exp_month"),
    ("missing year", without("card.exp_year"), "missing_field", "card.exp_year"),
    ("null amount", with_("amount", None), "missing_field", "amount"),
    ("null pan", with_("card.pan", None), "missing_field", "card.pan"),
    ("amount zero", with_("amount", 0), "invalid_amount", "amount"),
    ("amount negative", with_("amount", -5), "invalid_amount", "amount"),
    ("amount float", with_("amount", 12.5), "invalid_amount", "amount"),
    ("amount integral float", with_("amount", 100.0), "invalid_amount", "amount"),
    ("amount exponent", b'{"amount": 1e2}', "invalid_amount", "amount"),
    ("amount minus zero", b'{"amount": -0}', "invalid_amount", "amount"),
    ("amount bool", with_("amount", True), "invalid_amount", "amount"),
    ("amount string", with_("amount", "100"), "invalid_amount", "amount"),
    ("amount too big", with_("amount", MAX_AMOUNT), "invalid_amount", "amount"),
    ("amount list", with_("amount", [1]), "invalid_amount", "amount"),
    ("currency lower", with_("currency", "krw"), "invalid_currency", "currency"),
    ("currency unknown", with_("currency", "ABC"), "invalid_currency", "currency"),
    ("currency withdrawn", with_("currency", "HRK"), "invalid_currency", "currency"),
    ("currency metal", with_("currency", "XAU"), "invalid_currency", "currency"),
    ("currency testing", with_("currency", "XTS"), "invalid_currency", "currency"),
    ("currency numeric", with_("currency", 410), "invalid_currency", "currency"),
    ("currency long", with_("currency", "KRWX"), "invalid_currency", "currency"),
    ("currency padded", with_("currency", " KRW"), "invalid_currency", "currency"),
    ("card string", with_("card", PAN), "invalid_field", "card"),
    ("card list", with_("card", [PAN]), "invalid_field", "card"),
    ("pan luhn", with_("card.pan", "4111111111111112"), "invalid_pan", "card.pan"),
    ("pan 11 digits", with_("card.pan", "41111111116"), "invalid_pan", "card.pan"),
    ("pan 20 digits", with_("card.pan", "41111111111111111110"), "invalid_pan", "card.pan"),
    ("pan spaces", with_("card.pan", "4111 1111 1111 1111"), "invalid_pan", "card.pan"),
    ("pan int", with_("card.pan", 4111111111111111), "invalid_pan", "card.pan"),
    ("pan fullwidth", with_("card.pan", "".join(chr(0xFF10 + int(d)) for d in PAN)),
     "invalid_pan", "card.pan"),
    ("month 0", with_("card.exp_month", 0), "invalid_field", "card.exp_month"),
    ("month 13", with_("card.exp_month", 13), "invalid_field", "card.exp_month"),
    ("month string", with_("card.exp_month", "12"), "invalid_field", "card.exp_month"),
    ("month float", with_("card.exp_month", 12.0), "invalid_field", "card.exp_month"),
    ("month bool", with_("card.exp_month", True), "invalid_field", "card.exp_month"),
    ("year 2 digits", with_("card.exp_year", 28), "invalid_field", "card.exp_year"),
    ("year 5 digits", with_("card.exp_year", 20280), "invalid_field", "card.exp_year"),
    ("year string", with_("card.exp_year", "2028"), "invalid_field", "card.exp_year"),
    ("year 21 ahead", with_("card.exp_year", TODAY.year + 21), "invalid_field",
     "card.exp_year"),
    ("year 9999", with_("card.exp_year", 9999), "invalid_field", "card.exp_year"),
    ("expired year", with_("card.exp_year", 2025), "card_expired", "card.exp_year"),
    ("cvc short", with_("card.cvc", "12"), "invalid_field", "card.cvc"),
    ("cvc long", with_("card.cvc", "12345"), "invalid_field", "card.cvc"),
    ("cvc letters", with_("card.cvc", "12a"), "invalid_field", "card.cvc"),
    ("cvc int", with_("card.cvc", 123), "invalid_field", "card.cvc"),
    ("terminal long", with_("terminal_id", "t" * 65), "invalid_field", "terminal_id"),
    ("terminal newline", with_("terminal_id", "pos\n1"), "invalid_field", "terminal_id"),
    ("terminal int", with_("terminal_id", 7), "invalid_field", "terminal_id"),
    ("reference control", with_("reference", "a\x00b"), "invalid_field", "reference"),
    ("reference surrogate", b'{"amount": 1, "currency": "KRW", "card": {"pan": "'
     + PAN.encode() + b'", "exp_month": 12, "exp_year": 2028}, "reference": "\\ud800"}',
     "invalid_field", "reference"),
    ("reference object", with_("reference", {"id": 1}), "invalid_field", "reference"),
]


@pytest.mark.parametrize(("raw", "code", "field"), [r[1:] for r in REJECTIONS],
                         ids=[r[0] for r in REJECTIONS])
def test_rejections(raw: bytes, code: str, field: str | None) -> None:
    err = reject(raw)
    assert (err.code, err.field) == (code, field)
    assert err.message


def test_expired_this_year_points_at_the_month() -> None:
    body = valid_body()
    body["card"].update(exp_month=4, exp_year=2026)
    err = reject(encode(body))
    assert (err.code, err.field) == ("card_expired", "card.exp_month")
    assert "04/2026" in err.message


def test_expiry_uses_the_given_day() -> None:
    body = valid_body()
    body["card"].update(exp_month=5, exp_year=2026)
    parse_payment_request(encode(body), date(2026, 5, 31))
    assert reject(encode(body), date(2026, 6, 1)).code == "card_expired"


@pytest.mark.parametrize(("raw", "fragments"), [
    (with_("amount", -5), ["amount", "-5"]),
    (with_("amount", "100"), ["amount", "'100'"]),
    (with_("currency", "usd"), ["currency", "'usd'", "'USD'"]),
    (with_("card.exp_month", 13), ["card.exp_month", "13"]),
    (with_("card.exp_year", 28), ["card.exp_year", "28"]),
    (with_("terminal_id", "pos\n1"), ["terminal_id", "'pos\\n1'"]),
    (with_("tip", 5), ["'tip'"]),
    (without("card.pan"), ["card.pan"]),
])
def test_messages_name_the_field_and_the_value(raw: bytes, fragments: list[str]) -> None:
    message = reject(raw).message
    for fragment in fragments:
        assert fragment in message


def test_luhn_message_has_no_number() -> None:
    err = reject(with_("card.pan", "4111111111111112"))
    assert err.message == "card.pan fails the Luhn check"


@pytest.mark.parametrize("raw", [
    with_("reference", PAN + "\n"),
    with_("terminal_id", "4111 1111 1111 1111\t"),
    with_("amount", int(PAN)),
    with_("currency", PAN),
    with_("card.exp_month", PAN),
    with_(PAN, 1),
    with_(f"card.{PAN}", 1),
])
def test_a_pan_in_the_wrong_place_is_masked(raw: bytes) -> None:
    err = reject(raw)
    for text in (err.message, err.field or "", str(err)):
        assert PAN not in text
        assert "4111 1111 1111 1111" not in text


def test_messages_are_capped() -> None:
    err = reject(with_("reference", "x" * 10_000))
    assert len(err.message) < 200
    err = reject(with_("currency", "Q" * 10_000))
    assert len(err.message) < 200


# --- properties -----------------------------------------------------------------

def holds_card_number(text: str) -> bool:
    """The test's own reading of docs/openapi.json, by brute force: some substring of `text`
    is 12-19 digits, possibly grouped by single spaces or dashes, not cut out of a
    longer digit group, and passes Luhn."""
    for i in range(len(text)):
        if i > 0 and text[i - 1].isdecimal():
            continue
        for j in range(i + 1, len(text) + 1):
            if j < len(text) and text[j].isdecimal():
                continue
            part = text[i:j]
            if not re.fullmatch(r"\d(?:[ -]?\d)*", part):
                continue
            digits = "".join(str(int(ch)) for ch in part if ch.isdecimal())
            if 12 <= len(digits) <= 19 and luhn_valid(digits):
                return True
    return False


printable = st.text(st.characters(codec="utf-8").filter(str.isprintable),
                    max_size=64).filter(lambda t: not holds_card_number(t))


@st.composite
def valid_pans(draw: st.DrawFn) -> str:
    body = draw(st.text(alphabet=string.digits, min_size=11, max_size=18))
    return body + luhn_check_digit(body)


@st.composite
def requests(draw: st.DrawFn) -> PaymentRequest:
    year = draw(st.integers(TODAY.year, TODAY.year + 20))
    month = draw(st.integers(TODAY.month if year == TODAY.year else 1, 12))
    card = Card(pan=draw(valid_pans()), exp_month=month, exp_year=year,
                cvc=draw(st.none() | st.text(string.digits, min_size=3, max_size=4)))
    return PaymentRequest(
        amount=draw(st.integers(1, MAX_AMOUNT - 1)),
        currency=draw(st.sampled_from(sorted(MINOR_UNITS))),
        card=card,
        terminal_id=draw(st.none() | printable),
        reference=draw(st.none() | printable))


@given(requests(), st.booleans(), st.booleans(), st.randoms())
def test_valid_components_parse_and_round_trip(req: PaymentRequest, ascii_only: bool,
                                               explicit_nulls: bool,
                                               rnd: Any) -> None:
    body = request_to_body(req)
    if explicit_nulls:
        body.setdefault("terminal_id", None)
        body.setdefault("reference", None)
        body["card"].setdefault("cvc", None)
    keys = list(body)
    rnd.shuffle(keys)
    raw = json.dumps({k: body[k] for k in keys}, ensure_ascii=ascii_only).encode()
    parsed = parse_payment_request(raw, TODAY)
    assert parsed == req
    assert parse_payment_request(json.dumps(request_to_body(parsed)).encode(), TODAY) == req


bad_amounts = st.one_of(
    st.integers(max_value=0),
    st.integers(min_value=MAX_AMOUNT, max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@given(bad_amounts)
def test_bad_amounts_are_always_rejected_on_amount(amount: Any) -> None:
    err = reject(with_("amount", amount))
    assert (err.code, err.field) == ("invalid_amount", "amount")


@given(st.text(max_size=5))
def test_currency_must_be_a_listed_code(code: str) -> None:
    raw = with_("currency", code)
    if code in MINOR_UNITS:
        assert parse_payment_request(raw, TODAY).currency == code
    else:
        err = reject(raw)
        assert (err.code, err.field) == ("invalid_currency", "currency")


@given(st.text(max_size=80) | st.text(st.sampled_from("0123456789 -x"), max_size=80))
def test_text_fields_accept_exactly_short_printable_strings(text: str) -> None:
    raw = with_("reference", text)
    if holds_card_number(text):
        err = reject(raw)
        assert (err.code, err.field) == ("card_number_in_text", "reference")
    elif len(text) <= 64 and text.isprintable():
        assert parse_payment_request(raw, TODAY).reference == text
    else:
        err = reject(raw)
        assert (err.code, err.field) == ("invalid_field", "reference")


# Mutations that each break a body in one way; many of them carry the PAN or the CVC
# somewhere they should not be, or a malformed version of them.
Mutation = Callable[[dict[str, Any], str, str], None]


def _set(path: str, make: Callable[[str, str], Any]) -> Mutation:
    def mutate(body: dict[str, Any], pan: str, cvc: str) -> None:
        *parents, last = path.split(".")
        target = body
        for p in parents:
            target = target[p]
        target[last] = make(pan, cvc)
    return mutate


MUTATIONS: list[Mutation] = [
    _set("card.pan", lambda pan, cvc: pan[:-1] + str((int(pan[-1]) + 1) % 10)),
    _set("card.pan", lambda pan, cvc: pan + "0" * (20 - len(pan))),
    _set("card.pan", lambda pan, cvc: pan[:4] + " " + pan[4:]),
    _set("card.pan", lambda pan, cvc: int(pan)),
    _set("card.pan", lambda pan, cvc: [pan]),
    _set("card.pan", lambda pan, cvc: pan[:11]),
    _set("card.cvc", lambda pan, cvc: cvc + "12"),
    _set("card.cvc", lambda pan, cvc: int(cvc)),
    _set("card.cvc", lambda pan, cvc: cvc + "x"),
    _set("card.cvc", lambda pan, cvc: [cvc]),
    _set("card.exp_month", lambda pan, cvc: 13),
    _set("card.exp_year", lambda pan, cvc: 1999),
    _set("card.extra", lambda pan, cvc: pan),
    _set("amount", lambda pan, cvc: -1),
    _set("amount", lambda pan, cvc: int("9" + pan)),   # always >= MAX_AMOUNT
    _set("currency", lambda pan, cvc: pan),
    _set("reference", lambda pan, cvc: pan + "\n"),
    _set("terminal_id", lambda pan, cvc: "x" * 70),
    _set("card_cvc", lambda pan, cvc: cvc),
]


@given(requests(), st.text(string.digits, min_size=3, max_size=4),
       st.sampled_from(MUTATIONS))
def test_no_message_ever_contains_the_pan(req: PaymentRequest, cvc: str,
                                          mutate: Mutation) -> None:
    body = request_to_body(req)
    body["card"]["cvc"] = cvc
    mutate(body, req.card.pan, cvc)
    err = reject(encode(body))
    for text in (err.message, err.field or "", str(err)):
        assert req.card.pan not in text


@given(requests(), st.sampled_from(MUTATIONS), st.data())
def test_messages_do_not_depend_on_the_pan_or_cvc(req: PaymentRequest, mutate: Mutation,
                                                  data: st.DataObject) -> None:
    """The error for a body is the same whatever card number and CVC it carries (given
    the same shape), so neither can be leaking into it. This catches a 3-digit CVC,
    which a plain substring test cannot tell from, say, an amount."""
    pan = req.card.pan
    other_body = data.draw(st.text(string.digits, min_size=len(pan) - 1,
                                   max_size=len(pan) - 1), label="other pan")
    other_pan = other_body + luhn_check_digit(other_body)
    cvc_len = data.draw(st.integers(3, 4), label="cvc length")
    cvc = data.draw(st.text(string.digits, min_size=cvc_len, max_size=cvc_len))
    other_cvc = data.draw(st.text(string.digits, min_size=cvc_len, max_size=cvc_len))
    errors = []
    for p, c in ((pan, cvc), (other_pan, other_cvc)):
        body = request_to_body(req)
        body["card"]["pan"] = p
        body["card"]["cvc"] = c
        mutate(body, p, c)
        err = reject(encode(body))
        errors.append((err.code, err.field, err.message))
    assert errors[0] == errors[1]


# --- Idempotency-Key --------------------------------------------------------------

@pytest.mark.parametrize("key", ["a", "k" * 64, "pay-2026-05-15_0001", "!~", "a:b/c=d"])
def test_idempotency_key_accepted(key: str) -> None:
    assert parse_idempotency_key(key) == key


@pytest.mark.parametrize(("key", "code"), [
    (None, "missing_field"),
    ("", "invalid_field"),
    ("k" * 65, "invalid_field"),
    ("has space", "invalid_field"),
    ("tab\there", "invalid_field"),
    ("del\x7f", "invalid_field"),
    ("ключ", "invalid_field"),
    ("line\n", "invalid_field"),
])
def test_idempotency_key_rejected(key: str | None, code: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_idempotency_key(key)
    assert (info.value.code, info.value.field) == (code, "Idempotency-Key")
    assert "Idempotency-Key" in info.value.message


@given(st.text(max_size=80))
def test_idempotency_key_is_1_to_64_visible_ascii(key: str) -> None:
    ok = 1 <= len(key) <= 64 and all(33 <= ord(ch) <= 126 for ch in key)
    if ok and not holds_card_number(key):
        assert parse_idempotency_key(key) == key
    else:
        with pytest.raises(InvalidRequest):
            parse_idempotency_key(key)


@given(st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1,
               max_size=64) | st.text(st.sampled_from("0123456789-k"), min_size=1,
                                      max_size=64))
def test_every_visible_ascii_key_without_a_card_number_is_accepted(key: str) -> None:
    if holds_card_number(key):
        with pytest.raises(InvalidRequest) as info:
            parse_idempotency_key(key)
        assert (info.value.code, info.value.field) == ("card_number_in_text",
                                                       "Idempotency-Key")
    else:
        assert parse_idempotency_key(key) == key


# --- the ISO 4217 table -----------------------------------------------------------

@pytest.mark.parametrize(("code", "exponent"), [
    ("KRW", 0), ("JPY", 0), ("VND", 0), ("ISK", 0), ("CLP", 0), ("XOF", 0), ("UGX", 0),
    ("USD", 2), ("EUR", 2), ("GBP", 2), ("CNY", 2), ("MGA", 2), ("MRU", 2),
    ("BHD", 3), ("KWD", 3), ("JOD", 3), ("OMR", 3), ("TND", 3), ("IQD", 3), ("LYD", 3),
    ("CLF", 4), ("UYW", 4),
    ("XCG", 2), ("ZWG", 2), ("SLE", 2), ("VED", 2),
])
def test_currency_table_exponents(code: str, exponent: int) -> None:
    assert minor_units(code) == exponent


def test_currency_table_shape() -> None:
    assert len(MINOR_UNITS) == 165
    assert all(len(c) == 3 and c.isascii() and c.isupper() for c in MINOR_UNITS)
    assert set(MINOR_UNITS.values()) == {0, 2, 3, 4}
    assert not set(MINOR_UNITS) & NO_MINOR_UNIT
    assert sorted(c for c, e in MINOR_UNITS.items() if e == 3) == [
        "BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"]
    assert sorted(c for c, e in MINOR_UNITS.items() if e == 4) == ["CLF", "UYW"]


@pytest.mark.parametrize(("code", "hint"), [
    ("usd", "uppercase"), ("XAU", "minor unit"), ("XTS", "minor unit"),
    ("HRK", "not an active"), ("ANG", "not an active"), ("BGN", "not an active"),
    ("CUC", "not an active"), ("SLL", "not an active"), ("ZWL", "not an active"),
    ("", "not an active"), (840, "string"),
])
def test_currency_table_unknown_codes_raise(code: Any, hint: str) -> None:
    with pytest.raises(UnknownCurrency, match=hint):
        minor_units(code)


# --- expiry sanity ---------------------------------------------------------------

def test_expiry_more_than_20_years_ahead_is_refused_relative_to_today() -> None:
    body = valid_body()
    body["card"]["exp_year"] = 2050
    err = reject(encode(body), date(2029, 12, 31))
    assert (err.code, err.field) == ("invalid_field", "card.exp_year")
    assert "2050" in err.message and "20 years" in err.message
    assert parse_payment_request(encode(body), date(2030, 1, 1)).card.exp_year == 2050


# --- free text is not a place for cards (docs/openapi.json) ----------------------------

OTHER_PAN = "4000056655665556"   # Luhn-valid, not the card's PAN
CARD_TEXTS = [
    OTHER_PAN,
    "4000 0566 5566 5556",
    "4000-0566-5566-5556",
    f"order {OTHER_PAN}",
    f"order-{OTHER_PAN}x",
    "qty 2 4000 0566 5566 5556",       # a number glued on by a space does not hide it
    f"{OTHER_PAN}-2",
    "".join(chr(0xFF10 + int(d)) for d in OTHER_PAN),   # fullwidth digits
    "411111111117",                    # 12 digits
    "4111111111111111110",             # 19 digits
    f"{OTHER_PAN}\n",                  # wrong in two ways: the card number wins
    OTHER_PAN + "x" * 60,              # too long as well
]
NOT_CARDS = [
    "4000056655665557",                # Luhn-invalid 16 digits: an order number
    "order-4000056655665557",
    "4000 0566 5566 5557",
    "41111111116",                     # 11 digits, Luhn-valid
    "12345678901234567890123",         # 23 digits: longer than any card number
    "4000  0566 5566 5556",            # a double space is not a grouping
    "2026-05-15 10:31 pos-1",
]


def masked_forms(value: str) -> list[str]:
    digits = re.sub(r"\D", "", value)
    return [value.strip(), digits, "#" * 12]


@pytest.mark.parametrize("field", ["reference", "terminal_id"])
@pytest.mark.parametrize("text", CARD_TEXTS)
def test_a_card_number_in_free_text_is_refused_without_echo(field: str, text: str) -> None:
    err = reject(with_(field, text))
    assert (err.code, err.field) == ("card_number_in_text", field)
    for shown in (err.message, str(err)):
        for form in masked_forms(text):
            assert form not in shown
    # The message is the same whatever the value: it cannot carry any of it.
    assert err.message == reject(with_(field, CARD_TEXTS[0])).message


@pytest.mark.parametrize("field", ["reference", "terminal_id"])
@pytest.mark.parametrize("text", NOT_CARDS)
def test_luhn_invalid_or_wrong_length_numbers_stay_accepted(field: str, text: str) -> None:
    assert getattr(parse_payment_request(with_(field, text), TODAY), field) == text


@pytest.mark.parametrize("key", [OTHER_PAN, "4000-0566-5566-5556", f"pay-{OTHER_PAN}",
                                 "4000 0566 5566 5556", OTHER_PAN + "k" * 60])
def test_a_card_number_in_the_idempotency_key_is_refused_without_echo(key: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_idempotency_key(key)
    assert (info.value.code, info.value.field) == ("card_number_in_text", "Idempotency-Key")
    for form in masked_forms(key):
        assert form not in info.value.message


@pytest.mark.parametrize("key", ["4000056655665557", "pay-4000-0566-5566-5557",
                                 "20260515-000123456789012345"])
def test_idempotency_keys_without_a_card_number_stay_accepted(key: str) -> None:
    assert parse_idempotency_key(key) == key


@given(st.text(st.sampled_from("0123456789 -x"), max_size=40))
def test_the_card_number_check_matches_a_brute_force_reading(text: str) -> None:
    refused = False
    try:
        parse_payment_request(with_("reference", text), TODAY)
    except InvalidRequest as exc:
        assert (exc.code, exc.field) == ("card_number_in_text", "reference")
        refused = True
    assert refused == holds_card_number(text)


async def test_over_http_a_card_number_in_free_text_stores_and_logs_nothing(
        netns: str, tmp_path: Path) -> None:
    """The real daemon: refused with 400, no database row, no log line with the digits,
    nothing sent to the gateway; the same body without the card number is taken."""
    digit_forms = [OTHER_PAN, "4000 0566 5566 5556", "4000-0566-5566-5556"]
    async with store_box(netns, tmp_path) as box:
        cases: list[tuple[dict[str, Any], str, str]] = [
            (payment_body(reference="4000 0566 5566 5556"), "k-ref", "reference"),
            ({**payment_body(), "terminal_id": f"pos {OTHER_PAN}"}, "k-term", "terminal_id"),
            (payment_body(), "4000-0566-5566-5556", "Idempotency-Key"),
        ]
        for body, key, field in cases:
            answer = await box.pay(body, key=key)
            assert answer.status == 400, answer.body
            assert answer.body["error"]["code"] == "card_number_in_text"
            assert answer.body["error"]["field"] == field
            for form in digit_forms:
                assert form not in json.dumps(answer.body)
        assert stored_rows(tmp_path) == 0
        assert box.sim.stats().requests == 0
        # The control: a Luhn-invalid 16-digit order number goes through and is stored.
        taken = await box.pay(payment_body(reference="order-4000056655665557"), key="k-ok")
        assert taken.status == 200, taken.body
        assert stored_rows(tmp_path) == 1
        log = box.daemon.log()
    for form in digit_forms:
        assert form not in log


def stored_rows(tmp: Path) -> int:
    db = sqlite3.connect(f"file:{tmp / 'state' / DB_NAME}?mode=ro", uri=True)
    try:
        count: int = db.execute("SELECT count(*) FROM payments").fetchone()[0]
    finally:
        db.close()
    return count

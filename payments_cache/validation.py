"""Validate a `POST /v1/payments` body and its Idempotency-Key (docs/openapi.json).

`parse_payment_request` turns raw bytes into a `PaymentRequest` or raises
`InvalidRequest(code, field, message)`, which the API answers with
400 `{"error": {"code", "message", "field"}}`. The first problem found is reported;
fields are checked in the order amount, currency, card (pan, exp_month, exp_year,
expiry, cvc), terminal_id, reference, after the body-level checks.

Error codes (stable; the POS may switch on them), with the `field` they carry:

- `body_too_large` (null): the body is over `MAX_BODY_BYTES` (16 KiB).
- `invalid_json` (null): not UTF-8, not JSON, a duplicate key, NaN/Infinity, nested
  too deeply, an integer beyond the interpreter's digit limit, or not an object.
- `unknown_field` (its path, e.g. `card.pin`): a key the contract does not define.
- `missing_field` (its path, e.g. `card.pan`): a required key is absent or null.
- `invalid_field` (its path): `card` not an object; `card.exp_month` not an integer
  1..12; `card.exp_year` not a 4-digit integer, or more than `MAX_EXPIRY_YEARS_AHEAD`
  (20) years after today's year (no card is issued for that long: 9999 is a typo or
  a probe, and must not be approved offline); `card.cvc` not 3-4 digits in a
  string; `terminal_id` / `reference` not a string of at most 64 printable
  characters.
- `invalid_amount` (`amount`): not an integer (bool, float, string, ...), <= 0 or
  >= `MAX_AMOUNT` (10**12).
- `invalid_currency` (`currency`): not an active ISO 4217 code with a minor unit,
  exactly as ISO writes it (uppercase).
- `invalid_pan` (`card.pan`): not a string of 12-19 ASCII digits, or fails Luhn.
- `card_expired` (`card.exp_year` when the year is past, else `card.exp_month`): the
  expiry month is over.
- `card_number_in_text` (`terminal_id`, `reference` or `Idempotency-Key`): the
  free-text value holds what looks like a card number (docs/openapi.json, see below).
  Checked right after the value's type, before its length and characters, so a
  value that is wrong in several ways is reported as this.

`parse_idempotency_key` uses `missing_field` (absent), `card_number_in_text` and
`invalid_field` (empty, too long, bad character) with field `Idempotency-Key`.

Free text is not a place for cards: a `terminal_id`, `reference` or Idempotency-Key
holding a Luhn-valid run of 12-19 digits is refused, nothing is stored, and the
message does not show the value at all (not even masked). A run is a maximal
sequence of digits, also grouped by single spaces or dashes ("4111 1111 1111 1111",
"4111-1111-1111-1111"); within a grouped run every sequence of whole groups of
12-19 digits is checked, so "qty 2 4111 1111 1111 1111" is caught too. The
trade-off: any 12-19 digit number passes Luhn with a chance of 1 in 10, so one in
ten order numbers of that length is refused, while a Luhn-invalid one (e.g.
"order-1234567812345678") is accepted; a POS whose references are long numbers
should keep every run (counting across single spaces and dashes) to 11 digits or
fewer, e.g. with a letter inside. A run of 20 or more ungrouped digits is not a card
number by its length and is accepted (a PAN glued to other digits without a
separator is not caught).

Messages name the field and show the offending value with `repr`, shortened to
`_SHOW_MAX` characters and with any run of 12 or more digits (also when grouped by
spaces or dashes) masked, so that a PAN pasted into the wrong field never reaches a
log. The values of `card.pan` and `card.cvc` are never shown at all, nor is a value
refused as `card_number_in_text`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import date
from typing import Any, Final, NoReturn

from payments_cache.cards import expired, is_digits, luhn_valid
from payments_cache.currency import MINOR_UNITS
from payments_cache.errors import InvalidRequest
from payments_cache.models import Card, PaymentRequest
from payments_cache.wallclock import WALL_FLOOR

MAX_BODY_BYTES: Final = 16 * 1024
MAX_AMOUNT: Final = 10**12           # exclusive; 10**12 - 1 minor units is the largest
PAN_LENGTHS: Final = range(12, 20)   # ISO/IEC 7812: 12..19 digits
CVC_LENGTHS: Final = range(3, 5)
MAX_TEXT_LEN: Final = 64             # terminal_id, reference
MAX_IDEMPOTENCY_KEY_LEN: Final = 64

TOP_FIELDS: Final = frozenset({"amount", "currency", "card", "terminal_id", "reference"})
CARD_FIELDS: Final = frozenset({"pan", "exp_month", "exp_year", "cvc"})

MAX_EXPIRY_YEARS_AHEAD: Final = 20  # card.exp_year at most this many years after today's

_SHOW_MAX: Final = 40
# 12+ digits, optionally grouped by single spaces or dashes ("4111 1111 1111 1111").
_LONG_DIGITS = re.compile(r"\d(?:[ -]?\d){11,}")
_GROUP_SEPARATOR = re.compile(r"[ -]")


def _redact(text: str) -> str:
    """Client-chosen text fit for an error: runs of 12+ digits (a PAN?) masked, capped."""
    text = _LONG_DIGITS.sub(lambda m: "#" * len(m.group()), text)
    return text if len(text) <= _SHOW_MAX else text[:_SHOW_MAX - 3] + "..."


def _holds_card_number(text: str) -> bool:
    """True when `text` holds a Luhn-valid run of 12-19 digits (see the module docstring).

    Every sequence of whole groups of a grouped run is tried, so a number glued to a
    card number by a space ("2 4111 1111 1111 1111") does not hide it. Digits of other
    scripts (fullwidth digits, U+FF10..U+FF19) count as their ASCII values.
    """
    longest = PAN_LENGTHS[-1]
    for run in _LONG_DIGITS.finditer(text):
        groups = ["".join(str(unicodedata.decimal(ch)) for ch in group)
                  for group in _GROUP_SEPARATOR.split(run.group())]
        for start in range(len(groups)):
            digits = ""
            for group in groups[start:]:
                digits += group
                if len(digits) > longest:
                    break
                if len(digits) in PAN_LENGTHS and luhn_valid(digits):
                    return True
    return False


def _refuse_card_number(value: str, field: str) -> None:
    """`card_number_in_text` when the free-text `value` holds a card number; the message
    never shows the value, not even masked."""
    if _holds_card_number(value):
        _fail("card_number_in_text", field,
              f"{field} contains what looks like a card number (a Luhn-valid run of "
              f"{PAN_LENGTHS.start}-{PAN_LENGTHS.stop - 1} digits); card data must not be "
              f"sent in free-text fields, so the value is not shown and nothing was stored")


def _show(value: object) -> str:
    """`repr(value)` fit for a message (see `_redact`)."""
    return _redact(repr(value))


def _type_name(value: object) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _fail(code: str, field: str | None, message: str) -> NoReturn:
    raise InvalidRequest(code, field, message)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {_show(key)}")
        obj[key] = value
    return obj


def _load_object(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY_BYTES:
        _fail("body_too_large", None,
              f"body is {len(body)} bytes; at most {MAX_BODY_BYTES} are accepted")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        _fail("invalid_json", None, f"body is not UTF-8 (bad byte at offset {e.start})")
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys,
                          parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        # e.msg never quotes the document, so no card data leaks through it.
        _fail("invalid_json", None, f"body is not valid JSON: {e.msg} at offset {e.pos}")
    except RecursionError:
        _fail("invalid_json", None, "body is nested too deeply")
    except ValueError as e:
        # duplicate keys, NaN/Infinity, integers beyond the interpreter's digit limit
        _fail("invalid_json", None, f"body is not acceptable JSON: {str(e)[:80]}")
    if not isinstance(data, dict):
        _fail("invalid_json", None,
              f"body must be a JSON object, not {_type_name(data)}")
    return data


def _check_known(obj: dict[str, Any], allowed: frozenset[str], prefix: str) -> None:
    for key in obj:
        if key not in allowed:
            path = prefix + _redact(key)
            _fail("unknown_field", path,
                  f"unknown field {path!r}; allowed: "
                  f"{', '.join(prefix + k for k in sorted(allowed))}")


def _required(obj: dict[str, Any], key: str, prefix: str = "") -> Any:
    value = obj.get(key)
    if value is None:
        _fail("missing_field", prefix + key, f"{prefix}{key} is required")
    return value


def _amount(value: Any) -> int:
    if type(value) is not int:  # excludes bool, float (12.0 too) and strings
        _fail("invalid_amount", "amount",
              f"amount must be an integer number of minor units, got "
              f"{_type_name(value)} {_show(value)}")
    if value <= 0:
        _fail("invalid_amount", "amount", f"amount must be positive, got {_show(value)}")
    if value >= MAX_AMOUNT:
        # The bound is spelled as a digit count: a 12-digit literal could be a PAN.
        _fail("invalid_amount", "amount",
              f"amount must be at most {len(str(MAX_AMOUNT - 1))} digits, got {_show(value)}")
    return value


def _currency(value: Any) -> str:
    if not isinstance(value, str):
        _fail("invalid_currency", "currency",
              f"currency must be an ISO 4217 code string, got {_type_name(value)} "
              f"{_show(value)}")
    if value not in MINOR_UNITS:
        hint = (f"; ISO 4217 codes are uppercase ({value.upper()!r})"
                if value.upper() in MINOR_UNITS else "")
        _fail("invalid_currency", "currency",
              f"currency {_show(value)} is not an active ISO 4217 currency code{hint}")
    return value


def _pan(value: Any) -> str:
    # Never show the value: it is (or is meant to be) a card number.
    if not isinstance(value, str):
        _fail("invalid_pan", "card.pan",
              f"card.pan must be a string of digits, got {_type_name(value)}")
    if not is_digits(value) or len(value) not in PAN_LENGTHS:
        _fail("invalid_pan", "card.pan",
              f"card.pan must be {PAN_LENGTHS.start}-{PAN_LENGTHS.stop - 1} digits "
              f"with no spaces (got {len(value)} characters)")
    if not luhn_valid(value):
        _fail("invalid_pan", "card.pan", "card.pan fails the Luhn check")
    return value


def _int_in(value: Any, field: str, low: int, high: int, what: str) -> int:
    if type(value) is not int or not low <= value <= high:
        _fail("invalid_field", field,
              f"{field} must be {what} ({low}..{high}), got {_type_name(value)} "
              f"{_show(value)}")
    return value


def _cvc(value: Any) -> str | None:
    # Never show the value.
    if value is None:
        return None
    if not isinstance(value, str) or not is_digits(value) or len(value) not in CVC_LENGTHS:
        _fail("invalid_field", "card.cvc",
              f"card.cvc must be a string of {CVC_LENGTHS.start}-{CVC_LENGTHS.stop - 1} "
              f"digits, got {_type_name(value)}")
    return value


def _text(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        _fail("invalid_field", field,
              f"{field} must be a string, got {_type_name(value)} {_show(value)}")
    _refuse_card_number(value, field)
    if len(value) > MAX_TEXT_LEN:
        _fail("invalid_field", field,
              f"{field} must be at most {MAX_TEXT_LEN} characters, got {len(value)}")
    if not value.isprintable():
        _fail("invalid_field", field,
              f"{field} must be printable characters only, got {_show(value)}")
    return value


def _card(value: Any, today: date) -> Card:
    if not isinstance(value, dict):
        _fail("invalid_field", "card",
              f"card must be an object, got {_type_name(value)}")
    _check_known(value, CARD_FIELDS, "card.")
    pan = _pan(_required(value, "pan", "card."))
    exp_month = _int_in(_required(value, "exp_month", "card."), "card.exp_month", 1, 12,
                        "an integer month")
    exp_year = _int_in(_required(value, "exp_year", "card."), "card.exp_year", 1000, 9999,
                       "a 4-digit integer year")
    # with the clock unset (a Pi without RTC boots in 1970) "years ahead" means nothing:
    # every real card would be refused; the offline rules decline `clock_unset` instead
    if exp_year > today.year + MAX_EXPIRY_YEARS_AHEAD and today >= WALL_FLOOR.date():
        _fail("invalid_field", "card.exp_year",
              f"card.exp_year must be at most {MAX_EXPIRY_YEARS_AHEAD} years ahead "
              f"(at most {today.year + MAX_EXPIRY_YEARS_AHEAD}), got {exp_year!r}")
    if expired(exp_month, exp_year, today):
        field = "card.exp_year" if exp_year < today.year else "card.exp_month"
        _fail("card_expired", field,
              f"card expired at the end of {exp_month:02d}/{exp_year} "
              f"(card.exp_month={exp_month!r}, card.exp_year={exp_year!r}; "
              f"today is {today.isoformat()})")
    cvc = _cvc(value.get("cvc"))
    return Card(pan=pan, exp_month=exp_month, exp_year=exp_year, cvc=cvc)


def parse_payment_request(body: bytes, today: date) -> PaymentRequest:
    """Validate a `POST /v1/payments` body; `today` decides card expiry.

    Raises `InvalidRequest` with one of the codes in the module docstring. JSON null
    for an optional field (cvc, terminal_id, reference) means absent.
    """
    obj = _load_object(body)
    _check_known(obj, TOP_FIELDS, "")
    amount = _amount(_required(obj, "amount"))
    currency = _currency(_required(obj, "currency"))
    card = _card(_required(obj, "card"), today)
    terminal_id = _text(obj.get("terminal_id"), "terminal_id")
    reference = _text(obj.get("reference"), "reference")
    return PaymentRequest(amount=amount, currency=currency, card=card,
                          terminal_id=terminal_id, reference=reference)


def request_to_body(request: PaymentRequest) -> dict[str, Any]:
    """The canonical JSON object of a request: `parse_payment_request` of its
    `json.dumps` gives back an equal `PaymentRequest` (absent optionals are omitted).
    Contains the PAN and CVC: for comparison and forwarding, never for logs."""
    body: dict[str, Any] = {"amount": request.amount, "currency": request.currency,
                            "card": request.card.to_dict(include_cvc=True)}
    if request.terminal_id is not None:
        body["terminal_id"] = request.terminal_id
    if request.reference is not None:
        body["reference"] = request.reference
    return body


def parse_idempotency_key(value: str | None) -> str:
    """Validate the `Idempotency-Key` header: 1-64 printable ASCII characters, no spaces,
    and no card number (a Luhn-valid run of 12-19 digits, also grouped).

    Raises `InvalidRequest` `missing_field` (header absent), `card_number_in_text` or
    `invalid_field` (empty, too long, or a bad character), field `Idempotency-Key`.
    """
    field = "Idempotency-Key"
    if value is None:
        _fail("missing_field", field, "the Idempotency-Key header is required")
    _refuse_card_number(value, field)
    if not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY_LEN:
        _fail("invalid_field", field,
              f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LEN} characters, "
              f"got {len(value)}")
    if not all("!" <= ch <= "~" for ch in value):
        _fail("invalid_field", field,
              f"Idempotency-Key must be printable ASCII without spaces, got {_show(value)}")
    return value

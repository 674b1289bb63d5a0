"""The gateway's wire format (docs/gateway-protocol.md): authorization bodies validated into
`Authorization`, sealed cards opened and checked against their hint, error answers.
Messages never echo the PAN."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from payments_cache import cards
from payments_cache.errors import SealedCardError
from payments_cache.sealing import SealedCard, SealOpener

PAN_RE = re.compile(r"[0-9]{12,19}")
_PAYMENT_ID_RE = re.compile(r"[\x21-\x7e]{1,128}")
_CURRENCY_RE = re.compile(r"[A-Z]{3}")
_CVC_RE = re.compile(r"[0-9]{3,4}")
_LAST4_RE = re.compile(r"[0-9]{4}")


class BadRequest(Exception):
    def __init__(self, code: str, field_name: str | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.field_name = field_name
        self.message = message


class CardRefused(Exception):
    """A well-formed body whose card cannot be used (422): a sealed card that does not
    open or is no card, or a ``card_hint`` that is not the card's. `code` is the error
    code, `field_name` the body field it is about."""

    def __init__(self, code: str, message: str, field_name: str = "card_sealed") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field_name = field_name


@dataclass(frozen=True)
class CardData:
    pan: str = field(repr=False)
    exp_month: int
    exp_year: int


@dataclass(frozen=True)
class CardHint:
    brand: str
    last4: str


@dataclass(frozen=True)
class Authorization:
    """A validated body. `card` is None while a `sealed` card is still to be opened."""

    payment_id: str
    amount: int
    currency: str
    card: CardData | None
    offline: bool
    merchant_id: str
    captured_at: datetime
    sealed: SealedCard | None = None
    hint: CardHint | None = None

    @property
    def opened(self) -> CardData:
        if self.card is None:
            raise RuntimeError("the sealed card was not opened")
        return self.card


def _require_int(obj: Mapping[str, Any], name: str, path: str) -> int:
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest("invalid_field", path, "must be an integer")
    return value


def _require_str(obj: Mapping[str, Any], name: str, path: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest("invalid_field", path, "must be a non-empty string")
    return value


def parse_authorization(body: object) -> Authorization:
    """Validate a `POST /v1/authorizations` body; the messages never echo the PAN."""
    if not isinstance(body, dict):
        raise BadRequest("invalid_body", None, "the body must be a JSON object")
    payment_id = _require_str(body, "payment_id", "payment_id")
    if not _PAYMENT_ID_RE.fullmatch(payment_id):
        raise BadRequest("invalid_field", "payment_id", "must be 1-128 printable ASCII chars")
    amount = _require_int(body, "amount", "amount")
    if amount <= 0:
        raise BadRequest("invalid_field", "amount", "must be a positive integer")
    currency = _require_str(body, "currency", "currency")
    if not _CURRENCY_RE.fullmatch(currency):
        raise BadRequest("invalid_field", "currency", "must be an ISO 4217 code like KRW")
    offline = body.get("offline")
    if not isinstance(offline, bool):
        raise BadRequest("invalid_field", "offline", "must be a boolean")
    card: CardData | None = None
    sealed: SealedCard | None = None
    if body.get("card_sealed") is not None:
        sealed = _parse_sealed(body, offline)
    else:
        card = _parse_card(body.get("card"), "card")
        _check_cvc(body["card"], offline)
    hint = _parse_hint(body.get("card_hint"))
    merchant_id = _require_str(body, "merchant_id", "merchant_id")
    for name in ("terminal_id", "reference"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise BadRequest("invalid_field", name, "must be a string or null")
    captured_raw = _require_str(body, "captured_at", "captured_at")
    try:
        captured_at = datetime.fromisoformat(captured_raw)
    except ValueError:
        raise BadRequest("invalid_field", "captured_at", "must be an ISO-8601 time") from None
    return Authorization(payment_id, amount, currency, card, offline, merchant_id,
                          captured_at, sealed, hint)


def _parse_card(card: object, path: str) -> CardData:
    """PAN and expiry of a card object (sent in the clear or opened from a seal)."""
    if not isinstance(card, dict):
        raise BadRequest("invalid_field", path, "must be an object")
    pan = card.get("pan")
    if not isinstance(pan, str) or not PAN_RE.fullmatch(pan):
        raise BadRequest("invalid_field", f"{path}.pan", "must be 12-19 digits")
    exp_month = _require_int(card, "exp_month", f"{path}.exp_month")
    if not 1 <= exp_month <= 12:
        raise BadRequest("invalid_field", f"{path}.exp_month", "must be 1..12")
    exp_year = _require_int(card, "exp_year", f"{path}.exp_year")
    if not 2000 <= exp_year <= 2199:
        raise BadRequest("invalid_field", f"{path}.exp_year", "must be a four-digit year")
    return CardData(pan, exp_month, exp_year)


def _check_cvc(card: Mapping[str, Any], offline: bool) -> None:
    cvc = card.get("cvc")
    if cvc is not None:
        if offline:
            raise BadRequest("invalid_field", "card.cvc", "must not be sent for offline")
        if not isinstance(cvc, str) or not _CVC_RE.fullmatch(cvc):
            raise BadRequest("invalid_field", "card.cvc", "must be 3-4 digits")


def _parse_sealed(body: Mapping[str, Any], offline: bool) -> SealedCard:
    """The wire form of a sealed card; opening it comes later (its failures are 422)."""
    if body.get("card") is not None:
        raise BadRequest("invalid_field", "card_sealed",
                          "send exactly one of card and card_sealed")
    if not offline:
        raise BadRequest("invalid_field", "card_sealed", "only offline authorizations may "
                          "carry a sealed card; online ones send card with the CVC")
    try:
        return SealedCard.from_json(body["card_sealed"])
    except SealedCardError as exc:
        raise BadRequest("invalid_field", "card_sealed", exc.detail or exc.reason) from None


def _parse_hint(hint: object) -> CardHint | None:
    if hint is None:
        return None
    if not isinstance(hint, dict) or set(hint) != {"brand", "last4"}:
        raise BadRequest("invalid_field", "card_hint", "must be {brand, last4}")
    brand, last4 = hint["brand"], hint["last4"]
    if not isinstance(brand, str) or not brand:
        raise BadRequest("invalid_field", "card_hint.brand", "must be a non-empty string")
    if not isinstance(last4, str) or not _LAST4_RE.fullmatch(last4):
        raise BadRequest("invalid_field", "card_hint.last4", "must be 4 digits")
    return CardHint(brand, last4)


def _unseal(opener: SealOpener, payment_id: str, sealed: SealedCard) -> CardData:
    """Open a sealed card (aad = `payment_id`) and validate it like a plain one.

    Raises `CardRefused` with the opener's reason as the code; never quotes the card.
    """
    try:
        opened = opener.open(payment_id, sealed)
    except SealedCardError as exc:
        raise CardRefused(exc.reason, exc.detail or exc.reason) from None
    try:
        return _parse_card(opened, "card")
    except BadRequest as exc:
        raise CardRefused("bad_plaintext", f"the opened {exc.field_name}: "
                           f"{exc.message}") from None


def open_card(opener: SealOpener, auth: Authorization) -> Authorization:
    """`auth` with its card opened (when sealed) and checked against the hint."""
    card = auth.opened if auth.sealed is None else _unseal(opener, auth.payment_id, auth.sealed)
    hint = auth.hint
    if hint is not None and (hint.last4 != card.pan[-4:] or hint.brand != cards.brand(card.pan)):
        raise CardRefused("card_hint_mismatch", "card_hint is not the card's brand and last4",
                           "card_hint")
    return dataclasses.replace(auth, card=card)


def fingerprint(body: object) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def error(status: int, code: str, message: str, field_name: str | None = None,
          headers: Mapping[str, str] | None = None) -> web.Response:
    err: dict[str, Any] = {"code": code, "message": message}
    if field_name is not None:
        err["field"] = field_name
    return web.json_response({"error": err}, status=status, headers=headers)


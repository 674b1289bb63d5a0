"""A simulator of the upstream card gateway (CONTRACTS §5), with fault injection.

Used by the tests, the benchmarks and `make run`. Everything lives in memory; it is
plain asyncio + aiohttp and never logs a card number.

Gateway endpoints (every one needs ``Authorization: Bearer <merchant key>`` except
``/health``):

- ``POST /v1/authorizations`` — header ``Idempotency-Key`` required and equal to the
  body's ``payment_id``. 200 ``{"payment_id", "status", "auth_code", "decline_code"}``.
  The same key with the same body replays the stored result; with a different body
  it is refused with 422; while the first request under the key is still being
  processed a repeat gets 409 (with ``Retry-After: 1``). Bad input: 400; wrong or
  missing key: 401. "The same body" means equal JSON (key order does not matter).
  An offline authorization may carry ``card_sealed`` (CONTRACTS §5a) instead of ``card``,
  with an optional ``card_hint`` ``{"brand", "last4"}``; see "Sealed cards" below.
- ``GET /v1/authorizations/{payment_id}`` — the stored result (200), 409 while the
  first request is still being processed, 404 when it was never received.
- ``GET /health`` — 200 ``{"status": "ok"}``.

Decision rule (deterministic; see `DeclineRules`), checked in this order:

1. the PAN fails the Luhn check → declined ``invalid_card`` (``check_luhn``);
2. the card expired before the end of its expiry month, judged against
   ``captured_at`` → declined ``expired_card`` (``check_expiry``);
3. the PAN is in ``decline_pans`` → declined ``card_declined``;
4. the amount is in ``decline_amounts`` → declined ``insufficient_funds``;
5. otherwise approved with a random 6-character auth code (``[A-Z0-9]``).

Sealed cards (CONTRACTS §5a). The simulator holds the gateway's X25519 private keys
(``seal_private_keys``/``seal_opener``, ``--seal-private-key``) and opens ``card_sealed``
with the payment id as aad, then applies the decision rule to the opened card. Exactly
one of ``card``/``card_sealed`` (else 400); ``card_sealed`` on an online request, or not of
the form ``{"kid", "enc", "ct"}`` (base64url, no padding): 400. A well-formed one that
cannot be used: 422 with code ``unknown_kid`` (no private key with that kid),
``authentication_failed`` (another payment id or key, altered bytes), ``bad_plaintext``
(it opened but is not a valid card) or ``card_hint_mismatch`` (the hint's last4/brand
are not the opened card's). These are checked before the idempotency check, so they
store nothing; `SimStats.card_refused_422` counts them. The fingerprint is the body's
JSON: the same sealed bytes replay, while a fresh seal of the same card under the same
key is a different body (422 conflict), so the box must resend the bytes it stored.

Fault injection (`Faults`, settable at construction, through `set_faults` and through
``POST /_sim/faults``). All randomness comes from one `random.Random(seed)`. The gateway
endpoints see, in this order:

- ``down``: every request answered 503 (``down_mode="503"``) or the listening socket
  closed so that connections are refused (``down_mode="refuse"``; requests still
  arriving on kept-alive connections are reset);
- one draw: with probability ``fail_429`` → 429 with ``Retry-After: retry_after_s``
  (seconds, or an HTTP-date with ``retry_after_http_date``); else with probability
  ``fail_5xx`` → ``fail_5xx_status`` (default 503). Nothing is processed;
- then authentication and validation (401/400);
- latency ``latency_s + uniform(0, jitter_s)``: the time a request spends being
  processed. For a new authorization the key is *in progress* (a repeat gets 409)
  for that whole time, and the result is stored at its end;
- with probability ``drop_answers`` (authorizations answered 200 only, new or replayed):
  the result is stored and then the connection is reset with no answer — the "lost
  answer" case.

Admin endpoints (never faulted, no authentication: bind the simulator to loopback):
``GET /_sim/stats``, ``GET|POST|DELETE /_sim/faults`` (POST merges the given fields,
DELETE clears every fault), ``GET|POST /_sim/rules``, ``GET /_sim/authorizations``
(stored records, no PAN), ``POST /_sim/reset`` (forget every authorization and counter).
With ``admin_port``/``--admin-listen`` they get a listener of their own, which keeps
working while the gateway listener refuses connections.

Exactly-once accounting: one stored result per key by construction (the check and the
in-progress mark happen without an ``await`` in between). `stats` counts, per payment and
in total, the authorizations *processed* (a new result stored) and *replayed*, the 422
conflicts, the 409s, the dropped answers and the injected 5xx/429s.

Standalone::

    python -m lab.gateway_sim --listen 127.0.0.1:8443 --merchant-key-file F \\
        [--admin-listen HOST:PORT] [--seed N] [--latency S] [--jitter S] [--fail-5xx F] \\
        [--fail-5xx-status N] [--fail-429 F] [--retry-after S] [--retry-after-http-date] \\
        [--drop-answers F] [--down 503|refuse] [--decline-amount N ...] \\
        [--decline-pan PAN ...] [--no-luhn] [--no-expiry-check] [--seal-private-key PATH ...]
        [--log-level LEVEL]

It prints ``gateway_sim listening on http://HOST:PORT`` (plus `` admin http://…`` with a
separate admin listener) once it accepts connections, and exits 0 on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import random
import re
import signal
import socket
import string
import struct
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from aiohttp import web

from payments_cache import cards
from payments_cache.errors import SealedCardError, SealKeyError
from payments_cache.models import GatewayResult
from payments_cache.sealing import SealedCard, SealOpener

__all__ = [
    "DeclineRules",
    "Faults",
    "GatewaySimulator",
    "PaymentCounters",
    "SimStats",
    "StoredAuthorization",
    "main",
]

_log = logging.getLogger(__name__)

_AUTH_CODE_ALPHABET = string.ascii_uppercase + string.digits
_PAYMENT_ID_RE = re.compile(r"[\x21-\x7e]{1,128}")
_CURRENCY_RE = re.compile(r"[A-Z]{3}")
_PAN_RE = re.compile(r"[0-9]{12,19}")
_CVC_RE = re.compile(r"[0-9]{3,4}")
_LAST4_RE = re.compile(r"[0-9]{4}")
_DownMode = Literal["503", "refuse"]


# --------------------------------------------------------------------------- knobs


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class Faults:
    """What the simulator does wrong. The default injects nothing."""

    latency_s: float = 0.0
    jitter_s: float = 0.0
    fail_5xx: float = 0.0
    fail_5xx_status: int = 503
    fail_429: float = 0.0
    retry_after_s: int = 1
    retry_after_http_date: bool = False
    drop_answers: float = 0.0
    down: bool = False
    down_mode: _DownMode = "503"

    def __post_init__(self) -> None:
        for name in ("latency_s", "jitter_s", "fail_5xx", "fail_429", "drop_answers"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                raise ValueError(f"{name} must be a number >= 0")
        for name in ("fail_5xx", "fail_429", "drop_answers"):
            if getattr(self, name) > 1:
                raise ValueError(f"{name} is a fraction and must be <= 1")
        if self.fail_5xx + self.fail_429 > 1:
            raise ValueError("fail_5xx + fail_429 must be <= 1")
        if (not isinstance(self.fail_5xx_status, int) or isinstance(self.fail_5xx_status, bool)
                or not 500 <= self.fail_5xx_status <= 599):
            raise ValueError("fail_5xx_status must be an integer 500..599")
        if (not isinstance(self.retry_after_s, int) or isinstance(self.retry_after_s, bool)
                or self.retry_after_s < 0):
            raise ValueError("retry_after_s must be an integer >= 0")
        for name in ("retry_after_http_date", "down"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a boolean")
        if self.down_mode not in ("503", "refuse"):
            raise ValueError('down_mode must be "503" or "refuse"')

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def merged(self, changes: Mapping[str, Any]) -> Faults:
        """A copy with `changes` applied; unknown names or bad values raise ValueError."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(unknown)}")
        values = dict(changes)
        # JSON has no int/float distinction: accept 2.0 for an integer knob.
        for name in ("fail_5xx_status", "retry_after_s"):
            value = values.get(name)
            if isinstance(value, float) and value.is_integer():
                values[name] = int(value)
        return dataclasses.replace(self, **values)


@dataclass(frozen=True)
class DeclineRules:
    """The deterministic decision rule (see the module docstring)."""

    decline_amounts: frozenset[int] = frozenset()
    decline_pans: frozenset[str] = field(default=frozenset(), repr=False)
    check_luhn: bool = True
    check_expiry: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "decline_amounts", frozenset(self.decline_amounts))
        object.__setattr__(self, "decline_pans", frozenset(self.decline_pans))
        for amount in self.decline_amounts:
            if not isinstance(amount, int) or isinstance(amount, bool):
                raise ValueError("decline_amounts must be integers")
        for pan in self.decline_pans:
            if not isinstance(pan, str) or not _PAN_RE.fullmatch(pan):
                raise ValueError("decline_pans must be strings of 12-19 digits")
        for name in ("check_luhn", "check_expiry"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a boolean")

    def to_json(self) -> dict[str, Any]:
        return {
            "decline_amounts": sorted(self.decline_amounts),
            "decline_pans": sorted(_mask(p) for p in self.decline_pans),
            "check_luhn": self.check_luhn,
            "check_expiry": self.check_expiry,
        }

    def merged(self, changes: Mapping[str, Any]) -> DeclineRules:
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown rule(s): {', '.join(unknown)}")
        values = dict(changes)
        for name in ("decline_amounts", "decline_pans"):
            if name in values:
                if not isinstance(values[name], list | tuple | set | frozenset):
                    raise ValueError(f"{name} must be a list")
                values[name] = frozenset(values[name])
        return dataclasses.replace(self, **values)

    def decide(self, pan: str, exp_month: int, exp_year: int, amount: int,
               captured_at: datetime) -> str | None:
        """The decline code, or None to approve."""
        if self.check_luhn and not _luhn_ok(pan):
            return "invalid_card"
        if self.check_expiry:
            captured = captured_at if captured_at.tzinfo else captured_at.replace(tzinfo=UTC)
            if (exp_year, exp_month) < (captured.year, captured.month):
                return "expired_card"
        if pan in self.decline_pans:
            return "card_declined"
        if amount in self.decline_amounts:
            return "insufficient_funds"
        return None


def _luhn_ok(pan: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(pan)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _mask(pan: str) -> str:
    return f"{pan[:6]}{'*' * max(len(pan) - 10, 0)}{pan[-4:]}"


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class StoredAuthorization:
    """One processed authorization. No PAN: only its last four digits."""

    payment_id: str
    result: GatewayResult
    amount: int
    currency: str
    last4: str
    offline: bool
    merchant_id: str
    processed_at: datetime
    fingerprint: str = field(repr=False)
    seal_kid: str | None = None  # the kid of the card_sealed it came with, if any

    def result_json(self) -> dict[str, Any]:
        return {"payment_id": self.payment_id, "status": self.result.status,
                "auth_code": self.result.auth_code, "decline_code": self.result.decline_code}

    def to_json(self) -> dict[str, Any]:
        return {**self.result_json(), "amount": self.amount, "currency": self.currency,
                "last4": self.last4, "offline": self.offline, "merchant_id": self.merchant_id,
                "processed_at": self.processed_at.isoformat(timespec="milliseconds"),
                "seal_kid": self.seal_kid}


@dataclass
class PaymentCounters:
    """What happened to one payment id."""

    processed: int = 0
    replays: int = 0
    conflicts_422: int = 0
    in_progress_409: int = 0
    dropped_answers: int = 0
    lookups: int = 0

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SimStats:
    """A snapshot of the simulator's accounting (also ``GET /_sim/stats``)."""

    processed: int = 0
    replays: int = 0
    conflicts_422: int = 0
    card_refused_422: int = 0
    in_progress_409: int = 0
    dropped_answers: int = 0
    injected_5xx: int = 0
    injected_429: int = 0
    down_503: int = 0
    refused: int = 0
    unauthorized_401: int = 0
    bad_request_400: int = 0
    lookups: int = 0
    requests: int = 0
    payments: Mapping[str, PaymentCounters] = field(default_factory=dict)

    def processed_count(self, payment_id: str) -> int:
        counters = self.payments.get(payment_id)
        return counters.processed if counters else 0

    def totals(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "payments"}

    def to_json(self) -> dict[str, Any]:
        return {"totals": self.totals(),
                "payments": {pid: c.to_json() for pid, c in sorted(self.payments.items())}}


# --------------------------------------------------------------------------- validation


class _BadRequest(Exception):
    def __init__(self, code: str, field_name: str | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.field_name = field_name
        self.message = message


class _CardRefused(Exception):
    """A well-formed body whose card cannot be used (422): a sealed card that does not
    open or is no card, or a ``card_hint`` that is not the card's. `code` is the error
    code, `field_name` the body field it is about."""

    def __init__(self, code: str, message: str, field_name: str = "card_sealed") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field_name = field_name


@dataclass(frozen=True)
class _CardData:
    pan: str = field(repr=False)
    exp_month: int
    exp_year: int


@dataclass(frozen=True)
class _CardHint:
    brand: str
    last4: str


@dataclass(frozen=True)
class _Authorization:
    """A validated body. `card` is None while a `sealed` card is still to be opened."""

    payment_id: str
    amount: int
    currency: str
    card: _CardData | None
    offline: bool
    merchant_id: str
    captured_at: datetime
    sealed: SealedCard | None = None
    hint: _CardHint | None = None

    @property
    def opened(self) -> _CardData:
        if self.card is None:
            raise RuntimeError("the sealed card was not opened")
        return self.card


def _require_int(obj: Mapping[str, Any], name: str, path: str) -> int:
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _BadRequest("invalid_field", path, "must be an integer")
    return value


def _require_str(obj: Mapping[str, Any], name: str, path: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise _BadRequest("invalid_field", path, "must be a non-empty string")
    return value


def _parse_authorization(body: object) -> _Authorization:
    """Validate a `POST /v1/authorizations` body; the messages never echo the PAN."""
    if not isinstance(body, dict):
        raise _BadRequest("invalid_body", None, "the body must be a JSON object")
    payment_id = _require_str(body, "payment_id", "payment_id")
    if not _PAYMENT_ID_RE.fullmatch(payment_id):
        raise _BadRequest("invalid_field", "payment_id", "must be 1-128 printable ASCII chars")
    amount = _require_int(body, "amount", "amount")
    if amount <= 0:
        raise _BadRequest("invalid_field", "amount", "must be a positive integer")
    currency = _require_str(body, "currency", "currency")
    if not _CURRENCY_RE.fullmatch(currency):
        raise _BadRequest("invalid_field", "currency", "must be an ISO 4217 code like KRW")
    offline = body.get("offline")
    if not isinstance(offline, bool):
        raise _BadRequest("invalid_field", "offline", "must be a boolean")
    card: _CardData | None = None
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
            raise _BadRequest("invalid_field", name, "must be a string or null")
    captured_raw = _require_str(body, "captured_at", "captured_at")
    try:
        captured_at = datetime.fromisoformat(captured_raw)
    except ValueError:
        raise _BadRequest("invalid_field", "captured_at", "must be an ISO-8601 time") from None
    return _Authorization(payment_id, amount, currency, card, offline, merchant_id,
                          captured_at, sealed, hint)


def _parse_card(card: object, path: str) -> _CardData:
    """PAN and expiry of a card object (sent in the clear or opened from a seal)."""
    if not isinstance(card, dict):
        raise _BadRequest("invalid_field", path, "must be an object")
    pan = card.get("pan")
    if not isinstance(pan, str) or not _PAN_RE.fullmatch(pan):
        raise _BadRequest("invalid_field", f"{path}.pan", "must be 12-19 digits")
    exp_month = _require_int(card, "exp_month", f"{path}.exp_month")
    if not 1 <= exp_month <= 12:
        raise _BadRequest("invalid_field", f"{path}.exp_month", "must be 1..12")
    exp_year = _require_int(card, "exp_year", f"{path}.exp_year")
    if not 2000 <= exp_year <= 2199:
        raise _BadRequest("invalid_field", f"{path}.exp_year", "must be a four-digit year")
    return _CardData(pan, exp_month, exp_year)


def _check_cvc(card: Mapping[str, Any], offline: bool) -> None:
    cvc = card.get("cvc")
    if cvc is not None:
        if offline:
            raise _BadRequest("invalid_field", "card.cvc", "must not be sent for offline")
        if not isinstance(cvc, str) or not _CVC_RE.fullmatch(cvc):
            raise _BadRequest("invalid_field", "card.cvc", "must be 3-4 digits")


def _parse_sealed(body: Mapping[str, Any], offline: bool) -> SealedCard:
    """The wire form of a sealed card; opening it comes later (its failures are 422)."""
    if body.get("card") is not None:
        raise _BadRequest("invalid_field", "card_sealed",
                          "send exactly one of card and card_sealed")
    if not offline:
        raise _BadRequest("invalid_field", "card_sealed", "only offline authorizations may "
                          "carry a sealed card; online ones send card with the CVC")
    try:
        return SealedCard.from_json(body["card_sealed"])
    except SealedCardError as exc:
        raise _BadRequest("invalid_field", "card_sealed", exc.detail or exc.reason) from None


def _parse_hint(hint: object) -> _CardHint | None:
    if hint is None:
        return None
    if not isinstance(hint, dict) or set(hint) != {"brand", "last4"}:
        raise _BadRequest("invalid_field", "card_hint", "must be {brand, last4}")
    brand, last4 = hint["brand"], hint["last4"]
    if not isinstance(brand, str) or not brand:
        raise _BadRequest("invalid_field", "card_hint.brand", "must be a non-empty string")
    if not isinstance(last4, str) or not _LAST4_RE.fullmatch(last4):
        raise _BadRequest("invalid_field", "card_hint.last4", "must be 4 digits")
    return _CardHint(brand, last4)


def _unseal(opener: SealOpener, payment_id: str, sealed: SealedCard) -> _CardData:
    """Open a sealed card (aad = `payment_id`) and validate it like a plain one.

    Raises `_CardRefused` with the opener's reason as the code; never quotes the card.
    """
    try:
        opened = opener.open(payment_id, sealed)
    except SealedCardError as exc:
        raise _CardRefused(exc.reason, exc.detail or exc.reason) from None
    try:
        return _parse_card(opened, "card")
    except _BadRequest as exc:
        raise _CardRefused("bad_plaintext", f"the opened {exc.field_name}: "
                           f"{exc.message}") from None


def _open_card(opener: SealOpener, auth: _Authorization) -> _Authorization:
    """`auth` with its card opened (when sealed) and checked against the hint."""
    card = auth.opened if auth.sealed is None else _unseal(opener, auth.payment_id, auth.sealed)
    hint = auth.hint
    if hint is not None and (hint.last4 != card.pan[-4:] or hint.brand != cards.brand(card.pan)):
        raise _CardRefused("card_hint_mismatch", "card_hint is not the card's brand and last4",
                           "card_hint")
    return dataclasses.replace(auth, card=card)


def _fingerprint(body: object) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _error(status: int, code: str, message: str, field_name: str | None = None,
           headers: Mapping[str, str] | None = None) -> web.Response:
    err: dict[str, Any] = {"code": code, "message": message}
    if field_name is not None:
        err["field"] = field_name
    return web.json_response({"error": err}, status=status, headers=headers)


class _Stopping(Exception):
    """The simulator is shutting down while a request was being processed."""


# --------------------------------------------------------------------------- simulator


class GatewaySimulator:
    """The simulated gateway. ``async with GatewaySimulator(key) as sim: sim.url`` or
    ``url = await sim.start()`` … ``await sim.stop()``. `port=0` picks a free port."""

    def __init__(self, merchant_key: str, *, host: str = "127.0.0.1", port: int = 0,
                 faults: Faults | None = None, rules: DeclineRules | None = None,
                 seed: int | None = None, admin_host: str | None = None,
                 admin_port: int | None = None, seal_private_keys: Iterable[bytes] = (),
                 seal_opener: SealOpener | None = None) -> None:
        """`seal_private_keys` (PEM PKCS8 X25519) open ``card_sealed``; they are added to
        `seal_opener` when one is given (shared: keys added to it later count too)."""
        if not merchant_key:
            raise ValueError("merchant_key must not be empty")
        self._opener = seal_opener if seal_opener is not None else SealOpener()
        for pem in seal_private_keys:
            self._opener.add_private_key(pem)
        self._merchant_key = merchant_key.encode()
        self._host = host
        self._port = port
        self._admin_host = admin_host if admin_host is not None else host
        self._admin_port = admin_port
        self._faults = faults or Faults()
        self._rules = rules or DeclineRules()
        self._rng = random.Random(seed)  # noqa: S311 - a simulator, not cryptography
        self._store: dict[str, StoredAuthorization] = {}
        self._in_progress: dict[str, str] = {}
        self._counters: dict[str, PaymentCounters] = {}
        self._totals: dict[str, int] = dict.fromkeys(SimStats().totals(), 0)
        self._changed = asyncio.Event()
        self._released = asyncio.Event()
        self._released.set()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._gateway_site: web.SockSite | None = None
        self._admin_site: web.SockSite | None = None
        self._url: str | None = None
        self._admin_url: str | None = None
        if self._faults.down and self._faults.down_mode == "refuse" and admin_port is None:
            _log.warning("starting with down_mode=refuse and no separate admin listener")

    def __repr__(self) -> str:
        return f"<GatewaySimulator url={self._url!r} faults={self._faults!r}>"

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> str:
        """Listen; return the gateway's base URL (``http://host:port``)."""
        if self._runner is not None:
            raise RuntimeError("the simulator is already running")
        self._stopping = asyncio.Event()
        app = web.Application()
        app.add_routes([
            web.post("/v1/authorizations", self._handle_authorize),
            web.get("/v1/authorizations/{payment_id}", self._handle_lookup),
            web.get("/health", self._handle_health),
            web.get("/_sim/stats", self._handle_stats),
            web.get("/_sim/faults", self._handle_get_faults),
            web.post("/_sim/faults", self._handle_post_faults),
            web.delete("/_sim/faults", self._handle_delete_faults),
            web.get("/_sim/rules", self._handle_get_rules),
            web.post("/_sim/rules", self._handle_post_rules),
            web.get("/_sim/authorizations", self._handle_list),
            web.post("/_sim/reset", self._handle_reset),
        ])
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        self._runner = runner
        try:
            gateway_sock = _listen(self._host, self._port)
            self._port = gateway_sock.getsockname()[1]
            self._url = _base_url(self._host, self._port)
            if self._admin_port is not None:
                admin_sock = _listen(self._admin_host, self._admin_port)
                self._admin_port = admin_sock.getsockname()[1]
                self._admin_url = _base_url(self._admin_host, self._admin_port)
                self._admin_site = web.SockSite(runner, admin_sock)
                await self._admin_site.start()
            else:
                self._admin_url = self._url
            if self._faults.down and self._faults.down_mode == "refuse":
                gateway_sock.close()
            else:
                self._gateway_site = web.SockSite(runner, gateway_sock)
                await self._gateway_site.start()
        except BaseException:
            await self.stop()
            raise
        _log.info("gateway simulator listening on %s", self._url)
        return self._url

    async def stop(self) -> None:
        """Stop listening; requests still being processed are abandoned unstored."""
        self._stopping.set()
        self._released.set()
        runner, self._runner = self._runner, None
        self._gateway_site = self._admin_site = None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """The gateway's base URL (the same while it is down)."""
        if self._url is None:
            raise RuntimeError("the simulator is not started")
        return self._url

    @property
    def admin_url(self) -> str:
        """Where the ``/_sim/*`` endpoints are reachable: `url` unless separate."""
        if self._admin_url is None:
            raise RuntimeError("the simulator is not started")
        return self._admin_url

    @property
    def merchant_key(self) -> str:
        return self._merchant_key.decode()

    @property
    def seal_opener(self) -> SealOpener:
        """The private keys that open ``card_sealed`` (add keys to rotate)."""
        return self._opener

    # ---------------------------------------------------------------- faults and rules

    @property
    def faults(self) -> Faults:
        return self._faults

    async def set_faults(self, faults: Faults | None = None, /, **changes: Any) -> Faults:
        """Replace the faults (`faults`) and/or change some (`changes`, by field name).
        Taking the gateway down in ``refuse`` mode closes its listener; bringing it up
        listens again on the same port. Returns the faults now in force."""
        new = (faults or self._faults).merged(changes)
        old, self._faults = self._faults, new
        refuse_before = old.down and old.down_mode == "refuse"
        refuse_now = new.down and new.down_mode == "refuse"
        if self._runner is not None and refuse_before != refuse_now:
            if refuse_now:
                await self._close_gateway_listener()
            else:
                await self._open_gateway_listener()
        _log.info("faults now %s", new)
        return new

    @property
    def rules(self) -> DeclineRules:
        return self._rules

    def set_rules(self, rules: DeclineRules | None = None, /, **changes: Any) -> DeclineRules:
        """Replace the decline rules and/or change some of them by field name."""
        self._rules = (rules or self._rules).merged(changes)
        return self._rules

    async def _close_gateway_listener(self) -> None:
        site, self._gateway_site = self._gateway_site, None
        if site is not None:
            await site.stop()
        runner = self._runner
        server = runner.server if runner is not None else None
        if server is None:
            return
        for handler in server.connections:
            transport = handler.transport
            if transport is None:
                continue
            sockname = transport.get_extra_info("sockname")
            if isinstance(sockname, tuple) and sockname[1] == self._port:
                handler.close()  # idle keep-alive: now; busy: after its answer

    async def _open_gateway_listener(self) -> None:
        if self._gateway_site is not None or self._runner is None:
            return
        site = web.SockSite(self._runner, _listen(self._host, self._port))
        await site.start()
        self._gateway_site = site

    # ---------------------------------------------------------------- accounting

    def stats(self) -> SimStats:
        """A snapshot of every counter."""
        payments = {pid: dataclasses.replace(c) for pid, c in self._counters.items()}
        return SimStats(**self._totals, payments=payments)

    def processed_count(self, payment_id: str) -> int:
        """How many times `payment_id` was processed: 0 or 1, by construction."""
        counters = self._counters.get(payment_id)
        return counters.processed if counters else 0

    def stored(self, payment_id: str) -> StoredAuthorization | None:
        return self._store.get(payment_id)

    def authorizations(self) -> list[StoredAuthorization]:
        return list(self._store.values())

    def reset(self) -> None:
        """Forget every stored authorization and counter (not the in-progress ones)."""
        self._store.clear()
        self._counters.clear()
        self._totals = dict.fromkeys(self._totals, 0)
        self._notify()

    def _count(self, name: str, payment_id: str | None = None) -> None:
        self._totals[name] += 1
        if payment_id is not None:
            counters = self._counters.setdefault(payment_id, PaymentCounters())
            setattr(counters, name, getattr(counters, name) + 1)

    # ---------------------------------------------------------------- test hooks

    def hold(self) -> None:
        """Keep every new authorization in progress (after its latency) until `release`."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    async def wait_in_progress(self, payment_id: str) -> None:
        """Return once the first request for `payment_id` has started processing."""
        await self._wait_until(lambda: payment_id in self._in_progress
                               or payment_id in self._store)

    async def wait_stored(self, payment_id: str) -> StoredAuthorization:
        """Return the stored result for `payment_id` once there is one."""
        await self._wait_until(lambda: payment_id in self._store)
        return self._store[payment_id]

    async def _wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ---------------------------------------------------------------- gateway handlers

    def _front_door(self, request: web.Request) -> web.Response | None:
        """Faults answered before anything is looked at; None to go on."""
        self._totals["requests"] += 1
        faults = self._faults
        if faults.down:
            if faults.down_mode == "refuse":
                self._totals["refused"] += 1
                return _reset_connection(request)
            self._totals["down_503"] += 1
            return _error(503, "unavailable", "the gateway is down")
        if faults.fail_429 or faults.fail_5xx:
            draw = self._rng.random()
            if draw < faults.fail_429:
                self._totals["injected_429"] += 1
                if faults.retry_after_http_date:
                    when = datetime.now(UTC) + timedelta(seconds=faults.retry_after_s)
                    retry_after = format_datetime(when, usegmt=True)
                else:
                    retry_after = str(faults.retry_after_s)
                return _error(429, "rate_limited", "too many requests",
                              headers={"Retry-After": retry_after})
            if draw < faults.fail_429 + faults.fail_5xx:
                self._totals["injected_5xx"] += 1
                return _error(faults.fail_5xx_status, "injected", "injected server error")
        return None

    def _authenticated(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        return hmac.compare_digest(token.strip().encode(), self._merchant_key)

    def _unauthorized(self) -> web.Response:
        self._totals["unauthorized_401"] += 1
        return _error(401, "unauthorized", "missing or unknown merchant key",
                      headers={"WWW-Authenticate": "Bearer"})

    async def _process_delay(self) -> None:
        faults = self._faults
        delay = faults.latency_s + (self._rng.uniform(0, faults.jitter_s)
                                    if faults.jitter_s else 0.0)
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
        if self._stopping.is_set():
            raise _Stopping

    async def _handle_health(self, request: web.Request) -> web.StreamResponse:
        if (early := self._front_door(request)) is not None:
            return early
        try:
            await self._process_delay()
        except _Stopping:
            return _reset_connection(request)
        return web.json_response({"status": "ok"})

    async def _handle_lookup(self, request: web.Request) -> web.StreamResponse:
        if (early := self._front_door(request)) is not None:
            return early
        if not self._authenticated(request):
            return self._unauthorized()
        payment_id = request.match_info["payment_id"]
        try:
            await self._process_delay()
        except _Stopping:
            return _reset_connection(request)
        known = payment_id in self._store or payment_id in self._in_progress
        self._count("lookups", payment_id if known else None)
        stored = self._store.get(payment_id)
        if stored is not None:
            return web.json_response(stored.result_json())
        if payment_id in self._in_progress:
            self._count("in_progress_409", payment_id)
            return _error(409, "in_progress", "the authorization is still being processed",
                          headers={"Retry-After": "1"})
        return _error(404, "not_found", "no authorization with this payment_id")

    async def _handle_authorize(self, request: web.Request) -> web.StreamResponse:
        if (early := self._front_door(request)) is not None:
            return early
        if not self._authenticated(request):
            return self._unauthorized()
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            self._totals["bad_request_400"] += 1
            return _error(400, "invalid_json", "the body is not JSON")
        try:
            auth = _parse_authorization(body)
            key = request.headers.get("Idempotency-Key")
            if not key:
                raise _BadRequest("missing_idempotency_key", "Idempotency-Key",
                                  "the Idempotency-Key header is required")
            if key != auth.payment_id:
                raise _BadRequest("idempotency_key_mismatch", "Idempotency-Key",
                                  "must equal the body's payment_id")
        except _BadRequest as exc:
            self._totals["bad_request_400"] += 1
            return _error(400, exc.code, exc.message, exc.field_name)
        try:
            auth = _open_card(self._opener, auth)
        except _CardRefused as exc:
            return self._card_refused(auth.payment_id, exc)

        pid = auth.payment_id
        fingerprint = _fingerprint(body)
        # From here to the in-progress mark there is no await: one result per key.
        stored = self._store.get(pid)
        if stored is not None:
            if stored.fingerprint != fingerprint:
                return self._conflict(pid)
            self._count("replays", pid)
            try:
                await self._process_delay()
            except _Stopping:
                return _reset_connection(request)
            return self._answer(request, stored)
        in_flight = self._in_progress.get(pid)
        if in_flight is not None:
            if in_flight != fingerprint:
                return self._conflict(pid)
            self._count("in_progress_409", pid)
            return _error(409, "in_progress", "a request with this Idempotency-Key is "
                          "still being processed", headers={"Retry-After": "1"})

        self._in_progress[pid] = fingerprint
        self._notify()
        try:
            await self._process_delay()
            await self._released.wait()
            if self._stopping.is_set():
                raise _Stopping
            stored = self._store_result(auth, fingerprint)
        except _Stopping:
            return _reset_connection(request)
        finally:
            del self._in_progress[pid]
            self._notify()
        return self._answer(request, stored)

    def _conflict(self, payment_id: str) -> web.Response:
        self._count("conflicts_422", payment_id)
        _log.warning("payment %s: Idempotency-Key reused with a different body", payment_id)
        return _error(422, "idempotency_conflict",
                      "this Idempotency-Key was used with a different body")

    def _card_refused(self, payment_id: str, exc: _CardRefused) -> web.Response:
        self._totals["card_refused_422"] += 1
        _log.warning("payment %s: card refused: %s", payment_id, exc.code)
        return _error(422, exc.code, exc.message, exc.field_name)

    def _store_result(self, auth: _Authorization, fingerprint: str) -> StoredAuthorization:
        card = auth.opened
        decline_code = self._rules.decide(card.pan, card.exp_month, card.exp_year,
                                          auth.amount, auth.captured_at)
        if decline_code is None:
            code = "".join(self._rng.choices(_AUTH_CODE_ALPHABET, k=6))
            result = GatewayResult(status="approved", auth_code=code)
        else:
            result = GatewayResult(status="declined", decline_code=decline_code)
        stored = StoredAuthorization(
            payment_id=auth.payment_id, result=result, amount=auth.amount,
            currency=auth.currency, last4=card.pan[-4:], offline=auth.offline,
            merchant_id=auth.merchant_id, processed_at=datetime.now(UTC),
            fingerprint=fingerprint,
            seal_kid=auth.sealed.kid if auth.sealed is not None else None)
        self._store[auth.payment_id] = stored
        self._count("processed", auth.payment_id)
        _log.info("payment %s processed: %s (%s %s, offline=%s, seal_kid=%s)", auth.payment_id,
                  result.status, auth.amount, auth.currency, auth.offline, stored.seal_kid)
        return stored

    def _answer(self, request: web.Request, stored: StoredAuthorization) -> web.Response:
        drop = self._faults.drop_answers
        if drop and self._rng.random() < drop:
            self._count("dropped_answers", stored.payment_id)
            _log.info("payment %s: answer dropped (injected)", stored.payment_id)
            return _reset_connection(request)
        return web.json_response(stored.result_json())

    # ---------------------------------------------------------------- admin handlers

    async def _handle_stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.stats().to_json())

    async def _handle_get_faults(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._faults.to_json())

    async def _handle_post_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            changes = json.loads(await request.read())
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object of fault fields")
            new = self._faults.merged(changes)
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            return _error(400, "invalid_faults", str(exc))
        if new.down and new.down_mode == "refuse" and self._admin_site is None:
            return _error(400, "invalid_faults", "down_mode=refuse would close the listener "
                          "serving this endpoint; start with a separate admin listener")
        return web.json_response((await self.set_faults(new)).to_json())

    async def _handle_delete_faults(self, request: web.Request) -> web.StreamResponse:
        return web.json_response((await self.set_faults(Faults())).to_json())

    async def _handle_get_rules(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._rules.to_json())

    async def _handle_post_rules(self, request: web.Request) -> web.StreamResponse:
        try:
            changes = json.loads(await request.read())
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object of rule fields")
            rules = self.set_rules(**changes)
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            return _error(400, "invalid_rules", str(exc))
        return web.json_response(rules.to_json())

    async def _handle_list(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"authorizations": [a.to_json() for a in self._store.values()]})

    async def _handle_reset(self, request: web.Request) -> web.StreamResponse:
        self.reset()
        return web.json_response({"reset": True})


def _reset_connection(request: web.Request) -> web.Response:
    """Reset the connection (RST) so the client gets no answer at all. aiohttp then
    fails to write the returned response and treats it as a client disconnection."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return web.Response(status=500)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                flags=socket.AI_PASSIVE)[0][0]
    sock = socket.create_server((host, port), family=family, backlog=128)
    sock.setblocking(False)
    return sock


def _base_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


# --------------------------------------------------------------------------- CLI


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _fraction(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0 <= number <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {value!r}")
    return number


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {value!r}")
    return number


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lab.gateway_sim",
        description="Simulated card gateway (CONTRACTS §5) with fault injection.")
    p.add_argument("--listen", type=_host_port, default=("127.0.0.1", 8443),
                   metavar="HOST:PORT", help="gateway address (default 127.0.0.1:8443; port 0 "
                   "picks one)")
    p.add_argument("--admin-listen", type=_host_port, metavar="HOST:PORT",
                   help="a separate listener for /_sim/* (needed for down_mode=refuse "
                   "through the admin endpoint)")
    p.add_argument("--merchant-key-file", type=Path, required=True,
                   help="file holding the merchant key (surrounding whitespace ignored)")
    p.add_argument("--seed", type=int, help="seed of the simulator's random.Random")
    p.add_argument("--latency", type=_seconds, default=0.0, metavar="S")
    p.add_argument("--jitter", type=_seconds, default=0.0, metavar="S")
    p.add_argument("--fail-5xx", type=_fraction, default=0.0, metavar="F")
    p.add_argument("--fail-5xx-status", type=int, default=503, metavar="N")
    p.add_argument("--fail-429", type=_fraction, default=0.0, metavar="F")
    p.add_argument("--retry-after", type=int, default=1, metavar="S",
                   help="Retry-After of the injected 429s, in seconds")
    p.add_argument("--retry-after-http-date", action="store_true",
                   help="send Retry-After as an HTTP-date")
    p.add_argument("--drop-answers", type=_fraction, default=0.0, metavar="F")
    p.add_argument("--down", choices=["503", "refuse"], help="start down in this mode")
    p.add_argument("--decline-amount", type=int, action="append", default=[], metavar="N",
                   help="decline this amount (repeatable)")
    p.add_argument("--decline-pan", action="append", default=[], metavar="PAN",
                   help="decline this card number (repeatable)")
    p.add_argument("--no-luhn", action="store_true", help="do not decline Luhn failures")
    p.add_argument("--no-expiry-check", action="store_true",
                   help="do not decline expired cards")
    p.add_argument("--seal-private-key", type=Path, action="append", default=[],
                   metavar="PATH", help="X25519 private key (PEM PKCS8) that opens card_sealed "
                   "(CONTRACTS §5a; repeatable, for key rotation)")
    p.add_argument("--log-level", default="warning",
                   choices=["debug", "info", "warning", "error"])
    return p


async def _serve(sim: GatewaySimulator, ready: Callable[[str], None],
                 stop_signals: Iterable[signal.Signals]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in stop_signals:
        loop.add_signal_handler(sig, stop.set)
    async with sim:
        line = f"gateway_sim listening on {sim.url}"
        if sim.admin_url != sim.url:
            line += f" admin {sim.admin_url}"
        ready(line)
        await stop.wait()


def _print_line(line: str) -> None:
    print(line, flush=True)


def main(argv: list[str] | None = None,
         ready: Callable[[str], None] = _print_line) -> int:
    """The CLI; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        key = args.merchant_key_file.read_text().strip()
    except OSError as exc:
        parser.error(f"cannot read --merchant-key-file: {exc.strerror}")
    if not key:
        parser.error("--merchant-key-file is empty")
    try:
        faults = Faults(latency_s=args.latency, jitter_s=args.jitter, fail_5xx=args.fail_5xx,
                        fail_5xx_status=args.fail_5xx_status, fail_429=args.fail_429,
                        retry_after_s=args.retry_after,
                        retry_after_http_date=args.retry_after_http_date,
                        drop_answers=args.drop_answers, down=args.down is not None,
                        down_mode=args.down or "503")
        rules = DeclineRules(decline_amounts=frozenset(args.decline_amount),
                             decline_pans=frozenset(args.decline_pan),
                             check_luhn=not args.no_luhn,
                             check_expiry=not args.no_expiry_check)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        opener = SealOpener.from_pem_files(args.seal_private_key)
    except SealKeyError as exc:
        parser.error(f"--seal-private-key: {exc}")
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    host, port = args.listen
    admin_host, admin_port = args.admin_listen or (None, None)
    sim = GatewaySimulator(key, host=host, port=port, faults=faults, rules=rules,
                           seed=args.seed, admin_host=admin_host, admin_port=admin_port,
                           seal_opener=opener)
    try:
        asyncio.run(_serve(sim, ready, (signal.SIGTERM, signal.SIGINT)))
    except OSError as exc:
        print(f"gateway_sim: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The gateway's endpoints (docs/gateway-protocol.md), the ones the box talks to:
authorize, look up,
health. Each request passes the fault injector's front door, then authentication and
validation, then the processing delay (see the package docstring for the order)."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from datetime import UTC, datetime

from aiohttp import web

from lab.gateway_sim import wire
from lab.gateway_sim.faults import FaultInjector, Stopping, reset_connection
from lab.gateway_sim.ledger import Ledger, StoredAuthorization
from lab.gateway_sim.rules import Acquirer
from lab.gateway_sim.wire import Authorization, BadRequest, CardRefused, error

_log = logging.getLogger(__name__)


class GatewayRoutes:
    """The handlers, over the simulator's parts. `released` (set unless a test holds new
    authorizations in progress) and `stopping` (set while the simulator stops) are the
    simulator's to set."""

    def __init__(self, merchant_key: bytes, ledger: Ledger, injector: FaultInjector,
                 acquirer: Acquirer) -> None:
        self._merchant_key = merchant_key
        self._ledger = ledger
        self._injector = injector
        self._acquirer = acquirer
        self.released = asyncio.Event()
        self.released.set()
        self.stopping = asyncio.Event()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/authorizations", self._handle_authorize),
            web.get("/v1/authorizations/{payment_id}", self._handle_lookup),
            web.get("/health", self._handle_health),
        ]

    def _authenticated(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        return hmac.compare_digest(token.strip().encode(), self._merchant_key)

    def _unauthorized(self) -> web.Response:
        self._ledger.totals["unauthorized_401"] += 1
        return error(401, "unauthorized", "missing or unknown merchant key",
                     headers={"WWW-Authenticate": "Bearer"})

    async def _process_delay(self) -> None:
        await self._injector.delay(self.stopping)

    async def _handle_health(self, request: web.Request) -> web.StreamResponse:
        if (early := self._injector.front_door(request)) is not None:
            return early
        try:
            await self._process_delay()
        except Stopping:
            return reset_connection(request)
        return web.json_response({"status": "ok"})

    async def _handle_lookup(self, request: web.Request) -> web.StreamResponse:
        if (early := self._injector.front_door(request)) is not None:
            return early
        if not self._authenticated(request):
            return self._unauthorized()
        payment_id = request.match_info["payment_id"]
        try:
            await self._process_delay()
        except Stopping:
            return reset_connection(request)
        ledger = self._ledger
        known = payment_id in ledger.store or payment_id in ledger.in_progress
        ledger.count("lookups", payment_id if known else None)
        stored = ledger.store.get(payment_id)
        if stored is not None:
            return web.json_response(stored.result_json())
        if payment_id in ledger.in_progress:
            ledger.count("in_progress_409", payment_id)
            return error(409, "in_progress", "the authorization is still being processed",
                         headers={"Retry-After": "1"})
        return error(404, "not_found", "no authorization with this payment_id")

    async def _handle_authorize(self, request: web.Request) -> web.StreamResponse:
        if (early := self._injector.front_door(request)) is not None:
            return early
        if not self._authenticated(request):
            return self._unauthorized()
        parsed = await self._parse(request)
        if isinstance(parsed, web.Response):
            return parsed
        auth, body = parsed
        try:
            auth = self._acquirer.open(auth)
        except CardRefused as exc:
            return self._card_refused(auth.payment_id, exc)

        pid = auth.payment_id
        fingerprint = wire.fingerprint(body)
        # From here to the in-progress mark there is no await: one result per key.
        ledger = self._ledger
        if pid in ledger.store or pid in ledger.in_progress:
            return await self._repeat(request, pid, fingerprint)
        ledger.in_progress[pid] = fingerprint
        ledger.notify()
        try:
            await self._process_delay()
            await self.released.wait()
            if self.stopping.is_set():
                raise Stopping
            stored = self._store_result(auth, fingerprint)
        except Stopping:
            return reset_connection(request)
        finally:
            del ledger.in_progress[pid]
            ledger.notify()
        return self._answer(request, stored)

    async def _parse(self, request: web.Request
                     ) -> tuple[Authorization, object] | web.Response:
        """The validated body and the body itself, or the 400 answer."""
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            self._ledger.totals["bad_request_400"] += 1
            return error(400, "invalid_json", "the body is not JSON")
        try:
            auth = wire.parse_authorization(body)
            key = request.headers.get("Idempotency-Key")
            if not key:
                raise BadRequest("missing_idempotency_key", "Idempotency-Key",
                                 "the Idempotency-Key header is required")
            if key != auth.payment_id:
                raise BadRequest("idempotency_key_mismatch", "Idempotency-Key",
                                 "must equal the body's payment_id")
        except BadRequest as exc:
            self._ledger.totals["bad_request_400"] += 1
            return error(400, exc.code, exc.message, exc.field_name)
        return auth, body

    async def _repeat(self, request: web.Request, pid: str,
                      fingerprint: str) -> web.StreamResponse:
        """A key already stored (replay, or 422 for another body) or in progress (409)."""
        ledger = self._ledger
        stored = ledger.store.get(pid)
        if stored is not None:
            if stored.fingerprint != fingerprint:
                return self._conflict(pid)
            ledger.count("replays", pid)
            try:
                await self._process_delay()
            except Stopping:
                return reset_connection(request)
            return self._answer(request, stored)
        if ledger.in_progress[pid] != fingerprint:
            return self._conflict(pid)
        ledger.count("in_progress_409", pid)
        return error(409, "in_progress", "a request with this Idempotency-Key is "
                     "still being processed", headers={"Retry-After": "1"})

    def _conflict(self, payment_id: str) -> web.Response:
        self._ledger.count("conflicts_422", payment_id)
        _log.warning("payment %s: Idempotency-Key reused with a different body", payment_id)
        return error(422, "idempotency_conflict",
                     "this Idempotency-Key was used with a different body")

    def _card_refused(self, payment_id: str, exc: CardRefused) -> web.Response:
        self._ledger.totals["card_refused_422"] += 1
        _log.warning("payment %s: card refused: %s", payment_id, exc.code)
        return error(422, exc.code, exc.message, exc.field_name)

    def _store_result(self, auth: Authorization, fingerprint: str) -> StoredAuthorization:
        card = auth.opened
        result = self._acquirer.decide(auth)
        stored = StoredAuthorization(
            payment_id=auth.payment_id, result=result, amount=auth.amount,
            currency=auth.currency, last4=card.pan[-4:], offline=auth.offline,
            merchant_id=auth.merchant_id, processed_at=datetime.now(UTC),
            fingerprint=fingerprint,
            seal_kid=auth.sealed.kid if auth.sealed is not None else None)
        self._ledger.store[auth.payment_id] = stored
        self._ledger.count("processed", auth.payment_id)
        _log.info("payment %s processed: %s (%s %s, offline=%s, seal_kid=%s)", auth.payment_id,
                  result.status, auth.amount, auth.currency, auth.offline, stored.seal_kid)
        return stored

    def _answer(self, request: web.Request, stored: StoredAuthorization) -> web.Response:
        if self._injector.drop_answer():
            self._ledger.count("dropped_answers", stored.payment_id)
            _log.info("payment %s: answer dropped (injected)", stored.payment_id)
            return reset_connection(request)
        return web.json_response(stored.result_json())

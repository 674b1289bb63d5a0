"""The POS-facing payment routes (docs/openapi.json), added to the box's HTTP application.

Authentication is the application's job (the box adds a bearer-token middleware);
these handlers only map the service's outcomes to HTTP.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from payments_cache.desk import PaymentsDesk
from payments_cache.errors import (
    InvalidRequest,
    InvalidTransition,
    PaymentNotFound,
    StorageUnavailable,
)
from payments_cache.models import Payment
from payments_cache.service import IdempotencyConflict, PaymentBusy
from payments_cache.validation import MAX_BODY_BYTES

log = logging.getLogger(__name__)

SERVICE_KEY = web.AppKey("payments", PaymentsDesk)


def _error(status: int, code: str, message: str, field: str | None = None,
           headers: dict[str, str] | None = None) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return web.json_response({"error": error}, status=status, headers=headers)


async def _read_capped(request: web.Request, limit: int) -> bytes:
    """The body, or its first `limit` bytes when it is longer (validation then refuses it)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await request.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


async def create_payment(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    body = await _read_capped(request, MAX_BODY_BYTES + 1)
    try:
        doc = await service.submit(request.headers.get("Idempotency-Key"), body)
    except InvalidRequest as exc:
        return _error(400, exc.code, exc.message, exc.field)
    except IdempotencyConflict as exc:
        return _error(409, "idempotency_conflict", str(exc), "Idempotency-Key")
    except PaymentBusy as exc:
        return _error(503, "payment_in_progress", str(exc), headers={"Retry-After": "1"})
    except StorageUnavailable as exc:
        log.error("payment not taken, storage unavailable: %s", exc)
        return _error(503, "storage_unavailable",
                      "the payment could not be stored durably; nothing was approved",
                      headers={"Retry-After": "5"})
    return web.json_response(doc)


async def get_payment(request: web.Request) -> web.Response:
    payment_id = request.match_info["payment_id"]
    try:
        doc = await request.app[SERVICE_KEY].get(payment_id)
    except StorageUnavailable as exc:
        log.error("payment lookup failed, storage unavailable: %s", exc)
        return _error(503, "storage_unavailable", "the payment store cannot be read")
    if doc is None:
        return _error(404, "not_found", f"no payment {payment_id!r}", "id")
    return web.json_response(doc)


def queue_entry(payment: Payment) -> dict[str, Any]:
    """One queued payment for a technician: masked card, never more."""
    return {
        "id": payment.id, "created_at": payment.created_at.isoformat(timespec="seconds"),
        "amount": payment.amount, "currency": payment.currency, "status": payment.status.value,
        "forward_state": payment.forward_state.value, "attempts": payment.attempts,
        "next_attempt_at": payment.next_attempt_at.isoformat(timespec="seconds")
        if payment.next_attempt_at else None,
        "card": f"…{payment.last4}", "brand": payment.brand,
        "last_error": payment.last_error, "terminal_id": payment.terminal_id,
        "reference": payment.reference, "stuck": payment.stuck_at is not None,
        "final_status": payment.final_status, "decline_reason": payment.decline_reason,
    }


async def requeue_payment(request: web.Request) -> web.Response:
    """An operator puts a stuck (or dead) payment back in the queue, under its own id."""
    service = request.app[SERVICE_KEY].service
    if service is None:
        return _error(503, "keys_unavailable", "the payment store is closed")
    payment_id = request.match_info["payment_id"]
    try:
        payment = await service.store.requeue(payment_id)
    except PaymentNotFound:
        return _error(404, "not_found", f"no payment {payment_id!r}", "id")
    except InvalidTransition as exc:
        return _error(409, "not_stuck", str(exc), "id")
    except StorageUnavailable as exc:
        return _error(503, "storage_unavailable", str(exc))
    log.warning("payment %s requeued by an operator", payment_id)
    return web.json_response(queue_entry(payment))


async def get_queue(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY].service
    if service is None:
        return _error(503, "keys_unavailable", "the payment store is closed: its keys are "
                      "unavailable (see the status faults)")
    try:
        limit = max(1, min(int(request.query.get("limit", "100")), 10_000))
    except ValueError:
        return _error(400, "invalid_field", f"limit must be an integer, got "
                      f"{request.query.get('limit')!r}", "limit")
    try:
        stats = await service.store.queue_stats()
        rows = await service.store.list_queue(limit)
        declined = await service.store.list_declined_after_offline(limit)
    except StorageUnavailable as exc:
        return _error(503, "storage_unavailable", str(exc))
    return web.json_response({
        "stats": {"count": stats.count, "amount": stats.amount,
                  "oldest_created_at": stats.oldest_created_at.isoformat(timespec="seconds")
                  if stats.oldest_created_at else None, "by_state": stats.by_state},
        "payments": [queue_entry(p) for p in rows],
        "declined_after_offline": [queue_entry(p) for p in declined],
    })


def add_routes(app: web.Application, desk: PaymentsDesk) -> None:
    app[SERVICE_KEY] = desk
    app.router.add_post("/v1/payments", create_payment)
    app.router.add_get("/v1/payments/{payment_id}", get_payment)
    app.router.add_get("/v1/queue", get_queue)
    app.router.add_post("/v1/queue/{payment_id}/requeue", requeue_payment)

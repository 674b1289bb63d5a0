"""`Store` for asyncio: every call runs on one dedicated thread, in order.

SQLite connections belong to the thread that opened them; the store's one thread also
serialises every transaction. Offline stand-ins that arrive while that thread is busy
are stored together in its next transaction (group commit: one fsync for a burst).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from payments_cache.errors import PaymentsError, StorageUnavailable
from payments_cache.keysource import KeySource, RotatingWrapper
from payments_cache.models import (
    GatewayResult,
    OfflineDecision,
    OfflineRequest,
    OpenReport,
    Payment,
    PaymentRequest,
    QueueStats,
    RotationReport,
)
from payments_cache.protection import ForwardCard
from payments_cache.retention import ExpiryReport
from payments_cache.sealing import SealKey
from payments_cache.store import Store


def _settle(future: asyncio.Future[Payment | PaymentsError],
            result: Payment | PaymentsError) -> None:
    if not future.done():
        future.set_result(result)


_P = ParamSpec("_P")
_T = TypeVar("_T")


class AsyncStore:
    """`Store` for asyncio: every call runs on one dedicated thread, in order."""

    def __init__(self, store: Store, executor: ThreadPoolExecutor) -> None:
        self._store = store
        self._executor = executor
        self._offline_batch: list[tuple[OfflineRequest,
                                        asyncio.Future[Payment | PaymentsError]]] = []

    @classmethod
    async def open(cls, directory: str | Path, keys: KeySource,
                   **options: Any) -> AsyncStore:
        """`Store.open` on the store's own thread; `options` are `Store.open`'s."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="payments-store")
        opener = functools.partial(Store.open, directory, keys, **options)
        try:
            store = await asyncio.get_running_loop().run_in_executor(executor, opener)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(store, executor)

    @property
    def report(self) -> OpenReport:
        return self._store.report

    async def _call(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def close(self) -> None:
        try:
            await self._call(self._store.close)
        finally:
            self._executor.shutdown(wait=False)

    async def lookup_idempotency(self, key: str) -> tuple[Payment, str | None] | None:
        return await self._call(self._store.lookup_idempotency, key)

    async def begin_online(self, idempotency_key: str, request: PaymentRequest, *,
                           brand: str | None = None) -> Payment:
        return await self._call(self._store.begin_online, idempotency_key, request, brand=brand)

    async def take_offline(self, idempotency_key: str, request: PaymentRequest,
                           decide: Callable[[QueueStats, tuple[int, int]], OfflineDecision],
                           velocity_since: datetime, *, brand: str | None = None) -> Payment:
        """Group commit: stand-ins that arrive while the store thread is busy are stored
        together in its next transaction, so a burst of POS requests shares one fsync.
        Each caller still hears back only after the commit that holds its payment."""
        future: asyncio.Future[Payment | PaymentsError] = \
            asyncio.get_running_loop().create_future()
        self._offline_batch.append(
            (OfflineRequest(idempotency_key, request, decide, velocity_since, brand), future))
        if len(self._offline_batch) == 1:
            asyncio.get_running_loop().run_in_executor(self._executor, self._run_offline_batch,
                                                       asyncio.get_running_loop())
        result = await future
        if isinstance(result, BaseException):
            raise result
        return result

    def _run_offline_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the store thread: take everything queued so far, store it in one go."""
        batch: list[tuple[OfflineRequest, asyncio.Future[Payment | PaymentsError]]] = []

        def take() -> None:
            batch.extend(self._offline_batch)
            self._offline_batch.clear()
            taken.set()

        taken = threading.Event()
        loop.call_soon_threadsafe(take)
        taken.wait()
        try:
            results: list[Payment | PaymentsError] = self._store.take_offline_many(
                [item for item, _ in batch])
        except PaymentsError as exc:
            results = [exc] * len(batch)
        except BaseException as exc:  # a bug: fail the callers, never leave them hanging
            failure = StorageUnavailable("store the offline payment", repr(exc))
            results = [failure] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            loop.call_soon_threadsafe(_settle, future, result)

    async def settle_online(self, payment_id: str, result: GatewayResult) -> Payment:
        return await self._call(self._store.settle_online, payment_id, result)

    async def stand_in(self, payment_id: str, decision: OfflineDecision, *,
                       outcome_unknown: bool = False,
                       lost_attempt_until: datetime | None = None) -> Payment:
        return await self._call(self._store.stand_in, payment_id, decision,
                                outcome_unknown=outcome_unknown,
                                lost_attempt_until=lost_attempt_until)

    async def get(self, payment_id: str) -> Payment | None:
        return await self._call(self._store.get, payment_id)

    async def queue_stats(self) -> QueueStats:
        return await self._call(self._store.queue_stats)

    async def queue_totals(self) -> QueueStats:
        return await self._call(self._store.queue_totals)

    async def card_velocity(self, pan: str, since: datetime) -> tuple[int, int]:
        return await self._call(self._store.card_velocity, pan, since)

    async def list_queue(self, limit: int = 100) -> list[Payment]:
        return await self._call(self._store.list_queue, limit)

    async def due_for_forwarding(self, now: datetime, *, limit: int,
                                 exclude: Collection[str] = (),
                                 ignore_backoff: bool = False) -> list[Payment]:
        return await self._call(self._store.due_for_forwarding, now, limit=limit,
                                exclude=tuple(exclude), ignore_backoff=ignore_backoff)

    async def next_due_at(self) -> datetime | None:
        return await self._call(self._store.next_due_at)

    async def card_for_forwarding(self, payment_id: str) -> ForwardCard:
        return await self._call(self._store.card_for_forwarding, payment_id)

    async def record_forward_result(self, payment_id: str, result: GatewayResult, *,
                                    expect: Payment) -> Payment | None:
        return await self._call(self._store.record_forward_result, payment_id, result,
                                expect=expect)

    async def close_unreceived(self, payment_id: str, *, expect: Payment) -> Payment | None:
        return await self._call(self._store.close_unreceived, payment_id, expect=expect)

    async def schedule_retry(self, payment_id: str, *, expect: Payment, at: datetime,
                             error: str, unknown: bool = False) -> Payment | None:
        return await self._call(self._store.schedule_retry, payment_id, expect=expect, at=at,
                                error=error, unknown=unknown)

    async def note_not_found(self, payment_id: str, *, expect: Payment, trusted: bool,
                             retry_at: datetime) -> Payment | None:
        return await self._call(self._store.note_not_found, payment_id, expect=expect,
                                trusted=trusted, retry_at=retry_at)

    async def mark_dead(self, payment_id: str, *, expect: Payment, error: str) -> Payment | None:
        return await self._call(self._store.mark_dead, payment_id, expect=expect, error=error)

    async def pending_ids(self) -> list[str]:
        return await self._call(self._store.pending_ids)

    async def recover_stale_pending(self, older_than: datetime | None,
                                    also: Collection[str] = ()) -> list[str]:
        return await self._call(self._store.recover_stale_pending, older_than, also)

    async def rotate_keys(self) -> RotationReport:
        return await self._call(self._store.rotate_keys)

    async def flush_erasures(self) -> None:
        await self._call(self._store.flush_erasures)

    async def expire(self, *, velocity_window_s: float, retention_days: float) -> ExpiryReport:
        return await self._call(self._store.expire, velocity_window_s=velocity_window_s,
                                retention_days=retention_days)

    async def settled_totals(self) -> list[dict[str, object]]:
        return await self._call(self._store.settled_totals)

    async def set_protection(self, seal_key: SealKey | None, local_allowed: bool) -> None:
        """Seal new cards to `seal_key` from now on (a rotated gateway key; SIGHUP), or
        keep them locally if allowed. Cards already sealed keep their key id and still
        forward."""
        def apply() -> None:
            self._store.protection.seal_key = seal_key
            self._store.protection.local_allowed = local_allowed
        await self._call(apply)

    async def key_age_s(self) -> float:
        return await self._call(self._store.key_age_s)

    async def rotate_kek(self, provider: RotatingWrapper) -> list[str]:
        return await self._call(self._store.rotate_kek, provider)

    @property
    def protection_mode(self) -> str:
        return self._store.protection.mode


    async def note_error(self, payment_id: str, *, expect: Payment, error: str,
                         retry_at: datetime, stuck: bool = False) -> Payment | None:
        return await self._call(self._store.note_error, payment_id, expect=expect, error=error,
                                retry_at=retry_at, stuck=stuck)

    async def requeue(self, payment_id: str) -> Payment:
        return await self._call(self._store.requeue, payment_id)

    async def list_declined_after_offline(self, limit: int = 100) -> list[Payment]:
        return await self._call(self._store.list_declined_after_offline, limit)

    async def follow_wall(self) -> None:
        await self._call(self._store.follow_wall)

    async def a_payment_the_gateway_holds(self) -> str | None:
        return await self._call(self._store.a_payment_the_gateway_holds)

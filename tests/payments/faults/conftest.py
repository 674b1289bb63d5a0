"""The payments core in one process against a model gateway, on an injected clock.

`Rig` wires the real `AsyncStore` (SQLite in a temporary directory), `PaymentService` and
`Forwarder` the way `firmware/components/payments.py` does (one `Claims` shared by both, the
forwarder woken by uplink changes), with a `ManualClock` whose wall time can be stepped or
unset independently of its monotonic time. `ModelGateway` implements the gateway's
idempotency rules (docs/gateway-protocol.md) and injects the faults a real gateway and network
produce, raising exactly what `gateway_client.HttpGateway` raises for each of them.

Nothing here sleeps: time moves only when a test moves the clock, and concurrency is
synchronised with events.

The rig also runs against older firmware (``PYTHONPATH=<worktree>``, to prove a test
failed before its fix): keyword arguments an older constructor does not know (`claims`,
`monotonic`, `lost_attempt_s`, `lost_attempt_lifetime_s`, ...) are left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import random
import shutil
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pytest

from payments_cache.async_store import AsyncStore
from payments_cache.errors import (
    GatewayRejected,
    GatewayUnavailable,
    StorageUnavailable,
    UnknownOutcome,
)
from payments_cache.forward_settings import Backoff, ForwarderSettings
from payments_cache.forwarder import Forwarder
from payments_cache.gateway import AuthorizationPayload
from payments_cache.models import GatewayResult, Payment
from payments_cache.risk import RiskLimits
from payments_cache.service import PaymentService, ServiceSettings
from payments_cache.store import Store
from payments_cache.uplinks import UplinkSignal
from tests.support.clock import ManualClock

try:  # added by 71a2525
    from payments_cache.claims import Claims
except ImportError:  # pragma: no cover - older firmware
    Claims = None  # type: ignore[assignment,misc]

#: 2027-01-15, well after wallclock.WALL_FLOOR.
T0 = 1_800_000_000.0
#: Where the rig's monotonic clock starts.
MONO0 = 10_000.0
MERCHANT = "merchant-7"
VISA = "4111111111111111"
MASTERCARD = "5555555555554444"
DEADLINE_S = 3.0
LIFETIME_S = 60.0
GRACE_S = 60.0
Event = tuple[str, dict[str, Any]]


def accepted(fn: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments `fn` takes (older firmware lacks some)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


class NoJitter(random.Random):
    def random(self) -> float:
        return 0.0


def unknown_outcome(pid: str, reason: str, *, timed_out: bool = False,
                    malformed: bool = False) -> UnknownOutcome:
    """What the HTTP client raises; `malformed` exists since 71a2525."""
    kwargs = accepted(UnknownOutcome.__init__, {"timed_out": timed_out, "malformed": malformed})
    return UnknownOutcome(pid, reason, **kwargs)


#: Faults of one authorize request (`ModelGateway.authorize`):
#: ok             processed, answered
#: refused        connection refused: nothing sent (GatewayUnavailable, no status)
#: lost_before    sent, lost before the gateway: a timeout (UnknownOutcome timed_out)
#: late           held in a proxy, arrives `late_s` later; the box times out meanwhile
#: lost_after     processed, the connection reset before the answer (UnknownOutcome)
#: timeout_after  processed, the answer later than the deadline (UnknownOutcome timed_out)
#: 500/502/503/504/409_after  processed, then that status (GatewayUnavailable)
#: 429            refused before processing, Retry-After 30
#: 503_hold       refused before processing, 503 with Retry-After 30
#: malformed      processed, answered 200 {"status": "APPROVED"} (the client cannot parse it)
#: reject         404 (the path moved): not processed (GatewayRejected)
#: boom           a bug below the gateway call (RuntimeError), nothing sent
FAULTS = ("ok", "refused", "lost_before", "late", "lost_after", "timeout_after", "500_after",
          "502_after", "503_after", "504_after", "409_after", "429", "503_hold", "malformed",
          "reject", "boom")


@dataclass
class Sent:
    mono: float
    op: str          # "authorize" | "lookup"
    pid: str
    online: bool = False


@dataclass
class ModelGateway:
    """The gateway's idempotency store (docs/gateway-protocol.md) and the faults around it.

    `mode` is the gateway as a whole: "ok", "down" (nothing reachable), "reject_all"
    (a 404 for every path, lookups included), "swallow" (every request times out
    unprocessed), "malformed" (every authorization processed, answered with a 200 the
    client cannot parse). `script[pid]` / `next_faults` are faults for single requests."""

    clock: ManualClock
    mode: str = "ok"
    late_s: float = 30.0
    decline_amounts: set[int] = field(default_factory=set)
    stored: dict[str, GatewayResult] = field(default_factory=dict)
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    processed: Counter[str] = field(default_factory=Counter)
    refused_422: int = 0
    sent: list[Sent] = field(default_factory=list)
    script: dict[str, list[str]] = field(default_factory=dict)
    next_faults: list[str] = field(default_factory=list)
    in_transit: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    #: Set: the next authorize waits for it (and `arrived` is set when it does).
    gate: asyncio.Event | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    #: The body of the last request that waited at `gate`.
    last_body: dict[str, Any] = field(default_factory=dict)

    def authorizations(self, pid: str | None = None) -> list[Sent]:
        return [s for s in self.sent if s.op == "authorize" and pid in (None, s.pid)]

    def lookups(self, pid: str | None = None) -> list[Sent]:
        return [s for s in self.sent if s.op == "lookup" and pid in (None, s.pid)]

    def charged(self, pid: str) -> bool:
        found = self.stored.get(pid)
        return found is not None and found.status == "approved"

    def deliver(self) -> None:
        """Requests held in a proxy whose time has come reach the gateway."""
        due = [t for t in self.in_transit if t[0] <= self.clock.monotonic()]
        self.in_transit = [t for t in self.in_transit if t[0] > self.clock.monotonic()]
        for _, pid, body in due:
            with contextlib.suppress(GatewayRejected):
                self._process(pid, body)

    def _fault(self, pid: str) -> str:
        if self.mode != "ok":
            return {"down": "refused", "reject_all": "reject", "swallow": "lost_before",
                    "malformed": "malformed"}[self.mode]
        steps = self.script.get(pid)
        if steps:
            return steps.pop(0)
        return self.next_faults.pop(0) if self.next_faults else "ok"

    async def authorize(self, payload: AuthorizationPayload, timeout_s: float) -> GatewayResult:
        pid = payload.payment_id
        body = payload.to_json()
        if payload.offline:
            assert "cvc" not in body.get("card", {}), "an offline body carries no CVC"
        self.deliver()
        fault = self._fault(pid)
        if fault == "boom":
            raise RuntimeError("a bug below the gateway call")
        if fault == "refused":
            raise GatewayUnavailable(pid, "cannot connect: connection refused")
        self.sent.append(Sent(self.clock.monotonic(), "authorize", pid, online=not payload.offline))
        if self.gate is not None:
            gate, self.gate = self.gate, None
            self.last_body = body
            self.arrived.set()
            await gate.wait()
        if fault == "lost_before":
            raise unknown_outcome(pid, f"timed out after {timeout_s}s waiting for the answer",
                                  timed_out=True)
        if fault == "late":
            self.in_transit.append((self.clock.monotonic() + self.late_s, pid, body))
            raise unknown_outcome(pid, f"timed out after {timeout_s}s waiting for the answer",
                                  timed_out=True)
        if fault == "429":
            raise GatewayUnavailable(pid, "HTTP 429", retry_after_s=30.0, status=429)
        if fault == "503_hold":
            raise GatewayUnavailable(pid, "HTTP 503", retry_after_s=30.0, status=503)
        if fault == "reject":
            raise GatewayRejected(pid, 404, "HTTP 404")
        result = self._process(pid, body)  # may raise the 422 of another body
        if fault == "ok":
            return result
        if fault == "lost_after":
            raise unknown_outcome(pid, "connection lost after sending: reset by peer")
        if fault == "timeout_after":
            raise unknown_outcome(pid, f"timed out after {timeout_s}s waiting for the answer",
                                  timed_out=True)
        if fault == "malformed":
            raise unknown_outcome(pid, "malformed HTTP 200 answer: status is neither approved "
                                  "nor declined", malformed=True)
        status = int(fault.split("_")[0])
        raise GatewayUnavailable(pid, f"HTTP {status}", status=status)

    def _process(self, pid: str, body: dict[str, Any]) -> GatewayResult:
        if pid in self.bodies:
            if self.bodies[pid] != body:
                self.refused_422 += 1
                raise GatewayRejected(pid, 422, "HTTP 422 idempotency_conflict")
            return self.stored[pid]
        self.bodies[pid] = body
        self.processed[pid] += 1
        result = (GatewayResult("declined", decline_code="do_not_honor")
                  if body["amount"] in self.decline_amounts
                  else GatewayResult("approved", auth_code="A" + pid[-6:]))
        self.stored[pid] = result
        return result

    async def lookup(self, payment_id: str, timeout_s: float) -> GatewayResult | None:
        self.deliver()
        if self.mode == "down":
            raise GatewayUnavailable(payment_id, "lookup failed: connection refused")
        self.sent.append(Sent(self.clock.monotonic(), "lookup", payment_id))
        if self.mode == "swallow":
            raise GatewayUnavailable(payment_id, f"lookup timed out after {timeout_s}s")
        if self.mode == "reject_all":
            # what HttpGateway raises for a 404 that is not the gateway's JSON answer
            # (a proxy's or web server's page for a moved path): not "never received"
            raise GatewayUnavailable(payment_id, "lookup answered 404 without the "
                                     "gateway's JSON error body", status=404)
        await asyncio.sleep(0)
        return self.stored.get(payment_id)


def body(amount: int = 1000, *, pan: str = VISA, exp: tuple[int, int] = (12, 2030),
         reference: str | None = None, terminal: str = "pos-1", currency: str = "KRW") -> bytes:
    doc: dict[str, Any] = {"amount": amount, "currency": currency,
                           "card": {"pan": pan, "exp_month": exp[0], "exp_year": exp[1],
                                    "cvc": "123"},
                           "terminal_id": terminal}
    if reference is not None:
        doc["reference"] = reference
    return json.dumps(doc).encode()


#: Caps used by the tests unless they say otherwise: generous but real.
LIMITS = RiskLimits(max_amount=50_000, max_total=1_000_000, max_count=100,
                    max_age_s=86_400.0, velocity_max_count=1000,
                    velocity_max_amount=100_000_000)


class Rig:
    """The payments core of one box, restartable, on an injected clock."""

    def __init__(self, directory: Path, clock: ManualClock | None = None,
                 gateway: ModelGateway | None = None, *, limits: RiskLimits = LIMITS,
                 unreachable_pause_s: float = 2.0, concurrency: int = 4,
                 **forwarder_options: Any) -> None:
        self.dir = directory
        self.clock = clock or ManualClock(wall=T0, monotonic=MONO0)
        self.gateway = gateway or ModelGateway(self.clock)
        self.uplinks = UplinkSignal("up")
        self.uplinks.on_change(self._uplink_changed)
        self.limits = limits
        self.unreachable_pause_s = unreachable_pause_s
        self.concurrency = concurrency
        self.forwarder_options = forwarder_options
        self.events: list[Event] = []
        self.store: AsyncStore | None = None
        self._run_end = 0.0
        #: Bumped by every `open`: one life of the daemon's payments side.
        self.life = 0
        self._run_done = asyncio.Event()
        self.service: PaymentService
        self.forwarder: Forwarder
        #: The service tells the forwarder of its lost attempts, as the daemon wires it
        #: (off: the forwarder must still not trust a 404 too early).
        self.wire_lost_attempts = True

    @property
    def kek(self) -> Path:
        return self.dir / "kek.key"

    def _event(self, kind: str, **fields: Any) -> None:
        self.events.append((kind, {"mono": self.clock.monotonic(), "life": self.life, **fields}))

    def _lost_attempt(self, payment_id: str, lifetime_s: float) -> None:
        if self.wire_lost_attempts:  # as firmware/components/payments.py wires it
            self.forwarder.lost_attempt(payment_id, lifetime_s)

    def _uplink_changed(self, reach: str) -> None:  # as firmware/components/payments.py wires it
        if reach != "down" and self.store is not None:
            self.forwarder.wake()

    def settings(self) -> ServiceSettings:
        names = {f.name for f in fields(ServiceSettings)}
        options = dict(merchant_id=MERCHANT, online_deadline_s=DEADLINE_S,
                       unreachable_pause_s=self.unreachable_pause_s,
                       lost_attempt_lifetime_s=LIFETIME_S, limits=self.limits)
        return ServiceSettings(**{k: v for k, v in options.items() if k in names})

    async def open(self) -> AsyncStore:
        options = accepted(Store.open, dict(wall=self.clock.wall, monotonic=self.clock.monotonic,
                                            pending_grace_s=GRACE_S,
                                            lost_attempt_s=DEADLINE_S + LIFETIME_S))
        store = await AsyncStore.open(self.dir, self.kek, **options)
        self.store = store
        self.life += 1
        claims = Claims() if Claims is not None else None
        self.service = PaymentService(store, self.gateway, self.uplinks, self.settings(),
                                      **accepted(PaymentService.__init__, dict(
                                          wall=self.clock.wall, on_event=self._event,
                                          claims=claims,
                                          on_lost_attempt=self._lost_attempt)))
        tuning = dict(concurrency=self.concurrency,
                      backoff=Backoff(base_s=2.0, cap_s=300.0, jitter=0.5))
        tuning.update(self.forwarder_options)
        settings = ForwarderSettings(**accepted(ForwarderSettings, tuning))
        self.forwarder = Forwarder(store, self.gateway, MERCHANT, settings, **accepted(
            Forwarder.__init__, dict(wall=self.clock.wall, monotonic=self.clock.monotonic,
                                     claims=claims, rng=NoJitter(), on_event=self._event,
                                     sleep=self._virtual_sleep)))
        return store

    async def close(self) -> None:
        if self.store is not None:
            store, self.store = self.store, None
            await store.close()

    async def restart(self) -> None:
        await self.close()
        await self.open()

    async def set_writable(self, writable: bool) -> None:
        """The disk fills up / turns read-only (every write fails in SQLite), or recovers."""
        assert self.store is not None
        conn = self.store._store.db.conn
        await self.store._call(conn.execute, f"PRAGMA query_only = {0 if writable else 1}")

    async def pay(self, key: str, raw: bytes) -> dict[str, Any]:
        """POST /v1/payments in effect: the answer, or {"error": code} for a 5xx."""
        try:
            return await self.service.submit(key, raw)
        except StorageUnavailable:
            return {"error": "storage_unavailable"}
        except Exception as exc:
            if type(exc).__name__ == "PaymentBusy":
                return {"error": "payment_in_progress"}
            if isinstance(exc, RuntimeError):  # a bug below: the API answers 500
                return {"error": "internal"}
            raise

    async def row(self, pid: str) -> Payment:
        assert self.store is not None
        payment = await self.store.get(pid)
        assert payment is not None
        return payment

    async def run_for(self, seconds: float) -> None:
        """The forwarder's own `run` loop for `seconds` of virtual time: its `sleep` is
        `_virtual_sleep`, which moves the clock instead of waiting."""
        self._run_end = self.clock.monotonic() + seconds
        done = self._run_done = asyncio.Event()
        runner = asyncio.create_task(self.forwarder.run())
        waiter = asyncio.create_task(done.wait())
        try:
            await asyncio.wait({runner, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (runner, waiter):
                task.cancel()
            await asyncio.gather(runner, waiter, return_exceptions=True)
        if runner.done() and not runner.cancelled() and runner.exception() is not None:
            raise runner.exception()  # type: ignore[misc]
        self.gateway.deliver()

    async def _virtual_sleep(self, delay: float) -> None:
        left = self._run_end - self.clock.monotonic()
        if left <= 0:
            self._run_done.set()
            await asyncio.Future()  # parked until `run_for` cancels the loop
        self.clock.advance(min(max(delay, 0.0), left))
        self.gateway.deliver()

    def faults(self, reason: str | None = None) -> list[dict[str, Any]]:
        return [f for k, f in self.events if k == "fault" and reason in (None, f.get("reason"))]


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A state directory on tmpfs when there is one (fsync is free there)."""
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    path = Path(tempfile.mkdtemp(prefix="storebox-faults-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def rig(state_dir: Path) -> AsyncIterator[Rig]:
    r = Rig(state_dir)
    await r.open()
    try:
        yield r
    finally:
        await r.close()

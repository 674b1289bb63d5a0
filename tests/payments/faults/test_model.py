"""The payments core, model-checked: hypothesis drives the real service, store and
forwarder (`conftest.Rig`) against the model gateway with random faults, and checks the
exactly-once promises after every step.

Steps: POS payments (each online attempt with a fault drawn from `conftest.FAULTS`:
answers lost before/after processing, 5xx/409 after processing, a proxy delivering the
request after the deadline, 429/503 holds, malformed 200s, 404s, bugs), POS retries
under the same key, a daemon killed mid-attempt (the gateway got the request, or not,
or gets it later) and restarted, plain restarts, the disk turning read-only / full and
back, wall-clock steps of ±hours, the clock unset (1970) and set again, the KEK file
missing (the store must fail closed) and restored, the gateway as a whole down,
rejecting every path with 404, swallowing requests or answering malformed, uplink
flaps and failovers, the forwarder running for a while (its own `run` loop on virtual
time).

Invariants, after every step:
* charged ⇒ known: a payment the gateway approved is never closed as declined at the box
  (``declined``/``declined_offline`` with nothing left to look up) without a fault
  saying so; an offline approval is never closed as forwarded with another result;
* every ``approved_offline`` is owed until the gateway has it: never dropped (forward
  state NONE); dead only with a ``payment_dead`` fault;
* the POS's promise: every answer under one Idempotency-Key is the same payment with
  the same status;
* no payment is sent (authorize or lookup) more than `MAX_SENDS_PER_HOUR` times in any
  hour of monotonic time; repeatable faults at most one a minute per reason, and the
  events in total bounded by the work done.
At the end every fault is healed and the forwarder runs for two hours: then every
``approved_offline`` is charged exactly once (or stuck / dead / quarantined, each with a
fault) and nothing is left unresolved.

`make test` runs `MODEL_EXAMPLES` (default 300) examples; `benchmarks/bench_model.py`
runs the same machine for 20,000.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from payments_cache.errors import KeyMaterialError
from payments_cache.models import ForwardState, Payment, PaymentStatus
from tests.payments.faults.conftest import FAULTS, LIMITS, T0, Rig, body

MAX_SENDS_PER_HOUR = 150
#: Fault reasons that can repeat: at most one a minute each.
LIMITED = ("storage_unavailable", "forwarding_error", "gateway_rejects_everything")
AMOUNTS = (1000, 4242, 20_000, 60_000)  # 4242: the gateway declines; 60,000: over the cap
DECLINED_AT_GATEWAY = {4242}
CLOSED = (ForwardState.NONE, ForwardState.FORWARDED, ForwardState.DEAD)

#: Runs started (read by benchmarks/bench_model.py).
RUNS = {"count": 0}


class PaymentsMachine(RuleBasedStateMachine):
    keys = Bundle("keys")

    def __init__(self) -> None:
        super().__init__()
        RUNS["count"] += 1
        self.loop = asyncio.new_event_loop()
        base = "/dev/shm" if Path("/dev/shm").is_dir() else None
        self.dir = Path(tempfile.mkdtemp(prefix="storebox-model-", dir=base))
        self.rig = Rig(self.dir, limits=replace(LIMITS, max_total=200_000, max_count=20),
                       unreachable_pause_s=0.0, idle_poll_s=600.0)
        self.rig.gateway.decline_amounts = set(DECLINED_AT_GATEWAY)
        self.run(self.rig.open())
        self.mono0 = self.rig.clock.monotonic()
        self.writable = True
        self.bodies: dict[str, bytes] = {}
        self.answers: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.requests = 0
        self.quarantined: set[str] = set()
        self.counter = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    # helpers

    def _true_wall(self) -> float:
        return T0 + (self.rig.clock.monotonic() - self.mono0)

    def _set_wall(self, wall: float) -> None:
        self.rig.clock.wall_s = wall

    async def _pay(self, key: str) -> None:
        self.requests += 1
        answer = await self.rig.pay(key, self.bodies[key])
        self.answers[key].append(answer)

    async def _reopen(self) -> None:
        await self.rig.open()
        assert self.rig.store is not None
        self.quarantined |= set(self.rig.store.report.quarantined)
        if not self.writable:
            await self.rig.set_writable(False)

    async def _rows(self) -> list[Payment]:
        store = self.rig.store
        assert store is not None
        found = []
        for key in self.bodies:
            hit = await store.lookup_idempotency(key)
            if hit is not None:
                found.append(hit[0])
        return found

    def _faulted(self, pid: str, *reasons: str) -> bool:
        return any(f.get("payment_id") == pid and (not reasons or f.get("reason") in reasons)
                   for f in self.rig.faults())

    # rules: the POS

    @rule(target=keys, amount=st.sampled_from(AMOUNTS), fault=st.sampled_from(FAULTS))
    def pay(self, amount: int, fault: str) -> str:
        self.counter += 1
        key = f"k{self.counter}"
        self.bodies[key] = body(amount, exp=(12, 2030))
        self.rig.gateway.next_faults = [fault]
        self.run(self._pay(key))
        self.rig.gateway.next_faults = []
        return key

    @rule(key=keys, fault=st.sampled_from(FAULTS))
    def retry(self, key: str, fault: str) -> None:
        self.rig.gateway.next_faults = [fault]
        self.run(self._pay(key))
        self.rig.gateway.next_faults = []

    @rule(target=keys, amount=st.sampled_from(AMOUNTS),
          reached=st.sampled_from(["never", "processed", "late"]))
    def killed_mid_attempt(self, amount: int, reached: str) -> str:
        """The daemon dies while an online attempt is out; the gateway got the request,
        or not, or gets it later from a proxy. The daemon restarts."""
        self.counter += 1
        key = f"k{self.counter}"
        self.bodies[key] = body(amount, exp=(12, 2030))
        self.run(self._killed(key, reached))
        return key

    async def _killed(self, key: str, reached: str) -> None:
        gw = self.rig.gateway
        gw.arrived.clear()
        gw.gate = asyncio.Event()
        sent = len(gw.sent)
        self.requests += 1
        task = asyncio.ensure_future(self.rig.pay(key, self.bodies[key]))
        arrived = asyncio.ensure_future(gw.arrived.wait())
        await asyncio.wait({task, arrived}, return_when=asyncio.FIRST_COMPLETED)
        gw.gate = None
        if task.done():  # it never went online (offline, or the disk refused it)
            arrived.cancel()
            self.answers[key].append(task.result())
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        attempt = gw.sent[sent]
        request = gw.last_body
        if gw.mode != "ok":  # the request went to a gateway that cannot take it
            reached = "never"
        if reached == "processed":
            gw.in_transit.append((self.rig.clock.monotonic(), attempt.pid, request))
        elif reached == "late":
            gw.in_transit.append((self.rig.clock.monotonic() + gw.late_s, attempt.pid, request))
        gw.deliver()
        await self.rig.close()
        await self._reopen()

    # rules: the box

    @rule()
    def restart(self) -> None:
        self.run(self._restart())

    async def _restart(self) -> None:
        await self.rig.close()
        await self._reopen()

    @rule()
    def kek_missing_then_restored(self) -> None:
        self.run(self._kek_missing())

    async def _kek_missing(self) -> None:
        await self.rig.close()
        saved = self.rig.kek.read_bytes()
        self.rig.kek.unlink()
        with pytest.raises(KeyMaterialError):
            await self.rig.open()
        fd = os.open(self.rig.kek, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as restored:
            restored.write(saved)
        await self._reopen()

    @rule(writable=st.booleans())
    def disk(self, writable: bool) -> None:
        self.writable = writable
        self.run(self.rig.set_writable(writable))

    @rule(hours=st.sampled_from([-6.0, -1.0, 1.0, 6.0]))
    def clock_step(self, hours: float) -> None:
        self._set_wall(self.rig.clock.wall() + hours * 3600)

    @rule()
    def clock_unset(self) -> None:
        self._set_wall(86_400.0 * 50 + (self.rig.clock.monotonic() - self.mono0))

    @rule()
    def clock_set(self) -> None:
        self._set_wall(self._true_wall())

    @rule(mode=st.sampled_from(["ok", "ok", "down", "reject_all", "swallow", "malformed"]))
    def gateway(self, mode: str) -> None:
        self.rig.gateway.mode = mode

    @rule(change=st.sampled_from(["up", "down", "switched"]))
    def uplink(self, change: str) -> None:
        if change == "switched":
            self.rig.uplinks.switched()
        else:
            self.rig.uplinks.set(change)  # type: ignore[arg-type]

    @rule(seconds=st.sampled_from([1.0, 10.0, 65.0, 300.0, 3600.0]))
    def forward(self, seconds: float) -> None:
        self.run(self.rig.run_for(seconds))

    @precondition(lambda self: self.writable)
    @rule()
    def operator_requeues_stuck(self) -> None:
        self.run(self._requeue())

    async def _requeue(self) -> None:
        store = self.rig.store
        assert store is not None
        for row in await self._rows():
            if row.stuck_at is not None:
                await store.requeue(row.id)

    # invariants

    @invariant()
    def exactly_once_so_far(self) -> None:
        self.run(self._check(final=False))

    async def _check(self, final: bool) -> None:
        gw = self.rig.gateway
        rows = {row.id: row for row in await self._rows()}
        for pid, result in gw.stored.items():
            row = rows.get(pid)
            assert row is not None, f"the gateway holds {pid} the box does not know"
            if result.status == "approved" and row.forward_state in CLOSED:
                if row.status in (PaymentStatus.DECLINED, PaymentStatus.DECLINED_OFFLINE) \
                        and not self._faulted(pid, "approved_after_declined",
                                              "approved_after_declined_offline"):
                    raise AssertionError(
                        f"charged but closed as {row.status.value} without a fault: {row}")
                if row.status is PaymentStatus.APPROVED_OFFLINE \
                        and row.forward_state is ForwardState.FORWARDED:
                    assert row.final_status == "approved", row
        for row in rows.values():
            if row.status is PaymentStatus.APPROVED_OFFLINE:
                assert row.forward_state is not ForwardState.NONE, f"dropped: {row}"
                if row.forward_state is ForwardState.DEAD:
                    assert self._faulted(row.id, "payment_dead"), row
                if row.forward_state is ForwardState.FORWARDED:
                    assert gw.stored[row.id].status == row.final_status, row
            if final:
                self._settled(row)
        for key, answers in self.answers.items():
            given = {(a["id"], a["status"]) for a in answers if "status" in a}
            assert len(given) <= 1, f"{key}: different answers {given}"
        self._bounded()

    def _settled(self, row: Payment) -> None:
        gw = self.rig.gateway
        owed = row.status is PaymentStatus.APPROVED_OFFLINE
        if row.stuck_at is not None:
            assert self._faulted(row.id, "payment_stuck"), row
        elif row.quarantined:
            assert row.id in self.quarantined or self._faulted(row.id), row
        elif owed:
            assert row.forward_state in (ForwardState.FORWARDED, ForwardState.DEAD), (
                f"not forwarded after everything healed: {row}")
            if row.forward_state is ForwardState.FORWARDED:
                assert gw.processed[row.id] == 1
        else:
            assert row.status is not PaymentStatus.PENDING, f"unresolved: {row}"
            assert row.forward_state in CLOSED, f"unresolved: {row}"

    def _bounded(self) -> None:
        per: dict[tuple[str, str], list[float]] = defaultdict(list)
        for sent in self.rig.gateway.sent:
            per[(sent.pid, "")].append(sent.mono)
        for (pid, _), times in per.items():
            times.sort()
            for i, start in enumerate(times):
                window = [t for t in times[i:] if t < start + 3600]
                assert len(window) <= MAX_SENDS_PER_HOUR, f"{pid}: {len(window)}/h"
        for reason in LIMITED:  # within one life of the process
            times = [(f["life"], f["mono"]) for f in self.rig.faults(reason)]
            for (la, a), (lb, b) in itertools.pairwise(times):
                assert la != lb or b - a >= 60, f"{reason} twice within {b - a}s"
        minutes = (self.rig.clock.monotonic() - self.mono0) / 60
        assert len(self.rig.events) <= 30 + 8 * self.requests + 2 * minutes, (
            f"{len(self.rig.events)} events for {self.requests} requests in {minutes:.0f} min")

    def teardown(self) -> None:
        try:
            if self.rig.store is not None:
                self.run(self._heal_and_check())
        finally:
            try:
                self.run(self.rig.close())
            finally:
                self.loop.close()
                shutil.rmtree(self.dir, ignore_errors=True)

    async def _heal_and_check(self) -> None:
        self.writable = True
        await self.rig.set_writable(True)
        self._set_wall(self._true_wall())
        self.rig.gateway.mode = "ok"
        self.rig.gateway.next_faults = []
        self.rig.uplinks.set("up")
        self.rig.uplinks.switched()
        await self.rig.run_for(2 * 3600)
        await self._check(final=True)


PaymentsMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("MODEL_EXAMPLES", "300")), stateful_step_count=20,
    deadline=None, database=None, derandomize=True,  # the bench explores at random
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_payments_model = PaymentsMachine.TestCase

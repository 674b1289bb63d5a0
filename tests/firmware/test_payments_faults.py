"""The payments faults a person must fix, through the real daemon; and the upkeep.

Each daemon test starts the box in its own namespace with the gateway simulator, with
one thing wrong (no merchant key, an unreadable seal key, the key provider's credential
missing), checks what the POS, the status, the LED and the events say, then fixes the
file and sends SIGHUP: the box recovers without a restart (same process).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web

import firmware.components.payments
from firmware.components.context import BoxContext
from firmware.components.payments import PaymentsComponent
from firmware.config import load_config_text
from firmware.payment_keys import MerchantGateway
from firmware.state import BoxState
from firmware.tokens import TokenStore
from lab.box import write_secret
from lab.gateway_sim import Faults, GatewaySimulator
from payments_cache.async_store import AsyncStore
from payments_cache.database import DB_NAME
from payments_cache.desk import PaymentsDesk
from payments_cache.keysource import KeySource
from payments_cache.models import Card, GatewayResult, PaymentRequest, StandInDecision
from payments_cache.sealing import SealKey, generate_keypair
from tests.support.box import VISA, Box, eventually, payment_body, pinned_session
from tests.support.clock import ManualClock
from tests.support.daemon import MERCHANT_KEY, DaemonProcess, write_config
from tests.support.netns import inside

DOWN = Faults(down=True, down_mode="refuse")
PROTECTION_FAULTS = {"seal_key_unreadable", "cannot_protect_card"}


# --------------------------------------------------------------------------- helpers


@asynccontextmanager
async def box_with(netns: str, tmp: Path, *, payments: dict[str, Any] | None = None,
                   prepare: Callable[[Path], None] | None = None,
                   env: dict[str, str] | None = None, faults: Faults | None = None,
                   seal_private_keys: tuple[bytes, ...] = ()) -> AsyncIterator[Box]:
    """`tests.support.box.store_box`, with a hook to break a file before the daemon
    starts, an environment for it, and the simulator's seal private keys."""
    with inside(netns):
        sim = GatewaySimulator(MERCHANT_KEY, seed=7, faults=faults,
                               seal_private_keys=seal_private_keys)
        url = await sim.start()
        config = write_config(tmp, gateway_url=url, payments=payments or {})
        if prepare is not None:
            prepare(tmp)
        daemon = DaemonProcess(netns, config, env=env)
        try:
            await asyncio.to_thread(daemon.notify.wait_for, "READY", "1")
            async with pinned_session(daemon.pin) as session:
                yield Box(daemon, sim, session)
        finally:
            code = await asyncio.to_thread(daemon.stop)
            await sim.stop()
        assert code == 0, daemon.log()[-3000:]


async def payments_status(box: Box) -> dict[str, Any]:
    return (await box.status())["payments"]  # type: ignore[no-any-return]


async def until_status(box: Box, check: Callable[[dict[str, Any]], bool], what: str,
                       timeout: float = 15.0) -> dict[str, Any]:
    """Poll /v1/status until `check(status)`; the status that satisfied it."""
    seen: dict[str, Any] = {}

    async def ok() -> bool:
        seen.clear()
        seen.update(await box.status())
        return check(seen)

    try:
        await eventually(ok, timeout=timeout, what=what)
    except AssertionError:
        raise AssertionError(f"timed out waiting for {what}; last status payments="
                             f"{seen.get('payments')}, leds={seen.get('leds')}\n"
                             f"{box.daemon.log()[-3000:]}") from None
    return dict(seen)


def fault_events(status: dict[str, Any], reason: str) -> list[dict[str, Any]]:
    return [e for e in status["recent_events"]
            if e["kind"] == "fault" and e.get("reason") == reason]


@contextlib.contextmanager
def database(tmp: Path) -> Iterator[sqlite3.Connection]:
    """The box's SQLite file, read by a second connection (WAL: sees committed rows)."""
    conn = sqlite3.connect(tmp / "state" / DB_NAME, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


def stored_cards(tmp: Path) -> dict[str, dict[str, Any]]:
    """id -> what the database keeps of each payment's card."""
    with database(tmp) as conn:
        rows = conn.execute("SELECT id, status, decline_reason, card_blob IS NOT NULL AS blob, "
                            "card_sealed IS NOT NULL AS sealed, seal_kid FROM payments")
        return {r["id"]: dict(r) for r in rows}


def files_holding(directory: Path, needle: bytes) -> list[str]:
    return sorted(str(p) for p in directory.rglob("*") if p.is_file() and needle in
                  p.read_bytes())


async def forwarded(box: Box, ids: list[str], timeout: float = 20.0) -> None:
    """Every id forwarded, in the box's view and at the gateway."""
    async def done() -> bool:
        for pid in ids:
            doc = (await box.get(f"/v1/payments/{pid}")).body
            if doc["forwarding"]["state"] != "forwarded":
                return False
        return True

    await eventually(done, timeout=timeout, what=f"{len(ids)} payments forwarded")


#: Luhn-valid test cards, one per payment where several are queued (the per-card
#: velocity rule allows 3 offline approvals per card and window).
PANS = ["4111111111111111", "5555555555554444", "4012888888881881", "5105105105105100",
        "4000056655665556", "5200828282828210"]


async def pay_offline(box: Box, key: str, amount: int = 1000,
                      pan: str = VISA) -> dict[str, Any]:
    answer = await box.pay(payment_body(amount, pan=pan), key=key)
    assert answer.status == 200, answer.body
    return answer.body


def same_process(box: Box, pid: int) -> None:
    assert box.daemon.proc.poll() is None, box.daemon.log()[-2000:]
    assert box.daemon.proc.pid == pid and box.daemon.starts == 1
    assert box.daemon.log().count("serving; device") == 1


# --------------------------------------------------------------------------- no merchant key


async def test_no_merchant_key_stands_in_and_sighup_forwards_without_restart(
        netns: str, tmp_path: Path) -> None:
    key_file = tmp_path / "merchant-key"
    async with box_with(netns, tmp_path, prepare=lambda tmp: key_file.unlink()) as box:
        pid = box.daemon.proc.pid
        status = await until_status(
            box, lambda s: "no_merchant_key" in s["payments"]["faults"]
            and s["leds"].get("alert") == "blink", "the no_merchant_key fault on the LED")
        events = fault_events(status, "no_merchant_key")
        assert len(events) == 1 and events[0]["severity"] == "error"
        assert str(key_file) in events[0]["message"]

        # the gateway is up, but without the key every payment stands in
        ids = []
        for i in range(3):
            body = await pay_offline(box, f"nokey-{i}", 1000 + i)
            assert body["status"] == "approved_offline" and body["mode"] == "offline", body
            ids.append(body["id"])
        await until_status(box, lambda s: s["payments"]["queued"] == 3, "3 queued")
        await box.drain()
        queue = (await box.get("/v1/queue")).body
        assert queue["stats"]["count"] == 3
        assert box.sim.authorizations() == []
        assert box.sim.stats().unauthorized_401 == 0  # nothing sent without the key

        write_secret(key_file, MERCHANT_KEY)
        box.daemon.signal(signal.SIGHUP)
        await forwarded(box, ids)
        status = await until_status(
            box, lambda s: "no_merchant_key" not in s["payments"]["faults"]
            and s["payments"]["queued"] == 0, "the fault cleared and the queue empty")
        assert sorted(a.payment_id for a in box.sim.authorizations()) == sorted(ids)
        stats = box.sim.stats()
        assert all(stats.processed_count(p) == 1 for p in ids), stats.to_json()
        assert stats.processed == 3
        assert status["payments"]["forwarded_total"] == 3
        # no other fault holds the alert LED: it goes out with the fault
        await until_status(box, lambda s: s["leds"].get("alert") == "off", "the alert LED off")
        same_process(box, pid)


# --------------------------------------------------------------------- seal key (file provider)


async def test_unreadable_seal_key_with_the_file_provider_declines_and_keeps_no_card(
        netns: str, tmp_path: Path) -> None:
    private, public = generate_keypair()
    kid = SealKey.from_pem(public).kid
    seal_file = tmp_path / "gateway.pem"
    async with box_with(netns, tmp_path, payments={"seal_key_file": seal_file},
                        faults=DOWN, seal_private_keys=(private,)) as box:
        pid = box.daemon.proc.pid
        status = await until_status(
            box, lambda s: "cannot_protect_card" in s["payments"]["faults"],
            "the cannot_protect_card fault")
        assert status["payments"]["protection"] == "none"
        assert "seal_key_unreadable" not in status["payments"]["faults"]
        assert status["leds"]["alert"] == "blink"
        (event,) = fault_events(status, "cannot_protect_card")
        assert str(seal_file) in event["message"]

        declined = [await pay_offline(box, f"noseal-{i}") for i in range(2)]
        for body in declined:
            assert body["status"] == "declined_offline", body
            assert body["decline_reason"] == "cannot_protect_card"
        rows = stored_cards(tmp_path)
        assert {r["id"] for r in rows.values()} == {b["id"] for b in declined}
        assert all(not r["blob"] and not r["sealed"] and r["seal_kid"] is None
                   for r in rows.values()), rows
        assert files_holding(tmp_path / "state", VISA.encode()) == []

        seal_file.write_bytes(public)
        box.daemon.signal(signal.SIGHUP)
        status = await until_status(
            box, lambda s: not PROTECTION_FAULTS & set(s["payments"]["faults"])
            and s["payments"]["protection"] == "sealed", "sealed again")
        assert status["payments"]["seal_kid"] == kid

        approved = await pay_offline(box, "sealed-again")
        assert approved["status"] == "approved_offline", approved
        row = stored_cards(tmp_path)[approved["id"]]
        assert row["sealed"] and not row["blob"] and row["seal_kid"] == kid

        await box.sim.set_faults(down=False)
        await box.drain()
        await forwarded(box, [approved["id"]])
        stored = box.sim.stored(approved["id"])
        assert stored is not None and stored.seal_kid == kid and stored.last4 == "1111"
        assert box.sim.authorizations() == [stored]  # the declines were never sent
        same_process(box, pid)


def credentials(tmp: Path) -> Path:
    """A $CREDENTIALS_DIRECTORY holding the systemd-creds KEK (raw 32 bytes, 0600)."""
    creds = tmp / "credentials"
    creds.mkdir(mode=0o700)
    kek = creds / "storebox-kek"
    kek.write_bytes(os.urandom(32))
    kek.chmod(0o600)
    return creds


async def test_unreadable_seal_key_with_a_protecting_provider_encrypts_locally(
        netns: str, tmp_path: Path) -> None:
    private, public = generate_keypair()
    kid = SealKey.from_pem(public).kid
    seal_file = tmp_path / "gateway.pem"
    seal_file.write_bytes(b"-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n")
    async with box_with(netns, tmp_path,
                        payments={"key_provider": "systemd-creds", "seal_key_file": seal_file},
                        env={"CREDENTIALS_DIRECTORY": str(credentials(tmp_path))},
                        faults=DOWN, seal_private_keys=(private,)) as box:
        pid = box.daemon.proc.pid
        status = await until_status(
            box, lambda s: "seal_key_unreadable" in s["payments"]["faults"],
            "the seal_key_unreadable fault")
        assert status["payments"]["protection"] == "local"
        assert {"cannot_protect_card", "keys_on_disk"}.isdisjoint(status["payments"]["faults"])
        assert status["leds"]["alert"] == "blink"
        (event,) = fault_events(status, "seal_key_unreadable")
        assert str(seal_file) in event["message"]

        local = await pay_offline(box, "local-1")
        assert local["status"] == "approved_offline", local
        row = stored_cards(tmp_path)[local["id"]]
        assert row["blob"] and not row["sealed"]

        seal_file.write_bytes(public)
        box.daemon.signal(signal.SIGHUP)
        status = await until_status(
            box, lambda s: "seal_key_unreadable" not in s["payments"]["faults"]
            and s["payments"]["protection"] == "sealed", "sealed after SIGHUP")
        assert status["payments"]["seal_kid"] == kid
        sealed = await pay_offline(box, "sealed-1", pan=PANS[1])
        row = stored_cards(tmp_path)[sealed["id"]]
        assert row["sealed"] and not row["blob"] and row["seal_kid"] == kid

        await box.sim.set_faults(down=False)
        await box.drain()
        await forwarded(box, [local["id"], sealed["id"]])
        arrived_local, arrived_sealed = box.sim.stored(local["id"]), box.sim.stored(sealed["id"])
        assert arrived_local is not None and arrived_local.seal_kid is None
        assert arrived_sealed is not None and arrived_sealed.seal_kid == kid
        await until_status(box, lambda s: s["leds"].get("alert") == "off", "the alert LED off")
        same_process(box, pid)


# --------------------------------------------------------------------------- seal key rotation


@asynccontextmanager
async def rotating_box(netns: str, tmp: Path, sim_keys: str
                       ) -> AsyncIterator[tuple[Box, dict[str, list[str]], str, str]]:
    """A box whose seal key is rotated from A to B by SIGHUP while the gateway is down,
    with two payments queued under each; the simulator holds `sim_keys` ("AB" or "B")."""
    priv_a, pub_a = generate_keypair()
    priv_b, pub_b = generate_keypair()
    kid_a, kid_b = SealKey.from_pem(pub_a).kid, SealKey.from_pem(pub_b).kid
    private = {"A": priv_a, "B": priv_b}
    seal_file = tmp / "gateway.pem"
    seal_file.write_bytes(pub_a)
    async with box_with(netns, tmp, payments={"seal_key_file": seal_file}, faults=DOWN,
                        seal_private_keys=tuple(private[k] for k in sim_keys)) as box:
        await until_status(box, lambda s: s["payments"]["seal_kid"] == kid_a, "sealed to A")
        ids: dict[str, list[str]] = {kid_a: [], kid_b: []}
        for i in range(2):
            ids[kid_a].append((await pay_offline(box, f"a-{i}", 1000 + i, PANS[i]))["id"])
        seal_file.write_bytes(pub_b)
        box.daemon.signal(signal.SIGHUP)
        status = await until_status(box, lambda s: s["payments"]["seal_kid"] == kid_b,
                                    "sealed to B after SIGHUP")
        assert status["payments"]["protection"] == "sealed"
        assert not PROTECTION_FAULTS & set(status["payments"]["faults"])
        for i in range(2):
            ids[kid_b].append((await pay_offline(box, f"b-{i}", 2000 + i, PANS[2 + i]))["id"])
        rows = stored_cards(tmp)
        for kid, pids in ids.items():
            for pid in pids:
                assert rows[pid]["status"] == "approved_offline"
                assert rows[pid]["sealed"] and not rows[pid]["blob"], rows[pid]
                assert rows[pid]["seal_kid"] == kid
        yield box, ids, kid_a, kid_b


async def test_seal_key_rotated_by_sighup_old_rows_still_forward(
        netns: str, tmp_path: Path) -> None:
    async with rotating_box(netns, tmp_path, "AB") as (box, ids, kid_a, kid_b):
        pid = box.daemon.proc.pid
        await box.sim.set_faults(down=False)
        await box.drain()
        every = ids[kid_a] + ids[kid_b]
        await forwarded(box, every)
        stats = box.sim.stats()
        for kid, pids in ids.items():
            for payment_id in pids:
                stored = box.sim.stored(payment_id)
                assert stored is not None and stored.seal_kid == kid
                assert stored.result.status == "approved"
                assert stats.processed_count(payment_id) == 1
        assert stats.card_refused_422 == 0
        same_process(box, pid)


async def test_seal_key_rotation_when_the_gateway_dropped_the_old_key(
        netns: str, tmp_path: Path) -> None:
    """The gateway holds only B: A's rows are refused 422 (unknown kid). What the box
    does: each is looked up (404), then marked dead and reported with a `fault` event
    `payment_dead`; B's rows forward. The dead rows count in payments.dead; they are
    not in payments.faults (those are the component's standing faults)."""
    async with rotating_box(netns, tmp_path, "B") as (box, ids, kid_a, kid_b):
        await box.sim.set_faults(down=False)
        await box.drain()
        await forwarded(box, ids[kid_b])

        async def a_dead() -> bool:
            states = [(await box.get(f"/v1/payments/{p}")).body["forwarding"]["state"]
                      for p in ids[kid_a]]
            return states == ["dead"] * len(states)

        await eventually(a_dead, what="A's rows dead")
        stats = box.sim.stats()
        assert stats.card_refused_422 >= 2
        assert all(box.sim.stored(p) is None for p in ids[kid_a])
        status = await until_status(box, lambda s: s["payments"]["dead"] == 2, "2 dead")
        dead_events = fault_events(status, "payment_dead")
        assert sorted(e["payment_id"] for e in dead_events) == sorted(ids[kid_a])
        assert all(e["status"] == 422 for e in dead_events)
        assert status["payments"]["queued"] == 0


# --------------------------------------------------------------------------- key provider


async def test_key_provider_unavailable_then_credential_and_sighup_opens_the_store(
        netns: str, tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)  # empty: the credential is not loaded
    async with box_with(netns, tmp_path, payments={"key_provider": "systemd-creds"},
                        env={"CREDENTIALS_DIRECTORY": str(creds)}, faults=DOWN) as box:
        pid = box.daemon.proc.pid
        status = await until_status(
            box, lambda s: "key_provider_unavailable" in s["payments"]["faults"],
            "the key_provider_unavailable fault")
        assert status["leds"]["alert"] == "blink"
        (event,) = fault_events(status, "key_provider_unavailable")
        assert "storebox-kek" in event["message"]

        first = payment_body()
        answer = await box.pay(first, key="closed-1")
        assert answer.status == 200
        assert answer.body["status"] == "declined_offline"
        assert answer.body["mode"] == "offline"
        assert answer.body["decline_reason"] == "cannot_protect_card"
        assert answer.body["card"] == {"brand": "visa", "last4": "1111"}
        # docs/openapi.json: the same key and body get the first answer again, another body 409
        again = await box.pay(first, key="closed-1")
        assert again.status == 200 and again.body == answer.body
        other = await box.pay({**first, "amount": 777}, key="closed-1")
        assert other.status == 409 and other.body["error"]["code"] == "idempotency_conflict"
        bad = await box.pay(b"{not json", key="closed-2")
        assert bad.status == 400
        queue = await box.get("/v1/queue")
        assert queue.status == 503 and queue.body["error"]["code"] == "keys_unavailable"
        assert box.sim.authorizations() == []
        assert not (tmp_path / "state" / DB_NAME).exists() or stored_cards(tmp_path) == {}

        kek = creds / "storebox-kek"
        kek.write_bytes(os.urandom(32))
        kek.chmod(0o600)
        box.daemon.signal(signal.SIGHUP)
        status = await until_status(
            box, lambda s: "key_provider_unavailable" not in s["payments"]["faults"]
            and s["payments"]["key_provider"] == "systemd-creds", "the store open")
        assert status["payments"]["protection"] == "local"
        assert "keys_on_disk" not in status["payments"]["faults"]
        queue = await box.get("/v1/queue")
        assert queue.status == 200 and queue.body["stats"]["count"] == 0

        # a retry of the payment declined while closed is still that decline
        retried = await box.pay(first, key="closed-1")
        assert retried.status == 200 and retried.body == answer.body
        offline = await pay_offline(box, "open-1")
        assert offline["status"] == "approved_offline", offline
        row = stored_cards(tmp_path)[offline["id"]]
        assert row["blob"] and not row["sealed"]
        await box.sim.set_faults(down=False)
        await box.drain()
        await forwarded(box, [offline["id"]])
        assert box.sim.stats().processed_count(offline["id"]) == 1
        await until_status(box, lambda s: s["leds"].get("alert") == "off", "the alert LED off")
        same_process(box, pid)


# --------------------------------------------------------------------------- upkeep


DAY = 86_400.0


def request(i: int, amount: int) -> PaymentRequest:
    return PaymentRequest(amount=amount, currency="KRW",
                          card=Card(VISA, 12, 2030, cvc="123"),
                          terminal_id="pos-1", reference=f"order-{i}")


@pytest.fixture
async def upkeep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                 ) -> AsyncIterator[tuple[PaymentsComponent, ManualClock, Path]]:
    """The payments component as the daemon builds it (file provider), its store on an
    injected clock."""
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    clock = ManualClock()
    config = load_config_text(f"""\
[device]
id = "store-test"
state_dir = "{state_dir}"
[payments]
gateway_url = "http://127.0.0.1:9"
allow_insecure_gateway = true
merchant_key_file = "{tmp_path / 'no-merchant-key'}"
velocity_window_s = 3600
retention_days = 2
key_cryptoperiod_days = 30
""")

    class ClockedStore(AsyncStore):
        @classmethod
        async def open(cls, directory: str | Path, keys: KeySource,
                       **options: Any) -> AsyncStore:
            return await AsyncStore.open(directory, keys, wall=clock.wall,
                                         monotonic=clock.monotonic, **options)

    monkeypatch.setattr(firmware.components.payments, "AsyncStore", ClockedStore)
    state = BoxState(config.device.id, "test")
    tokens = tmp_path / "tokens"
    write_secret(tokens, "token-0123456789")
    context = BoxContext(config, state, TokenStore(str(tokens)), web.Application())
    gateway = MerchantGateway(config.payments.gateway_url, config.payments.merchant_key_file)
    component = PaymentsComponent(context, gateway, PaymentsDesk())
    assert await component.open()
    try:
        yield component, clock, state_dir
    finally:
        for closer in reversed(context.closers):
            await closer()
        await gateway.close()


def active_keys(state_dir: Path) -> dict[str, str]:
    conn = sqlite3.connect(state_dir / DB_NAME)
    try:
        return dict(conn.execute("SELECT purpose, key_id FROM keys WHERE state = 'active'"))
    finally:
        conn.close()


def payment_rows(state_dir: Path) -> dict[str, tuple[Any, ...]]:
    conn = sqlite3.connect(state_dir / DB_NAME)
    try:
        return {r[0]: tuple(r[1:]) for r in conn.execute(
            "SELECT id, status, forward_state, fingerprint IS NOT NULL, "
            "card_blob IS NOT NULL FROM payments")}
    finally:
        conn.close()


async def test_upkeep_erases_fingerprints_purges_settled_rows_and_rotates_keys(
        upkeep: tuple[PaymentsComponent, ManualClock, Path]) -> None:
    component, clock, state_dir = upkeep
    store = component.store
    assert store is not None
    kek1, kek2 = state_dir / "kek", state_dir / "kek.2"
    assert kek1.exists() and not kek2.exists()

    # at T0: one online approval, one offline approval still owed, one forwarded
    online = await store.begin_online("k-online", request(1, 1000))
    await store.settle_online(online.id, GatewayResult("approved", auth_code="A1"))
    owed = await store.begin_online("k-owed", request(2, 2000))
    owed = await store.stand_in(owed.id, StandInDecision(approved=True))
    sent = await store.begin_online("k-sent", request(3, 4000))
    sent = await store.stand_in(sent.id, StandInDecision(approved=True))
    assert await store.record_forward_result(sent.id, GatewayResult("approved", "A3"),
                                             expect=sent) is not None
    keys_at_start = active_keys(state_dir)
    rows = payment_rows(state_dir)
    assert all(r[2] for r in rows.values())  # every row fingerprinted

    # inside the velocity window: nothing erased
    clock.advance(3599)
    await component.upkeep_once()
    assert all(r[2] for r in payment_rows(state_dir).values())

    # after the window: fingerprints erased, rows kept (retention 2 days)
    clock.advance(2)
    await component.upkeep_once()
    rows = payment_rows(state_dir)
    assert set(rows) == {online.id, owed.id, sent.id}
    assert not any(r[2] for r in rows.values())
    assert rows[owed.id][3]  # the owed card is still kept for forwarding
    assert await store.settled_totals() == []

    # after the retention: the settled rows folded into settled_totals, the owed one kept
    clock.advance(2 * DAY)
    await component.upkeep_once()
    rows = payment_rows(state_dir)
    assert set(rows) == {owed.id}
    totals = await store.settled_totals()
    assert {(t["status"], t["final_status"], t["count"], t["amount"]) for t in totals} == {
        ("approved", "approved", 1, 1000), ("approved_offline", "approved", 1, 4000)}
    assert active_keys(state_dir) == keys_at_start  # before the cryptoperiod: no rotation
    assert kek1.exists() and not kek2.exists()
    assert not [e for e in component.state.events.recent() if e.kind == "keys_rotated"]

    # after the cryptoperiod: new data and HMAC keys, a new KEK, the old KEK destroyed
    clock.advance(30 * DAY)
    await component.upkeep_once()
    rotated = active_keys(state_dir)
    assert rotated["data"] != keys_at_start["data"]
    assert rotated["hmac"] != keys_at_start["hmac"]
    assert kek2.exists() and not kek1.exists()
    assert (kek2.stat().st_mode & 0o777) == 0o600
    (event,) = [e for e in component.state.events.recent() if e.kind == "keys_rotated"]
    assert "cryptoperiod" in event.message and "KEK rotated" in event.message
    # the owed card still opens (re-encrypted under the new key, KEK re-wrapped)
    card = await store.card_for_forwarding(owed.id)
    assert getattr(card, "pan", None) == VISA
    # the new key is young: the next upkeep does not rotate again
    await component.upkeep_once()
    assert active_keys(state_dir) == rotated
    assert not (state_dir / "kek.3").exists()


# --------------------------------------------------------------------------- the desk


class FakeService:
    def __init__(self) -> None:
        self.calls: list[str | None] = []

    async def submit(self, idempotency_key: str | None, body: bytes) -> dict[str, Any]:
        self.calls.append(idempotency_key)
        return {"id": "pay_from_service", "status": "approved"}


async def test_the_desk_keeps_the_idempotency_promise_while_closed_and_after() -> None:
    import json

    from payments_cache.errors import InvalidRequest
    from payments_cache.service import IdempotencyConflict, PaymentService

    desk = PaymentsDesk()
    body = json.dumps(payment_body(reference="order-desk")).encode()
    first = await desk.submit("k1", body)
    assert first["status"] == "declined_offline"
    assert first["decline_reason"] == "cannot_protect_card"
    assert await desk.submit("k1", body) == first
    with pytest.raises(IdempotencyConflict):
        await desk.submit("k1", json.dumps(payment_body(reference="order-other")).encode())
    with pytest.raises(InvalidRequest):
        await desk.submit(None, body)
    second = await desk.submit("k2", body)
    assert second["id"] != first["id"]

    service = FakeService()
    desk.service = cast(PaymentService, service)
    assert await desk.submit("k1", body) == first  # the first answer, not a new payment
    assert (await desk.submit("k3", body))["id"] == "pay_from_service"
    assert service.calls == ["k3"]

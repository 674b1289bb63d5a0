"""The POS API end to end: the real daemon in a namespace, the gateway simulator, HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.box import MASTERCARD, VISA, Box, eventually, payment_body, store_box


@pytest.fixture
async def box(netns: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    async with store_box(netns, tmp_path) as b:
        yield b


async def test_online_approval_and_replay(box: Box) -> None:
    body = payment_body(12500)
    first = await box.pay(body, key="k-online-1")
    assert first.status == 200
    doc = first.body
    assert doc["status"] == "approved" and doc["mode"] == "online"
    assert doc["id"].startswith("pay_") and doc["auth_code"]
    assert doc["card"] == {"brand": "visa", "last4": "1111"}
    assert doc["amount"] == 12500 and doc["currency"] == "KRW"
    again = await box.pay(body, key="k-online-1")
    assert again.status == 200 and again.body == doc
    assert box.sim.processed_count(doc["id"]) == 1
    assert box.sim.stats().replays == 0  # the box answered the replay itself
    got = await box.get(f"/v1/payments/{doc['id']}")
    assert got.status == 200
    assert got.body["status"] == "approved" and got.body["forwarding"] is None


async def test_same_key_different_body_is_409(box: Box) -> None:
    assert (await box.pay(payment_body(1000), key="k-409")).status == 200
    conflict = await box.pay(payment_body(2000), key="k-409")
    assert conflict.status == 409
    assert conflict.body["error"]["code"] == "idempotency_conflict"
    assert box.sim.stats().processed == 1


async def test_declined_online(box: Box) -> None:
    box.sim.set_rules(decline_amounts=frozenset({666}))
    answer = await box.pay(payment_body(666), key="k-decline")
    assert answer.body["status"] == "declined" and answer.body["mode"] == "online"
    assert answer.body["decline_reason"] == "insufficient_funds"


@pytest.mark.parametrize(("mutate", "code", "field"), [
    (lambda b: b["card"].update(pan="4111111111111112"), "invalid_pan", "card.pan"),
    (lambda b: b.update(amount=0), "invalid_amount", "amount"),
    (lambda b: b.update(amount=12.5), "invalid_amount", "amount"),
    (lambda b: b.update(currency="XYZ"), "invalid_currency", "currency"),
    (lambda b: b.update(tip=100), "unknown_field", "tip"),
    (lambda b: b["card"].update(exp_year=2020), "card_expired", "card.exp_year"),
    (lambda b: b.pop("amount"), "missing_field", "amount"),
])
async def test_bad_input_is_400_naming_the_field(box: Box, mutate, code: str,  # type: ignore[no-untyped-def]
                                                 field: str) -> None:
    body = payment_body()
    mutate(body)
    answer = await box.pay(body, key="k-bad")
    assert answer.status == 400, answer.body
    assert answer.body["error"]["code"] == code
    assert answer.body["error"]["field"] == field
    assert VISA not in answer.body["error"]["message"]
    assert box.sim.stats().requests == 0
    assert "4111111111111112" not in box.daemon.log()


async def test_missing_idempotency_key_and_oversized_body(box: Box) -> None:
    missing = await box.pay(payment_body())
    assert missing.status == 400
    assert missing.body["error"]["field"] == "Idempotency-Key"
    huge = await box.pay(b"{" + b" " * 20000 + b"}", key="k-huge")
    assert huge.status == 400 and huge.body["error"]["code"] == "body_too_large"


async def test_401_without_or_with_a_wrong_token(box: Box) -> None:
    for token in ("", "nope"):
        answer = await box.pay(payment_body(), key="k-401", token=token)
        assert answer.status == 401
    assert box.sim.stats().requests == 0


async def test_offline_approval_is_forwarded_exactly_once(box: Box) -> None:
    await box.sim.set_faults(down=True, down_mode="refuse")
    body = payment_body(30000, pan=MASTERCARD)
    answer = await box.pay(body, key="k-off-1")
    assert answer.status == 200
    doc = answer.body
    assert doc["status"] == "approved_offline" and doc["mode"] == "offline"
    assert doc["auth_code"] is None
    detail = (await box.get(f"/v1/payments/{doc['id']}")).body
    assert detail["forwarding"]["state"] == "queued"
    status = await box.status()
    assert status["payments"]["queued"] == 1
    assert status["payments"]["queued_amount"] == 30000

    await box.sim.set_faults(down=False)
    await box.drain()
    await box.sim.wait_stored(doc["id"])

    async def forwarded() -> bool:
        d = (await box.get(f"/v1/payments/{doc['id']}")).body
        return d["forwarding"]["state"] == "forwarded"  # type: ignore[no-any-return]

    await eventually(forwarded, what="the payment to be forwarded")
    detail = (await box.get(f"/v1/payments/{doc['id']}")).body
    assert detail["forwarding"]["final_status"] == "approved"
    assert detail["status"] == "approved_offline"  # what the POS was told never changes
    assert box.sim.processed_count(doc["id"]) == 1
    stored = box.sim.stored(doc["id"])
    assert stored is not None and stored.offline is True
    assert (await box.pay(body, key="k-off-1")).body == doc

    async def counted() -> bool:
        s = await box.status()
        return s["payments"]["queued"] == 0 and s["payments"]["forwarded_total"] == 1  # type: ignore[no-any-return]

    await eventually(counted, what="the status to show the forward")
    kinds = [e["kind"] for e in (await box.status())["recent_events"]]
    assert "offline_mode" in kinds and "queue_drained" in kinds


async def test_gateway_declines_an_offline_approval(box: Box) -> None:
    await box.sim.set_faults(down=True, down_mode="refuse")
    box.sim.set_rules(decline_amounts=frozenset({4321}))
    doc = (await box.pay(payment_body(4321), key="k-dao")).body
    assert doc["status"] == "approved_offline"
    await box.sim.set_faults(down=False)
    await box.drain()

    async def declined() -> bool:
        s = await box.status()
        return s["payments"]["declined_after_offline_total"] == 1  # type: ignore[no-any-return]

    await eventually(declined, what="declined_after_offline to be counted")
    detail = (await box.get(f"/v1/payments/{doc['id']}")).body
    assert detail["forwarding"] == {"state": "forwarded", "final_status": "declined",
                                    "auth_code": None, "decline_code": "insufficient_funds",
                                    "attempts": detail["forwarding"]["attempts"]}
    events = (await box.status())["recent_events"]
    assert any(e["kind"] == "declined_after_offline" for e in events)


async def test_lost_online_answer_is_resolved_never_charged_twice(box: Box) -> None:
    await box.sim.set_faults(drop_answers=1.0)
    doc = (await box.pay(payment_body(7000), key="k-lost")).body
    assert doc["status"] == "approved_offline"
    assert box.sim.processed_count(doc["id"]) == 1  # the gateway did take it
    await box.sim.set_faults(drop_answers=0.0)
    await box.drain()

    async def resolved() -> bool:
        d = (await box.get(f"/v1/payments/{doc['id']}")).body
        return d["forwarding"]["state"] == "forwarded"  # type: ignore[no-any-return]

    await eventually(resolved, what="the lost answer to be resolved")
    stats = box.sim.stats()
    assert box.sim.processed_count(doc["id"]) == 1
    assert stats.conflicts_422 == 0
    assert stats.lookups >= 1


async def test_offline_risk_limit_declines_with_a_reason(box: Box) -> None:
    await box.sim.set_faults(down=True, down_mode="refuse")
    doc = (await box.pay(payment_body(50001), key="k-big")).body
    assert doc["status"] == "declined_offline"
    assert doc["decline_reason"] == "amount_over_limit"
    detail = (await box.get(f"/v1/payments/{doc['id']}")).body
    assert detail["forwarding"] is None


async def test_queue_view_shows_masked_cards_only(box: Box) -> None:
    await box.sim.set_faults(down=True, down_mode="refuse")
    for i in range(3):
        assert (await box.pay(payment_body(1000 + i), key=f"k-q{i}")).body["status"] == \
            "approved_offline"
    queue = (await box.get("/v1/queue")).body
    assert queue["stats"]["count"] == 3 and queue["stats"]["amount"] == 3003
    assert [p["amount"] for p in queue["payments"]] == [1000, 1001, 1002]
    assert all(p["card"] == "…1111" for p in queue["payments"])
    assert VISA not in str(queue)


async def test_no_card_number_or_cvc_in_logs_or_state_dir(box: Box, tmp_path: Path) -> None:
    await box.sim.set_faults(drop_answers=0.5)
    for i in range(6):
        await box.pay(payment_body(2000 + i, pan=MASTERCARD, cvc="8642"), key=f"k-scan{i}")
    await box.sim.set_faults(down=True, down_mode="refuse")
    for i in range(4):
        await box.pay(payment_body(3000 + i, pan=MASTERCARD, cvc="8642"), key=f"k-scan-off{i}")
    log = box.daemon.log()
    assert MASTERCARD not in log and "5555 5555 5555 4444" not in log
    assert "8642" not in log
    files = [p for p in (tmp_path / "state").rglob("*") if p.is_file()]
    assert any(p.name.endswith("-wal") for p in files) or files
    for path in files:
        data = path.read_bytes()
        assert MASTERCARD.encode() not in data, path
        assert b"8642" not in data, path  # 4 bytes: a chance hit in ciphertext is ~1e-5

"""The gateway simulator's side of sealed cards (docs/gateway-protocol.md), over real
HTTP on loopback:
it opens ``card_sealed`` with its private keys and decides on the opened card."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from lab.gateway_sim import DeclineRules, GatewaySimulator, main
from payments_cache.models import Card
from payments_cache.sealing import (
    INFO,
    SealedCard,
    SealKey,
    SealOpener,
    generate_keypair,
    hpke_seal,
    seal_card,
)

KEY = "mk_test_9f2c41d7"
PAN = "4111111111111111"
CARD = Card(pan=PAN, exp_month=12, exp_year=2030)
PID = "pay_s001"

PRIVATE_PEM, PUBLIC_PEM = generate_keypair()
SEAL_KEY = SealKey.from_pem(PUBLIC_PEM)


def sealed_body(payment_id: str = PID, *, seal_of: Card = CARD, key: SealKey = SEAL_KEY,
                sealed: SealedCard | None = None, **changes: Any) -> dict[str, Any]:
    if sealed is None:
        sealed = seal_card(key, payment_id, seal_of)
    body: dict[str, Any] = {
        "payment_id": payment_id, "amount": 12500, "currency": "KRW",
        "card_sealed": sealed.to_json(),
        "terminal_id": "pos-1", "reference": "order-991", "merchant_id": "merchant-7",
        "offline": True, "captured_at": "2025-05-01T10:00:00.000+00:00",
    }
    body.update(changes)
    return body


async def post(http: aiohttp.ClientSession, url: str,
               body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {KEY}", "Idempotency-Key": body["payment_id"]}
    async with http.post(f"{url}/v1/authorizations", json=body, headers=headers) as resp:
        return resp.status, await resp.json()


@pytest.fixture
async def sim() -> AsyncIterator[GatewaySimulator]:
    async with GatewaySimulator(KEY, seed=3, seal_private_keys=[PRIVATE_PEM]) as simulator:
        yield simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_sealed_card_is_opened_and_approved(sim: GatewaySimulator,
                                                  http: aiohttp.ClientSession) -> None:
    status, data = await post(http, sim.url, sealed_body())
    assert status == 200 and data["status"] == "approved"
    stored = sim.stored(PID)
    assert stored is not None
    assert (stored.last4, stored.seal_kid, stored.offline) == ("1111", SEAL_KEY.kid, True)
    assert sim.processed_count(PID) == 1
    async with http.get(f"{sim.url}/_sim/authorizations") as resp:
        listing = await resp.json()
    assert listing["authorizations"][0]["seal_kid"] == SEAL_KEY.kid
    assert PAN not in str(listing)


@pytest.mark.parametrize(("card", "rules", "decline_code"), [
    (Card(pan="4111111111111112", exp_month=12, exp_year=2030), DeclineRules(),
     "invalid_card"),
    (Card(pan=PAN, exp_month=4, exp_year=2025), DeclineRules(), "expired_card"),
    (CARD, DeclineRules(decline_pans=frozenset({PAN})), "card_declined"),
])
async def test_decline_rules_apply_to_the_opened_card(
        sim: GatewaySimulator, http: aiohttp.ClientSession, card: Card,
        rules: DeclineRules, decline_code: str) -> None:
    sim.set_rules(rules)
    status, data = await post(http, sim.url, sealed_body(seal_of=card))
    assert status == 200
    assert (data["status"], data["decline_code"]) == ("declined", decline_code)


async def test_same_sealed_bytes_replay(sim: GatewaySimulator,
                                        http: aiohttp.ClientSession) -> None:
    body = sealed_body()
    first = await post(http, sim.url, body)
    # Key order does not matter; the bytes are what counts.
    reordered = dict(reversed(list(body.items())))
    reordered["card_sealed"] = dict(reversed(list(body["card_sealed"].items())))
    second = await post(http, sim.url, reordered)
    assert first == second
    stats = sim.stats()
    assert (stats.processed, stats.replays, stats.conflicts_422) == (1, 1, 0)


async def test_a_fresh_seal_of_the_same_card_is_a_different_body(
        sim: GatewaySimulator, http: aiohttp.ClientSession) -> None:
    status, _ = await post(http, sim.url, sealed_body())
    assert status == 200
    status, data = await post(http, sim.url, sealed_body())  # same card, new enc and ct
    assert status == 422
    assert data["error"]["code"] == "idempotency_conflict"
    stats = sim.stats()
    assert (stats.processed, stats.conflicts_422) == (1, 1)
    assert sim.stored(PID) is not None


async def test_unknown_kid_is_422_and_stores_nothing(sim: GatewaySimulator,
                                                     http: aiohttp.ClientSession) -> None:
    _, other_public = generate_keypair()
    status, data = await post(http, sim.url, sealed_body(key=SealKey.from_pem(other_public)))
    assert status == 422
    assert data["error"]["code"] == "unknown_kid"
    assert data["error"]["field"] == "card_sealed"
    assert sim.stored(PID) is None
    stats = sim.stats()
    assert (stats.processed, stats.card_refused_422, stats.conflicts_422) == (0, 1, 0)
    # Nothing was stored: the same payment, sealed to the right key, goes through.
    status, data = await post(http, sim.url, sealed_body())
    assert status == 200 and data["status"] == "approved"


async def test_card_sealed_for_another_payment_is_422(sim: GatewaySimulator,
                                                      http: aiohttp.ClientSession) -> None:
    moved = seal_card(SEAL_KEY, "pay_other", CARD)
    status, data = await post(http, sim.url, sealed_body(sealed=moved))
    assert status == 422
    assert data["error"]["code"] == "authentication_failed"
    assert sim.stored(PID) is None and sim.stats().card_refused_422 == 1


async def test_opened_plaintext_that_is_no_valid_card_is_422(
        sim: GatewaySimulator, http: aiohttp.ClientSession) -> None:
    plaintext = b'{"exp_month":13,"exp_year":2030,"pan":"4111111111111111"}'
    enc, ct = hpke_seal(SEAL_KEY.public_key, plaintext, info=INFO, aad=PID.encode())
    sealed = SealedCard(kid=SEAL_KEY.kid, enc=enc, ct=ct)
    status, data = await post(http, sim.url, sealed_body(sealed=sealed))
    assert status == 422
    assert data["error"]["code"] == "bad_plaintext"
    assert "exp_month" in data["error"]["message"]
    assert PAN not in str(data)


@pytest.mark.parametrize(("changes", "field", "message"), [
    ({"offline": False}, "card_sealed", "only offline"),
    ({"card": {"pan": PAN, "exp_month": 12, "exp_year": 2030}}, "card_sealed", "exactly one"),
    ({"card_sealed": None}, "card", "must be an object"),
    ({"card_sealed": "abc"}, "card_sealed", "must be an object"),
    ({"card_sealed": {"kid": SEAL_KEY.kid, "enc": "AA"}}, "card_sealed", "missing field"),
    ({"card_sealed": {"kid": SEAL_KEY.kid, "enc": "!!", "ct": "AA"}}, "card_sealed",
     "enc is not base64url"),
    ({"card_hint": {"brand": "visa"}}, "card_hint", "brand, last4"),
    ({"card_hint": {"brand": "visa", "last4": "11a1"}}, "card_hint.last4", "4 digits"),
    ({"card_hint": {"brand": "", "last4": "1111"}}, "card_hint.brand", "non-empty"),
])
async def test_malformed_sealed_requests_are_400(sim: GatewaySimulator,
                                                 http: aiohttp.ClientSession,
                                                 changes: dict[str, Any], field: str,
                                                 message: str) -> None:
    status, data = await post(http, sim.url, sealed_body(**changes))
    assert status == 400
    assert data["error"]["field"] == field
    assert message in data["error"]["message"]
    assert PAN not in str(data)
    stats = sim.stats()
    assert (stats.processed, stats.bad_request_400) == (0, 1)


async def test_card_hint_must_match_the_opened_card(sim: GatewaySimulator,
                                                    http: aiohttp.ClientSession) -> None:
    status, data = await post(http, sim.url, sealed_body(
        card_hint={"brand": "visa", "last4": "1111"}))
    assert status == 200 and data["status"] == "approved"
    for hint in ({"brand": "visa", "last4": "4444"}, {"brand": "mastercard", "last4": "1111"}):
        status, data = await post(http, sim.url, sealed_body("pay_s002", card_hint=hint))
        assert status == 422
        assert (data["error"]["code"], data["error"]["field"]) == (
            "card_hint_mismatch", "card_hint")
    assert sim.stored("pay_s002") is None


async def test_plain_cards_still_work_next_to_sealed_ones(
        sim: GatewaySimulator, http: aiohttp.ClientSession) -> None:
    body = sealed_body("pay_plain", card={"pan": PAN, "exp_month": 12, "exp_year": 2030},
                       offline=False)
    del body["card_sealed"]
    body["card"]["cvc"] = "123"
    status, data = await post(http, sim.url, body)
    assert status == 200 and data["status"] == "approved"
    stored = sim.stored("pay_plain")
    assert stored is not None and stored.seal_kid is None


async def test_several_keys_and_a_shared_opener_for_rotation(
        http: aiohttp.ClientSession) -> None:
    old = X25519PrivateKey.generate()
    new_private, new_public = generate_keypair()
    opener = SealOpener([old])
    async with GatewaySimulator(KEY, seal_opener=opener) as sim:
        old_key = SealKey.from_public_key(old.public_key())
        assert (await post(http, sim.url, sealed_body("pay_old", key=old_key)))[0] == 200
        new_key = SealKey.from_pem(new_public)
        status, data = await post(http, sim.url, sealed_body("pay_new", key=new_key))
        assert (status, data["error"]["code"]) == (422, "unknown_kid")
        opener.add_private_key(new_private)  # the gateway rolls out its new key
        assert sim.seal_opener.kids == {old_key.kid, new_key.kid}
        assert (await post(http, sim.url, sealed_body("pay_new", key=new_key)))[0] == 200


async def test_without_seal_keys_every_sealed_card_is_unknown_kid(
        http: aiohttp.ClientSession) -> None:
    async with GatewaySimulator(KEY) as sim:
        status, data = await post(http, sim.url, sealed_body())
    assert (status, data["error"]["code"]) == (422, "unknown_kid")


async def test_no_card_number_in_logs(caplog: pytest.LogCaptureFixture,
                                      sim: GatewaySimulator,
                                      http: aiohttp.ClientSession) -> None:
    caplog.set_level(logging.DEBUG)
    await post(http, sim.url, sealed_body())
    await post(http, sim.url, sealed_body(sealed=seal_card(SEAL_KEY, "pay_x", CARD)))
    await post(http, sim.url, sealed_body("pay_h", card_hint={"brand": "visa",
                                                              "last4": "9999"}))
    assert PID in caplog.text and "authentication_failed" in caplog.text
    assert PAN not in caplog.text


def test_cli_refuses_a_bad_seal_key_naming_it(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "merchant-key"
    key_file.write_text(KEY)
    public = tmp_path / "seal.pub"
    public.write_bytes(PUBLIC_PEM)
    for path in (tmp_path / "absent.key", public):
        with pytest.raises(SystemExit) as exited:
            main(["--merchant-key-file", str(key_file), "--seal-private-key", str(path)])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert "--seal-private-key" in err and repr(str(path)) in err


async def test_cli_opens_sealed_cards_with_its_keys(tmp_path: Path) -> None:
    key_file = tmp_path / "merchant-key"
    key_file.write_text(KEY)
    other_private, other_public = generate_keypair()
    paths = []
    for name, pem in (("a.key", PRIVATE_PEM), ("b.key", other_private)):
        paths += ["--seal-private-key", str(tmp_path / name)]
        (tmp_path / name).write_bytes(pem)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lab.gateway_sim", "--listen", "127.0.0.1:0",
        "--merchant-key-file", str(key_file), *paths,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        match = re.fullmatch(r"gateway_sim listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, line
        url = match.group(1)
        async with aiohttp.ClientSession() as http:
            for pid, public in (("pay_a", PUBLIC_PEM), ("pay_b", other_public)):
                status, data = await post(http, url, sealed_body(
                    pid, key=SealKey.from_pem(public)))
                assert status == 200 and data["status"] == "approved"
            _, unknown_public = generate_keypair()
            status, data = await post(http, url, sealed_body(
                "pay_c", key=SealKey.from_pem(unknown_public)))
            assert (status, data["error"]["code"]) == (422, "unknown_kid")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

"""The gateway simulator (docs/gateway-protocol.md) over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import signal
import sys
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lab.gateway_sim import DeclineRules, Faults, GatewaySimulator, main

KEY = "mk_test_9f2c41d7"
PAN = "4111111111111111"
MASTERCARD = "5555555555554444"


def auth_body(payment_id: str = "pay_0001", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "payment_id": payment_id, "amount": 12500, "currency": "KRW",
        "card": {"pan": PAN, "exp_month": 12, "exp_year": 2030},
        "terminal_id": "pos-1", "reference": "order-991", "merchant_id": "merchant-7",
        "offline": True, "captured_at": "2025-05-01T10:00:00.000+00:00",
    }
    body.update(changes)
    return body


class Reply:
    def __init__(self, status: int, headers: Any, data: Any) -> None:
        self.status, self.headers, self.data = status, headers, data


async def post(http: aiohttp.ClientSession, url: str, body: Any, *, key: str | None = KEY,
               idempotency_key: str | None = "from-body") -> Reply:
    headers = {}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if idempotency_key == "from-body":
        idempotency_key = body.get("payment_id") if isinstance(body, dict) else None
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    async with http.post(f"{url}/v1/authorizations", json=body, headers=headers) as resp:
        return Reply(resp.status, resp.headers, await resp.json())


async def get(http: aiohttp.ClientSession, url: str, path: str, key: str | None = KEY) -> Reply:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    async with http.get(f"{url}{path}", headers=headers) as resp:
        return Reply(resp.status, resp.headers, await resp.json())


@pytest.fixture
async def sim() -> AsyncIterator[GatewaySimulator]:
    async with GatewaySimulator(KEY, seed=7) as simulator:
        yield simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_health(sim: GatewaySimulator, http: aiohttp.ClientSession) -> None:
    reply = await get(http, sim.url, "/health", key=None)
    assert reply.status == 200
    assert reply.data == {"status": "ok"}


async def test_new_authorization_is_processed_once_and_stored(
        sim: GatewaySimulator, http: aiohttp.ClientSession) -> None:
    reply = await post(http, sim.url, auth_body())
    assert reply.status == 200
    assert reply.data["status"] == "approved"
    assert re.fullmatch(r"[A-Z0-9]{6}", reply.data["auth_code"])
    assert reply.data["decline_code"] is None
    assert sim.processed_count("pay_0001") == 1
    stored = sim.stored("pay_0001")
    assert stored is not None
    assert (stored.amount, stored.last4, stored.offline) == (12500, "1111", True)
    assert PAN not in repr(stored) and PAN not in str(stored.to_json())


async def test_replay_returns_stored_result_without_reprocessing(
        sim: GatewaySimulator, http: aiohttp.ClientSession) -> None:
    first = await post(http, sim.url, auth_body())
    again = await post(http, sim.url, auth_body())
    # Equal JSON in another key order is the same body.
    reordered = dict(reversed(list(auth_body().items())))
    third = await post(http, sim.url, reordered)
    assert first.status == again.status == third.status == 200
    assert first.data == again.data == third.data
    stats = sim.stats()
    assert stats.processed == 1 and stats.processed_count("pay_0001") == 1
    assert stats.replays == 2 and stats.payments["pay_0001"].replays == 2


async def test_same_key_different_body_is_422_and_changes_nothing(
        sim: GatewaySimulator, http: aiohttp.ClientSession) -> None:
    first = await post(http, sim.url, auth_body())
    other = await post(http, sim.url, auth_body(amount=12600))
    assert other.status == 422
    assert other.data["error"]["code"] == "idempotency_conflict"
    lookup = await get(http, sim.url, "/v1/authorizations/pay_0001")
    assert lookup.data == first.data
    stats = sim.stats()
    assert stats.conflicts_422 == 1 and stats.payments["pay_0001"].conflicts_422 == 1
    assert stats.processed == 1 and stats.replays == 0


async def test_repeat_while_in_progress_is_409(http: aiohttp.ClientSession) -> None:
    # The latency is the processing time: the key stays in progress for a whole second.
    async with GatewaySimulator(KEY, seed=1, faults=Faults(latency_s=1.0)) as sim:
        first = asyncio.create_task(post(http, sim.url, auth_body()))
        await sim.wait_in_progress("pay_0001")
        repeat = await post(http, sim.url, auth_body())
        assert repeat.status == 409
        assert repeat.headers["Retry-After"] == "1"
        different = await post(http, sim.url, auth_body(amount=1))
        assert different.status == 422
        assert not first.done()
        done = await first
        assert done.status == 200
        await sim.set_faults(latency_s=0.0)
        replay = await post(http, sim.url, auth_body())
        assert replay.data == done.data
        stats = sim.stats()
        assert (stats.processed, stats.in_progress_409, stats.conflicts_422, stats.replays) \
            == (1, 1, 1, 1)


async def test_lookup_while_in_progress_is_409_then_the_result(
        sim: GatewaySimulator, http: aiohttp.ClientSession) -> None:
    sim.hold()
    first = asyncio.create_task(post(http, sim.url, auth_body()))
    await sim.wait_in_progress("pay_0001")
    during = await get(http, sim.url, "/v1/authorizations/pay_0001")
    assert during.status == 409
    sim.release()
    answer = await first
    after = await get(http, sim.url, "/v1/authorizations/pay_0001")
    assert after.status == 200 and after.data == answer.data


async def test_lookup_of_unknown_payment_is_404(
        sim: GatewaySimulator, http: aiohttp.ClientSession) -> None:
    reply = await get(http, sim.url, "/v1/authorizations/pay_never")
    assert reply.status == 404
    assert reply.data["error"]["code"] == "not_found"


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {KEY}", "Bearer ",
                                           KEY])
async def test_missing_or_wrong_merchant_key_is_401(
        sim: GatewaySimulator, http: aiohttp.ClientSession, authorization: str | None) -> None:
    headers = {"Idempotency-Key": "pay_0001"}
    if authorization is not None:
        headers["Authorization"] = authorization
    async with http.post(f"{sim.url}/v1/authorizations", json=auth_body(),
                         headers=headers) as resp:
        assert resp.status == 401
    async with http.get(f"{sim.url}/v1/authorizations/pay_0001", headers=headers) as resp:
        assert resp.status == 401
    stats = sim.stats()
    assert stats.processed == 0 and stats.unauthorized_401 == 2


def _without(path: str) -> dict[str, Any]:
    body = auth_body()
    *parents, last = path.split(".")
    target = body
    for name in parents:
        target = target[name]
    del target[last]
    return body


def _with(path: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(auth_body())
    *parents, last = path.split(".")
    target = body
    for name in parents:
        target = target[name]
    target[last] = value
    return body


@pytest.mark.parametrize(("body", "field"), [
    (_with("amount", 0), "amount"),
    (_with("amount", -5), "amount"),
    (_with("amount", "12500"), "amount"),
    (_with("amount", True), "amount"),
    (_with("amount", 12.5), "amount"),
    (_without("card.pan"), "card.pan"),
    (_with("card.pan", "4111-1111-1111-1111"), "card.pan"),
    (_with("card.exp_month", 13), "card.exp_month"),
    (_with("card.cvc", "123"), "card.cvc"),  # offline: the CVC must not be sent
    (_with("card", None), "card"),
    (_with("currency", "krw"), "currency"),
    (_without("merchant_id"), "merchant_id"),
    (_with("offline", "yes"), "offline"),
    (_with("captured_at", "yesterday"), "captured_at"),
    (_with("terminal_id", 7), "terminal_id"),
    (_with("payment_id", "pay 1"), "payment_id"),
])
async def test_invalid_body_is_400(sim: GatewaySimulator, http: aiohttp.ClientSession,
                                   body: dict[str, Any], field: str) -> None:
    reply = await post(http, sim.url, body, idempotency_key=str(body["payment_id"]))
    assert reply.status == 400
    assert reply.data["error"]["field"] == field
    assert PAN not in str(reply.data)
    assert sim.stats().processed == 0


@pytest.mark.parametrize(("idempotency_key", "code"), [
    (None, "missing_idempotency_key"), ("pay_other", "idempotency_key_mismatch")])
async def test_idempotency_key_must_be_present_and_equal_payment_id(
        sim: GatewaySimulator, http: aiohttp.ClientSession, idempotency_key: str | None,
        code: str) -> None:
    reply = await post(http, sim.url, auth_body(), idempotency_key=idempotency_key)
    assert reply.status == 400
    assert reply.data["error"]["code"] == code
    assert sim.stats().processed == 0


async def test_non_json_body_is_400(sim: GatewaySimulator, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{sim.url}/v1/authorizations", data=b"{not json",
                         headers={"Authorization": f"Bearer {KEY}",
                                  "Idempotency-Key": "pay_0001"}) as resp:
        assert resp.status == 400
    assert sim.stats().bad_request_400 == 1


async def test_online_body_with_cvc_is_accepted(
        sim: GatewaySimulator, http: aiohttp.ClientSession) -> None:
    body = _with("card.cvc", "123")
    body["offline"] = False
    reply = await post(http, sim.url, body)
    assert reply.status == 200 and reply.data["status"] == "approved"


async def test_decision_rule(http: aiohttp.ClientSession) -> None:
    rules = DeclineRules(decline_amounts=frozenset({666}), decline_pans=frozenset({MASTERCARD}))
    async with GatewaySimulator(KEY, rules=rules) as sim:
        expired = _with("card.exp_year", 2025) | {"payment_id": "pay_expired"}
        expired["card"]["exp_month"] = 4  # expired end of April 2025, captured in May
        cases = {
            "pay_ok": (auth_body("pay_ok"), "approved", None),
            "pay_amount": (auth_body("pay_amount", amount=666), "declined",
                           "insufficient_funds"),
            "pay_pan": (_with("card.pan", MASTERCARD) | {"payment_id": "pay_pan"},
                        "declined", "card_declined"),
            "pay_luhn": (_with("card.pan", "4111111111111112") | {"payment_id": "pay_luhn"},
                         "declined", "invalid_card"),
            "pay_expired": (expired, "declined", "expired_card"),
        }
        for pid, (body, status, decline_code) in cases.items():
            reply = await post(http, sim.url, body)
            assert reply.status == 200, pid
            assert (reply.data["status"], reply.data["decline_code"]) == (status, decline_code)
            assert (reply.data["auth_code"] is None) == (status == "declined")
        # Same expiry month as the capture: still valid.
        body = _with("card.exp_year", 2025) | {"payment_id": "pay_same_month"}
        body["card"]["exp_month"] = 5
        assert (await post(http, sim.url, body)).data["status"] == "approved"


async def test_rules_change_at_run_time_through_admin_endpoint(
        sim: GatewaySimulator, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{sim.admin_url}/_sim/rules",
                         json={"decline_pans": [PAN], "decline_amounts": [1]}) as resp:
        assert resp.status == 200
        shown = await resp.json()
    assert PAN not in str(shown) and shown["decline_amounts"] == [1]
    assert sim.rules.decline_pans == frozenset({PAN})
    reply = await post(http, sim.url, auth_body())
    assert reply.data["decline_code"] == "card_declined"
    async with http.post(f"{sim.admin_url}/_sim/rules", json={"decline_pans": ["12"]}) as resp:
        assert resp.status == 400


async def test_injected_5xx_is_answered_before_processing(
        sim: GatewaySimulator, http: aiohttp.ClientSession) -> None:
    await sim.set_faults(fail_5xx=1.0, fail_5xx_status=502)
    reply = await post(http, sim.url, auth_body())
    assert reply.status == 502
    lookup = await get(http, sim.url, "/v1/authorizations/pay_0001")
    assert lookup.status == 502
    stats = sim.stats()
    assert stats.injected_5xx == 2 and stats.processed == 0
    await sim.set_faults(fail_5xx=0.0)
    assert (await get(http, sim.url, "/v1/authorizations/pay_0001")).status == 404


async def test_injected_429_carries_retry_after(
        sim: GatewaySimulator, http: aiohttp.ClientSession) -> None:
    await sim.set_faults(fail_429=1.0, retry_after_s=7)
    reply = await post(http, sim.url, auth_body())
    assert reply.status == 429
    assert reply.headers["Retry-After"] == "7"
    await sim.set_faults(retry_after_http_date=True, retry_after_s=60)
    reply = await post(http, sim.url, auth_body())
    assert reply.status == 429
    assert parsedate_to_datetime(reply.headers["Retry-After"]).tzinfo is not None
    stats = sim.stats()
    assert stats.injected_429 == 2 and stats.processed == 0


async def test_dropped_answer_is_stored_and_found_by_lookup(
        http: aiohttp.ClientSession) -> None:
    async with GatewaySimulator(KEY, faults=Faults(drop_answers=1.0)) as sim:
        with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
            await post(http, sim.url, auth_body())
        stats = sim.stats()
        assert stats.processed == 1 and stats.dropped_answers == 1
        assert stats.payments["pay_0001"].dropped_answers == 1
        lookup = await get(http, sim.url, "/v1/authorizations/pay_0001")
        assert lookup.status == 200 and lookup.data["status"] == "approved"
        # A replay's answer can be lost too; it is still not processed again.
        with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
            await post(http, sim.url, auth_body())
        await sim.set_faults(drop_answers=0.0)
        replay = await post(http, sim.url, auth_body())
        assert replay.data == lookup.data
        stats = sim.stats()
        assert (stats.processed, stats.replays, stats.dropped_answers) == (1, 2, 2)


async def test_down_503_answers_every_gateway_request_but_not_admin(
        sim: GatewaySimulator, http: aiohttp.ClientSession) -> None:
    await sim.set_faults(down=True)
    assert (await get(http, sim.url, "/health", key=None)).status == 503
    assert (await post(http, sim.url, auth_body())).status == 503
    assert (await get(http, sim.admin_url, "/_sim/stats", key=None)).status == 200
    assert sim.stats().down_503 == 2 and sim.stats().processed == 0


async def test_down_refuse_closes_the_port_and_keeps_state(sim: GatewaySimulator) -> None:
    async with aiohttp.ClientSession() as http:
        first = await post(http, sim.url, auth_body())
    await sim.set_faults(down=True, down_mode="refuse")
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectorError):
            await get(http, sim.url, "/health", key=None)
    await sim.set_faults(down=False)
    async with aiohttp.ClientSession() as http:
        assert (await get(http, sim.url, "/health", key=None)).status == 200
        again = await post(http, sim.url, auth_body())
    assert again.data == first.data and sim.processed_count("pay_0001") == 1


async def test_admin_endpoint_changes_faults(sim: GatewaySimulator,
                                             http: aiohttp.ClientSession) -> None:
    async with http.post(f"{sim.admin_url}/_sim/faults",
                         json={"fail_5xx": 1.0, "latency_s": 0.01}) as resp:
        assert resp.status == 200
        assert (await resp.json())["fail_5xx"] == 1.0
    assert sim.faults.fail_5xx == 1.0 and sim.faults.latency_s == 0.01
    assert (await get(http, sim.admin_url, "/_sim/faults", key=None)).data["fail_5xx"] == 1.0
    assert (await post(http, sim.url, auth_body())).status == 503
    for bad in ({"fail_5xx": 2}, {"nonsense": 1}, {"down_mode": "sideways"},
                {"fail_5xx": 0.6, "fail_429": 0.6}, [1], {"down": "yes"},
                {"down": True, "down_mode": "refuse"}):
        async with http.post(f"{sim.admin_url}/_sim/faults", json=bad) as resp:
            assert resp.status == 400, bad
    assert sim.faults.fail_5xx == 1.0 and not sim.faults.down
    async with http.delete(f"{sim.admin_url}/_sim/faults") as resp:
        assert resp.status == 200
    assert sim.faults == Faults()
    assert (await post(http, sim.url, auth_body())).status == 200


async def test_admin_listener_can_take_the_gateway_down_and_up(
        http: aiohttp.ClientSession) -> None:
    async with GatewaySimulator(KEY, admin_port=0) as sim:
        assert sim.admin_url != sim.url
        async with http.post(f"{sim.admin_url}/_sim/faults",
                             json={"down": True, "down_mode": "refuse"}) as resp:
            assert resp.status == 200
        async with aiohttp.ClientSession() as fresh:
            with pytest.raises(aiohttp.ClientConnectorError):
                await get(fresh, sim.url, "/health", key=None)
        async with http.post(f"{sim.admin_url}/_sim/faults", json={"down": False}) as resp:
            assert resp.status == 200
        async with aiohttp.ClientSession() as fresh:
            assert (await get(fresh, sim.url, "/health", key=None)).status == 200


async def test_stats_endpoint_matches_python_accessor(
        sim: GatewaySimulator, http: aiohttp.ClientSession) -> None:
    await post(http, sim.url, auth_body("pay_a"))
    await post(http, sim.url, auth_body("pay_a"))
    await post(http, sim.url, auth_body("pay_a", amount=1))
    await post(http, sim.url, auth_body("pay_b"))
    await sim.set_faults(fail_429=1.0)
    await post(http, sim.url, auth_body("pay_c"))
    reply = await get(http, sim.admin_url, "/_sim/stats", key=None)
    assert reply.data == sim.stats().to_json()
    totals = reply.data["totals"]
    assert {k: totals[k] for k in ("processed", "replays", "conflicts_422", "in_progress_409",
                                   "dropped_answers", "injected_5xx", "injected_429")} \
        == {"processed": 2, "replays": 1, "conflicts_422": 1, "in_progress_409": 0,
            "dropped_answers": 0, "injected_5xx": 0, "injected_429": 1}
    assert reply.data["payments"]["pay_a"]["processed"] == 1
    assert reply.data["payments"]["pay_b"]["processed"] == 1
    assert "pay_c" not in reply.data["payments"]
    async with http.post(f"{sim.admin_url}/_sim/reset") as resp:
        assert resp.status == 200
    assert sim.stats().processed == 0 and sim.stored("pay_a") is None


async def test_same_seed_same_behaviour(http: aiohttp.ClientSession) -> None:
    faults = Faults(fail_5xx=0.3, fail_429=0.2, drop_answers=0.3)

    async def run() -> list[Any]:
        outcomes: list[Any] = []
        async with GatewaySimulator(KEY, seed=1234, faults=faults) as sim, \
                aiohttp.ClientSession() as session:
            for i in range(30):
                try:
                    reply = await post(session, sim.url, auth_body(f"pay_{i}"))
                    outcomes.append((reply.status, reply.data.get("auth_code")))
                except aiohttp.ClientError:
                    outcomes.append("dropped")
        return outcomes

    first, second = await run(), await run()
    assert first == second
    assert len(set(map(str, first))) > 3  # the faults really varied the outcomes


async def test_exactly_once_under_concurrent_retries_and_faults(
        http: aiohttp.ClientSession) -> None:
    faults = Faults(latency_s=0.005, jitter_s=0.02, fail_5xx=0.2, fail_429=0.1,
                    drop_answers=0.3)
    async with GatewaySimulator(KEY, seed=99, faults=faults) as sim:

        async def retrier(pid: str) -> dict[str, Any]:
            for _ in range(500):
                try:
                    reply = await post(http, sim.url, auth_body(pid))
                except aiohttp.ClientError:
                    continue
                if reply.status == 200:
                    return dict(reply.data)
            raise AssertionError(f"{pid} never answered")

        pids = [f"pay_{i:03d}" for i in range(25)]
        answers = await asyncio.gather(*(retrier(pid) for pid in pids for _ in range(3)))
        stats = sim.stats()
        for pid in pids:
            assert stats.processed_count(pid) == 1
            stored = sim.stored(pid)
            assert stored is not None
            assert all(a == stored.result_json() for a in answers if a["payment_id"] == pid)
        assert stats.processed == len(pids)
        assert stats.conflicts_422 == 0
        assert stats.dropped_answers > 0 and stats.in_progress_409 > 0


async def test_stop_abandons_an_authorization_in_progress(http: aiohttp.ClientSession) -> None:
    sim = GatewaySimulator(KEY)
    await sim.start()
    sim.hold()
    pending = asyncio.create_task(post(http, sim.url, auth_body()))
    await sim.wait_in_progress("pay_0001")
    await sim.stop()
    with pytest.raises(aiohttp.ClientError):
        await pending
    assert sim.processed_count("pay_0001") == 0 and sim.stored("pay_0001") is None


async def test_no_card_number_in_logs(caplog: pytest.LogCaptureFixture,
                                      http: aiohttp.ClientSession) -> None:
    caplog.set_level(logging.DEBUG)
    async with GatewaySimulator(KEY, rules=DeclineRules(decline_pans=frozenset({PAN})),
                                faults=Faults(drop_answers=1.0)) as sim:
        with pytest.raises(aiohttp.ClientError):
            await post(http, sim.url, auth_body())
        await sim.set_faults(Faults())
        await post(http, sim.url, auth_body())
        await post(http, sim.url, auth_body(amount=5))
        await post(http, sim.url, _with("card.exp_month", 0))
    assert "pay_0001" in caplog.text
    assert PAN not in caplog.text


def test_faults_validate() -> None:
    with pytest.raises(ValueError, match="fail_5xx"):
        Faults(fail_5xx=1.5)
    with pytest.raises(ValueError, match="fail_5xx_status"):
        Faults(fail_5xx_status=404)
    with pytest.raises(ValueError, match="retry_after_s"):
        Faults(retry_after_s=-1)
    with pytest.raises(ValueError, match="unknown"):
        Faults().merged({"latency": 1})
    assert Faults().merged({"retry_after_s": 2.0}).retry_after_s == 2


async def test_cli_serves_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    key_file = tmp_path / "merchant-key"
    key_file.write_text(KEY + "\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lab.gateway_sim", "--listen", "127.0.0.1:0",
        "--merchant-key-file", str(key_file), "--seed", "5", "--decline-amount", "666",
        "--decline-pan", MASTERCARD, "--log-level", "debug",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        match = re.fullmatch(r"gateway_sim listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, line
        url = match.group(1)
        async with aiohttp.ClientSession() as http:
            assert (await post(http, url, auth_body())).data["status"] == "approved"
            declined = await post(http, url, auth_body("pay_0002", amount=666))
            assert declined.data["decline_code"] == "insufficient_funds"
            stats = await get(http, url, "/_sim/stats", key=None)
            assert stats.data["totals"]["processed"] == 2
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        stderr = (await proc.stderr.read()).decode()
        assert "pay_0002" in stderr  # debug logging was on ...
        assert PAN not in stderr and MASTERCARD not in stderr  # ... and no card number
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_cli_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "merchant-key"
    key_file.write_text("  \n")
    with pytest.raises(SystemExit) as exited:
        main(["--merchant-key-file", str(key_file)])
    assert exited.value.code == 2
    assert "empty" in capsys.readouterr().err
    key_file.write_text(KEY)
    with pytest.raises(SystemExit):
        main(["--merchant-key-file", str(key_file), "--fail-5xx", "1.5"])
    with pytest.raises(SystemExit):
        main(["--merchant-key-file", str(key_file), "--listen", "nowhere"])

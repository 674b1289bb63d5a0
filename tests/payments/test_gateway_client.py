"""`HttpGateway` against the gateway simulator and small real servers, over loopback."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from lab.gateway_sim import DeclineRules, Faults, GatewaySimulator
from payments_cache.errors import GatewayRejected, GatewayUnavailable, UnknownOutcome
from payments_cache.gateway import AuthorizationPayload
from payments_cache.gateway_client import HttpGateway, parse_retry_after
from payments_cache.models import Card, GatewayResult

KEY = "mk_test_9f2c41d7"
PAN = "4111111111111111"


def payload(payment_id: str = "pay_0001", *, amount: int = 12500, offline: bool = True,
            pan: str = PAN) -> AuthorizationPayload:
    return AuthorizationPayload(
        payment_id=payment_id, amount=amount, currency="KRW",
        card=Card(pan=pan, exp_month=12, exp_year=2030, cvc="123"),
        merchant_id="merchant-7", offline=offline,
        captured_at=datetime(2025, 5, 1, 10, 0, tzinfo=UTC),
        terminal_id="pos-1", reference="order-991")


@pytest.fixture
async def sim() -> AsyncIterator[GatewaySimulator]:
    async with GatewaySimulator(KEY, seed=11) as simulator:
        yield simulator


@pytest.fixture
async def gw(sim: GatewaySimulator) -> AsyncIterator[HttpGateway]:
    async with HttpGateway(sim.url, KEY) as gateway:
        yield gateway


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def unaccepting_url() -> Iterator[str]:
    """A listener whose accept queue is full: a new connect never completes."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    host, port = server.getsockname()
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex((host, port))
        fillers.append(filler)
    try:
        yield f"http://{host}:{port}"
    finally:
        for filler in fillers:
            filler.close()
        server.close()


class Scripted:
    """A small real HTTP server answering every request with one scripted response."""

    def __init__(self) -> None:
        self.status = 200
        self.body = b""
        self.headers: dict[str, str] = {}
        self.hits: dict[str, int] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path] = self.hits.get(request.path, 0) + 1
        return web.Response(status=self.status, body=self.body, headers=self.headers,
                            content_type="application/json")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def scripted() -> AsyncIterator[Scripted]:
    server = Scripted()
    await server.start()
    yield server
    await server.stop()


# ----------------------------------------------------------------------------- results


async def test_approved_result_and_lookup(sim: GatewaySimulator, gw: HttpGateway) -> None:
    result = await gw.authorize(payload(), timeout_s=5)
    assert result.status == "approved"
    assert result.auth_code is not None and len(result.auth_code) == 6
    assert result.decline_code is None
    assert await gw.lookup("pay_0001", timeout_s=5) == result
    assert sim.processed_count("pay_0001") == 1


async def test_declined_result(sim: GatewaySimulator, gw: HttpGateway) -> None:
    sim.set_rules(decline_amounts=frozenset({666}))
    result = await gw.authorize(payload(amount=666), timeout_s=5)
    assert result == GatewayResult(status="declined", decline_code="insufficient_funds")


async def test_retry_is_a_replay_not_a_second_charge(sim: GatewaySimulator,
                                                     gw: HttpGateway) -> None:
    first = await gw.authorize(payload(offline=False), timeout_s=5)  # online: with the CVC
    again = await gw.authorize(payload(offline=False), timeout_s=5)
    assert again == first
    stats = sim.stats()
    assert (stats.processed, stats.replays, stats.conflicts_422) == (1, 1, 0)


async def test_lookup_of_unknown_payment_is_none(gw: HttpGateway) -> None:
    assert await gw.lookup("pay_never", timeout_s=5) is None


async def test_payment_id_is_quoted_in_the_lookup_path(sim: GatewaySimulator,
                                                       gw: HttpGateway) -> None:
    odd = "pay/1?x=%2F#frag"
    result = await gw.authorize(payload(odd), timeout_s=5)
    assert await gw.lookup(odd, timeout_s=5) == result
    assert await gw.lookup("pay", timeout_s=5) is None
    assert sim.processed_count(odd) == 1


# ----------------------------------------------------------------------------- rejections


async def test_different_body_under_same_key_is_rejected_422(sim: GatewaySimulator,
                                                             gw: HttpGateway) -> None:
    await gw.authorize(payload(), timeout_s=5)
    with pytest.raises(GatewayRejected) as err:
        await gw.authorize(payload(amount=1), timeout_s=5)
    assert err.value.status == 422 and err.value.payment_id == "pay_0001"
    assert "idempotency_conflict" in err.value.reason
    assert sim.stats().conflicts_422 == 1 and sim.processed_count("pay_0001") == 1


async def test_bad_input_is_rejected_400_without_the_pan(sim: GatewaySimulator,
                                                         gw: HttpGateway) -> None:
    with pytest.raises(GatewayRejected) as err:
        await gw.authorize(payload(amount=0), timeout_s=5)
    assert err.value.status == 400
    assert PAN not in str(err.value) and PAN not in err.value.reason
    assert sim.stats().processed == 0


async def test_wrong_merchant_key(sim: GatewaySimulator) -> None:
    async with HttpGateway(sim.url, "not-the-key") as gw:
        with pytest.raises(GatewayRejected) as err:
            await gw.authorize(payload(), timeout_s=5)
        assert err.value.status == 401
        with pytest.raises(GatewayUnavailable) as unavailable:
            await gw.lookup("pay_0001", timeout_s=5)
        assert unavailable.value.status == 401
    assert sim.stats().unauthorized_401 == 2 and sim.stats().processed == 0


async def test_error_text_from_the_gateway_is_scrubbed(scripted: Scripted,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    scripted.status = 400
    scripted.body = (b'{"error": {"code": "bad_card", "message": "card 4111111111111111 '
                     b'or 4111 1111 1111 1111 is bad"}}')
    async with HttpGateway(scripted.url, KEY) as gw:
        with pytest.raises(GatewayRejected) as err:
            await gw.authorize(payload(), timeout_s=5)
    assert "bad_card" in err.value.reason
    assert "4111" not in str(err.value)
    assert PAN not in caplog.text and "4111 1111" not in caplog.text


# ----------------------------------------------------------------------------- transient


async def test_in_progress_409_is_unavailable(sim: GatewaySimulator, gw: HttpGateway) -> None:
    sim.hold()
    first = asyncio.create_task(gw.authorize(payload(), timeout_s=5))
    await sim.wait_in_progress("pay_0001")
    with pytest.raises(GatewayUnavailable) as err:
        await gw.authorize(payload(), timeout_s=5)
    assert err.value.status == 409 and err.value.retry_after_s == 1.0
    with pytest.raises(GatewayUnavailable) as lookup_err:
        await gw.lookup("pay_0001", timeout_s=5)
    assert lookup_err.value.status == 409
    sim.release()
    result = await first
    assert await gw.authorize(payload(), timeout_s=5) == result
    assert sim.processed_count("pay_0001") == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_unavailable_and_not_processed(sim: GatewaySimulator, gw: HttpGateway,
                                                    status: int) -> None:
    await sim.set_faults(fail_5xx=1.0, fail_5xx_status=status)
    with pytest.raises(GatewayUnavailable) as err:
        await gw.authorize(payload(), timeout_s=5)
    assert err.value.status == status and err.value.retry_after_s is None
    with pytest.raises(GatewayUnavailable):
        await gw.lookup("pay_0001", timeout_s=5)
    assert sim.stats().injected_5xx == 2 and sim.stats().processed == 0


async def test_429_retry_after_seconds(sim: GatewaySimulator, gw: HttpGateway) -> None:
    await sim.set_faults(fail_429=1.0, retry_after_s=7)
    with pytest.raises(GatewayUnavailable) as err:
        await gw.authorize(payload(), timeout_s=5)
    assert err.value.status == 429 and err.value.retry_after_s == 7.0
    with pytest.raises(GatewayUnavailable) as lookup_err:
        await gw.lookup("pay_0001", timeout_s=5)
    assert lookup_err.value.retry_after_s == 7.0
    assert sim.stats().processed == 0


async def test_429_retry_after_http_date(sim: GatewaySimulator, gw: HttpGateway) -> None:
    await sim.set_faults(fail_429=1.0, retry_after_s=120, retry_after_http_date=True)
    with pytest.raises(GatewayUnavailable) as err:
        await gw.authorize(payload(), timeout_s=5)
    assert err.value.status == 429
    assert err.value.retry_after_s is not None and 110 <= err.value.retry_after_s <= 121


async def test_redirect_is_not_followed(scripted: Scripted) -> None:
    scripted.status = 307
    scripted.headers = {"Location": "/elsewhere"}
    async with HttpGateway(scripted.url, KEY) as gw:
        with pytest.raises(GatewayUnavailable) as err:
            await gw.authorize(payload(), timeout_s=5)
    assert err.value.status == 307
    assert scripted.hits == {"/v1/authorizations": 1}


# ----------------------------------------------------------------------------- unreachable


async def test_closed_port_is_unavailable(closed_port: int) -> None:
    async with HttpGateway(f"http://127.0.0.1:{closed_port}", KEY) as gw:
        with pytest.raises(GatewayUnavailable) as err:
            await gw.authorize(payload(), timeout_s=5)
        assert err.value.status is None and "connect" in err.value.reason
        with pytest.raises(GatewayUnavailable):
            await gw.lookup("pay_0001", timeout_s=5)


async def test_simulator_refusing_connections_is_unavailable(sim: GatewaySimulator) -> None:
    await sim.set_faults(down=True, down_mode="refuse")
    async with HttpGateway(sim.url, KEY) as gw:
        with pytest.raises(GatewayUnavailable):
            await gw.authorize(payload(), timeout_s=5)
        await sim.set_faults(down=False)
        assert (await gw.authorize(payload(), timeout_s=5)).status == "approved"


async def test_simulator_down_503_is_unavailable(sim: GatewaySimulator,
                                                 gw: HttpGateway) -> None:
    await sim.set_faults(down=True)
    with pytest.raises(GatewayUnavailable) as err:
        await gw.authorize(payload(), timeout_s=5)
    assert err.value.status == 503 and sim.stats().processed == 0


async def test_connect_timeout_is_unavailable(unaccepting_url: str) -> None:
    async with HttpGateway(unaccepting_url, KEY) as gw:
        with pytest.raises(GatewayUnavailable) as err:
            await gw.authorize(payload(), timeout_s=0.3)
    assert "before the request was sent" in err.value.reason


class _NoSuchHost(AbstractResolver):
    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        raise OSError(socket.EAI_NONAME, "Name or service not known")

    async def close(self) -> None:
        return None


async def test_dns_failure_is_unavailable_and_injected_connector_stays_open() -> None:
    connector = aiohttp.TCPConnector(resolver=_NoSuchHost())
    try:
        async with HttpGateway("https://gateway.example", KEY, connector=connector) as gw:
            with pytest.raises(GatewayUnavailable) as err:
                await gw.authorize(payload(), timeout_s=5)
        assert "ClientConnectorDNSError" in err.value.reason
        assert not connector.closed
    finally:
        await connector.close()


# ----------------------------------------------------------------------------- lost answers


async def test_dropped_answer_is_unknown_outcome_then_lookup_finds_it(
        sim: GatewaySimulator, gw: HttpGateway) -> None:
    await sim.set_faults(drop_answers=1.0)
    with pytest.raises(UnknownOutcome) as err:
        await gw.authorize(payload(), timeout_s=5)
    assert err.value.payment_id == "pay_0001" and PAN not in str(err.value)
    assert sim.processed_count("pay_0001") == 1
    found = await gw.lookup("pay_0001", timeout_s=5)
    assert found is not None and found.status == "approved"
    await sim.set_faults(drop_answers=0.0)
    assert await gw.authorize(payload(), timeout_s=5) == found
    stats = sim.stats()
    assert (stats.processed, stats.replays, stats.dropped_answers) == (1, 1, 1)


async def test_timeout_after_sending_is_unknown_outcome(sim: GatewaySimulator,
                                                        gw: HttpGateway) -> None:
    sim.hold()
    with pytest.raises(UnknownOutcome) as err:
        await gw.authorize(payload(), timeout_s=0.3)
    assert "timed out" in err.value.reason
    await sim.wait_in_progress("pay_0001")  # it did reach the gateway
    sim.release()
    stored = await sim.wait_stored("pay_0001")
    assert await gw.lookup("pay_0001", timeout_s=5) == stored.result
    assert sim.processed_count("pay_0001") == 1


async def test_latency_beyond_the_timeout_is_unknown_outcome(sim: GatewaySimulator,
                                                             gw: HttpGateway) -> None:
    await sim.set_faults(latency_s=0.5)
    with pytest.raises(UnknownOutcome):
        await gw.authorize(payload(), timeout_s=0.1)
    with pytest.raises(GatewayUnavailable):
        await gw.lookup("pay_0001", timeout_s=0.1)


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b'{"status": "maybe"}', b'{"status": "approved", "auth_code": 5}',
    b'{"payment_id": "pay_other", "status": "approved", "auth_code": "ABC123"}', b""])
async def test_malformed_200_is_unknown_outcome(scripted: Scripted, body: bytes) -> None:
    scripted.body = body
    async with HttpGateway(scripted.url, KEY) as gw:
        with pytest.raises(UnknownOutcome):
            await gw.authorize(payload(), timeout_s=5)
        with pytest.raises(GatewayUnavailable):
            await gw.lookup("pay_0001", timeout_s=5)


async def test_well_formed_answer_from_scripted_server(scripted: Scripted) -> None:
    scripted.body = b'{"status": "declined", "auth_code": null, "decline_code": "05"}'
    async with HttpGateway(scripted.url, KEY) as gw:
        result = await gw.authorize(payload(), timeout_s=5)
    assert result == GatewayResult(status="declined", decline_code="05")


# ----------------------------------------------------------------------------- sessions


async def test_session_is_created_lazily_and_recreated_after_close(
        sim: GatewaySimulator) -> None:
    gw = HttpGateway(sim.url, KEY)  # no running request: nothing to close yet
    await gw.close()
    assert (await gw.authorize(payload(), timeout_s=5)).status == "approved"
    await gw.close()
    assert await gw.lookup("pay_0001", timeout_s=5) is not None
    await gw.close()


async def test_injected_session_with_trace_is_exact_and_left_open(
        unaccepting_url: str, sim: GatewaySimulator) -> None:
    async with aiohttp.ClientSession(trace_configs=[HttpGateway.trace_config()]) as session:
        gw = HttpGateway(unaccepting_url, KEY, session=session)
        with pytest.raises(GatewayUnavailable):
            await gw.authorize(payload(), timeout_s=0.3)
        await gw.close()
        assert not session.closed
        ok = HttpGateway(sim.url, KEY, session=session)
        assert (await ok.authorize(payload(), timeout_s=5)).status == "approved"


async def test_injected_session_without_trace_is_conservative(unaccepting_url: str,
                                                              closed_port: int) -> None:
    async with aiohttp.ClientSession() as session:
        gw = HttpGateway(unaccepting_url, KEY, session=session)
        # It cannot tell a connect timeout from a lost answer: it says "unknown".
        with pytest.raises(UnknownOutcome):
            await gw.authorize(payload(), timeout_s=0.3)
        refused = HttpGateway(f"http://127.0.0.1:{closed_port}", KEY, session=session)
        with pytest.raises(GatewayUnavailable):
            await refused.authorize(payload(), timeout_s=5)


def test_constructor_validates() -> None:
    with pytest.raises(ValueError):
        HttpGateway("ftp://gateway.example", KEY)
    with pytest.raises(ValueError):
        HttpGateway("https://gateway.example", "")
    gw = HttpGateway("https://gateway.example/", KEY)
    assert gw.base_url == "https://gateway.example"
    assert KEY not in repr(gw)


# ----------------------------------------------------------------------------- Retry-After


def test_parse_retry_after() -> None:
    now = datetime(2025, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7", now=now) == 7.0
    assert parse_retry_after(" 2.5 ", now=now) == 2.5
    assert parse_retry_after("-3", now=now) == 0.0
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now=now) == 90.0
    earlier = format_datetime(now - timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(earlier, now=now) == 0.0
    for junk in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(junk, now=now) is None


# ----------------------------------------------------------------------------- end to end


async def test_retrying_client_forwards_each_payment_exactly_once() -> None:
    """The forwarding discipline of docs/gateway-protocol.md against a misbehaving gateway: retry on
    unavailable, look up after an unknown outcome. Every payment is processed once."""
    faults = Faults(latency_s=0.002, jitter_s=0.01, fail_5xx=0.2, fail_429=0.1,
                    drop_answers=0.3)
    async with GatewaySimulator(KEY, seed=2024, faults=faults,
                                rules=DeclineRules(decline_amounts=frozenset({700}))) as sim, \
            HttpGateway(sim.url, KEY) as gw:

        async def forward(p: AuthorizationPayload) -> GatewayResult:
            unknown = False
            for _ in range(500):
                try:
                    if unknown:
                        found = await gw.lookup(p.payment_id, timeout_s=2)
                        if found is not None:
                            return found
                    return await gw.authorize(p, timeout_s=2)
                except UnknownOutcome:
                    unknown = True
                except GatewayUnavailable:
                    continue
            raise AssertionError(f"{p.payment_id} never settled")

        payloads = [replace(payload(f"pay_{i:03d}"), amount=700 if i % 5 == 0 else 100 + i)
                    for i in range(30)]
        results = await asyncio.gather(*(forward(p) for p in payloads))
        stats = sim.stats()
        for p, result in zip(payloads, results, strict=True):
            assert stats.processed_count(p.payment_id) == 1
            stored = sim.stored(p.payment_id)
            assert stored is not None and stored.result == result
            assert result.status == ("declined" if p.amount == 700 else "approved")
        assert stats.conflicts_422 == 0 and stats.dropped_answers > 0


"""The data call's resolvers (`AT+CGCONTRDP`, read by `hw.modem.bearer`): after the call
comes up and on every status read; none from a modem that refuses the command."""

from __future__ import annotations

import pytest

from hw.modem.profiles import GenericProfile
from hw.modem.simulator import SimCard
from tests.hw.modem_harness import modem_on
from tests.hw.test_profiles import ScriptedPort

pytestmark = pytest.mark.timeout(30)

KT_DNS = ("168.126.63.1", "168.126.63.2")
SKT_DNS = ("210.220.163.82", "219.250.36.130")


async def test_the_call_brings_its_carriers_resolvers() -> None:
    async with modem_on(modem_options={"apn": "internet"}) as (sim, modem):
        await modem.initialise()
        status = await modem.connect_data()
        assert status.up and status.dns == KT_DNS
        assert "AT+CGCONTRDP=1" in sim.received
        assert modem.snapshot().dns == KT_DNS
        assert (await modem.data_status()).dns == KT_DNS
        await modem.disconnect_data()
        assert modem.snapshot().dns == () and (await modem.data_status()).dns == ()


async def test_a_status_read_follows_a_new_sim() -> None:
    async with modem_on(sims=[SimCard.skt()], modem_options={"apn": "internet"}) as (
            sim, modem):
        await modem.initialise()
        await modem.connect_data()
        assert modem.snapshot().dns == SKT_DNS
        sim.sims[0].dns = ("10.2.0.1",)
        assert (await modem.data_status()).dns == ("10.2.0.1",)
        assert modem.snapshot().dns == ("10.2.0.1",)


@pytest.mark.parametrize("refusal", [b"\r\nERROR\r\n", b"\r\n+CME ERROR: 4\r\n"])
async def test_a_modem_refusing_cgcontrdp_has_the_call_without_resolvers(
        refusal: bytes) -> None:
    async with modem_on(modem_options={"apn": "internet"}) as (sim, modem):
        await modem.initialise()
        sim.answer_raw("AT+CGCONTRDP=1", refusal)
        status = await modem.connect_data()
        assert status.up and status.ip == "10.155.32.7" and status.dns == ()
        snap = modem.snapshot()
        assert snap.data_up and snap.dns == () and snap.parse_errors == 0


async def test_an_answer_that_does_not_parse_keeps_the_last_resolvers() -> None:
    async with modem_on(modem_options={"apn": "internet"}) as (sim, modem):
        await modem.initialise()
        await modem.connect_data()
        sim.answer_raw("AT+CGCONTRDP=1",
                       b'\r\n+CGCONTRDP: 1,5,"internet","10.0.0.2.255.255","x"\r\n\r\nOK\r\n')
        assert (await modem.data_status()).dns == KT_DNS
        snap = modem.snapshot()
        assert snap.dns == KT_DNS and snap.parse_errors == 1


async def test_the_generic_profile_reads_the_context_asked_for() -> None:
    port = ScriptedPort({"AT+CGCONTRDP=2": [
        '+CGCONTRDP: 2,5,"internet","10.0.0.2.255.255.255.0","10.0.0.1","10.0.0.53",'
        '"0.0.0.0"',
        '+CGCONTRDP: 2,5,"internet","32.1.13.184.0.0.0.0.0.0.0.0.0.0.0.2","",'
        '"32.1.13.184.0.0.0.0.0.0.0.0.0.0.0.53"']})
    assert await GenericProfile().read_dns(port, 2) == ("10.0.0.53", "2001:db8::35")
    assert port.sent == ["AT+CGCONTRDP=2"]

"""Issue #10 part 4 over a real pty: the modem says why LTE is not connected (reject
cause, radio off, no SIM by hot swap, PIN, network PDP deactivation), masks the IMSI,
retries busy answers with backoff, and takes +CTZE for what it is."""

from __future__ import annotations

import asyncio

import pytest

from hw.modem.errors import CommandError, ModemRebooted
from hw.modem.health import ModemSupervisor, SupervisorPolicy
from hw.modem.simulator import RecordingDataHook, SimCard
from hw.modem.status import ModemStatus
from tests.hw.modem_harness import Events, FakeSleep, modem_on

pytestmark = pytest.mark.timeout(60)


def reason(status: ModemStatus) -> str:
    assert status.not_connected_reason is not None
    return status.not_connected_reason


async def test_rejected_sim_says_plan_expired_with_the_emm_cause() -> None:
    async with modem_on() as (sim, modem):
        await modem.initialise()
        assert "AT+CEREG=3" in sim.received  # reject causes asked for
        sim.lose_registration(3, cause=7)
        status = await modem.wait_for(lambda s: s.reject_cause is not None, timeout=5)
        assert status.registered is False and status.reject_cause == 7  # from the URC
        status = await modem.refresh()
        assert status.reject_cause == 7 and status.error_report == "EMM cause 7"
        assert reason(status).startswith("SIM rejected by the network: plan expired")
        assert "EMM #7" in reason(status)
        assert status.parse_errors == 0
        sim.restore_registration()
        status = await modem.refresh()
        assert status.registered and status.reject_cause is None
        assert reason(status) == "data connection not up yet"


async def test_no_coverage_and_radio_off() -> None:
    async with modem_on() as (sim, modem):
        await modem.initialise()
        sim.lose_registration(2)
        assert reason(await modem.refresh()) == "no coverage (searching for a network)"
        sim.restore_registration()
        await modem.command("AT+CFUN=4")
        status = await modem.refresh()
        assert status.radio_on is False and reason(status) == "radio off"
        assert "AT+CFUN?" in sim.received


async def test_sim_pulled_and_inserted_is_followed_without_a_poll() -> None:
    hook = RecordingDataHook()
    async with modem_on(data_hook=hook) as (sim, modem):
        await modem.initialise()
        assert "AT+QSIMSTAT=1" in sim.received
        await modem.sim()
        await modem.connect_data("internet")
        assert modem.snapshot().imsi == "45008******7890"  # masked: personal data
        sim.remove_sim(0)
        status = await modem.wait_for(lambda s: s.sim_state is not None
                                      and s.sim_state.name == "NOT_INSERTED", timeout=5)
        assert reason(status) == "no SIM" and not status.data_up and status.imsi is None
        assert not modem.needs_refresh
        sim.insert_sim(0, SimCard.skt())
        await modem.wait_for(lambda _s: modem.needs_refresh, timeout=5)
        status = await modem.refresh()
        assert status.sim_mcc_mnc == "45005" and status.registered
        assert not modem.needs_refresh and status.parse_errors == 0


async def test_supervisor_reads_an_inserted_sim_at_the_next_tick() -> None:
    async with modem_on(sims=[SimCard.absent(), SimCard.absent()]) as (sim, modem):
        fake = FakeSleep()
        sup = ModemSupervisor(modem, SupervisorPolicy(refresh_every=1000), on_event=Events(),
                              monotonic=fake.monotonic, sleep=fake)
        assert await sup.start()
        assert reason(modem.snapshot()) == "no SIM"
        sim.insert_sim(0, SimCard.kt())
        await modem.wait_for(lambda _s: modem.needs_refresh, timeout=5)
        mark = len(sim.received)
        assert await sup.tick()  # a light poll would not read the SIM; this one does
        assert "AT+CIMI" in sim.received[mark:]
        status = modem.snapshot()
        assert status.sim_mcc_mnc == "45008" and status.resets_total == 0


async def test_pin_required_is_said_plainly() -> None:
    async with modem_on(sims=[SimCard.kt(pin="1234"), SimCard.absent()]) as (_sim, modem):
        await modem.initialise()
        status = await modem.refresh()
        assert reason(status) == "SIM PIN required (set lte.pin)"


async def test_network_deactivating_the_data_call() -> None:
    hook = RecordingDataHook()
    async with modem_on(data_hook=hook) as (sim, modem):
        await modem.initialise()
        await modem.sim()
        await modem.connect_data("internet")
        assert modem.snapshot().not_connected_reason is None
        sim.network_deactivate()
        status = await modem.wait_for(lambda s: not s.data_up, timeout=5)
        assert reason(status) == "network deactivated the data connection"
        await modem.connect_data("internet")
        assert modem.snapshot().not_connected_reason is None


async def test_busy_answers_are_retried_with_backoff() -> None:
    fake = FakeSleep()
    async with modem_on(modem_options={"sleep": fake}) as (sim, modem):
        await modem.initialise()
        sim.answer_raw("AT+QCSQ", b"\r\n+CME ERROR: 515\r\n", times=2)
        reading = await modem.signal()
        assert reading.rsrp_dbm == -95.0 and modem.busy_retries == 2
        assert fake.calls == [0.2, 0.5]
        sim.answer_raw("AT+CSQ", b"\r\n+CME ERROR: 515\r\n")  # busy for good
        with pytest.raises(CommandError):
            await modem.command("AT+CSQ")
        assert fake.calls[2:] == [0.2, 0.5, 1.0, 2.0]
        sim.answer_raw("AT+CSQ", b"\r\n+CME ERROR: 3\r\n", times=1)  # not busy: at once
        with pytest.raises(CommandError):
            await modem.command("AT+CSQ")
        assert len(fake.calls) == 6
        sim.answer_raw('AT+CPIN="1234"', b"\r\n+CME ERROR: 515\r\n", times=1)
        with pytest.raises(CommandError):  # a PIN is never sent twice, busy or not
            await modem.command('AT+CPIN="1234"')
        assert len(fake.calls) == 6


async def test_time_zone_urc_is_parsed_not_an_error() -> None:
    async with modem_on() as (sim, modem):
        await modem.initialise()
        assert "AT+CTZR=2" in sim.received
        sim.time_zone_report()
        status = await modem.wait_for(lambda s: s.utc_offset_min is not None, timeout=5)
        assert status.utc_offset_min == 540 and status.parse_errors == 0
        await asyncio.sleep(0)
        assert modem.channel.stats.stray_lines == 0


async def test_a_reboot_under_the_radio_query_is_ridden_out() -> None:
    # AT+CFUN=... is never replayed after a reboot; the read AT+CFUN? is (found by review:
    # it propagated ModemRebooted into the supervisor, which took it for a failure)
    async with modem_on() as (sim, modem):
        fake = FakeSleep()
        events = Events()
        sup = ModemSupervisor(modem, SupervisorPolicy(refresh_every=1), on_event=events,
                              monotonic=fake.monotonic, sleep=fake)
        assert await sup.start()
        await modem.command("AT+CFUN=4")
        sim.reboot_on("AT+CFUN?")
        assert await sup.tick()
        assert sim.received.count("AT+CFUN?") >= 2 and events.of("modem_reset") == []
        assert modem.snapshot().reboots_seen == 1


async def test_a_reboot_during_the_data_bring_up_is_not_taken_for_data_up() -> None:
    # found by the reboot-recovery benchmark: the bring-up went on after the reboot, waited
    # timeouts.data for an address that never came and then reported the call up
    async with modem_on(data_hook=RecordingDataHook()) as (sim, modem):
        await modem.initialise()
        await modem.sim()
        await modem.connect_data("internet")  # the ECM switch (a reboot of its own)
        await modem.disconnect_data()
        sim.reboot_on("AT+CGPADDR=1")
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ModemRebooted):
            await modem.connect_data("internet")
        assert loop.time() - started < modem.timeouts.data
        status = modem.snapshot()
        assert not status.data_up and status.reboots_seen == 2
        assert (await modem.connect_data("internet")).ip == "10.155.32.7"

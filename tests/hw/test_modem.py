"""`Modem` against the EC25 simulator over a real pty (real pyserial, no serial mocks)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import pytest

from hw.modem.errors import CommandTimeout, NotRegistered, SimFault
from hw.modem.parsers.identity import SimState
from hw.modem.parsers.registration import AccessTechnology, RegistrationStatus
from hw.modem.profiles import QuectelProfile, Timeouts
from hw.modem.simulator import RecordingDataHook, Signal, SimCard
from tests.hw.modem_harness import TIMEOUTS, modem_on

pytestmark = pytest.mark.timeout(30)


def pin_attempts(received: list[str]) -> list[str]:
    return [line for line in received if line.upper().startswith("AT+CPIN=")]


async def test_initialise_reads_identity_picks_quectel_and_enables_urcs() -> None:
    async with modem_on() as (sim, modem):
        assert modem.needs_init
        identity = await modem.initialise()
        assert (identity.manufacturer, identity.model) == ("Quectel", "EC25")
        assert identity.revision == "EC25EFAR06A06M4G" and identity.imei == "866758041234567"
        assert isinstance(modem.profile, QuectelProfile)
        assert not modem.needs_init and not sim.echo
        for command in ("ATE0", "AT+CMEE=1", "AT+CREG=2", "AT+CGREG=2", "AT+CEREG=2"):
            assert command in sim.received
        status = modem.snapshot()
        assert status.present and status.vendor == "quectel" and status.identity == identity
        assert await modem.identity() == identity  # cached: no new commands
        assert sim.received.count("AT+CGMI") == 1


async def test_sim_ready_reads_iccid_and_imsi() -> None:
    async with modem_on() as (sim, modem):
        await modem.initialise()
        info = await modem.sim()
        assert info.state is SimState.READY
        assert info.iccid == "89820812345678901234"
        assert (info.imsi, info.mcc, info.mnc, info.mcc_mnc) == (
            "450081234567890", "450", "08", "45008")
        assert info.slot == 0
        status = modem.snapshot()
        assert status.sim_state is SimState.READY and status.sim_mcc_mnc == "45008"
        assert status.iccid == info.iccid and status.sim_fault is None
        assert "AT+QCCID" in sim.received  # the Quectel ICCID command


async def test_sim_absent_is_not_inserted() -> None:
    async with modem_on(sims=[SimCard.absent()]) as (_sim, modem):
        await modem.initialise()
        info = await modem.sim()  # AT+CPIN? answers +CME ERROR: 10
        assert info.state is SimState.NOT_INSERTED and info.iccid is None and info.imsi is None
        status = modem.snapshot()
        assert status.sim_state is SimState.NOT_INSERTED and status.sim_mcc_mnc is None


async def test_pin_is_entered_once_when_the_sim_asks() -> None:
    async with modem_on(sims=[SimCard.kt(pin="1234")],
                        modem_options={"pin": "1234"}) as (sim, modem):
        await modem.initialise()
        assert sim.sim_state == "PIN"
        info = await modem.sim()
        assert info.state is SimState.READY and info.mcc_mnc == "45008"
        assert pin_attempts(sim.received) == ['AT+CPIN="1234"']
        await modem.sim()
        await modem.refresh()
        assert len(pin_attempts(sim.received)) == 1  # unlocked: never sent again
        assert sim.sim.pin_tries == 3


async def test_wrong_pin_is_a_fault_and_never_retried() -> None:
    card = SimCard.kt(pin="1234")
    async with modem_on(sims=[card], modem_options={"pin": "0000"}) as (sim, modem):
        await modem.initialise()
        with pytest.raises(SimFault) as first:
            await modem.sim()
        assert first.value.reason == "pin_rejected" and first.value.state == "sim_pin"
        assert "0000" not in str(first.value)
        with pytest.raises(SimFault) as second:
            await modem.sim()
        assert second.value.reason == "pin_rejected"
        await modem.refresh()  # the periodic refresh must not try either
        assert pin_attempts(sim.received) == ['AT+CPIN="0000"']
        assert card.pin_tries == 2  # one try used, two left for a person
        status = modem.snapshot()
        assert status.sim_fault == "pin_rejected" and status.sim_state is SimState.SIM_PIN


async def test_puk_is_a_fault_without_any_pin_attempt() -> None:
    card = SimCard.kt(pin="1234", pin_tries=0)
    async with modem_on(sims=[card], modem_options={"pin": "1234"}) as (sim, modem):
        await modem.initialise()
        with pytest.raises(SimFault) as fault:
            await modem.sim()
        assert fault.value.reason == "puk_required"
        assert pin_attempts(sim.received) == []
        assert card.puk_tries == 10
        status = modem.snapshot()
        assert status.sim_state is SimState.SIM_PUK and status.sim_fault == "puk_required"


async def test_pin_required_without_a_configured_pin() -> None:
    async with modem_on(sims=[SimCard.kt(pin="1234")]) as (sim, modem):
        await modem.initialise()
        with pytest.raises(SimFault) as fault:
            await modem.sim()
        assert fault.value.reason == "pin_required"
        assert pin_attempts(sim.received) == []


def test_a_malformed_pin_is_refused_before_anything_is_sent() -> None:
    from hw.modem.modem import Modem

    with pytest.raises(ValueError, match="4 to 8 digits") as info:
        Modem(None, pin="12a4")  # type: ignore[arg-type]
    assert "12a4" not in str(info.value)


async def test_registration_operator_and_signal_with_qcsq_sinr() -> None:
    signal = Signal(rssi_dbm=-71, rsrp_dbm=-97, rsrq_db=-11, sinr_db=13)
    async with modem_on(signal=signal) as (_sim, modem):
        await modem.initialise()
        await modem.sim()
        reg = await modem.registration()
        assert reg.status is RegistrationStatus.HOME and reg.registered and not reg.roaming
        assert (reg.area_code, reg.cell_id, reg.rat) == (0x1A2B, 0x1A2D001, AccessTechnology.LTE)
        assert reg.source == "+CEREG"
        operator = await modem.operator()
        assert (operator.name, operator.mcc_mnc, operator.mode) == ("KT", "45008", 0)
        reading = await modem.signal()
        assert reading.source == "+QCSQ"
        assert reading.rssi_dbm == -71 and reading.rsrp_dbm == -97 and reading.rsrq_db == -11
        assert reading.sinr_db == pytest.approx(13.0)
        status = modem.snapshot()
        assert status.registered and status.registration is RegistrationStatus.HOME
        assert (status.tac, status.cell_id) == (0x1A2B, 0x1A2D001)
        assert (status.operator, status.mcc_mnc, status.rat) == ("KT", "45008",
                                                                 AccessTechnology.LTE)
        assert (status.signal_dbm, status.rsrp_dbm, status.rsrq_db) == (-71, -97, -11)
        assert status.sinr_db == pytest.approx(13.0)
        with pytest.raises(dataclasses.FrozenInstanceError):
            status.registered = False  # type: ignore[misc]


async def test_roaming_registration() -> None:
    async with modem_on(sims=[SimCard.kt(roaming=True)]) as (_sim, modem):
        await modem.initialise()
        reg = await modem.registration()
        assert reg.status is RegistrationStatus.ROAMING and reg.registered and reg.roaming
        assert modem.snapshot().roaming is True


async def test_slow_cops_gets_the_network_timeout_not_the_command_one() -> None:
    timeouts = dataclasses.replace(TIMEOUTS, command=0.25, network=5.0)
    async with modem_on(cops_delay_s=0.4, modem_options={"timeouts": timeouts}) as (sim, modem):
        await modem.initialise()
        await modem.registration()
        operation = asyncio.create_task(modem.operator())
        await sim.command_seen("AT+COPS?")
        # while +COPS? is outstanding the snapshot is still served, and URCs still land
        assert modem.snapshot().registered is True
        sim.emit_urc("+CEREG: 5")
        await modem.wait_for(lambda s: s.registration is RegistrationStatus.ROAMING, 2)
        operator = await operation
        assert (operator.name, operator.mcc_mnc) == ("KT", "45008")
        # the same query with the ordinary command timeout would have failed
        with pytest.raises(CommandTimeout):
            await modem.command("AT+COPS?", timeout=0.25)


async def test_quectel_data_path_switches_to_ecm_once_and_calls_the_data_hook() -> None:
    hook = RecordingDataHook()
    async with modem_on(data_hook=hook, modem_options={"apn": "internet.kt"}) as (sim, modem):
        await modem.initialise()
        await modem.sim()
        status = await modem.connect_data()
        assert status.up and status.method == "ecm" and status.ip == "10.155.32.7"
        assert status.apn == "internet.kt"
        assert hook.calls == [True] and sim.data_up
        sent = sim.received
        order = [sent.index(c) for c in ('AT+QCFG="usbnet"', 'AT+QCFG="usbnet",1',
                                         "AT+CFUN=1,1", 'AT+CGDCONT=1,"IP","internet.kt"',
                                         "AT+QNETDEVCTL=1,1,1", "AT+CGPADDR=1")]
        assert order == sorted(order)
        assert sim.boots == 1 and not modem.needs_init  # rebooted for usbnet, re-initialised
        assert sent.count("AT+CEREG=2") == 2
        snap = modem.snapshot()
        assert snap.data_up and snap.ip == "10.155.32.7"

        await modem.disconnect_data()
        assert hook.calls == [True, False] and not sim.data_up
        assert not (await modem.data_status()).up and not modem.snapshot().data_up

        mark = len(sim.received)
        again = await modem.connect_data("internet")
        assert again.up and hook.calls == [True, False, True]
        assert "AT+CFUN=1,1" not in sim.received[mark:]  # ECM already set: no reboot
        assert (await modem.data_status()).up


async def test_data_loss_is_seen_by_urc() -> None:
    hook = RecordingDataHook()
    async with modem_on(data_hook=hook, modem_options={"apn": "internet"}) as (sim, modem):
        await modem.initialise()
        await modem.connect_data()
        mark = len(sim.received)
        sim.lose_registration(2)
        status = await modem.wait_for(lambda s: not s.data_up and s.registered is False, 2)
        assert status.registration is RegistrationStatus.SEARCHING and status.ip is None
        assert sim.received[mark:] == []  # URC-driven: no command was sent


async def test_connect_data_waits_for_registration_by_urc() -> None:
    hook = RecordingDataHook()
    async with modem_on(data_hook=hook) as (sim, modem):
        await modem.initialise()
        await modem.connect_data("internet")  # the usbnet reboot, out of the way
        await modem.disconnect_data()
        sim.lose_registration(2)
        await modem.wait_for(lambda s: s.registered is False, 2)
        connecting = asyncio.create_task(modem.connect_data("internet"))
        await sim.command_seen("AT+CEREG?")
        assert not connecting.done()
        sim.restore_registration()
        status = await connecting
        assert status.up and hook.calls[-1] is True


async def test_connect_data_gives_up_when_never_registered() -> None:
    timeouts = dataclasses.replace(TIMEOUTS, register=0.3)
    async with modem_on(modem_options={"timeouts": timeouts}) as (sim, modem):
        await modem.initialise()
        await modem.connect_data("internet")
        await modem.disconnect_data()
        sim.lose_registration(3)
        with pytest.raises(NotRegistered) as info:
            await modem.connect_data("internet")
        assert info.value.status == "denied"
        assert not sim.data_up


@pytest.mark.parametrize(("quarters", "offset"), [
    (23, dt.timedelta(hours=5, minutes=45)),     # Nepal, +05:45
    (-14, -dt.timedelta(hours=3, minutes=30)),   # Newfoundland, -03:30
    (36, dt.timedelta(hours=9)),                 # Korea
])
async def test_network_time_with_quarter_hour_zone(quarters: int, offset: dt.timedelta) -> None:
    moment = dt.datetime(2024, 6, 1, 3, 4, 5, tzinfo=dt.UTC)
    async with modem_on(tz_quarters=quarters, wall=moment.timestamp) as (sim, modem):
        await modem.initialise()
        when = await modem.network_time()
        assert when is not None and when.utcoffset() == offset
        assert when == moment  # the same instant
        assert "AT+QLTS=2" in sim.received


async def test_switch_sim_changes_mcc_mnc() -> None:
    async with modem_on(sims=[SimCard.kt(), SimCard.skt()]) as (sim, modem):
        await modem.initialise()
        assert (await modem.sim()).mcc_mnc == "45008"
        info = await modem.switch_sim(1)
        assert "AT+QDSIM=1" in sim.received and sim.slot == 1
        assert info.state is SimState.READY and info.slot == 1
        assert (info.mcc_mnc, info.iccid) == ("45005", "89820512345678901234")
        operator = await modem.operator()
        assert (operator.name, operator.mcc_mnc) == ("SKTelecom", "45005")
        status = modem.snapshot()
        assert (status.sim_slot, status.sim_mcc_mnc, status.mcc_mnc) == (1, "45005", "45005")
        assert status.registered


async def test_switch_to_an_empty_slot() -> None:
    async with modem_on() as (_sim, modem):  # slot 1 is empty by default
        await modem.initialise()
        info = await modem.switch_sim(1)
        assert info.state is SimState.NOT_INSERTED
        assert modem.snapshot().sim_mcc_mnc is None


@pytest.mark.parametrize(("card", "wired", "expected"), [
    (SimCard.kt(), "KT", True),
    (SimCard.kt(), "KT Corp.", True),
    (SimCard.skt(), "KT", False),
    (SimCard.lgu(), "LG U+", True),
    (SimCard.kt(), "", None),
    (SimCard.kt(), "Some Cable Co", None),
])
async def test_same_carrier_flag(card: SimCard, wired: str, expected: bool | None) -> None:
    async with modem_on(sims=[card], modem_options={"wired_carrier": wired}) as (_sim, modem):
        await modem.initialise()
        await modem.sim()
        assert modem.snapshot().same_carrier is expected


async def test_same_carrier_passed_to_snapshot() -> None:
    async with modem_on() as (_sim, modem):
        await modem.initialise()
        await modem.sim()
        assert modem.snapshot(wired_carrier="KT").same_carrier is True
        assert modem.snapshot(wired_carrier="SK Broadband").same_carrier is False


async def test_registration_loss_and_return_update_the_snapshot_by_urc() -> None:
    async with modem_on() as (sim, modem):
        await modem.initialise()
        await modem.refresh()
        assert modem.snapshot().operator == "KT"
        mark = len(sim.received)
        sim.lose_registration(2)
        lost = await modem.wait_for(lambda s: s.registered is False, 2)
        assert lost.registration is RegistrationStatus.SEARCHING
        assert lost.tac is None and lost.operator is None and lost.rat is None
        sim.restore_registration()
        back = await modem.wait_for(lambda s: bool(s.registered), 2)
        assert back.registration is RegistrationStatus.HOME and back.tac == 0x1A2B
        assert back.rat is AccessTechnology.LTE
        assert sim.received[mark:] == []


async def test_unexpected_rdy_marks_the_modem_for_reinitialisation() -> None:
    async with modem_on() as (sim, modem):
        await modem.initialise()
        await modem.refresh()
        assert not modem.needs_init
        boots = modem.boots
        sim.reboot()
        assert await modem.wait_boot(boots, 2)
        status = modem.snapshot()
        assert modem.needs_init and status.reboots_seen == 1
        # registration is unknown until re-read (URCs are off after a boot); the boot
        # URCs that follow RDY (+CPIN: READY) are already applied
        assert status.registered is None and not status.data_up
        await modem.wait_for(lambda s: s.sim_state is SimState.READY, 2)
        await modem.initialise()
        assert not modem.needs_init


async def test_silent_reset_is_noticed_from_the_registration_read() -> None:
    async with modem_on() as (_sim, modem):
        await modem.initialise()
        await modem.command("AT+CEREG=0")  # as a modem reset without RDY would leave it
        await modem.registration()
        assert modem.needs_init


async def test_timeouts_are_validated() -> None:
    with pytest.raises(ValueError, match="command"):
        Timeouts(command=0)

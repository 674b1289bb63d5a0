"""Issue #10 end to end over a real pty: quirky and unparseable answers are degraded
readings (counted, last good value kept, no reset), silence still climbs the ladder; a
modem booting or rebooting under a command is waited for, re-initialised, and the query
answered."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from hw.modem.errors import ParseError
from hw.modem.health import ModemSupervisor, SupervisorPolicy
from hw.modem.parsers.registration import RegistrationStatus
from tests.hw.modem_harness import TIMEOUTS, Events, FakeSleep, modem_on

pytestmark = pytest.mark.timeout(60)

FAST = dataclasses.replace(TIMEOUTS, command=0.3, radio=0.5, boot=3.0, boot_urcs=2.0)
FAST_CHANNEL = {"default_timeout": 0.3, "resync_timeout": 0.15, "resync_attempts": 1}

#: Answers that do not parse (or only partly), each in a layout seen in the field.
QUIRKS: list[tuple[str, bytes]] = [
    ("AT+CEREG?", b'\r\n+CEREG: 2,1,"2B5C",0A,0 5,X,7\r\n\r\nOK\r\n'),
    ("AT+CEREG?", b"\r\n+CEREG: 9,99\r\n\r\nOK\r\n"),
    ("AT+CEREG?", b"\r\n+CEREG: \r\n\r\nOK\r\n"),
    ("AT+QCSQ", b'\r\n+QCSQ: "NR6G",-75,4,-11\r\n\r\nOK\r\n'),
    ("AT+QCSQ", b'\r\n+QCSQ: "LTE",-6\x00\xff5,-95\r\n\r\nOK\r\n'),
    ("AT+QCSQ", b'\r\n+QCSQ: "LTE",x,y\r\nOK\r\n'),
]


async def test_a_thousand_unparseable_answers_cause_no_reset_and_silence_still_climbs() -> None:
    counted: list[ParseError] = []
    async with modem_on(channel_options=FAST_CHANNEL,
                        modem_options={"timeouts": FAST, "on_parse_error": counted.append}
                        ) as (sim, modem):
        fake = FakeSleep()
        events = Events()
        sup = ModemSupervisor(modem, SupervisorPolicy(backoff_s=(0.0, 1.0), refresh_every=1000,
                                                      step_timeout_s=10.0, boot_timeout_s=3.0),
                              on_event=events, monotonic=fake.monotonic, sleep=fake)
        assert await sup.start()
        good = modem.snapshot()
        assert good.registered and good.rsrp_dbm == -95.0
        for command, raw in QUIRKS:
            sim.answer_raw(command, raw)
        ticks = 0
        while modem.parse_errors < 1000:
            assert await sup.tick()
            ticks += 1
        assert events.of("modem_reset") == [] and sup.resets_total == 0
        status = modem.snapshot()
        assert status.parse_errors >= 1000 and len(counted) == status.parse_errors
        # degraded, not lost: the last good readings are still there
        assert status.registered and status.tac == good.tac and status.rsrp_dbm == -95.0
        assert status.resets_total == 0 and status.last_reset_reason is None
        assert ticks >= 500  # about two unparseable answers per light poll

        # silence is still a failure: the ladder is climbed, with its reason recorded
        sim.clear_raw()
        sim.mute()
        await sup.tick()
        resets = events.of("modem_reset")
        assert resets and {r["reason"] for r in resets} == {"no_answer"}
        assert modem.snapshot().last_reset_reason == "no_answer"


async def test_registration_returns_partial_readings() -> None:
    async with modem_on() as (sim, modem):
        await modem.initialise()
        sim.lose_registration(2)
        sim.answer_raw("AT+CEREG?", b"\r\n+CEREG: 2,\xff\r\n\r\nOK\r\n")
        mark = len(sim.received)
        info = await modem.registration()  # +CEREG garbled: +CGREG and +CREG still read
        assert info.status is RegistrationStatus.SEARCHING  # the +CEREG URC's value, kept
        assert sim.received[mark:] == ["AT+CEREG?", "AT+CGREG?", "AT+CREG?"]
        assert modem.parse_errors == 1 and modem.snapshot().registered is False


async def test_error_storm_climbs_the_ladder() -> None:
    async with modem_on(channel_options=FAST_CHANNEL, modem_options={"timeouts": FAST}) as (
            sim, modem):
        fake = FakeSleep()
        events = Events()
        sup = ModemSupervisor(modem, SupervisorPolicy(backoff_s=(0.0,), refresh_every=1000,
                                                      error_storm_limit=3),
                              on_event=events, monotonic=fake.monotonic, sleep=fake)
        assert await sup.start()
        for command in ("AT+CEREG?", "AT+CGREG?", "AT+CREG?"):
            sim.answer_raw(command, b"\r\nERROR\r\n", times=3)
        assert await sup.tick() and await sup.tick()
        assert events.of("modem_reset") == []
        assert await sup.tick()
        (reset,) = events.of("modem_reset")
        assert reset["reason"] == "error_storm" and reset["step"] == "reinit"
        assert modem.snapshot().last_reset_reason == "error_storm"


async def test_registration_lost_too_long_climbs_once_per_period() -> None:
    async with modem_on(channel_options=FAST_CHANNEL, modem_options={"timeouts": FAST}) as (
            sim, modem):
        fake = FakeSleep()
        events = Events()
        sup = ModemSupervisor(modem, SupervisorPolicy(backoff_s=(0.0,), refresh_every=1000,
                                                      unregistered_limit_s=60.0),
                              on_event=events, monotonic=fake.monotonic, sleep=fake)
        assert await sup.start()
        sim.lose_registration(2)
        assert await sup.tick()  # seen unregistered: the clock starts
        fake.advance(59.0)
        assert await sup.tick() and events.of("modem_reset") == []
        fake.advance(2.0)
        await sup.tick()
        assert [r["reason"] for r in events.of("modem_reset")][:1] == ["registration_lost"]
        assert modem.snapshot().last_reset_reason == "registration_lost"


# -- boot and reboot during a session ------------------------------------------------------

async def _refresh_with(modem: Any) -> Any:
    await modem.initialise()
    return await modem.refresh()


async def test_a_modem_booting_under_the_first_command_is_waited_for() -> None:
    async with modem_on(boot_delay_s=0.5) as (sim, modem):
        sim.power_off()
        await asyncio.sleep(0)
        sim.power_cycle()  # booting: input is lost until RDY, half a second from now
        status = await _refresh_with(modem)
        assert status.registered and status.operator == "KT" and status.signal_dbm == -65
        assert status.reboots_seen == 1 and not modem.needs_init
        assert sim.echo is False  # re-initialised after the boot


async def test_a_reboot_while_a_query_is_outstanding_is_ridden_out() -> None:
    async with modem_on() as (sim, modem):
        await modem.initialise()
        sim.reboot_on("AT+COPS?")  # the firmware crashes on this query
        info = await modem.operator()
        assert info.name == "KT" and info.mcc_mnc == "45008"
        assert modem.snapshot().reboots_seen == 1
        assert not modem.needs_init and not sim.echo
        cereg_on = [c for c in sim.received if c == "AT+CEREG=2"]
        assert len(cereg_on) == 2  # URC settings restored after the reboot


async def test_a_reboot_between_commands_is_reinitialised_before_the_next() -> None:
    async with modem_on() as (sim, modem):
        await modem.initialise()
        boots = modem.boots
        sim.reboot()
        assert await modem.wait_boot(boots, 3)
        status = await modem.refresh()
        assert status.registered and status.signal_dbm == -65 and not sim.echo
        # registration URCs are on again after the reboot
        sim.lose_registration(3)
        lost = await modem.wait_for(lambda s: s.registered is False, 2)
        assert lost.registration is RegistrationStatus.DENIED


async def test_a_pin_is_never_replayed_after_a_reboot() -> None:
    async with modem_on() as (sim, modem):
        await modem.initialise()
        sim.reboot_on('AT+CPIN="1234"')
        with pytest.raises(Exception) as info:
            await modem.command('AT+CPIN="1234"')
        assert type(info.value).__name__ == "ModemRebooted"
        assert sim.received.count('AT+CPIN="1234"') == 1

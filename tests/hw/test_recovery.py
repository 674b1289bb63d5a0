"""`ModemSupervisor` end to end against the simulator over a real pty: the recovery ladder
(with gpiozero's MockFactory behind the power key), unexpected reboots, garbage, SIM
faults, carrier overlap and network time. Backoff and pulse waits go through an injected
sleep, so nothing here waits for them; only the (short) AT timeouts of a muted modem run
in real time."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from hw.gpio import PowerKey, SimulatorPower
from hw.modem.health import LADDER, ModemSupervisor, RecoveryStep, SupervisorPolicy
from hw.modem.modem import Modem
from hw.modem.parsers.registration import RegistrationStatus
from hw.modem.simulator import ModemSimulator, SimCard
from tests.hw.modem_harness import (
    TIMEOUTS,
    Events,
    FakeSleep,
    PowerKeyPin,
    modem_on,
    revive,
)

pytestmark = pytest.mark.timeout(30)

#: A hung modem must fail fast here: short command timeouts, one short resync attempt.
FAST = dataclasses.replace(TIMEOUTS, command=0.3, radio=0.5, boot=3.0)
FAST_CHANNEL = {"default_timeout": 0.3, "resync_timeout": 0.15, "resync_attempts": 1}
BACKOFF = (0.0, 1.0, 2.0, 4.0)


@asynccontextmanager
async def supervised(
    *, power: str = "pin", policy: dict[str, Any] | None = None,
    sup_options: dict[str, Any] | None = None,
    modem_options: dict[str, Any] | None = None, **simulator: Any,
) -> AsyncIterator[tuple[ModemSimulator, Modem, ModemSupervisor, Events, FakeSleep, Any]]:
    """Simulator + modem + supervisor with a fake sleep/clock and an event recorder.

    `policy`: `SupervisorPolicy` fields over the fast defaults here; `sup_options`: other
    `ModemSupervisor` keywords.

    `power`: "pin" (a PowerKey on a MockFactory pin wired to the simulator's PWRKEY),
    "sim" (SimulatorPower) or "none"."""
    mopts = {"timeouts": FAST, **(modem_options or {})}
    async with modem_on(channel_options=FAST_CHANNEL, modem_options=mopts,
                        **simulator) as (sim, modem):
        fake = FakeSleep(block=(policy or {}).get("poll_interval_s"))
        events = Events()
        factory = MockFactory(pin_class=PowerKeyPin)
        key: PowerKey | None = None
        control: Any = None
        if power == "pin":
            key = PowerKey("GPIO17", factory, pulse_s=0.7, off_wait_s=3.0, sleep=fake)
            key.pin.simulator = sim
            control = key
        elif power == "sim":
            control = SimulatorPower(sim)
        fast: dict[str, Any] = {"backoff_s": BACKOFF, "step_timeout_s": 10.0,
                                "boot_timeout_s": 3.0, "retry_after_s": 60.0, "refresh_every": 1}
        tuning = SupervisorPolicy(**{**fast, **(policy or {})})
        options: dict[str, Any] = {"power": control, "on_event": events,
                                   "monotonic": fake.monotonic, "sleep": fake}
        options.update(sup_options or {})
        supervisor = ModemSupervisor(modem, tuning, **options)
        try:
            yield sim, modem, supervisor, events, fake, key
        finally:
            if key is not None:
                key.close()


def steps(events: Events) -> list[str]:
    return [fields["step"] for fields in events.of("modem_reset")]


async def test_muted_modem_walks_the_whole_ladder_and_the_power_pin_pulses() -> None:
    async with supervised() as (sim, modem, sup, events, fake, key):
        assert await sup.start()
        assert events.items == []
        pin = key.pin
        pin.clear_states()
        fake.probe = lambda: pin.state  # the pin level during each sleep
        sim.mute()

        assert await sup.tick()

        assert steps(events) == ["reinit", "cfun_cycle", "cfun_reset", "power_cycle"]
        assert [f["attempt"] for f in events.of("modem_reset")] == [1, 2, 3, 4]
        assert {f["reason"] for f in events.of("modem_reset")} == {"no_answer"}
        # each rung reports why the one before failed: the command it could not get across
        details = [f["detail"] for f in events.of("modem_reset")]
        assert "'ATE0'" in details[1] and "'AT+CFUN=0'" in details[2]
        assert "'AT+CFUN=1,1'" in details[3]
        assert all(f["severity"] == "warning" and f["message"] for f in events.of("modem_reset"))
        (recovered,) = events.of("modem_recovered")
        assert recovered["step"] == "power_cycle" and recovered["resets_total"] == 4
        assert events.of("fault") == []

        # the power key: two pulses (off, then on), each held >= 500 ms, line released
        pin.assert_states([False, True, False, True, False])
        assert [s.state for s in pin.states] == [False, True, False, True, False]
        assert key.pulses == 2 and pin.toggles == 2
        assert fake.probed == [(0.0, False), (1.0, False), (2.0, False), (4.0, False),
                               (0.7, True), (3.0, False), (0.7, True)]
        assert all(held >= 0.5 for held, level in fake.probed if level)

        # the modem is back: booted once, re-initialised, answering
        assert sim.power == "on" and sim.boots == 1
        status = modem.snapshot()
        assert status.present and status.recovery_step is None and status.resets_total == 4
        assert status.registered and status.sim_mcc_mnc == "45008"
        assert sup.resets_total == 4 and sup.step is None and not sup.exhausted
        assert (await modem.poll()).registered
        assert "ATE0" in sim.received[-40:]


async def test_success_on_a_rung_resets_the_ladder() -> None:
    async with supervised() as (sim, modem, sup, events, fake, _key):
        assert await sup.start()
        sim.mute()
        fake.hooks[len(fake.calls) + 2] = lambda: revive(sim, modem)  # before rung 2
        mark = len(sim.received)
        assert await sup.tick()
        assert steps(events) == ["reinit", "cfun_cycle"]
        assert events.of("modem_recovered")[0]["step"] == "cfun_cycle"
        after = sim.received[mark:]
        assert "AT+CFUN=0" in after and "AT+CFUN=1" in after
        # (the boot before rung 2 is re-initialised first; the rung's own initialise follows
        # its radio cycle)
        last_ate0 = len(after) - 1 - after[::-1].index("ATE0")
        assert after.index("AT+CFUN=0") < after.index("AT+CFUN=1") < last_ate0
        assert modem.snapshot().recovery_step is None and modem.snapshot().resets_total == 2

        # the next failure starts at the bottom of the ladder again
        events.clear()
        sim.mute()
        fake.hooks[len(fake.calls) + 1] = lambda: revive(sim, modem)  # before rung 1
        assert await sup.tick()
        assert steps(events) == ["reinit"]
        assert events.of("modem_recovered")[0]["step"] == "reinit"
        assert sup.resets_total == 3 and modem.snapshot().resets_total == 3


async def test_recovery_step_is_visible_while_climbing() -> None:
    async with supervised(power="sim") as (sim, modem, sup, events, fake, _key):
        assert await sup.start()
        seen: list[tuple[str | None, int]] = []

        async def look() -> None:
            status = modem.snapshot()
            seen.append((status.recovery_step, status.resets_total))

        sim.mute()
        base = len(fake.calls)
        for n in (2, 3, 4):
            fake.hooks[base + n] = look
        assert await sup.tick()
        assert seen == [("reinit", 1), ("cfun_cycle", 2), ("cfun_reset", 3)]
        assert steps(events)[-1] == "power_cycle" and sim.boots == 1


async def test_unexpected_rdy_wakes_the_loop_and_reinitialises() -> None:
    async with supervised(power="sim", policy={"poll_interval_s": 10.0,
                                                    "refresh_every": 6}) as (
            sim, modem, sup, events, fake, _key):
        runner = asyncio.create_task(sup.run())
        try:
            async with asyncio.timeout(5):
                await fake.blocked.wait()  # started, now waiting for the next poll
            mark = len(sim.received)
            sim.reboot()
            # a reboot is an event, not a failure: re-initialised without a ladder rung
            recovered = await events.next("modem_recovered")
            assert recovered["step"] == "reboot" and recovered["reason"] == "unexpected_reboot"
            assert steps(events) == [] and sup.resets_total == 0
            after = sim.received[mark:]
            assert after[:2] == ["ATE0", "AT+CMEE=1"] and "AT+CEREG=2" in after
            assert not modem.needs_init and modem.snapshot().reboots_seen == 1
            assert modem.snapshot().resets_total == 0
            # registration URCs are on again: the snapshot follows the network by itself
            sim.lose_registration(3)
            status = await modem.wait_for(lambda s: s.registered is False, 2)
            assert status.registration is RegistrationStatus.DENIED
            assert 10.0 in fake.calls  # it was waiting for the poll, not polling
        finally:
            runner.cancel()
            with pytest.raises(asyncio.CancelledError):
                await runner


async def test_poll_loop_polls_every_interval() -> None:
    async with supervised(power="sim", policy={"poll_interval_s": 10.0,
                                                    "refresh_every": 3}) as (
            sim, _modem, sup, events, fake, _key):
        runner = asyncio.create_task(sup.run())
        try:
            async with asyncio.timeout(5):
                for _ in range(3):
                    await fake.blocked.wait()
                    fake.blocked.clear()
                    mark = len(sim.received)
                    fake.release()
                    await fake.blocked.wait()
                    polled = sim.received[mark:]
                    assert "AT+CEREG?" in polled and "AT+QCSQ" in polled
        finally:
            runner.cancel()
            with pytest.raises(asyncio.CancelledError):
                await runner
        assert events.items == []
        # start() refreshed fully; of the three polls, the third was a full refresh
        # (+COPS? twice per refresh), the other two light ones
        assert sim.received.count("AT+COPS?") == 4


async def test_line_noise_is_logged_not_a_reset(caplog: pytest.LogCaptureFixture) -> None:
    # issue #10: noise between polls is no reason to reset a modem that answers
    async with supervised(power="none", policy={"garbage_limit": 64}) as (
            sim, modem, sup, events, _fake, _key):
        assert await sup.start()
        sim.send_raw(b"\x00\xff" * 100)
        await modem.command("AT")  # everything sent before its OK has been read
        assert modem.channel.stats.garbage_bytes >= 200
        assert await sup.tick()
        assert steps(events) == [] and sup.resets_total == 0
        assert "noise bytes since the last poll" in caplog.text
        assert modem.snapshot().registered


async def test_exhausted_ladder_is_one_fault_then_retries() -> None:
    async with supervised(power="none") as (sim, modem, sup, events, fake, _key):
        assert await sup.start()
        sim.mute()
        assert not await sup.tick()
        assert steps(events) == ["reinit", "cfun_cycle", "cfun_reset"]
        faults = [f["reason"] for f in events.of("fault")]
        assert faults == ["no_power_control", "modem_unresponsive"]
        assert all(f["severity"] == "error" for f in events.of("fault"))
        status = modem.snapshot()
        assert status.present is False and status.recovery_step == "cfun_reset"
        assert status.resets_total == 3 and sup.exhausted

        # still hung: the ladder is tried again after retry_after_s, no new fault event
        events.clear()
        assert not await sup.tick()
        assert fake.calls[-len(LADDER):][0] == 60.0
        assert steps(events) == ["reinit", "cfun_cycle", "cfun_reset"]
        assert events.of("fault") == []

        # someone power-cycles it by hand: its boot is seen and re-initialised, no rung
        events.clear()
        await revive(sim, modem)
        assert await sup.tick()
        assert events.of("modem_recovered")[0]["step"] == "reboot"
        assert steps(events) == []
        assert modem.snapshot().present and not sup.exhausted
        assert modem.snapshot().recovery_step is None


async def test_sim_puk_is_a_fault_once_and_not_a_recovery_matter() -> None:
    card = SimCard.kt(pin="1234", pin_tries=0)
    async with supervised(sims=[card], modem_options={"pin": "1234"}) as (
            sim, modem, sup, events, _fake, _key):
        assert await sup.start()
        assert await sup.tick() and await sup.tick()
        (fault,) = events.of("fault")
        assert fault["reason"] == "sim_puk_required"
        assert events.of("modem_reset") == []
        assert not [c for c in sim.received if c.startswith("AT+CPIN=")]
        assert modem.snapshot().sim_fault == "puk_required"


async def test_missing_sim_is_reported_once() -> None:
    async with supervised(sims=[SimCard.absent()]) as (_sim, _modem, sup, events, _f, _k):
        assert await sup.start()
        assert await sup.tick()
        assert [f["reason"] for f in events.of("fault")] == ["sim_not_inserted"]


async def test_carrier_overlap_is_reported_once_per_change() -> None:
    async with supervised(sims=[SimCard.kt(), SimCard.skt()],
                          modem_options={"wired_carrier": "KT"}) as (
            _sim, modem, sup, events, _fake, _key):
        assert await sup.start()
        (overlap,) = events.of("carrier_overlap")
        assert overlap["same_carrier"] is True and overlap["severity"] == "warning"
        assert (overlap["mcc_mnc"], overlap["carrier"], overlap["wired_carrier"]) == (
            "45008", "KT", "KT")
        assert modem.snapshot().same_carrier is True
        assert await sup.tick() and await sup.tick()
        assert len(events.of("carrier_overlap")) == 1

        await modem.switch_sim(1)  # the SK Telecom SIM
        assert await sup.tick()
        cleared = events.of("carrier_overlap")[1]
        assert cleared["same_carrier"] is False and cleared["severity"] == "info"
        assert cleared["mcc_mnc"] == "45005"
        assert modem.snapshot().same_carrier is False
        assert await sup.tick()
        assert len(events.of("carrier_overlap")) == 2


async def test_no_overlap_no_event() -> None:
    async with supervised(sims=[SimCard.skt()], modem_options={"wired_carrier": "KT"}) as (
            _sim, modem, sup, events, _fake, _key):
        assert await sup.start()
        assert modem.snapshot().same_carrier is False
        assert events.of("carrier_overlap") == []


async def test_network_time_sets_an_unset_clock_once() -> None:
    moment = dt.datetime(2024, 6, 1, 3, 4, 5, tzinfo=dt.UTC)
    got: list[dt.datetime] = []
    options = {"set_clock": got.append, "clock_unset": lambda: True}
    async with supervised(sup_options=options, tz_quarters=23, wall=moment.timestamp) as (
            _sim, _modem, sup, events, _fake, _key):
        assert await sup.start()
        assert got == [moment] and got[0].utcoffset() == dt.timedelta(hours=5, minutes=45)
        (event,) = events.of("clock_set")
        assert event["time"] == "2024-06-01T08:49:05+05:45"
        assert await sup.tick()
        assert len(got) == 1  # not again within the hour


async def test_async_set_clock_is_awaited() -> None:
    moment = dt.datetime(2024, 6, 1, 3, 4, 5, tzinfo=dt.UTC)
    got: list[dt.datetime] = []

    async def set_clock(when: dt.datetime) -> None:
        got.append(when)

    options = {"set_clock": set_clock, "clock_unset": lambda: True}
    async with supervised(sup_options=options, wall=moment.timestamp) as (_s, _m, sup, *_):
        assert await sup.start()
        assert got == [moment]


@pytest.mark.parametrize(("unset", "year"), [(False, 2024), (True, 2019)])
async def test_clock_is_left_alone(unset: bool, year: int) -> None:
    moment = dt.datetime(year, 6, 1, 3, 4, 5, tzinfo=dt.UTC)
    got: list[dt.datetime] = []
    options = {"set_clock": got.append, "clock_unset": lambda: unset}
    async with supervised(sup_options=options, wall=moment.timestamp) as (_s, _m, sup, ev, *_):
        assert await sup.start()
        assert got == [] and ev.of("clock_set") == []


def test_ladder_order() -> None:
    assert [s.value for s in LADDER] == ["reinit", "cfun_cycle", "cfun_reset", "power_cycle"]
    assert LADDER[0] is RecoveryStep.REINIT

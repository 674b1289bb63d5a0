"""AtChannel against the EC25 simulator over a real pty and real pyserial (no serial mocks)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hw.modem.channel import AtChannel
from hw.modem.errors import (
    CommandError,
    CommandTimeout,
    ModemRebooted,
    PortClosed,
    PortOpenError,
)
from hw.modem.exchange import response_prefixes
from hw.modem.simulator import ModemSimulator, SimCard
from hw.modem.transport import SerialTransport
from hw.modem.urcs import Urc
from tests.hw.modem_support import connected

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
async def sim() -> AsyncIterator[ModemSimulator]:
    async with ModemSimulator() as modem:
        yield modem


@pytest.fixture
async def channel(sim: ModemSimulator) -> AsyncIterator[AtChannel]:
    ch = await AtChannel.open(
        sim.slave_path, default_timeout=3.0, resync_timeout=0.3, resync_attempts=2
    )
    async with ch:
        yield ch


async def test_plain_command(channel: AtChannel) -> None:
    assert channel.transport.mode == "fd"
    response = await channel.command("ATI")
    assert response.command == "ATI"
    assert response.lines == ("Quectel", "EC25", "Revision: EC25EFAR06A06M4G")
    assert response.final == "OK"
    assert response.duration_s > 0
    assert channel.stats.last_duration_s["ATI"] == response.duration_s
    csq = await channel.command("AT+CSQ")
    assert csq.value("+CSQ:") == "24,99"
    assert channel.stats.ok == 2


async def test_echo_on_then_ate0(sim: ModemSimulator, channel: AtChannel) -> None:
    assert sim.echo
    first = await channel.command("AT+CGSN")
    assert first.lines == ("866758041234567",)  # the echo is not an answer line
    assert channel.stats.echoes == 1
    await channel.command("ATE0")
    assert not sim.echo
    assert channel.stats.echoes == 2  # ATE0 itself is still echoed
    again = await channel.command("AT+CGSN")
    assert again.lines == ("866758041234567",)
    assert channel.stats.echoes == 2


async def test_urc_in_the_middle_of_an_answer_split_across_reads(
    sim: ModemSimulator, channel: AtChannel
) -> None:
    sim.chunk_size = 3
    sim.chunk_gap_s = 0.0005
    with channel.subscribe(["+CEREG:", "+QIND:"]) as urcs:
        sim.race_urc("+CEREG: 1")
        sim.race_urc("+QIND: SMS DONE")
        response = await channel.command("ATI")
        assert response.lines == ("Quectel", "EC25", "Revision: EC25EFAR06A06M4G")
        got = [urcs.get_nowait(), urcs.get_nowait()]
        assert [u.line for u in got if u] == ["+CEREG: 1", "+QIND: SMS DONE"]
        assert all(isinstance(u, Urc) and u.prefix for u in got)


async def test_urc_with_the_outstanding_commands_prefix_is_its_answer(
    sim: ModemSimulator, channel: AtChannel
) -> None:
    """The documented ambiguity rule: +CEREG: is an answer while AT+CEREG? is out."""
    with channel.subscribe(["+CEREG:"]) as urcs:
        sim.race_urc("+CEREG: 1")
        response = await channel.command("AT+CEREG?")
        assert response.lines == ("+CEREG: 0,1", "+CEREG: 1")
        assert urcs.get_nowait() is None
        sim.race_urc("+CEREG: 1")
        await channel.command("AT+CSQ")
        urc = urcs.get_nowait()
        assert urc is not None and urc.line == "+CEREG: 1"


async def test_urc_between_commands_goes_to_subscribers_and_callbacks(
    sim: ModemSimulator, channel: AtChannel
) -> None:
    seen: list[str] = []
    remove = channel.add_urc_callback(lambda urc: seen.append(urc.line), ["+QIND:"])
    sub = channel.subscribe(["+QIND:"])
    sim.emit_urc("+QIND: PB DONE")
    urc = await sub.get()
    assert urc.line == "+QIND: PB DONE"
    assert seen == ["+QIND: PB DONE"]
    remove()
    sim.emit_urc("+QIND: SMS DONE")
    assert (await sub.get()).line == "+QIND: SMS DONE"
    assert seen == ["+QIND: PB DONE"]
    sub.close()


async def test_timeout_then_resync_without_mixing_answers(
    sim: ModemSimulator, channel: AtChannel
) -> None:
    held = sim.hold("AT+COPS?")
    sim.chunk_size, sim.chunk_gap_s = 4, 0.0005  # late bytes trickle in over many reads
    with pytest.raises(CommandTimeout) as info:
        await channel.command("AT+COPS?", timeout=0.2)
    assert info.value.command == "AT+COPS?" and info.value.timeout_s == 0.2
    assert not info.value.resync
    assert not channel.in_sync and channel.unanswered == ("AT+COPS?",)

    # the next command must first resync; the late COPS answer arrives meanwhile
    marker_sent = sim.command_seen("AT+CMEE?")
    task = asyncio.create_task(channel.command("AT+CSQ"))
    await asyncio.wait_for(marker_sent, 5)
    held.set()  # late answer: +COPS: ... OK, then the marker's answer, then AT+CSQ
    response = await task
    assert response.lines == ("+CSQ: 24,99",)
    assert channel.in_sync
    assert channel.stats.resyncs == 1
    assert sim.received[-3:] == ["AT+COPS?", "AT+CMEE?", "AT+CSQ"]
    cops = await channel.command("AT+COPS?")
    assert cops.lines == ('+COPS: 0,0,"KT",7',)


async def test_resync_avoids_the_prefix_of_the_unanswered_command(
    sim: ModemSimulator, channel: AtChannel
) -> None:
    held = sim.hold("AT+CMEE?")
    sim.chunk_size, sim.chunk_gap_s = 4, 0.0005
    with pytest.raises(CommandTimeout):
        await channel.command("AT+CMEE?", timeout=0.2)
    marker_sent = sim.command_seen("AT+CSCS?")
    task = asyncio.create_task(channel.command("AT+CGMM"))
    await asyncio.wait_for(marker_sent, 5)
    held.set()  # the late "+CMEE: 1" must not be taken for the marker
    assert (await task).lines == ("EC25",)
    assert sim.received[-2:] == ["AT+CSCS?", "AT+CGMM"]


async def test_cancelled_command_leaves_the_channel_out_of_sync(
    sim: ModemSimulator, channel: AtChannel
) -> None:
    held = sim.hold("AT+CGMR")
    seen = sim.command_seen("AT+CGMR")
    task = asyncio.create_task(channel.command("AT+CGMR"))
    await asyncio.wait_for(seen, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert channel.unanswered == ("AT+CGMR",)
    held.set()
    assert (await channel.command("AT+CGMI")).lines == ("Quectel",)


async def test_reboot_mid_command_raises_and_announces_rdy(
    sim: ModemSimulator, channel: AtChannel
) -> None:
    sim.hold("AT+COPS?")
    seen = sim.command_seen("AT+COPS?")
    with channel.subscribe(["RDY"]) as boots:
        task = asyncio.create_task(channel.command("AT+COPS?"))
        await asyncio.wait_for(seen, 5)
        sim.reboot()
        with pytest.raises(ModemRebooted) as info:
            await task
        assert info.value.command == "AT+COPS?"
        assert (await boots.get()).line == "RDY"
    assert channel.stats.reboots == 1
    sim.release("AT+COPS?")
    assert (await channel.command("AT+CGMM")).lines == ("EC25",)


async def test_rdy_between_commands_is_an_event() -> None:
    async with connected() as (sim, channel):
        with channel.subscribe() as everything:
            sim.power_cycle()
            lines = [(await everything.get()).line for _ in range(6)]
        assert lines == ["RDY", "+CFUN: 1", "+CPIN: READY", "+QUSIM: 1",
                         "+QIND: SMS DONE", "+QIND: PB DONE"]
        assert channel.stats.reboots == 1
        assert channel.in_sync  # nothing was outstanding


async def test_no_sim_gives_cme_error_10() -> None:
    async with connected(sims=[SimCard.absent()]) as (_, channel):
        with pytest.raises(CommandError) as info:
            await channel.command("AT+CIMI")
        assert info.value.cme_code == 10
        assert info.value.final == "+CME ERROR: 10"
        assert info.value.command == "AT+CIMI"
        assert "'AT+CIMI'" in str(info.value)
        await channel.command("AT+CMEE=2")
        with pytest.raises(CommandError) as verbose:
            await channel.command("AT+CPIN?")
        assert verbose.value.cme_code == 10
        assert verbose.value.final == "+CME ERROR: SIM not inserted"


async def test_unknown_command_is_a_plain_error(channel: AtChannel) -> None:
    with pytest.raises(CommandError) as info:
        await channel.command("AT+FROB")
    assert info.value.final == "ERROR" and info.value.cme_code is None
    assert channel.stats.errors == 1
    assert channel.in_sync  # an error is an answer


async def test_mute_then_timeouts_then_power_cycle(
    sim: ModemSimulator, channel: AtChannel
) -> None:
    sim.mute()
    with pytest.raises(CommandTimeout) as first:
        await channel.command("AT", timeout=0.2)
    assert not first.value.resync
    with pytest.raises(CommandTimeout) as second:
        await channel.command("AT+CSQ")
    assert second.value.resync and second.value.command == "AT+CSQ"
    assert channel.stats.resync_failures == 1
    with channel.subscribe(["+QIND: PB DONE"]) as booted:
        sim.power_cycle()
        await booted.get()
    assert (await channel.command("AT+CSQ")).lines == ("+CSQ: 24,99",)


async def test_garbage_is_tolerated(sim: ModemSimulator, channel: AtChannel) -> None:
    with channel.subscribe(["+CEREG:"]) as urcs:
        sim.send_raw(b"\x00\xff\x00")
        sim.send_raw(b"\r\n\x00+CEREG: 2\xfe\r\n")
        assert (await urcs.get()).line == "+CEREG: 2"
    assert (await channel.command("AT")).final == "OK"
    assert channel.stats.garbage_bytes == 5


async def test_concurrent_commands_are_serialised(channel: AtChannel) -> None:
    results = await asyncio.gather(*(channel.command(c) for c in
                                     ("AT+CGMI", "AT+CGMM", "AT+CGMR", "AT+CSQ")))
    assert [r.lines for r in results] == [
        ("Quectel",), ("EC25",), ("EC25EFAR06A06M4G",), ("+CSQ: 24,99",)]


async def test_duration_is_measured(sim: ModemSimulator) -> None:
    outcomes: list[tuple[str, str]] = []
    sim.cops_delay_s = 0.05
    async with await AtChannel.open(
        sim.slave_path, on_command=lambda cmd, s, outcome: outcomes.append((cmd, outcome))
    ) as channel:
        response = await channel.command("AT+COPS?")
        assert response.duration_s >= 0.05
        assert channel.stats.max_duration_s["AT+COPS?"] >= 0.05
        with pytest.raises(CommandError):
            await channel.command("AT+NOPE")
    assert outcomes == [("AT+COPS?", "ok"), ("AT+NOPE", "error")]


async def test_hangup_is_port_closed(sim: ModemSimulator, channel: AtChannel) -> None:
    sub = channel.subscribe(["RDY"])
    await sim.stop()
    with pytest.raises(PortClosed):
        await sub.get()
    with pytest.raises(PortClosed) as info:
        await channel.command("AT")
    assert info.value.port == sim.slave_path


async def test_open_failure_names_the_port(tmp_path: Path) -> None:
    missing = str(tmp_path / "ttyNOPE")
    with pytest.raises(PortOpenError) as info:
        await AtChannel.open(missing)
    assert info.value.port == missing and repr(missing) in str(info.value)


async def test_malformed_commands_are_refused(channel: AtChannel) -> None:
    for bad in ("", "CSQ", "AT\rAT", "AT+CPIN=\u00e9"):
        with pytest.raises(ValueError):
            await channel.command(bad)


def test_response_prefixes() -> None:
    assert response_prefixes("AT+CEREG?") == {"+CEREG:"}
    assert response_prefixes('AT+QENG="servingcell"') == {"+QENG:"}
    assert response_prefixes("AT+CSQ;+COPS?") == {"+CSQ:", "+COPS:"}
    assert response_prefixes('AT+CGDCONT=1,"IP","a;b"') == {"+CGDCONT:"}
    assert response_prefixes("ATI") == frozenset()


# -- thread-mode transport -----------------------------------------------------------------


class AnsweringLoop(SerialTransport):
    """loop:// reads back what is written (an echo); this also writes a canned answer."""

    answer = b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n"

    async def write(self, data: bytes) -> None:
        await super().write(data)
        if data.endswith(b"\r"):
            await super().write(self.answer)


async def test_loop_url_uses_the_reader_thread() -> None:
    transport = await SerialTransport.open("loop://")
    async with transport:
        assert transport.mode == "thread"
        await transport.write(b"hello ")
        await transport.write(b"world")
        received = b""
        while received != b"hello world":
            received += await transport.read()
    with pytest.raises(PortClosed):
        await transport.read()


async def test_channel_over_loop_url() -> None:
    transport = await AnsweringLoop.open("loop://")
    async with AtChannel(transport) as channel:
        assert transport.mode == "thread"
        response = await channel.command("AT+CSQ")
        assert response.lines == ("+CSQ: 20,99",)
        assert channel.stats.echoes == 1  # loop:// echoed the command like a modem


class PromptingLoop(SerialTransport):
    """loop:// playing a modem that prompts `> ` for data, then answers on Ctrl-Z/ESC."""

    async def write(self, data: bytes) -> None:
        await super().write(data)
        if data.endswith(b"\r"):
            await super().write(b"\r\n> ")
        elif data.endswith(b"\x1a"):
            await super().write(b"\r\n+CMGS: 7\r\n\r\nOK\r\n")
        elif data == b"\x1b":
            await super().write(b"\r\nERROR\r\n")


async def test_prompt_sends_the_payload_or_aborts() -> None:
    transport = await PromptingLoop.open("loop://")
    async with AtChannel(transport) as channel:
        sent = await channel.command('AT+CMGS="+821012345678"', payload=b"hello")
        # the looped-back payload reads like the modem echoing the text
        assert sent.lines == ("hello", "+CMGS: 7")
        assert channel.stats.garbage_bytes == 1  # the echoed Ctrl-Z
        with pytest.raises(CommandError):
            await channel.command('AT+CMGS="+821012345678"')  # no payload: ESC
        assert channel.in_sync


async def test_spy_url_on_the_simulator_uses_the_thread(
    sim: ModemSimulator, tmp_path: Path
) -> None:
    log = tmp_path / "spy.txt"
    async with await AtChannel.open(f"spy://{sim.slave_path}?file={log}") as channel:
        assert channel.transport.mode == "thread"
        assert (await channel.command("AT+CGMM")).lines == ("EC25",)
        with channel.subscribe(["+QIND:"]) as urcs:
            sim.emit_urc("+QIND: SMS DONE")
            assert (await urcs.get()).line == "+QIND: SMS DONE"
    assert "TX" in log.read_text() and "AT+CGMM." in log.read_text()  # spy saw the bytes


async def test_force_thread_on_a_pty(sim: ModemSimulator) -> None:
    async with await AtChannel.open(sim.slave_path, force_thread=True) as channel:
        assert channel.transport.mode == "thread"
        assert (await channel.command("AT+CGMI")).lines == ("Quectel",)
        await sim.stop()
        with pytest.raises(PortClosed):
            await channel.command("AT")

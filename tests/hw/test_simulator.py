"""The EC25 simulator: byte-exact framing, SIM PIN/PUK, slots, data hook, power, CLI."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from hw.modem.channel import AtChannel
from hw.modem.errors import CommandError
from hw.modem.simulator import ModemSimulator, RecordingDataHook, Signal, SimCard
from hw.modem.transport import SerialTransport
from tests.hw.modem_support import connected

pytestmark = pytest.mark.timeout(20)

FINAL = re.compile(rb"\r\n(OK|ERROR|\+CME ERROR: [^\r]*)\r\n")


class Raw:
    """The driver side as plain bytes: a transport plus a buffer of what came too early."""

    def __init__(self, transport: SerialTransport) -> None:
        self.transport = transport
        self.buffer = b""

    async def _until(self, done: Callable[[], int | None]) -> bytes:
        async with asyncio.timeout(5):
            while (end := done()) is None:
                self.buffer += await self.transport.read()
        out, self.buffer = self.buffer[:end], self.buffer[end:]
        return out

    async def final(self) -> bytes:
        """Every byte up to and including the next final result code."""

        def end() -> int | None:
            match = FINAL.search(self.buffer)
            return match.end() if match else None

        return await self._until(end)

    async def exactly(self, size: int) -> bytes:
        return await self._until(lambda: size if len(self.buffer) >= size else None)

    async def exchange(self, command: bytes) -> bytes:
        await self.transport.write(command)
        return await self.final()

    async def write(self, data: bytes) -> None:
        await self.transport.write(data)


@pytest.fixture
async def sim() -> AsyncIterator[ModemSimulator]:
    async with ModemSimulator() as modem:
        yield modem


@pytest.fixture
async def port(sim: ModemSimulator) -> AsyncIterator[Raw]:
    async with await SerialTransport.open(sim.slave_path) as transport:
        yield Raw(transport)


# -- byte-exact framing --------------------------------------------------------------------


async def test_bytes_of_common_answers(sim: ModemSimulator, port: Raw) -> None:
    assert await port.exchange(b"AT\r") == b"AT\r\r\nOK\r\n"
    assert await port.exchange(b"ATI\r") == (
        b"ATI\r\r\nQuectel\r\nEC25\r\nRevision: EC25EFAR06A06M4G\r\n\r\nOK\r\n")
    assert await port.exchange(b"ATE0\r") == b"ATE0\r\r\nOK\r\n"
    assert await port.exchange(b"AT+CSQ\r") == b"\r\n+CSQ: 24,99\r\n\r\nOK\r\n"
    assert await port.exchange(b"AT+CPIN?\r") == b"\r\n+CPIN: READY\r\n\r\nOK\r\n"
    assert await port.exchange(b"AT+COPS?\r") == b'\r\n+COPS: 0,0,"KT",7\r\n\r\nOK\r\n'
    assert await port.exchange(b"AT+CGSN\r") == b"\r\n866758041234567\r\n\r\nOK\r\n"
    assert await port.exchange(b"AT+FROB\r") == b"\r\nERROR\r\n"
    assert await port.exchange(b"at+cgmm\r") == b"\r\nEC25\r\n\r\nOK\r\n"
    assert await port.exchange(b"AT+CSQ;+CGATT?\r") == (
        b"\r\n+CSQ: 24,99\r\n\r\n+CGATT: 1\r\n\r\nOK\r\n")
    assert await port.exchange(b"ATE1\r") == b"\r\nOK\r\n"
    assert await port.exchange(b"AT\r") == b"AT\r\r\nOK\r\n"


async def test_cell_and_signal_answers(sim: ModemSimulator, port: Raw) -> None:
    sim.signal = Signal(rssi_dbm=-71, rsrp_dbm=-101, rsrq_db=-12, sinr_db=8)
    await port.exchange(b"ATE0\r")
    assert await port.exchange(b"AT+CSQ\r") == b"\r\n+CSQ: 21,99\r\n\r\nOK\r\n"
    assert await port.exchange(b"AT+QCSQ\r") == (
        b'\r\n+QCSQ: "LTE",-71,-101,140,-12\r\n\r\nOK\r\n')
    assert await port.exchange(b"AT+CESQ\r") == b"\r\n+CESQ: 99,99,255,255,16,40\r\n\r\nOK\r\n"
    assert await port.exchange(b"AT+QNWINFO\r") == (
        b'\r\n+QNWINFO: "FDD LTE","45008","LTE BAND 3",1550\r\n\r\nOK\r\n')
    assert await port.exchange(b'AT+QENG="servingcell"\r') == (
        b'\r\n+QENG: "servingcell","NOCONN","LTE","FDD",450,08,1A2D001,123,1550,3,5,5,'
        b"1A2B,-101,-12,-71,14,29\r\n\r\nOK\r\n")
    assert await port.exchange(b"AT+CEREG=2\r") == b"\r\nOK\r\n"
    assert await port.exchange(b"AT+CEREG?\r") == (
        b'\r\n+CEREG: 2,1,"1A2B","1A2D001",7\r\n\r\nOK\r\n')


async def test_no_sim_errors(port: Raw, sim: ModemSimulator) -> None:
    sim.remove_sim(0)
    await port.exchange(b"ATE0\r")
    assert await port.exchange(b"AT+CPIN?\r") == b"\r\n+CME ERROR: 10\r\n"
    assert await port.exchange(b"AT+CIMI\r") == b"\r\n+CME ERROR: 10\r\n"
    assert await port.exchange(b"AT+QCCID\r") == b"\r\n+CME ERROR: 10\r\n"
    assert await port.exchange(b"AT+CMEE=2\r") == b"\r\nOK\r\n"
    assert await port.exchange(b"AT+CPIN?\r") == b"\r\n+CME ERROR: SIM not inserted\r\n"
    assert await port.exchange(b"AT+CMEE=0\r") == b"\r\nOK\r\n"
    assert await port.exchange(b"AT+CPIN?\r") == b"\r\nERROR\r\n"
    assert await port.exchange(b"AT+COPS?\r") == b"\r\n+COPS: 0\r\n\r\nOK\r\n"


async def test_boot_urcs_after_power_cycle(sim: ModemSimulator, port: Raw) -> None:
    expected = (b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\n"
                b"\r\n+QIND: SMS DONE\r\n\r\n+QIND: PB DONE\r\n")
    sim.power_cycle()
    assert await port.exactly(len(expected)) == expected
    assert sim.boots == 1


async def test_cfun_reboot_answers_ok_then_boots(
    sim: ModemSimulator, port: Raw
) -> None:
    await port.exchange(b"ATE0\r")
    await port.exchange(b"AT+CEREG=2\r")
    assert await port.exchange(b"AT+CFUN=1,1\r") == b"\r\nOK\r\n"
    assert await port.exactly(9) == b"\r\nRDY\r\n\r\n"
    await port.exactly(len(b"+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\n\r\n"
                                 b"+QIND: SMS DONE\r\n\r\n+QIND: PB DONE\r\n"))
    # settings are back to power-on defaults: echo on, CEREG n=0
    assert sim.echo
    assert await port.exchange(b"AT+CEREG?\r") == b"AT+CEREG?\r\r\n+CEREG: 0,1\r\n\r\nOK\r\n"


async def test_qpowd_then_silence_until_power_cycle(
    sim: ModemSimulator, port: Raw
) -> None:
    assert await port.exchange(b"AT+QPOWD\r") == b"AT+QPOWD\r\r\nOK\r\n"
    assert await port.exactly(16) == b"\r\nPOWERED DOWN\r\n"
    assert sim.power == "off"
    await port.write(b"AT\r")  # ignored while off
    sim.power_cycle()
    assert await port.exactly(9) == b"\r\nRDY\r\n\r\n"


async def test_mute_swallows_everything(sim: ModemSimulator, port: Raw) -> None:
    sim.mute()
    sim.emit_urc("+CEREG: 1")
    await port.write(b"AT\r")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await port.transport.read()
    assert sim.received == []  # not even parsed
    sim.power_cycle()
    assert await port.exactly(9) == b"\r\nRDY\r\n\r\n"


async def test_answers_split_across_writes(sim: ModemSimulator, port: Raw) -> None:
    sim.chunk_size, sim.chunk_gap_s = 2, 0.002
    await port.write(b"ATI\r")
    transport = port.transport
    reads: list[bytes] = []
    expected = b"ATI\r\r\nQuectel\r\nEC25\r\nRevision: EC25EFAR06A06M4G\r\n\r\nOK\r\n"
    async with asyncio.timeout(5):
        while b"".join(reads) != expected:
            reads.append(await transport.read())
    assert len(reads) > 5
    assert max(len(r) for r in reads) < len(expected)


async def test_raced_urc_lands_inside_the_answer(
    sim: ModemSimulator, port: Raw
) -> None:
    await port.exchange(b"ATE0\r")
    sim.race_urc("+CEREG: 2")
    assert await port.exchange(b"ATI\r") == (
        b"\r\nQuectel\r\n\r\n+CEREG: 2\r\nEC25\r\nRevision: EC25EFAR06A06M4G\r\n\r\nOK\r\n")
    sim.race_urc("+QIND: PB DONE")
    assert await port.exchange(b"AT\r") == b"\r\n+QIND: PB DONE\r\n\r\nOK\r\n"


async def test_clock_answers() -> None:
    fixed = dt.datetime(2024, 5, 17, 8, 30, 12, tzinfo=dt.UTC)
    async with connected(wall=fixed.timestamp) as (_, channel):
        assert (await channel.command("AT+CCLK?")).lines == ('+CCLK: "24/05/17,17:30:12+36"',)
        assert (await channel.command("AT+QLTS=2")).lines == (
            '+QLTS: "2024/05/17,17:30:12+36,0"',)
        assert (await channel.command("AT+QLTS=1")).lines == (
            '+QLTS: "2024/05/17,08:30:12+36,0"',)


# -- SIM -----------------------------------------------------------------------------------


async def test_pin_countdown_to_puk_and_unblock() -> None:
    card = SimCard.kt(pin="1234")
    async with connected(sims=[card]) as (sim, channel):
        assert (await channel.command("AT+CPIN?")).lines == ("+CPIN: SIM PIN",)
        with pytest.raises(CommandError) as locked:
            await channel.command("AT+CIMI")
        assert locked.value.cme_code == 11
        for left in (2, 1, 0):
            with pytest.raises(CommandError) as wrong:
                await channel.command("AT+CPIN=0000")
            assert wrong.value.cme_code == 16
            qpinc = await channel.command('AT+QPINC="SC"')
            assert qpinc.lines == (f'+QPINC: "SC",{left},10',)
        assert (await channel.command("AT+CPIN?")).lines == ("+CPIN: SIM PUK",)
        with pytest.raises(CommandError) as puk_needed:
            await channel.command("AT+CPIN=1234")
        assert puk_needed.value.cme_code == 12
        with channel.subscribe(["+CPIN:", "+QIND:"]) as urcs:
            await channel.command('AT+CPIN="12345678","4321"')
            assert [(await urcs.get()).line for _ in range(3)] == [
                "+CPIN: READY", "+QIND: SMS DONE", "+QIND: PB DONE"]
        assert (await channel.command("AT+CIMI")).lines == ("450081234567890",)
        # the new PIN is on the card: after a power cycle it is asked for again
        with channel.subscribe(["+QUSIM:"]) as booted:
            sim.power_cycle()
            await booted.get()
        assert (await channel.command("AT+CPIN?")).lines == ("+CPIN: SIM PIN",)
        await channel.command("AT+CPIN=4321")
        assert (await channel.command("AT+CPIN?")).lines == ("+CPIN: READY",)
        assert card.pin == "4321" and card.pin_tries == 3


async def test_right_pin_registers(sim: ModemSimulator) -> None:
    sim.insert_sim(0, SimCard.kt(pin="0000"))
    async with await AtChannel.open(sim.slave_path) as channel:
        await channel.command("AT+CEREG=1")
        assert (await channel.command("AT+CEREG?")).lines == ("+CEREG: 1,0",)
        with channel.subscribe(["+CEREG:"]) as reg:
            await channel.command("AT+CPIN=0000")
            assert (await reg.get()).line == "+CEREG: 1"
        assert (await channel.command("AT+COPS?")).lines == ('+COPS: 0,0,"KT",7',)


async def test_slot_switch_changes_imsi_and_operator() -> None:
    async with connected(sims=[SimCard.kt(), SimCard.skt()]) as (sim, channel):
        assert (await channel.command("AT+QDSIM?")).lines == ("+QDSIM: 0",)
        assert (await channel.command("AT+CIMI")).lines == ("450081234567890",)
        assert (await channel.command("AT+COPS?")).lines == ('+COPS: 0,0,"KT",7',)
        with channel.subscribe(["+QIND: PB DONE"]) as ready:
            await channel.command("AT+QDSIM=1")
            await ready.get()
        assert (await channel.command("AT+QDSIM?")).lines == ("+QDSIM: 1",)
        assert (await channel.command("AT+CIMI")).lines == ("450051234567890",)
        assert (await channel.command("AT+COPS?")).lines == ('+COPS: 0,0,"SKTelecom",7',)
        await channel.command("AT+COPS=3,2")
        assert (await channel.command("AT+COPS?")).lines == ('+COPS: 0,2,"45005",7',)
        assert (await channel.command("AT+QNWINFO")).value("+QNWINFO:") == (
            '"FDD LTE","45005","LTE BAND 3",1350')
        assert sim.sim.operator == "SKTelecom"


async def test_switch_to_an_empty_slot() -> None:
    async with connected(sims=[SimCard.kt(), SimCard.absent()]) as (sim, channel):
        with channel.subscribe(["+CPIN:"]) as cpin:
            await channel.command("AT+QDSIM=1")
            assert (await cpin.get()).line == "+CPIN: NOT READY"
        with pytest.raises(CommandError) as info:
            await channel.command("AT+CIMI")
        assert info.value.cme_code == 10
        assert sim.registration == 0


# -- registration and data -----------------------------------------------------------------


async def test_registration_loss_and_return_urcs(sim: ModemSimulator) -> None:
    hook = RecordingDataHook()
    sim.data_hook = hook
    async with await AtChannel.open(sim.slave_path) as channel:
        await channel.command("AT+CEREG=2")
        await channel.command("AT+CREG=1")
        await channel.command("AT+CGACT=1,1")
        with channel.subscribe(["+CEREG:", "+CREG:"]) as reg:
            sim.lose_registration(2)
            assert {(await reg.get()).line for _ in range(2)} == {"+CEREG: 2", "+CREG: 2"}
            sim.restore_registration()
            assert {(await reg.get()).line for _ in range(2)} == {
                '+CEREG: 1,"1A2B","1A2D001",7', "+CREG: 1"}
        assert hook.calls == [True, False]
        assert (await channel.command("AT+CGACT?")).lines == ("+CGACT: 1,0",)


async def test_data_hook_on_cgact_and_reboot(sim: ModemSimulator) -> None:
    hook = RecordingDataHook()
    sim.data_hook = hook
    async with await AtChannel.open(sim.slave_path) as channel:
        await channel.command('AT+CGDCONT=1,"IP","internet"')
        assert (await channel.command("AT+CGDCONT?")).lines == (
            '+CGDCONT: 1,"IP","internet","0.0.0.0",0,0,0,0',)
        await channel.command("AT+CGACT=1,1")
        assert hook.calls == [True]  # called before the OK
        assert (await channel.command("AT+CGPADDR=1")).lines == ('+CGPADDR: 1,"10.155.32.7"',)
        assert (await channel.command("AT+CGACT?")).lines == ("+CGACT: 1,1",)
        await channel.command("AT+CGACT=0,1")
        assert hook.calls == [True, False]
        await channel.command("AT+QNETDEVCTL=1,1,1")
        assert hook.calls == [True, False, True]
        assert (await channel.command("AT+QNETDEVCTL?")).lines == ("+QNETDEVCTL: 1,1,1,1",)
        with channel.subscribe(["RDY"]) as boots:
            sim.reboot()
            await boots.get()
        assert hook.calls == [True, False, True, False]  # down before RDY
        await channel.command("AT+CGACT=1,1")
        await channel.command("AT+CFUN=0")
        assert hook.calls == [True, False, True, False, True, False]
        with pytest.raises(CommandError) as info:
            await channel.command("AT+CGACT=1,1")  # radio off: no network
        assert info.value.cme_code == 30


async def test_cgcontrdp_bytes_carry_the_carriers_resolvers() -> None:
    """An EC25's answer (ModemManager's captured post-v9.4.0 layout) with the SIM's
    carrier's resolvers; ERROR while no context is active."""
    async with ModemSimulator(sims=[SimCard.skt()]) as sim, \
            await SerialTransport.open(sim.slave_path) as transport:
        port = Raw(transport)
        await port.exchange(b"ATE0\r")
        assert await port.exchange(b"AT+CGCONTRDP=1\r") == b"\r\nERROR\r\n"
        assert await port.exchange(b"AT+CGCONTRDP\r") == b"\r\nERROR\r\n"
        assert await port.exchange(b"AT+CGCONTRDP=?\r") == b"\r\n+CGCONTRDP: ()\r\n\r\nOK\r\n"
        assert await port.exchange(b'AT+CGDCONT=1,"IP","lte.sktelecom.com"\r') == b"\r\nOK\r\n"
        assert await port.exchange(b"AT+CGACT=1,1\r") == b"\r\nOK\r\n"
        line = (b'+CGCONTRDP: 1,5,"lte.sktelecom.com.mnc005.mcc450.gprs",'
                b'"10.155.32.7.255.255.255.255","10.155.32.7","210.220.163.82",'
                b'"219.250.36.130","0.0.0.0","0.0.0.0",0')
        assert await port.exchange(b"AT+CGCONTRDP=1\r") == b"\r\n" + line + b"\r\n\r\nOK\r\n"
        assert await port.exchange(b"AT+CGCONTRDP\r") == b"\r\n" + line + b"\r\n\r\nOK\r\n"
        assert await port.exchange(b"AT+CGCONTRDP=?\r") == (
            b"\r\n+CGCONTRDP: (1)\r\n\r\nOK\r\n")
        assert await port.exchange(b"AT+CGCONTRDP=2\r") == b"\r\nERROR\r\n"
        assert await port.exchange(b"AT+CGACT=0,1\r") == b"\r\nOK\r\n"
        assert await port.exchange(b"AT+CGCONTRDP=1\r") == b"\r\nERROR\r\n"


def test_each_carrier_has_its_own_resolvers() -> None:
    assert SimCard.kt().dns == ("168.126.63.1", "168.126.63.2")
    assert SimCard.skt().dns == ("210.220.163.82", "219.250.36.130")
    assert SimCard.lgu().dns == ("164.124.101.2", "203.248.252.2")


async def test_usbnet_setting(sim: ModemSimulator) -> None:
    async with await AtChannel.open(sim.slave_path) as channel:
        assert (await channel.command('AT+QCFG="usbnet"')).lines == ('+QCFG: "usbnet",0',)
        await channel.command('AT+QCFG="usbnet",1')
        assert (await channel.command('AT+QCFG="usbnet"')).lines == ('+QCFG: "usbnet",1',)


async def test_slow_cops_is_slow(sim: ModemSimulator) -> None:
    sim.cops_delay_s = 0.1
    async with await AtChannel.open(sim.slave_path) as channel:
        response = await channel.command("AT+COPS?")
    assert response.duration_s >= 0.1


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


async def test_ip_link_hook_in_a_namespace(netns: str) -> None:
    run("ip", "-n", netns, "link", "add", "wwan0", "type", "veth", "peer", "name", "wwan0p")
    run("ip", "-n", netns, "link", "set", "wwan0p", "up")
    async with connected(
        data_interface="wwan0", netns=netns, data_address="10.64.0.2/30"
    ) as (_, channel):
        await channel.command("AT+CGACT=1,1")
        link = run("ip", "-n", netns, "-o", "addr", "show", "dev", "wwan0").stdout
        assert "10.64.0.2/30" in link
        assert ",UP" in run("ip", "-n", netns, "-o", "link", "show", "wwan0").stdout
        await channel.command("AT+CGACT=0,1")
        assert ",UP" not in run("ip", "-n", netns, "-o", "link", "show", "wwan0").stdout
        assert "10.64.0.2" not in run("ip", "-n", netns, "addr", "show", "wwan0").stdout


# -- standalone ----------------------------------------------------------------------------


async def test_cli_links_the_pty(tmp_path: Path) -> None:
    link = tmp_path / "ttyMODEM"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hw.modem.simulator", "--link", str(link), "--operator", "SKT",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(10):
            banner = (await proc.stdout.readline()).decode()
        assert "ready" in banner and "SKTelecom 450-05" in banner, banner
        assert os.path.islink(link)
        async with await AtChannel.open(str(link)) as channel:
            assert (await channel.command("AT+COPS?")).lines == ('+COPS: 0,0,"SKTelecom",7',)
    finally:
        proc.terminate()
        async with asyncio.timeout(10):
            _, err = await proc.communicate()
    assert proc.returncode == 0, err
    assert not os.path.lexists(link)

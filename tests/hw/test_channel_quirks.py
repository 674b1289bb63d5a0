"""AtChannel against firmware quirks played byte for byte by the simulator over a pty:
finals glued to values, lowercase finals, noise, and a Wavecom `+CPIN: READY` that comes
without any final result code (issue #10)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from hw.modem.channel import AtChannel
from hw.modem.errors import CommandError
from hw.modem.simulator import ModemSimulator

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
async def sim() -> AsyncIterator[ModemSimulator]:
    async with ModemSimulator() as modem:
        yield modem


@pytest.fixture
async def channel(sim: ModemSimulator) -> AsyncIterator[AtChannel]:
    ch = await AtChannel.open(sim.slave_path, default_timeout=3.0, resync_timeout=0.5,
                              resync_attempts=2, final_grace_s=0.2)
    async with ch:
        await ch.command("ATE0")
        yield ch


@pytest.mark.parametrize(("raw", "lines", "final"), [
    (b"\r\n+CSQ: 18,99OK\r\n", ("+CSQ: 18,99",), "OK"),
    (b"\r\n+CSQ: 18,99\r\n\r\nok\r\n", ("+CSQ: 18,99",), "ok"),
    (b"\r\n+CSQ: 2\x00\xff3,99\r\n\r\nOK\r\n", ("+CSQ: 2", "3,99"), "OK"),
])
async def test_quirky_answers_end_with_their_final_not_a_timeout(
        sim: ModemSimulator, channel: AtChannel, raw: bytes, lines: tuple[str, ...],
        final: str) -> None:
    sim.answer_raw("AT+CSQ", raw, times=1)
    response = await channel.command("AT+CSQ", timeout=1.0)
    assert (response.lines, response.final, response.implied_final) == (lines, final, False)
    assert channel.stats.timeouts == 0 and channel.in_sync
    assert (await channel.command("AT+CSQ")).value("+CSQ:") == "24,99"


async def test_lowercase_cme_error_is_an_error_with_its_code(
        sim: ModemSimulator, channel: AtChannel) -> None:
    sim.answer_raw("AT+CIMI", b"\r\n+cme error: 10\r\n", times=1)
    with pytest.raises(CommandError) as info:
        await channel.command("AT+CIMI", timeout=1.0)
    assert info.value.cme_code == 10 and channel.stats.timeouts == 0


async def test_wavecom_cpin_ready_without_ok_ends_the_command(
        sim: ModemSimulator, channel: AtChannel) -> None:
    sim.answer_raw("AT+CPIN?", b"\r\n+CPIN: READY\r\n", times=1)
    response = await channel.command("AT+CPIN?", timeout=3.0)
    assert response.lines == ("+CPIN: READY",) and response.implied_final
    assert response.duration_s < 1.0  # the grace period, not the 3 s timeout
    assert channel.stats.timeouts == 0
    # a late OK could still come: the next command resyncs first and gets its own answer
    assert not channel.in_sync
    assert (await channel.command("AT+CSQ")).value("+CSQ:") == "24,99"
    assert channel.in_sync


async def test_a_normal_cpin_answer_is_not_cut_short(channel: AtChannel) -> None:
    response = await channel.command("AT+CPIN?")
    assert response.lines == ("+CPIN: READY",) and not response.implied_final
    assert response.final == "OK" and channel.in_sync

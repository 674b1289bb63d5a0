"""A SIM PIN never reaches logs, statistics or error messages, even when unanswered."""

from __future__ import annotations

import logging

import pytest

from hw.modem.errors import CommandError, CommandTimeout
from hw.modem.exchange import redact
from hw.modem.simulator import SimCard
from tests.hw.modem_support import connected


@pytest.mark.parametrize(("command", "shown"), [
    ('AT+CPIN="4321"', "AT+CPIN=<redacted>"),
    ('AT+CPIN="12345678","4321"', "AT+CPIN=<redacted>"),
    ('at+clck="SC",0,"4321"', "at+clck=<redacted>"),
    ('AT+CPWD="SC","1111","4321"', "AT+CPWD=<redacted>"),
    ("AT+CPIN?", "AT+CPIN?"),
    ("AT+CSQ", "AT+CSQ"),
])
def test_redact(command: str, shown: str) -> None:
    assert redact(command) == shown


async def test_an_unanswered_pin_entry_leaks_nowhere(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with connected(sims=[SimCard.kt(pin="1234")]) as (sim, channel):
        sim.mute()
        with pytest.raises(CommandTimeout) as info:
            await channel.command('AT+CPIN="4321"', timeout=0.3)
        assert "4321" not in str(info.value)
        with pytest.raises(CommandTimeout):  # the resync after it fails too; and logs it
            await channel.command("AT", timeout=0.3)
        assert "4321" not in repr(channel.stats)
    assert "4321" not in caplog.text


async def test_a_refused_pin_leaks_nowhere(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with connected(sims=[SimCard.kt(pin="1234")]) as (_, channel):
        with pytest.raises(CommandError) as info:
            await channel.command('AT+CPIN="9876"', timeout=2)
        assert "9876" not in str(info.value)
        assert "9876" not in repr(channel.stats)
    assert "9876" not in caplog.text

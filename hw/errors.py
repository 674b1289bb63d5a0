"""The one exception root of `hw`: `except HwError` catches every error the hardware layer
raises on purpose — the modem's (`hw.modem.errors.ModemError` and below), the LED panel's
(`hw.leds.LedError`) — while a library's own error (gpiozero cannot claim a pin, pyserial
cannot open a port) is wrapped or passed through where the docstring says so."""

from __future__ import annotations

__all__ = ["HwError"]


class HwError(Exception):
    """Base of every error raised by `hw`; subclasses carry the fields they are about."""

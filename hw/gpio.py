"""gpiozero glue: pin factories by name, and the modem's power key as a `PowerControl`.

`make_pin_factory("mock")` is gpiozero's `MockFactory` (off-target and in tests: its
`MockPin.states` records every level the pin went through); on a Pi, `"lgpio"` (the
default on current Raspberry Pi OS), `"rpigpio"`, `"pigpio"` (needs pigpiod) or
`"native"`. The names are gpiozero's own: it registers its factories as entry points
(group `gpiozero_pin_factories`, the table `GPIOZERO_PIN_FACTORY` is looked up in), so
the list here cannot drift from the installed gpiozero, and a factory another
distribution registers there is selectable too.

`PowerKey` drives the modem's PWRKEY (or RESET_N) line through a `DigitalOutputDevice`.
Quectel EC25 hardware design: pulling PWRKEY low for at least 500 ms turns the module on,
at least 650 ms turns it off; RESET_N low for 150..460 ms resets it. Boards drive these
open-collector lines through a transistor, so the GPIO is active-high by default
(`active_high=False` for a direct, active-low connection). Pulses are timed with an
injectable async `sleep`, so nothing blocks the event loop and tests do not wait.

`SimulatorPower` is the same interface over `ModemSimulator.power_cycle()` (make run, tests).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Final, Literal, Protocol

from gpiozero import DigitalOutputDevice

from hw.errors import HwError

__all__ = [
    "PIN_FACTORY_GROUP",
    "GpioError",
    "PinFactoryName",
    "PowerKey",
    "SimulatorPower",
    "make_pin_factory",
    "pin_factories",
]

#: The names the configuration accepts (`hw.pin_factory`); each is one of gpiozero's
#: entry points (a test holds them together).
PinFactoryName = Literal["mock", "lgpio", "rpigpio", "pigpio", "native"]

#: The entry-point group gpiozero registers its pin factories in.
PIN_FACTORY_GROUP: Final = "gpiozero_pin_factories"


class GpioError(HwError, ValueError):
    """A GPIO setting `field` was given the bad `value` (a `ValueError` too, as before)."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field} {value!r}: {reason}")


def pin_factories() -> dict[str, EntryPoint]:
    """Pin factory name -> gpiozero's entry point for it (not loaded: a backend's import
    may need hardware libraries that only a Pi has)."""
    return {entry.name: entry for entry in entry_points(group=PIN_FACTORY_GROUP)}


def make_pin_factory(name: str, **options: Any) -> Any:
    """A new gpiozero pin factory by config name (`hardware.pin_factory`). `options` go
    to its constructor (`pin_class=` for mock, `host=` for pigpio...). `GpioError` (a
    `ValueError`) for an unknown name; the library's own error when a backend cannot
    start here (no /dev/gpiochip, lgpio not installed...)."""
    factories = pin_factories()
    try:
        entry = factories[name]
    except KeyError:
        raise GpioError("pin_factory", name,
                        f"unknown pin factory; one of {', '.join(sorted(factories))}") from None
    return entry.load()(**options)


class PowerKey:
    """The modem's power key (or reset line) on GPIO `pin` (gpiozero name, e.g. "GPIO17"
    or 17) of pin `factory` (None: gpiozero's default).

    `power_cycle()`: mode `"pwrkey"` pulses `pulse_s` (turn off), waits `off_wait_s` for
    the module to shut down, pulses again (turn on); mode `"reset"` pulses once. The line
    is released (inactive) whatever happens, cancellation included. One power cycle at a
    time. `close()` releases the GPIO.
    """

    def __init__(
        self,
        pin: str | int,
        factory: Any = None,
        *,
        pulse_s: float = 0.7,
        mode: Literal["pwrkey", "reset"] = "pwrkey",
        off_wait_s: float = 3.0,
        active_high: bool = True,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if mode not in ("pwrkey", "reset"):
            raise GpioError("mode", mode, "must be 'pwrkey' or 'reset'")
        if pulse_s <= 0 or off_wait_s < 0:
            raise GpioError("pulse_s, off_wait_s", (pulse_s, off_wait_s),
                            "pulse_s must be positive and off_wait_s non-negative")
        self.pulse_s = pulse_s
        self.mode = mode
        self.off_wait_s = off_wait_s
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._device = DigitalOutputDevice(pin, active_high=active_high, initial_value=False,
                                           pin_factory=factory)
        self.pulses = 0

    @property
    def device(self) -> Any:
        """The gpiozero `DigitalOutputDevice`."""
        return self._device

    @property
    def pin(self) -> Any:
        """The gpiozero pin (a `MockPin` under the mock factory)."""
        return self._device.pin

    async def pulse(self) -> None:
        """Hold the line active for `pulse_s`, then release it."""
        self._device.on()
        try:
            await self._sleep(self.pulse_s)
        finally:
            self._device.off()
            self.pulses += 1

    async def power_cycle(self) -> None:
        async with self._lock:
            await self.pulse()
            if self.mode == "pwrkey":
                await self._sleep(self.off_wait_s)
                await self.pulse()

    def close(self) -> None:
        self._device.close()

    def __enter__(self) -> PowerKey:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _PowerCyclable(Protocol):
    def power_cycle(self) -> None: ...


class SimulatorPower:
    """`PowerControl` for `hw.modem.simulator.ModemSimulator`: cuts and restores its power."""

    def __init__(self, simulator: _PowerCyclable) -> None:
        self.simulator = simulator
        self.cycles = 0

    async def power_cycle(self) -> None:
        self.cycles += 1
        self.simulator.power_cycle()

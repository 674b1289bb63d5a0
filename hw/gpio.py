"""gpiozero glue: pin factories by name, and the modem's power key as a `PowerControl`.

`make_pin_factory("mock")` is gpiozero's `MockFactory` (off-target and in tests: its
`MockPin.states` records every level the pin went through); on a Pi, `"lgpio"` (the
default on current Raspberry Pi OS), `"rpigpio"`, `"pigpio"` (needs pigpiod) or
`"native"`.

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
import importlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Literal, Protocol

from gpiozero import DigitalOutputDevice

__all__ = [
    "PIN_FACTORIES",
    "PinFactoryName",
    "PowerKey",
    "SimulatorPower",
    "make_pin_factory",
]

PinFactoryName = Literal["mock", "lgpio", "rpigpio", "pigpio", "native"]

#: factory name -> (module, class) in gpiozero.pins
PIN_FACTORIES: Final[Mapping[str, tuple[str, str]]] = {
    "mock": ("gpiozero.pins.mock", "MockFactory"),
    "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory"),
    "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory"),
    "pigpio": ("gpiozero.pins.pigpio", "PiGPIOFactory"),
    "native": ("gpiozero.pins.native", "NativeFactory"),
}


def make_pin_factory(name: str, **options: Any) -> Any:
    """A new gpiozero pin factory by config name (`hardware.pin_factory`). `options` go
    to its constructor (`pin_class=` for mock, `host=` for pigpio...). `ValueError` for an
    unknown name; the library's own error when a backend cannot start here (no
    /dev/gpiochip, lgpio not installed...)."""
    try:
        module_name, class_name = PIN_FACTORIES[name]
    except KeyError:
        raise ValueError(
            f"unknown pin factory {name!r}; one of {', '.join(PIN_FACTORIES)}") from None
    module = importlib.import_module(module_name)
    return getattr(module, class_name)(**options)


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
            raise ValueError(f"mode must be 'pwrkey' or 'reset', not {mode!r}")
        if pulse_s <= 0 or off_wait_s < 0:
            raise ValueError("pulse_s must be positive and off_wait_s non-negative")
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

"""The LED panel: named LEDs on GPIO pins, each off, on or blinking.

`LedPanel({"wired": "GPIO5", ...}, factory)` builds one gpiozero `LED` per name on the
given pin factory (`hw.gpio.make_pin_factory`; `"mock"` is gpiozero's `MockFactory`,
whose `MockPin.state` shows the level of each pin). `set(name, pattern)` drives one LED;
a blink is gpiozero's own background blink (`LED.blink(background=True)`) with
`blink_s` on and `blink_s` off, a `blink_fast` the same at four times the rate. Setting
the pattern an LED already shows does nothing, so a blink is never restarted (an LED
re-set on every state change would stutter).

The panel knows nothing of what the LEDs mean (`firmware.components.leds` does). Errors about names,
patterns and settings are `LedError`s naming the field and the value; a pin that cannot be
claimed raises gpiozero's own error, after the LEDs already built are released.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal, get_args

from gpiozero import LED

from hw.errors import HwError

__all__ = ["PATTERNS", "LedError", "LedPanel", "Pattern"]

Pattern = Literal["off", "on", "blink", "blink_fast"]
PATTERNS: Final[tuple[Pattern, ...]] = get_args(Pattern)


class LedError(HwError):
    """Base of every error raised by `hw.leds` (under `hw.errors.HwError`): `field` was
    given the bad `value`."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field} {value!r}: {reason}")


class LedPanel:
    """LEDs by name on the pins of `pins` (gpiozero pin names such as "GPIO5", or numbers),
    all off to begin with. `close()` turns them off and releases the pins."""

    def __init__(self, pins: Mapping[str, str | int], factory: Any = None, *,
                 blink_s: float = 0.5, active_high: bool = True) -> None:
        if not isinstance(blink_s, int | float) or isinstance(blink_s, bool) or blink_s <= 0:
            raise LedError("blink_s", blink_s, "must be a number of seconds greater than 0")
        self.factory = factory
        self.blink_s = float(blink_s)
        self._leds: dict[str, Any] = {}
        self._states: dict[str, Pattern] = {}
        self._closed = False
        try:
            for name, pin in pins.items():
                if not isinstance(name, str) or not name:
                    raise LedError("name", name, "must be a non-empty string")
                self._leds[name] = LED(pin, active_high=active_high, initial_value=False,
                                       pin_factory=factory)
                self._states[name] = "off"
        except BaseException:
            self.close()
            raise

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._leds)

    @property
    def closed(self) -> bool:
        return self._closed

    def __contains__(self, name: object) -> bool:
        return name in self._leds

    def led(self, name: str) -> Any:
        """The gpiozero `LED` called `name` (its `.pin` is a `MockPin` under MockFactory)."""
        return self._leds[self._known(name)]

    def set(self, name: str, pattern: Pattern) -> bool:
        """Show `pattern` on LED `name`; True when that changed anything."""
        led = self._leds[self._known(name)]
        if pattern not in PATTERNS:
            raise LedError("pattern", pattern,
                           f"must be one of {', '.join(map(repr, PATTERNS))}")
        if self._states[name] == pattern:
            return False
        if pattern == "on":
            led.on()
        elif pattern == "off":
            led.off()
        else:
            period = self.blink_s if pattern == "blink" else self.blink_s / 4
            led.blink(on_time=period, off_time=period, background=True)
        self._states[name] = pattern
        return True

    def set_all(self, patterns: Mapping[str, Pattern]) -> bool:
        """`set()` each of `patterns` (validated first, so a bad entry changes nothing)."""
        for name, pattern in patterns.items():
            self._known(name)
            if pattern not in PATTERNS:
                raise LedError("pattern", pattern,
                               f"must be one of {', '.join(map(repr, PATTERNS))}")
        changed = [self.set(name, pattern) for name, pattern in patterns.items()]
        return any(changed)

    def states(self) -> dict[str, Pattern]:
        """The pattern each LED is set to (a copy)."""
        return dict(self._states)

    def close(self) -> None:
        """Stop every blink, turn the LEDs off and release their pins. Idempotent."""
        self._closed = True
        leds, self._leds = self._leds, {}
        self._states = {}
        for led in leds.values():
            led.off()  # stops a blink; a released pin keeps its last level on some boards
            led.close()

    def __enter__(self) -> LedPanel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _known(self, name: str) -> str:
        if self._closed:
            raise LedError("name", name, "the LED panel is closed")
        if name not in self._leds:
            known = ", ".join(map(repr, self._leds)) or "none"
            raise LedError("name", name, f"unknown LED; the panel has {known}")
        return name

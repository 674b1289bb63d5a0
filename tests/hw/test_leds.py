"""hw.leds: the LED panel on gpiozero's MockFactory (real gpiozero LEDs, mock pins)."""

from __future__ import annotations

from typing import Any

import pytest
from gpiozero import LED
from gpiozero.exc import GPIOPinInUse
from gpiozero.pins.mock import MockFactory

from hw.gpio import make_pin_factory
from hw.leds import LedError, LedPanel

pytestmark = pytest.mark.timeout(20)

PINS = {"wired": "GPIO5", "lte": "GPIO6", "offline": 13, "alert": "GPIO19"}


def blink_thread(panel: LedPanel, name: str) -> Any:
    """gpiozero's own record of a background blink: the LED's blink thread, or None."""
    return panel.led(name)._blink_thread


@pytest.fixture
def factory() -> MockFactory:
    return MockFactory()


@pytest.fixture
def panel(factory: MockFactory) -> Any:
    # a long blink period: nothing here depends on the blink's timing
    with LedPanel(PINS, factory, blink_s=30.0) as panel:
        yield panel


def test_every_led_starts_off(panel: LedPanel, factory: MockFactory) -> None:
    assert panel.names == ("wired", "lte", "offline", "alert")
    assert panel.states() == dict.fromkeys(PINS, "off")
    assert [factory.pin(n).state for n in (5, 6, 13, 19)] == [False] * 4


def test_on_and_off_drive_the_pin(panel: LedPanel, factory: MockFactory) -> None:
    assert panel.set("wired", "on") is True
    assert factory.pin(5).state is True
    assert factory.pin(6).state is False
    assert panel.set("wired", "on") is False
    assert panel.set("wired", "off") is True
    assert factory.pin(5).state is False
    factory.pin(5).assert_states([False, True, False])
    assert panel.states()["wired"] == "off"


def test_blink_is_a_gpiozero_background_blink_with_the_configured_period(
        panel: LedPanel) -> None:
    assert blink_thread(panel, "lte") is None
    assert panel.set("lte", "blink") is True
    thread = blink_thread(panel, "lte")
    assert thread is not None and thread.is_alive()
    assert thread._args == (30.0, 30.0, None)  # on_time, off_time, forever
    assert panel.states()["lte"] == "blink"


def test_blinking_again_does_not_restart_the_blink(panel: LedPanel) -> None:
    panel.set("lte", "blink")
    thread = blink_thread(panel, "lte")
    assert panel.set("lte", "blink") is False
    assert panel.set_all({"lte": "blink", "wired": "on"}) is True
    assert blink_thread(panel, "lte") is thread and thread.is_alive()


def test_on_or_off_stops_a_blink(panel: LedPanel, factory: MockFactory) -> None:
    panel.set("offline", "blink")
    thread = blink_thread(panel, "offline")
    panel.set("offline", "on")
    assert blink_thread(panel, "offline") is None and not thread.is_alive()
    assert factory.pin(13).state is True
    panel.set("offline", "blink")
    panel.set("offline", "off")
    assert blink_thread(panel, "offline") is None
    assert factory.pin(13).state is False


def test_an_unknown_led_is_an_error_naming_it(panel: LedPanel) -> None:
    with pytest.raises(LedError, match=r"^name 'wierd': unknown LED; the panel has 'wired'") \
            as info:
        panel.set("wierd", "on")
    assert (info.value.field, info.value.value) == ("name", "wierd")


def test_a_bad_pattern_is_an_error_naming_it_and_changes_nothing(
        panel: LedPanel, factory: MockFactory) -> None:
    with pytest.raises(LedError, match=r"^pattern 'flash': must be one of 'off', 'on', 'blink'"):
        panel.set("alert", "flash")  # type: ignore[arg-type]
    with pytest.raises(LedError, match=r"pattern 'ON'"):
        panel.set_all({"wired": "on", "alert": "ON"})  # type: ignore[dict-item]
    assert panel.states() == dict.fromkeys(PINS, "off")
    assert factory.pin(5).state is False


def test_bad_blink_period(factory: MockFactory) -> None:
    for bad in (0, -1.0, True):
        with pytest.raises(LedError, match=rf"^blink_s {bad!r}: must be"):
            LedPanel(PINS, factory, blink_s=bad)


def test_close_turns_off_stops_blinks_and_releases_the_pins(factory: MockFactory) -> None:
    panel = LedPanel(PINS, factory, blink_s=30.0)
    panel.set("wired", "on")
    panel.set("lte", "blink")
    thread = blink_thread(panel, "lte")
    with pytest.raises(GPIOPinInUse):
        LED("GPIO5", pin_factory=factory)
    panel.close()
    assert panel.closed and panel.states() == {}
    assert not thread.is_alive()
    assert factory.pin(5).state is False and factory.pin(6).state is False
    LED("GPIO5", pin_factory=factory).close()  # the pin is free again
    panel.close()  # idempotent
    with pytest.raises(LedError, match=r"^name 'wired': the LED panel is closed"):
        panel.set("wired", "on")


def test_a_pin_in_use_releases_the_leds_already_built(factory: MockFactory) -> None:
    with pytest.raises(GPIOPinInUse):
        LedPanel({"wired": "GPIO5", "lte": "GPIO5"}, factory)
    LED("GPIO5", pin_factory=factory).close()  # not left claimed by the half-built panel


def test_the_mock_factory_by_config_name() -> None:
    factory = make_pin_factory("mock")
    with LedPanel({"alert": "GPIO19"}, factory) as panel:
        panel.set("alert", "on")
        assert factory.pin(19).state is True

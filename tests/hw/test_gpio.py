"""hw.gpio: pin factories by name and the power key, on gpiozero's MockFactory."""

from __future__ import annotations

import asyncio
from typing import get_args, get_type_hints

import pytest
from gpiozero.pins.mock import MockFactory, MockPin

from firmware.config.schema import HwConfig
from hw.errors import HwError
from hw.gpio import (
    GpioError,
    PinFactoryName,
    PowerKey,
    SimulatorPower,
    make_pin_factory,
    pin_factories,
)
from hw.modem.simulator import ModemSimulator
from tests.hw.modem_harness import FakeSleep

pytestmark = pytest.mark.timeout(20)


#: config name -> the gpiozero class its entry point names (gpiozero's own registrations)
FACTORY_CLASSES = [
    ("mock", "gpiozero.pins.mock:MockFactory"),
    ("lgpio", "gpiozero.pins.lgpio:LGPIOFactory"),
    ("rpigpio", "gpiozero.pins.rpigpio:RPiGPIOFactory"),
    ("pigpio", "gpiozero.pins.pigpio:PiGPIOFactory"),
    ("native", "gpiozero.pins.native:NativeFactory"),
]


@pytest.mark.parametrize(("name", "target"), FACTORY_CLASSES)
def test_every_configurable_factory_is_a_gpiozero_entry_point(name: str, target: str) -> None:
    assert pin_factories()[name].value == target


def test_the_config_names_are_the_table() -> None:
    names = {name for name, _ in FACTORY_CLASSES}
    assert set(get_args(PinFactoryName)) == names
    assert set(get_args(get_type_hints(HwConfig)["pin_factory"])) == names


def test_mock_factory_by_name() -> None:
    factory = make_pin_factory("mock")
    assert isinstance(factory, MockFactory)
    assert isinstance(factory.pin(17), MockPin)


@pytest.mark.parametrize("name", ["gpiod", "", "Mock", "MockFactory"])
def test_unknown_factory_is_a_clear_error(name: str) -> None:
    with pytest.raises(GpioError, match=r"pin_factory .*: unknown pin factory; one of .*lgpio") \
            as caught:
        make_pin_factory(name)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, HwError)
    assert (caught.value.field, caught.value.value) == ("pin_factory", name)


async def test_pwrkey_power_cycle_is_two_timed_pulses() -> None:
    fake = FakeSleep()
    with PowerKey("GPIO17", MockFactory(), pulse_s=0.6, off_wait_s=5.0, sleep=fake) as key:
        pin = key.pin
        fake.probe = lambda: pin.state
        await key.power_cycle()
        pin.assert_states([False, True, False, True, False])
        assert len(pin.states) == 5
        assert fake.probed == [(0.6, True), (5.0, False), (0.6, True)]
        assert key.pulses == 2 and not pin.state


async def test_reset_mode_is_one_pulse_and_active_low_inverts_the_line() -> None:
    fake = FakeSleep()
    factory = MockFactory()
    with PowerKey(27, factory, pulse_s=0.2, mode="reset", active_high=False,
                  sleep=fake) as key:
        pin = key.pin
        assert pin.state is True  # inactive = high on an active-low line
        fake.probe = lambda: pin.state
        await key.power_cycle()
        assert [s.state for s in pin.states][-3:] == [True, False, True]
        assert fake.probed == [(0.2, False)]


async def test_the_line_is_released_when_cancelled_mid_pulse() -> None:
    holding = asyncio.Event()

    async def slow(seconds: float) -> None:
        holding.set()
        await asyncio.Event().wait()

    with PowerKey("GPIO17", MockFactory(), sleep=slow) as key:
        task = asyncio.create_task(key.power_cycle())
        await holding.wait()
        assert key.pin.state is True
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert key.pin.state is False


async def test_real_sleep_pulse_length() -> None:
    with PowerKey("GPIO17", MockFactory(), pulse_s=0.05, mode="reset") as key:
        await key.power_cycle()
        high = key.pin.states[-1]
        assert high.state is False and 0.04 <= high.timestamp < 0.5


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        PowerKey("GPIO17", MockFactory(), mode="toggle")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PowerKey("GPIO17", MockFactory(), pulse_s=0)


async def test_simulator_power_boots_the_simulator() -> None:
    async with ModemSimulator() as sim:
        power = SimulatorPower(sim)
        sim.mute()
        await power.power_cycle()
        assert power.cycles == 1 and sim.power in ("booting", "on")

"""firmware.components.leds: the LED pattern as a view of the box state, and the
component that publishes it in `BoxState.leds` and drives the panel (gpiozero MockFactory
pins)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from gpiozero.pins.mock import MockFactory

from firmware.api import build_app
from firmware.components.context import BoxContext
from firmware.components.leds import LedComponent, build_leds, led_pattern
from firmware.config import load_config, load_config_text
from firmware.config.schema import LED_NAMES, HwConfig
from firmware.errors import ConfigError
from firmware.metrics import registry_for
from firmware.state import BoxState
from firmware.status import status_document
from firmware.tokens import TokenStore
from hw.leds import LedPanel
from tests.support import openapi

pytestmark = pytest.mark.timeout(20)

T0 = datetime(2021, 10, 25, 11, 20, tzinfo=UTC)
PINS = {"wired": "GPIO5", "lte": "GPIO6", "offline": "GPIO13", "alert": "GPIO19"}
NUMBERS = {"wired": 5, "lte": 6, "offline": 13, "alert": 19}
EXAMPLE = Path(__file__).parents[2] / "firmware" / "data" / "example.toml"
MINIMAL = '[device]\nid = "store-0001"\n[payments]\ngateway_url = "https://gateway.example"\n'


def make_state() -> BoxState:
    return BoxState("store-0001", "1.2.3", wall=lambda: T0)


def box(active: str = "wired", wired: str = "up", lte: str = "standby", *,
        decided: bool = True, queued: int = 0, **modem: Any) -> BoxState:
    """A box state: the active uplink, each link's state, the queue, modem fields.
    `decided=False` is the boot before the failover engine's first decision."""
    state = make_state()
    state.update(state.uplink, active=active, since=T0 if decided else None)
    state.update(state.uplink.wired, state=wired)
    state.update(state.uplink.lte, state=lte)
    state.update(state.payments, queued=queued, queued_amount=12500 * queued)
    if modem:
        state.update(state.modem, **modem)
    return state


def failing(component_state: str) -> BoxState:
    state = box()
    state.update(state.component("modem"), state=component_state, restarts=1,
                 last_error="PortOpenError: no such port")
    state.update(state.component("payments"), state="running")
    return state


def pattern(wired: str, lte: str, offline: str, alert: str) -> dict[str, str]:
    return {"wired": wired, "lte": lte, "offline": offline, "alert": alert}


CASES: list[tuple[str, Callable[[], BoxState], dict[str, str]]] = [
    ("boot, nothing known yet", lambda: box("none", "unknown", "unknown", decided=False),
     pattern("off", "off", "off", "off")),
    ("wired up, LTE hot standby", lambda: box(),
     pattern("on", "blink", "off", "off")),
    ("wired up, LTE standby shown as up", lambda: box(lte="up"),
     pattern("on", "blink", "off", "off")),
    ("wired degraded but carrying", lambda: box(wired="degraded"),
     pattern("blink", "blink", "off", "off")),
    ("wired up, LTE down", lambda: box(lte="down"),
     pattern("on", "off", "off", "off")),
    ("wired up, LTE unknown", lambda: box(lte="unknown"),
     pattern("on", "off", "off", "off")),
    ("failed over: wired down, LTE active", lambda: box("lte", "down", "up"),
     pattern("off", "on", "off", "off")),
    ("on LTE, wired back but not yet stable", lambda: box("lte", "up", "up"),
     pattern("on", "on", "off", "off")),
    ("on LTE, degraded", lambda: box("lte", "down", "degraded"),
     pattern("off", "on", "off", "off")),
    ("offline: both down, nothing queued yet", lambda: box("none", "down", "down"),
     pattern("off", "off", "on", "off")),
    ("offline with queued payments", lambda: box("none", "down", "down", queued=3),
     pattern("off", "off", "on", "off")),
    ("both down from boot, no decision ever taken",
     lambda: box("none", "down", "down", decided=False),
     pattern("off", "off", "on", "off")),
    ("boot: wired down, LTE not known yet", lambda: box("none", "down", "unknown",
                                                          decided=False),
     pattern("off", "off", "off", "off")),
    ("back on wired, queue waiting to be forwarded", lambda: box(queued=2),
     pattern("on", "blink", "blink", "off")),
    ("on LTE, queue waiting to be forwarded", lambda: box("lte", "down", "up", queued=1),
     pattern("off", "on", "blink", "off")),
    ("queue left from before a restart, no verdict yet",
     lambda: box("none", "unknown", "unknown", decided=False, queued=4),
     pattern("off", "off", "blink", "off")),
    ("LTE SIM on the wired line's carrier", lambda: box(same_carrier_as_wired=True),
     pattern("on", "blink", "off", "blink")),
    ("LTE SIM on another carrier", lambda: box(same_carrier_as_wired=False),
     pattern("on", "blink", "off", "off")),
    ("SIM PIN refused", lambda: box(lte="down", sim="sim_pin", sim_fault="pin_rejected"),
     pattern("on", "off", "off", "blink")),
    ("no SIM inserted", lambda: box(lte="down", sim="not_inserted"),
     pattern("on", "off", "off", "blink")),
    ("SIM ready", lambda: box(sim="ready"),
     pattern("on", "blink", "off", "off")),
    ("a component restarting", lambda: failing("restarting"),
     pattern("on", "blink", "off", "blink")),
    ("a component failed", lambda: failing("failed"),
     pattern("on", "blink", "off", "blink")),
    ("a component that restarted and runs again", lambda: failing("running"),
     pattern("on", "blink", "off", "off")),
    ("everything wrong at once",
     lambda: box("none", "down", "down", queued=7, same_carrier_as_wired=True,
                 sim_fault="puk_required"),
     pattern("off", "off", "on", "blink")),
]


@pytest.mark.parametrize(("make", "expected"), [(m, e) for _, m, e in CASES],
                         ids=[name for name, _, _ in CASES])
def test_led_pattern(make: Callable[[], BoxState], expected: dict[str, str]) -> None:
    shown = led_pattern(make())
    assert shown == expected
    assert tuple(shown) == LED_NAMES


def test_led_pattern_only_reads_the_state() -> None:
    state = box("none", "down", "down", queued=2, same_carrier_as_wired=True)
    revision = state.revision
    led_pattern(state)
    assert state.revision == revision and state.leds == {}


# --------------------------------------------------------------------------- component


async def until(state: BoxState, check: Callable[[], bool]) -> None:
    """Wait for state changes until `check()` holds (no polling, no sleeps)."""
    async with asyncio.timeout(5):
        while not check():
            await state.wait_changed(state.revision)


class Running:
    def __init__(self, state: BoxState, component: LedComponent, task: asyncio.Task[None],
                 factory: MockFactory) -> None:
        self.state = state
        self.component = component
        self.task = task
        self.factory = factory

    def pins(self) -> dict[str, bool]:
        return {name: self.factory.pin(n).state for name, n in NUMBERS.items()}

    def blinking(self) -> set[str]:
        panel = self.component.panel
        assert panel is not None
        return {name for name in panel.names if panel.led(name)._blink_thread is not None}


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    state = make_state()
    factory = MockFactory()
    opened: list[LedPanel] = []

    def open_panel() -> LedPanel:
        opened.append(LedPanel(PINS, factory, blink_s=30.0))
        return opened[-1]

    component = LedComponent(state, open_panel)
    task = asyncio.create_task(component.run())
    try:
        await until(state, lambda: bool(state.leds))
        yield Running(state, component, task, factory)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert all(panel.closed for panel in opened)


async def test_component_publishes_the_pattern_and_drives_the_pins(running: Running) -> None:
    state = running.state
    assert state.leds == pattern("off", "off", "off", "off")
    assert running.pins() == dict.fromkeys(NUMBERS, False)
    assert status_document(state)["leds"] == state.leds

    # wired comes up, LTE in hot standby
    state.update(state.uplink, active="wired", since=T0)
    state.update(state.uplink.wired, state="up")
    state.update(state.uplink.lte, state="standby")
    await until(state, lambda: state.leds == pattern("on", "blink", "off", "off"))
    assert running.pins()["wired"] is True
    assert running.blinking() == {"lte"}
    panel = running.component.panel
    assert panel is not None
    lte_blink = panel.led("lte")._blink_thread

    # changes that leave the LTE LED blinking do not restart its blink
    state.update(state.modem, signal_dbm=-80)
    state.update(state.payments, queued=1)
    await until(state, lambda: state.leds["offline"] == "blink")
    assert panel.led("lte")._blink_thread is lte_blink
    assert running.blinking() == {"lte", "offline"}
    state.update(state.payments, queued=0)
    await until(state, lambda: state.leds["offline"] == "off")
    assert panel.led("lte")._blink_thread is lte_blink and lte_blink.is_alive()

    # the wired line goes down, traffic on LTE, payments queue up after a while
    state.update(state.uplink.wired, state="down")
    state.update(state.uplink, active="lte")
    state.update(state.uplink.lte, state="up")
    await until(state, lambda: state.leds == pattern("off", "on", "off", "off"))
    assert running.pins() == {"wired": False, "lte": True, "offline": False, "alert": False}
    assert running.blinking() == set()

    # no uplink works: standing in
    state.update(state.uplink.lte, state="down")
    state.update(state.uplink, active="none")
    state.update(state.payments, queued=2)
    await until(state, lambda: state.leds["offline"] == "on")
    assert running.pins() == {"wired": False, "lte": False, "offline": True, "alert": False}

    # wired is back, the queue waits for the forwarder; the installer is needed
    state.update(state.uplink, active="wired")
    state.update(state.uplink.wired, state="up")
    state.update(state.modem, same_carrier_as_wired=True)
    await until(state, lambda: state.leds == pattern("on", "off", "blink", "blink"))
    assert running.blinking() == {"offline", "alert"}
    assert running.pins()["wired"] is True and running.pins()["lte"] is False

    state.update(state.payments, queued=0)
    state.update(state.modem, same_carrier_as_wired=False)
    await until(state, lambda: state.leds == pattern("on", "off", "off", "off"))
    assert running.blinking() == set()
    assert running.pins() == {"wired": True, "lte": False, "offline": False, "alert": False}


def test_only_a_change_of_the_pattern_is_recorded_as_a_change() -> None:
    state = box()
    component = LedComponent(state, lambda: LedPanel(PINS, MockFactory()))
    with LedPanel(PINS, MockFactory(), blink_s=30.0) as panel:
        before = state.revision
        assert component.show(panel) == before + 1  # the first pattern is news
        assert component.show(panel) == before + 1
        state.update(state.modem, rsrp_dbm=-95.0)  # no LED cares
        assert component.show(panel) == before + 2
        assert state.leds == pattern("on", "blink", "off", "off")
        state.update(state.uplink.wired, state="degraded")
        assert component.show(panel) == before + 4  # the writer's change, then the LEDs'
        assert state.leds["wired"] == "blink" and panel.states()["wired"] == "blink"


async def test_the_panel_is_closed_and_pins_released_on_cancel() -> None:
    state = make_state()
    state.update(state.uplink, active="wired", since=T0)
    state.update(state.uplink.wired, state="up")
    factory = MockFactory()
    component = LedComponent(state, lambda: LedPanel(PINS, factory, blink_s=30.0))
    task = asyncio.create_task(component.run())
    await until(state, lambda: bool(state.leds))
    assert factory.pin(5).state is True
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert component.panel is None
    assert factory.pin(5).state is False
    LedPanel(PINS, factory).close()  # every pin is free again


# --------------------------------------------------------------------------- composition


def context_for(text: str, tmp_path: Path) -> BoxContext:
    config = load_config_text(text)
    state = BoxState(config.device.id, "1.2.3", wall=lambda: T0)
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text("secret-token-0123456789\n")
    tokens_file.chmod(0o600)
    tokens = TokenStore(str(tokens_file))
    return BoxContext(config, state, tokens, build_app(state, tokens, registry_for(state)))


async def test_build_leds_from_the_config_drives_mock_pins(tmp_path: Path) -> None:
    context = context_for(MINIMAL + '[hw]\npin_factory = "mock"\nled_blink_s = 0.25\n'
                                    '[hw.led_pins]\nwired = "GPIO20"\nalert = "GPIO21"\n',
                          tmp_path)
    state = context.state
    state.update(state.uplink, active="wired", since=T0)
    state.update(state.uplink.wired, state="up")
    state.update(state.modem, sim="not_inserted")
    component = await build_leds(context)
    assert component.name == "leds"
    task = asyncio.create_task(component.run())
    try:
        await until(state, lambda: bool(state.leds))
        panel = component.panel
        assert panel is not None
        assert panel.names == ("wired", "alert")  # only the LEDs fitted
        assert panel.blink_s == 0.25
        assert panel.factory.pin(20).state is True
        assert panel.led("alert")._blink_thread is not None
        # the status still shows all four LEDs
        assert state.leds == pattern("on", "off", "off", "blink")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_v1_status_shows_the_four_leds(tmp_path: Path) -> None:
    context = context_for(MINIMAL, tmp_path)
    state = context.state
    state.update(state.uplink, active="lte", since=T0)
    state.update(state.uplink.wired, state="down")
    state.update(state.uplink.lte, state="up")
    state.update(state.payments, queued=1)
    component = LedComponent(state, lambda: LedPanel(PINS, MockFactory()))
    task = asyncio.create_task(component.run())
    async with TestClient(TestServer(context.app), trace_configs=openapi.trace_configs()) as client:
        try:
            await until(state, lambda: bool(state.leds))
            response = await client.get("/v1/status",
                                        headers={"Authorization": "Bearer secret-token-0123456789"})
            assert response.status == 200
            doc = await response.json()
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert doc["leds"] == {"wired": "off", "lte": "on", "offline": "blink", "alert": "off"}
    assert set(doc["leds"]) == set(LED_NAMES)
    assert set(doc["leds"].values()) <= {"off", "on", "blink"}


# --------------------------------------------------------------------------- configuration


def test_led_config_defaults_and_example() -> None:
    defaults = load_config_text(MINIMAL).hw
    assert defaults.led_pins == PINS
    assert defaults.led_blink_s == 0.5
    assert load_config(EXAMPLE).hw == defaults  # the example documents every hw key
    hw_keys = {f.name for f in dataclasses.fields(HwConfig)}
    text = EXAMPLE.read_text()
    assert all(f"\n{key} =" in text or f"[hw.{key}]" in text for key in hw_keys)
    # each config's own table
    assert defaults.led_pins is not HwConfig().led_pins


def test_an_led_left_out_is_not_fitted() -> None:
    assert load_config_text(MINIMAL + '[hw]\nled_pins = {}\n').hw.led_pins == {}


@pytest.mark.parametrize(("text", "problem"), [
    ('[hw]\nled_pins = {wird = "GPIO5"}\n',
     "box.toml:6: hw.led_pins: unknown LED 'wird' (did you mean 'wired'?); the LEDs are "
     "'wired', 'lte', 'offline', 'alert'"),
    ('[hw]\nled_pins = {power = "GPIO5"}\n',
     "box.toml:6: hw.led_pins: unknown LED 'power'; the LEDs are "
     "'wired', 'lte', 'offline', 'alert'"),
    ('[hw.led_pins]\nwired = "GPIO5"\nlte = 6\n',
     "box.toml:5: hw.led_pins: must be a table whose values are each a string, got lte = 6"),
    ('[hw]\nled_pins = "GPIO5"\n',
     "box.toml:6: hw.led_pins: must be a table whose values are each a string, "
     "got 'GPIO5'"),
    ('[hw]\nled_pins = {wired = "GPIO5", alert = "GPIO5"}\n',
     "box.toml:6: hw.led_pins: LEDs 'wired' and 'alert' are both on pin 'GPIO5'"),
    ('[hw]\nled_pins = {wired = " "}\n',
     "box.toml:6: hw.led_pins: LED 'wired' has an empty pin name ' '"),
    ('[hw]\npin_factory = "mock"\nled_blink_s = 0\n',
     "box.toml:7: hw.led_blink_s: must be greater than 0, got 0"),
    ('[hw]\nled_blink_s = "fast"\n',
     "box.toml:6: hw.led_blink_s: must be a number, got 'fast'"),
])
def test_bad_led_config_names_key_and_value(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(MINIMAL + text, "box.toml")
    assert [str(p) for p in info.value.problems] == [problem]


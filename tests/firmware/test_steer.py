"""Steering on the box: `[steer]`, `uplink.steer` in the status, the LED, the events."""

from __future__ import annotations

from pathlib import Path

import pytest

from failover.routes import Uplink
from failover.steer import SteerChange
from firmware.components.failover import FailoverComponent
from firmware.components.leds import led_pattern
from firmware.components.steer import (
    SteerDestinationError,
    build_steering,
    fleet_destinations,
    gateway_destinations,
    steer_config,
)
from firmware.config import load_config_text
from firmware.errors import ConfigError
from firmware.status import status_document
from payments_cache.uplinks import UplinkSignal
from tests.firmware.test_leds import MINIMAL, box, context_for, pattern
from tests.support import openapi

pytestmark = pytest.mark.timeout(20)


def steered_box() -> FailoverComponent:
    state = box(wired="degraded")
    return FailoverComponent(state, UplinkSignal("up"), build=None)


def test_steer_and_unsteer_show_in_status_leds_and_events() -> None:
    component = steered_box()
    state = component.state
    generation = component.signal.generation
    component.on_steer(SteerChange(True, "brownout: wired round-trip loss 58% over 10.0s", 10.0),
                       ["198.51.100.10/32"], 0)
    steer = state.uplink.steer
    assert steer.steered and steer.steers_total == 1 and steer.since is not None
    assert component.signal.generation == generation + 1
    assert led_pattern(state) == pattern("blink", "blink_fast", "off", "off")
    event = state.events.recent()[-1]
    assert event.kind == "steer" and event.severity == "warning"
    assert event.data["destinations"] == ["198.51.100.10/32"]
    doc = status_document(state)
    assert doc["uplink"]["steer"]["steered"] is True
    openapi.check_answer("get", "/v1/status", doc)

    component.on_steer(SteerChange(False, "wired recovered", 50.0), [], 12345)
    assert not steer.steered and steer.steers_total == 1 and steer.lte_bytes == 12345
    assert state.events.recent()[-1].kind == "unsteer"
    assert led_pattern(state) == pattern("blink", "blink", "off", "off")
    openapi.check_answer("get", "/v1/status", status_document(state))


def test_steer_config_defaults_and_mapping() -> None:
    config = load_config_text(MINIMAL)
    assert config.steer.enabled
    policy = steer_config(config)
    assert policy.steer_loss == pytest.approx(0.50)
    assert policy.unsteer_loss == pytest.approx(0.10)
    assert policy.steer_min_interval_s == 300.0


@pytest.mark.parametrize(("table", "key"), [
    ("steer_loss_pct = 0", "steer.steer_loss_pct"),
    ("unsteer_loss_pct = 60", "steer.unsteer_loss_pct"),
    ("unsteer_latency_ms = 900", "steer.unsteer_latency_ms"),
    ('destinations = ["nope"]', "steer.destinations"),
])
def test_steer_config_is_checked(table: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config_text(MINIMAL + f"[steer]\n{table}\n")


def test_steer_latency_must_be_below_the_wired_probe_deadline() -> None:
    """A probe answered after its deadline counts as lost: a latency threshold at or past
    it could never steer (failover/steer.py, "Latency")."""
    assert steer_config(load_config_text(MINIMAL)).steer_latency_ms < 600.0
    with pytest.raises(ConfigError, match=r"steer\.steer_latency_ms.*600 ms.*600\.0"):
        load_config_text(MINIMAL + "[steer]\nsteer_latency_ms = 600.0\n")
    rounds = MINIMAL + '[probes]\ndetector = "rounds"\n'
    assert steer_config(load_config_text(
        rounds + "[steer]\nsteer_latency_ms = 600.0\n")).steer_latency_ms == 600.0
    with pytest.raises(ConfigError, match=r"1000 ms with probes\.detector 'rounds'"):
        load_config_text(rounds + "timeout_s = 1.0\n[steer]\nsteer_latency_ms = 1000\n")


async def test_gateway_destinations() -> None:
    assert await gateway_destinations("https://198.51.100.10:8443/v1", []) == ["198.51.100.10"]
    assert await gateway_destinations("http://198.51.100.10", ["203.0.113.0/24"]) == [
        "198.51.100.10", "203.0.113.0/24"]
    assert await gateway_destinations("https://gw.invalid", ["203.0.113.7"]) == ["203.0.113.7"]
    with pytest.raises(SteerDestinationError, match=r"gw\.invalid"):
        await gateway_destinations("https://gw.invalid", [])


async def test_fleet_destinations() -> None:
    assert await fleet_destinations("mqtts://192.0.2.5:8883") == ["192.0.2.5"]
    assert await fleet_destinations("mqtt://broker.invalid") == []  # stays where it is


@pytest.mark.parametrize(("table", "steered"), [
    ('[fleet]\nmqtt_url = "mqtt://192.0.2.5"\n', ["198.51.100.10", "192.0.2.5"]),
    ('[fleet]\nmqtt_url = "mqtt://192.0.2.5"\n[steer]\ninclude_fleet = false\n',
     ["198.51.100.10"]),
    ("", ["198.51.100.10"]),  # no fleet agent
])
async def test_the_fleet_broker_is_steered_with_the_gateway(
        tmp_path: Path, table: str, steered: list[str]) -> None:
    config = MINIMAL.replace("https://gateway.example", "https://198.51.100.10") + table
    context = context_for(config, tmp_path)
    steering = build_steering(context, Uplink("lte", "wwan0"), lambda *change: None)
    assert steering is not None
    assert await steering._destinations() == steered


def test_build_steering_needs_route_control(tmp_path: Path) -> None:
    lte = Uplink("lte", "wwan0")
    observe = context_for(MINIMAL + '[routing]\nbackend = "none"\n', tmp_path)
    assert build_steering(observe, lte, lambda *change: None) is None
    off = context_for(MINIMAL + "[steer]\nenabled = false\n", tmp_path)
    assert build_steering(off, lte, lambda *change: None) is None
    on = context_for(MINIMAL, tmp_path)
    assert build_steering(on, lte, lambda *change: None) is not None
    assert len(on.closers) == 1

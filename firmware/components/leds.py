"""The LED panel: four LEDs the shop owner glances at, a view of the box state.

`led_pattern(state)` is pure: it maps the one box state model to what each LED shows.

| LED     | on                      | blink                          | off                    |
| ------- | ----------------------- | ------------------------------ | ---------------------- |
| wired   | wired line up           | wired degraded (works, but     | down, or not known yet |
|         |                         | losing probes or slow)         |                        |
| lte     | LTE carries the traffic | LTE usable in standby          | down, or not known yet |
|         | (uplink.active "lte")   | (standby/up/degraded, not      |                        |
|         |                         | active); blink_fast: the       |                        |
|         |                         | payments are steered to LTE    |                        |
|         |                         | around a wired brownout        |                        |
| offline | standing in: no uplink  | payments queued (queued > 0),  | nothing queued         |
|         | works (active "none"    | waiting to be forwarded, while |                        |
|         | after the first         | not standing in                |                        |
|         | decision, or both links |                                |                        |
|         | down)                   |                                |                        |
| alert   | (not used)              | the installer is needed: LTE   | nothing needs a person |
|         |                         | SIM on the wired line's        |                        |
|         |                         | carrier, a SIM fault or no     |                        |
|         |                         | SIM, a component restarting    |                        |
|         |                         | or failed, a payments fault    |                        |
|         |                         | (no merchant key, no way to    |                        |
|         |                         | protect cards), an API fault   |                        |
|         |                         | (plain HTTP on the LAN)        |                        |

"After the first decision": at boot `uplink.active` is `"none"` before the failover
engine has chosen anything (`uplink.since` unset, links `unknown`); that is not offline.
When both links are down from the start the engine never switches, so both links
`down` counts as standing in too. With `routing.failover = false` the offline LED never
lights for lack of an uplink (nothing is watched); it still blinks for a queue.

`LedComponent` (supervised, built by `build_leds`) writes the pattern into
`BoxState.leds` (the status document, `storebox status` and the fleet's state show it;
a change wakes every watcher) and drives `hw.leds.LedPanel` on the pins of
`hw.led_pins`, at every state change. An LED left out of `hw.led_pins` is not fitted: it
is still in `BoxState.leds`, just not driven.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from firmware.components.context import BoxContext
from firmware.config.schema import LED_NAMES
from firmware.state import BoxState, LedState, LinkState
from hw.gpio import make_pin_factory
from hw.leds import LedPanel

__all__ = ["LED_NAMES", "LedComponent", "build_leds", "led_pattern"]

log = logging.getLogger("storebox.leds")

_USABLE: frozenset[LinkState] = frozenset({"up", "degraded", "standby"})
_FAILING = frozenset({"restarting", "failed"})
#: Faults that only a development box has (refused in production): status, not the LED.
_DEVELOPMENT_FAULTS = frozenset({"keys_on_disk"})
_WIRED: dict[LinkState, LedState] = {"up": "on", "standby": "on", "degraded": "blink"}


def standing_in(state: BoxState) -> bool:
    """No uplink works: the box approves payments offline."""
    uplink = state.uplink
    if uplink.active != "none":
        return False
    decided = uplink.since is not None
    both_down = uplink.wired.state == "down" and uplink.lte.state == "down"
    return decided or both_down


def needs_installer(state: BoxState) -> bool:
    """Something only a person can fix: carrier overlap, the SIM, a failing component,
    a payments fault."""
    modem = state.modem
    if modem.same_carrier_as_wired:
        return True
    if modem.sim_fault is not None or modem.sim == "not_inserted":
        return True
    if any(f not in _DEVELOPMENT_FAULTS for f in state.payments.faults):
        return True
    if state.api.faults:  # e.g. plain HTTP on the shop LAN
        return True
    return any(c.state in _FAILING for c in state.components.values())


def led_pattern(state: BoxState) -> dict[str, LedState]:
    """What each LED of `LED_NAMES` shows for `state` (the table in this module's doc)."""
    uplink = state.uplink
    wired = _WIRED.get(uplink.wired.state, "off")
    lte: LedState
    if uplink.active == "lte":
        lte = "on"
    elif uplink.steer.steered:
        lte = "blink_fast"  # the payments go by LTE around a wired brownout
    elif uplink.lte.state in _USABLE:
        lte = "blink"
    else:
        lte = "off"
    offline: LedState
    if standing_in(state):
        offline = "on"
    elif state.payments.queued > 0:
        offline = "blink"
    else:
        offline = "off"
    alert: LedState = "blink" if needs_installer(state) else "off"
    return {"wired": wired, "lte": lte, "offline": offline, "alert": alert}


class LedComponent:
    """Keeps `BoxState.leds` and the panel in step with the box state."""

    name = "leds"

    def __init__(self, state: BoxState, open_panel: Callable[[], LedPanel]) -> None:
        self.state = state
        self._open_panel = open_panel
        #: The panel while `run()` runs.
        self.panel: LedPanel | None = None

    def show(self, panel: LedPanel) -> int:
        """Publish and display the pattern for the state now; return the revision seen."""
        pattern = led_pattern(self.state)
        if pattern != self.state.leds:
            self.state.leds = pattern  # a new dict: a view never sees a half-written one
            self.state.touch()
        panel.set_all({name: shown for name, shown in pattern.items() if name in panel})
        return self.state.revision

    async def run(self) -> None:
        panel = self._open_panel()
        self.panel = panel
        try:
            while True:
                await self.state.wait_changed(self.show(panel))
        finally:
            self.panel = None
            panel.close()


async def build_leds(context: BoxContext) -> LedComponent:
    hw = context.config.hw
    pins = dict(hw.led_pins)

    def open_panel() -> LedPanel:
        # Opened by the task, not here: a GPIO that cannot be claimed makes the component
        # restart with backoff (reported in the status) instead of stopping the box.
        return LedPanel(pins, make_pin_factory(hw.pin_factory), blink_s=hw.led_blink_s)

    if pins:
        log.info("LED panel on %s (%s pins)",
                 ", ".join(f"{name} {pin}" for name, pin in pins.items()), hw.pin_factory)
    else:
        log.info("no LEDs fitted (hw.led_pins is empty); the status still shows them")
    return LedComponent(context.state, open_panel)

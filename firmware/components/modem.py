"""Composes the LTE modem: the AT driver, its health supervisor, and the data call kept
up in hot standby; `BoxState.modem` follows the driver's snapshot.

With `lte.simulator` set, the built-in EC25 simulator (`hw.modem.simulator`) stands in
for the hardware on a pseudo-terminal, as gpiozero's MockFactory stands in for pins.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import operator
import time
from datetime import datetime
from typing import Any

from firmware.components.context import BoxContext
from firmware.config import Config
from firmware.state import BoxState
from hw.gpio import PowerKey, SimulatorPower, make_pin_factory
from hw.modem.channel import AtChannel
from hw.modem.errors import ModemError, ModemRebooted
from hw.modem.health import ModemSupervisor, PowerControl, SupervisorPolicy
from hw.modem.modem import Modem
from hw.modem.ports import resolve_port
from hw.modem.simulator import ModemSimulator, SimCard
from hw.modem.status import ModemStatus

log = logging.getLogger("storebox.modem")

DATA_RETRY_S = 5.0
_SEVERITY = {"fault": "error", "modem_reset": "warning", "carrier_overlap": "warning"}


def set_system_clock(when: datetime) -> None:
    """A Pi has no RTC: when its clock is unset, take the network's time."""
    time.clock_settime(time.CLOCK_REALTIME, when.timestamp())
    log.warning("system clock set from the LTE network: %s", when.isoformat())


def apply_snapshot(state: BoxState, snap: ModemStatus) -> None:
    state.update(
        state.modem, present=snap.present, registered=snap.registered,
        registration=snap.registration.name.lower() if snap.registration else None,
        operator=snap.operator, mcc_mnc=snap.mcc_mnc,
        rat=snap.rat.name.lower() if snap.rat else None, signal_dbm=snap.signal_dbm,
        rsrp_dbm=snap.rsrp_dbm, rsrq_db=snap.rsrq_db, sinr_db=snap.sinr_db,
        data_up=snap.data_up, ip=snap.ip, dns=list(snap.dns),
        sim=snap.sim_state.name.lower() if snap.sim_state else None,
        sim_fault=snap.sim_fault, sim_slot=snap.sim_slot, sim_mcc_mnc=snap.sim_mcc_mnc,
        same_carrier_as_wired=snap.same_carrier,
        recovery_step=str(snap.recovery_step) if snap.recovery_step else None,
        resets_total=snap.resets_total, last_reset_reason=snap.last_reset_reason,
        parse_errors=snap.parse_errors,
        not_connected_reason=snap.not_connected_reason, reject_cause=snap.reject_cause,
        imsi=snap.imsi,
        model=snap.identity.model if snap.identity else None)


class ModemComponent:
    """Owns the AT port while the daemon runs (opened exclusively)."""

    name = "modem"

    def __init__(self, config: Config, state: BoxState, port: str,
                 power: PowerControl | None) -> None:
        self.config = config
        self.state = state
        self.port = port
        self.power = power
        self.modem: Modem | None = None

    def on_event(self, kind: str, **fields: Any) -> None:
        message = str(fields.pop("message", kind))
        severity = fields.pop("severity", _SEVERITY.get(kind, "info"))
        self.state.events.emit(kind, message, severity=severity, **fields)

    async def _reopen(self) -> AtChannel:
        """The AT port again after the modem re-enumerated (`lte.port = "auto"`: found
        anew by USB ids, its ttyUSB number may have changed)."""
        port = resolve_port(self.port)
        return await AtChannel.open(port, baudrate=self.config.lte.baudrate,
                                    serial_options={"exclusive": True})

    async def run(self) -> None:
        lte = self.config.lte
        try:
            port = resolve_port(self.port)
            if port != self.port:
                log.info("LTE modem: AT port found at %s", port)
            modem = await Modem.open(
                port, baudrate=lte.baudrate,
                channel_options={"serial_options": {"exclusive": True}},
                pin=lte.pin or None, apn=lte.apn, wired_carrier=self.config.wired.carrier)
        except ModemError:
            self.state.update(self.state.modem, present=False)
            raise
        self.modem = modem
        supervisor = ModemSupervisor(modem, SupervisorPolicy(poll_interval_s=lte.poll_interval_s),
                                     power=self.power, on_event=self.on_event,
                                     set_clock=set_system_clock, reopen=self._reopen)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(supervisor.run(), name="modem-health")
                tg.create_task(self._follow(modem), name="modem-state")
                tg.create_task(self._keep_data_up(modem), name="modem-data")
        finally:
            self.modem = None
            await modem.close()

    async def switch_sim(self) -> bool:
        """The failover engine's last resort before offline mode: the other SIM slot."""
        modem = self.modem
        if modem is None:
            return False
        current = modem.snapshot().sim_slot or 0
        try:
            info = await modem.switch_sim(1 - current)
        except ModemError as exc:
            log.error("SIM switch failed: %s", exc)
            return False
        self.state.events.emit("modem_reset", f"switched to SIM slot {1 - current}",
                               severity="warning", step="sim_switch", slot=1 - current,
                               sim=str(info.state))
        return True

    async def _follow(self, modem: Modem) -> None:
        """`BoxState.modem` follows every change of the driver's snapshot. Every change
        goes through `Modem.apply`, which wakes `wait_for`: nothing to poll (a 1 s poll
        here was ~2.5 % of the idle daemon's CPU, issue 13)."""
        while True:
            seen = modem.snapshot()
            apply_snapshot(self.state, seen)
            await modem.wait_for(functools.partial(operator.ne, seen), timeout=None)

    async def _keep_data_up(self, modem: Modem) -> None:
        """Hot standby: registered with data up, so failover never waits for a bring-up."""
        def wanted(s: ModemStatus) -> bool:
            return bool(s.present and s.registered and not s.data_up)

        while True:
            await modem.wait_for(wanted, timeout=None)
            try:
                status = await modem.connect_data(self.config.lte.apn)
                log.info("LTE data up on %s: %s", self.config.lte.interface, status.ip)
            except ModemRebooted as exc:  # the reboot cleared the state: wait for registration
                log.info("LTE data bring-up interrupted by a modem reboot (%s)", exc)
            except ModemError as exc:
                log.warning("LTE data bring-up failed: %s; retrying in %.0fs", exc,
                            DATA_RETRY_S)
                await asyncio.sleep(DATA_RETRY_S)


def power_control(config: Config, simulator: ModemSimulator | None) -> PowerControl | None:
    if simulator is not None:
        return SimulatorPower(simulator)
    if not config.lte.power_pin:
        return None
    factory = make_pin_factory(config.hw.pin_factory)
    return PowerKey(config.lte.power_pin, factory, mode=config.lte.power_mode)


async def build_modem(context: BoxContext) -> ModemComponent:
    config = context.config
    simulator = None
    port = config.lte.port
    if config.lte.simulator:
        second = SimCard.lgu() if config.lte.dual_sim else SimCard.absent()
        simulator = ModemSimulator(sims=[SimCard.preset(config.lte.simulator), second],
                                   data_interface=None)
        await simulator.start()
        context.closers.append(simulator.stop)
        port = simulator.slave_path
        log.info("LTE modem: the built-in EC25 simulator (%s SIM) on %s",
                 config.lte.simulator, port)
    context.state.update(context.state.modem, present=None)
    return ModemComponent(config, context.state, port, power_control(config, simulator))

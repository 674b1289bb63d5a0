"""The SIM of a `Modem`: its state, ICCID, IMSI and slot, and the PIN rules.

SIM PIN. The configured PIN is sent only when the SIM reports `SIM PIN`, once per lock
(after a reboot the SIM is locked again and the known-good PIN is entered again). A PIN
the SIM refused is remembered (per ICCID) and never sent again, and an attempt without an
answer is not repeated either: a blind retry is how a SIM ends up PUK-locked in a shop.
`SIM PUK` and other locks are faults (`SimFault`) and no PIN is sent at all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from typing import Final

from hw.modem.core import ModemCore
from hw.modem.errors import CommandError, CommandTimeout, ParseError, SimFault
from hw.modem.exchange import Response
from hw.modem.parsers.identity import SimState, parse_cpin, parse_imsi
from hw.modem.profiles.generic import info_text
from hw.modem.reasons import mask_imsi
from hw.modem.reducer import SIM_FAULTS, SIM_TRANSIENT, with_sim_state
from hw.modem.status import SimInfo

__all__ = ["SIM_BUSY_CME", "Sim", "check_pin"]

log = logging.getLogger(__name__)

_PIN = re.compile(r"\d{4,8}")

#: +CME ERROR 14: SIM busy (TS 27.007), the SIM is still initialising.
SIM_BUSY_CME: Final = 14


def check_pin(pin: str | None) -> str | None:
    """`pin` when it is 4 to 8 digits, None for none ("" or None); else `ValueError`
    (which never echoes a PIN)."""
    if pin and _PIN.fullmatch(pin) is None:
        raise ValueError("the SIM PIN must be 4 to 8 digits")  # never echo a PIN
    return pin or None


class Sim:
    """The SIM behind `core`, with the configured `pin` (see the module doc)."""

    def __init__(self, core: ModemCore, pin: str | None) -> None:
        self._core = core
        self.pin = check_pin(pin)
        self._rejected_pins: set[tuple[str | None, str]] = set()
        self._unconfirmed_pins: set[tuple[str | None, str]] = set()

    def _update(self, **fields: object) -> None:
        self._core.apply(dataclasses.replace(self._core.state, **fields))  # type: ignore[arg-type]

    async def read_cpin(self) -> SimState:
        """`AT+CPIN?` (a +CME ERROR that names a SIM state is that state), folded into the
        modem's state."""
        core = self._core
        try:
            response = await core.command("AT+CPIN?", timeout=core.timeouts.command)
        except CommandError as exc:
            if exc.cme_code is None:
                raise
            try:
                state = parse_cpin(f"+CME ERROR: {exc.cme_code}")
            except ParseError:
                raise exc from None
        else:
            lines = [line for line in response.lines if line.upper().startswith("+CPIN:")]
            if not lines:
                raise ParseError("AT+CPIN?", "\n".join(response.lines), "no +CPIN: line")
            state = parse_cpin(lines[-1])  # the most recent (a URC may precede the answer)
        core.apply(with_sim_state(core.state, state))
        return state

    async def settled(self, state: SimState) -> SimState:
        """Re-read +CPIN? while the SIM initialises (NOT READY / BUSY), up to sim_settle."""
        try:
            async with asyncio.timeout(self._core.timeouts.sim_settle):
                while state in SIM_TRANSIENT:
                    await self._core.pause()
                    state = await self.read_cpin()
        except TimeoutError:
            pass
        return state

    def _fault(self, reason: str, state: SimState, detail: str = "") -> SimFault:
        self._update(sim_fault=reason, sim_state=state)
        log.error("SIM fault: %s (%s)%s", reason, state.value, f": {detail}" if detail else "")
        return SimFault(reason, state.value, detail)

    async def _iccid(self) -> str | None:
        try:
            return await self._core.profile.read_iccid(self._core)
        except (CommandError, ParseError):
            return None

    async def _enter_pin(self) -> SimState:
        pin = self.pin
        if pin is None:
            raise self._fault("pin_required", SimState.SIM_PIN,
                              "the SIM is PIN-locked and no PIN is configured")
        iccid = await self._iccid()
        key = (iccid, pin)
        if key in self._rejected_pins:
            raise self._fault("pin_rejected", SimState.SIM_PIN,
                              "the configured PIN was refused before; not tried again")
        if key in self._unconfirmed_pins:
            raise self._fault("pin_unconfirmed", SimState.SIM_PIN,
                              "an earlier PIN attempt got no answer; not tried again")
        log.info("entering the configured SIM PIN (SIM %s)", iccid or "unknown")
        try:
            await self._core.command(f'AT+CPIN="{pin}"',
                                     timeout=self._core.timeouts.sim_settle, prefix="")
        except CommandError as exc:
            self._rejected_pins.add(key)
            raise self._fault("pin_rejected", SimState.SIM_PIN,
                              f"the SIM refused the configured PIN ({exc.final})") from None
        except CommandTimeout:
            self._unconfirmed_pins.add(key)
            state = await self.read_cpin()
            if state is SimState.SIM_PIN:
                raise self._fault("pin_unconfirmed", SimState.SIM_PIN,
                                  "the PIN attempt got no answer") from None
            return await self.settled(state)
        return await self.settled(await self.read_cpin())

    async def read(self) -> SimInfo:
        """SIM state, ICCID, IMSI (MCC/MNC) and slot. Enters the configured PIN when (and
        only when) the SIM reports `SIM PIN`. `NOT_INSERTED` (+CME ERROR 10), `NOT_READY`
        and `BUSY` are returned as states; PIN/PUK problems raise `SimFault` (also shown
        as `sim_fault` in the snapshot)."""
        state = await self.read_cpin()
        if state is SimState.SIM_PIN:
            state = await self._enter_pin()
        fault = SIM_FAULTS.get(state)
        if fault is not None:
            raise self._fault(fault, state)
        if state is SimState.SIM_PIN:  # still locked after a PIN the SIM accepted
            raise self._fault("pin_unconfirmed", state, "still locked after the PIN")
        slot = await self._read_slot()
        if state is not SimState.READY:
            self._update(sim_state=state, sim_slot=slot, iccid=None, sim_mcc_mnc=None,
                         imsi=None)
            return SimInfo(state=state, slot=slot)
        return await self._read_ready(state, slot)

    async def _read_ready(self, state: SimState, slot: int | None) -> SimInfo:
        try:
            iccid: str | None = await self._core.profile.read_iccid(self._core)
        except (CommandError, ParseError) as exc:
            log.info("modem: no ICCID: %s", exc)
            iccid = None
        imsi = parse_imsi(info_text(await self._sim_command("AT+CIMI")))
        info = SimInfo(state=state, iccid=iccid, imsi=imsi.imsi, mcc=imsi.mcc,
                       mnc=imsi.mnc, slot=slot)
        self._update(sim_state=state, sim_fault=None, sim_slot=slot, iccid=iccid,
                     sim_mcc_mnc=info.mcc_mnc, imsi=mask_imsi(imsi.imsi, len(imsi.mnc)))
        return info

    async def _read_slot(self) -> int | None:
        try:
            return await self._core.profile.read_sim_slot(self._core)
        except (CommandError, ParseError):
            return None

    async def _sim_command(self, command: str) -> Response:
        """`command`, re-sent while the SIM is busy initialising (+CME ERROR: 14)."""
        core = self._core
        try:
            async with asyncio.timeout(core.timeouts.sim_settle):
                while True:
                    try:
                        return await core.command(command)
                    except CommandError as exc:
                        if exc.cme_code != SIM_BUSY_CME:
                            raise
                    await core.pause()
        except TimeoutError:
            raise CommandTimeout(command, core.timeouts.sim_settle) from None

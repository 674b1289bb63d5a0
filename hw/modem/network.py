"""The network side of a `Modem`: registration (`+CEREG/+CGREG/+CREG`), the serving
operator (`+COPS`), signal, radio mode (`+CFUN?`), the error report (`+CEER`) and the
network's time, each read folded into the modem's `ModemState`.

Degraded readings: an answer that does not parse never fails a read. The last good value
stays (and is returned), the modem counts it (`ModemCore.parse_failed`).
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime

from hw.modem.core import REBOOT_RETRIES, ModemCore
from hw.modem.errors import CommandError, ParseError
from hw.modem.parsers.radio import RadioMode, parse_ceer, parse_cfun
from hw.modem.parsers.registration import (
    Registration,
    RegistrationForm,
    parse_cops,
    parse_registration,
    registration_form,
)
from hw.modem.profiles.generic import info_text
from hw.modem.reducer import with_registration
from hw.modem.state import NO_REGISTRATION
from hw.modem.status import OperatorInfo, RegistrationInfo, SignalReading

__all__ = ["Network"]

log = logging.getLogger(__name__)


class Network:
    """The network as the modem behind `core` sees it."""

    def __init__(self, core: ModemCore) -> None:
        self._core = core

    def _update(self, **fields: object) -> None:
        self._core.apply(dataclasses.replace(self._core.state, **fields))  # type: ignore[arg-type]

    async def _read_registration(self, command: str) -> Registration | None:
        core = self._core
        response = await core.command(command, timeout=core.timeouts.command)
        name = command[2:-1]  # "AT+CEREG?" -> "+CEREG"
        answer: Registration | None = None
        for line in response.lines:
            if not line.upper().startswith(name + ":"):
                continue
            try:
                form = (registration_form(line) if len(response.lines) > 1
                        else RegistrationForm.READ)
                reg = parse_registration(line, form=form)
            except ParseError as exc:
                core.parse_failed(exc)
                continue
            core.apply(with_registration(core.state, reg))
            if form is RegistrationForm.READ:
                answer = reg
        return answer

    def _forget_registration(self, source: str) -> None:
        """A registration read the modem refused: what it said before is no longer news."""
        registrations = self._core.state.registrations
        if source in registrations:
            self._update(registrations={k: v for k, v in registrations.items() if k != source})

    async def registration(self) -> RegistrationInfo:
        """`AT+CEREG?`; when not registered on EPS also `AT+CGREG?` and `AT+CREG?`. The
        best of them (registered first, EPS first). A read showing URCs off (`<n>` 0
        although `initialise()` set 2) means the modem reset silently: `needs_init`.

        Partial readings: a read that does not parse is skipped (counted; the last good
        value stays); when nothing at all could be read, the last known registration,
        else an `unknown` one. Only when every read was refused is the `CommandError`
        raised."""
        core = self._core
        errors: list[CommandError] = []
        for command in ("AT+CEREG?", "AT+CGREG?", "AT+CREG?"):
            try:
                reg = await self._read_registration(command)
            except CommandError as exc:
                errors.append(exc)
                self._forget_registration(command[2:-1])
                continue
            if reg is not None and reg.n == 0 and not core.needs_init:
                log.warning("modem: %s URCs are off; the modem reset silently", reg.command)
                core.mark_needs_init()
            if reg is not None and reg.status.registered:
                break
        core.apply(core.state)
        info = core.state.registration()
        if info is None:
            if len(errors) == 3:
                raise errors[0]
            return NO_REGISTRATION
        return info

    async def operator(self) -> OperatorInfo:
        """The serving network: `AT+COPS=3,2` + `AT+COPS?` (numeric MCC/MNC), then
        `AT+COPS=3,0` + `AT+COPS?` (long name). +COPS may take long (network timeout)."""
        core = self._core
        for _ in range(REBOOT_RETRIES + 1):
            boots = core.boots
            try:
                info = await self._read_operator()
            except ParseError as exc:
                core.parse_failed(exc)
                return core.state.operator or OperatorInfo(None, None, None, 0)
            if core.boots == boots:  # a reboot in between forgot the +COPS format
                break
        self._update(operator=info)
        return info

    async def _read_operator(self) -> OperatorInfo:
        core = self._core
        t = core.timeouts.network
        await core.command("AT+COPS=3,2", timeout=t)
        numeric = parse_cops(info_text(await core.command("AT+COPS?", timeout=t), "+COPS:"))
        await core.command("AT+COPS=3,0", timeout=t)
        named = parse_cops(info_text(await core.command("AT+COPS?", timeout=t), "+COPS:"))
        return OperatorInfo(name=named.name, mcc_mnc=numeric.mcc_mnc,
                            rat=named.act or numeric.act, mode=named.mode)

    async def signal(self) -> SignalReading:
        """RSSI/RSRP/RSRQ/SINR through the profile (+QCSQ, +CPSI, or +CSQ/+CESQ)."""
        core = self._core
        try:
            reading = await core.profile.read_signal(core)
        except ParseError as exc:
            core.parse_failed(exc)
            return core.state.signal or SignalReading(None, None, None, None, None, "none")
        self._update(signal=reading)
        return reading

    async def network_time(self) -> datetime | None:
        """The network's time, timezone-aware in the network's zone (Quectel `+QLTS=2`,
        others `+CCLK?`); None when the modem has none yet."""
        reading = await self._core.profile.read_network_time(self._core)
        return None if reading is None else reading.time

    async def radio(self) -> RadioMode | None:
        """`AT+CFUN?`: radio on, off (0), airplane (4)... (None when it does not parse)."""
        core = self._core
        response = await core.command("AT+CFUN?", timeout=core.timeouts.command)
        try:
            mode = parse_cfun(info_text(response, "+CFUN:").splitlines()[-1])
        except ParseError as exc:
            core.parse_failed(exc)
            return core.state.radio
        self._update(radio=mode)
        return mode

    async def error_report(self) -> str | None:
        """`AT+CEER`: the modem's last error report (why registration or a data call
        failed), kept for the status."""
        core = self._core
        response = await core.command("AT+CEER", timeout=core.timeouts.command)
        try:
            report = parse_ceer("\n".join(response.lines))
        except ParseError as exc:
            core.parse_failed(exc)
            return core.state.error_report
        self._update(error_report=report)
        return report

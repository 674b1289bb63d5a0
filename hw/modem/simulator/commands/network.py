"""Registration and radio: `AT+CREG/CGREG/CEREG` `?` and `=n`, `AT+COPS?` / `=?` /
`=mode[,format]`, `AT+CSQ`, `AT+QCSQ`, `AT+CESQ`, `AT+QNWINFO`, `AT+QENG="servingcell"`,
`AT+CEER`; the scenario knobs `lose_registration` / `restore_registration`."""

from __future__ import annotations

import asyncio

from hw.modem.simulator.device import DeviceCore, Reply
from hw.modem.simulator.scenario import SimCard

__all__ = ["NetworkCommands"]


class NetworkCommands(DeviceCore):
    """Registration, operator selection, signal and serving cell."""

    def lose_registration(self, stat: int = 2, *, cause: int | None = None) -> None:
        """Lose the network: <stat> 0 (not registered), 2 (searching) or 3 (denied);
        `cause`: the EMM reject cause shown at `+CEREG` <n> = 3 (and by `AT+CEER`)."""
        if stat not in (0, 2, 3, 4):
            raise ValueError(f"not a not-registered <stat>: {stat!r}")
        self._reg_override = stat
        self.reject_cause = cause
        if cause is not None:
            self.error_report = f"EMM cause {cause}"
        self._registration_changed()

    def restore_registration(self) -> None:
        self._reg_override = None
        self.reject_cause = None
        self.error_report = "No cause information available"
        self._registration_changed()

    async def _registration(self, name: str, kind: str, args: list[str]) -> Reply:
        if kind == "read":
            n, stat = self._reg_n[name], self._reg_stat()
            location = self._location(stat, n) if n >= 2 else ""
            return Reply([f"+{name}: {n},{stat}{location}"])
        top = 3 if name == "CEREG" else 2
        if kind == "test":
            return Reply([f"+{name}: (0-{top})"])
        if kind == "set" and args[0].isdigit() and int(args[0]) <= top:
            self._reg_n[name] = int(args[0])
            return Reply()
        return self._error()

    async def _cmd_creg(self, kind: str, args: list[str]) -> Reply:
        return await self._registration("CREG", kind, args)

    async def _cmd_cgreg(self, kind: str, args: list[str]) -> Reply:
        return await self._registration("CGREG", kind, args)

    async def _cmd_cereg(self, kind: str, args: list[str]) -> Reply:
        return await self._registration("CEREG", kind, args)

    async def _cmd_cops(self, kind: str, args: list[str]) -> Reply:
        if kind == "read":
            if self.cops_delay_s:
                await asyncio.sleep(self.cops_delay_s)
            if not self._registered:
                return Reply(["+COPS: 0"])
            card = self.sim
            name = {0: card.operator, 1: card.short_name, 2: card.plmn}[self._cops_format]
            return Reply([f'+COPS: 0,{self._cops_format},"{name}",7'])
        if kind == "test":
            if self.cops_delay_s:
                await asyncio.sleep(self.cops_delay_s)
            found = [c for c in (SimCard.kt(), SimCard.skt(), SimCard.lgu())]
            own = self.sim.plmn if self._registered else None
            entries = ",".join(
                f'({2 if c.plmn == own else 1},"{c.operator}","{c.short_name}","{c.plmn}",7)'
                for c in found
            )
            return Reply([f"+COPS: {entries},,(0-4),(0-2)"])
        if kind != "set" or args[0] not in ("0", "1", "2", "3", "4"):
            return self._error()
        if len(args) > 1 and args[1]:
            if args[1] not in ("0", "1", "2"):
                return self._error()
            self._cops_format = int(args[1])
        if args[0] in ("1", "4") and len(args) > 2 and args[2] not in (
            self.sim.plmn, self.sim.operator, self.sim.short_name
        ):
            return self._error(30)
        return Reply()

    # signal and cell
    async def _cmd_csq(self, kind: str, args: list[str]) -> Reply:
        if kind == "test":
            return Reply(["+CSQ: (0-31,99),(0-7,99)"])
        rssi = self.signal.csq if self._registered else 99
        return Reply([f"+CSQ: {rssi},99"])

    async def _cmd_qcsq(self, kind: str, args: list[str]) -> Reply:
        if not self._registered:
            return Reply(['+QCSQ: "NOSERVICE"'])
        s = self.signal
        return Reply([f'+QCSQ: "LTE",{s.rssi_dbm},{s.rsrp_dbm},{s.qcsq_sinr},{s.rsrq_db}'])

    async def _cmd_cesq(self, kind: str, args: list[str]) -> Reply:
        if not self._registered:
            return Reply(["+CESQ: 99,99,255,255,255,255"])
        s = self.signal
        return Reply([f"+CESQ: 99,99,255,255,{s.cesq_rsrq},{s.cesq_rsrp}"])

    async def _cmd_qnwinfo(self, kind: str, args: list[str]) -> Reply:
        if not self._registered:
            return Reply(["+QNWINFO: No Service"])
        card = self.sim
        return Reply([f'+QNWINFO: "FDD LTE","{card.plmn}","LTE BAND {card.band}",'
                       f"{card.earfcn}"])

    async def _cmd_qeng(self, kind: str, args: list[str]) -> Reply:
        if kind != "set" or args[0].lower() != "servingcell":
            return self._error(3) if kind == "set" else Reply()
        if not self._registered:
            return Reply(['+QENG: "servingcell","SEARCH"'])
        card, s = self.sim, self.signal
        state = "CONNECT" if self._data_up else "NOCONN"
        srxlev = max(0, s.rsrp_dbm + 140 - 10)
        return Reply([
            f'+QENG: "servingcell","{state}","LTE","FDD",{card.mcc},{card.mnc},'
            f"{card.cell_id:X},{card.pci},{card.earfcn},{card.band},5,5,{card.tac:X},"
            f"{s.rsrp_dbm},{s.rsrq_db},{s.rssi_dbm},{s.qeng_sinr},{srxlev}"
        ])

    async def _cmd_ceer(self, kind: str, args: list[str]) -> Reply:
        if kind == "test":
            return Reply()
        return Reply([f'+CEER: "{self.error_report}"'])

"""Packet data: `AT+CGDCONT`, `AT+CGATT`, `AT+CGACT`, `AT+CGPADDR`, `AT+CGCONTRDP`,
`AT+CGEREP`, `AT+QCFG="usbnet"[,n]`, `AT+QNETDEVCTL`; the data hook is awaited before the `OK` that
brings the call up. The scenario knob `network_deactivate` (the network ends the call)."""

from __future__ import annotations

from hw.modem.simulator.device import DeviceCore, Reply

__all__ = ["PacketCommands"]


class PacketCommands(DeviceCore):
    """PDP contexts, attach, the data call and its network interface."""

    def network_deactivate(self) -> None:
        """The network tears the data call down (operator maintenance, a plan that ran
        out): `+QIURC: "pdpdeact",<cid>`, `+CGEV: NW PDN DEACT <cid>` (with `+CGEREP`
        on) and `+QNETDEVSTATUS: 0`; registration stays."""
        cids = sorted(self._active) or ([self._netdev[1]] if self._netdev else [])
        for cid in cids:
            self._urc(f'+QIURC: "pdpdeact",{cid}')
            if self._cgerep:
                self._urc(f"+CGEV: NW PDN DEACT {cid}")
        self._drop_data_soon()

    async def _cmd_cgdcont(self, kind: str, args: list[str]) -> Reply:
        if kind == "read":
            rows = []
            for cid, (pdp_type, apn) in sorted(self._contexts.items()):
                address = "0.0.0.0" if pdp_type == "IP" else "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0"
                rows.append(f'+CGDCONT: {cid},"{pdp_type}","{apn}","{address}",0,0,0,0')
            return Reply(rows)
        if kind == "test":
            return Reply(['+CGDCONT: (1-24),"IP",,,(0-2),(0-4),(0-1),(0-1)'])
        if kind != "set" or not args[0].isdigit() or not 1 <= int(args[0]) <= 24:
            return self._error()
        cid = int(args[0])
        if len(args) == 1:
            self._contexts.pop(cid, None)
            return Reply()
        pdp_type = args[1].upper()
        if pdp_type not in ("IP", "IPV6", "IPV4V6", "PPP"):
            return self._error()
        self._contexts[cid] = (pdp_type, args[2] if len(args) > 2 else "")
        return Reply()

    async def _cmd_cgatt(self, kind: str, args: list[str]) -> Reply:
        if kind == "read":
            return Reply([f"+CGATT: {int(self._attached and self._registered)}"])
        if kind == "test":
            return Reply(["+CGATT: (0,1)"])
        if kind != "set" or args[0] not in ("0", "1"):
            return self._error()
        if args[0] == "0":
            self._attached = False
            if self._active or self._data_up:
                self._active.clear()
                self._netdev = None
                await self._set_data(False)
            return Reply()
        if not self._registered:
            return self._error(30)
        self._attached = True
        return Reply()

    async def _cmd_cgact(self, kind: str, args: list[str]) -> Reply:
        if kind == "read":
            return Reply([f"+CGACT: {cid},{int(cid in self._active)}"
                           for cid in sorted(self._contexts)])
        if kind == "test":
            return Reply(["+CGACT: (0,1)"])
        if kind != "set" or args[0] not in ("0", "1"):
            return self._error()
        try:
            cids = [int(a) for a in args[1:] if a] or sorted(self._contexts)
        except ValueError:
            return self._error()
        return await self._activate(args[0] == "1", cids)

    async def _activate(self, up: bool, cids: list[int]) -> Reply:
        if any(cid not in self._contexts for cid in cids):
            return self._error(3)
        if up:
            if self._cfun != 1:
                return self._error(30)  # radio off
            if self._sim_error() is not None:
                return self._sim_error() or self._error()
            if not self._registered or not self._attached:
                return self._error(30)
            self._active.update(cids)
        else:
            self._active.difference_update(cids)
        await self._set_data(bool(self._active))
        return Reply()

    async def _cmd_cgpaddr(self, kind: str, args: list[str]) -> Reply:
        if kind == "test":
            return Reply([f"+CGPADDR: ({','.join(str(c) for c in sorted(self._contexts))})"])
        try:
            cids = [int(a) for a in args if a] if kind == "set" else sorted(self._contexts)
        except ValueError:
            return self._error()
        rows = []
        for cid in cids:
            if cid not in self._contexts:
                return self._error(3)
            address = self.pdp_address if cid in self._active else "0.0.0.0"
            rows.append(f'+CGPADDR: {cid},"{address}"')
        return Reply(rows)

    async def _cmd_cgcontrdp(self, kind: str, args: list[str]) -> Reply:
        """The active contexts' dynamic parameters (TS 27.007 §10.1.23), one IPv4 line
        each in the post-v9.4.0 layout of ModemManager's captured answer
        (`src/tests/test-modem-helpers.c`): address and mask as 8 dotted octets, the
        gateway (the /32 address itself, as there), the SIM's carrier's resolvers, empty
        P-CSCFs as "0.0.0.0" and the IM CN flag. ERROR when no context asked for is
        active."""
        if kind == "test":
            return Reply([f"+CGCONTRDP: ({','.join(str(c) for c in sorted(self._active))})"])
        if kind == "read":
            return self._error()
        try:
            cids = [int(a) for a in args if a] if kind == "set" else sorted(self._active)
        except ValueError:
            return self._error()
        if not cids or any(cid not in self._active for cid in cids):
            return self._error()
        return Reply([self._cgcontrdp_line(cid) for cid in cids])

    def _cgcontrdp_line(self, cid: int) -> str:
        card = self.sim
        apn = self._contexts.get(cid, ("IP", ""))[1]
        network_apn = f"{apn}.mnc{card.mnc:0>3}.mcc{card.mcc}.gprs" if apn else ""
        primary, secondary = (*card.dns, "0.0.0.0", "0.0.0.0")[:2]
        address = self.pdp_address
        return (f'+CGCONTRDP: {cid},5,"{network_apn}","{address}.255.255.255.255",'
                f'"{address}","{primary}","{secondary}","0.0.0.0","0.0.0.0",0')

    async def _cmd_cgerep(self, kind: str, args: list[str]) -> Reply:
        return self._mode(kind, args, "_cgerep", read=f"+CGEREP: {self._cgerep},0",
                          test="+CGEREP: (0-2),(0,1)", values=("0", "1", "2"))

    async def _cmd_qcfg(self, kind: str, args: list[str]) -> Reply:
        if kind == "test":
            return Reply(['+QCFG: "usbnet",(0-5)'])
        if kind != "set" or args[0].lower() != "usbnet":
            return self._error()
        if len(args) == 1:
            return Reply([f'+QCFG: "usbnet",{self._usbnet}'])
        if args[1] not in ("0", "1", "2", "3", "5"):
            return self._error()
        self._usbnet = int(args[1])
        return Reply()

    async def _cmd_qnetdevctl(self, kind: str, args: list[str]) -> Reply:
        if kind == "read":
            if self._netdev is None:
                return Reply(["+QNETDEVCTL: 0,1,0,0"])
            op, cid, urc = self._netdev
            return Reply([f"+QNETDEVCTL: {op},{cid},{urc},{int(self._data_up)}"])
        if kind == "test":
            return Reply(["+QNETDEVCTL: (0-3),(1-16),(0,1)"])
        if kind != "set" or len(args) < 2 or args[0] not in ("0", "1", "2", "3"):
            return self._error()
        try:
            cid = int(args[1])
            urc = int(args[2]) if len(args) > 2 and args[2] else 0
        except ValueError:
            return self._error()
        up = args[0] != "0"
        reply = await self._activate(up, [cid])
        if reply.final != "OK":
            return reply
        self._netdev = (int(args[0]), cid, urc) if up else None
        if urc:
            status = f"+QNETDEVSTATUS: {int(up)}"

            async def announce() -> None:
                self._urc(status)

            reply.after.append(announce)
        return reply

"""V.25ter basic commands (`ATE`, `ATI`, `ATZ`, `AT&F`, `ATV`, `ATQ`, `AT&W`...) and the
identification and settings commands every driver sends first: `AT+CGMI/CGMM/CGMR/CGSN/GSN`,
`AT+CMEE` (how errors are reported), `AT+CSCS` (character set)."""

from __future__ import annotations

import re

from hw.modem.simulator.device import DeviceCore, Reply

__all__ = ["BasicCommands"]

#: one basic command in a run of them (`E0`, `&F`, `V1`...)
_BASIC = re.compile(r"(&?[A-Z])(\d*)")


class BasicCommands(DeviceCore):
    """Basic commands, identity and error reporting."""

    def _basic(self, body: str) -> Reply:
        if body == "":
            return Reply()
        position = 0
        reply = Reply()
        while position < len(body):
            match = _BASIC.match(body, position)
            if not match:
                return self._error()
            position = match.end()
            name, value = match.group(1), match.group(2)
            if name == "E" and value in ("", "0", "1"):
                self._echo = value == "1"
            elif name == "I" and value in ("", "0"):
                reply.lines += [self.manufacturer, self.model, f"Revision: {self.revision}"]
            elif name in ("Z", "&F") and value in ("", "0"):
                self._echo, self._cmee = True, 1
            elif (name == "V" and value in ("", "1")) or (
                name in ("Q", "&W", "&D", "&C") and value in ("", "0", "1", "2")
            ):
                pass  # accepted, no effect here
            else:
                return self._error()
        return reply

    async def _cmd_cgmi(self, kind: str, args: list[str]) -> Reply:
        return Reply([self.manufacturer]) if kind == "exec" else Reply()

    async def _cmd_cgmm(self, kind: str, args: list[str]) -> Reply:
        return Reply([self.model]) if kind == "exec" else Reply()

    async def _cmd_cgmr(self, kind: str, args: list[str]) -> Reply:
        return Reply([self.revision]) if kind == "exec" else Reply()

    async def _cmd_cgsn(self, kind: str, args: list[str]) -> Reply:
        return Reply([self.imei]) if kind in ("exec", "set") else Reply()

    _cmd_gsn = _cmd_cgsn

    async def _cmd_cmee(self, kind: str, args: list[str]) -> Reply:
        return self._mode(kind, args, "_cmee", read=f"+CMEE: {self._cmee}",
                          test="+CMEE: (0-2)", values=("0", "1", "2"))

    async def _cmd_cscs(self, kind: str, args: list[str]) -> Reply:
        if kind == "read":
            return Reply([f'+CSCS: "{self._cscs}"'])
        if kind == "test":
            return Reply(['+CSCS: ("GSM","IRA","UCS2")'])
        if kind == "set" and args[0].upper() in ("GSM", "IRA", "UCS2"):
            self._cscs = args[0].upper()
            return Reply()
        return self._error()

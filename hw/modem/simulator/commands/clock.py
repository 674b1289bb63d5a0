"""Network time: `AT+CCLK?`, `AT+QLTS[=0|1|2]`, `AT+CTZR` and the `+CTZE` report
(`time_zone_report()`), all from the injected `wall` seconds and `tz_quarters` (the time
zone in quarters of an hour, as 27.007 encodes it)."""

from __future__ import annotations

import datetime as dt

from hw.modem.simulator.device import DeviceCore, Reply

__all__ = ["ClockCommands"]


class ClockCommands(DeviceCore):
    """The modem's clock and time zone reports."""

    def time_zone_report(self) -> None:
        """`+CTZE` as the network's NITZ arrives (when enabled with `AT+CTZR=2`)."""
        if self._ctzr == 2:
            sign = "-" if self.tz_quarters < 0 else "+"
            now = self._wall_now()
            self._urc(f'+CTZE: "{sign}{abs(self.tz_quarters):02d}",0,'
                      f'"{now:%Y/%m/%d,%H:%M:%S}"')

    def _local_now(self) -> dt.datetime:
        return self._wall_now() + dt.timedelta(minutes=15 * self.tz_quarters)

    def _tz(self) -> str:
        return f"{'+' if self.tz_quarters >= 0 else '-'}{abs(self.tz_quarters):02d}"

    async def _cmd_cclk(self, kind: str, args: list[str]) -> Reply:
        if kind != "read":
            return Reply() if kind in ("test", "set") else self._error()
        return Reply([f'+CCLK: "{self._local_now():%y/%m/%d,%H:%M:%S}{self._tz()}"'])

    async def _cmd_qlts(self, kind: str, args: list[str]) -> Reply:
        if kind == "test":
            return Reply(["+QLTS: (0-2)"])
        mode = args[0] if kind == "set" else "0"
        if mode not in ("0", "1", "2"):
            return self._error()
        if not self._registered:
            return Reply(['+QLTS: ""'])
        when = self._local_now() if mode == "2" else self._wall_now()
        return Reply([f'+QLTS: "{when:%Y/%m/%d,%H:%M:%S}{self._tz()},0"'])

    async def _cmd_ctzr(self, kind: str, args: list[str]) -> Reply:
        return self._mode(kind, args, "_ctzr", read=f"+CTZR: {self._ctzr}",
                          test="+CTZR: (0-2)", values=("0", "1", "2"))

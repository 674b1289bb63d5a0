"""Power: `AT+CFUN?` / `=0|1|4` / `=1,1` (reboot after the `OK`), `AT+QPOWD` (`POWERED
DOWN`, then silence); the scenario knobs `power_cycle()` (the power hook a GPIO mock or a
test calls), `reboot()`, `power_off()` and `mute()`."""

from __future__ import annotations

from hw.modem.simulator.device import Abandon, DeviceCore, Reply

__all__ = ["PowerCommands"]


class PowerCommands(DeviceCore):
    """Radio function, reboot and power-down; power faults."""

    def power_cycle(self) -> None:
        """Cut and restore power (the GPIO power hook): boot URCs follow, mute is cleared."""
        self._restart("power cycle")

    def reboot(self) -> None:
        """Unexpected reboot: the command being answered is abandoned, then boot URCs."""
        self._restart("unexpected reboot")

    def power_off(self) -> None:
        """Power down without a word (see `AT+QPOWD` for the polite way)."""
        self._halt("off")

    def mute(self) -> None:
        """Hang: no echo, no answers, no URCs, input ignored, until `power_cycle()`."""
        self._halt("muted")

    async def _cmd_cfun(self, kind: str, args: list[str]) -> Reply:
        if kind == "read":
            return Reply([f"+CFUN: {self._cfun}"])
        if kind == "test":
            return Reply(["+CFUN: (0,1,4),(0,1)"])
        if kind != "set" or args[0] not in ("0", "1", "4"):
            return self._error()
        if len(args) > 1 and args[1] == "1":
            return Reply(after=[self._reboot_after_ok])
        fun = int(args[0])
        if fun == self._cfun:
            return Reply()
        was = self._cfun
        self._cfun = fun
        if fun != 1:
            self._active.clear()
            self._netdev = None
            await self._set_data(False)

        async def announce() -> None:
            if fun == 0:
                self._urc("+CPIN: NOT READY")
            elif was == 0:
                self._load_sim()
                self._sim_urcs()
            self._registration_changed()

        return Reply(after=[announce])

    async def _reboot_after_ok(self) -> None:
        await self._flush()
        self._restart("AT+CFUN=1,1")
        raise Abandon

    async def _cmd_qpowd(self, kind: str, args: list[str]) -> Reply:
        if kind == "test":
            return Reply(["+QPOWD: (0,1)"])
        if kind == "set" and args[0] not in ("0", "1"):
            return self._error()

        async def power_down() -> None:
            self._urc("POWERED DOWN")
            await self._flush()
            self._halt("off")
            raise Abandon

        return Reply(after=[power_down])


# -- standalone ----------------------------------------------------------------------------

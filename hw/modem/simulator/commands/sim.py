"""The SIM family: `AT+CPIN?` / `=<pin>[,<newpin>]` (3 wrong PINs -> SIM PUK; 10 wrong
PUKs -> blocked), `AT+QPINC`, `AT+QCCID`, `AT+CIMI`, `AT+QSIMSTAT` (`+QSIMSTAT: 1,0|1` on a
swap) and the slot switch `AT+QDSIM`; the scenario knobs `insert_sim` / `remove_sim`."""

from __future__ import annotations

from hw.modem.simulator.device import DeviceCore, Reply
from hw.modem.simulator.scenario import SimCard

__all__ = ["SimCommands"]


class SimCommands(DeviceCore):
    """SIM PIN/PUK, identity, presence and slots."""

    def insert_sim(self, slot: int, card: SimCard) -> None:
        self.sims[slot] = card
        if slot == self._slot and self._power == "on":
            self._swap_sim()

    def remove_sim(self, slot: int) -> None:
        self.insert_sim(slot, SimCard.absent())

    async def _cmd_cpin(self, kind: str, args: list[str]) -> Reply:
        state = self._sim_state
        if kind == "test":
            return Reply()
        if state == "ABSENT":
            return self._error(10)
        if state == "BLOCKED":
            return self._error(13)
        if kind == "read":
            text = {"READY": "READY", "PIN": "SIM PIN", "PUK": "SIM PUK"}[state]
            return Reply([f"+CPIN: {text}"])
        if kind != "set" or not args or not args[0]:
            return self._error()
        card = self.sim
        if state == "READY":
            return self._error(3)
        if state == "PIN":
            if args[0] == card.pin:
                card.pin_tries = 3
                return self._unlocked(args[1] if len(args) > 1 and args[1] else None)
            card.pin_tries -= 1
            if card.pin_tries <= 0:
                self._sim_state = "PUK"
            return self._error(16)
        # PUK: AT+CPIN=<puk>,<newpin>
        if len(args) < 2 or not args[1]:
            return self._error(12)
        if args[0] == card.puk:
            card.puk_tries, card.pin_tries = 10, 3
            return self._unlocked(args[1])
        card.puk_tries -= 1
        if card.puk_tries <= 0:
            self._sim_state = "BLOCKED"
        return self._error(16)

    def _unlocked(self, new_pin: str | None) -> Reply:
        if new_pin is not None:
            self.sim.pin = new_pin
        self._sim_state = "READY"

        async def announce() -> None:
            self._urc("+CPIN: READY")
            self._sim_ready_urcs()
            self._registration_changed()

        return Reply(after=[announce])

    async def _cmd_qpinc(self, kind: str, args: list[str]) -> Reply:
        card = self.sim
        if not card.present:
            return self._error(10)
        rows = {"SC": f'+QPINC: "SC",{max(card.pin_tries, 0)},{max(card.puk_tries, 0)}',
                "P2": '+QPINC: "P2",3,10'}
        if kind == "read":
            return Reply(list(rows.values()))
        if kind == "set" and args[0].upper() in rows:
            return Reply([rows[args[0].upper()]])
        if kind == "test":
            return Reply(['+QPINC: ("SC","P2")'])
        return self._error()

    async def _cmd_qccid(self, kind: str, args: list[str]) -> Reply:
        if kind == "test":
            return Reply()
        if not self.sim.present or self._cfun == 0:
            return self._error(10 if not self.sim.present else 13)
        return Reply([f"+QCCID: {self.sim.iccid}"])

    async def _cmd_cimi(self, kind: str, args: list[str]) -> Reply:
        if kind == "test":
            return Reply()
        return self._sim_error() or Reply([self.sim.imsi])

    async def _cmd_qsimstat(self, kind: str, args: list[str]) -> Reply:
        inserted = 1 if self.sim.present else 0
        return self._mode(kind, args, "_qsimstat", read=f"+QSIMSTAT: {self._qsimstat},{inserted}",
                          test="+QSIMSTAT: (0,1)", values=("0", "1"))

    async def _cmd_qdsim(self, kind: str, args: list[str]) -> Reply:
        if kind == "read":
            return Reply([f"+QDSIM: {self._slot}"])
        if kind == "test":
            return Reply([f"+QDSIM: (0-{len(self.sims) - 1})"])
        if kind != "set" or not args[0].isdigit() or int(args[0]) >= len(self.sims):
            return self._error()
        slot = int(args[0])
        if slot == self._slot:
            return Reply()
        self._slot = slot
        self._active.clear()
        self._netdev = None
        await self._set_data(False)

        async def swap() -> None:
            self._swap_sim()

        return Reply(after=[swap])

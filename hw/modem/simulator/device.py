"""The EC25's insides: its settings and state machine, and the loop that executes what
arrives on the wire — everything but the commands themselves (`commands/`, one module
per family) and the public face (`ModemSimulator`, `hw.modem.simulator.ec25`).

State. Power (`off` / `booting` / `on` / `muted`), the SIM state of the selected slot
(`ABSENT`, `PIN`, `PUK`, `BLOCKED`, `READY`), registration (derived: radio on, SIM
ready, not overridden by a scenario, home or roaming), the data call, and the settings
the commands change. Settings kept in NV (PDP contexts, `usbnet`) survive power-on;
the rest is reset by it (`_reset_volatile`), as on the module.

Execution. Bytes are echoed as they arrive (until `ATE0`) and cut into command lines at
`\\r`; one executor task answers them in order. Each line is split at `;`, each part
dispatched (`_dispatch`, given by the composed simulator) to a `Reply`: information
lines, a final result code and actions to run once the answer is queued (URCs that
follow an `OK`, a reboot after `AT+CFUN=1,1`). Quirks configured by a scenario (a raw
answer, a reboot on a command, a held command) are played before the normal answer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from hw.errors import HwError
from hw.modem.codes import CME_ERRORS
from hw.modem.framing import split_concatenated
from hw.modem.simulator.hooks import DataHook, IpLinkHook
from hw.modem.simulator.pty import PtyPort
from hw.modem.simulator.scenario import Signal, SimCard

__all__ = ["CRLF", "Abandon", "DeviceCore", "PowerState", "Reply", "SimState"]

log = logging.getLogger(__name__)

PowerState = Literal["off", "booting", "on", "muted"]
SimState = Literal["ABSENT", "PIN", "PUK", "BLOCKED", "READY"]

BOOT_URCS_AFTER_RDY = ("+CFUN: 1",)
CRLF = "\r\n"


@dataclass
class Reply:
    """One command's answer: information `lines`, the `final` result code, and `after`:
    actions run once the whole answer is queued."""

    lines: list[str] = field(default_factory=list)
    final: str = "OK"
    after: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


class Abandon(HwError):
    """The modem stops answering this command (reboot/power-off in progress)."""


class DeviceCore(ABC):
    """A Quectel EC25's state and execution; see the module docstring."""

    manufacturer = "Quectel"
    model = "EC25"

    def __init__(
        self,
        *,
        sims: Sequence[SimCard] | None = None,
        slot: int = 0,
        imei: str = "866758041234567",
        revision: str = "EC25EFAR06A06M4G",
        signal: Signal | None = None,
        data_interface: str | None = None,
        netns: str | None = None,
        data_address: str | None = None,
        data_hook: DataHook | None = None,
        pdp_address: str = "10.155.32.7",
        boot_delay_s: float = 0.0,
        cops_delay_s: float = 0.0,
        chunk_size: int | None = None,
        chunk_gap_s: float = 0.0,
        tz_quarters: int = 36,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.sims: list[SimCard] = list(sims) if sims is not None else [SimCard.kt(),
                                                                         SimCard.absent()]
        if not 0 <= slot < len(self.sims):
            raise ValueError(f"slot {slot!r} out of range for {len(self.sims)} SIM slots")
        self._slot = slot
        self.imei = imei
        self.revision = revision
        self.signal = signal or Signal()
        if data_hook is None and data_interface:
            data_hook = IpLinkHook(data_interface, netns=netns, address=data_address)
        self.data_hook = data_hook
        self.pdp_address = pdp_address
        self.boot_delay_s = boot_delay_s
        self.cops_delay_s = cops_delay_s
        self.tz_quarters = tz_quarters
        #: wall seconds (`time.time`): what `AT+CCLK?`, `AT+QLTS` and `+CTZE` report
        self.wall = wall
        self._port = PtyPort()
        self._port.chunk_size, self._port.chunk_gap_s = chunk_size, chunk_gap_s
        self._init_runtime()

    def _init_runtime(self) -> None:
        #: every command line received (as sent, without `\r`)
        self.received: list[str] = []
        self.boots = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._power: PowerState = "off"
        self._inbuf = bytearray()
        self._commands: asyncio.Queue[str] = asyncio.Queue()
        self._executor_task: asyncio.Task[None] | None = None
        self._power_task: asyncio.Task[None] | None = None
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._holds: dict[str, asyncio.Event] = {}
        self._seen: list[tuple[str, asyncio.Future[str]]] = []
        self._race: deque[str] = deque()
        self._raw_answers: dict[str, tuple[bytes, int | None]] = {}
        self._reboot_on: set[str] = set()
        #: EMM cause (TS 24.301) reported with a denied registration at <n> = 3
        self.reject_cause: int | None = None
        #: what `AT+CEER` answers
        self.error_report = "No cause information available"

        # modem settings and state (reset by power-on, except what lives in NV / on SIM)
        self._contexts: dict[int, tuple[str, str]] = {1: ("IPV4V6", "")}  # NV
        self._usbnet = 0  # NV
        self._reset_volatile()

    def _reset_volatile(self) -> None:
        self._echo = True
        self._cmee = 1
        self._cscs = "GSM"
        self._cgerep = 0
        self._cops_format = 0
        self._reg_n = {"CREG": 0, "CGREG": 0, "CEREG": 0}
        self._qsimstat = 0
        self._ctzr = 0
        self._cfun = 1
        self._sim_state: SimState = "ABSENT"
        self._reg_override: int | None = None
        self._last_stat = 0
        self._attached = True
        self._active: set[int] = set()
        self._netdev: tuple[int, int, int] | None = None  # (op, cid, urc_en)
        self._data_up = False

    # -- state views ---------------------------------------------------------------------
    @property
    def power(self) -> PowerState:
        return self._power

    @property
    def echo(self) -> bool:
        return self._echo

    @property
    def data_up(self) -> bool:
        return self._data_up

    @property
    def slot(self) -> int:
        return self._slot

    @property
    def sim(self) -> SimCard:
        """The card in the selected slot."""
        return self.sims[self._slot]

    @property
    def sim_state(self) -> SimState:
        return self._sim_state

    @property
    def registration(self) -> int:
        """The 27.007 <stat> now: 0 not registered, 1 home, 2 searching, 3 denied, 5 roaming."""
        return self._reg_stat()

    @property
    def chunk_size(self) -> int | None:
        """Split every write into chunks of this many bytes (None: whole writes)."""
        return self._port.chunk_size

    @chunk_size.setter
    def chunk_size(self, size: int | None) -> None:
        self._port.chunk_size = size

    @property
    def chunk_gap_s(self) -> float:
        """The gap between two chunks (with `chunk_size`)."""
        return self._port.chunk_gap_s

    @chunk_gap_s.setter
    def chunk_gap_s(self, seconds: float) -> None:
        self._port.chunk_gap_s = seconds

    def _wall_now(self) -> dt.datetime:
        """The wall time as an aware UTC datetime."""
        return dt.datetime.fromtimestamp(self.wall(), dt.UTC)

    # -- power sequencing ----------------------------------------------------------------
    def _bump_epoch(self) -> None:
        self._port.drop_unsent()
        self._inbuf.clear()
        while not self._commands.empty():
            self._commands.get_nowait()
        if self._executor_task is not None:
            self._executor_task.cancel()
            self._executor_task = None
        if self._power_task is not None:
            self._power_task.cancel()
            self._power_task = None

    def _restart(self, why: str) -> None:
        log.info("simulator: %s", why)
        self._bump_epoch()
        self._power = "booting"
        assert self._loop is not None
        self._power_task = self._loop.create_task(self._boot(), name="sim-boot")

    def _halt(self, state: PowerState) -> None:
        self._bump_epoch()
        self._power = state
        assert self._loop is not None
        if state == "off":
            self._power_task = self._loop.create_task(self._set_data(False), name="sim-off")

    async def _boot(self) -> None:
        await self._set_data(False)
        self._reset_volatile()
        if self.boot_delay_s:
            await asyncio.sleep(self.boot_delay_s)
        self.boots += 1
        self._power = "on"
        self._urc("RDY")
        for line in BOOT_URCS_AFTER_RDY:
            self._urc(line)
        self._load_sim()
        self._sim_urcs()
        self._last_stat = self._reg_stat()  # n=0 after boot: no registration URCs
        self._start_executor()

    def _start_executor(self) -> None:
        assert self._loop is not None
        self._executor_task = self._loop.create_task(self._executor(), name="sim-executor")

    def _load_sim(self) -> None:
        card = self.sim
        if not card.present:
            self._sim_state = "ABSENT"
        elif card.puk_tries <= 0:
            self._sim_state = "BLOCKED"
        elif card.pin_tries <= 0:
            self._sim_state = "PUK"
        elif card.pin is not None:
            self._sim_state = "PIN"
        else:
            self._sim_state = "READY"

    def _sim_urcs(self) -> None:
        state = self._sim_state
        if state == "ABSENT":
            self._urc("+CPIN: NOT READY")
            return
        if state == "BLOCKED":
            self._urc("+CPIN: NOT READY")
            return
        self._urc({"READY": "+CPIN: READY", "PIN": "+CPIN: SIM PIN",
                   "PUK": "+CPIN: SIM PUK"}[state])
        self._urc("+QUSIM: 1")
        if state == "READY":
            self._sim_ready_urcs()

    def _sim_ready_urcs(self) -> None:
        self._urc("+QIND: SMS DONE")
        self._urc("+QIND: PB DONE")

    def _swap_sim(self) -> None:
        self._drop_data_soon()
        if self._qsimstat:
            self._urc(f"+QSIMSTAT: 1,{1 if self.sim.present else 0}")
        self._urc("+CPIN: NOT READY")
        self._load_sim()
        if self._sim_state != "ABSENT":
            self._sim_urcs()
        self._registration_changed()

    # -- registration --------------------------------------------------------------------
    def _reg_stat(self) -> int:
        if self._power != "on" or self._cfun != 1 or self._sim_state != "READY":
            return 0
        if self._reg_override is not None:
            return self._reg_override
        return 5 if self.sim.roaming else 1

    @property
    def _registered(self) -> bool:
        return self._reg_stat() in (1, 5)

    def _registration_changed(self) -> None:
        stat = self._reg_stat()
        if stat == self._last_stat:
            return
        self._last_stat = stat
        for name in ("CREG", "CGREG", "CEREG"):
            n = self._reg_n[name]
            if n == 1:
                self._urc(f"+{name}: {stat}")
            elif n >= 2:
                self._urc(f"+{name}: {stat}{self._location(stat, n)}")
        if stat not in (1, 5) and (self._active or self._data_up):
            if self._cgerep and self._active:
                for cid in sorted(self._active):
                    self._urc(f"+CGEV: NW PDN DEACT {cid}")
            self._drop_data_soon()

    def _location(self, stat: int, n: int = 2) -> str:
        card = self.sim
        if n >= 3 and stat == 3 and self.reject_cause is not None:
            # the cell that refused, then <cause_type> 0 (EMM) and <reject_cause>
            return f',"{card.tac:04X}","{card.cell_id:X}",7,0,{self.reject_cause}'
        if stat not in (1, 5):
            return ""
        return f',"{card.tac:04X}","{card.cell_id:X}",7'

    def _drop_data_soon(self) -> None:
        self._active.clear()
        if self._netdev is not None:
            if self._netdev[2]:
                self._urc("+QNETDEVSTATUS: 0")
            self._netdev = None
        if self._data_up:
            self._spawn(self._set_data(False))

    def _spawn(self, coro: Awaitable[None]) -> None:
        assert self._loop is not None

        async def run() -> None:
            await coro

        task = self._loop.create_task(run())
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _set_data(self, up: bool) -> None:
        if up == self._data_up:
            return
        self._data_up = up
        if self.data_hook is None:
            return
        try:
            await self.data_hook(up)
        except Exception:
            log.exception("simulator data hook failed (up=%s)", up)


    # -- byte I/O ------------------------------------------------------------------------
    def _on_input(self, data: bytes) -> None:
        if self._power != "on":
            return  # booting, muted or off: input is lost
        if self._echo:
            self._send(data)
        for byte in data:
            if byte == 0x0D:
                line = self._inbuf.decode("latin-1").strip()
                self._inbuf.clear()
                if line[:2].upper() == "AT":
                    self._received(line)
            elif byte == 0x0A:
                continue
            elif byte in (0x08, 0x7F):
                if self._inbuf:
                    self._inbuf.pop()
            else:
                self._inbuf.append(byte)

    def _received(self, line: str) -> None:
        self.received.append(line)
        key = line.upper()
        for entry in list(self._seen):
            wanted, future = entry
            if wanted == key:
                self._seen.remove(entry)
                if not future.done():
                    future.set_result(line)
        self._commands.put_nowait(line)

    def _send(self, data: bytes, *, force: bool = False) -> None:
        if force or self._power == "on":
            self._port.send(data)

    def _urc(self, line: str) -> None:
        self._send(f"{CRLF}{line}{CRLF}".encode("ascii"))

    async def _flush(self) -> None:
        """Wait until everything queued so far has been written to the pty."""
        await self._port.flush()

    # -- command execution ---------------------------------------------------------------
    async def _executor(self) -> None:
        while True:
            line = await self._commands.get()
            hold = self._holds.get(line.upper())
            if hold is not None:
                await hold.wait()
            if self._quirk(line):
                continue
            try:
                await self._execute(line)
            except Abandon:
                return

    async def _execute(self, line: str) -> None:
        groups: list[list[str]] = []
        final = "OK"
        after: list[Callable[[], Awaitable[None]]] = []
        for part in split_concatenated(line[2:]):
            reply = await self._dispatch(part.strip())
            if reply.lines:
                groups.append(reply.lines)
            after += reply.after
            if reply.final != "OK":
                final = reply.final
                break
        self._respond(groups, final)
        for action in after:
            await action()

    def _respond(self, groups: list[list[str]], final: str) -> None:
        """Queue an answer as the EC25 frames it: each command's information response
        `\r\n<line>[\r\n<line>...]\r\n`, then `\r\n<final>\r\n`. A raced URC goes
        right after the first line (before the final when there is none)."""
        pieces: list[str] = []
        for lines in groups:
            pieces.append(CRLF + lines[0] + CRLF)
            if len(lines) > 1:
                pieces.append(CRLF.join(lines[1:]) + CRLF)
        position = 1 if groups else 0
        while self._race:
            pieces.insert(position, CRLF + self._race.popleft() + CRLF)
            position += 1
        pieces.append(CRLF + final + CRLF)
        for piece in pieces:
            self._send(piece.encode("ascii"))

    def _cme(self, code: int) -> str:
        if self._cmee == 0:
            return "ERROR"
        if self._cmee == 2:
            return f"+CME ERROR: {CME_ERRORS.get(code, 'unknown')}"
        return f"+CME ERROR: {code}"

    def _error(self, code: int | None = None) -> Reply:
        return Reply(final="ERROR" if code is None else self._cme(code))

    def _mode(self, kind: str, args: list[str], attr: str, *, read: str, test: str,
              values: tuple[str, ...]) -> Reply:
        """A command that only reads, lists and sets one small integer mode, the attribute
        named `attr` (`AT+CMEE`, `AT+CTZR`, `AT+CGEREP`, `AT+QSIMSTAT`): `read` is its read
        answer, `test` its test answer, `values` the modes a set accepts."""
        if kind == "read":
            return Reply([read])
        if kind == "test":
            return Reply([test])
        if kind == "set" and args[0] in values:
            setattr(self, attr, int(args[0]))
            return Reply()
        return self._error()

    def _quirk(self, line: str) -> bool:
        """Play a configured quirk for `line`; True when it replaced the answer."""
        key = line.upper()
        if key in self._reboot_on:
            self._reboot_on.discard(key)
            self._restart("unexpected reboot")
            return True
        raw = self._raw_answers.get(key)
        if raw is None:
            return False
        data, times = raw
        if times is not None:
            if times <= 1:
                del self._raw_answers[key]
            else:
                self._raw_answers[key] = (data, times - 1)
        self._send(data)
        return True

    def _sim_error(self) -> Reply | None:
        if self._cfun == 0:
            return self._error(13)
        code = {"ABSENT": 10, "PIN": 11, "PUK": 12, "BLOCKED": 13}.get(self._sim_state)
        return None if code is None else self._error(code)

    @abstractmethod
    async def _dispatch(self, part: str) -> Reply:
        """The answer to `part`, one command of a line (without `AT` and `;`)."""

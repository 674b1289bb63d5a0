"""A Quectel EC25 simulator on a pseudo-terminal, shipped with the driver (cf. gpiozero's
MockFactory): the same driver code runs against it off-target, in tests and on a
technician's laptop.

It speaks AT byte for byte like an EC25 with `ATV1` (verbose results): echo on until
`ATE0` (the echo is every received byte, sent back as it arrives), information responses
framed `\\r\\n<line>[\\r\\n<line>...]\\r\\n`, final result codes `\\r\\nOK\\r\\n`,
`\\r\\nERROR\\r\\n`, `\\r\\n+CME ERROR: <n>\\r\\n` (`AT+CMEE=1`, the default; `=2` gives
texts, `=0` plain `ERROR`), URCs `\\r\\n<urc>\\r\\n`. After power-on: `RDY`, `+CFUN: 1`,
`+CPIN: READY`, `+QUSIM: 1`, `+QIND: SMS DONE`, `+QIND: PB DONE`.

The simulator holds the pty master (`os.openpty()`); the driver opens `slave_path` with
`serial_for_url`. It runs as asyncio tasks in the caller's loop (`start()`/`stop()` or
`async with`), and standalone for people without hardware:

    python -m hw.modem.simulator --link /tmp/ttyMODEM [--operator KT|SKT|LGU] ...

Commands: `AT`, `ATE0/ATE1`, `ATI`, `ATZ`, `AT&F`, `ATV1`, `ATQ0`, `AT&W`,
`AT+CGMI/CGMM/CGMR/CGSN/GSN`, `AT+CMEE`, `AT+CSCS`, `AT+CPIN?` / `=<pin>[,<newpin>]`
(3 wrong PINs -> SIM PUK; 10 wrong PUKs -> blocked), `AT+QPINC`, `AT+QCCID`, `AT+CIMI`,
`AT+CREG/CGREG/CEREG` `?` and `=n`, `AT+COPS?` / `=?` / `=mode[,format]`, `AT+CSQ`,
`AT+QCSQ`, `AT+CESQ`, `AT+QNWINFO`, `AT+QENG="servingcell"`, `AT+CGDCONT`, `AT+CGATT`,
`AT+CGACT`, `AT+CGPADDR`, `AT+CGEREP`, `AT+QCFG="usbnet"[,n]`, `AT+QNETDEVCTL`,
`AT+CCLK?`, `AT+QLTS[=0|1|2]`, `AT+CFUN?` / `=0|1|4` / `=1,1` (reboot), `AT+QDSIM`,
`AT+QPOWD`, `AT+CEER`, `AT+QSIMSTAT` (`+QSIMSTAT: 1,0|1` on a SIM swap), `AT+CTZR`;
`;`-concatenated commands; anything else -> `ERROR`. Without a SIM the
SIM-dependent ones give `+CME ERROR: 10`.

Scenario knobs (plain attributes and methods, settable at run time):

- SIM: `sims[slot]` (`SimCard`: present, PIN/PUK, operator, MCC/MNC, IMSI, ICCID; presets
  `SimCard.kt()`, `.skt()`, `.lgu()`, `.absent()`), `insert_sim(slot, card)`,
  `remove_sim(slot)`, `slot` (what `AT+QDSIM` selects).
- radio: `signal` (`Signal`: RSSI/RSRP/RSRQ/SINR in dBm/dB), `lose_registration(stat,
  cause=)` (emits `+CREG/+CGREG/+CEREG: <stat>` URCs as enabled with `=1|2|3`, drops
  data; at `+CEREG` n=3 a denied one carries `0,<cause>`), `restore_registration()`
  (`+CEREG: 1,"<tac>","<ci>",7` at n=2), `network_deactivate()` (`+QIURC: "pdpdeact"`,
  `+CGEV: NW PDN DEACT`), `time_zone_report()` (`+CTZE`, with `AT+CTZR=2`).
- timing: `cops_delay_s` (slow `AT+COPS?`), `boot_delay_s` (power-on to `RDY`),
  `chunk_size` + `chunk_gap_s` (every write split into chunks with gaps), `hold(cmd)`
  (answer only once the returned event is set), `command_seen(cmd)` (a future resolved
  when the command arrives).
- quirks: `answer_raw(cmd, data, times=)` (answer `cmd` with exactly `data`, e.g. a glued
  `+CSQ: 18,99OK`, a lowercase `ok`, NUL noise, a Wavecom `+CPIN: READY` without `OK`;
  `times` answers, None: until `clear_raw()`), `reboot_on(cmd)` (reboot when `cmd`
  arrives, leaving it unanswered, as a firmware crash does).
- faults: `reboot()` (unexpected: current command abandoned, silence, boot URCs again),
  `mute()` (hung: no echo, no answers, no URCs until `power_cycle()`), `race_urc(line)`
  (the URC is put in the middle of the next answer), `send_raw(data)` (garbage),
  `emit_urc(line)`.
- power: `power_cycle()` (the power hook a GPIO mock or a test calls), `power_off()`.

Data interface: a `DataHook` (`async (up: bool) -> None`) is awaited when the data call
goes up (`AT+CGACT=1,<cid>`, `AT+QNETDEVCTL=1,<cid>,...`) — before the `OK` — and when it
goes down (`AT+CGACT=0`, `AT+QNETDEVCTL=0`, registration loss, `AT+CFUN=0`, SIM switch,
power-off, reboot — before `RDY`). Default when `data_interface` is given: `IpLinkHook`,
which runs `ip [-n NETNS] link set dev IFACE up|down` (and assigns `data_address`); tests
use `RecordingDataHook`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import re
import signal as signals
import sys
import tty
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from hw.modem.framing import CME_ERRORS, split_concatenated

__all__ = [
    "DataHook",
    "IpLinkHook",
    "ModemSimulator",
    "RecordingDataHook",
    "Signal",
    "SimCard",
    "main",
]

log = logging.getLogger(__name__)

DataHook = Callable[[bool], Awaitable[None]]
PowerState = Literal["off", "booting", "on", "muted"]
SimState = Literal["ABSENT", "PIN", "PUK", "BLOCKED", "READY"]

BOOT_URCS_AFTER_RDY = ("+CFUN: 1",)
CRLF = "\r\n"


# -- scenario data -------------------------------------------------------------------------


@dataclass
class SimCard:
    """A SIM in a slot. Mutable: PIN/PUK tries left survive reboots, as on a real card."""

    present: bool = True
    operator: str = "KT"  # long alphanumeric name, as AT+COPS? reports it
    short_name: str = "KT"
    mcc: str = "450"
    mnc: str = "08"
    imsi: str = "450081234567890"
    iccid: str = "89820812345678901234"
    pin: str | None = None  # None: no PIN lock
    puk: str = "12345678"
    pin_tries: int = 3
    puk_tries: int = 10
    roaming: bool = False
    tac: int = 0x1A2B
    cell_id: int = 0x1A2D001
    pci: int = 123
    earfcn: int = 1550
    band: int = 3

    @property
    def plmn(self) -> str:
        return self.mcc + self.mnc

    @classmethod
    def kt(cls, **changes: Any) -> SimCard:
        """A KT SIM (450-08)."""
        return dataclasses.replace(cls(), **changes)

    @classmethod
    def skt(cls, **changes: Any) -> SimCard:
        """An SK Telecom SIM (450-05)."""
        base = cls(operator="SKTelecom", short_name="SKT", mnc="05", imsi="450051234567890",
                   iccid="89820512345678901234", tac=0x2B3C, cell_id=0x2B3E002, pci=211,
                   earfcn=1350, band=3)
        return dataclasses.replace(base, **changes)

    @classmethod
    def lgu(cls, **changes: Any) -> SimCard:
        """An LG U+ SIM (450-06)."""
        base = cls(operator="LG U+", short_name="LGU+", mnc="06", imsi="450061234567890",
                   iccid="89820612345678901234", tac=0x3C4D, cell_id=0x3C4F003, pci=307,
                   earfcn=2600, band=7)
        return dataclasses.replace(base, **changes)

    @classmethod
    def absent(cls) -> SimCard:
        """An empty slot."""
        return cls(present=False)


OPERATORS: dict[str, Callable[..., SimCard]] = {
    "KT": SimCard.kt,
    "SKT": SimCard.skt,
    "LGU": SimCard.lgu,
}


@dataclass
class Signal:
    """Radio conditions in physical units; the AT encodings are derived from these."""

    rssi_dbm: int = -65
    rsrp_dbm: int = -95
    rsrq_db: int = -10
    sinr_db: int = 12

    @property
    def csq(self) -> int:
        """27.007 `+CSQ` <rssi> index: 0 (-113 dBm or less) .. 31 (-51 dBm or more)."""
        return max(0, min(31, (self.rssi_dbm + 113) // 2))

    @property
    def cesq_rsrq(self) -> int:
        return max(0, min(34, int((self.rsrq_db + 20) * 2)))

    @property
    def cesq_rsrp(self) -> int:
        return max(0, min(97, self.rsrp_dbm + 141))

    @property
    def qeng_sinr(self) -> int:
        """EC2x `+QENG` LTE SINR: (dB + 20) / 2, 0..25 (the convention the parsers use)."""
        return max(0, min(25, round((self.sinr_db + 20) / 2)))

    @property
    def qcsq_sinr(self) -> int:
        """`+QCSQ` reports SINR in 1/5 dB from -20 dB: 0..250."""
        return max(0, min(250, (self.sinr_db + 20) * 5))


# -- data hooks ----------------------------------------------------------------------------


class RecordingDataHook:
    """Records data-call changes (`calls`: True up, False down) for tests."""

    def __init__(self) -> None:
        self.calls: list[bool] = []

    async def __call__(self, up: bool) -> None:
        self.calls.append(up)

    @property
    def up(self) -> bool:
        return bool(self.calls) and self.calls[-1]


class IpLinkHook:
    """Brings `interface` (in network namespace `netns`, if given) up/down with `ip`.

    With `address` (CIDR, e.g. `10.64.0.2/30`) it is assigned on up and removed on down.
    Runs `ip` as an asyncio subprocess, so the loop never blocks; a failure is logged and
    raised to the simulator, which logs it and carries on answering.
    """

    def __init__(
        self, interface: str, *, netns: str | None = None, address: str | None = None,
        ip: str = "ip",
    ) -> None:
        self.interface = interface
        self.netns = netns
        self.address = address
        self.ip = ip

    async def __call__(self, up: bool) -> None:
        if up:
            await self._ip("link", "set", "dev", self.interface, "up")
            if self.address:
                await self._ip("addr", "replace", self.address, "dev", self.interface)
        else:
            if self.address:
                await self._ip("addr", "del", self.address, "dev", self.interface, check=False)
            await self._ip("link", "set", "dev", self.interface, "down")

    async def _ip(self, *args: str, check: bool = True) -> None:
        argv = [self.ip, *(["-n", self.netns] if self.netns else []), *args]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        _, err = await proc.communicate()
        if proc.returncode != 0 and check:
            raise RuntimeError(f"{' '.join(argv)!r} failed ({proc.returncode}): {err!r}")


# -- command parsing -----------------------------------------------------------------------


def _split_args(text: str) -> list[str]:
    """`1,"IP","a,b"` -> [`1`, `IP`, `a,b`] (quotes removed, commas inside kept)."""
    args: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            args.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    args.append("".join(current).strip())
    return args


_EXTENDED = re.compile(r"^\+([A-Z0-9]+)(=\?|\?|=(.*))?$", re.DOTALL)
_BASIC = re.compile(r"(&?[A-Z])(\d*)")


@dataclass
class _Reply:
    lines: list[str] = field(default_factory=list)
    final: str = "OK"
    after: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


class _Abandon(Exception):
    """The modem stops answering this command (reboot/power-off in progress)."""


# -- the simulator -------------------------------------------------------------------------


class ModemSimulator:
    """A Quectel EC25 on a pty. See the module docstring for behaviour and knobs."""

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
        clock: Callable[[], dt.datetime] | None = None,
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
        self.chunk_size = chunk_size
        self.chunk_gap_s = chunk_gap_s
        self.tz_quarters = tz_quarters
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        #: every command line received (as sent, without `\r`)
        self.received: list[str] = []
        self.boots = 0

        self._master: int | None = None
        self._slave: int | None = None
        self._slave_path: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._power: PowerState = "off"
        self._epoch = 0  # bumped on reboot/mute/power-off: unsent output is dropped
        self._inbuf = bytearray()
        self._commands: asyncio.Queue[str] = asyncio.Queue()
        self._out: asyncio.Queue[tuple[int, bytes] | asyncio.Future[None]] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        self._executor_task: asyncio.Task[None] | None = None
        self._power_task: asyncio.Task[None] | None = None
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._holds: dict[str, asyncio.Event] = {}
        self._seen: list[tuple[str, asyncio.Future[str]]] = []
        self._race: deque[str] = deque()
        self._raw_answers: dict[str, tuple[bytes, int | None]] = {}
        self._reboot_on: set[str] = set()
        self._wrote_chunk = False
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

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def slave_path(self) -> str:
        """The pty slave the driver opens (`/dev/pts/N`)."""
        if self._slave_path is None:
            raise RuntimeError("simulator not started")
        return self._slave_path

    async def start(self, *, boot: bool = False) -> None:
        """Create the pty and run. `boot=False`: the modem is on and settled (as if it
        had booted long before the host opened the port); `boot=True`: play power-on
        (`RDY` ... after `boot_delay_s`)."""
        if self._master is not None:
            raise RuntimeError("simulator already started")
        self._loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo/line discipline before the driver configures it
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self._slave_path = os.ttyname(slave)
        self._loop.add_reader(master, self._on_input)
        self._writer_task = self._loop.create_task(self._writer(), name="sim-writer")
        if boot:
            self._restart("power-on")
        else:
            self._power = "on"
            self._load_sim()
            self._last_stat = self._reg_stat()
            self._start_executor()

    async def stop(self) -> None:
        """Stop all tasks and close the pty (the driver sees a hang-up). Idempotent."""
        if self._master is None:
            return
        assert self._loop is not None
        self._loop.remove_reader(self._master)
        self._loop.remove_writer(self._master)
        tasks = [t for t in (self._writer_task, self._executor_task, self._power_task) if t]
        tasks += list(self._side_tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        self._power = "off"

    async def __aenter__(self) -> ModemSimulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

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

    # -- knobs ---------------------------------------------------------------------------
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

    def insert_sim(self, slot: int, card: SimCard) -> None:
        self.sims[slot] = card
        if slot == self._slot and self._power == "on":
            self._swap_sim()

    def remove_sim(self, slot: int) -> None:
        self.insert_sim(slot, SimCard.absent())

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

    def time_zone_report(self) -> None:
        """`+CTZE` as the network's NITZ arrives (when enabled with `AT+CTZR=2`)."""
        if self._ctzr == 2:
            sign = "-" if self.tz_quarters < 0 else "+"
            now = self.clock().astimezone(dt.UTC)
            self._urc(f'+CTZE: "{sign}{abs(self.tz_quarters):02d}",0,'
                      f'"{now:%Y/%m/%d,%H:%M:%S}"')

    def race_urc(self, line: str) -> None:
        """Put URC `line` in the middle of the next answer (after its first line)."""
        self._race.append(line)

    def emit_urc(self, line: str) -> None:
        """Send URC `line` now (if the modem is on)."""
        self._urc(line)

    def send_raw(self, data: bytes) -> None:
        """Send arbitrary bytes now (garbage, half lines), whatever the power state."""
        self._send(data, force=True)

    def hold(self, command: str) -> asyncio.Event:
        """Answer `command` (case-insensitive, exact) only once the returned event is set."""
        event = self._holds.setdefault(command.strip().upper(), asyncio.Event())
        return event

    def release(self, command: str) -> None:
        event = self._holds.pop(command.strip().upper(), None)
        if event is not None:
            event.set()

    def answer_raw(self, command: str, data: bytes, *, times: int | None = None) -> None:
        """Answer `command` (case-insensitive, exact) with exactly `data` (echo aside),
        `times` times (None: until `clear_raw(command)`)."""
        if times is not None and times < 1:
            raise ValueError(f"times must be at least 1, not {times!r}")
        self._raw_answers[command.strip().upper()] = (data, times)

    def clear_raw(self, command: str | None = None) -> None:
        """Answer `command` (None: every command) normally again."""
        if command is None:
            self._raw_answers.clear()
        else:
            self._raw_answers.pop(command.strip().upper(), None)

    def reboot_on(self, command: str) -> None:
        """Reboot (once) when `command` next arrives, without answering it."""
        self._reboot_on.add(command.strip().upper())

    def _quirk(self, line: str) -> bool:
        """Play a configured quirk for `line`; True when it replaced the answer."""
        key = line.upper()
        if key in self._reboot_on:
            self._reboot_on.discard(key)
            self.reboot()
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

    def command_seen(self, command: str) -> asyncio.Future[str]:
        """A future resolved (with the line) when `command` next arrives."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._seen.append((command.strip().upper(), future))
        return future

    # -- power sequencing ----------------------------------------------------------------
    def _bump_epoch(self) -> None:
        self._epoch += 1
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
    def _on_input(self) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("simulator pty read: %s", exc)
            return
        if not data or self._power != "on":
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
            self._out.put_nowait((self._epoch, data))

    def _urc(self, line: str) -> None:
        self._send(f"{CRLF}{line}{CRLF}".encode("ascii"))

    async def _flush(self) -> None:
        """Wait until everything queued so far has been written to the pty."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._out.put_nowait(done)
        await done

    async def _writer(self) -> None:
        while True:
            item = await self._out.get()
            if isinstance(item, asyncio.Future):
                if not item.done():
                    item.set_result(None)
                continue
            epoch, data = item
            size = self.chunk_size or len(data) or 1
            for start in range(0, len(data), size):
                if epoch != self._epoch:
                    break
                if self.chunk_gap_s and self.chunk_size and self._wrote_chunk:
                    await asyncio.sleep(self.chunk_gap_s)
                await self._write_all(data[start : start + size])
                self._wrote_chunk = True

    async def _write_all(self, data: bytes) -> None:
        assert self._master is not None and self._loop is not None
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._master, view)
            except BlockingIOError:
                written = 0
            view = view[written:]
            if view:
                room: asyncio.Future[None] = self._loop.create_future()
                self._loop.add_writer(self._master, room.set_result, None)
                try:
                    await room
                finally:
                    self._loop.remove_writer(self._master)

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
            except _Abandon:
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

    def _error(self, code: int | None = None) -> _Reply:
        return _Reply(final="ERROR" if code is None else self._cme(code))

    async def _dispatch(self, part: str) -> _Reply:
        upper = part.upper()
        if not upper.startswith("+"):
            return self._basic(upper)
        match = _EXTENDED.match(upper)
        if not match:
            return self._error()
        name = match.group(1)
        args: list[str]
        if match.group(2) is None:
            kind, args = "exec", []
        elif match.group(2) == "?":
            kind, args = "read", []
        elif match.group(2) == "=?":
            kind, args = "test", []
        else:
            # keep the original case of arguments (PINs, APNs)
            raw = part[part.index("=") + 1 :]
            kind, args = "set", _split_args(raw)
        handler = getattr(self, f"_cmd_{name.lower()}", None)
        if handler is None:
            return self._error()
        reply: _Reply = await handler(kind, args)
        return reply

    def _basic(self, body: str) -> _Reply:
        if body == "":
            return _Reply()
        position = 0
        reply = _Reply()
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

    # identity
    async def _cmd_cgmi(self, kind: str, args: list[str]) -> _Reply:
        return _Reply([self.manufacturer]) if kind == "exec" else _Reply()

    async def _cmd_cgmm(self, kind: str, args: list[str]) -> _Reply:
        return _Reply([self.model]) if kind == "exec" else _Reply()

    async def _cmd_cgmr(self, kind: str, args: list[str]) -> _Reply:
        return _Reply([self.revision]) if kind == "exec" else _Reply()

    async def _cmd_cgsn(self, kind: str, args: list[str]) -> _Reply:
        return _Reply([self.imei]) if kind in ("exec", "set") else _Reply()

    _cmd_gsn = _cmd_cgsn

    async def _cmd_cmee(self, kind: str, args: list[str]) -> _Reply:
        if kind == "read":
            return _Reply([f"+CMEE: {self._cmee}"])
        if kind == "test":
            return _Reply(["+CMEE: (0-2)"])
        if kind == "set" and args[0] in ("0", "1", "2"):
            self._cmee = int(args[0])
            return _Reply()
        return self._error()

    async def _cmd_cscs(self, kind: str, args: list[str]) -> _Reply:
        if kind == "read":
            return _Reply([f'+CSCS: "{self._cscs}"'])
        if kind == "test":
            return _Reply(['+CSCS: ("GSM","IRA","UCS2")'])
        if kind == "set" and args[0].upper() in ("GSM", "IRA", "UCS2"):
            self._cscs = args[0].upper()
            return _Reply()
        return self._error()

    # SIM
    def _sim_error(self) -> _Reply | None:
        if self._cfun == 0:
            return self._error(13)
        code = {"ABSENT": 10, "PIN": 11, "PUK": 12, "BLOCKED": 13}.get(self._sim_state)
        return None if code is None else self._error(code)

    async def _cmd_cpin(self, kind: str, args: list[str]) -> _Reply:
        state = self._sim_state
        if kind == "test":
            return _Reply()
        if state == "ABSENT":
            return self._error(10)
        if state == "BLOCKED":
            return self._error(13)
        if kind == "read":
            text = {"READY": "READY", "PIN": "SIM PIN", "PUK": "SIM PUK"}[state]
            return _Reply([f"+CPIN: {text}"])
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

    def _unlocked(self, new_pin: str | None) -> _Reply:
        if new_pin is not None:
            self.sim.pin = new_pin
        self._sim_state = "READY"

        async def announce() -> None:
            self._urc("+CPIN: READY")
            self._sim_ready_urcs()
            self._registration_changed()

        return _Reply(after=[announce])

    async def _cmd_qpinc(self, kind: str, args: list[str]) -> _Reply:
        card = self.sim
        if not card.present:
            return self._error(10)
        rows = {"SC": f'+QPINC: "SC",{max(card.pin_tries, 0)},{max(card.puk_tries, 0)}',
                "P2": '+QPINC: "P2",3,10'}
        if kind == "read":
            return _Reply(list(rows.values()))
        if kind == "set" and args[0].upper() in rows:
            return _Reply([rows[args[0].upper()]])
        if kind == "test":
            return _Reply(['+QPINC: ("SC","P2")'])
        return self._error()

    async def _cmd_qccid(self, kind: str, args: list[str]) -> _Reply:
        if kind == "test":
            return _Reply()
        if not self.sim.present or self._cfun == 0:
            return self._error(10 if not self.sim.present else 13)
        return _Reply([f"+QCCID: {self.sim.iccid}"])

    async def _cmd_cimi(self, kind: str, args: list[str]) -> _Reply:
        if kind == "test":
            return _Reply()
        return self._sim_error() or _Reply([self.sim.imsi])

    # registration
    async def _registration(self, name: str, kind: str, args: list[str]) -> _Reply:
        if kind == "read":
            n, stat = self._reg_n[name], self._reg_stat()
            location = self._location(stat, n) if n >= 2 else ""
            return _Reply([f"+{name}: {n},{stat}{location}"])
        top = 3 if name == "CEREG" else 2
        if kind == "test":
            return _Reply([f"+{name}: (0-{top})"])
        if kind == "set" and args[0].isdigit() and int(args[0]) <= top:
            self._reg_n[name] = int(args[0])
            return _Reply()
        return self._error()

    async def _cmd_creg(self, kind: str, args: list[str]) -> _Reply:
        return await self._registration("CREG", kind, args)

    async def _cmd_cgreg(self, kind: str, args: list[str]) -> _Reply:
        return await self._registration("CGREG", kind, args)

    async def _cmd_cereg(self, kind: str, args: list[str]) -> _Reply:
        return await self._registration("CEREG", kind, args)

    async def _cmd_cops(self, kind: str, args: list[str]) -> _Reply:
        if kind == "read":
            if self.cops_delay_s:
                await asyncio.sleep(self.cops_delay_s)
            if not self._registered:
                return _Reply(["+COPS: 0"])
            card = self.sim
            name = {0: card.operator, 1: card.short_name, 2: card.plmn}[self._cops_format]
            return _Reply([f'+COPS: 0,{self._cops_format},"{name}",7'])
        if kind == "test":
            if self.cops_delay_s:
                await asyncio.sleep(self.cops_delay_s)
            found = [c for c in (SimCard.kt(), SimCard.skt(), SimCard.lgu())]
            own = self.sim.plmn if self._registered else None
            entries = ",".join(
                f'({2 if c.plmn == own else 1},"{c.operator}","{c.short_name}","{c.plmn}",7)'
                for c in found
            )
            return _Reply([f"+COPS: {entries},,(0-4),(0-2)"])
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
        return _Reply()

    # signal and cell
    async def _cmd_csq(self, kind: str, args: list[str]) -> _Reply:
        if kind == "test":
            return _Reply(["+CSQ: (0-31,99),(0-7,99)"])
        rssi = self.signal.csq if self._registered else 99
        return _Reply([f"+CSQ: {rssi},99"])

    async def _cmd_qcsq(self, kind: str, args: list[str]) -> _Reply:
        if not self._registered:
            return _Reply(['+QCSQ: "NOSERVICE"'])
        s = self.signal
        return _Reply([f'+QCSQ: "LTE",{s.rssi_dbm},{s.rsrp_dbm},{s.qcsq_sinr},{s.rsrq_db}'])

    async def _cmd_cesq(self, kind: str, args: list[str]) -> _Reply:
        if not self._registered:
            return _Reply(["+CESQ: 99,99,255,255,255,255"])
        s = self.signal
        return _Reply([f"+CESQ: 99,99,255,255,{s.cesq_rsrq},{s.cesq_rsrp}"])

    async def _cmd_qnwinfo(self, kind: str, args: list[str]) -> _Reply:
        if not self._registered:
            return _Reply(["+QNWINFO: No Service"])
        card = self.sim
        return _Reply([f'+QNWINFO: "FDD LTE","{card.plmn}","LTE BAND {card.band}",'
                       f"{card.earfcn}"])

    async def _cmd_qeng(self, kind: str, args: list[str]) -> _Reply:
        if kind != "set" or args[0].lower() != "servingcell":
            return self._error(3) if kind == "set" else _Reply()
        if not self._registered:
            return _Reply(['+QENG: "servingcell","SEARCH"'])
        card, s = self.sim, self.signal
        state = "CONNECT" if self._data_up else "NOCONN"
        srxlev = max(0, s.rsrp_dbm + 140 - 10)
        return _Reply([
            f'+QENG: "servingcell","{state}","LTE","FDD",{card.mcc},{card.mnc},'
            f"{card.cell_id:X},{card.pci},{card.earfcn},{card.band},5,5,{card.tac:X},"
            f"{s.rsrp_dbm},{s.rsrq_db},{s.rssi_dbm},{s.qeng_sinr},{srxlev}"
        ])

    # packet data
    async def _cmd_cgdcont(self, kind: str, args: list[str]) -> _Reply:
        if kind == "read":
            rows = []
            for cid, (pdp_type, apn) in sorted(self._contexts.items()):
                address = "0.0.0.0" if pdp_type == "IP" else "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0"
                rows.append(f'+CGDCONT: {cid},"{pdp_type}","{apn}","{address}",0,0,0,0')
            return _Reply(rows)
        if kind == "test":
            return _Reply(['+CGDCONT: (1-24),"IP",,,(0-2),(0-4),(0-1),(0-1)'])
        if kind != "set" or not args[0].isdigit() or not 1 <= int(args[0]) <= 24:
            return self._error()
        cid = int(args[0])
        if len(args) == 1:
            self._contexts.pop(cid, None)
            return _Reply()
        pdp_type = args[1].upper()
        if pdp_type not in ("IP", "IPV6", "IPV4V6", "PPP"):
            return self._error()
        self._contexts[cid] = (pdp_type, args[2] if len(args) > 2 else "")
        return _Reply()

    async def _cmd_cgatt(self, kind: str, args: list[str]) -> _Reply:
        if kind == "read":
            return _Reply([f"+CGATT: {int(self._attached and self._registered)}"])
        if kind == "test":
            return _Reply(["+CGATT: (0,1)"])
        if kind != "set" or args[0] not in ("0", "1"):
            return self._error()
        if args[0] == "0":
            self._attached = False
            if self._active or self._data_up:
                self._active.clear()
                self._netdev = None
                await self._set_data(False)
            return _Reply()
        if not self._registered:
            return self._error(30)
        self._attached = True
        return _Reply()

    async def _cmd_cgact(self, kind: str, args: list[str]) -> _Reply:
        if kind == "read":
            return _Reply([f"+CGACT: {cid},{int(cid in self._active)}"
                           for cid in sorted(self._contexts)])
        if kind == "test":
            return _Reply(["+CGACT: (0,1)"])
        if kind != "set" or args[0] not in ("0", "1"):
            return self._error()
        try:
            cids = [int(a) for a in args[1:] if a] or sorted(self._contexts)
        except ValueError:
            return self._error()
        return await self._activate(args[0] == "1", cids)

    async def _activate(self, up: bool, cids: list[int]) -> _Reply:
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
        return _Reply()

    async def _cmd_cgpaddr(self, kind: str, args: list[str]) -> _Reply:
        if kind == "test":
            return _Reply([f"+CGPADDR: ({','.join(str(c) for c in sorted(self._contexts))})"])
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
        return _Reply(rows)

    async def _cmd_ceer(self, kind: str, args: list[str]) -> _Reply:
        if kind == "test":
            return _Reply()
        return _Reply([f'+CEER: "{self.error_report}"'])

    async def _cmd_qsimstat(self, kind: str, args: list[str]) -> _Reply:
        if kind == "read":
            return _Reply([f"+QSIMSTAT: {self._qsimstat},{1 if self.sim.present else 0}"])
        if kind == "test":
            return _Reply(["+QSIMSTAT: (0,1)"])
        if kind == "set" and args[0] in ("0", "1"):
            self._qsimstat = int(args[0])
            return _Reply()
        return self._error()

    async def _cmd_ctzr(self, kind: str, args: list[str]) -> _Reply:
        if kind == "read":
            return _Reply([f"+CTZR: {self._ctzr}"])
        if kind == "test":
            return _Reply(["+CTZR: (0-2)"])
        if kind == "set" and args[0] in ("0", "1", "2"):
            self._ctzr = int(args[0])
            return _Reply()
        return self._error()

    async def _cmd_cgerep(self, kind: str, args: list[str]) -> _Reply:
        if kind == "read":
            return _Reply([f"+CGEREP: {self._cgerep},0"])
        if kind == "test":
            return _Reply(["+CGEREP: (0-2),(0,1)"])
        if kind == "set" and args[0] in ("0", "1", "2"):
            self._cgerep = int(args[0])
            return _Reply()
        return self._error()

    async def _cmd_qcfg(self, kind: str, args: list[str]) -> _Reply:
        if kind == "test":
            return _Reply(['+QCFG: "usbnet",(0-5)'])
        if kind != "set" or args[0].lower() != "usbnet":
            return self._error()
        if len(args) == 1:
            return _Reply([f'+QCFG: "usbnet",{self._usbnet}'])
        if args[1] not in ("0", "1", "2", "3", "5"):
            return self._error()
        self._usbnet = int(args[1])
        return _Reply()

    async def _cmd_qnetdevctl(self, kind: str, args: list[str]) -> _Reply:
        if kind == "read":
            if self._netdev is None:
                return _Reply(["+QNETDEVCTL: 0,1,0,0"])
            op, cid, urc = self._netdev
            return _Reply([f"+QNETDEVCTL: {op},{cid},{urc},{int(self._data_up)}"])
        if kind == "test":
            return _Reply(["+QNETDEVCTL: (0-3),(1-16),(0,1)"])
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

    # time
    def _local_now(self) -> dt.datetime:
        return self.clock().astimezone(dt.UTC) + dt.timedelta(minutes=15 * self.tz_quarters)

    def _tz(self) -> str:
        return f"{'+' if self.tz_quarters >= 0 else '-'}{abs(self.tz_quarters):02d}"

    async def _cmd_cclk(self, kind: str, args: list[str]) -> _Reply:
        if kind != "read":
            return _Reply() if kind in ("test", "set") else self._error()
        return _Reply([f'+CCLK: "{self._local_now():%y/%m/%d,%H:%M:%S}{self._tz()}"'])

    async def _cmd_qlts(self, kind: str, args: list[str]) -> _Reply:
        if kind == "test":
            return _Reply(["+QLTS: (0-2)"])
        mode = args[0] if kind == "set" else "0"
        if mode not in ("0", "1", "2"):
            return self._error()
        if not self._registered:
            return _Reply(['+QLTS: ""'])
        when = self._local_now() if mode == "2" else self.clock().astimezone(dt.UTC)
        return _Reply([f'+QLTS: "{when:%Y/%m/%d,%H:%M:%S}{self._tz()},0"'])

    # power and SIM slots
    async def _cmd_cfun(self, kind: str, args: list[str]) -> _Reply:
        if kind == "read":
            return _Reply([f"+CFUN: {self._cfun}"])
        if kind == "test":
            return _Reply(["+CFUN: (0,1,4),(0,1)"])
        if kind != "set" or args[0] not in ("0", "1", "4"):
            return self._error()
        if len(args) > 1 and args[1] == "1":
            return _Reply(after=[self._reboot_after_ok])
        fun = int(args[0])
        if fun == self._cfun:
            return _Reply()
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

        return _Reply(after=[announce])

    async def _reboot_after_ok(self) -> None:
        await self._flush()
        self._restart("AT+CFUN=1,1")
        raise _Abandon

    async def _cmd_qdsim(self, kind: str, args: list[str]) -> _Reply:
        if kind == "read":
            return _Reply([f"+QDSIM: {self._slot}"])
        if kind == "test":
            return _Reply([f"+QDSIM: (0-{len(self.sims) - 1})"])
        if kind != "set" or not args[0].isdigit() or int(args[0]) >= len(self.sims):
            return self._error()
        slot = int(args[0])
        if slot == self._slot:
            return _Reply()
        self._slot = slot
        self._active.clear()
        self._netdev = None
        await self._set_data(False)

        async def swap() -> None:
            self._swap_sim()

        return _Reply(after=[swap])

    async def _cmd_qpowd(self, kind: str, args: list[str]) -> _Reply:
        if kind == "test":
            return _Reply(["+QPOWD: (0,1)"])
        if kind == "set" and args[0] not in ("0", "1"):
            return self._error()

        async def power_down() -> None:
            self._urc("POWERED DOWN")
            await self._flush()
            self._halt("off")
            raise _Abandon

        return _Reply(after=[power_down])


# -- standalone ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hw.modem.simulator",
        description="Quectel EC25 simulator on a pseudo-terminal (for work without hardware).",
    )
    parser.add_argument("--link", help="create this symlink to the pty slave (e.g. /tmp/ttyMODEM)")
    parser.add_argument("--operator", choices=sorted(OPERATORS), default="KT",
                        help="operator of the SIM in slot 0 (default KT, 450-08)")
    parser.add_argument("--slot2-operator", choices=sorted(OPERATORS),
                        help="a SIM of this operator in slot 1 (default: slot 1 empty)")
    parser.add_argument("--no-sim", action="store_true", help="slot 0 is empty")
    parser.add_argument("--pin", help="the SIM in slot 0 is locked with this PIN")
    parser.add_argument("--interface", help="data interface to bring up/down with the data call")
    parser.add_argument("--netns", help="network namespace of --interface")
    parser.add_argument("--address", help="CIDR address to put on --interface when data is up")
    parser.add_argument("--cops-delay", type=float, default=0.0, metavar="S",
                        help="answer AT+COPS? after S seconds")
    parser.add_argument("--boot", action="store_true",
                        help="play the power-on sequence (RDY ...) at start")
    parser.add_argument("--boot-delay", type=float, default=0.0, metavar="S",
                        help="seconds from power-on to RDY")
    parser.add_argument("--log-level", default="warning")
    return parser


def _make_link(link: str, target: str) -> bool:
    """Point symlink `link` at `target`, replacing an old symlink (never a real file)."""
    if os.path.lexists(link):
        if not os.path.islink(link):
            print(f"refusing to replace {link!r}: not a symlink", file=sys.stderr)
            return False
        os.unlink(link)
    os.symlink(target, link)
    return True


def _remove_link(link: str, target: str) -> None:
    if os.path.islink(link) and os.readlink(link) == target:
        os.unlink(link)


async def _serve(args: argparse.Namespace) -> int:
    card = SimCard.absent() if args.no_sim else OPERATORS[args.operator]()
    if args.pin and card.present:
        card.pin = args.pin
    slot2 = OPERATORS[args.slot2_operator]() if args.slot2_operator else SimCard.absent()
    sim = ModemSimulator(
        sims=[card, slot2], data_interface=args.interface, netns=args.netns,
        data_address=args.address, cops_delay_s=args.cops_delay, boot_delay_s=args.boot_delay,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signals.SIGINT, signals.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await sim.start(boot=args.boot)
    link = args.link
    try:
        if link and not _make_link(link, sim.slave_path):
            return 2
        where = f"{sim.slave_path}" + (f" (linked at {link})" if link else "")
        sim_text = "no SIM" if not card.present else f"{card.operator} {card.mcc}-{card.mnc}"
        print(f"EC25 simulator ready on {where}: {sim_text}; Ctrl-C stops", flush=True)
        await stop.wait()
    finally:
        if link:
            _remove_link(link, sim.slave_path)
        await sim.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(message)s")
    return asyncio.run(_serve(args))


if __name__ == "__main__":
    sys.exit(main())

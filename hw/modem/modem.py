"""`Modem`: typed operations on an LTE modem over an `AtChannel`, and a live snapshot.

Layering: `channel` pairs AT commands with answers; `profiles` know which commands a
vendor needs; this module strings them into operations (`initialise`, `sim`,
`registration`, `connect_data`...) and keeps one mutable state that every answer and
every URC updates. `snapshot()` freezes it into a `ModemStatus`.

URCs. The modem subscribes (synchronous callbacks on the channel's reader task, so no
task of its own) to `+CREG/+CGREG/+CEREG` (registration, with TAC/cell/AcT once
`initialise()` set `=2`), `+CPIN` (SIM state), `+QIND` (Quectel SIM/PB done, csq, act),
`+QNETDEVSTATUS` / `+CGEV` / `+QIURC: "pdpdeact"` (data call; a network deactivation is
remembered as the reason it is down), `+CFUN` (radio), `+QSIMSTAT` / `+QUSIM` (SIM hot
swap: a pulled SIM is `NOT_INSERTED` at once, an inserted one sets `needs_refresh`),
`+CTZE` (the network's time zone), `RDY` (the modem rebooted: the state is cleared and
`needs_init` set until `initialise()` runs again) and `POWERED DOWN`. So the snapshot is
current between polls; `wait_for(predicate)` waits for a change without polling.

Why it cannot connect. The snapshot's `not_connected_reason` (`hw.modem.reasons`) puts
what the modem said in plain language: the SIM state and fault, `+CFUN?` (read by the
full refresh when not registered), the EMM reject cause of `+CEREG` at `<n>` = 3 (set
where the modem takes it) and `AT+CEER` (read when registration was denied), the network
deactivating the data call. The IMSI is kept only masked (`mask_imsi`).

Busy answers. A command answered with a "busy" +CME code (`BUSY_CME_CODES`: 14 SIM busy,
515 init in progress; plus the profile's) was not executed; it is sent again after
`busy_backoff_s` waits (0.2, 0.5, 1, 2 s), except the commands that are never replayed
(a PIN above all). `busy_retries` counts them.

Answers that carry a URC-shaped line (`AT+CPIN?` while `+CPIN: READY` is announced,
`AT+CEREG?` with a `+CEREG:` URC racing it — see `hw.modem.channel`) are applied line by
line in stream order: the last line is the most recent news, whichever it is.

Exclusive operations. Every public operation holds a per-task re-entrant lock for its
whole command sequence, so a multi-command operation (a data bring-up that reboots the
modem, a recovery step) is never interleaved with another task's commands; operations
nest freely inside one task (`connect_data` calls `initialise`). `exclusive()` gives a
caller (the health supervisor) the same lock across several operations.

Degraded readings. An answer (or URC) that does not parse never fails an operation: the
last good value stays in the snapshot, `parse_errors` counts it (and `on_parse_error`,
a metric hook, hears of it), and it is logged at most once per command per
`parse_log_interval_s`. `registration()` returns what it could read.

Boot and reboot. A modem that boots while the host talks to it (`RDY` at power-up, or a
crash mid-session) is an event, not an error: the next command (or the one that was
outstanding when `RDY` came) first waits for the boot URCs (`+CPIN: ...`, `SMS DONE`,
`PB DONE`; at most `timeouts.boot_urcs`), then the modem is re-initialised (echo off,
numeric errors, the profile's URC settings) and the command is sent (again). Commands
with side effects that must not happen twice (a PIN, `+CFUN`, data calls) are not
replayed: their `ModemRebooted` propagates.

SIM PIN. The configured PIN is sent only when the SIM reports `SIM PIN`, once per lock
(after a reboot the SIM is locked again and the known-good PIN is entered again). A PIN
the SIM refused is remembered (per ICCID) and never sent again, and an attempt without an
answer is not repeated either: a blind retry is how a SIM ends up PUK-locked in a shop.
`SIM PUK` and other locks are faults (`SimFault`) and no PIN is sent at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Final

from hw.modem.carriers import same_carrier
from hw.modem.channel import AtChannel, Response, Urc
from hw.modem.errors import (
    CommandError,
    CommandTimeout,
    ModemRebooted,
    NotRegistered,
    ParseError,
    PortClosed,
    SimFault,
)
from hw.modem.parsers.clock import parse_ctze
from hw.modem.parsers.identity import (
    ModemIdentity,
    SimState,
    parse_ati,
    parse_cgmi,
    parse_cgmm,
    parse_cgmr,
    parse_cgsn,
    parse_cpin,
    parse_imsi,
)
from hw.modem.parsers.pdp import PacketEvent, parse_cgev
from hw.modem.parsers.quectel import parse_qiurc, parse_qsimstat, parse_qusim
from hw.modem.parsers.radio import RadioMode, parse_ceer, parse_cfun
from hw.modem.parsers.registration import (
    Registration,
    RegistrationForm,
    RegistrationStatus,
    parse_cops,
    parse_registration,
    registration_form,
)
from hw.modem.parsers.signal import parse_csq
from hw.modem.profiles import GenericProfile, Timeouts, profile_for
from hw.modem.profiles.generic import check_apn, info_text
from hw.modem.reasons import mask_imsi, not_connected_reason
from hw.modem.status import (
    DataStatus,
    ModemStatus,
    OperatorInfo,
    RegistrationInfo,
    SignalReading,
    SimInfo,
)

__all__ = ["URC_PREFIXES", "Modem"]

log = logging.getLogger(__name__)

#: URCs the modem follows.
URC_PREFIXES: Final = (
    "RDY",
    "POWERED DOWN",
    "NORMAL POWER DOWN",
    "+CREG:",
    "+CGREG:",
    "+CEREG:",
    "+CPIN:",
    "+QIND:",
    "+QNETDEVSTATUS:",
    "+CGEV:",
    "+CFUN:",
    "PB DONE",
    "SMS DONE",
    "+QSIMSTAT:",
    "+QUSIM:",
    "+QIURC:",
    "+CTZE:",
)

#: Registration sources, best first: EPS (LTE) decides the data path.
_REG_ORDER: Final = ("+CEREG", "+CGREG", "+CREG")

#: +CPIN states that need a person (no PIN is ever sent in them).
_SIM_FAULTS: Final[Mapping[SimState, str]] = {
    SimState.SIM_PUK: "puk_required",
    SimState.SIM_PUK2: "locked",
    SimState.SIM_PIN2: "locked",
    SimState.PH_SIM_PIN: "locked",
    SimState.PH_FSIM_PIN: "locked",
    SimState.PH_FSIM_PUK: "locked",
    SimState.PH_NET_PIN: "locked",
    SimState.PH_NET_PUK: "locked",
    SimState.PH_NETSUB_PIN: "locked",
    SimState.PH_NETSUB_PUK: "locked",
    SimState.PH_SP_PIN: "locked",
    SimState.PH_SP_PUK: "locked",
    SimState.PH_CORP_PIN: "locked",
    SimState.PH_CORP_PUK: "locked",
    SimState.FAILURE: "failure",
    SimState.WRONG: "failure",
}

#: +CPIN states that pass by themselves (SIM initialising).
_SIM_TRANSIENT: Final = frozenset({SimState.NOT_READY, SimState.BUSY})

_PIN = re.compile(r"\d{4,8}")
_SIM_BUSY_CME: Final = 14

#: +CME codes meaning "busy, try again" (the command was not executed): 14 SIM busy (TS
#: 27.007), 515 "please wait, init or command processing in progress" (Sierra/Wavecom
#: and others). Profiles add their vendor's (`GenericProfile.busy_cme_codes`).
BUSY_CME_CODES: Final = frozenset({_SIM_BUSY_CME, 515})

#: Waits between retries of a command answered "busy" (then its error propagates).
BUSY_BACKOFF_S: Final = (0.2, 0.5, 1.0, 2.0)

#: Why the data call went down, when the modem said so (shown as a reason).
NETWORK_DEACTIVATED: Final = "network_deactivated"

#: Commands never sent again after the modem rebooted while they were outstanding: a PIN
#: (a retry is how a SIM gets PUK-locked), radio/power changes, data calls, SIM slots.
_NEVER_REPLAYED: Final = ("AT+CPIN=", "AT+CFUN", "AT+QPOWD", "AT+CGACT=", "AT+CGATT=",
                          "AT+QNETDEVCTL=", "AT+QDSIM=", "ATD", "AT+CMGS", "ATZ", "AT&F")

#: Reboots in a row a single command rides out before its `ModemRebooted` propagates.
_REBOOT_RETRIES: Final = 2

#: The unknown registration `registration()` returns when nothing could be read.
_NO_REGISTRATION: Final = RegistrationInfo(status=RegistrationStatus.UNKNOWN, area_code=None,
                                           cell_id=None, rat=None, source="none")


def _replayable(command: str) -> bool:
    text = command.strip().upper()
    if text.endswith("?") and ";" not in text:
        return True  # a read (`AT+CFUN?`) changes nothing
    return not text.startswith(_NEVER_REPLAYED)


def _boot_settled_by(line: str) -> bool:
    """A boot URC after which the modem takes commands: `PB DONE` (Quectel `+QIND: PB
    DONE`, SIMCom `PB DONE`) or a SIM that will not get there (`+CPIN:` other than
    READY: no SIM, PIN-locked)."""
    upper = line.upper()
    if upper.endswith("PB DONE"):
        return True
    return upper.startswith("+CPIN:") and upper.split(":", 1)[1].strip() != "READY"


class _TaskLock:
    """An asyncio lock the holding task may take again (nested operations)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None
        self._depth = 0

    def locked(self) -> bool:
        return self._lock.locked()

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        task = asyncio.current_task()
        if task is not None and self._owner is task:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
        else:
            async with self._lock:
                self._owner, self._depth = task, 1
                try:
                    yield
                finally:
                    self._owner, self._depth = None, 0


@dataclasses.dataclass
class _State:
    present: bool | None = None
    identity: ModemIdentity | None = None
    vendor: str | None = None
    sim_state: SimState | None = None
    sim_fault: str | None = None
    sim_slot: int | None = None
    iccid: str | None = None
    sim_mcc_mnc: str | None = None
    registrations: dict[str, RegistrationInfo] = dataclasses.field(default_factory=dict)
    operator: OperatorInfo | None = None
    signal: SignalReading | None = None
    data: DataStatus | None = None
    recovery_step: str | None = None
    resets_total: int = 0
    reboots_seen: int = 0
    last_reset_reason: str | None = None
    parse_errors: int = 0
    imsi: str | None = None  # masked (`mask_imsi`): the full IMSI is never kept
    radio: RadioMode | None = None
    cause_type: int | None = None
    reject_cause: int | None = None
    error_report: str | None = None
    data_down_reason: str | None = None
    utc_offset_min: int | None = None
    updated_at: float | None = None

    def registration(self) -> RegistrationInfo | None:
        """The best of the per-command registrations (registered EPS first)."""
        known = [self.registrations[k] for k in _REG_ORDER if k in self.registrations]
        for info in known:
            if info.registered:
                return info
        return known[0] if known else None

    def clear_network(self) -> None:
        self.registrations.clear()
        self.operator = None
        self.signal = None
        self.data = None
        self.cause_type = self.reject_cause = None

    def data_down(self, reason: str | None) -> None:
        if self.data is not None and self.data.up:
            self.data = dataclasses.replace(self.data, up=False)
        self.data_down_reason = reason


def _reg_info(reg: Registration) -> RegistrationInfo:
    return RegistrationInfo(status=reg.status, area_code=reg.area_code, cell_id=reg.cell_id,
                            rat=reg.act, source=reg.command)


class Modem:
    """An LTE modem behind `channel` (which the modem owns from now on: `close()` closes it).

    `pin`: the SIM PIN from the config (4..8 digits; "" or None: none). `apn`: default APN
    for `connect_data()`; `cid`: the PDP context used. `wired_carrier`: the wired ISP's
    carrier name (config `wired.carrier`) for the `same_carrier` check. `timeouts`: per
    kind of command. `profile_options` go to the vendor profile (`usbnet=` for Quectel).
    `clock` (monotonic seconds) stamps `updated_at`; `sleep` paces the few bounded
    re-polls (SIM busy, data address) — both injectable for tests. `on_parse_error(error)`
    is called (never raising into the modem) for every answer that did not parse.
    """

    def __init__(
        self,
        channel: AtChannel,
        *,
        pin: str | None = None,
        apn: str | None = None,
        cid: int = 1,
        wired_carrier: str = "",
        timeouts: Timeouts | None = None,
        profile_options: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        settle_poll_s: float = 0.5,
        on_parse_error: Callable[[ParseError], object] | None = None,
        parse_log_interval_s: float = 300.0,
        busy_backoff_s: tuple[float, ...] = BUSY_BACKOFF_S,
    ) -> None:
        if pin and _PIN.fullmatch(pin) is None:
            raise ValueError("the SIM PIN must be 4 to 8 digits")  # never echo a PIN
        if apn:
            check_apn(apn)
        self._pin = pin or None
        self.apn = apn
        self.cid = cid
        self.wired_carrier = wired_carrier
        self.timeouts = timeouts or Timeouts()
        self._profile_options = dict(profile_options or {})
        self._clock = clock
        self._sleep = sleep
        self._settle_poll_s = settle_poll_s
        self._profile: GenericProfile = GenericProfile(self.timeouts)
        self._state = _State()
        self._lock = _TaskLock()
        self._change = asyncio.Event()
        self._version = 0
        self._boots = 0
        self._reboot_expected = False
        self._needs_init = True
        self._reinit_pending = False
        self._reinitialising = False
        self._boot_done = asyncio.Event()
        self._boot_done.set()
        self.on_parse_error = on_parse_error
        self.parse_log_interval_s = parse_log_interval_s
        self._parse_logged: dict[str, tuple[float, int]] = {}
        self.busy_backoff_s = busy_backoff_s
        #: commands answered "busy" and sent again (`BUSY_CME_CODES`)
        self.busy_retries = 0
        self._needs_refresh = False
        self._rejected_pins: set[tuple[str | None, str]] = set()
        self._unconfirmed_pins: set[tuple[str | None, str]] = set()
        self._channel = channel
        self._remove_callback = channel.add_urc_callback(self._on_urc, URC_PREFIXES)

    @classmethod
    async def open(
        cls,
        port: str,
        *,
        baudrate: int = 115200,
        channel_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Modem:
        """Open the AT port `port` (device path or pyserial URL) and wrap it."""
        channel = await AtChannel.open(port, baudrate=baudrate, **dict(channel_options or {}))
        try:
            return cls(channel, **options)
        except BaseException:
            await channel.close()
            raise

    # -- plumbing --------------------------------------------------------------------------
    @property
    def channel(self) -> AtChannel:
        return self._channel

    @property
    def profile(self) -> GenericProfile:
        """The vendor profile (generic until `initialise()` identified the modem)."""
        return self._profile

    @property
    def pin(self) -> str | None:
        return self._pin

    @pin.setter
    def pin(self, value: str | None) -> None:
        """A new PIN from a reloaded config (a refused one stays refused)."""
        if value and _PIN.fullmatch(value) is None:
            raise ValueError("the SIM PIN must be 4 to 8 digits")
        self._pin = value or None

    @property
    def needs_init(self) -> bool:
        """True until `initialise()` ran since the last boot (`RDY`) or channel change."""
        return self._needs_init

    @property
    def boots(self) -> int:
        """`RDY`s seen (a reboot counter for `wait_boot`)."""
        return self._boots

    @property
    def busy(self) -> bool:
        """An operation holds the modem."""
        return self._lock.locked()

    def exclusive(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold the modem across several operations (they nest inside)."""
        return self._lock.hold()

    def attach(self, channel: AtChannel) -> None:
        """Use `channel` from now on (the old one is left to the caller): after the port was
        reopened, e.g. when a USB modem re-enumerated. The modem needs `initialise()`."""
        self._remove_callback()
        self._channel = channel
        self._remove_callback = channel.add_urc_callback(self._on_urc, URC_PREFIXES)
        self._needs_init = True

    async def close(self) -> None:
        self._remove_callback()
        await self._channel.close()

    async def __aenter__(self) -> Modem:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def command(
        self,
        command: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - AtChannel's per-command timeout
        prefix: str | Iterable[str] | None = None,
        payload: bytes | None = None,
    ) -> Response:
        """One raw AT command (see `AtChannel.command`); keeps `present` current. This is
        the `AtPort` the profiles talk through. A boot in progress is waited out and the
        modem re-initialised first; a reboot while the command was outstanding is ridden
        out the same way and the command sent again (see the module doc)."""
        reboots = busy = 0
        while True:
            await self._settle_boot()
            try:
                return await self._send(command, timeout=timeout, prefix=prefix,
                                        payload=payload)
            except ModemRebooted:
                if reboots == _REBOOT_RETRIES or not _replayable(command) \
                        or self._reinitialising:
                    raise
                reboots += 1
                log.warning("modem rebooted while %r was outstanding; waiting for it to boot",
                            command)
            except CommandError as exc:
                if exc.cme_code not in self._busy_codes() or busy >= len(self.busy_backoff_s) \
                        or not _replayable(command):
                    raise
                delay = self.busy_backoff_s[busy]
                busy += 1
                self.busy_retries += 1
                log.info("modem busy (%s) for %r; again in %g s", exc.final, command, delay)
                await self._sleep(delay)

    def _busy_codes(self) -> frozenset[int]:
        return BUSY_CME_CODES | self._profile.busy_cme_codes

    async def _send(
        self,
        command: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - AtChannel's per-command timeout
        prefix: str | Iterable[str] | None = None,
        payload: bytes | None = None,
    ) -> Response:
        try:
            response = await self._channel.command(
                command, timeout=self.timeouts.command if timeout is None else timeout,
                prefix=prefix, payload=payload)
        except CommandError:
            self._seen_alive()
            raise
        except PortClosed:
            self._update(present=False)
            raise
        self._seen_alive()
        return response

    # -- boot ------------------------------------------------------------------------------
    async def _settle_boot(self) -> None:
        """After an `RDY`: wait for the boot URCs, then re-initialise (once per boot; a
        reboot during it starts it over, a few times at most)."""
        for _ in range(_REBOOT_RETRIES + 1):
            if not self._reinit_pending or self._reinitialising:
                return
            boots = self._boots
            await self._await_boot_urcs()
            self._reinitialising = True
            try:
                await self._init_settings()
            except ModemRebooted:
                continue
            finally:
                self._reinitialising = False
            if self._boots == boots:
                self._reinit_pending = False
                self._needs_init = False
                log.info("modem re-initialised after boot #%d", self._state.reboots_seen)

    async def _await_boot_urcs(self) -> None:
        try:
            async with asyncio.timeout(self.timeouts.boot_urcs):
                await self._boot_done.wait()
        except TimeoutError:
            log.info("modem: boot URCs incomplete after %g s; going on",
                     self.timeouts.boot_urcs)

    async def _init_settings(self) -> None:
        """Echo off, numeric +CME errors, the profile's URC settings."""
        timeout = self.timeouts.command
        await self.command("ATE0", timeout=timeout)
        await self.command("AT+CMEE=1", timeout=timeout)
        for command, required in self._profile.init_commands():
            try:
                await self.command(command, timeout=timeout)
            except CommandError:
                if required:
                    raise
                log.info("modem: optional init command %r refused", command)

    # -- degraded readings -----------------------------------------------------------------
    @property
    def parse_errors(self) -> int:
        return self._state.parse_errors

    def _parse_failed(self, exc: ParseError) -> None:
        """An answer did not parse: counted, reported to the hook, logged rate-limited; the
        last good value stays."""
        self._state.parse_errors += 1
        self._changed()
        if self.on_parse_error is not None:
            try:
                self.on_parse_error(exc)
            except Exception:
                log.exception("on_parse_error hook failed")
        now = self._clock()
        last, suppressed = self._parse_logged.get(exc.command, (None, 0))
        if last is not None and now - last < self.parse_log_interval_s:
            self._parse_logged[exc.command] = (last, suppressed + 1)
            return
        self._parse_logged[exc.command] = (now, 0)
        more = f" ({suppressed} more since the last report)" if suppressed else ""
        log.warning("modem answer not understood, last good value kept: %s%s", exc, more)

    def _seen_alive(self) -> None:
        if self._state.present is not True:
            self._update(present=True)

    # -- state and change notification -----------------------------------------------------
    def _changed(self) -> None:
        self._version += 1
        self._state.updated_at = self._clock()
        change, self._change = self._change, asyncio.Event()
        change.set()

    def _update(self, **fields: Any) -> None:
        for name, value in fields.items():
            setattr(self._state, name, value)
        self._changed()

    def snapshot(self, wired_carrier: str | None = None) -> ModemStatus:
        """The state now, frozen. `wired_carrier` overrides the modem's for `same_carrier`."""
        st = self._state
        reg = st.registration()
        registered = None if reg is None else reg.registered
        operator = st.operator if registered else None
        signal = st.signal
        rat = None
        if registered:
            rat = next((r for r in (reg.rat if reg else None,
                                    signal.rat if signal else None,
                                    operator.rat if operator else None) if r is not None),
                       None)
        mcc_mnc = operator.mcc_mnc if operator else None
        wired = self.wired_carrier if wired_carrier is None else wired_carrier
        code = st.sim_mcc_mnc or mcc_mnc
        data = st.data
        data_up = bool(data and data.up)
        radio_on = True if registered else (None if st.radio is None else st.radio.radio_on)
        reason = not_connected_reason(
            data_up=data_up, present=st.present, sim_state=st.sim_state,
            sim_fault=st.sim_fault, radio_on=radio_on,
            registration=None if reg is None else reg.status,
            reject_cause=st.reject_cause, cause_type=st.cause_type,
            data_down_reason=st.data_down_reason, error_report=st.error_report)
        return ModemStatus(
            present=st.present,
            identity=st.identity,
            vendor=st.vendor,
            sim_state=st.sim_state,
            sim_fault=st.sim_fault,
            sim_slot=st.sim_slot,
            iccid=st.iccid,
            sim_mcc_mnc=st.sim_mcc_mnc,
            registered=registered,
            registration=None if reg is None else reg.status,
            roaming=None if reg is None else reg.roaming,
            tac=reg.area_code if reg and reg.registered else None,
            cell_id=reg.cell_id if reg and reg.registered else None,
            operator=operator.name if operator else None,
            mcc_mnc=mcc_mnc,
            rat=rat,
            signal_dbm=signal.rssi_dbm if signal else None,
            rsrp_dbm=signal.rsrp_dbm if signal else None,
            rsrq_db=signal.rsrq_db if signal else None,
            sinr_db=signal.sinr_db if signal else None,
            data_up=data_up,
            ip=data.ip if data and data.up else None,
            ipv6=data.ipv6 if data and data.up else None,
            same_carrier=same_carrier(wired, code) if wired and code else None,
            recovery_step=st.recovery_step,
            resets_total=st.resets_total,
            reboots_seen=st.reboots_seen,
            last_reset_reason=st.last_reset_reason,
            parse_errors=st.parse_errors,
            imsi=st.imsi,
            radio_on=radio_on,
            reject_cause=None if registered else st.reject_cause,
            error_report=None if data_up else st.error_report,
            utc_offset_min=st.utc_offset_min,
            not_connected_reason=reason,
            updated_at=st.updated_at,
        )

    async def wait_for(
        self, predicate: Callable[[ModemStatus], bool], timeout: float | None  # noqa: ASYNC109
    ) -> ModemStatus:
        """The first snapshot (now or after a change) for which `predicate` holds; raises
        `TimeoutError` after `timeout` seconds (None: no limit)."""
        async with asyncio.timeout(timeout):
            while True:
                change = self._change
                status = self.snapshot()
                if predicate(status):
                    return status
                await change.wait()

    async def wait_boot(self, since: int, timeout: float | None) -> bool:  # noqa: ASYNC109
        """Wait until `boots` exceeds `since` (an `RDY` arrived); False after `timeout`
        seconds (None: no limit)."""
        try:
            async with asyncio.timeout(timeout):
                while self._boots <= since:
                    await self._change.wait()
        except TimeoutError:
            return False
        return True

    def set_recovery(self, step: str | None, resets_total: int,
                     reason: str | None = None) -> None:
        """The health supervisor reports its ladder here (shown in the snapshot); `reason`
        (why a rung was taken) is kept as `last_reset_reason`."""
        fields: dict[str, Any] = {"recovery_step": step, "resets_total": resets_total}
        if reason is not None:
            fields["last_reset_reason"] = reason
        self._update(**fields)

    def mark_absent(self) -> None:
        """The supervisor gave up on the modem: `present` False until it answers again."""
        self._update(present=False)

    # -- URCs ------------------------------------------------------------------------------
    def _on_urc(self, urc: Urc) -> None:
        line = urc.line
        if _boot_settled_by(line):
            self._boot_done.set()
        try:
            if line == "RDY":
                self._on_reboot()
            elif line in ("POWERED DOWN", "NORMAL POWER DOWN"):
                self._state.clear_network()
                self._state.present = False
            elif line.startswith(("+CREG:", "+CGREG:", "+CEREG:")):
                self._apply_registration(parse_registration(line))
            elif line.startswith("+CPIN:"):
                self._apply_sim_state(parse_cpin(line))
            elif line.startswith("+QIND:"):
                self._on_qind(line)
            elif line.startswith("+QNETDEVSTATUS:"):
                self._on_netdev(line)
            elif line.startswith("+CGEV:"):
                self._on_cgev(line)
            elif line.startswith("+CFUN:"):
                self._on_cfun(line)
            elif line.startswith("+QSIMSTAT:"):
                self._on_sim_presence(parse_qsimstat(line).inserted)
            elif line.startswith("+QUSIM:"):
                parse_qusim(line)
                if self._boot_done.is_set():  # not part of a boot: the SIM was swapped
                    self._on_sim_presence(True)
            elif line.startswith("+QIURC:"):
                self._on_qiurc(line)
            elif line.startswith("+CTZE:"):
                offset = parse_ctze(line).utc_offset
                self._state.utc_offset_min = int(offset.total_seconds() // 60)
            else:
                return
        except ParseError as exc:
            self._parse_failed(exc)
            return
        except ValueError as exc:
            log.warning("modem URC %r not understood: %s", line, exc)
            return
        self._changed()

    def _on_reboot(self) -> None:
        self._boots += 1
        self._needs_init = True
        self._reinit_pending = True
        self._boot_done.clear()
        st = self._state
        st.reboots_seen += 1
        st.present = True
        st.sim_state = None
        st.radio = None
        st.error_report = st.data_down_reason = None
        st.clear_network()
        level = logging.INFO if self._reboot_expected else logging.WARNING
        self._reboot_expected = False
        log.log(level, "modem announced RDY (reboot #%d)", st.reboots_seen)

    def _apply_registration(self, reg: Registration) -> None:
        before = self._state.registration()
        self._state.registrations[reg.command] = _reg_info(reg)
        if reg.status.registered:
            if reg.command == "+CEREG" or self._state.reject_cause is None:
                self._state.cause_type = self._state.reject_cause = None
                self._state.error_report = None
        elif reg.reject_cause is not None:
            if reg.reject_cause != self._state.reject_cause:
                log.warning("modem: registration rejected, cause %s (type %s) in %s",
                            reg.reject_cause, reg.cause_type, reg.command)
            self._state.cause_type, self._state.reject_cause = reg.cause_type, reg.reject_cause
        after = self._state.registration()
        if before is not None and before.registered and after is not None \
                and not after.registered:
            log.warning("modem lost registration: %s (%s)", after.status.value, after.source)
            self._state.operator = None

    def _apply_sim_state(self, state: SimState) -> None:
        st = self._state
        if state is SimState.NOT_READY and st.sim_state is SimState.NOT_INSERTED:
            return  # "+CPIN: NOT READY" after "+QSIMSTAT: 1,0": still no SIM
        if state is not st.sim_state and state is not SimState.READY:
            st.data = None if st.data is None else dataclasses.replace(st.data, up=False)
        st.sim_state = state
        fault = _SIM_FAULTS.get(state)
        if fault is not None:
            st.sim_fault = fault
        elif state is SimState.READY:
            st.sim_fault = None

    def _on_qind(self, line: str) -> None:
        body = line.split(":", 1)[1].strip()
        fields = [f.strip().strip('"') for f in body.split(",")]
        kind = fields[0].lower()
        if kind == "csq" and len(fields) >= 3:
            csq = parse_csq(f"+CSQ: {fields[1]},{fields[2]}")
            old = self._state.signal
            self._state.signal = SignalReading(
                rssi_dbm=csq.rssi_dbm, rsrp_dbm=old.rsrp_dbm if old else None,
                rsrq_db=old.rsrq_db if old else None, sinr_db=old.sinr_db if old else None,
                rat=old.rat if old else None, source="+QIND csq")
        # "SMS DONE" / "PB DONE" (SIM initialised), "act", "FOTA"...: informational

    def _on_netdev(self, line: str) -> None:
        up = line.split(":", 1)[1].strip() == "1"
        data = self._state.data
        if data is None:
            self._state.data = DataStatus(up=up, cid=self.cid, ip=None, ipv6=None, method="ecm")
        else:
            self._state.data = dataclasses.replace(data, up=up)

    def _on_cgev(self, line: str) -> None:
        event = parse_cgev(line)
        data = self._state.data
        if data is None or (event.cid is not None and event.cid != data.cid):
            return
        if event.kind in (PacketEvent.NW_DEACT, PacketEvent.NW_DETACH):
            log.warning("modem: the network deactivated the data connection (%s)", line)
            self._state.data_down(NETWORK_DEACTIVATED)
        elif event.kind in (PacketEvent.ME_DEACT, PacketEvent.ME_DETACH):
            self._state.data_down(None)

    def _on_qiurc(self, line: str) -> None:
        urc = parse_qiurc(line)
        if urc.kind != "pdpdeact":
            return
        data = self._state.data
        if data is not None and urc.context_id not in (None, data.cid):
            return
        log.warning("modem: the network deactivated PDP context %s", urc.context_id)
        self._state.data_down(NETWORK_DEACTIVATED)

    def _on_cfun(self, line: str) -> None:
        mode = parse_cfun(line)
        self._state.radio = mode
        if not mode.radio_on:
            self._state.clear_network()

    def _on_sim_presence(self, inserted: bool | None) -> None:
        """SIM hot swap (`+QSIMSTAT: 1,<inserted>`, `+QUSIM: 1` outside a boot): a removed
        SIM is `NOT_INSERTED` at once; an inserted one is read by the next full refresh
        (`needs_refresh`), PIN rules and all."""
        st = self._state
        if inserted is False:
            log.warning("modem: SIM removed")
            st.sim_state, st.sim_fault = SimState.NOT_INSERTED, None
            st.iccid = st.sim_mcc_mnc = st.imsi = None
            st.clear_network()
        elif inserted:
            log.info("modem: SIM inserted or re-initialised; reading it again")
            if st.sim_state is SimState.NOT_INSERTED:
                st.sim_state = None
            self._needs_refresh = True

    # -- identity and init -----------------------------------------------------------------
    async def initialise(self) -> ModemIdentity:
        """`ATE0`, `AT+CMEE=1` (numeric +CME errors), identity, vendor profile, then the
        profile's init commands (registration URCs `+CREG=2`, `+CGREG=2`, `+CEREG=2`...)."""
        async with self._lock.hold():
            if self._reinit_pending and not self._reinitialising:
                await self._await_boot_urcs()
                self._reinit_pending = False  # this is the re-initialisation
            boots = self._boots
            timeout = self.timeouts.command
            await self.command("ATE0", timeout=timeout)
            await self.command("AT+CMEE=1", timeout=timeout)
            identity = await self._read_identity()
            profile = profile_for(identity.manufacturer, identity.model, self.timeouts,
                                  **self._profile_options)
            self._profile = profile
            for command, required in profile.init_commands():
                try:
                    await self.command(command, timeout=timeout)
                except CommandError:
                    if required:
                        raise
                    log.info("modem: optional init command %r refused", command)
            if self._boots == boots:
                self._needs_init = False
            self._update(identity=identity, vendor=profile.name, present=True)
            log.info("modem initialised: %s %s (%s profile)", identity.manufacturer,
                     identity.model, profile.name)
            return identity

    async def identity(self, *, refresh: bool = False) -> ModemIdentity:
        """+CGMI/+CGMM/+CGMR/+CGSN (cached after the first read unless `refresh`)."""
        async with self._lock.hold():
            if self._state.identity is None or refresh:
                self._update(identity=await self._read_identity())
            assert self._state.identity is not None
            return self._state.identity

    async def _read_identity(self) -> ModemIdentity:
        manufacturer: str | None
        model: str | None
        try:
            manufacturer = parse_cgmi(info_text(await self.command("AT+CGMI")))
            model = parse_cgmm(info_text(await self.command("AT+CGMM")))
        except CommandError:
            ati = parse_ati(info_text(await self.command("ATI")))
            manufacturer, model = ati.manufacturer, ati.model
        revision: str | None
        imei: str | None
        try:
            revision = parse_cgmr(info_text(await self.command("AT+CGMR")))
        except (CommandError, ParseError):
            revision = None
        try:
            imei = parse_cgsn(info_text(await self.command("AT+CGSN")))
        except (CommandError, ParseError):
            imei = None
        return ModemIdentity(manufacturer=manufacturer, model=model, revision=revision,
                             imei=imei)

    # -- SIM -------------------------------------------------------------------------------
    async def _read_cpin(self) -> SimState:
        try:
            response = await self.command("AT+CPIN?", timeout=self.timeouts.command)
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
        self._apply_sim_state(state)
        self._changed()
        return state

    async def _settled_sim_state(self, state: SimState) -> SimState:
        """Re-read +CPIN? while the SIM initialises (NOT READY / BUSY), up to sim_settle."""
        try:
            async with asyncio.timeout(self.timeouts.sim_settle):
                while state in _SIM_TRANSIENT:
                    await self._sleep(self._settle_poll_s)
                    state = await self._read_cpin()
        except TimeoutError:
            pass
        return state

    def _sim_fault(self, reason: str, state: SimState, detail: str = "") -> SimFault:
        self._update(sim_fault=reason, sim_state=state)
        log.error("SIM fault: %s (%s)%s", reason, state.value, f": {detail}" if detail else "")
        return SimFault(reason, state.value, detail)

    async def _enter_pin(self) -> SimState:
        pin = self._pin
        if pin is None:
            raise self._sim_fault("pin_required", SimState.SIM_PIN,
                                  "the SIM is PIN-locked and no PIN is configured")
        try:
            iccid: str | None = await self._profile.read_iccid(self)
        except (CommandError, ParseError):
            iccid = None
        key = (iccid, pin)
        if key in self._rejected_pins:
            raise self._sim_fault("pin_rejected", SimState.SIM_PIN,
                                  "the configured PIN was refused before; not tried again")
        if key in self._unconfirmed_pins:
            raise self._sim_fault("pin_unconfirmed", SimState.SIM_PIN,
                                  "an earlier PIN attempt got no answer; not tried again")
        log.info("entering the configured SIM PIN (SIM %s)", iccid or "unknown")
        try:
            await self.command(f'AT+CPIN="{pin}"', timeout=self.timeouts.sim_settle,
                               prefix="")
        except CommandError as exc:
            self._rejected_pins.add(key)
            raise self._sim_fault("pin_rejected", SimState.SIM_PIN,
                                  f"the SIM refused the configured PIN ({exc.final})") from None
        except CommandTimeout:
            self._unconfirmed_pins.add(key)
            state = await self._read_cpin()
            if state is SimState.SIM_PIN:
                raise self._sim_fault("pin_unconfirmed", SimState.SIM_PIN,
                                      "the PIN attempt got no answer") from None
            return await self._settled_sim_state(state)
        return await self._settled_sim_state(await self._read_cpin())

    async def sim(self) -> SimInfo:
        """SIM state, ICCID, IMSI (MCC/MNC) and slot. Enters the configured PIN when (and
        only when) the SIM reports `SIM PIN` — see the module doc. `NOT_INSERTED` (+CME
        ERROR 10), `NOT_READY` and `BUSY` are returned as states; PIN/PUK problems raise
        `SimFault` (also shown as `sim_fault` in the snapshot)."""
        async with self._lock.hold():
            state = await self._read_cpin()
            if state is SimState.SIM_PIN:
                state = await self._enter_pin()
            fault = _SIM_FAULTS.get(state)
            if fault is not None:
                raise self._sim_fault(fault, state)
            if state is SimState.SIM_PIN:  # still locked after a PIN the SIM accepted
                raise self._sim_fault("pin_unconfirmed", state, "still locked after the PIN")
            slot = await self._read_slot()
            if state is not SimState.READY:
                self._update(sim_state=state, sim_slot=slot, iccid=None, sim_mcc_mnc=None,
                             imsi=None)
                return SimInfo(state=state, slot=slot)
            try:
                iccid: str | None = await self._profile.read_iccid(self)
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
            return await self._profile.read_sim_slot(self)
        except (CommandError, ParseError):
            return None

    async def _sim_command(self, command: str) -> Response:
        """`command`, re-sent while the SIM is busy initialising (+CME ERROR: 14)."""
        try:
            async with asyncio.timeout(self.timeouts.sim_settle):
                while True:
                    try:
                        return await self.command(command)
                    except CommandError as exc:
                        if exc.cme_code != _SIM_BUSY_CME:
                            raise
                    await self._sleep(self._settle_poll_s)
        except TimeoutError:
            raise CommandTimeout(command, self.timeouts.sim_settle) from None

    async def switch_sim(self, slot: int) -> SimInfo:
        """Select SIM slot `slot` (Quectel `AT+QDSIM`; other profiles raise `NotSupported`),
        wait for the new SIM to settle and read it (`sim()`: same PIN rules)."""
        async with self._lock.hold():
            await self._profile.switch_sim(self, slot)
            log.info("modem: switched to SIM slot %d", slot)
            st = self._state
            st.sim_state, st.sim_fault, st.iccid, st.sim_mcc_mnc = None, None, None, None
            st.sim_slot = slot
            st.clear_network()
            self._changed()
            await self._settled_sim_state(await self._read_cpin())
            info = await self.sim()
            with contextlib.suppress(CommandError):
                await self.registration()
            return info

    # -- network ---------------------------------------------------------------------------
    async def _read_registration(self, command: str) -> Registration | None:
        response = await self.command(command, timeout=self.timeouts.command)
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
                self._parse_failed(exc)
                continue
            self._apply_registration(reg)
            if form is RegistrationForm.READ:
                answer = reg
        return answer

    async def registration(self) -> RegistrationInfo:
        """`AT+CEREG?`; when not registered on EPS also `AT+CGREG?` and `AT+CREG?`. The
        best of them (registered first, EPS first). A read showing URCs off (`<n>` 0
        although `initialise()` set 2) means the modem reset silently: `needs_init`.

        Partial readings: a read that does not parse is skipped (counted; the last good
        value stays); when nothing at all could be read, the last known registration,
        else an `unknown` one. Only when every read was refused is the `CommandError`
        raised."""
        async with self._lock.hold():
            errors: list[CommandError] = []
            for command in ("AT+CEREG?", "AT+CGREG?", "AT+CREG?"):
                try:
                    reg = await self._read_registration(command)
                except CommandError as exc:
                    errors.append(exc)
                    self._state.registrations.pop(command[2:-1], None)
                    continue
                if reg is not None and reg.n == 0 and not self._needs_init:
                    log.warning("modem: %s URCs are off; the modem reset silently", reg.command)
                    self._needs_init = True
                if reg is not None and reg.status.registered:
                    break
            self._changed()
            info = self._state.registration()
            if info is None:
                if len(errors) == 3:
                    raise errors[0]
                return _NO_REGISTRATION
            return info

    async def operator(self) -> OperatorInfo:
        """The serving network: `AT+COPS=3,2` + `AT+COPS?` (numeric MCC/MNC), then
        `AT+COPS=3,0` + `AT+COPS?` (long name). +COPS may take long (network timeout)."""
        async with self._lock.hold():
            for _ in range(_REBOOT_RETRIES + 1):
                boots = self._boots
                try:
                    info = await self._read_operator()
                except ParseError as exc:
                    self._parse_failed(exc)
                    return self._state.operator or OperatorInfo(None, None, None, 0)
                if self._boots == boots:  # a reboot in between forgot the +COPS format
                    break
            self._update(operator=info)
            return info

    async def _read_operator(self) -> OperatorInfo:
        t = self.timeouts.network
        await self.command("AT+COPS=3,2", timeout=t)
        numeric = parse_cops(info_text(await self.command("AT+COPS?", timeout=t), "+COPS:"))
        await self.command("AT+COPS=3,0", timeout=t)
        named = parse_cops(info_text(await self.command("AT+COPS?", timeout=t), "+COPS:"))
        return OperatorInfo(name=named.name, mcc_mnc=numeric.mcc_mnc,
                            rat=named.act or numeric.act, mode=named.mode)

    async def signal(self) -> SignalReading:
        """RSSI/RSRP/RSRQ/SINR through the profile (+QCSQ, +CPSI, or +CSQ/+CESQ)."""
        async with self._lock.hold():
            try:
                reading = await self._profile.read_signal(self)
            except ParseError as exc:
                self._parse_failed(exc)
                return self._state.signal or SignalReading(None, None, None, None, None,
                                                           "none")
            self._update(signal=reading)
            return reading

    async def network_time(self) -> datetime | None:
        """The network's time, timezone-aware in the network's zone (Quectel `+QLTS=2`,
        others `+CCLK?`); None when the modem has none yet."""
        async with self._lock.hold():
            reading = await self._profile.read_network_time(self)
            return None if reading is None else reading.time

    # -- packet data -----------------------------------------------------------------------
    async def _wait_registered(self) -> None:
        info = await self.registration()
        if info.registered:
            return
        timeout = self.timeouts.register
        try:
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        await self.wait_for(lambda s: bool(s.registered),
                                            timeout=min(2.0, timeout))
                        return
                    except TimeoutError:
                        if (await self.registration()).registered:
                            return
        except TimeoutError:
            status = self._state.registration()
            raise NotRegistered(timeout, None if status is None else status.status.value) \
                from None

    async def connect_data(self, apn: str | None = None) -> DataStatus:
        """Bring the data call up on context `cid` with `apn` (default: the modem's).

        The profile prepares first (Quectel: `AT+QCFG="usbnet",1` for ECM if it was not
        set, which needs a reboot: `AT+CFUN=1,1`, wait for `RDY`, `initialise()`,
        `sim()`); then, once registered (`NotRegistered` after `timeouts.register`), the
        profile's activation (Quectel ECM: `+CGDCONT` -> `+QNETDEVCTL=1,<cid>,1`;
        generic: `+CGDCONT` -> `+CGATT=1` -> `+CGACT=1,<cid>`) and `+CGPADDR`."""
        name = check_apn(apn or self.apn or "")
        async with self._lock.hold():
            if await self._profile.prepare_data(self):
                log.info("modem: data configuration changed; rebooting to apply it")
                await self.reboot()
                await self.initialise()
                await self.sim()
            await self._wait_registered()
            boots = self._boots
            status = await self._profile.activate_data(self, name, self.cid)
            if status.ip is None and status.ipv6 is None:
                status = await self._await_address(status, boots)
            if self._boots != boots:  # a reboot took the call down while it was set up
                raise ModemRebooted(f"connect_data({name!r})")
            self._update(data=status, data_down_reason=None)
            log.info("modem: data up on cid %d (%s), address %s", status.cid, status.method,
                     status.ip or status.ipv6)
            return status

    async def _await_address(self, status: DataStatus, boots: int) -> DataStatus:
        """Some firmware answers OK before the network assigned an address: re-read (not
        after a reboot: that call is gone)."""
        try:
            async with asyncio.timeout(self.timeouts.data):
                while self._boots == boots:
                    await self._sleep(self._settle_poll_s)
                    ip, ipv6 = await self._profile.read_addresses(self, status.cid)
                    if ip or ipv6:
                        return dataclasses.replace(status, ip=ip, ipv6=ipv6)
        except TimeoutError:
            pass
        return status

    async def disconnect_data(self) -> None:
        """Take the data call down (`+QNETDEVCTL=0,...` / `+CGACT=0,<cid>`)."""
        async with self._lock.hold():
            await self._profile.deactivate_data(self, self.cid)
            data = self._state.data
            self._update(data=DataStatus(up=False, cid=self.cid, ip=None, ipv6=None,
                                         method=data.method if data else
                                         self._profile.data_method,
                                         apn=data.apn if data else None))

    async def data_status(self) -> DataStatus:
        """Whether the data call is up, and its addresses (read from the modem)."""
        async with self._lock.hold():
            status = await self._profile.read_data_status(self, self.cid)
            old = self._state.data
            if old is not None and old.apn and status.apn is None:
                status = dataclasses.replace(status, apn=old.apn)
            self._update(data=status)
            if status.up:
                self._state.data_down_reason = None
            return status

    # -- recovery primitives (used by hw.modem.health) -------------------------------------
    async def restart_radio(self) -> None:
        """`AT+CFUN=0` then `AT+CFUN=1` (radio and SIM off and on again)."""
        async with self._lock.hold():
            await self.command("AT+CFUN=0", timeout=self.timeouts.radio)
            self._state.clear_network()
            self._changed()
            await self.command("AT+CFUN=1", timeout=self.timeouts.radio)

    async def reboot(self) -> None:
        """`AT+CFUN=1,1` and wait for `RDY` (a `CommandTimeout` when none comes within
        `timeouts.boot`)."""
        async with self._lock.hold():
            boots = self._boots
            self._reboot_expected = True
            await self.command("AT+CFUN=1,1", timeout=self.timeouts.radio)
            if not await self.wait_boot(boots, self.timeouts.boot):
                raise CommandTimeout("AT+CFUN=1,1 (waiting for RDY)", self.timeouts.boot)

    # -- polls -----------------------------------------------------------------------------
    async def poll(self) -> ModemStatus:
        """The light periodic poll: registration and signal."""
        async with self._lock.hold():
            await self.registration()
            await self.signal()
        return self.snapshot()

    async def refresh(self) -> ModemStatus:
        """Everything: SIM (a `SimFault` is recorded, not raised), registration, operator
        (when registered), signal, data status. Commands the modem refuses are logged and
        skipped, answers that do not parse counted (degraded readings); timeouts and a
        closed port propagate. A reboot during the refresh (which forgets what was read)
        makes it start over, a few times at most."""
        async with self._lock.hold():
            for _ in range(_REBOOT_RETRIES + 1):
                boots = self._boots
                await self._refresh_once()
                if self._boots == boots:
                    break
        return self.snapshot()

    async def _refresh_once(self) -> None:
        self._needs_refresh = False
        try:
            await self.sim()
        except SimFault:
            pass
        except ParseError as exc:
            self._parse_failed(exc)
        info = await self.registration()
        registered = info.registered
        parts: list[Callable[[], Awaitable[object]]] = [self.signal, self.data_status]
        if registered:
            parts.insert(0, self.operator)
        else:
            parts.insert(0, self.radio)
            if info.status is RegistrationStatus.DENIED:
                parts.insert(1, self.error_report)
        for part in parts:
            try:
                await part()
            except CommandError as exc:
                log.info("modem refresh: %s", exc)
            except ParseError as exc:
                self._parse_failed(exc)

    @property
    def needs_refresh(self) -> bool:
        """A SIM was inserted (or re-initialised) since the last full refresh."""
        return self._needs_refresh

    async def radio(self) -> RadioMode | None:
        """`AT+CFUN?`: radio on, off (0), airplane (4)... (None when it does not parse)."""
        async with self._lock.hold():
            response = await self.command("AT+CFUN?", timeout=self.timeouts.command)
            try:
                mode = parse_cfun(info_text(response, "+CFUN:").splitlines()[-1])
            except ParseError as exc:
                self._parse_failed(exc)
                return self._state.radio
            self._update(radio=mode)
            return mode

    async def error_report(self) -> str | None:
        """`AT+CEER`: the modem's last error report (why registration or a data call
        failed), kept for the status."""
        async with self._lock.hold():
            response = await self.command("AT+CEER", timeout=self.timeouts.command)
            try:
                report = parse_ceer("\n".join(response.lines))
            except ParseError as exc:
                self._parse_failed(exc)
                return self._state.error_report
            self._update(error_report=report)
            return report

    def __repr__(self) -> str:
        return f"<Modem {self._channel.url!r} {self._profile.name}>"

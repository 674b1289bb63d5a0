"""`Modem`: typed operations on an LTE modem over an `AtChannel`, and a live snapshot.

Layering: `channel` pairs AT commands with answers; `profiles` know which commands a
vendor needs; this module strings them into operations (`initialise`, `sim`,
`registration`, `connect_data`...) — the lifecycle — and composes its parts: the SIM and
its PIN rules (`hw.modem.sim`), the data call (`hw.modem.bearer`), and the one
`ModemState` (`hw.modem.state`) that every answer and every URC replaces through the pure
reducer (`hw.modem.reducer`). `snapshot()` is that state's view, a `ModemStatus`.

URCs. The modem subscribes (synchronous callbacks on the channel's reader task, so no
task of its own) to the URCs the reducer follows (`hw.modem.reducer.URC_PREFIXES`:
registration, SIM state and hot swap, data call, radio, time zone, `RDY`, `POWERED
DOWN`); an `RDY` (the modem rebooted) also sets `needs_init` until `initialise()` runs
again. So the snapshot is current between polls; `wait_for(predicate)` waits for a change
without polling.

Why it cannot connect. The snapshot's `not_connected_reason` (`hw.modem.reasons`) puts
what the modem said in plain language; `refresh()` reads what it needs: `+CFUN?` when not
registered, `AT+CEER` when registration was denied.

Busy answers. A command answered with a "busy" +CME code (`BUSY_CME_CODES`: 14 SIM busy,
515 init in progress; plus the profile's) was not executed; it is sent again after
`busy_backoff_s` waits (0.2, 0.5, 1, 2 s), except the commands that are never replayed
(a PIN above all). `busy_retries` counts them.

Answers that carry a URC-shaped line (`AT+CPIN?` while `+CPIN: READY` is announced,
`AT+CEREG?` with a `+CEREG:` URC racing it — see `hw.modem.channel`) are applied line by
line in stream order: the last line is the most recent news, whichever it is.

Exclusive operations. Every public operation holds the modem's `TaskLock`
(`hw.modem.exclusive`) for its whole command sequence; `exclusive()` gives a caller (the
health supervisor) the same lock across several operations.

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

SIM PIN: see `hw.modem.sim` (never a blind retry: a PIN is sent once per lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Final

from hw.lifecycle import AsyncClosing
from hw.modem.bearer import Bearer
from hw.modem.channel import AtChannel
from hw.modem.core import REBOOT_RETRIES
from hw.modem.errors import (
    CommandError,
    CommandTimeout,
    ModemRebooted,
    NotRegistered,
    ParseError,
    PortClosed,
    SimFault,
)
from hw.modem.exchange import Response
from hw.modem.exclusive import TaskLock
from hw.modem.network import Network
from hw.modem.parsers.identity import (
    ModemIdentity,
)
from hw.modem.parsers.radio import RadioMode
from hw.modem.parsers.registration import RegistrationStatus
from hw.modem.profiles import GenericProfile, Timeouts, profile_for
from hw.modem.profiles.generic import check_apn, read_identity
from hw.modem.reducer import (
    URC_PREFIXES,
    UrcContext,
    boot_settled_by,
    network_cleared,
    reduce_urc,
)
from hw.modem.sim import SIM_BUSY_CME, Sim, check_pin
from hw.modem.state import ModemState, view
from hw.modem.status import (
    DataStatus,
    ModemStatus,
    OperatorInfo,
    RegistrationInfo,
    SignalReading,
    SimInfo,
)
from hw.modem.urcs import Urc

__all__ = ["BUSY_BACKOFF_S", "BUSY_CME_CODES", "Modem"]

log = logging.getLogger(__name__)

#: +CME codes meaning "busy, try again" (the command was not executed): 14 SIM busy (TS
#: 27.007), 515 "please wait, init or command processing in progress" (Sierra/Wavecom
#: and others). Profiles add their vendor's (`GenericProfile.busy_cme_codes`).
BUSY_CME_CODES: Final = frozenset({SIM_BUSY_CME, 515})

#: Waits between retries of a command answered "busy" (then its error propagates).
BUSY_BACKOFF_S: Final = (0.2, 0.5, 1.0, 2.0)

#: Commands never sent again after the modem rebooted while they were outstanding: a PIN
#: (a retry is how a SIM gets PUK-locked), radio/power changes, data calls, SIM slots.
_NEVER_REPLAYED: Final = ("AT+CPIN=", "AT+CFUN", "AT+QPOWD", "AT+CGACT=", "AT+CGATT=",
                          "AT+QNETDEVCTL=", "AT+QDSIM=", "ATD", "AT+CMGS", "ATZ", "AT&F")


def _replayable(command: str) -> bool:
    text = command.strip().upper()
    if text.endswith("?") and ";" not in text:
        return True  # a read (`AT+CFUN?`) changes nothing
    return not text.startswith(_NEVER_REPLAYED)


class Modem(AsyncClosing):
    """An LTE modem behind `channel` (which the modem owns from now on: `close()` closes it).

    `pin`: the SIM PIN from the config (4..8 digits; "" or None: none). `apn`: default APN
    for `connect_data()`; `cid`: the PDP context used. `wired_carrier`: the wired ISP's
    carrier name (config `wired.carrier`) for the `same_carrier` check. `timeouts`: per
    kind of command. `profile_options` go to the vendor profile (`usbnet=` for Quectel).
    `monotonic` (monotonic seconds) stamps `updated_at`; `sleep` paces the few bounded
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
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        settle_poll_s: float = 0.5,
        on_parse_error: Callable[[ParseError], object] | None = None,
        parse_log_interval_s: float = 300.0,
        busy_backoff_s: tuple[float, ...] = BUSY_BACKOFF_S,
    ) -> None:
        self._sim = Sim(self, pin)  # first: a bad PIN is refused before anything else
        if apn:
            check_apn(apn)
        self.apn = apn
        self.cid = cid
        self.wired_carrier = wired_carrier
        self.timeouts = timeouts or Timeouts()
        self._profile_options = dict(profile_options or {})
        self._monotonic = monotonic
        self._sleep = sleep
        self._settle_poll_s = settle_poll_s
        self._profile: GenericProfile = GenericProfile(self.timeouts)
        self._state = ModemState()
        self._bearer = Bearer(self)
        self._network = Network(self)
        self._lock = TaskLock()
        self._change = asyncio.Event()
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
        return self._sim.pin

    @pin.setter
    def pin(self, value: str | None) -> None:
        """A new PIN from a reloaded config (a refused one stays refused)."""
        self._sim.pin = check_pin(value)

    @property
    def needs_init(self) -> bool:
        """True until `initialise()` ran since the last boot (`RDY`) or channel change."""
        return self._needs_init

    def mark_needs_init(self) -> None:
        """The modem reset silently (its URC settings are gone): `initialise()` again."""
        self._needs_init = True

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
                if reboots == REBOOT_RETRIES or not _replayable(command) \
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

    async def _send(self, command: str, **options: Any) -> Response:
        """`AtChannel.command` (default timeout `timeouts.command`), `present` kept."""
        if options.get("timeout") is None:
            options["timeout"] = self.timeouts.command
        try:
            response = await self._channel.command(command, **options)
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
        for _ in range(REBOOT_RETRIES + 1):
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
        await self._base_settings()
        await self._profile_settings()

    async def _base_settings(self) -> None:
        await self.command("ATE0", timeout=self.timeouts.command)
        await self.command("AT+CMEE=1", timeout=self.timeouts.command)

    async def _profile_settings(self) -> None:
        timeout = self.timeouts.command
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

    def parse_failed(self, exc: ParseError) -> None:
        """An answer did not parse: counted, reported to the hook, logged rate-limited; the
        last good value stays."""
        self._update(parse_errors=self._state.parse_errors + 1)
        if self.on_parse_error is not None:
            try:
                self.on_parse_error(exc)
            except Exception:
                log.exception("on_parse_error hook failed")
        now = self._monotonic()
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
    @property
    def state(self) -> ModemState:
        """The modem's state now (frozen; every change replaces it)."""
        return self._state

    def apply(self, state: ModemState) -> None:
        """Make `state` the modem's state (stamped `updated_at`) and wake `wait_for`."""
        self._state = dataclasses.replace(state, updated_at=self._monotonic())
        change, self._change = self._change, asyncio.Event()
        change.set()

    def _changed(self) -> None:
        self.apply(self._state)

    def _update(self, **fields: Any) -> None:
        self.apply(dataclasses.replace(self._state, **fields))

    async def pause(self) -> None:
        """One settle poll (`settle_poll_s`, through the injected `sleep`)."""
        await self._sleep(self._settle_poll_s)

    def snapshot(self, wired_carrier: str | None = None) -> ModemStatus:
        """The state now, frozen. `wired_carrier` overrides the modem's for `same_carrier`."""
        return view(self._state, self.wired_carrier if wired_carrier is None else wired_carrier)

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
        if boot_settled_by(line):
            self._boot_done.set()
        context = UrcContext(cid=self.cid, booting=not self._boot_done.is_set())
        try:
            state = reduce_urc(self._state, line, context)
        except ParseError as exc:
            self.parse_failed(exc)
            return
        except ValueError as exc:
            log.warning("modem URC %r not understood: %s", line, exc)
            return
        if state is None:
            return
        if line == "RDY":
            self._on_reboot(state.reboots_seen)
        self.apply(state)

    def _on_reboot(self, reboots_seen: int) -> None:
        self._boots += 1
        self._needs_init = True
        self._reinit_pending = True
        self._boot_done.clear()
        level = logging.INFO if self._reboot_expected else logging.WARNING
        self._reboot_expected = False
        log.log(level, "modem announced RDY (reboot #%d)", reboots_seen)

    # -- identity and init -----------------------------------------------------------------
    async def initialise(self) -> ModemIdentity:
        """`ATE0`, `AT+CMEE=1` (numeric +CME errors), identity, vendor profile, then the
        profile's init commands (registration URCs `+CREG=2`, `+CGREG=2`, `+CEREG=2`...)."""
        async with self._lock.hold():
            if self._reinit_pending and not self._reinitialising:
                await self._await_boot_urcs()
                self._reinit_pending = False  # this is the re-initialisation
            boots = self._boots
            await self._base_settings()
            identity = await read_identity(self)
            profile = profile_for(identity.manufacturer, identity.model, self.timeouts,
                                  **self._profile_options)
            self._profile = profile
            await self._profile_settings()
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
                self._update(identity=await read_identity(self))
            assert self._state.identity is not None
            return self._state.identity

    # -- SIM (`hw.modem.sim`) ---------------------------------------------------------------
    async def sim(self) -> SimInfo:
        """SIM state, ICCID, IMSI (MCC/MNC) and slot. Enters the configured PIN when (and
        only when) the SIM reports `SIM PIN` — see `hw.modem.sim`. `NOT_INSERTED` (+CME
        ERROR 10), `NOT_READY` and `BUSY` are returned as states; PIN/PUK problems raise
        `SimFault` (also shown as `sim_fault` in the snapshot)."""
        async with self._lock.hold():
            return await self._sim.read()

    async def switch_sim(self, slot: int) -> SimInfo:
        """Select SIM slot `slot` (Quectel `AT+QDSIM`; other profiles raise `NotSupported`),
        wait for the new SIM to settle and read it (`sim()`: same PIN rules)."""
        async with self._lock.hold():
            await self._profile.switch_sim(self, slot)
            log.info("modem: switched to SIM slot %d", slot)
            self.apply(dataclasses.replace(
                network_cleared(self._state), sim_state=None, sim_fault=None, iccid=None,
                sim_mcc_mnc=None, sim_slot=slot))
            await self._sim.settled(await self._sim.read_cpin())
            info = await self.sim()
            with contextlib.suppress(CommandError):
                await self.registration()
            return info

    # -- network (`hw.modem.network`) -------------------------------------------------------
    async def registration(self) -> RegistrationInfo:
        """The best of `+CEREG?`, `+CGREG?`, `+CREG?` (`Network.registration`)."""
        async with self._lock.hold():
            return await self._network.registration()

    async def operator(self) -> OperatorInfo:
        """The serving network, numeric and named (`Network.operator`)."""
        async with self._lock.hold():
            return await self._network.operator()

    async def signal(self) -> SignalReading:
        """RSSI/RSRP/RSRQ/SINR through the profile (+QCSQ, +CPSI, or +CSQ/+CESQ)."""
        async with self._lock.hold():
            return await self._network.signal()

    async def network_time(self) -> datetime | None:
        """The network's time, timezone-aware in the network's zone (Quectel `+QLTS=2`,
        others `+CCLK?`); None when the modem has none yet."""
        async with self._lock.hold():
            return await self._network.network_time()

    async def radio(self) -> RadioMode | None:
        """`AT+CFUN?`: radio on, off (0), airplane (4)... (None when it does not parse)."""
        async with self._lock.hold():
            return await self._network.radio()

    async def error_report(self) -> str | None:
        """`AT+CEER`: the modem's last error report (why registration or a data call
        failed), kept for the status."""
        async with self._lock.hold():
            return await self._network.error_report()

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
        bearer's activation (`hw.modem.bearer`)."""
        name = check_apn(apn or self.apn or "")
        async with self._lock.hold():
            if await self._profile.prepare_data(self):
                log.info("modem: data configuration changed; rebooting to apply it")
                await self.reboot()
                await self.initialise()
                await self.sim()
            await self._wait_registered()
            status = await self._bearer.activate(name)
            log.info("modem: data up on cid %d (%s), address %s", status.cid, status.method,
                     status.ip or status.ipv6)
            return status

    async def disconnect_data(self) -> None:
        """Take the data call down (`+QNETDEVCTL=0,...` / `+CGACT=0,<cid>`)."""
        async with self._lock.hold():
            await self._bearer.deactivate()

    async def data_status(self) -> DataStatus:
        """Whether the data call is up, and its addresses (read from the modem)."""
        async with self._lock.hold():
            return await self._bearer.read_status()

    # -- recovery primitives (used by hw.modem.health) -------------------------------------
    async def restart_radio(self) -> None:
        """`AT+CFUN=0` then `AT+CFUN=1` (radio and SIM off and on again)."""
        async with self._lock.hold():
            await self.command("AT+CFUN=0", timeout=self.timeouts.radio)
            self.apply(network_cleared(self._state))
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
            for _ in range(REBOOT_RETRIES + 1):
                boots = self._boots
                await self._refresh_once()
                if self._boots == boots:
                    break
        return self.snapshot()

    async def _refresh_once(self) -> None:
        self._state = dataclasses.replace(self._state, needs_refresh=False)
        try:
            await self.sim()
        except SimFault:
            pass
        except ParseError as exc:
            self.parse_failed(exc)
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
                self.parse_failed(exc)

    @property
    def needs_refresh(self) -> bool:
        """A SIM was inserted (or re-initialised) since the last full refresh."""
        return self._state.needs_refresh

    def __repr__(self) -> str:
        return f"<Modem {self._channel.url!r} {self._profile.name}>"

"""`ModemSupervisor`: keeps the modem answering, climbs a recovery ladder when it stops.

Health loop (`run()`): `start()` (initialise + full refresh), then every
`poll_interval_s` a light poll (`Modem.poll()`: registration + signal) and every
`refresh_every`-th time a full refresh (SIM, operator, data too); between polls the
modem's URC callbacks keep the snapshot current, and an `RDY` wakes the loop at once.

Failures that climb the ladder (each rung records its reason: `reason` of the
`modem_reset` event, `last_reset_reason` in the snapshot):

- `no_answer`: silence (`CommandTimeout`, or a poll over its time limit);
- `port_closed`: the port went away and did not come back (with `reopen` given, a port
  that vanished is first looked for and reopened without a rung — a USB modem
  re-enumerates after a power-key cycle or a USB mode change — and reported as
  `modem_recovered` step `reopen`);
- `unexpected_reboot`: a reboot the modem layer could not ride out (`ModemRebooted`);
- `error_storm`: `error_storm_limit` polls in a row that the modem refused (`ERROR`);
- `registration_lost`: the SIM is ready but the modem has not been registered for
  `unregistered_limit_s` (once per such period).

Not ladder material: an answer that does not parse (a degraded reading: the modem layer
keeps the last good value and counts it in `parse_errors`), line noise (logged when over
`garbage_limit` bytes between two polls), a single refused command, a SIM fault
(`SimFault` — rebooting cannot fix a PUK lock; it is reported as a `fault` event once),
and a reboot: the modem layer waits for the boot and re-initialises, and the supervisor
reports it as a `modem_recovered` event with step `reboot`.

Recovery ladder, one rung per attempt, each preceded by its backoff (`backoff_s[i]`,
slept with the injected `sleep`) and bounded by `step_timeout_s` (an `asyncio.timeout`
scope), each followed by `initialise()` + `refresh()` as the proof of life:

1. `reinit` — re-initialise (reopen the port first if it closed and `reopen` is given);
2. `cfun_cycle` — `AT+CFUN=0` then `AT+CFUN=1`;
3. `cfun_reset` — `AT+CFUN=1,1` and wait for `RDY`;
4. `power_cycle` — `PowerControl.power_cycle()` (GPIO power key) and wait for `RDY`.

Success at any rung resets the ladder (the next failure starts at rung 1 again). When
all rungs failed the modem is marked absent and a `fault` is reported (once); each later
attempt waits `retry_after_s` before climbing the whole ladder again. Every rung taken
counts in `resets_total` and the rung in progress (or last failed) is `recovery_step`,
both in the snapshot. The modem lock is held per rung only, so backoff waits never hold
up other callers.

Events (`on_event(kind, **fields)`; every event has `message` and `severity`
(`"info" | "warning" | "error"`) — the arguments of `firmware.events.EventBus.emit`):

- `modem_reset`: step, attempt (1..4), reason, detail, resets_total — a rung is taken;
- `modem_recovered`: step, reason, resets_total, duration_s — the modem answers again
  (step `reboot`, reason `unexpected_reboot`: it rebooted by itself and was
  re-initialised without a rung);
- `fault`: reason (`modem_unresponsive`, `no_power_control`, `sim_<SimFault reason>`,
  `sim_not_inserted`), detail — once per change;
- `carrier_overlap`: same_carrier, wired_carrier, mcc_mnc, carrier — the LTE SIM is (or,
  `same_carrier` False, is no longer) with the wired ISP's carrier; once per change;
- `clock_set`: time (ISO 8601), source — the system clock was set from network time.

Network time: when `clock_unset()` says the system clock is not set (default: year
before 2024, a Pi without RTC after a power cut) the modem's network time, if plausible,
is handed to `set_clock(datetime)`; the supervisor never sets the host clock itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Protocol

from hw.modem.carriers import carrier_for
from hw.modem.channel import AtChannel
from hw.modem.errors import (
    CommandError,
    CommandTimeout,
    ModemRebooted,
    ParseError,
    PortClosed,
    PortOpenError,
)
from hw.modem.modem import Modem
from hw.modem.parsers.identity import SimState
from hw.modem.status import ModemStatus

__all__ = [
    "EVENT_KINDS",
    "LADDER",
    "EventCallback",
    "ModemSupervisor",
    "PowerControl",
    "RecoveryStep",
    "SupervisorPolicy",
    "system_clock_unset",
]

log = logging.getLogger(__name__)


class PowerControl(Protocol):
    """Cuts and restores the modem's power (or pulses its power key / reset line)."""

    async def power_cycle(self) -> None: ...


class RecoveryStep(StrEnum):
    REINIT = "reinit"
    RADIO_CYCLE = "cfun_cycle"
    MODEM_RESET = "cfun_reset"
    POWER_CYCLE = "power_cycle"


#: The ladder, in climbing order.
LADDER: Final[tuple[RecoveryStep, ...]] = tuple(RecoveryStep)

#: Every event kind the supervisor emits.
EVENT_KINDS: Final = frozenset(
    {"modem_reset", "modem_recovered", "fault", "carrier_overlap", "clock_set"})

EventCallback = Callable[..., object]

#: Failures that mean "the modem is not answering" (a parse error is not one).
_FAILURES: Final = (CommandTimeout, TimeoutError, ModemRebooted, PortClosed)


def system_clock_unset(min_year: int = 2024) -> bool:
    """True when the system clock reads a year before `min_year` (never set)."""
    return datetime.now(UTC).year < min_year


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ModemRebooted):
        return "unexpected_reboot"
    if isinstance(exc, PortClosed):
        return "port_closed"
    return "no_answer"


@dataclass(frozen=True, slots=True)
class SupervisorPolicy:
    """How closely the supervisor watches the modem and how it climbs the ladder.

    `poll_interval_s`: between two polls; `refresh_every`: every n-th poll is a full
    refresh. `backoff_s`: seconds slept before each rung (the last value repeats if
    shorter); `retry_after_s`: the wait before climbing the whole ladder again once it was
    exhausted. `step_timeout_s`: bound of one poll or rung; `boot_timeout_s`: how long to
    wait for `RDY` after a reset or power cycle. `garbage_limit`: noise bytes between two
    polls worth a log line. `error_storm_limit`: refused polls in a row that climb the
    ladder; `unregistered_limit_s`: how long a ready SIM may stay unregistered before the
    ladder is tried. `min_time_year`: network time before this year is not plausible.
    """

    poll_interval_s: float = 10.0
    refresh_every: int = 6
    backoff_s: tuple[float, ...] = (0.0, 5.0, 15.0, 30.0)
    retry_after_s: float = 300.0
    step_timeout_s: float = 120.0
    boot_timeout_s: float = 30.0
    garbage_limit: int = 256
    error_storm_limit: int = 5
    unregistered_limit_s: float = 900.0
    min_time_year: int = 2024

    def __post_init__(self) -> None:
        if self.poll_interval_s <= 0 or self.step_timeout_s <= 0 or self.boot_timeout_s <= 0:
            raise ValueError("poll interval, step and boot timeouts must be positive")
        if self.refresh_every < 1:
            raise ValueError(f"refresh_every must be at least 1, not {self.refresh_every!r}")
        if not self.backoff_s or any(b < 0 for b in self.backoff_s):
            raise ValueError(f"backoff_s must be non-negative seconds, not {self.backoff_s!r}")
        if self.error_storm_limit < 1 or self.unregistered_limit_s <= 0:
            raise ValueError("error_storm_limit and unregistered_limit_s must be positive")
        object.__setattr__(self, "backoff_s", tuple(self.backoff_s))


class ModemSupervisor:
    """Health loop and recovery ladder for `modem`; see the module doc.

    `policy`: the intervals, limits and backoffs (`SupervisorPolicy`).
    `power`: the last rung (None: the rung is skipped and reported once as a fault).
    `on_event(kind, **fields)`: event sink (exceptions in it are logged, never raised).
    `reopen`: opens a new `AtChannel` when the port closed (USB re-enumeration).
    `set_clock`/`clock_unset`: network time for a clock that is not set.
    `monotonic` (seconds) and `sleep` are injectable: tests never wait for backoff.
    """

    def __init__(
        self,
        modem: Modem,
        policy: SupervisorPolicy | None = None,
        *,
        power: PowerControl | None = None,
        on_event: EventCallback | None = None,
        reopen: Callable[[], Awaitable[AtChannel]] | None = None,
        set_clock: Callable[[datetime], object] | None = None,
        clock_unset: Callable[[], bool] = system_clock_unset,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.modem = modem
        self.policy = policy or SupervisorPolicy()
        self.power = power
        self.on_event = on_event
        self.reopen = reopen
        self.set_clock = set_clock
        self.clock_unset = clock_unset
        self._monotonic = monotonic
        self._sleep = sleep
        self._refused_polls = 0
        self._unregistered_since: float | None = None
        self._boots_seen = modem.boots
        self.resets_total = 0
        self.step: RecoveryStep | None = None
        self.exhausted = False
        self._polls = 0
        self._garbage_seen = modem.channel.stats.garbage_bytes
        self._overlap: bool | None = None
        self._faults: dict[str, str | None] = {}
        self._clock_set_at: float | None = None
        self._no_power_reported = False
        #: times the port vanished and was found and reopened without a rung
        self.reopened_total = 0

    # -- events ----------------------------------------------------------------------------
    def _emit(self, kind: str, message: str, severity: str = "info", **fields: Any) -> None:
        log_level = {"info": logging.INFO, "warning": logging.WARNING}.get(severity,
                                                                          logging.ERROR)
        log.log(log_level, "modem %s: %s", kind, message)
        if self.on_event is None:
            return
        try:
            self.on_event(kind, message=message, severity=severity, **fields)
        except Exception:
            log.exception("modem event callback failed for %r", kind)

    def _report_fault(self, topic: str, reason: str | None, detail: str = "") -> None:
        """A `fault` event when `topic`'s fault changes to a (new) non-None `reason`."""
        if self._faults.get(topic) == reason:
            return
        self._faults[topic] = reason
        if reason is not None:
            self._emit("fault", f"{reason}: {detail}" if detail else reason, "error",
                       reason=reason, detail=detail)

    # -- main loop -------------------------------------------------------------------------
    def snapshot(self) -> ModemStatus:
        return self.modem.snapshot()

    async def run(self) -> None:
        """`start()`, then `tick()` every `poll_interval_s` (sooner after an `RDY`), until
        cancelled."""
        await self.start()
        while True:
            await self._wait_next()
            await self.tick()

    async def _wait_next(self) -> None:
        sleeper = asyncio.ensure_future(self._sleep(self.policy.poll_interval_s))
        rebooted = asyncio.ensure_future(self.modem.wait_boot(self.modem.boots, None))
        try:
            if not self.modem.needs_init:
                await asyncio.wait({sleeper, rebooted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, rebooted):
                task.cancel()
            await asyncio.gather(sleeper, rebooted, return_exceptions=True)

    async def start(self) -> bool:
        """First contact: initialise and refresh; on failure, recover. True when healthy."""
        try:
            async with asyncio.timeout(self.policy.step_timeout_s):
                await self.modem.initialise()
                await self.modem.refresh()
        except _FAILURES as exc:
            if self._port_vanished():
                return await self._reopen_port()
            return await self.recover(_reason(exc), detail=str(exc))
        except CommandError as exc:
            log.warning("modem start: %s", exc)
        self._polls = 1
        await self._after_poll(full=True)
        return True

    async def tick(self) -> bool:
        """One health check: re-initialise after a reboot (not a rung), otherwise poll (a
        full refresh every `refresh_every`-th time); recover when the modem is silent, in
        an ERROR storm or unregistered too long. True when healthy afterwards."""
        if self._port_vanished():
            return await self._reopen_port()
        if self.modem.needs_init or self.modem.boots > self._boots_seen:
            return await self._after_reboot()
        full = self._polls % self.policy.refresh_every == 0 or self.exhausted \
            or self.modem.needs_refresh  # a SIM was inserted: read it now
        self._polls += 1
        try:
            async with asyncio.timeout(self.policy.step_timeout_s):
                if full:
                    await self.modem.refresh()
                else:
                    await self.modem.poll()
        except _FAILURES as exc:
            if self._port_vanished():
                return await self._reopen_port()
            return await self.recover(_reason(exc), detail=str(exc))
        except CommandError as exc:
            log.info("modem poll: %s", exc)  # the modem answers; a storm is a matter
            self._refused_polls += 1
            if self._refused_polls >= self.policy.error_storm_limit:
                self._refused_polls = 0
                limit = self.policy.error_storm_limit
                return await self.recover("error_storm",
                                          detail=f"{exc} ({limit} refused polls in a row)")
        else:
            self._refused_polls = 0
        self._check_noise()
        if self.exhausted:  # it answers again without a rung
            self._recovered(None, "poll", self._monotonic())
        if self._registration_lost_too_long():
            limit_s = self.policy.unregistered_limit_s
            return await self.recover("registration_lost",
                                      detail=f"not registered for {limit_s:g} s")
        await self._after_poll(full)
        return True

    def _port_vanished(self) -> bool:
        return self.reopen is not None and self.modem.channel.transport.is_closed

    async def _reopen_port(self) -> bool:
        """The port went away (the USB modem re-enumerated: a power-key cycle, a USB mode
        change, a crash): find it again (`reopen` rescans when the port is "auto"),
        reopen it and re-initialise — not a ladder rung, reported as `modem_recovered`
        step `reopen`. A port that is not back within `boot_timeout_s` climbs the ladder
        (`port_closed`)."""
        log.warning("modem port vanished; looking for it again")
        if not await self._ensure_channel(attempts=max(1, int(self.policy.boot_timeout_s))):
            return await self.recover("port_closed", detail="the port did not come back within "
                                                            f"{self.policy.boot_timeout_s:g} s")
        self.reopened_total += 1
        return await self._after_reboot(name="reopen", reason="port_reopened")

    async def _after_reboot(self, *, name: str = "reboot",
                            reason: str = "unexpected_reboot") -> bool:
        """The modem rebooted by itself: the modem layer waits for the boot; initialise
        and refresh it (no rung), report it once. Silence afterwards climbs the ladder."""
        started = self._monotonic()
        self._boots_seen = self.modem.boots
        try:
            async with asyncio.timeout(self.policy.step_timeout_s):
                await self.modem.initialise()
                await self.modem.refresh()
        except _FAILURES as exc:
            return await self.recover(_reason(exc), detail=str(exc))
        except CommandError as exc:
            log.warning("modem re-initialisation after a reboot: %s", exc)
        self._boots_seen = self.modem.boots
        self._recovered(None, reason, started, name=name)
        await self._after_poll(full=True)
        return True

    def _check_noise(self) -> None:
        garbage = self.modem.channel.stats.garbage_bytes
        noise, self._garbage_seen = garbage - self._garbage_seen, garbage
        if noise > self.policy.garbage_limit:
            log.warning("modem: %d noise bytes since the last poll (not a recovery matter)",
                        noise)

    def _registration_lost_too_long(self) -> bool:
        status = self.modem.snapshot()
        if status.registered is not False or status.sim_state is not SimState.READY:
            self._unregistered_since = None
            return False
        now = self._monotonic()
        if self._unregistered_since is None:
            self._unregistered_since = now
            return False
        if now - self._unregistered_since < self.policy.unregistered_limit_s:
            return False
        self._unregistered_since = None  # the next attempt after another full period
        return True

    # -- the ladder ------------------------------------------------------------------------
    async def recover(self, reason: str, *, detail: str = "") -> bool:
        """Climb the ladder until a rung brings the modem back (True) or all failed."""
        started = self._monotonic()
        last_error = detail
        for index, step in enumerate(LADDER):
            if index == 0 and self.exhausted:
                await self._sleep(self.policy.retry_after_s)
            else:
                backoff_s = self.policy.backoff_s
                await self._sleep(backoff_s[min(index, len(backoff_s) - 1)])
            if step is RecoveryStep.POWER_CYCLE and self.power is None:
                if not self._no_power_reported:
                    self._no_power_reported = True
                    self._emit("fault", "no power control: the power-cycle rung is skipped",
                               "error", reason="no_power_control", detail="")
                continue
            self.resets_total += 1
            self.step = step
            self.modem.set_recovery(step.value, self.resets_total, reason)
            self._emit("modem_reset", f"{step.value} (attempt {index + 1}) after {reason}",
                       "warning", step=step.value, attempt=index + 1, reason=reason,
                       detail=last_error, resets_total=self.resets_total)
            try:
                async with asyncio.timeout(self.policy.step_timeout_s):
                    async with self.modem.exclusive():
                        await self._run_step(step)
                        await self.modem.initialise()
                        await self.modem.refresh()
            except _FAILURES as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                log.warning("modem recovery %s failed: %s", step.value, last_error)
                continue
            except CommandError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                log.warning("modem recovery %s refused: %s", step.value, last_error)
                continue
            self._boots_seen = self.modem.boots
            self._recovered(step, reason, started)
            await self._after_poll(full=True)
            return True
        if not self.exhausted:
            self.exhausted = True
            self.modem.mark_absent()
            self._report_fault("modem", "modem_unresponsive",
                               f"no answer after every recovery step ({last_error})")
        return False

    def _recovered(self, step: RecoveryStep | None, reason: str, started: float, *,
                   name: str | None = None) -> None:
        self.exhausted = False
        self.step = None
        self._faults.pop("modem", None)
        self._garbage_seen = self.modem.channel.stats.garbage_bytes
        self.modem.set_recovery(None, self.resets_total)
        if name is None:
            name = "none" if step is None else step.value
        self._emit("modem_recovered", f"modem answers again after {name}", "info",
                   step=name, reason=reason, resets_total=self.resets_total,
                   duration_s=round(self._monotonic() - started, 3))

    async def _run_step(self, step: RecoveryStep) -> None:
        modem = self.modem
        await self._require_channel()
        if step is RecoveryStep.RADIO_CYCLE:
            await modem.restart_radio()
        elif step is RecoveryStep.MODEM_RESET:
            await modem.reboot()
        elif step is RecoveryStep.POWER_CYCLE:
            assert self.power is not None
            boots = modem.boots
            await self.power.power_cycle()
            if self.reopen is not None and modem.channel.transport.is_closed:
                await self._require_channel()
            elif not await modem.wait_boot(boots, self.policy.boot_timeout_s):
                log.warning("modem: no RDY within %g s of the power cycle; probing",
                            self.policy.boot_timeout_s)

    async def _require_channel(self) -> None:
        if not await self._ensure_channel(attempts=max(1, int(self.policy.step_timeout_s))):
            raise PortClosed(self.modem.channel.url, "the port did not come back")

    async def _ensure_channel(self, attempts: int | None = None) -> bool:
        """Reopen the port when it closed (and `reopen` is given), retrying each second
        (`attempts` times at most; None: until the step's time limit). False when it did
        not come back."""
        if self.reopen is None or not self.modem.channel.transport.is_closed:
            return True
        old = self.modem.channel
        tried = 0
        while True:
            try:
                channel = await self.reopen()
            except PortOpenError as exc:
                tried += 1
                if attempts is not None and tried >= attempts:
                    log.warning("modem port not back after %d attempts: %s", tried, exc)
                    return False
                log.info("modem port not back yet: %s", exc)
                await self._sleep(1.0)
                continue
            break
        self.modem.attach(channel)
        with contextlib.suppress(Exception):
            await old.close()
        return True

    # -- after a good poll -----------------------------------------------------------------
    async def _after_poll(self, full: bool) -> None:
        status = self.modem.snapshot()
        self._check_sim(status)
        self._check_carrier(status)
        if full:
            await self._check_clock()

    def _check_sim(self, status: ModemStatus) -> None:
        if status.sim_fault is not None:
            self._report_fault("sim", f"sim_{status.sim_fault}",
                               f"SIM state {status.sim_state}: LTE backup unusable")
        elif status.sim_state is SimState.NOT_INSERTED:
            self._report_fault("sim", "sim_not_inserted", "no SIM: LTE backup unusable")
        elif status.sim_state is SimState.READY:
            self._report_fault("sim", None)

    def _check_carrier(self, status: ModemStatus) -> None:
        overlap = status.same_carrier
        if overlap is None or overlap == self._overlap:
            return
        previous, self._overlap = self._overlap, overlap
        code = status.sim_mcc_mnc or status.mcc_mnc
        carrier = carrier_for(code) if code else None
        name = carrier.name if carrier else code
        fields = dict(same_carrier=overlap, wired_carrier=self.modem.wired_carrier,
                      mcc_mnc=code, carrier=name)
        if overlap:
            self._emit("carrier_overlap",
                       f"LTE SIM is on {name} ({code}), the same carrier as the wired ISP "
                       f"{self.modem.wired_carrier!r}: one carrier outage takes both uplinks "
                       f"down", "warning", **fields)
        elif previous:
            self._emit("carrier_overlap",
                       f"LTE SIM is now on {name} ({code}), not the wired ISP's carrier",
                       "info", **fields)

    async def _check_clock(self) -> None:
        if self.set_clock is None or not self.clock_unset():
            return
        if self._clock_set_at is not None and self._monotonic() - self._clock_set_at < 3600:
            return
        try:
            async with asyncio.timeout(self.policy.step_timeout_s):
                when = await self.modem.network_time()
        except (CommandError, ParseError) as exc:
            log.info("modem network time unavailable: %s", exc)
            return
        except _FAILURES as exc:
            log.info("modem network time: %s", exc)
            return
        if when is None or when.year < self.policy.min_time_year:
            return
        try:
            result = self.set_clock(when)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("set_clock failed")
            return
        self._clock_set_at = self._monotonic()
        self._emit("clock_set", f"system clock set from network time {when.isoformat()}",
                   "info", time=when.isoformat(), source=self.modem.profile.name)

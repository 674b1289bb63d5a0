"""`AtChannel`: one AT command at a time over a `SerialTransport`, URCs routed aside.

Layering (as in pyserial's own design): `transport` moves bytes, `framing` cuts them into
lines/finals/echoes/prompts, this module is the protocol: it pairs commands with answers.
Beside it: `hw.modem.exchange` (one command's exchange: `Response`, the prefixes an answer
is claimed by, `SELF_TERMINATING`, `SYNC_QUERIES`, `redact`) and `hw.modem.urcs` (URCs:
`ALWAYS_URC`, `DEFAULT_URC_PREFIXES`, `Urc`, `Subscription`, delivery to subscribers).

Ownership. The channel owns its transport and one reader task (started by `start()` or
`async with`, ended by `close()`); that task is the only reader of the port and never
blocks the loop. `command()` holds an `asyncio.Lock`, so one command is on the wire at a
time; its timeout is an `asyncio.timeout` scope around "send and wait for the final".
Cancelling a `command()` is safe: the channel treats it like a timeout (see resync).

URC routing rule. Every framed line is routed, in this order:

1. A line in `ALWAYS_URC` (`RDY`, `POWERED DOWN`, ...) is unsolicited, whatever is
   outstanding. `RDY` means the modem rebooted: the outstanding command (if any) fails
   with `ModemRebooted`, `stats.reboots` counts it, and subscribers to `RDY` get it — the
   event the modem layer acts on (re-run its init sequence).
2. While a command is outstanding, a line that starts with one of the command's own
   response prefixes is part of its answer. The prefixes are derived from the command
   (`AT+CEREG?` -> `+CEREG:`; `AT+CSQ;+COPS?` -> `+CSQ:`, `+COPS:`) or given with
   `command(..., prefix=)`. So `+CEREG: 1` is the answer while `AT+CEREG?` is
   outstanding and a URC otherwise; `+CPIN: READY` likewise for `AT+CPIN?`. (A genuine
   `+CEREG:` URC racing an `AT+CEREG?` answer therefore lands in the answer's lines; the
   two are told apart by field count — `n,stat` vs `stat` — by the parser.)
3. A line starting with a URC prefix (`urc_prefixes`, default `DEFAULT_URC_PREFIXES`) is a
   URC and goes to the subscribers — in the middle of an answer too, since routing is per
   line and the framer reassembles lines split across reads. Exception: while the
   channel is out of sync (below), a line whose prefix is that of an unanswered command
   is taken for its late answer and dropped, not delivered as a URC.
4. Any other line belongs to the outstanding command; with none outstanding it is
   unsolicited: delivered to catch-all subscribers (`prefixes=None`) while in sync,
   dropped as stray (`stats.stray_lines`) while out of sync.

Resync strategy. A command that did not get its final result code (timeout, cancellation,
reboot, port error) leaves the channel *out of sync*: its answer may still arrive. A bare
`AT` cannot resync — its `OK` is indistinguishable from the late `OK` of the lost
command. Before the next command is sent the channel therefore sends a *marker query*
whose answer carries a distinctive information line (`AT+CMEE?` -> `+CMEE: <n>`; if an
unanswered command itself had that prefix, `AT+CSCS?` or `AT+CFUN?` instead) and discards
everything until that marker line *followed by* a final result code. A modem executes
commands in order, so any late answer comes before the marker, and the final after the
marker is the query's own. Attempts (`resync_attempts`, each `resync_timeout` s) that time
out are themselves unanswered commands and are avoided by the next attempt; when all fail
the pending command is not sent and `CommandTimeout(command, ..., resync=True)` is
raised (a muted modem). A reboot (`RDY`) does not end a resync: only the marker does.

Answers without a final result code. Some firmware ends a query with its information line
alone: a Wavecom answers `AT+CPIN?` with `+CPIN: READY` and no `OK` (ModemManager's
Wavecom plugin installs a custom success regex for exactly that). For the commands in
`SELF_TERMINATING` the channel waits `final_grace_s` after such a line; when no final
follows, the line ends the command (`Response.implied_final`) and the command is counted
unanswered, so that a late `OK` is swallowed by the next resync rather than taken for the
next command's final.

Measurement. Every `Response` carries `duration_s` (send to final, loop clock);
`stats.last_duration_s[command]` / `stats.max_duration_s[command]` keep the last/maximum
per command text, and an optional `on_command(command, duration_s, outcome)` callback
(outcome `"ok" | "error" | "timeout" | "rebooted" | "closed" | "cancelled"`) feeds metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hw.lifecycle import AsyncClosing
from hw.modem.errors import CommandError, CommandTimeout, ModemRebooted, PortClosed
from hw.modem.exchange import (
    CTRL_Z,
    ESC,
    SELF_TERMINATING,
    SYNC_QUERIES,
    Item,
    Outcome,
    Pending,
    Reboot,
    Response,
    line_prefix,
    redact,
    response_prefixes,
)
from hw.modem.framing import AtFramer, Echo, Final, FinalKind, Garbage, Line, Prompt
from hw.modem.transport import SerialTransport
from hw.modem.urcs import (
    ALWAYS_URC,
    DEFAULT_URC_PREFIXES,
    Subscription,
    Urc,
    UrcCallback,
    UrcSubscribers,
)

__all__ = ["AtChannel", "ChannelStats"]

log = logging.getLogger(__name__)

@dataclass
class ChannelStats:
    """Counters and per-command durations (seconds, event-loop clock)."""

    commands: int = 0
    ok: int = 0
    errors: int = 0
    timeouts: int = 0
    reboots: int = 0
    resyncs: int = 0
    resync_failures: int = 0
    urcs: int = 0
    stray_lines: int = 0
    stray_finals: int = 0
    garbage_bytes: int = 0
    echoes: int = 0
    last_duration_s: dict[str, float] = field(default_factory=dict)
    max_duration_s: dict[str, float] = field(default_factory=dict)


@dataclass
class _Answer:
    """What one command has received so far, and how its exchange ended."""

    lines: list[str] = field(default_factory=list)
    final: Final | None = None
    implied: bool = False
    outcome: Outcome = "cancelled"


class AtChannel(AsyncClosing):
    """One AT command at a time over `transport`; URCs to subscribers. See module doc.

    `default_timeout` applies to `command()` calls without their own; `urc_prefixes`
    replaces the URC prefix set; `resync_timeout`/`resync_attempts` bound the resync after
    an unanswered command; `on_command` observes every command's duration and outcome.
    """

    def __init__(
        self,
        transport: SerialTransport,
        *,
        default_timeout: float = 5.0,
        urc_prefixes: Iterable[str] = DEFAULT_URC_PREFIXES,
        resync_timeout: float = 1.0,
        resync_attempts: int = 3,
        on_command: Callable[[str, float, Outcome], None] | None = None,
        final_grace_s: float = 0.5,
    ) -> None:
        if final_grace_s <= 0:
            raise ValueError(f"final_grace_s must be positive, not {final_grace_s!r}")
        if default_timeout <= 0:
            raise ValueError(f"default_timeout must be positive, not {default_timeout!r}")
        if resync_timeout <= 0 or resync_attempts < 1:
            raise ValueError(
                f"resync needs a positive timeout and at least one attempt, not "
                f"{resync_timeout!r} s x {resync_attempts!r}"
            )
        self._transport = transport
        self.default_timeout = default_timeout
        self.urc_prefixes = frozenset(urc_prefixes)
        self.resync_timeout = resync_timeout
        self.resync_attempts = resync_attempts
        self.on_command = on_command
        self.final_grace_s = final_grace_s
        self.stats = ChannelStats()
        self._framer = AtFramer()
        self._lock = asyncio.Lock()
        self._pending: Pending | None = None
        self._unanswered: list[str] = []
        self._urcs = UrcSubscribers(transport.url)
        self._reader: asyncio.Task[None] | None = None
        self._failure: PortClosed | None = None
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------
    @classmethod
    async def open(
        cls,
        url: str,
        *,
        baudrate: int = 115200,
        force_thread: bool = False,
        serial_options: Mapping[str, Any] | None = None,
        **channel_options: Any,
    ) -> AtChannel:
        """Open the AT port `url` (device path or pyserial URL) and start the channel.

        `serial_options` go to `serial_for_url` (e.g. ``exclusive=True``: the daemon owns
        the port and a second opener is refused instead of interleaving commands)."""
        transport = await SerialTransport.open(url, baudrate=baudrate, force_thread=force_thread,
                                               **dict(serial_options or {}))
        try:
            channel = cls(transport, **channel_options)
        except BaseException:
            await transport.close()
            raise
        channel.start()
        return channel

    def start(self) -> None:
        """Start the reader task (idempotent)."""
        if self._closed:
            raise PortClosed(self.url, "channel closed")
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(
                self._read_loop(), name=f"at-reader {self.url}"
            )

    async def close(self) -> None:
        """Stop the reader, close the transport, end subscriptions. Idempotent."""
        if self._closed:
            return
        self._closed = True
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        await self._transport.close()
        closed = self._failure or PortClosed(self.url, "channel closed")
        if self._pending is not None:
            self._to_pending(closed)
        self._urcs.end_all(self._failure)

    async def _enter(self) -> None:
        self.start()

    # -- properties --------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self._transport.url

    @property
    def transport(self) -> SerialTransport:
        return self._transport

    @property
    def in_sync(self) -> bool:
        """False while an unanswered command's late answer may still arrive."""
        return not self._unanswered

    @property
    def unanswered(self) -> tuple[str, ...]:
        """Commands sent without receiving their final result code since the last resync."""
        return tuple(self._unanswered)

    @property
    def outstanding(self) -> str | None:
        """The command on the wire, if any."""
        return self._pending.command if self._pending is not None else None

    # -- URC subscribers ---------------------------------------------------------------
    def subscribe(
        self, prefixes: Iterable[str] | None = None, *, maxsize: int = 256
    ) -> Subscription:
        """An async iterator of URCs starting with any of `prefixes` (None: all of them)."""
        sub = self._urcs.new(prefixes, maxsize)
        if self._closed:
            sub.end(self._failure)
        else:
            self._urcs.add(sub)
        return sub

    def add_urc_callback(
        self, callback: UrcCallback, prefixes: Iterable[str] | None = None
    ) -> Callable[[], None]:
        """Call `callback(urc)` (from the reader task; must not block) for matching URCs.

        Returns a function that removes the callback.
        """
        return self._urcs.add_callback(callback, prefixes)

    # -- commands ----------------------------------------------------------------------
    async def command(
        self,
        command: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the per-command timeout (a scope inside)
        prefix: str | Iterable[str] | None = None,
        payload: bytes | None = None,
    ) -> Response:
        """Send `command` (e.g. `"AT+CSQ"`, no `\\r`) and return its `Response`.

        `timeout` (default `default_timeout`) bounds send-to-final. `prefix` overrides the
        response prefixes derived from the command (`""` or `()`: claim no URC-looking
        line). `payload` is sent after a `> ` prompt, terminated with Ctrl-Z; a prompt
        without payload is answered with ESC.

        Raises `CommandError` (error final), `CommandTimeout`, `ModemRebooted`,
        `PortClosed`; `ValueError` for a malformed command.
        """
        cmd = command.strip()
        if not cmd[:2].upper() == "AT" or "\r" in cmd or "\n" in cmd or not cmd.isascii():
            raise ValueError(f"not a single ASCII AT command line: {command!r}")
        limit = self.default_timeout if timeout is None else timeout
        if limit <= 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        if prefix is None:
            prefixes = response_prefixes(cmd)
        elif isinstance(prefix, str):
            prefixes = frozenset({prefix}) if prefix else frozenset()
        else:
            prefixes = frozenset(prefix)
        async with self._lock:
            self._check_usable()
            if self._unanswered:
                await self._resync(cmd)
            return await self._run(cmd, limit, prefixes, payload)

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise PortClosed(self.url, "channel closed")
        if self._reader is None:
            raise RuntimeError(f"AtChannel on {self.url!r} not started")

    async def _run(
        self, cmd: str, limit: float, prefixes: frozenset[str], payload: bytes | None
    ) -> Response:
        loop = asyncio.get_running_loop()
        pending = Pending(cmd, prefixes)
        answer = _Answer()
        self.stats.commands += 1
        self._pending = pending
        self._framer.expect_echo(cmd)
        started = loop.time()
        try:
            async with asyncio.timeout(limit):
                await self._transport.write(cmd.encode("ascii") + b"\r")
                await self._collect(pending, answer, payload)
        except TimeoutError:
            answer.outcome = "timeout"
            self.stats.timeouts += 1
            raise CommandTimeout(redact(cmd), limit) from None
        except PortClosed:
            answer.outcome = "closed"
            raise
        finally:
            if self._pending is pending:
                self._pending = None
            duration = loop.time() - started
            if answer.final is None:
                self._unanswered.append(redact(cmd))
                self._record(redact(cmd), duration, answer.outcome)
            elif answer.implied:
                self._unanswered.append(redact(cmd))  # a late OK is the resync's to swallow
        return self._conclude(cmd, answer, duration)

    async def _collect(self, pending: Pending, answer: _Answer, payload: bytes | None) -> None:
        """Gather `pending`'s lines into `answer` until its final result code (or, for a
        `SELF_TERMINATING` command, its line and `final_grace_s` of silence); answer a
        prompt with `payload`. Raises `ModemRebooted` or the port's `PortClosed`."""
        terminator = SELF_TERMINATING.get(pending.command.upper())
        lines = answer.lines
        while answer.final is None:
            if terminator and lines and lines[-1].upper().startswith(terminator):
                item = await self._next_within_grace(pending)
                if item is None:
                    answer.final, answer.implied = Final(FinalKind.OK, "OK"), True
                    return
            else:
                item = await pending.next()
            if isinstance(item, Line):
                lines.append(item.text)
            elif isinstance(item, Final):
                answer.final = item
            elif isinstance(item, Prompt):
                data = ESC if payload is None else payload + CTRL_Z
                payload = None
                await self._transport.write(data)
            elif isinstance(item, Reboot):
                answer.outcome = "rebooted"
                raise ModemRebooted(redact(pending.command), item.line)
            else:
                answer.outcome = "closed"
                raise item

    def _conclude(self, cmd: str, answer: _Answer, duration: float) -> Response:
        """The `Response` to a completed exchange, or its `CommandError`; counted."""
        final = answer.final
        assert final is not None
        response = Response(cmd, tuple(answer.lines), final.text, duration,
                            implied_final=answer.implied)
        if final.kind.success:
            self.stats.ok += 1
            self._record(redact(cmd), duration, "ok")
            return response
        self.stats.errors += 1
        self._record(redact(cmd), duration, "error")
        raise CommandError(
            redact(cmd),
            final.text,
            cme_code=final.code if final.kind is FinalKind.CME_ERROR else None,
            cms_code=final.code if final.kind is FinalKind.CMS_ERROR else None,
        )

    async def _next_within_grace(self, pending: Pending) -> Item | None:
        """The next item of `pending`, or None when `final_grace_s` passes without one."""
        try:
            async with asyncio.timeout(self.final_grace_s):
                return await pending.next()
        except TimeoutError:
            return None

    def _record(self, cmd: str, duration: float, outcome: Outcome) -> None:
        self.stats.last_duration_s[cmd] = duration
        if duration > self.stats.max_duration_s.get(cmd, 0.0):
            self.stats.max_duration_s[cmd] = duration
        if self.on_command is not None:
            try:
                self.on_command(cmd, duration, outcome)
            except Exception:
                log.exception("on_command callback failed for %r", cmd)

    async def _resync(self, for_command: str) -> None:
        """Discard late answers until a marker query is answered; see module doc."""
        log.info("AT channel %r out of sync after %r; resyncing", self.url, self._unanswered)
        for attempt in range(self.resync_attempts):
            avoid = {p for c in self._unanswered for p in response_prefixes(c)}
            choices = [q for q in SYNC_QUERIES if q[1] not in avoid] or list(SYNC_QUERIES)
            query, marker = choices[attempt % len(choices)]
            pending = Pending(query, frozenset({marker}), marker)
            self._pending = pending
            self._framer.expect_echo(query)
            seen_marker = False
            try:
                async with asyncio.timeout(self.resync_timeout):
                    await self._transport.write(query.encode("ascii") + b"\r")
                    while True:
                        item = await pending.next()
                        if isinstance(item, Line):
                            seen_marker = seen_marker or item.text.startswith(marker)
                        elif isinstance(item, Final):
                            if seen_marker:
                                break
                            self.stats.stray_finals += 1  # a late answer's final
                        elif isinstance(item, Prompt):
                            await self._transport.write(ESC)
                        elif isinstance(item, PortClosed):
                            raise item
            except TimeoutError:
                self._unanswered.append(query)
                continue
            except BaseException:
                self._unanswered.append(query)
                raise
            finally:
                if self._pending is pending:
                    self._pending = None
            self._unanswered.clear()
            self.stats.resyncs += 1
            log.info("AT channel %r back in sync", self.url)
            return
        self.stats.resync_failures += 1
        raise CommandTimeout(
            for_command, self.resync_timeout * self.resync_attempts, resync=True
        )

    # -- reading and routing -----------------------------------------------------------
    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self._transport.read()
                for event in self._framer.feed(data):
                    self._dispatch(event)
        except PortClosed as exc:
            self._fail(exc)
        except Exception as exc:  # a bug here must not leave callers waiting forever
            log.exception("AT reader on %r crashed", self.url)
            self._fail(PortClosed(self.url, f"reader crashed: {exc!r}"))

    def _to_pending(self, item: Item) -> None:
        pending = self._pending
        assert pending is not None
        pending.push(item)
        if pending.completed_by(item):
            self._pending = None

    def _fail(self, error: PortClosed) -> None:
        self._failure = error
        if self._pending is not None:
            self._to_pending(error)
        self._urcs.end_all(error)

    def _dispatch(self, event: Line | Echo | Final | Prompt | Garbage) -> None:
        pending = self._pending
        if isinstance(event, Line):
            self._route_line(event)
        elif isinstance(event, Final):
            if pending is not None:
                self._to_pending(event)
            else:
                self.stats.stray_finals += 1
                log.debug("stray final %r on %r", event.text, self.url)
        elif isinstance(event, Prompt):
            if pending is not None:
                self._to_pending(event)
        elif isinstance(event, Garbage):
            self.stats.garbage_bytes += len(event.data)
            log.debug("garbage %r on %r", event.data, self.url)
        else:  # Echo: recognised by the framer; counted, not routed
            self.stats.echoes += 1

    def _route_line(self, event: Line) -> None:
        text = event.text
        pending = self._pending
        if text in ALWAYS_URC:
            if text == "RDY":
                self.stats.reboots += 1
                self._framer.forget_echoes()
                if pending is not None:
                    self._to_pending(Reboot(text))
            self._deliver(text, text)
            return
        if pending is not None and pending.claims(text):
            self._to_pending(event)
            return
        urc_prefix = self._urc_prefix(text)
        if urc_prefix is not None:
            if self._unanswered and line_prefix(text) in {
                p for c in self._unanswered for p in response_prefixes(c)
            }:
                self.stats.stray_lines += 1  # the late answer of an unanswered command
                return
            self._deliver(text, urc_prefix)
            return
        if pending is not None:
            self._to_pending(event)
        elif self._unanswered:
            self.stats.stray_lines += 1
        else:
            self._deliver(text, None)

    def _urc_prefix(self, text: str) -> str | None:
        best: str | None = None
        for prefix in self.urc_prefixes:
            if text.startswith(prefix) and (best is None or len(prefix) > len(best)):
                best = prefix
        return best

    def _deliver(self, text: str, prefix: str | None) -> None:
        urc = Urc(text, prefix, asyncio.get_running_loop().time())
        if prefix is not None:
            self.stats.urcs += 1
        self._urcs.deliver(urc)

    def __repr__(self) -> str:
        return f"<AtChannel {self.url!r} outstanding={self.outstanding!r}>"

"""`ModemSimulator`: the EC25 composed of its command families, as tests, the daemon
(`lte.simulator`) and `python -m hw.modem.simulator` use it — its lifecycle on a pty,
the scenario knobs that are about the conversation rather than one family (quirks,
faults on the wire), and how a command is routed to its family.

Routing. A command part is a basic command (`E0`, `I`, `&F`...: `BasicCommands`) or an
extended one, `+NAME` with `?` (read), `=?` (test), `=<args>` (set) or nothing (exec);
`+NAME` is answered by the method `_cmd_<name>` of whichever family defines it, and by
`ERROR` when none does. Arguments keep their case (PINs, APNs); quotes are removed and
commas inside them kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

from hw.lifecycle import AsyncClosing
from hw.modem.framing import split_unquoted
from hw.modem.simulator.commands.basic import BasicCommands
from hw.modem.simulator.commands.clock import ClockCommands
from hw.modem.simulator.commands.network import NetworkCommands
from hw.modem.simulator.commands.packet import PacketCommands
from hw.modem.simulator.commands.power import PowerCommands
from hw.modem.simulator.commands.sim import SimCommands
from hw.modem.simulator.device import Reply

__all__ = ["ModemSimulator"]


def _split_args(text: str) -> list[str]:
    """`1,"IP","a,b"` -> [`1`, `IP`, `a,b`] (quotes removed, commas inside kept)."""
    return [arg.replace('"', "").strip() for arg in split_unquoted(text, ",")]


_EXTENDED = re.compile(r"^\+([A-Z0-9]+)(=\?|\?|=(.*))?$", re.DOTALL)


class ModemSimulator(BasicCommands, SimCommands, NetworkCommands, PacketCommands,
                     ClockCommands, PowerCommands, AsyncClosing):
    """A Quectel EC25 on a pty. See the package docstring for behaviour and knobs."""

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def slave_path(self) -> str:
        """The pty slave the driver opens (`/dev/pts/N`)."""
        return self._port.slave_path

    async def start(self, *, boot: bool = False) -> None:
        """Create the pty and run. `boot=False`: the modem is on and settled (as if it
        had booted long before the host opened the port); `boot=True`: play power-on
        (`RDY` ... after `boot_delay_s`)."""
        if self._port.is_open:
            raise RuntimeError("simulator already started")
        self._loop = asyncio.get_running_loop()
        self._port.open(self._on_input)
        if boot:
            self._restart("power-on")
        else:
            self._power = "on"
            self._load_sim()
            self._last_stat = self._reg_stat()
            self._start_executor()

    async def stop(self) -> None:
        """Stop all tasks and close the pty (the driver sees a hang-up). Idempotent."""
        if not self._port.is_open:
            return
        await self._port.close()
        tasks = [t for t in (self._executor_task, self._power_task) if t]
        tasks += list(self._side_tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._power = "off"

    async def _enter(self) -> None:
        await self.start()

    async def close(self) -> None:
        """`stop()`, under the name `async with` closes the modem stack's resources by."""
        await self.stop()

    # -- knobs: the conversation ----------------------------------------------------------
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

    def command_seen(self, command: str) -> asyncio.Future[str]:
        """A future resolved (with the line) when `command` next arrives."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._seen.append((command.strip().upper(), future))
        return future

    # -- routing -------------------------------------------------------------------------
    async def _dispatch(self, part: str) -> Reply:
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
        reply: Reply = await handler(kind, args)
        return reply

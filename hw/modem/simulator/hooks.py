"""Data hooks: what the simulator does to the host when its data call goes up or down.

A `DataHook` (`async (up: bool) -> None`) is awaited when the data call goes up
(`AT+CGACT=1,<cid>`, `AT+QNETDEVCTL=1,<cid>,...`) — before the `OK` — and when it goes
down (`AT+CGACT=0`, `AT+QNETDEVCTL=0`, registration loss, `AT+CFUN=0`, SIM switch,
power-off, reboot — before `RDY`). `IpLinkHook` brings a real interface up and down (the
default when the simulator is given `data_interface`); tests use `RecordingDataHook`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["DataHook", "IpLinkHook", "RecordingDataHook"]

DataHook = Callable[[bool], Awaitable[None]]


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


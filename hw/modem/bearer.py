"""The data call (bearer) of a `Modem` on its PDP context `cid`: activation through the
vendor profile, the address and the resolvers the network assigns (`+CGPADDR`,
`+CGCONTRDP`), deactivation, and its status.

The `Modem` decides when (registered first, after the profile's preparation and any
reboot it needs: `Modem.connect_data`); this part knows how, and folds what it learns
into the modem's `ModemState`.
"""

from __future__ import annotations

import asyncio
import dataclasses

from hw.modem.core import ModemCore
from hw.modem.errors import CommandError, ModemRebooted, ParseError
from hw.modem.status import DataStatus

__all__ = ["Bearer"]


class Bearer:
    """The data call on `core.cid`."""

    def __init__(self, core: ModemCore) -> None:
        self._core = core

    def _set(self, data: DataStatus, **fields: object) -> None:
        self._core.apply(dataclasses.replace(self._core.state, data=data,
                                             **fields))  # type: ignore[arg-type]

    async def activate(self, apn: str) -> DataStatus:
        """The profile's activation (Quectel ECM: `+CGDCONT` -> `+QNETDEVCTL=1,<cid>,1`;
        generic: `+CGDCONT` -> `+CGATT=1` -> `+CGACT=1,<cid>`) and `+CGPADDR`. A reboot
        while it was set up took the call down: `ModemRebooted`."""
        core = self._core
        boots = core.boots
        status = await core.profile.activate_data(core, apn, core.cid)
        if status.ip is None and status.ipv6 is None:
            status = await self._await_address(status, boots)
        status = await self._with_dns(status)
        if core.boots != boots:  # a reboot took the call down while it was set up
            raise ModemRebooted(f"connect_data({apn!r})")
        self._set(status, data_down_reason=None)
        return status

    async def _await_address(self, status: DataStatus, boots: int) -> DataStatus:
        """Some firmware answers OK before the network assigned an address: re-read (not
        after a reboot: that call is gone)."""
        core = self._core
        try:
            async with asyncio.timeout(core.timeouts.data):
                while core.boots == boots:
                    await core.pause()
                    ip, ipv6 = await core.profile.read_addresses(core, status.cid)
                    if ip or ipv6:
                        return dataclasses.replace(status, ip=ip, ipv6=ipv6)
        except TimeoutError:
            pass
        return status

    async def _with_dns(self, status: DataStatus) -> DataStatus:
        """`status` with the resolvers the network gave the call (`+CGCONTRDP`), which the
        LAN's DNS forwards to while LTE carries the shop (`firmware.lan.resolvers`). A
        modem that refuses the command (ERROR, +CME ERROR) knows none: (). An answer that
        does not parse is counted and the last good resolvers of the same call stay."""
        if not status.up:
            return status
        core = self._core
        try:
            dns = await core.profile.read_dns(core, status.cid)
        except CommandError:
            dns = ()
        except ParseError as exc:
            core.parse_failed(exc)
            old = core.state.data
            dns = old.dns if old is not None and old.up and old.cid == status.cid else ()
        return dataclasses.replace(status, dns=dns)

    async def deactivate(self) -> None:
        """Take the data call down (`+QNETDEVCTL=0,...` / `+CGACT=0,<cid>`)."""
        core = self._core
        await core.profile.deactivate_data(core, core.cid)
        data = core.state.data
        self._set(DataStatus(up=False, cid=core.cid, ip=None, ipv6=None,
                             method=data.method if data else core.profile.data_method,
                             apn=data.apn if data else None))

    async def read_status(self) -> DataStatus:
        """Whether the data call is up, its addresses and resolvers (read from the modem)."""
        core = self._core
        status = await self._with_dns(await core.profile.read_data_status(core, core.cid))
        old = core.state.data
        if old is not None and old.apn and status.apn is None:
            status = dataclasses.replace(status, apn=old.apn)
        if status.up:
            self._set(status, data_down_reason=None)
        else:
            self._set(status)
        return status

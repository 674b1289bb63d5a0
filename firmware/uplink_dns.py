"""Each uplink's own resolvers, for the probes and the LAN's DNS alike.

issue #13: the gateway's and the probe targets' names resolve through the uplink being
probed, with the resolvers that uplink was given. An uplink's resolvers are configured
(`wired.dns`, `lte.dns`), else learnt: from NetworkManager when it owns the uplinks
(`routing.backend = "networkmanager"`: its device's IP4Config holds what DHCP, a static
profile or ModemManager gave it), else, for LTE, those the box's own modem reports for
its data call (`AT+CGCONTRDP`, `modem.dns` in the state). Configured wins, then
NetworkManager's, then the modem's (`own_resolvers`).

`UplinkResolvers` is the one place that rule is applied. The failover engine never sees
the box: its probes are handed a plain callable per uplink (`ProbeOptions.resolvers`,
`failover.probes.dns`), read at every resolution, and the LAN component asks the same
object for the active uplink's. What is learnt changes while the box runs (a DHCP
renewal, a new data call): the modem's are read from the state every time, so a modem
reconnect counts from the next probe; NetworkManager's are kept and learnt again by
`refresh` once they are `max_age_s` old (the failover component's `follow` and the LAN
component both call it; whoever comes first pays one D-Bus round trip per uplink). A box
without NetworkManager learns nothing by polling: `follow` returns at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from firmware.config import Config
from firmware.state import BoxState

__all__ = ["Learn", "Uplink", "UplinkResolvers", "own_resolvers"]

log = logging.getLogger("storebox.dns")

Uplink = Literal["wired", "lte"]
#: The resolvers an uplink's interface was given (learnt), () when none are known.
Learn = Callable[[str], Awaitable[tuple[str, ...]]]

#: How old NetworkManager's answer may get before it is asked again (a DHCP renewal
#: that changes the resolvers is followed within this).
MAX_AGE_S = 5.0


def own_resolvers(config: Config, uplink: Uplink, learnt: tuple[str, ...] = (),
                  modem: tuple[str, ...] = ()) -> tuple[str, ...]:
    """`uplink`'s resolvers: configured, else `learnt` (NetworkManager's), else for LTE
    the `modem`'s (its data call's)."""
    link = config.wired if uplink == "wired" else config.lte
    return tuple(link.dns) or learnt or (modem if uplink == "lte" else ())


class UplinkResolvers:
    """The resolvers each uplink has now (`own`), learnt again as they change."""

    def __init__(self, config: Config, state: BoxState, learn: Learn | None = None, *,
                 max_age_s: float = MAX_AGE_S,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.state = state
        self._learn = learn
        self.max_age_s = max_age_s
        self._monotonic = monotonic
        self._learnt: dict[Uplink, tuple[str, ...]] = {"wired": (), "lte": ()}
        self._learnt_at: float | None = None

    def interface(self, uplink: Uplink) -> str:
        return (self.config.wired if uplink == "wired" else self.config.lte).interface

    def modem(self) -> tuple[str, ...]:
        """The resolvers of the modem's data call while it is up (the state's)."""
        modem = self.state.modem
        return tuple(modem.dns) if modem.data_up else ()

    def learnt(self, uplink: Uplink) -> tuple[str, ...]:
        """What NetworkManager last said `uplink` has."""
        return self._learnt[uplink]

    def own(self, uplink: Uplink) -> tuple[str, ...]:
        """`uplink`'s resolvers now (`own_resolvers`); never waits."""
        return own_resolvers(self.config, uplink, self._learnt[uplink], self.modem())

    def for_probes(self, uplink: Uplink) -> Callable[[], tuple[str, ...]]:
        """What `ProbeOptions.resolvers` of `uplink`'s probes reads."""
        return lambda: self.own(uplink)

    @property
    def polls(self) -> bool:
        """Whether anything is learnt by asking (NetworkManager); the modem's are not."""
        return self._learn is not None

    async def refresh(self) -> None:
        """Learn both uplinks' resolvers again when the last answer is `max_age_s` old."""
        if self._learn is None:
            return
        now = self._monotonic()
        if self._learnt_at is not None and now - self._learnt_at < self.max_age_s:
            return
        self._learnt_at = now
        uplinks: tuple[Uplink, ...] = ("wired", "lte")
        for uplink in uplinks:
            found = await self._learn(self.interface(uplink))
            if found != self._learnt[uplink]:
                log.info("%s's resolvers: %s", uplink, ", ".join(found) or "none learnt")
                self._learnt[uplink] = found

    async def follow(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
                     ) -> None:
        """Refresh every `max_age_s` for as long as it runs; returns at once when
        nothing is learnt by asking."""
        while self._learn is not None:
            await self.refresh()
            await sleep(self.max_age_s)

"""`ModemCore`: what the parts of a `Modem` (`hw.modem.sim`, `hw.modem.bearer`) see of it.

The `Modem` (`hw.modem.modem`) composes its parts and hands each itself as a `ModemCore`:
the AT port (its `command`, which waits out boots and retries busy answers), the vendor
profile, the timeouts, the one `ModemState` and the way to replace it. A part never takes
the modem's lock (the public operation that calls it holds it) and keeps no modem state
of its own: what it learns goes into the `ModemState` through `apply`.
"""

from __future__ import annotations

from typing import Final, Protocol

from hw.modem.errors import ParseError
from hw.modem.profiles import AtPort, GenericProfile, Timeouts
from hw.modem.state import ModemState

__all__ = ["REBOOT_RETRIES", "ModemCore"]

#: Reboots in a row a single command (or a multi-command read) rides out before its
#: `ModemRebooted` propagates (or the read gives up).
REBOOT_RETRIES: Final = 2


class ModemCore(AtPort, Protocol):
    """The modem as its parts use it (`hw.modem.modem.Modem` is the one)."""

    timeouts: Timeouts
    cid: int

    @property
    def profile(self) -> GenericProfile: ...

    @property
    def state(self) -> ModemState: ...

    @property
    def boots(self) -> int: ...

    @property
    def needs_init(self) -> bool: ...

    def mark_needs_init(self) -> None:
        """The modem reset silently (its URC settings are gone): `initialise()` again."""

    def parse_failed(self, exc: ParseError) -> None:
        """An answer did not parse: counted and reported; the last good value stays."""

    def apply(self, state: ModemState) -> None:
        """Make `state` the modem's state and wake whoever waits for a change."""

    async def pause(self) -> None:
        """Wait one settle poll (a SIM initialising, an address being assigned)."""

"""`ModemCore`: what the parts of a `Modem` (`hw.modem.sim`, `hw.modem.bearer`) see of it.

The `Modem` (`hw.modem.modem`) composes its parts and hands each itself as a `ModemCore`:
the AT port (its `command`, which waits out boots and retries busy answers), the vendor
profile, the timeouts, the one `ModemState` and the way to replace it. A part never takes
the modem's lock (the public operation that calls it holds it) and keeps no modem state
of its own: what it learns goes into the `ModemState` through `apply`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from hw.modem.channel import Response
from hw.modem.profiles import GenericProfile, Timeouts
from hw.modem.state import ModemState

__all__ = ["ModemCore"]


class ModemCore(Protocol):
    """The modem as its parts use it (`hw.modem.modem.Modem` is the one)."""

    timeouts: Timeouts
    cid: int

    @property
    def profile(self) -> GenericProfile: ...

    @property
    def state(self) -> ModemState: ...

    @property
    def boots(self) -> int: ...

    def apply(self, state: ModemState) -> None:
        """Make `state` the modem's state and wake whoever waits for a change."""

    async def pause(self) -> None:
        """Wait one settle poll (a SIM initialising, an address being assigned)."""

    async def command(
        self,
        command: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - AtChannel's per-command timeout
        prefix: str | Iterable[str] | None = None,
        payload: bytes | None = None,
    ) -> Response: ...

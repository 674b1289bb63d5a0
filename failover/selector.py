"""Uplink selection (pure, monotonic time injected).

``UplinkSelector`` picks ``wired | lte | none``: wired whenever usable
(up or degraded); LTE when wired is down and LTE is usable; none when neither
is (offline mode). Failback to wired needs wired good for ``failback_stable_s``
(30 s) — unless LTE itself is down, when any usable wired beats being offline.
Switches are decisions only; route control applies them make-before-break.
"""

from __future__ import annotations

import time

from failover.config import SelectorConfig
from failover.link import LinkStatus, Monotonic, Transition, TransitionKind, Uplink

__all__ = ["UplinkSelector"]


class UplinkSelector:
    """Chooses the active uplink among wired, lte and none (pure, time injected)."""

    def __init__(
        self, config: SelectorConfig | None = None, monotonic: Monotonic = time.monotonic
    ) -> None:
        self.config = config if config is not None else SelectorConfig()
        self._monotonic = monotonic
        self._started = monotonic()
        self._active = Uplink.NONE
        self._since = self._started
        self.history: list[Transition] = []

    @property
    def active(self) -> Uplink:
        return self._active

    @property
    def since(self) -> float:
        return self._since

    def lte_role(self, lte: LinkStatus) -> str:
        """The LTE state for the status JSON: ``standby`` when healthy and not carrying."""
        if self._active is not Uplink.LTE and lte.usable:
            return "standby"
        return lte.state.value

    def update(self, wired: LinkStatus, lte: LinkStatus) -> Transition | None:
        now = self._monotonic()
        active = self._active
        if active is Uplink.WIRED:
            if wired.usable:
                return None
            return self._active_down(wired, lte, TransitionKind.FAILOVER, Uplink.LTE)
        if active is Uplink.LTE:
            if not lte.usable:
                return self._active_down(
                    lte, wired, TransitionKind.FAILBACK, Uplink.WIRED, taken_over="; wired up"
                )
            stable = wired.stable_for(now)
            if wired.usable and stable >= self.config.failback_stable_s:
                return self._switch(
                    TransitionKind.FAILBACK, Uplink.WIRED, f"wired stable for {stable:.1f}s"
                )
            return None
        # offline (or booting)
        if wired.usable:
            return self._switch(TransitionKind.RECOVERED, Uplink.WIRED, f"wired {wired.state}")
        if lte.usable:
            booting = not self.history and not wired.known
            if booting and now - self._started < self.config.startup_grace_s:
                return None  # give the wired line its first verdict before settling on LTE
            return self._switch(
                TransitionKind.RECOVERED, Uplink.LTE, f"lte {lte.state}; wired: {wired.reason}"
            )
        return None

    def _active_down(self, down: LinkStatus, other: LinkStatus, kind: TransitionKind,
                     to: Uplink, *, taken_over: str = "") -> Transition:
        """The active uplink is `down`: `kind` to the other one (`to`) when it is usable
        (the reason ends in `taken_over`), offline mode when not (the reason names both)."""
        reason = f"{self._active} down: {down.reason}"
        if other.usable:
            return self._switch(kind, to, reason + taken_over)
        return self._switch(
            TransitionKind.OFFLINE_MODE, Uplink.NONE, f"{reason}; {to} down: {other.reason}"
        )

    def _switch(self, kind: TransitionKind, to: Uplink, reason: str) -> Transition:
        t = Transition(kind, self._active, to, reason, self._monotonic())
        self._active = to
        self._since = t.at
        self.history.append(t)
        return t

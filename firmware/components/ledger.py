"""Composes the outage ledger (`firmware.ledger.outages`): it follows the box state from
the start, in its own SQLite file under `device.state_dir`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from firmware.components.context import BoxContext
from firmware.config import Config
from firmware.ledger.outages import FILE, LedgerFollower, OutageLedger
from firmware.state import BoxState

__all__ = ["build_ledger", "isp_for"]

log = logging.getLogger("storebox.outages")


def isp_for(config: Config, state: BoxState) -> Callable[[str], str]:
    def isp(uplink: str) -> str:
        if uplink == "wired":
            return config.wired.isp or config.wired.carrier
        return state.modem.operator or ""

    return isp


async def build_ledger(context: BoxContext) -> None:
    """The ledger follows the state from now on; nothing to supervise (returns None)."""
    path = Path(context.config.device.state_dir) / FILE
    ledger = OutageLedger(path)
    follower = LedgerFollower(context.state, ledger, isp_for(context.config, context.state))
    context.state.on_change(follower)

    async def close() -> None:
        follower.closed = True
        ledger.close()

    context.closers.append(close)
    log.info("outage ledger: %s (%d outages, %d open)", path, ledger.total(),
             len(follower.open))

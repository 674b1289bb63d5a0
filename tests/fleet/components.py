"""A component for daemon tests (`debug.extra_components`): it sets the wired uplink's
state from `$SBX_TEST_WIRED` ("down": carrier lost; "up") when the daemon starts, as the
failover engine would, so that the outage ledger has something to record."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from typing import Any


class WiredFromEnv:
    name = "wired-from-env"

    async def run(self) -> None:
        await asyncio.Event().wait()


def wired_from_env(context: Any) -> WiredFromEnv:
    wanted = os.environ.get("SBX_TEST_WIRED", "up")
    wired = context.state.uplink.wired
    context.state.update(wired, state=wanted, carrier=wanted != "down",
                         reason="carrier lost" if wanted == "down" else None,
                         since=datetime.now(UTC))
    return WiredFromEnv()

"""The MQTT client both fleet ends use: aiomqtt's, with its waits kept cancellable.

aiomqtt (2.x) waits for every acknowledgement (CONNACK, PUBACK, SUBACK, the disconnect)
through `asyncio.wait_for`. On Python 3.11 `wait_for` drops a cancellation that arrives in
the same loop iteration as the awaited result: it returns the result and the task runs on
as if never cancelled (bpo-42130 / gh-86296; Python 3.12 rewrote `wait_for` on top of
`asyncio.timeout`). For us that was a stop that never ended: the agent was cancelled just
as a PUBACK arrived, went on serving, and whoever awaited it (the daemon's TaskGroup, a
test's teardown) waited for ever. `Client` waits through `asyncio.timeout` instead, which
never loses a cancellation, and raises aiomqtt's own "Operation timed out" as before.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from typing import TypeVar

import aiomqtt

T = TypeVar("T")


class Client(aiomqtt.Client):
    """`aiomqtt.Client` whose acknowledgement waits keep a cancellation (see above)."""

    async def _wait_for(self, fut: Awaitable[T], timeout: float | None) -> T:  # noqa: ASYNC109 (aiomqtt's signature)
        if timeout is None:
            timeout = self.timeout
        try:
            async with asyncio.timeout(None if timeout == math.inf else timeout):
                return await fut
        except TimeoutError:
            raise aiomqtt.MqttError("Operation timed out") from None


__all__ = ["Client"]

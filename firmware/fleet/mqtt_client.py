"""The MQTT client of the fleet agent and the fleet server: aiomqtt's, with waits that a
cancellation always ends.

aiomqtt waits for every broker answer (CONNACK, SUBACK, PUBACK, the end of a DISCONNECT)
with `asyncio.wait_for`. On Python 3.11 `wait_for` swallows a cancellation that arrives
in the loop iteration in which the answer arrives: it returns the answer instead of
raising CancelledError (CPython gh-86296, fixed in 3.12 by building `wait_for` on
`asyncio.timeout`). A stop that cancels a task publishing at that moment is lost; the
task goes on (the fleet agent's state publisher went back to waiting up to
`fleet.state_every_s` for the next change, then published again, for ever) and whoever
waits for it to end waits for ever: the hang of the fleet jobs test (#12). Here every
such wait sits in an `asyncio.timeout` scope instead, which delivers the cancellation.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

import aiomqtt

T = TypeVar("T")


class MqttClient(aiomqtt.Client):
    """`aiomqtt.Client`, its broker waits bounded by `timeout` and always cancellable."""

    async def _wait_for(self, fut: Awaitable[T], timeout: float | None) -> T:  # noqa: ASYNC109
        # (aiomqtt calls it with `timeout=`: its signature)
        if timeout is None:
            timeout = self.timeout
        try:
            async with asyncio.timeout(None if timeout == math.inf else timeout):
                return await fut
        except TimeoutError:
            raise aiomqtt.MqttError("Operation timed out") from None


def stopping() -> bool:
    """Whether the current task was asked to stop. A loop that retries on MqttError asks
    this before it retries: a cancellation that ended in an MqttError (aiomqtt's exit
    timing out while the task was being cancelled) is still a request to stop."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def cancel_all(tasks: Iterable[asyncio.Task[Any]], recancel_s: float = 1.0) -> None:
    """Cancel `tasks` and wait until every one has ended. One still running after
    `recancel_s` is cancelled again: asyncio delivers a cancellation once, and a library
    that swallows it (above) must not make a stop wait for ever. For tasks whose own
    clean-up takes less than `recancel_s`."""
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=recancel_s)
    await asyncio.gather(*tasks, return_exceptions=True)  # their exceptions: retrieved


__all__ = ["MqttClient", "cancel_all", "stopping"]

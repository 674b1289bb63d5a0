"""`firmware.fleet.mqtt.Client`: aiomqtt's client with acknowledgement waits that never
drop a cancellation (the reason: the module's docstring)."""

from __future__ import annotations

import asyncio
import inspect
import sys

import aiomqtt
import pytest

from firmware.fleet.mqtt import Client


async def _cancelled_as_it_completes(client: aiomqtt.Client) -> str:
    """Cancel a task waiting on `client._wait_for` in the loop iteration its wait ends."""
    done = asyncio.Event()

    async def waiter() -> str:
        await client._wait_for(done.wait(), timeout=10)
        return "ran on"

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0)  # the waiter is inside the wait
    done.set()
    task.cancel()
    try:
        return await task
    except asyncio.CancelledError:
        return "cancelled"


async def test_a_cancel_that_arrives_with_the_acknowledgement_is_kept() -> None:
    assert await _cancelled_as_it_completes(Client("127.0.0.1", 1)) == "cancelled"


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for keeps it from 3.12 on")
async def test_plain_aiomqtt_drops_that_cancel_on_this_python() -> None:
    """Why the subclass exists: the box's stop hung on exactly this (CI, test_fleet)."""
    assert await _cancelled_as_it_completes(aiomqtt.Client("127.0.0.1", 1)) == "ran on"


async def test_a_wait_past_its_timeout_is_aiomqtts_own_error() -> None:
    client = Client("127.0.0.1", 1)
    with pytest.raises(aiomqtt.MqttError, match="Operation timed out"):
        await client._wait_for(asyncio.Event().wait(), timeout=0.01)


async def test_the_override_still_matches_aiomqtt() -> None:
    """aiomqtt waits through `_wait_for`: a release that renames it fails here, not in a
    stop that hangs."""
    assert Client._wait_for is not aiomqtt.Client._wait_for
    for method in (aiomqtt.Client.publish, aiomqtt.Client.subscribe,
                   aiomqtt.Client.__aenter__, aiomqtt.Client.__aexit__):
        assert "self._wait_for(" in inspect.getsource(inspect.unwrap(method)), method

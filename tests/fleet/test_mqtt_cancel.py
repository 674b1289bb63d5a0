"""A stop always ends: the fleet's MQTT waits cannot swallow a cancellation
(`firmware.fleet.mqtt_client`; the hang of test_cli_cmd_follows_the_job_..., #12).

On Python 3.11 aiomqtt's own client returns from a publish or a subscribe that is
cancelled in the loop iteration in which the broker's answer arrives, as if nothing had
been asked; these tests cancel at exactly that moment (from paho's callback for the
answer, and a few loop iterations later), against a real mosquitto."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from firmware.fleet.mqtt_client import MqttClient, cancel_all
from firmware.state import BoxState
from tests.firmware.test_fleet import fleet_box
from tests.support.mosquitto import Mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    with Mosquitto(tmp_path) as b:
        yield b


def later(hops: int, action: Callable[[], None]) -> None:
    """`action` after `hops` more turns of the loop (0: now)."""
    if hops == 0:
        action()
        return
    asyncio.get_running_loop().call_soon(later, hops - 1, action)


def on_answer(client: MqttClient, callback: str, hops: int,
              action: Callable[[], None]) -> None:
    """Run `action` (`hops` loop turns) after paho's `callback` (on_publish: a PUBACK,
    on_subscribe: a SUBACK) has handed the broker's answer to aiomqtt."""
    paho = client._client
    original = getattr(paho, callback)

    def hooked(*args: Any) -> None:
        original(*args)
        later(hops, action)

    setattr(paho, callback, hooked)


@pytest.mark.parametrize("call", ["publish", "subscribe"])
async def test_a_request_cancelled_as_the_broker_answers_is_cancelled(
        broker: Mosquitto, call: str) -> None:
    async with MqttClient("127.0.0.1", broker.port) as client:
        task: asyncio.Task[Any]
        on_answer(client, f"on_{call}", 0, lambda: task.cancel())
        request = client.publish("t/x", b"x", qos=1) if call == "publish" else \
            client.subscribe("t/#", qos=1)
        task = asyncio.create_task(request)  # type: ignore[arg-type]
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(10):
                await task
        assert task.cancelled()


@pytest.mark.parametrize("hops", [0, 1, 2, 3, 4])
async def test_an_agent_stopped_as_its_state_is_acknowledged_stops(
        tmp_path: Path, broker: Mosquitto, hops: int) -> None:
    async with fleet_box(tmp_path, broker.url) as box:
        await box.link("up")
        assert box.task is not None and box.agent.client is not None
        run = box.task
        seen = box.agent.states_published
        on_answer(box.agent.client, "on_publish", hops, run.cancel)  # type: ignore[arg-type]
        box.state.touch()  # a new state goes out; its PUBACK stops the agent
        done, _ = await asyncio.wait([run], timeout=10)
        assert done, "the agent did not stop"
        assert box.agent.states_published > seen
        assert box.state.fleet.link == "down"
        box.task = None


async def test_cancel_all_cancels_again_a_task_that_swallowed_the_first() -> None:
    state = BoxState("t", "1")
    swallowed = []

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.append(1)  # as wait_for on 3.11 may
        await state.wait_changed(state.revision)  # never changes

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    async with asyncio.timeout(10):
        await cancel_all([task], recancel_s=0.05)
    assert swallowed == [1] and task.cancelled()


def test_the_product_makes_its_mqtt_clients_with_mqtt_client() -> None:
    """Every client of the fleet agent and the fleet server is an MqttClient: aiomqtt's
    own would bring the swallowed cancellation back."""
    root = Path(__file__).resolve().parents[2] / "firmware"
    direct = [str(p.relative_to(root)) for p in root.rglob("*.py")
              if "aiomqtt.Client(" in p.read_text(encoding="utf-8")]
    assert direct == []

from __future__ import annotations

import asyncio

import pytest

from firmware.state import BoxState
from firmware.supervisor import Backoff, Supervisor
from tests.support.clock import ManualClock
from tests.support.components import Crashing


class RecordingClock(ManualClock):
    """The shared test clock, remembering every sleep the supervisor asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await super().sleep(seconds)


async def test_crashing_component_is_restarted_with_backoff_and_reported() -> None:
    state = BoxState("t", "0")
    clock = RecordingClock()
    supervisor = Supervisor(state, Backoff(initial_s=1.0, cap_s=8.0), sleep=clock.sleep,
                            monotonic=clock.monotonic)
    component = Crashing()
    task = asyncio.create_task(supervisor.supervise(component))
    seen = state.revision
    while component.runs < 3:
        seen = await state.wait_changed(seen)
    status = state.components["crashy"]
    assert status.state == "running"
    assert status.restarts == 2
    assert status.last_error == "RuntimeError: boom 2"
    # full jitter within [ceiling/2, ceiling]: attempt 1 → ≤1 s, attempt 2 → ≤2 s
    assert 0.5 <= clock.sleeps[0] <= 1.0
    assert 1.0 <= clock.sleeps[1] <= 2.0
    events = [e for e in state.events.recent() if e.kind == "component_restarted"]
    assert [e.data["restarts"] for e in events] == [1, 2]
    assert events[0].severity == "error"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert status.state == "stopped"


def test_backoff_is_capped() -> None:
    backoff = Backoff(initial_s=1.0, cap_s=10.0)
    assert backoff.delay(20, rand=lambda: 1.0) == 10.0
    assert backoff.delay(20, rand=lambda: 0.0) == 5.0
    assert backoff.delay(3, rand=lambda: 1.0) == 4.0


async def test_backoff_resets_after_a_healthy_run() -> None:
    state = BoxState("t", "0")
    clock = RecordingClock()

    class SlowCrash:
        name = "slow"
        runs = 0

        async def run(self) -> None:
            self.runs += 1
            clock.advance(120.0)  # ran healthily for two minutes, then failed
            if self.runs <= 3:
                raise OSError("link lost")
            await asyncio.Event().wait()

    supervisor = Supervisor(state, Backoff(initial_s=1.0, cap_s=60.0, healthy_after_s=60.0),
                            sleep=clock.sleep, monotonic=clock.monotonic)
    comp = SlowCrash()
    task = asyncio.create_task(supervisor.supervise(comp))
    seen = state.revision
    while comp.runs < 4:
        seen = await state.wait_changed(seen)
    assert all(delay <= 1.0 for delay in clock.sleeps)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

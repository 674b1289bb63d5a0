"""Exactly once in effect, with a misbehaving gateway and the queue draining under load."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from lab.gateway_sim import Faults
from tests.support.box import Box, eventually, payment_body, store_box
from tests.support.crash_drill import OFFLINE_LIMITS, random_pan


async def pay_many(box: Box, prefix: str, count: int, rng: random.Random,
                   concurrency: int = 8) -> dict[str, dict]:  # type: ignore[type-arg]
    answers: dict[str, dict] = {}  # type: ignore[type-arg]
    slots = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with slots:
            body = payment_body(rng.randrange(100, 40000), pan=random_pan(rng))
            answer = await box.pay(body, key=f"{prefix}-{i}")
            assert answer.status == 200, answer.body
            answers[answer.body["id"]] = answer.body

    await asyncio.gather(*(one(i) for i in range(count)))
    return answers


async def test_lossy_gateway_and_concurrent_drain_forward_each_payment_once(
        netns: str, tmp_path: Path) -> None:
    rng = random.Random(25)
    faults = Faults(drop_answers=0.2, fail_5xx=0.1)
    async with store_box(netns, tmp_path, faults=faults, payments=OFFLINE_LIMITS) as box:
        answers = await pay_many(box, "lossy", 150, rng)
        statuses = [a["status"] for a in answers.values()]
        assert statuses.count("approved") > 50
        # 5xx stood in, and dropped answers whose replays (payments.online_replays) were
        # dropped as well; most dropped answers came back by a replay
        assert statuses.count("approved_offline") > 5
        # the gateway goes away and comes back while the POS keeps paying and the
        # forwarder drains: new offline payments join a queue that is being emptied
        await box.sim.set_faults(down=True, down_mode="refuse")
        answers |= await pay_many(box, "down", 40, rng)
        await box.sim.set_faults(down=False)
        await box.drain()
        answers |= await pay_many(box, "during-drain", 60, rng)
        await box.drain()
        await box.sim.set_faults(drop_answers=0.0, fail_5xx=0.0)

        async def drained() -> bool:
            stats = (await box.get("/v1/queue?limit=1")).body["stats"]
            return stats["count"] == 0  # type: ignore[no-any-return]

        await eventually(drained, timeout=60, what="the queue to drain")
        owed = {pid for pid, a in answers.items()
                if a["status"] in ("approved", "approved_offline")}
        arrived = {a.payment_id for a in box.sim.authorizations()}
        assert owed - arrived == set(), "approved payments that never reached the gateway"
        assert arrived - owed == set(), "payments the POS never saw approved"
        assert [p for p in arrived if box.sim.processed_count(p) != 1] == []
        stats = box.sim.stats()
        assert stats.conflicts_422 == 0
        assert stats.dropped_answers > 0 and stats.injected_5xx > 0 and stats.replays > 0

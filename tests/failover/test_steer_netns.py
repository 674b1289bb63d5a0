"""Steering in a shop of namespaces: the box's own gateway traffic by LTE in a brownout,
another destination and the LAN on wired, and back (failover/steering.py)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

import pytest

from failover.link import TransitionKind
from failover.routes import Uplink
from failover.routes_netlink import NetlinkRoutes
from failover.steer import SteerChange, SteerConfig, SteerPolicy
from failover.steering import Steering, SteerRoutes
from lab.latency import add_latency
from lab.shop import LAN_CLIENT, OTHER_IP, route_dev
from tests.failover.conftest import GATEWAY_IP, LTE_ADDR, WIRED_ADDR, build_shop, connect
from tests.failover.enginelab import UPLINKS, clear_faults, echo, running_engine
from tests.failover.netlab import blackhole, random_loss

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]

LTE = Uplink("lte", "wwan0")


async def test_steer_routes_move_only_the_gateway_of_the_box() -> None:
    with build_shop() as shop:
        routes = SteerRoutes(LTE, netns=shop.box)
        try:
            kept, seen = connect(shop.box, GATEWAY_IP)  # a kept-alive connection, on wired
            assert seen == WIRED_ADDR
            before = await routes.lte_bytes()
            await routes.steer([GATEWAY_IP])
            assert route_dev(shop.box, GATEWAY_IP) == "wwan0"
            assert route_dev(shop.box, OTHER_IP) == "wan0"
            # the LAN's traffic to the gateway is not the box's own: it stays on wired
            assert route_dev(shop.box, GATEWAY_IP, "from", LAN_CLIENT, "iif", "lan0") == "wan0"
            # a device-bound socket (the wired probes) keeps its device
            assert route_dev(shop.box, GATEWAY_IP, "oif", "wan0") == "wan0"
            assert connect(shop.box, GATEWAY_IP)[1] == LTE_ADDR
            assert connect(shop.box, OTHER_IP)[1] == WIRED_ADDR
            # the connection opened over wired was closed: the next request reconnects
            with pytest.raises(OSError):
                await echo(kept, timeout=2.0)
            kept.close()
            after = await routes.lte_bytes()
            assert before is not None and after is not None and after > before
            assert (await routes.describe())["rules"] == [
                f"to {GATEWAY_IP}/32 iif lo lookup 2002"]
            await routes.steer([GATEWAY_IP, "203.0.113.0/24"])  # idempotent, adds one
            assert route_dev(shop.box, OTHER_IP) == "wwan0"
            await routes.unsteer()
            assert route_dev(shop.box, GATEWAY_IP) == "wan0"
            assert connect(shop.box, GATEWAY_IP)[1] == WIRED_ADDR
            assert (await routes.describe())["rules"] == []
        finally:
            await routes.unsteer()
            await routes.close()


async def test_engine_steers_in_a_brownout_and_back() -> None:
    """60 % of exchanges lost on wired (37 % each way): the engine stays on wired, the
    box's gateway traffic moves to LTE; healed, it comes back after unsteer_after_s."""
    changes: list[tuple[SteerChange, Sequence[str]]] = []

    async def destinations() -> list[str]:
        return [GATEWAY_IP]

    with build_shop() as shop:
        routes = NetlinkRoutes(UPLINKS, netns=shop.box)
        policy = SteerPolicy(SteerConfig(steer_after_s=2.0, unsteer_after_s=3.0,
                                         steer_min_interval_s=1.0, window_s=3.0))
        steering = Steering(policy, SteerRoutes(LTE, netns=shop.box), destinations,
                            on_steer=lambda c, d, _b: changes.append((c, d)),
                            account_interval_s=0.5)
        try:
            async with running_engine(shop, routes, steering=steering) as lab:
                random_loss(shop.isp_wired, "cust0", 37)
                await lab.wait_for(lambda: bool(changes), 20.0)
                await asyncio.sleep(0.2)
                assert changes[0][0].steered and changes[0][1] == [GATEWAY_IP]
                assert route_dev(shop.box, GATEWAY_IP) == "wwan0"
                assert route_dev(shop.box, OTHER_IP) == "wan0"
                assert connect(shop.box, GATEWAY_IP)[1] == LTE_ADDR
                assert lab.engine.active.value == "wired"
                await asyncio.sleep(1.5)
                assert lab.engine.describe()["lte_standby"]["steered_bytes"] > 0
                clear_faults(shop.isp_wired)
                await lab.wait_for(lambda: len(changes) >= 2, 20.0)
                await asyncio.sleep(0.2)
                assert not changes[1][0].steered
                assert route_dev(shop.box, GATEWAY_IP) == "wan0"
                assert connect(shop.box, GATEWAY_IP)[1] == WIRED_ADDR
                assert lab.engine.describe()["steer"]["steers"] == 1
                assert lab.errors == []
        finally:
            await routes.close()


async def test_latency_steers_and_a_failback_to_the_slow_line_steers_again_at_once() -> None:
    """+0.5 s on wired (under the rounds detector's 1 s deadline, over steer_latency_ms):
    steered by latency. A blackhole on top fails everything over (unsteered); lifted,
    with the latency still on, the failback comes and the gateway is steered again at
    that moment, steer_min_interval_s (300 s) notwithstanding (failover/steer.py)."""
    changes: list[tuple[SteerChange, Sequence[str]]] = []

    async def destinations() -> list[str]:
        return [GATEWAY_IP]

    with build_shop() as shop:
        routes = NetlinkRoutes(UPLINKS, netns=shop.box)
        policy = SteerPolicy(SteerConfig(steer_after_s=2.0, window_s=3.0))
        steering = Steering(policy, SteerRoutes(LTE, netns=shop.box), destinations,
                            on_steer=lambda c, d, _b: changes.append((c, d)))
        try:
            async with running_engine(shop, routes, steering=steering) as lab:
                await asyncio.to_thread(add_latency, shop.isp_wired, "cust0", 0.5)
                await lab.wait_for(lambda: bool(changes), 20.0)
                assert changes[0][0].steered and "wired latency" in changes[0][0].reason
                assert lab.engine.active.value == "wired"
                blackhole(shop.isp_wired, "cust0")  # beside the latency
                failover, _ = await lab.wait_transition(TransitionKind.FAILOVER, 10.0)
                assert [c.steered for c, _ in changes] == [True, False]
                random_loss(shop.isp_wired, "cust0", 0)  # the blackhole lifted, slow still
                failback, _ = await lab.wait_transition(TransitionKind.FAILBACK, 30.0,
                                                        after=failover)
                await lab.wait_for(lambda: len(changes) >= 3, 5.0)
                again = changes[2][0]
                assert again.steered and "after the failback" in again.reason
                assert again.at - failback < 1.0
                assert lab.engine.active.value == "wired"
                assert route_dev(shop.box, GATEWAY_IP) == "wwan0"
                assert lab.errors == []
        finally:
            clear_faults(shop.isp_wired)
            await routes.close()

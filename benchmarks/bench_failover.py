"""Failover benchmarks: fault to LAN traffic via LTE, false failovers, failback, LTE standby.

Run with `make bench`. One shop in namespaces (tests/failover/enginelab.py): the engine
with real probes (TCP, DNS, ICMP; quorum 2 of 3), NetlinkRoutes, nft LAN forwarding and
conntrack; production monitor settings except the recovery windows (3 s instead of
30 s, to keep the run short; they do not affect detection). A LAN client opens a
connection to the payment gateway every 50 ms and reads which uplink carried it.

* blackhole (KT 2021: link up, nothing passes) and link down (the ISP's port dies):
  time from the fault to the first LAN request that completed through LTE, median and
  max over STOREBOX_BENCH_FAILOVER_RUNS runs (default 10), at a random phase of the
  probe schedule;
* failed LAN requests across every failback of those runs (and how many of them
  started outside the window between the route move and the nft apply);
* false failovers during STOREBOX_BENCH_LOSS_S (default 300) seconds of 20 % random
  loss each way on the wired line;
* LTE standby: the interval the budget allows, the measured bytes of an LTE round, the
  bytes per hour and per month that makes, and what standby actually spent under loss.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time

import pytest

from benchmarks.report import percentile, record
from failover.decision import LinkState, TransitionKind
from failover.routes_netlink import NetlinkRoutes
from tests.failover.conftest import build_shop
from tests.failover.enginelab import (
    UPLINKS,
    Harness,
    clear_faults,
    running_engine,
    set_link,
)
from tests.failover.netlab import blackhole, nft_drops, random_loss

pytestmark = pytest.mark.timeout(3600)
RUNS = int(os.environ.get("STOREBOX_BENCH_FAILOVER_RUNS", "10"))
LOSS_S = float(os.environ.get("STOREBOX_BENCH_LOSS_S", "300"))


async def _fault_run(lab: Harness, kind: str, rng: random.Random,
                     failbacks: list[tuple[int, int, int]]) -> tuple[float, float]:
    """One fault and its recovery: (fault -> decision applied, fault -> LAN via LTE)."""
    shop = lab.shop
    # A random phase against the 0.5 s probe schedule (the bench's only deliberate wait).
    await _pause(1.0 + rng.uniform(0.0, 0.5))
    t0 = time.monotonic()
    if kind == "blackhole":
        blackhole(shop.isp_wired, "cust0")
    else:
        set_link(shop.isp_wired, "cust0", False)
    at, _ = await lab.wait_transition(TransitionKind.FAILOVER, 10.0, after=t0)
    via_lte = await lab.client.wait_via("lte", t0, 10.0)
    t1 = time.monotonic()
    if kind == "blackhole":
        clear_faults(shop.isp_wired)
    else:
        set_link(shop.isp_wired, "cust0", True)
    back, _ = await lab.wait_transition(TransitionKind.FAILBACK, 20.0, after=t1)
    via_wired = await lab.client.wait_via("wired", back, 5.0)
    end = via_wired.finished + 1.0
    await lab.client.wait_done(end, timeout=5.0)
    start, done = lab.switch_log.window("wired", t1)
    across = lab.client.between(t1, end)
    failed = [r for r in across if not r.ok]
    outside = [r for r in failed if not start - 0.005 <= r.started <= done]
    for r in failed:
        print(f"failback failure: started {r.started - start:+.3f} s after the route move "
              f"(nft done {done - start:+.3f} s), took {r.finished - r.started:.3f} s: "
              f"{r.error}")
    failbacks.append((len(across), len(failed), len(outside)))
    return at - t0, via_lte.finished - t0


async def _pause(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def test_failover_benchmarks() -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CI runs as root)")
    rng = random.Random(2021)
    rows: list[tuple[str, object, str]] = []
    failbacks: list[tuple[int, int, int]] = []
    with build_shop() as shop:
        routes = NetlinkRoutes(UPLINKS, netns=shop.box)
        try:
            async with running_engine(shop, routes) as lab:
                for kind, target in (("blackhole", 3.0), ("link down", 1.0)):
                    decided: list[float] = []
                    flowing: list[float] = []
                    for _ in range(RUNS):
                        d, f = await _fault_run(lab, kind, rng, failbacks)
                        decided.append(d)
                        flowing.append(f)
                    print(f"\n{kind}: LAN via LTE after {[round(x, 3) for x in flowing]}")
                    rows += [
                        (f"{kind} -> LAN via LTE, median (s, n={RUNS})",
                         statistics.median(flowing), f"<= {target:g} s"),
                        (f"{kind} -> LAN via LTE, max (s)", max(flowing), ""),
                        (f"{kind} -> LAN via LTE, p90 (s)", percentile(flowing, 90), ""),
                        (f"{kind} -> switch applied, median (s)", statistics.median(decided),
                         ""),
                    ]
                requests = sum(a for a, _, _ in failbacks)
                failed = sum(f for _, f, _ in failbacks)
                outside = sum(o for _, _, o in failbacks)
                rows += [
                    (f"failed LAN requests across {len(failbacks)} failbacks", failed,
                     f"target 0 (of {requests} requests)"),
                    ("  of which outside the route->nft window", outside, "0"),
                    ("failbacks with a failed request", sum(1 for _, f, _ in failbacks if f),
                     ""),
                ]

                # 20 % random loss on the wired line: nothing may fail over.
                t0 = time.monotonic()
                idle0 = lab.engine.standby_bytes
                rounds0 = len(lab.rounds["wired"])
                random_loss(shop.isp_wired, "cust0", 20)
                await _pause(LOSS_S)
                elapsed = time.monotonic() - t0
                dropped = nft_drops(shop.isp_wired)
                clear_faults(shop.isp_wired)
                wired_rounds = [o for _, o in lab.rounds["wired"][rounds0:]]
                false_failovers = sum(1 for k in lab.kinds(after=t0)
                                      if k is TransitionKind.FAILOVER)
                downs = sum(1 for at, n, s in lab.links
                            if at >= t0 and n == "wired" and s.state is LinkState.DOWN)
                rows += [
                    (f"false failovers in {elapsed / 60:.1f} min of 20% loss", false_failovers,
                     "target 0"),
                    ("  wired declared down", downs, "0"),
                    ("  failed rounds / rounds",
                     f"{sum(1 for r in wired_rounds if not r.ok)}/{len(wired_rounds)}", ""),
                    ("  failed probes",
                     sum(r.attempted - r.succeeded for r in wired_rounds),
                     f"{dropped} packets dropped"),
                ]

                # LTE standby: what the budget allows and what it costs.
                state = lab.engine.describe()["lte_standby"]
                lte_ok = [o for _, o in lab.rounds["lte"] if o.ok]
                per_round = statistics.mean(o.bytes_sent + o.bytes_received for o in lte_ok)
                interval = state["interval_s"]
                per_hour = per_round * 3600 / interval
                spent_per_hour = (lab.engine.standby_bytes - idle0) * 3600 / elapsed
                rows += [
                    ("LTE standby interval (s)", float(interval), "budget 5 MB/month"),
                    ("LTE round, measured (bytes)", per_round,
                     f"estimate {state['bytes_per_round']:.0f}"),
                    ("LTE standby probe bytes per hour", per_hour, "<= 6845 (5 MB/month)"),
                    ("LTE standby probe MB per month", per_hour * 24 * 30.4375 / 1e6,
                     "<= 5"),
                    ("LTE idle probe bytes/hour spent during the loss phase", spent_per_hour,
                     "standby rounds + fresh rounds while wired is suspect"),
                ]
                assert lab.errors == [], lab.errors
        finally:
            await routes.close()
    record("failover", rows)

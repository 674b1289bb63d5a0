"""Failover benchmarks: fault to LAN traffic via LTE, false failovers, failback, LTE standby.

Run with `make bench`. Both down tests of the wired line, one after the other in the same
run (`probes.detector`: "rounds", 4 failed rounds of 0.5 s; "sequential", the CUSUM of
`failover.sequential` on 0.2 s rounds with 4 tries per probe), each in a fresh shop of
namespaces (tests/failover/enginelab.py): the engine with real probes (TCP, DNS, ICMP;
quorum 2 of 3), NetlinkRoutes, nft LAN forwarding and conntrack; production monitor
settings except the recovery windows (3 s instead of 30 s, to keep the run short; they
do not affect detection). A LAN client opens a connection to the payment gateway every
50 ms and reads which uplink carried it.

* blackhole (KT 2021: link up, nothing passes), link down (the ISP's port dies) and a
  partial blackhole (the gateway, 198.51.100.10, unreachable via wired: 2 of the 3
  probe targets and the LAN's traffic; the DNS target fine): time from the fault to
  the first LAN request that completed through LTE, median, p95 and max over
  STOREBOX_BENCH_FAILOVER_RUNS runs (default 40; STOREBOX_BENCH_OTHER_RUNS, default 10,
  for link down and the partial blackhole), at a random phase of the probe schedule;
* failed LAN requests across every failback of those runs (and how many of them
  started outside the window between the route move and the nft apply);
* false failovers during STOREBOX_BENCH_LOSS_S (default 120) seconds each of 20 % and
  40 % random loss each way on the wired line, and of bursty loss (Gilbert-Elliott:
  total loss for exponential periods of mean 0.2 s, lossless ones of mean 2 s between,
  made by switching an nft blackhole);
* DNS-only failure (a carrier's resolver dies): the wired ISP drops every DNS query to
  the resolver that serves the gateway's name (198.51.100.53, the DNS probe target);
  TCP and ICMP targets by IP and the LAN's traffic are fine. For STOREBOX_BENCH_DNS_S
  (default 30) seconds: no failover (LTE would not bring the IP targets back, and the
  LAN's own DNS following the uplink is the LAN resolver's job), wired `degraded`, the
  LAN's requests by IP on wired without a failure;
* STOREBOX_BENCH_DETECTORS (default "rounds,sequential") picks the detectors to run,
  STOREBOX_BENCH_FAULTS (default "blackhole,link down,partial blackhole,dns only") the
  faults and STOREBOX_BENCH_LOSSES (default "20%,40%,bursty") the loss phases: e.g. 10
  real minutes of 20 % loss alone with STOREBOX_BENCH_FAULTS= STOREBOX_BENCH_LOSSES=20%
  STOREBOX_BENCH_LOSS_S=600;
* LTE standby: the interval the budget allows, the measured bytes of an LTE round, the
  bytes per hour and per month that makes, and what standby actually spent under loss;
* brownout (`test_brownout_benchmark`, each detector in a fresh shop, steering with the
  `[steer]` defaults): STOREBOX_BENCH_BROWNOUT_S (default 300) seconds of a brownout on
  wired, while the box makes an "online payment" to the gateway every 0.5 s (TCP
  connect, the server's greeting, one echoed line; 3 s deadline,
  `payments.online_deadline_s`): the payments' p95 latency over the whole brownout,
  the steers, failovers and failbacks in it, another destination's route, and after the
  heal the time until the gateway's traffic is back on wired. STOREBOX_BENCH_BROWNOUTS
  (default "60% loss,+2 s latency,+0.5 s latency") picks them: 60 % exchange loss (37 % each way,
  random: steered, the rest of the shop stays on wired) and +2 s on every round trip
  (`lab.latency`: each packet from the box held 2 s at the ISP; "+S s latency" for
  another S). A probe answered after 2 s is past its deadline (1 s rounds, 0.6 s
  sequential), so every probe fails and the detector says down: a failover, not a steer
  (failover/steer.py, "Latency"); "+0.5 s latency" is under both deadlines and over
  `steer_latency_ms`: steered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import statistics
import time

import pytest

from benchmarks.report import percentile, record
from failover.config import MonitorConfig
from failover.decision import detection_time_bounds_s
from failover.link import LinkState, TransitionKind
from failover.probes.options import ProbeOptions
from failover.routes import Uplink
from failover.routes_netlink import NetlinkRoutes
from failover.sequential import SEQUENTIAL_RETRY_AFTER_S, sequential_monitor
from failover.steer import SteerChange, SteerPolicy
from failover.steering import Steering, SteerRoutes
from lab.faults import FAULT_TABLE, nft
from lab.latency import Latency, add_latency
from lab.shop import OTHER_IP, PORT, WIRED_ADDR, Shop, recv_line, route_dev
from tests.failover.conftest import GATEWAY_IP, LTE_ADDR, build_shop
from tests.failover.enginelab import (
    MONITOR,
    UPLINKS,
    Harness,
    clear_faults,
    running_engine,
    set_link,
)
from tests.failover.netlab import RESOLVER, blackhole, nft_drops, random_loss
from tests.support.netns import inside

pytestmark = pytest.mark.timeout(3600)
RUNS = int(os.environ.get("STOREBOX_BENCH_FAILOVER_RUNS", "40"))
OTHER_RUNS = int(os.environ.get("STOREBOX_BENCH_OTHER_RUNS", "10"))
LOSS_S = float(os.environ.get("STOREBOX_BENCH_LOSS_S", "120"))
BROWNOUT_S = float(os.environ.get("STOREBOX_BENCH_BROWNOUT_S", "300"))
BROWNOUT_EACH_WAY = 37  # % each way: 1 - 0.63² = 60 % of exchanges lost
BROWNOUTS = [b for b in os.environ.get(
    "STOREBOX_BENCH_BROWNOUTS", "60% loss,+2 s latency,+0.5 s latency").split(",") if b]
PAYMENT_DEADLINE_S = 3.0
DNS_S = float(os.environ.get("STOREBOX_BENCH_DNS_S", "30"))
FAULTS = [f for f in os.environ.get(
    "STOREBOX_BENCH_FAULTS", "blackhole,link down,partial blackhole,dns only").split(",") if f]
LOSSES = [w for w in os.environ.get("STOREBOX_BENCH_LOSSES", "20%,40%,bursty").split(",") if w]
BURST_BAD_S, BURST_GOOD_S = 0.2, 2.0
FAULT_RUNS = {"blackhole": (RUNS, "median <= 1.6 s, p95 <= 2.0 s"),
              "link down": (OTHER_RUNS, "<= 1 s"), "partial blackhole": (OTHER_RUNS, "")}
SEQUENTIAL = sequential_monitor(stable_s=MONITOR.stable_s)
DETECTORS: dict[str, tuple[MonitorConfig, ProbeOptions]] = {
    "rounds": (MONITOR, ProbeOptions(dns_servers=())),
    "sequential": (SEQUENTIAL, ProbeOptions(dns_servers=(), attempts=SEQUENTIAL.attempts,
                                            retry_after_s=SEQUENTIAL_RETRY_AFTER_S)),
}


def partial_blackhole(ns: str, ifname: str, address: str) -> None:
    """Only `address` is unreachable from the box through this ISP (both ways)."""
    nft(ns, f"""
        table inet {FAULT_TABLE}
        delete table inet {FAULT_TABLE}
        table inet {FAULT_TABLE} {{
          chain in {{ type filter hook prerouting priority -300; policy accept;
            iifname "{ifname}" ip daddr {address} counter drop
          }}
        }}
        """)


def dns_only_failure(ns: str, ifname: str) -> None:
    """The resolver (the DNS probe target, which serves the gateway's name) unreachable
    through this ISP: its DNS queries dropped; everything by IP passes."""
    nft(ns, f"""
        table inet {FAULT_TABLE}
        delete table inet {FAULT_TABLE}
        table inet {FAULT_TABLE} {{
          chain in {{ type filter hook prerouting priority -300; policy accept;
            iifname "{ifname}" ip daddr {RESOLVER} meta l4proto {{ tcp, udp }} th dport 53 \
              counter drop
          }}
        }}
        """)


async def bursty_loss(ns: str, ifname: str, rng: random.Random, stop: asyncio.Event,
                      bursts: list[float], drops: list[int]) -> None:
    """Gilbert-Elliott with a lossless good state and a total-loss bad state."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(rng.expovariate(1 / BURST_GOOD_S)):
                await stop.wait()
        if stop.is_set():
            break
        bad = rng.expovariate(1 / BURST_BAD_S)
        bursts.append(bad)
        await asyncio.to_thread(blackhole, ns, ifname)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(bad):
                await stop.wait()
        drops.append(await asyncio.to_thread(nft_drops, ns))
        await asyncio.to_thread(clear_faults, ns)


async def _fault_run(lab: Harness, kind: str, rng: random.Random,
                     failbacks: list[tuple[int, int, int]]) -> tuple[float, float]:
    """One fault and its recovery: (fault -> decision applied, fault -> LAN via LTE)."""
    shop = lab.shop
    # A random phase against the 0.5 s probe schedule (the bench's only deliberate wait).
    await _pause(1.0 + rng.uniform(0.0, 0.5))
    t0 = time.monotonic()
    if kind == "blackhole":
        blackhole(shop.isp_wired, "cust0")
    elif kind == "partial blackhole":
        partial_blackhole(shop.isp_wired, "cust0", GATEWAY_IP)
    else:
        set_link(shop.isp_wired, "cust0", False)
    at, _ = await lab.wait_transition(TransitionKind.FAILOVER, 10.0, after=t0)
    via_lte = await lab.client.wait_via("lte", t0, 10.0)
    t1 = time.monotonic()
    if kind == "link down":
        set_link(shop.isp_wired, "cust0", True)
    else:
        clear_faults(shop.isp_wired)
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


async def _loss_phase(lab: Harness, what: str, rng: random.Random) -> list[tuple[str, object, str]]:
    """LOSS_S seconds of `what` on the wired line: nothing may fail over."""
    shop = lab.shop
    t0 = time.monotonic()
    rounds0 = len(lab.rounds["wired"])
    bursts: list[float] = []
    drops: list[int] = []
    if what == "bursty":
        stop = asyncio.Event()
        task = asyncio.create_task(
            bursty_loss(shop.isp_wired, "cust0", rng, stop, bursts, drops))
        await _pause(LOSS_S)
        stop.set()
        await task
    else:
        random_loss(shop.isp_wired, "cust0", int(what.rstrip("%")))
        await _pause(LOSS_S)
    elapsed = time.monotonic() - t0
    dropped = nft_drops(shop.isp_wired) + sum(drops)
    clear_faults(shop.isp_wired)
    wired_rounds = [o for _, o in lab.rounds["wired"][rounds0:]]
    false_failovers = sum(1 for k in lab.kinds(after=t0) if k is TransitionKind.FAILOVER)
    downs = sum(1 for at, n, s in lab.links
                if at >= t0 and n == "wired" and s.state is LinkState.DOWN)
    label = "bursty loss" if what == "bursty" else f"{what} loss"
    rows: list[tuple[str, object, str]] = [
        (f"false failovers in {elapsed / 60:.1f} min of {label}", false_failovers, "target 0"),
        ("  wired declared down", downs, "0"),
        ("  failed rounds / rounds",
         f"{sum(1 for r in wired_rounds if not r.ok)}/{len(wired_rounds)}", ""),
        ("  failed probes", sum(r.attempted - r.succeeded for r in wired_rounds),
         f"{dropped} packets dropped"),
    ]
    if bursts:
        rows.append(("  bad periods: count, mean, longest (s)",
                     f"{len(bursts)}, {statistics.mean(bursts):.2f}, {max(bursts):.2f}",
                     f"exp. mean {BURST_BAD_S} s every ~{BURST_GOOD_S} s"))
    if false_failovers:
        # back on wired before the next phase
        await lab.wait_for(lambda: lab.engine.active.value == "wired", 30.0)
    return rows


async def _dns_only_phase(lab: Harness, detector: str) -> list[tuple[str, object, str]]:
    """DNS_S seconds of the wired ISP dropping DNS to the resolver: nothing fails over."""
    shop = lab.shop
    t0 = time.monotonic()
    rounds0 = len(lab.rounds["wired"])
    dns_only_failure(shop.isp_wired, "cust0")
    await _pause(DNS_S)
    t1 = time.monotonic()
    state = lab.engine.links()["wired"].state
    dropped = nft_drops(shop.isp_wired)
    clear_faults(shop.isp_wired)
    wired_rounds = [o for _, o in lab.rounds["wired"][rounds0:]]
    degraded = [at - t0 for at, n, s in lab.links
                if at >= t0 and n == "wired" and s.state is LinkState.DEGRADED]
    requests = lab.client.between(t0, t1 - 1.0)
    failed = sum(1 for r in requests if not r.ok)
    via_wired = sum(1 for r in requests if r.ok and r.uplink == "wired")
    failovers = sum(1 for k in lab.kinds(after=t0) if k is TransitionKind.FAILOVER)
    rows: list[tuple[str, object, str]] = [
        (f"[{detector}] false failovers in {(t1 - t0):.0f} s of DNS-only failure", failovers,
         "target 0"),
        ("  wired state at the end / degraded after (s)",
         f"{state.value} / {degraded[0]:.2f}" if degraded else state.value, "degraded"),
        ("  failed probes / probes (the DNS target's)",
         f"{sum(r.attempted - r.succeeded for r in wired_rounds)}"
         f"/{sum(r.attempted for r in wired_rounds)}", f"{dropped} queries dropped"),
        ("  LAN requests by IP: failed / via wired / all", f"{failed} / {via_wired} / "
         f"{len(requests)}", "0 failed"),
    ]
    if failovers:
        await lab.wait_for(lambda: lab.engine.active.value == "wired", 30.0)
    return rows


async def _detector_runs(detector: str, rng: random.Random) -> list[tuple[str, object, str]]:
    monitor, options = DETECTORS[detector]
    best, worst = detection_time_bounds_s(monitor)
    rows: list[tuple[str, object, str]] = [
        (f"[{detector}] blackhole detection bounds (s)", f"{best:.1f}-{worst:.1f}", "design")]
    failbacks: list[tuple[int, int, int]] = []
    with build_shop() as shop:
        routes = NetlinkRoutes(UPLINKS, netns=shop.box)
        try:
            async with running_engine(
                    shop, routes, monitor={"wired": monitor, "lte": MONITOR},
                    probe_options={"wired": options, "lte": ProbeOptions(dns_servers=())},
                    ) as lab:
                for kind in FAULTS:
                    if kind == "dns only":
                        rows += await _dns_only_phase(lab, detector)
                        continue
                    runs, target = FAULT_RUNS[kind]
                    decided: list[float] = []
                    flowing: list[float] = []
                    for _ in range(runs):
                        d, f = await _fault_run(lab, kind, rng, failbacks)
                        decided.append(d)
                        flowing.append(f)
                    print(f"\n[{detector}] {kind}: LAN via LTE after "
                          f"{[round(x, 3) for x in flowing]}")
                    rows += [
                        (f"[{detector}] {kind} -> LAN via LTE, median (s, n={runs})",
                         statistics.median(flowing), target),
                        (f"[{detector}] {kind} -> LAN via LTE, p95 / max (s)",
                         f"{percentile(flowing, 95):.2f} / {max(flowing):.2f}", ""),
                        (f"[{detector}] {kind} -> switch applied, median (s)",
                         statistics.median(decided), ""),
                    ]
                requests = sum(a for a, _, _ in failbacks)
                failed = sum(f for _, f, _ in failbacks)
                outside = sum(o for _, _, o in failbacks)
                rows += [
                    (f"[{detector}] failed LAN requests across {len(failbacks)} failbacks",
                     failed, f"target 0 (of {requests} requests)"),
                    ("  of which outside the route->nft window", outside, "0"),
                ]
                idle0 = lab.engine.standby_bytes
                t0 = time.monotonic()
                for what in LOSSES:
                    rows += [(f"[{detector}] {m}" if not m.startswith(" ") else m, v, t)
                             for m, v, t in await _loss_phase(lab, what, rng)]
                elapsed = time.monotonic() - t0

                state = lab.engine.describe()["lte_standby"]
                lte_ok = [o for _, o in lab.rounds["lte"] if o.ok]
                per_round = statistics.mean(o.bytes_sent + o.bytes_received for o in lte_ok)
                interval = state["interval_s"]
                per_hour = per_round * 3600 / interval
                spent_per_hour = (lab.engine.standby_bytes - idle0) * 3600 / max(elapsed, 1.0)
                rows += [
                    (f"[{detector}] LTE standby interval (s)", float(interval),
                     "budget 5 MB/month"),
                    ("  LTE round, measured (bytes)", per_round,
                     f"estimate {state['bytes_per_round']:.0f}"),
                    ("  LTE standby probe MB per month", per_hour * 24 * 30.4375 / 1e6, "<= 5"),
                    ("  LTE idle probe bytes/hour spent during the loss phases", spent_per_hour,
                     "standby rounds + fresh rounds while wired is suspect"),
                ]
                assert lab.errors == [], lab.errors
        finally:
            await routes.close()
    return rows


async def test_failover_benchmarks() -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CI runs as root)")
    rng = random.Random(2021)
    rows: list[tuple[str, object, str]] = [("load average at start", os.getloadavg()[0], "< 1.5")]
    chosen = os.environ.get("STOREBOX_BENCH_DETECTORS", ",".join(DETECTORS)).split(",")
    for detector in chosen:
        rows += await _detector_runs(detector, rng)
    rows.append(("load average at end", os.getloadavg()[0], ""))
    record("failover", rows)


# --------------------------------------------------------------------------- brownout


async def _payment(box: str) -> tuple[float, float, str | None]:
    """One box-originated exchange with the gateway: (started, seconds, source seen)."""
    loop = asyncio.get_running_loop()
    with inside(box):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    started = time.monotonic()
    source = None
    try:
        async with asyncio.timeout(PAYMENT_DEADLINE_S):
            await loop.sock_connect(s, (GATEWAY_IP, PORT))
            greeting = await recv_line(s, "greeting")
            await loop.sock_sendall(s, b"pay\n")
            echoed = await loop.sock_recv(s, 64)
            if not echoed:
                raise ConnectionError("closed")
            source = greeting.decode().strip()
    except (TimeoutError, OSError):
        pass
    finally:
        s.close()
    return started, time.monotonic() - started, source


async def _payments(box: str, stop: asyncio.Event,
                    done: list[tuple[float, float, str | None]]) -> None:
    async with asyncio.TaskGroup() as tg:
        while not stop.is_set():
            tg.create_task(_collect(box, done))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await stop.wait()


async def _collect(box: str, done: list[tuple[float, float, str | None]]) -> None:
    done.append(await _payment(box))


def _brownout(shop: Shop, what: str) -> Latency | None:
    """Start brownout `what` ("60% loss", "+S s latency") on the wired ISP; the latency
    relay, when it is one."""
    if what == "60% loss":
        random_loss(shop.isp_wired, "cust0", BROWNOUT_EACH_WAY)
        return None
    return add_latency(shop.isp_wired, "cust0", _latency_s(what))


def _latency_s(what: str) -> float:
    seconds, unit, name = what.lstrip("+").split()
    if (unit, name) != ("s", "latency"):
        raise ValueError(f"STOREBOX_BENCH_BROWNOUTS: {what!r} is not '60% loss' nor "
                         "'+S s latency'")
    return float(seconds)


async def _brownout_run(detector: str, what: str) -> list[tuple[str, object, str]]:
    """BROWNOUT_S of `what` while the box pays every 0.5 s: how its payments fared."""
    monitor, options = DETECTORS[detector]
    changes: list[tuple[float, SteerChange]] = []

    async def destinations() -> list[str]:
        return [GATEWAY_IP]

    with build_shop() as shop:
        routes = NetlinkRoutes(UPLINKS, netns=shop.box)
        steering = Steering(SteerPolicy(), SteerRoutes(Uplink("lte", "wwan0"), netns=shop.box),
                            destinations,
                            on_steer=lambda c, _d, _b: changes.append((time.monotonic(), c)))
        try:
            async with running_engine(
                    shop, routes, steering=steering, monitor={"wired": monitor, "lte": MONITOR},
                    probe_options={"wired": options, "lte": ProbeOptions(dns_servers=())},
                    ) as lab:
                done: list[tuple[float, float, str | None]] = []
                stop = asyncio.Event()
                payer = asyncio.create_task(_payments(shop.box, stop, done))
                await _pause(10.0)
                t0 = time.monotonic()
                relay = await asyncio.to_thread(_brownout, shop, what)
                # the box reacts: the gateway steered to LTE, or everything failed over
                await lab.wait_for(lambda: bool(changes) or TransitionKind.FAILOVER
                                   in lab.kinds(after=t0), 60.0)
                reacted = min([at for at, _ in changes[:1]] + [
                    at for at, t, _ in lab.transitions
                    if at >= t0 and t.kind is TransitionKind.FAILOVER][:1])
                other = route_dev(shop.box, OTHER_IP)
                await _pause(max(0.0, t0 + BROWNOUT_S - time.monotonic()))
                t1 = time.monotonic()
                await asyncio.to_thread(clear_faults, shop.isp_wired)
                await lab.wait_for(lambda: any(t >= t1 and src == WIRED_ADDR
                                               for t, _, src in done), 120.0)
                stop.set()
                await payer
                steered_bytes = lab.engine.describe()["lte_standby"]["steered_bytes"]
        finally:
            await routes.close()
    return _brownout_rows(detector, what, lab, done, changes, (t0, reacted, t1), other,
                          steered_bytes, relay)


def _brownout_rows(detector: str, what: str, lab: Harness,
                   done: list[tuple[float, float, str | None]],
                   changes: list[tuple[float, SteerChange]],
                   times: tuple[float, float, float],
                   other: str, steered_bytes: int, relay: Latency | None,
                   ) -> list[tuple[str, object, str]]:
    t0, reacted, t1 = times
    during = [d for t, d, _ in done if t0 <= t < t1]
    after = [d for t, d, _ in done if reacted <= t < t1]
    steers = [c for t, c in changes if c.steered and t0 <= t < t1]
    unsteered = [t for t, c in changes if not c.steered and t >= t1]
    kinds = [(at, t.kind) for at, t, _ in lab.transitions if at >= t0]
    failovers = sum(1 for at, k in kinds if at < t1 and k is TransitionKind.FAILOVER)
    failbacks = sum(1 for at, k in kinds if at < t1 and k is TransitionKind.FAILBACK)
    via_lte = sum(1 for t, _, src in done if t0 <= t < t1 and src == LTE_ADDR)
    back = min(t for t, _, src in done if t >= t1 and src == WIRED_ADDR)
    # past the wired deadline (0.6 s sequential, 1 s rounds) every probe fails: down
    deadline = DETECTORS[detector][0].probe_timeout_s
    fails_over = relay is not None and relay.delay_s >= deadline
    rows: list[tuple[str, object, str]] = [
        (f"[{detector}] brownout {BROWNOUT_S / 60:.1f} min, {what}: payments "
         f"p95 (s, n={len(during)})", percentile(during, 95), "<= 2 s"),
        ("  median / max (s)", f"{statistics.median(during):.3f} / {max(during):.2f}",
         f"deadline {PAYMENT_DEADLINE_S} s"),
        ("  brownout -> " + ("steered" if changes and changes[0][0] == reacted
                             else "failed over") + " (s)",
         reacted - t0, "steer_after_s 5 + window" if not fails_over else "detection bounds"),
        ("  payments via LTE / failed", f"{via_lte} / {sum(1 for d in during if d >= 3.0)}",
         ""),
        ("  p95 after that (s)", percentile(after, 95), ""),
        ("  steers during the brownout (of them after a failback)",
         f"{len(steers)} ({sum(1 for c in steers if 'after the failback' in c.reason)})",
         "<= 1 per 5 min, + 1 per failback"),
        ("  failovers / failbacks during the brownout", f"{failovers} / {failbacks}",
         "1 / 0: every probe past its deadline" if fails_over
         else "0 (the detector's brownout band)"),
        ("  another destination routed via", other, "wwan0 (failed over)" if fails_over
         else "wan0"),
    ]
    if unsteered:
        rows.append(("  heal -> unsteered (s)", unsteered[0] - t1,
                     "unsteer_after_s 30 + window"))
    rows += [
        ("  heal -> payments via wired again (s)", back - t1,
         "failback_after_s (3 s here, 30 s default)" if failovers else ""),
        ("  steered LTE bytes (budget)", steered_bytes, ""),
    ]
    if relay is not None:
        rows.append(("  packets delayed / dropped by the relay",
                     f"{relay.passed} / {relay.dropped}", f"+{relay.delay_s:g} s each"))
    return rows


async def test_brownout_benchmark() -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CI runs as root)")
    rows: list[tuple[str, object, str]] = [("load average at start", os.getloadavg()[0], "< 1.5")]
    chosen = os.environ.get("STOREBOX_BENCH_DETECTORS", ",".join(DETECTORS)).split(",")
    for what in BROWNOUTS:
        for detector in chosen:
            rows += await _brownout_run(detector, what)
    rows.append(("load average at end", os.getloadavg()[0], ""))
    record("failover_brownout", rows)

"""Issue 13: CPU of one probe round, per event loop, without the rest of the daemon.

The idle daemon's CPU (bench_idle.py) moves by ±15 % between 300-s runs on a shared
machine, more than most changes to the probes are worth; this measures what a round
costs alone: the main thread's CPU (``time.thread_time``: the probes' Python and
their system calls, the packets' path through the namespaces included) over
STOREBOX_BENCH_PROBE_ROUNDS rounds (default 600) of the default target kinds (a TCP
connect, a DNS query, an HTTPS GET on a kept connection) with the sequential detector's
probe options, each kind alone too, on asyncio's loop and on uvloop. The servers
(tests/failover/netlab.py) run on their own thread and loop, so their CPU is not
counted. Rounds follow each other 20 ms apart (the daemon's are 200 ms): a loop that
sleeps between them, not a busy one.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from benchmarks.report import record
from failover.probes.accounting import ByteCounter
from failover.probes.keep import ProbeConnections
from failover.probes.options import ProbeOptions
from failover.probes.round import probe_round
from failover.sequential import SEQUENTIAL_RETRY_AFTER_S
from failover.targets import ProbeTarget, parse_target
from tests.failover import netlab
from tests.failover.netlab import Pki
from tests.support.netns import inside

pytestmark = pytest.mark.timeout(900)
ROUNDS = int(os.environ.get("STOREBOX_BENCH_PROBE_ROUNDS", "600"))
WARM_UP = 20
GAP_S = 0.02
TARGETS = {
    "tcp": parse_target(f"tcp:{netlab.SERVER}:{netlab.TCP_PORT}"),
    "dns": parse_target(f"dns:{netlab.RESOLVER}:{netlab.TLS_NAME}"),
    "https": parse_target(f"https://{netlab.TLS_NAME}/health"),
    "icmp": parse_target(f"icmp:{netlab.SERVER}"),
}
SETS = {"tcp, dns, https (the default kinds)": ("tcp", "dns", "https"),
        "tcp": ("tcp",), "dns": ("dns",), "https (kept)": ("https",), "icmp": ("icmp",)}


def loops() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    found: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop}
    try:  # not a dependency of the box (BENCHMARKS.md "Idle CPU with uvloop"); if installed
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return found
    found["uvloop"] = uvloop.new_event_loop
    return found


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Pki]]:
    """The box namespace of a serving topology run on a thread of its own."""
    if os.geteuid() != 0:
        pytest.fail("the namespaces need root (CI runs as root)")
    pki = netlab.make_pki()
    workdir = str(tmp_path_factory.mktemp("probe-cpu"))
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    box: list[str] = []
    ready = threading.Event()

    async def serve() -> None:
        async with netlab.serving_topology(pki, workdir) as (lab, _, _services):
            box.append(lab.box)
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(30), "the servers did not start"
    try:
        yield box[0], pki
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


async def round_cpu_ms(box: str, pki: Pki, targets: list[ProbeTarget]) -> float:
    """Main-thread CPU per round (ms), after WARM_UP rounds (connections kept, names
    resolved)."""
    connections = ProbeConnections()
    options = ProbeOptions(ssl=pki.client_context(), dns_servers=(netlab.RESOLVER,), attempts=4,
                           retry_after_s=SEQUENTIAL_RETRY_AFTER_S, connections=connections)
    counter = ByteCounter()
    quorum = max(1, len(targets) - 1)
    try:
        with inside(box):
            for n in range(WARM_UP + ROUNDS):
                if n == WARM_UP:
                    began = time.thread_time()
                result = await probe_round(targets, "up1", 0.6, quorum, options=options,
                                           counter=counter)
                assert result.ok and not result.errors, result.errors
                await asyncio.sleep(GAP_S)
            return (time.thread_time() - began) / ROUNDS * 1000
    finally:
        await connections.close()


def test_probe_round_cpu(served: tuple[str, Pki], tmp_path: Path) -> None:
    box, pki = served
    rows: list[tuple[str, object, str]] = []
    for name, kinds in SETS.items():
        targets = [TARGETS[k] for k in kinds]
        for loop_name, factory in loops().items():
            with asyncio.Runner(loop_factory=factory) as runner:
                ms = runner.run(round_cpu_ms(box, pki, targets))
            rows.append((f"{name}, {loop_name}: CPU per round (ms)", round(ms, 3), "-"))
    rows.append(("rounds each", ROUNDS, "-"))
    record("probe_cpu", rows)

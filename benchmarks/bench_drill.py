"""The full outage drill (default timeline, about 5 minutes): the box's numbers end to end.

`storebox drill` with its default phases (20 s normal, 60 s of 20 % loss, 45 s of brownout
at 37 % loss each way and the wait for the unsteer (30 s hysteresis), 40 s blackhole, 30 s
with the LTE carrier down as well, recovery with a 10 s failback window), two POS
terminals selling once a second each. Recorded: failover, offline and failback times,
offline time, the brownout's steer and unsteer times and payments p95, payments by
outcome, the exactly-once proof, and what the fleet operator received.
"""

from __future__ import annotations

import os
import sys

import pytest

from benchmarks.report import record
from lab.drill.runner import run_drill
from lab.drill.timeline import Options

pytestmark = pytest.mark.timeout(1200)


def test_full_drill() -> None:
    if os.geteuid() != 0:
        pytest.skip("the drill builds network namespaces: root only")
    report = run_drill(Options(), sys.stdout, live_view=False)
    p = report.payments
    b = report.brownout
    record("drill", [
        ("blackhole -> LTE active (s)", report.failover_s, "<= 5 s"),
        ("LTE down -> offline mode (s)", report.offline_after_s, ""),
        ("time in offline mode (s)", round(report.offline_s, 1), ""),
        ("recovery -> wired active (s, incl. 10 s window)", report.failback_s, ""),
        ("failovers during 60 s of 20 % loss", report.failovers_in_loss, "0"),
        ("brownout -> gateway steered to LTE (s)", b.get("steered_after_s"),
         f"<= {b.get('max_steer_s')} s"),
        ("brownout: payments p95 (s)", b["payments"]["latency"]["p95_s"], "<= 2 s"),
        ("brownout: payments online / stood in",
         f"{b['payments']['online']} / {b['payments']['stood_in']}", ""),
        ("brownout: failovers", b.get("failovers"), "0"),
        ("brownout over -> unsteered (s, incl. 30 s hysteresis)",
         b.get("unsteered_after_heal_s"), ""),
        ("sales", p["total"], ""),
        ("  approved online", p["approved_online"], ""),
        ("  approved offline", p["approved_offline"], ""),
        ("  declined", p["declined"], ""),
        ("  failed (no answer or an error)", p["failed"], "0"),
        ("payments at the gateway exactly once", report.forwarded_once, ""),
        ("lost / duplicated", f"{len(report.lost)} / {len(report.duplicated)}", "0 / 0"),
        ("fleet: events the operator got (delayed by the outage)",
         f"{report.fleet.get('events')} ({report.fleet.get('delayed')})", ""),
        ("fleet: caught up within 30 s of the end (status, state, events)",
         report.fleet.get("caught_up"), "True"),
        ("fleet: the incident fleet serve opened",
         (report.fleet.get("incident") or {}).get("title"), "KT wired down at 1 shop"),
    ])
    assert report.passed, report.failures

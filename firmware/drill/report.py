"""What the drill proved: times, payments, exactly-once forwarding, and the verdict.

`build_report` is pure: it takes what the drill observed (phases played, uplink samples,
the box's events, every POS sale, the gateway's count per payment, the final status) and
returns a `Report`. The drill fails (`Report.failures`) on any of:

- a POS request that got no answer or an error;
- a payment lost (approved but never at the gateway) or forwarded twice, or a payment
  declined offline that reached the gateway anyway;
- failover slower than `max_failover_s` (5 s), or none at all during the blackhole;
- any failover during the loss phase;
- offline mode never reached while both uplinks were down;
- the box not back on wired with an empty queue at the end.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Any

from firmware.drill.pos import Sale

MAX_FAILOVER_S = 5.0


@dataclass(frozen=True)
class PlayedPhase:
    name: str
    started: float  # monotonic
    ended: float
    started_at: datetime  # wall clock, to compare with the box's event times
    ended_at: datetime


@dataclass(frozen=True)
class Sample:
    """The box's active uplink as the drill saw it at monotonic time `at`."""

    at: float
    active: str


@dataclass
class Report:
    phases: list[dict[str, Any]] = field(default_factory=list)
    failover_s: float | None = None
    offline_after_s: float | None = None
    offline_s: float = 0.0
    failback_s: float | None = None
    failovers_in_loss: int = 0
    payments: dict[str, int] = field(default_factory=dict)
    forwarded_once: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    #: the gateway simulator's count per answered payment: the proof behind the totals
    gateway_counts: dict[str, int] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)
    #: what the fleet operator received (`firmware.drill.fleet.FleetView.to_json`)
    fleet: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "failures": self.failures, "phases": self.phases,
                "failover_s": self.failover_s, "offline_after_s": self.offline_after_s,
                "offline_s": round(self.offline_s, 2), "failback_s": self.failback_s,
                "failovers_in_loss": self.failovers_in_loss, "payments": self.payments,
                "exactly_once": {"forwarded_once": self.forwarded_once, "lost": self.lost,
                                 "duplicated": self.duplicated,
                                 "declined_offline_but_forwarded": self.leaked,
                                 "gateway_count_per_payment": self.gateway_counts},
                "failed_requests": self.failed_requests, "final": self.final,
                "fleet": self.fleet}


def _event_time(event: Mapping[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(event["at"]))
    except (KeyError, ValueError):
        return None


def _first_event(events: Sequence[Mapping[str, Any]], kind: str, after: datetime,
                 before: datetime | None = None) -> datetime | None:
    times = [t for e in events if e.get("kind") == kind
             and (t := _event_time(e)) is not None and t >= after
             and (before is None or t < before)]
    return min(times) if times else None


def _first_sample(samples: Sequence[Sample], active: str, after: float) -> float | None:
    return next((s.at for s in samples if s.at >= after and s.active == active), None)


def offline_seconds(samples: Sequence[Sample], start: float) -> float:
    """Time spent with no active uplink from `start` on, from consecutive samples."""
    total = 0.0
    for a, b in pairwise(samples):
        if a.at >= start and a.active == "none":
            total += b.at - a.at
    return total


def _seconds(later: datetime | None, earlier: datetime) -> float | None:
    return None if later is None else round((later - earlier).total_seconds(), 3)


def _phase(phases: Sequence[PlayedPhase], name: str) -> PlayedPhase | None:
    return next((p for p in phases if p.name == name), None)


def build_report(*, phases: Sequence[PlayedPhase], samples: Sequence[Sample],
                 events: Sequence[Mapping[str, Any]], sales: Sequence[Sale],
                 gateway_counts: Mapping[str, int], final: Mapping[str, Any],
                 max_failover_s: float = MAX_FAILOVER_S) -> Report:
    report = Report()
    report.phases = [{"name": p.name, "seconds": round(p.ended - p.started, 2)}
                     for p in phases]
    first = phases[0].started if phases else 0.0

    loss = _phase(phases, "loss")
    if loss is not None:
        report.failovers_in_loss = sum(
            1 for e in events if e.get("kind") == "failover"
            and (t := _event_time(e)) is not None and loss.started_at <= t < loss.ended_at)
        if report.failovers_in_loss:
            report.failures.append(f"{report.failovers_in_loss} failover(s) during the "
                                   "loss phase (random loss must not fail over)")

    blackhole = _phase(phases, "blackhole")
    if blackhole is not None:
        report.failover_s = _seconds(
            _first_event(events, "failover", blackhole.started_at), blackhole.started_at)
        if report.failover_s is None:
            report.failures.append("no failover to LTE during the blackhole")
        elif report.failover_s > max_failover_s:
            report.failures.append(f"failover took {report.failover_s:.2f} s "
                                   f"(more than {max_failover_s:g} s)")

    lte_down = _phase(phases, "lte_down")
    if lte_down is not None:
        report.offline_after_s = _seconds(
            _first_event(events, "offline_mode", lte_down.started_at), lte_down.started_at)
        if report.offline_after_s is None:
            report.failures.append("offline mode never reached with both uplinks down")
    report.offline_s = offline_seconds(samples, first)

    recovery = _phase(phases, "recovery")
    if recovery is not None:
        back = _first_sample(samples, "wired", recovery.started)
        report.failback_s = None if back is None else round(back - recovery.started, 3)

    _payments(report, sales, gateway_counts)

    report.final = {"active": final.get("uplink", {}).get("active"),
                    "queued": final.get("payments", {}).get("queued"),
                    "forwarded_total": final.get("payments", {}).get("forwarded_total"),
                    "declined_after_offline_total":
                        final.get("payments", {}).get("declined_after_offline_total")}
    if report.final["active"] != "wired" or report.final["queued"] != 0:
        report.failures.append(
            f"not recovered at the end: active uplink {report.final['active']!r}, "
            f"{report.final['queued']!r} payment(s) still queued")
    return report


def _payments(report: Report, sales: Sequence[Sale], counts: Mapping[str, int]) -> None:
    outcomes = Counter(s.outcome for s in sales)
    report.payments = {"total": len(sales), "approved_online": outcomes["approved"],
                       "approved_offline": outcomes["approved_offline"],
                       "declined": outcomes["declined"] + outcomes["declined_offline"],
                       "failed": outcomes["failed"]}
    for sale in sales:
        if sale.outcome == "failed":
            report.failed_requests.append(
                f"{sale.key} ({sale.phase}, after {sale.seconds:.2f} s): {sale.error}")
            continue
        payment = sale.payment_id
        if payment is None:
            report.failed_requests.append(f"{sale.key} ({sale.phase}): answer without an id")
            continue
        count = counts.get(payment, 0)
        report.gateway_counts[payment] = count
        if sale.outcome == "declined_offline":
            if count:
                report.leaked.append(payment)
            continue
        if count == 0:
            report.lost.append(payment)
        elif count > 1:
            report.duplicated.append(payment)
        else:
            report.forwarded_once += 1
    if report.failed_requests:
        report.failures.append(f"{len(report.failed_requests)} POS request(s) got no answer "
                               "or an error")
    if report.lost:
        report.failures.append(f"{len(report.lost)} payment(s) lost (never at the gateway)")
    if report.duplicated:
        report.failures.append(f"{len(report.duplicated)} payment(s) forwarded more than once")
    if report.leaked:
        report.failures.append(f"{len(report.leaked)} payment(s) declined offline reached "
                               "the gateway")


def render(report: Report) -> str:
    """The report as the terminal shows it at the end of the drill."""
    def secs(value: float | None) -> str:
        return "—" if value is None else f"{value:.2f} s"

    p = report.payments
    lines = [
        "storebox outage drill — report",
        "",
        "  phases        " + ", ".join(f"{x['name']} {x['seconds']:.0f} s"
                                       for x in report.phases),
        f"  failover      {secs(report.failover_s)} from the blackhole to LTE active "
        f"(limit {MAX_FAILOVER_S:g} s)",
        f"  offline       entered {secs(report.offline_after_s)} after LTE failed; "
        f"{report.offline_s:.1f} s in offline mode",
        f"  failback      {secs(report.failback_s)} from the recovery to wired active "
        "(includes the stability window)",
        f"  loss phase    {report.failovers_in_loss} failover(s)",
        f"  payments      {p.get('total', 0)}: {p.get('approved_online', 0)} online, "
        f"{p.get('approved_offline', 0)} offline, {p.get('declined', 0)} declined, "
        f"{p.get('failed', 0)} failed",
        f"  exactly once  {report.forwarded_once} at the gateway exactly once, "
        f"{len(report.lost)} lost, {len(report.duplicated)} duplicated",
        f"  at the end    active {report.final.get('active')}, "
        f"{report.final.get('queued')} queued, "
        f"{report.final.get('forwarded_total')} forwarded after offline "
        f"({report.final.get('declined_after_offline_total')} of them declined then: "
        "the shop's risk)",
    ]
    if report.fleet:
        f = report.fleet
        lines.append(f"  fleet         the operator got {f.get('events')} events "
                     f"({f.get('delayed')} delayed by the outage), "
                     f"{f.get('state_messages')} state messages; status "
                     f"{f.get('status')!r}, active {f.get('active')}"
                     + ("" if f.get("caught_up") else "; NOT every event arrived")
                     + (f"; {f['malformed']} payload(s) not JSON" if f.get("malformed") else ""))
    lines.append("")
    for request in report.failed_requests[:10]:
        lines.append(f"  failed request: {request}")
    if report.passed:
        lines.append("  PASSED: every sale answered, every payment at the gateway exactly once")
    else:
        lines += [f"  FAILED: {failure}" for failure in report.failures]
    return "\n".join(lines)

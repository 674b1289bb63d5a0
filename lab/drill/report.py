"""What the drill proved: times, payments, exactly-once forwarding, and the verdict.

`build_report` is pure: it takes what the drill observed (phases played, uplink samples,
the box's events, every POS sale, the gateway's count per payment, the final status) and
returns a `Report`. The drill fails (`Report.failures`) on any of:

- a POS request that got no answer or an error;
- a payment lost (approved but never at the gateway) or forwarded twice, or a payment
  declined offline that reached the gateway anyway -- unless its online attempt got there
  (the answer lost, e.g. a connection the brownout's steer closed mid-request) and the box
  flagged it (`fault` `approved_after_declined_offline`: "check for a double payment");
- failover slower than `max_failover_s` (5 s), or none at all during the blackhole;
- any failover during the loss phase;
- the brownout (`brownout`): no steer of the gateway's traffic to LTE within the limit,
  a failover, payments p95 above 2 s, no unsteer once it is over;
- offline mode never reached while both uplinks were down;
- the box not back on wired with an empty queue at the end;
- with a seal key (docs/gateway-protocol.md, `seal_kid`): an offline forward that arrived with its
  card unsealed or sealed under another kid, a sealed card the gateway refused (422), or
  a box whose status does not say it seals under that kid.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from lab.drill import brownout
from lab.drill.observed import (
    PlayedPhase,
    Sample,
    count_events,
    first_event,
    phase_named,
    seconds_after,
)
from lab.pos import Sale

MAX_FAILOVER_S = 5.0
MAX_STEER_S = brownout.steer_limit_s(5.0, 5.0)  # `[steer]`'s defaults; the drill passes its own


@dataclass(frozen=True)
class Arrival:
    """How one payment arrived at the gateway: as an offline forward or online, and the
    kid of the sealed card it carried (None: the card came in the clear). The gateway
    stores a sealed authorization only once it has opened the card."""

    offline: bool
    seal_kid: str | None


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
    #: declined offline, but their online attempt had reached the gateway (answer lost)
    #: and the box flagged each: the shop must check for a double payment
    flagged: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    #: the gateway simulator's count per answered payment: the proof behind the totals
    gateway_counts: dict[str, int] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)
    #: what the fleet server (`fleet serve`) holds of the box (`lab.fleet.FleetView.to_json`)
    fleet: dict[str, Any] = field(default_factory=dict)
    #: the brownout section (`brownout.judge`); empty when no brownout was played
    brownout: dict[str, Any] = field(default_factory=dict)
    #: how the offline forwards arrived (see `_sealing`); empty without a seal key
    sealing: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "failures": self.failures, "phases": self.phases,
                "failover_s": self.failover_s, "offline_after_s": self.offline_after_s,
                "offline_s": round(self.offline_s, 2), "failback_s": self.failback_s,
                "failovers_in_loss": self.failovers_in_loss, "brownout": self.brownout,
                "payments": self.payments,
                "exactly_once": {"forwarded_once": self.forwarded_once, "lost": self.lost,
                                 "duplicated": self.duplicated,
                                 "declined_offline_but_forwarded": self.leaked,
                                 "declined_offline_approved_online_flagged": self.flagged,
                                 "gateway_count_per_payment": self.gateway_counts},
                "failed_requests": self.failed_requests, "final": self.final,
                "fleet": self.fleet, "sealing": self.sealing}


def _first_sample(samples: Sequence[Sample], active: str, after: float) -> float | None:
    return next((s.at for s in samples if s.at >= after and s.active == active), None)


def offline_seconds(samples: Sequence[Sample], start: float) -> float:
    """Time spent with no active uplink from `start` on, from consecutive samples."""
    total = 0.0
    for a, b in pairwise(samples):
        if a.at >= start and a.active == "none":
            total += b.at - a.at
    return total


def _seconds_to_event(events: Sequence[Mapping[str, Any]], kind: str,
                      phase: PlayedPhase) -> float | None:
    """Seconds from the start of `phase` to the box's first `kind` event at or after it
    (None: no such event), on the wall clock the box stamps its events with."""
    return seconds_after(first_event(events, kind, phase.started_at), phase.started_at)


def build_report(*, phases: Sequence[PlayedPhase], samples: Sequence[Sample],
                 events: Sequence[Mapping[str, Any]], sales: Sequence[Sale],
                 gateway_counts: Mapping[str, int], final: Mapping[str, Any],
                 arrivals: Mapping[str, Arrival] | None = None, seal_kid: str | None = None,
                 card_refused_422: int = 0, max_failover_s: float = MAX_FAILOVER_S,
                 steer_routes: Mapping[str, str] | None = None,
                 max_steer_s: float = MAX_STEER_S, brownout_pct: int | None = None) -> Report:
    """`arrivals`: every authorization the gateway stored, by payment id; `seal_kid`: the
    kid of the seal key the box was given (None: no seal key, no sealing verdict);
    `card_refused_422`: sealed cards the gateway could not open; `steer_routes`,
    `max_steer_s`, `brownout_pct`: for the brownout (`brownout.judge`)."""
    report = Report()
    report.phases = [{"name": p.name, "seconds": round(p.ended - p.started, 2)}
                     for p in phases]
    first = phases[0].started if phases else 0.0

    loss = phase_named(phases, "loss")
    if loss is not None:
        report.failovers_in_loss = count_events(events, "failover", loss.started_at,
                                                loss.ended_at)
        if report.failovers_in_loss:
            report.failures.append(f"{report.failovers_in_loss} failover(s) during the "
                                   "loss phase (random loss must not fail over)")

    report.brownout, failures = brownout.judge(
        phases=phases, samples=samples, events=events, sales=sales, routes=steer_routes,
        max_steer_s=max_steer_s, loss_pct=brownout_pct)
    report.failures += failures

    blackhole = phase_named(phases, "blackhole")
    if blackhole is not None:
        report.failover_s = _seconds_to_event(events, "failover", blackhole)
        if report.failover_s is None:
            report.failures.append("no failover to LTE during the blackhole")
        elif report.failover_s > max_failover_s:
            report.failures.append(f"failover took {report.failover_s:.2f} s "
                                   f"(more than {max_failover_s:g} s)")

    lte_down = phase_named(phases, "lte_down")
    if lte_down is not None:
        report.offline_after_s = _seconds_to_event(events, "offline_mode", lte_down)
        if report.offline_after_s is None:
            report.failures.append("offline mode never reached with both uplinks down")
    report.offline_s = offline_seconds(samples, first)

    recovery = phase_named(phases, "recovery")
    if recovery is not None:
        back = _first_sample(samples, "wired", recovery.started)
        report.failback_s = None if back is None else round(back - recovery.started, 3)

    _payments(report, sales, gateway_counts, _online_after_decline(
        events, arrivals or {}))

    _final(report, final)
    if seal_kid is not None:
        _sealing(report, sales, arrivals or {}, seal_kid, card_refused_422)
    return report


def _final(report: Report, final: Mapping[str, Any]) -> None:
    """The box's last status: back on wired with nothing queued, or a failure."""
    payments = final.get("payments", {})
    report.final = {"active": final.get("uplink", {}).get("active"),
                    "queued": payments.get("queued"),
                    "forwarded_total": payments.get("forwarded_total"),
                    "declined_after_offline_total":
                        payments.get("declined_after_offline_total"),
                    "protection": payments.get("protection"),
                    "seal_kid": payments.get("seal_kid")}
    if report.final["active"] != "wired" or report.final["queued"] != 0:
        report.failures.append(
            f"not recovered at the end: active uplink {report.final['active']!r}, "
            f"{report.final['queued']!r} payment(s) still queued")


def _sealing(report: Report, sales: Sequence[Sale], arrivals: Mapping[str, Arrival],
             seal_kid: str, refused: int) -> None:
    """Every offline forward must carry its card sealed under `seal_kid` (opened by the
    gateway, which stores nothing it could not open), none may be refused, and the box
    must say it seals under that kid. An offline approval whose online attempt had reached
    the gateway after all is resolved by lookup, not forwarded: `resolved_online`."""
    offline = {pid: a for pid, a in arrivals.items() if a.offline}
    resolved_online = sorted(sale.payment_id for sale in sales
                             if sale.outcome == "approved_offline" and sale.payment_id
                             and (a := arrivals.get(sale.payment_id)) is not None
                             and not a.offline)
    sealed = sorted(pid for pid, a in offline.items() if a.seal_kid == seal_kid)
    unsealed = sorted(pid for pid, a in offline.items() if a.seal_kid is None)
    other = sorted(pid for pid, a in offline.items()
                   if a.seal_kid is not None and a.seal_kid != seal_kid)
    report.sealing = {"kid": seal_kid, "offline_forwards": len(offline),
                      "sealed": len(sealed), "opened": len(sealed), "unsealed": unsealed,
                      "other_kid": other, "refused_422": refused,
                      "resolved_online": resolved_online,
                      "box_protection": report.final.get("protection"),
                      "box_seal_kid": report.final.get("seal_kid")}
    if unsealed:
        report.failures.append(f"{len(unsealed)} offline forward(s) arrived unsealed "
                               "(the card in the clear)")
    if other:
        report.failures.append(f"{len(other)} offline forward(s) sealed under another kid "
                               f"than {seal_kid}")
    if refused:
        report.failures.append(f"{refused} sealed card(s) refused by the gateway (422)")
    if report.final.get("protection") != "sealed" or report.final.get("seal_kid") != seal_kid:
        report.failures.append(
            f"the box's status says protection {report.final.get('protection')!r}, kid "
            f"{report.final.get('seal_kid')!r}, not sealed under {seal_kid}")


def _sealing_line(s: Mapping[str, Any]) -> str:
    n, sealed = s.get("offline_forwards", 0), s.get("sealed", 0)
    unsealed, other = len(s.get("unsealed", [])), len(s.get("other_kid", []))
    how = ("none to judge" if n == 0 else f"all sealed (kid {s.get('kid')})" if sealed == n
           else f"{sealed} sealed (kid {s.get('kid')})"
           + (f", {unsealed} UNSEALED" if unsealed else "")
           + (f", {other} under another kid" if other else ""))
    online = len(s.get("resolved_online", []))
    return (f"  sealing       offline forwards: {n}, {how}, {s.get('opened', 0)} opened by the "
            f"gateway, {s.get('refused_422', 0)} refused"
            + (f" ({online} offline approval(s) had reached the gateway online)"
               if online else ""))


def _online_after_decline(events: Sequence[Mapping[str, Any]],
                          arrivals: Mapping[str, Arrival]) -> set[str]:
    """Payments whose online attempt reached the gateway (an online arrival) and which
    the box flagged as approved there after it had declined them offline."""
    flagged = {str(e.get("payment_id")) for e in events if e.get("kind") == "fault"
               and e.get("reason") == "approved_after_declined_offline"}
    return {pid for pid in flagged if (a := arrivals.get(pid)) is not None and not a.offline}


def _payments(report: Report, sales: Sequence[Sale], counts: Mapping[str, int],
              flagged: set[str]) -> None:
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
            if not count or payment not in flagged:
                if count:
                    report.leaked.append(payment)
                continue
            report.flagged.append(payment)  # at the gateway by its online attempt: counted
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
                               "the gateway (forwarded, or online without the box flagging "
                               "it)")


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
        *(brownout.lines(report.brownout) if report.brownout else []),
        f"  payments      {p.get('total', 0)}: {p.get('approved_online', 0)} online, "
        f"{p.get('approved_offline', 0)} offline, {p.get('declined', 0)} declined, "
        f"{p.get('failed', 0)} failed",
        f"  exactly once  {report.forwarded_once} at the gateway exactly once, "
        f"{len(report.lost)} lost, {len(report.duplicated)} duplicated"
        + (f"; {len(report.flagged)} declined offline but approved online (the answer "
           "lost), each flagged by the box: check for a double payment"
           if report.flagged else ""),
        f"  at the end    active {report.final.get('active')}, "
        f"{report.final.get('queued')} queued, "
        f"{report.final.get('forwarded_total')} forwarded after offline "
        f"({report.final.get('declined_after_offline_total')} of them declined then: "
        "the shop's risk)",
    ]
    if report.fleet:
        lines += _fleet_lines(report.fleet)
    if report.sealing:
        lines.append(_sealing_line(report.sealing))
    lines.append("")
    for request in report.failed_requests[:10]:
        lines.append(f"  failed request: {request}")
    if report.passed:
        lines.append("  PASSED: every sale answered, every payment at the gateway exactly once"
                     + (", every offline card sealed" if report.sealing else ""))
    else:
        lines += [f"  FAILED: {failure}" for failure in report.failures]
    return "\n".join(lines)


def _fleet_lines(f: dict[str, Any]) -> list[str]:
    """What `fleet serve` saw: the box's events and state, and the incident it opened."""
    if f.get("error"):
        return [f"  fleet         fleet serve did not answer: {f['error']}"]
    lines = [f"  fleet         fleet serve got {f.get('events')} events "
             f"({f.get('delayed')} delayed by the outage), {f.get('state_changes')} state "
             f"changes; status {f.get('status')!r}, active {f.get('active')}"
             + ("" if f.get("caught_up") else "; NOT every event arrived")
             + (f"; {f['malformed']} payload(s) not JSON" if f.get("malformed") else "")]
    incident = f.get("incident")
    if incident:
        lines.append(f"  incident      #{incident.get('id')} {incident.get('title')}")
    else:
        lines.append("  incident      fleet serve opened none for the outage")
    return lines

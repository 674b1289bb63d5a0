"""The drill's verdict: each failure it must catch, and a clean run that passes."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from lab.drill.observed import PlayedPhase, Sample
from lab.drill.report import Arrival, build_report, offline_seconds, render
from lab.pos import Sale
from tests.drill.synthetic import assert_fails_with, box_event, played

T0 = datetime(2021, 10, 25, 11, 20, tzinfo=UTC)
LENGTHS = [("normal", 5), ("loss", 15), ("blackhole", 10), ("lte_down", 8), ("recovery", 6)]


def phases() -> list[PlayedPhase]:
    return played(LENGTHS, T0)


def event(kind: str, second: float, seq: int) -> dict[str, Any]:
    return box_event(T0, kind, second, seq)


def sale(n: int, status: str, phase: str = "normal", http: int = 200,
         error: str | None = None) -> Sale:
    answer = {"id": f"pay_{n}", "status": status,
              "mode": "offline" if status.endswith("offline") else "online"}
    return Sale(f"drill-1-{n}", "pos-1", phase, 12000, float(n), 0.05,
                http, answer if http == 200 else None, error)


GOOD_EVENTS = [event("failover", 20 + 2.8, 1), event("offline_mode", 30 + 2.9, 2),
               event("failback", 38 + 4.5, 3)]
# the active uplink as the drill's poller saw it, every 0.5 s
GOOD_SAMPLES = [Sample(t / 2, "wired" if t < 46 else "lte" if t < 66 else
                       "none" if t < 85 else "wired") for t in range(0, 88)]
GOOD_SALES = [sale(1, "approved"), sale(2, "approved", "loss"),
              sale(3, "approved_offline", "lte_down"), sale(4, "declined_offline", "lte_down"),
              sale(5, "declined", "blackhole")]
GOOD_COUNTS = {"pay_1": 1, "pay_2": 1, "pay_3": 1, "pay_5": 1}
KID = "0123456789abcdef"
FINAL: dict[str, Any] = {"uplink": {"active": "wired"},
         "payments": {"queued": 0, "forwarded_total": 1, "protection": "sealed",
                      "seal_kid": KID}}
# how each payment arrived at the gateway: online ones with the card, the offline one sealed
GOOD_ARRIVALS = {"pay_1": Arrival(False, None), "pay_2": Arrival(False, None),
                 "pay_3": Arrival(True, KID), "pay_5": Arrival(False, None)}


def report(**changes: Any) -> Any:
    args: dict[str, Any] = {"phases": phases(), "samples": GOOD_SAMPLES,
                            "events": GOOD_EVENTS, "sales": GOOD_SALES,
                            "gateway_counts": GOOD_COUNTS, "final": FINAL,
                            "arrivals": GOOD_ARRIVALS, "seal_kid": KID}
    args.update(changes)
    return build_report(**args)


def test_a_clean_drill_passes_with_its_numbers() -> None:
    r = report()
    assert r.passed, r.failures
    assert r.failover_s == pytest.approx(2.8)
    assert r.offline_after_s == pytest.approx(2.9)
    assert r.failback_s == pytest.approx(42.5 - 38)
    assert r.offline_s == pytest.approx(42.5 - 33)
    assert r.failovers_in_loss == 0
    assert r.payments == {"total": 5, "approved_online": 2, "approved_offline": 1,
                          "declined": 2, "failed": 0}
    assert r.forwarded_once == 4  # the declined-offline payment is never forwarded
    text = render(r)
    assert "PASSED" in text and "2.80 s" in text
    assert (f"offline forwards: 1, all sealed (kid {KID}), 1 opened by the gateway, "
            "0 refused") in text
    assert r.to_json()["sealing"] == {
        "kid": KID, "offline_forwards": 1, "sealed": 1, "opened": 1, "unsealed": [],
        "other_kid": [], "refused_422": 0, "resolved_online": [], "box_protection": "sealed",
        "box_seal_kid": KID}
    assert "every offline card sealed" in text
    assert r.to_json()["exactly_once"] == {
        "forwarded_once": 4, "lost": [], "duplicated": [], "declined_offline_but_forwarded": [],
        "declined_offline_approved_online_flagged": [],
        "gateway_count_per_payment": {"pay_1": 1, "pay_2": 1, "pay_3": 1, "pay_4": 0,
                                      "pay_5": 1}}


@pytest.mark.parametrize(("changes", "failure"), [
    ({"sales": [*GOOD_SALES, sale(6, "", "blackhole", http=None,  # type: ignore[arg-type]
                                  error="no answer within 10 s")]},
     "1 POS request(s) got no answer or an error"),
    ({"sales": [*GOOD_SALES, sale(6, "", http=503, error="HTTP 503: storage")]},
     "1 POS request(s) got no answer or an error"),
    ({"gateway_counts": {**GOOD_COUNTS, "pay_3": 0}}, "1 payment(s) lost"),
    ({"gateway_counts": {**GOOD_COUNTS, "pay_3": 2}}, "1 payment(s) forwarded more than once"),
    ({"gateway_counts": {**GOOD_COUNTS, "pay_4": 1}}, "declined offline reached the gateway"),
    ({"events": [event("failover", 20 + 5.2, 1), *GOOD_EVENTS[1:]]},
     "failover took 5.20 s (more than 5 s)"),
    ({"events": GOOD_EVENTS[1:]}, "no failover to LTE during the blackhole"),
    ({"events": [event("failover", 9.0, 0), *GOOD_EVENTS]},
     "1 failover(s) during the loss phase"),
    ({"events": [GOOD_EVENTS[0], GOOD_EVENTS[2]]}, "offline mode never reached"),
    ({"final": {"uplink": {"active": "lte"}, "payments": {"queued": 0}}},
     "not recovered at the end: active uplink 'lte'"),
    ({"final": {"uplink": {"active": "wired"}, "payments": {**FINAL["payments"], "queued": 3}}},
     "3 payment(s) still queued"),
    ({"arrivals": {**GOOD_ARRIVALS, "pay_3": Arrival(True, None)}},
     "1 offline forward(s) arrived unsealed"),
    ({"arrivals": {**GOOD_ARRIVALS, "pay_3": Arrival(True, "fedcba9876543210")}},
     "1 offline forward(s) sealed under another kid than 0123456789abcdef"),
    ({"card_refused_422": 2}, "2 sealed card(s) refused by the gateway (422)"),
    ({"final": {**FINAL, "payments": {**FINAL["payments"], "protection": "local",
                                      "seal_kid": None}}},
     "the box's status says protection 'local', kid None, not sealed under"),
    ({"final": {**FINAL, "payments": {**FINAL["payments"], "seal_kid": "fedcba9876543210"}}},
     "kid 'fedcba9876543210', not sealed under 0123456789abcdef"),
])
def test_each_failure_fails_the_drill(changes: dict[str, Any], failure: str) -> None:
    assert_fails_with(report(**changes), failure)


FLAGGED = box_event(T0, "fault", 12.0, 9, reason="approved_after_declined_offline",
                    payment_id="pay_4")


def test_a_decline_offline_approved_online_and_flagged_is_no_leak() -> None:
    """The online attempt reached the gateway, its answer was lost (a connection closed
    mid-request), the box declined offline and later found it approved: it flags it for
    the shop (a double payment to check), and it is at the gateway once."""
    r = report(gateway_counts={**GOOD_COUNTS, "pay_4": 1}, events=[*GOOD_EVENTS, FLAGGED],
               arrivals={**GOOD_ARRIVALS, "pay_4": Arrival(False, None)})
    assert r.passed, r.failures
    assert r.flagged == ["pay_4"] and r.leaked == [] and r.forwarded_once == 5
    assert r.to_json()["exactly_once"]["declined_offline_approved_online_flagged"] == ["pay_4"]
    assert ("; 1 declined offline but approved online (the answer lost), each flagged by the "
            "box: check for a double payment") in render(r)


@pytest.mark.parametrize("changes", [
    {"events": GOOD_EVENTS},  # not flagged by the box
    {"arrivals": {**GOOD_ARRIVALS, "pay_4": Arrival(True, KID)}},  # forwarded offline
])
def test_a_decline_offline_at_the_gateway_otherwise_is_a_leak(changes: dict[str, Any]) -> None:
    args = {"gateway_counts": {**GOOD_COUNTS, "pay_4": 1}, "events": [*GOOD_EVENTS, FLAGGED],
            "arrivals": {**GOOD_ARRIVALS, "pay_4": Arrival(False, None)}, **changes}
    r = report(**args)
    assert r.leaked == ["pay_4"] and r.flagged == []
    assert_fails_with(r, "1 payment(s) declined offline reached the gateway (forwarded, or "
                         "online without the box flagging it)")


def test_a_failed_request_is_listed_with_its_reason() -> None:
    broken = sale(9, "", "blackhole", http=None, error="no answer within 10 s")  # type: ignore[arg-type]
    r = report(sales=[*GOOD_SALES, broken])
    assert r.failed_requests == ["drill-1-9 (blackhole, after 0.05 s): no answer within 10 s"]
    assert r.payments["failed"] == 1


def test_an_answer_without_id_is_a_failed_request() -> None:
    odd = dataclasses.replace(sale(7, "approved"), answer={"status": "approved"})
    assert not report(sales=[*GOOD_SALES, odd]).passed


def test_offline_seconds_counts_only_time_without_an_uplink() -> None:
    samples = [Sample(0, "wired"), Sample(1, "none"), Sample(2.5, "none"), Sample(3, "lte"),
               Sample(4, "none"), Sample(4.5, "wired")]
    assert offline_seconds(samples, 0.0) == pytest.approx(2.0 + 0.5)
    assert offline_seconds(samples, 3.5) == pytest.approx(0.5)
    assert offline_seconds([], 0.0) == 0.0


def test_phases_not_played_are_not_judged() -> None:
    only_blackhole = [p for p in phases() if p.name in ("normal", "blackhole", "recovery")]
    sales = [sale(1, "approved")]
    r = report(phases=only_blackhole, events=[GOOD_EVENTS[0]], sales=sales,
               gateway_counts={"pay_1": 1})
    assert r.passed, r.failures
    assert r.offline_after_s is None and r.failovers_in_loss == 0


def test_unsealed_and_refused_forwards_are_counted_in_the_report() -> None:
    arrivals = {**GOOD_ARRIVALS, "pay_3": Arrival(True, None), "pay_6": Arrival(True, KID),
                "pay_7": Arrival(True, "fedcba9876543210")}
    r = report(arrivals=arrivals, card_refused_422=1)
    assert r.sealing["offline_forwards"] == 3 and r.sealing["sealed"] == 1
    assert r.sealing["unsealed"] == ["pay_3"] and r.sealing["other_kid"] == ["pay_7"]
    assert r.sealing["refused_422"] == 1
    assert (f"offline forwards: 3, 1 sealed (kid {KID}), 1 UNSEALED, 1 under another kid, "
            "1 opened by the gateway, 1 refused") in render(r)


def test_online_authorizations_carry_the_card_and_are_not_offline_forwards() -> None:
    # an online payment sends the card with its CVC (docs/gateway-protocol.md):
    # not a sealing failure;
    # nor is an offline approval whose lost online attempt the box found by lookup
    r = report(arrivals={**GOOD_ARRIVALS, "pay_3": Arrival(False, None)})
    assert r.passed, r.failures
    assert r.sealing["offline_forwards"] == 0 and r.sealing["resolved_online"] == ["pay_3"]
    assert "offline forwards: 0, none to judge" in render(r)
    assert "(1 offline approval(s) had reached the gateway online)" in render(r)


def test_without_a_seal_key_there_is_no_sealing_verdict() -> None:
    final = {"uplink": {"active": "wired"}, "payments": {"queued": 0, "protection": "local"}}
    r = report(seal_kid=None, arrivals={"pay_3": Arrival(True, None)}, final=final)
    assert r.passed, r.failures
    assert r.sealing == {} and "sealing" not in render(r)

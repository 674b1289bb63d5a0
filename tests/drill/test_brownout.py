"""The drill's brownout section, from a synthetic timeline: the steer's times, the payments
in the phase, the shop left on wired, and each failure it must catch."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from lab.drill.brownout import STEERED_ROUTES, latency, steer_limit_s
from lab.drill.observed import PlayedPhase, Sample
from lab.drill.report import Report, build_report, render
from lab.pos import Sale
from tests.drill.synthetic import assert_fails_with, box_event, played

T0 = datetime(2021, 10, 25, 11, 20, tzinfo=UTC)
# normal 0-5 s, brownout (the loss) 5-35 s, unsteer 35-49 s (ended once unsteered), recovery
LENGTHS = [("normal", 5.0), ("brownout", 30.0), ("unsteer", 14.0), ("recovery", 2.0)]
LIMIT = steer_limit_s(5.0, 5.0)


def phases() -> list[PlayedPhase]:
    return played(LENGTHS, T0)


def event(kind: str, second: float, **extra: Any) -> dict[str, Any]:
    return box_event(T0, kind, second, int(second * 10), **extra)


STEER = event("steer", 5 + 7.5, reason="brownout: wired round-trip loss 58% over 10.0s")
UNSTEER = event("unsteer", 35 + 13.6, reason="wired recovered: round-trip loss 0% for 10.0s")


def sale(n: int, started: float, seconds: float, mode: str = "online",
         phase: str = "brownout") -> Sale:
    status = "approved_offline" if mode == "offline" else "approved"
    return Sale(f"drill-{n}", "pos-1", phase, 12000, started, seconds, 200,
                {"id": f"pay_{n}", "status": status, "mode": mode})


# two sales a second through the loss: before the steer (12.5 s) a few slow ones and one
# that stood in after the box's 3 s online deadline, after it all fast (by LTE)
SALES = [sale(n, 5 + n / 2, 0.9 if n % 5 == 0 else 0.12) for n in range(15)]
SALES[7] = sale(7, 8.5, 3.05, mode="offline")
SALES += [sale(n, 5 + n / 2, 0.04) for n in range(15, 60)]
SALES += [sale(99, 2.0, 0.02, phase="normal"), sale(98, 40.0, 0.03, phase="unsteer")]
COUNTS = {s.payment_id or "": 1 for s in SALES}
FINAL = {"uplink": {"active": "wired"}, "payments": {"queued": 0}}
SAMPLES = [Sample(t / 2, "wired") for t in range(0, 104)]


def report(**changes: Any) -> Report:
    args: dict[str, Any] = {"phases": phases(), "samples": SAMPLES, "sales": SALES,
                            "events": [STEER, UNSTEER], "gateway_counts": COUNTS,
                            "final": FINAL, "steer_routes": STEERED_ROUTES,
                            "max_steer_s": LIMIT, "brownout_pct": 37}
    args.update(changes)
    return build_report(**args)


def test_a_clean_brownout_shows_the_steer_payments_and_unsteer() -> None:
    r = report()
    assert r.passed, r.failures
    b = r.to_json()["brownout"]
    assert b["steered_after_s"] == pytest.approx(7.5) and b["max_steer_s"] == 15.0
    assert b["unsteered_after_heal_s"] == pytest.approx(13.6)
    assert b["steer_reason"] == "brownout: wired round-trip loss 58% over 10.0s"
    assert b["failovers"] == 0 and b["active_uplinks"] == ["wired"]
    assert b["routes_while_steered"] == {"box_to_gateway": "wwan0",
                                         "shop_to_gateway": "wan0", "shop_to_internet": "wan0"}
    p = b["payments"]  # only the sales started in the brownout
    assert (p["total"], p["online"], p["stood_in"], p["failed"]) == (60, 59, 1, 0)
    assert p["latency"]["p50_s"] == pytest.approx(0.04)
    assert p["latency"]["max_s"] == pytest.approx(3.05)
    assert p["latency"]["p95_s"] <= 2.0
    assert p["before_steer"]["n"] == 15 and p["after_steer"]["n"] == 45
    assert p["after_steer"]["p95_s"] == pytest.approx(0.04)
    text = render(r)
    assert "  brownout      began 11:20:05, 37 % loss each way for 30 s" in text
    assert ("    steered     7.50 s after the loss began (limit 15 s): brownout: wired "
            "round-trip loss 58% over 10.0s") in text
    assert "    payments    60: 59 online, 1 stood in, 0 failed; p50 0.04 s" in text
    assert "(limit 2 s), max 3.05 s; after the steer p95 0.04 s (n=45)" in text
    assert "    unsteered   13.60 s after the loss ended: wired recovered" in text
    assert ("    the shop    0 failover(s), active uplink wired; routes while steered: the "
            "box's to the gateway via wwan0, the shop's via wan0 (to the gateway wan0)") in text


@pytest.mark.parametrize(("changes", "failure"), [
    ({"events": [UNSTEER]}, "the box did not steer the gateway's traffic to LTE"),
    ({"events": [event("steer", 5 + 15.2), UNSTEER]},
     "the box steered 15.20 s after the brownout began (more than 15 s)"),
    ({"events": [event("steer", 36.0), event("unsteer", 48.0)]},  # after the loss: too late
     "did not steer the gateway's traffic to LTE during the brownout"),
    ({"events": [STEER, event("failover", 20.0), UNSTEER]}, "1 failover(s) during the brownout"),
    ({"samples": [*SAMPLES[:40], Sample(20.0, "lte"), *SAMPLES[41:]]},
     "the active uplink was lte, wired during the brownout"),
    ({"steer_routes": {**STEERED_ROUTES, "shop_to_internet": "wwan0"}},
     "routes while steered {'box_to_gateway': 'wwan0', 'shop_to_gateway': 'wan0', "
     "'shop_to_internet': 'wwan0'}"),
    ({"steer_routes": None}, "routes while steered not read"),
    ({"sales": [sale(n, 5 + n / 2, 3.05, mode="offline") if n % 10 == 0 else s
                for n, s in enumerate(SALES)]},
     "payments p95 3.05 s during the brownout (more than 2 s)"),
    ({"events": [STEER, event("unsteer", 30.0), UNSTEER]},
     "the box unsteered while the brownout lasted"),
    ({"events": [STEER]}, "the gateway's traffic was not back on wired 14 s after the "
                          "brownout ended"),
])
def test_each_brownout_failure_fails_the_drill(changes: dict[str, Any], failure: str) -> None:
    assert_fails_with(report(**changes), failure)


def test_without_a_brownout_there_is_no_section() -> None:
    played = [p for p in phases() if p.name in ("normal", "recovery")]
    r = report(phases=played, events=[], sales=[SALES[-2]], steer_routes=None)
    assert r.passed, r.failures
    assert r.brownout == {} and r.to_json()["brownout"] == {}
    assert "brownout" not in render(r) and "steered" not in render(r)


def test_latency_figures() -> None:
    assert latency([]) == {"n": 0, "p50_s": None, "p95_s": None, "max_s": None}
    assert latency([0.5]) == {"n": 1, "p50_s": 0.5, "p95_s": 0.5, "max_s": 0.5}
    many = latency([i / 100 for i in range(1, 101)])
    assert many["p50_s"] == pytest.approx(0.505)
    assert many["p95_s"] == pytest.approx(0.9505, abs=1e-3)


def test_the_steer_limit_is_the_window_filled_held_and_one_more() -> None:
    assert steer_limit_s(5.0, 5.0) == 15.0
    assert steer_limit_s(2.0, 3.0) == 8.0

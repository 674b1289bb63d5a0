"""The live view: what the installer sees while the drill runs."""

from __future__ import annotations

import io
import re
from typing import Any

from lab.drill.live import Screen, frame, leds
from lab.pos import Sale

DOC: dict[str, Any] = {
    "uplink": {"active": "lte", "failovers_total": 1, "failbacks_total": 0,
               "wired": {"state": "down", "reason": "4 consecutive failed rounds"},
               "lte": {"state": "up", "latency_ms": 31.4, "loss_pct": 0.0}},
    "modem": {"operator": "KT", "rat": "lte", "signal_dbm": -71},
    "payments": {"queued": 2, "queued_amount": 24000, "oldest_queued_age_s": 12.3,
                 "forwarded_total": 5},
    "leds": {"wired": "off", "lte": "on", "offline": "blink", "alert": "blink"},
}


def sales() -> list[Sale]:
    return [
        Sale("k1", "pos-1", "blackhole", 12000, 0.0, 0.042, 200,
             {"id": "pay_1", "status": "approved", "mode": "online"}),
        Sale("k2", "pos-2", "lte_down", 8000, 1.0, 0.011, 200,
             {"id": "pay_2", "status": "declined_offline", "mode": "offline",
              "decline_reason": "velocity"}),
        Sale("k3", "pos-1", "lte_down", 9000, 2.0, 10.0, None, None, "no answer within 10 s"),
    ]


def test_frame_shows_uplinks_leds_queue_sales_and_events() -> None:
    text = frame(phase="blackhole", story="KT-style blackhole", elapsed=4.2, length=10,
                 doc=DOC, sales=sales(),
                 events=[{"at": "2021-10-25T11:20:03+00:00", "kind": "failover",
                          "message": "wired -> lte"}], tick=0)
    assert "phase blackhole (   4 / 10 s)" in text
    assert "active uplink  LTE   (failovers 1, failbacks 0)" in text
    assert "wired          down, 4 consecutive failed rounds" in text
    assert "lte            up, 31 ms, loss 0 %   modem: KT lte -71 dBm" in text
    assert "2 queued, 24,000 KRW, oldest 12 s; 5 forwarded after offline" in text
    assert "12,000 KRW  approved" in text
    assert "(velocity)" in text
    assert "FAILED no answer within 10 s" in text
    assert "11:20:03  failover: wired -> lte" in text


def test_blinking_leds_alternate_between_frames() -> None:
    assert leds(DOC, 0) == "○ wired  ● lte  ◉ offline  ◉ alert"
    assert leds(DOC, 1) == "○ wired  ● lte  ○ offline  ○ alert"
    assert leds({}, 0) == "(no LEDs reported)"


def test_frame_before_the_box_answers() -> None:
    text = frame(phase="normal", story="", elapsed=0, length=5, doc=None, sales=[], events=[])
    assert "waiting for the box to answer" in text
    assert "(none yet)" in text


def test_screen_redraws_in_place_on_a_terminal() -> None:
    out = io.StringIO()
    screen = Screen(out, live=True)
    screen.show("frame 1", "summary")
    screen.show("frame 2", "summary")
    assert out.getvalue() == "\x1b[H\x1b[2Jframe 1\n\x1b[H\x1b[2Jframe 2\n"


def test_screen_prints_one_line_per_change_elsewhere() -> None:
    out = io.StringIO()
    screen = Screen(out)  # a StringIO is not a terminal
    for summary in ("a", "a", "b", "b", "a"):
        screen.show("the frame", summary)
    lines = out.getvalue().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == ["a", "b", "a"]
    assert all(re.fullmatch(r"\[\d\d:\d\d:\d\d\] .", line) for line in lines)


def test_frame_shows_the_steer_and_the_fast_blinking_lte_led() -> None:
    doc = {**DOC, "uplink": {
        "active": "wired", "failovers_total": 0, "failbacks_total": 0,
        "wired": {"state": "degraded", "loss_pct": 14.0},
        "lte": {"state": "up", "latency_ms": 30.0},
        "steer": {"steered": True, "since": "2021-10-25T11:20:12+00:00",
                  "reason": "brownout: wired round-trip loss 58% over 10.0s", "steers_total": 1}},
        "leds": {"wired": "on", "lte": "blink_fast", "offline": "off", "alert": "off"}}
    text = frame(phase="brownout", story="brownout", elapsed=9.0, length=30, doc=doc,
                 sales=[], events=[], tick=0)
    assert ("  steer          the gateway's traffic BY LTE since 11:20:12, the shop on wired: "
            "brownout: wired round-trip loss 58% over 10.0s") in text
    assert "● wired  ◉ lte (fast)  ○ offline  ○ alert" in text
    assert "○ lte (fast)" in frame(phase="brownout", story="", elapsed=9.0, length=30,
                                   doc=doc, sales=[], events=[], tick=1)
    back = {**doc, "uplink": {**doc["uplink"], "steer": {"steered": False, "steers_total": 1}}}
    assert "the gateway's traffic with the shop (1 steer(s) so far)" in frame(
        phase="unsteer", story="", elapsed=1.0, length=40, doc=back, sales=[], events=[])
    assert "steer " not in frame(phase="normal", story="", elapsed=1.0, length=5, doc=DOC,
                                 sales=[], events=[])

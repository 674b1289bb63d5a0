"""The drill's live view: one frame of text from the box's status and the POS's answers.

`frame()` is pure (tests render it from plain dicts); `Screen` redraws it in place on a
terminal and falls back to one line per change when the output is not a terminal (CI).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from lab.pos import Sale

LED_GLYPHS = {"on": "●", "off": "○"}
BLINK_GLYPHS = ("◉", "○")  # a blinking LED alternates from one frame to the next
BLINKING = {"blink": "", "blink_fast": " (fast)"}  # lte's fast blink: the payments steered


def _health(doc: Mapping[str, Any], name: str) -> str:
    link = doc.get("uplink", {}).get(name, {}) or {}
    parts = [str(link.get("state", "?"))]
    if link.get("latency_ms") is not None:
        parts.append(f"{float(link['latency_ms']):.0f} ms")
    if link.get("loss_pct") is not None:
        parts.append(f"loss {float(link['loss_pct']):.0f} %")
    if link.get("reason"):
        parts.append(str(link["reason"]))
    return ", ".join(parts)


def leds(doc: Mapping[str, Any], tick: int) -> str:
    """The LED panel, e.g. `● wired  ◉ lte (fast)  ○ offline  ○ alert`."""
    panel = doc.get("leds") or {}
    if not panel:
        return "(no LEDs reported)"
    cells = []
    for name, state in panel.items():
        if state in BLINKING:
            cells.append(f"{BLINK_GLYPHS[tick % 2]} {name}{BLINKING[state]}")
        else:
            cells.append(f"{LED_GLYPHS.get(state, '?')} {name}")
    return "  ".join(cells)


def steer(doc: Mapping[str, Any]) -> str | None:
    """Where the payment gateway's traffic goes (`uplink.steer`, docs/schemas/status.json);
    None when the box reports no steering."""
    state = doc.get("uplink", {}).get("steer")
    if not state:
        return None
    if state.get("steered"):
        return (f"the gateway's traffic BY LTE since {str(state.get('since') or '')[11:19]}"
                f", the shop on wired: {state.get('reason')}")
    return f"the gateway's traffic with the shop ({state.get('steers_total', 0)} steer(s) so far)"


def _sale(sale: Sale) -> str:
    answer = sale.answer or {}
    what = sale.outcome if sale.outcome != "failed" else f"FAILED {sale.error}"
    reason = answer.get("decline_reason")
    return (f"{sale.terminal}  {sale.amount:>7,} KRW  {what:<17} "
            f"{answer.get('mode', ''):<7} {sale.seconds * 1000:6.0f} ms"
            + (f"  ({reason})" if reason else ""))


def frame(*, phase: str, story: str, elapsed: float, length: float,
          doc: Mapping[str, Any] | None, sales: Sequence[Sale],
          events: Sequence[Mapping[str, Any]], tick: int = 0) -> str:
    """The whole screen for one moment of the drill."""
    lines = [f"storebox outage drill — phase {phase} ({elapsed:4.0f} / {length:.0f} s)",
             f"  {story}", ""]
    if doc is None:
        lines.append("  waiting for the box to answer…")
    else:
        uplink = doc.get("uplink", {})
        payments = doc.get("payments", {})
        modem = doc.get("modem", {})
        oldest = payments.get("oldest_queued_age_s")
        lines += [
            f"  active uplink  {str(uplink.get('active', '?')).upper()}"
            f"   (failovers {uplink.get('failovers_total', 0)}, "
            f"failbacks {uplink.get('failbacks_total', 0)})",
            f"  wired          {_health(doc, 'wired')}",
            f"  lte            {_health(doc, 'lte')}   modem: {modem.get('operator') or '?'}"
            f" {modem.get('rat') or ''} {modem.get('signal_dbm') or ''} dBm",
            *([f"  steer          {steered}"] if (steered := steer(doc)) else []),
            f"  LEDs           {leds(doc, tick)}",
            f"  queue          {payments.get('queued', 0)} queued, "
            f"{payments.get('queued_amount', 0):,} KRW"
            + (f", oldest {float(oldest):.0f} s" if oldest is not None else "")
            + f"; {payments.get('forwarded_total', 0)} forwarded after offline",
        ]
    lines += ["", "  last sales"]
    lines += [f"    {_sale(s)}" for s in list(sales)[-5:]] or ["    (none yet)"]
    lines += ["", "  box events"]
    lines += [f"    {str(e.get('at', ''))[11:19]}  {e.get('kind')}: {e.get('message')}"
              for e in list(events)[-4:]] or ["    (none yet)"]
    return "\n".join(lines)


class Screen:
    """Redraws frames in place on a terminal; otherwise prints one line when the phase,
    the active uplink or the box's latest event changes."""

    def __init__(self, out: TextIO | None = None, live: bool | None = None) -> None:
        self.out = out or sys.stdout
        self.live = self.out.isatty() if live is None else live
        self._last_line = ""

    def show(self, text: str, summary: str) -> None:
        if self.live:
            self.out.write("\x1b[H\x1b[2J" + text + "\n")
            self.out.flush()
        elif summary != self._last_line:
            self._last_line = summary
            self.out.write(f"[{time.strftime('%H:%M:%S')}] {summary}\n")
            self.out.flush()

    def close(self) -> None:
        if self.live:
            self.out.write("\n")
            self.out.flush()

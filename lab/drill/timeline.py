"""The drill's timeline: which faults hold at the ISPs, phase after phase (pure data).

The default story is the KT outage of 25 Oct 2021, compressed:

    normal      everything works; payments go online via wired
    loss        20 % random loss on the wired line each way: no failover wanted
    brownout    37 % random loss each way (60 % of round trips): the box steers the
                payment gateway's traffic to LTE, the rest of the shop stays on wired
    unsteer     the loss ends: the gateway's traffic comes back to wired after the
                steer's hysteresis (`steer.unsteer_after_s` of good rounds)
    blackhole   the wired ISP drops everything, the link stays up: fail over to LTE
    lte_down    the LTE carrier fails as well: offline mode, payments stand in
    recovery    both recover: fail back to wired, offline payments forwarded once

`plan()` turns the drill's options into phases; phases a technician leaves out
(`faults`) are skipped, the rest keep their order.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from lab.errors import DrillError

PhaseName = Literal["normal", "loss", "brownout", "unsteer", "blackhole", "lte_down",
                    "recovery"]
FAULTS: tuple[str, ...] = ("loss", "brownout", "blackhole", "lte_down")
#: The phases that end early once the box got there (`seconds` is the most they may take).
UNTIL_PHASES: tuple[str, ...] = ("unsteer", "recovery")
#: The unsteer phase may take `unsteer_after_s` plus this: the box's window forgetting the
#: loss (`steer.window_s`, 5 s) and a margin.
UNSTEER_SLACK_S = 30.0


@dataclass(frozen=True)
class Faults:
    """What is broken during a phase."""

    wired_loss_pct: int = 0
    wired_blackhole: bool = False
    lte_blackhole: bool = False

    def describe(self) -> str:
        parts = []
        if self.wired_loss_pct:
            parts.append(f"{self.wired_loss_pct} % loss on wired")
        if self.wired_blackhole:
            parts.append("wired blackholed (link up)")
        if self.lte_blackhole:
            parts.append("LTE carrier blackholed")
        return ", ".join(parts) or "no faults"


@dataclass(frozen=True)
class Phase:
    name: PhaseName
    seconds: float  # unsteer, recovery: the most it may take (UNTIL_PHASES)
    faults: Faults
    story: str


@dataclass(frozen=True)
class Options:
    """The drill's knobs (CLI `storebox drill`)."""

    normal_s: float = 20.0
    loss_s: float = 60.0
    brownout_s: float = 45.0
    blackhole_s: float = 40.0
    lte_down_s: float = 30.0
    recovery_s: float = 120.0
    loss_pct: int = 20
    # 37 % each way = 60 % of round trips lost, the brownout of benchmarks/bench_failover.py;
    # 60 % each way (84 % of round trips) is a line the failover detector calls down
    brownout_pct: int = 37
    #: the box's `steer.unsteer_after_s` for the drill (the product's default: 30 s)
    unsteer_after_s: float = 30.0
    faults: tuple[str, ...] = FAULTS
    failback_after_s: float = 10.0
    pos_interval_s: float = 1.0
    terminals: int = 2

    def __post_init__(self) -> None:
        for name in ("normal_s", "loss_s", "brownout_s", "blackhole_s", "lte_down_s",
                     "recovery_s", "failback_after_s", "unsteer_after_s", "pos_interval_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise DrillError("options", f"{name} = {value!r}: must be a positive number")
        for name in ("loss_pct", "brownout_pct"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 60:
                raise DrillError("options", f"{name} = {value!r}: must be 1..60 "
                                 "(beyond that the line is down, not lossy)")
        if isinstance(self.terminals, bool) or not 1 <= self.terminals <= 16:
            raise DrillError("options", f"terminals = {self.terminals!r}: must be 1..16")
        unknown = [f for f in self.faults if f not in FAULTS]
        if unknown:
            raise DrillError("options", f"faults = {unknown[0]!r}: one of {', '.join(FAULTS)}")
        if "lte_down" in self.faults and "blackhole" not in self.faults:
            raise DrillError("options", "faults = 'lte_down' needs 'blackhole' "
                             "(the LTE carrier fails while the box depends on it)")


SHORT = Options(normal_s=5.0, loss_s=15.0, brownout_s=30.0, blackhole_s=10.0,
                lte_down_s=8.0, recovery_s=60.0, failback_after_s=4.0,
                unsteer_after_s=10.0, pos_interval_s=0.5)


def parse_faults(text: str) -> tuple[str, ...]:
    """`"loss,blackhole"` -> ("loss", "blackhole"); DrillError naming a bad entry."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    for name in names:
        if name not in FAULTS:
            raise DrillError("options", f"faults = {name!r}: one of {', '.join(FAULTS)}")
    return names


def options_from_args(args: argparse.Namespace) -> Options:
    """The options `storebox drill` was given (`firmware.cli.drill_cmd`): SHORT or the
    defaults, with each option the technician set; DrillError naming a bad value."""
    base = SHORT if args.short else Options()
    changes: dict[str, object] = {}
    for arg, field in (("normal_s", "normal_s"), ("loss_s", "loss_s"),
                       ("brownout_s", "brownout_s"), ("blackhole_s", "blackhole_s"),
                       ("lte_down_s", "lte_down_s"), ("recovery_s", "recovery_s"),
                       ("loss", "loss_pct"), ("brownout", "brownout_pct"),
                       ("failback_after_s", "failback_after_s"),
                       ("unsteer_after_s", "unsteer_after_s"),
                       ("pos_interval_s", "pos_interval_s"), ("terminals", "terminals")):
        value = getattr(args, arg)
        if value is not None:
            changes[field] = value
    if args.faults is not None:
        changes["faults"] = parse_faults(args.faults)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]  # checked there


def plan(options: Options) -> list[Phase]:
    """The phases to play, in order; the last one is always the recovery."""
    faults: Iterable[str] = options.faults
    wanted = set(faults)
    phases = [Phase("normal", options.normal_s, Faults(),
                    "normal trading: payments online via wired")]
    if "loss" in wanted:
        phases.append(Phase("loss", options.loss_s, Faults(wired_loss_pct=options.loss_pct),
                            f"{options.loss_pct} % random loss on the wired line: "
                            "no failover wanted"))
    if "brownout" in wanted:
        phases += _brownout(options)
    if "blackhole" in wanted:
        phases.append(Phase("blackhole", options.blackhole_s, Faults(wired_blackhole=True),
                            "KT-style blackhole at the ISP, link up: fail over to LTE"))
    if "lte_down" in wanted:
        phases.append(Phase("lte_down", options.lte_down_s,
                            Faults(wired_blackhole=True, lte_blackhole=True),
                            "the LTE carrier fails as well: offline, payments stand in"))
    phases.append(Phase("recovery", options.recovery_s, Faults(),
                        "both recover: fail back to wired, forward offline payments once"))
    return phases


def _brownout(options: Options) -> list[Phase]:
    """The brownout, then the wait for the unsteer (failover/steer.py's hysteresis)."""
    pct = options.brownout_pct
    lost = round(100 * (1 - (1 - pct / 100) ** 2))
    return [Phase("brownout", options.brownout_s, Faults(wired_loss_pct=pct),
                  f"brownout: {pct} % loss on wired each way ({lost} % of round trips): "
                  "steer the gateway's traffic to LTE, the shop stays on wired"),
            Phase("unsteer", options.unsteer_after_s + UNSTEER_SLACK_S, Faults(),
                  "the brownout ends: the gateway's traffic back to wired after "
                  f"{options.unsteer_after_s:g} s of good rounds")]

"""Quiet pacing: a line that answers every probe at once is probed at a lower rate.

The sequential detector (``failover.sequential``) starts a round every 0.2 s: 15
probes a second, most of the idle daemon's CPU (issue 13: 1.15 % of a core with the
default targets, 0.72 % at 0.4 s, BENCHMARKS.md "Idle CPU: quiet pacing"). Nearly all of
those rounds say nothing new: every probe answered its first attempt within a few
milliseconds. So while the line is *quiet* -- usable, the down test at rest (its
statistic 0), and the last ``quiet_after_rounds`` rounds answered in full -- rounds start
every ``quiet_interval_s`` (0.4 s) instead. Anything that looks off ends the quiet at
once: a round with a failed probe, evidence above 0, or a round still unanswered
``quiet_late_s`` (0.1 s, the probes' first retry) after it started. The next round then
starts ``round_interval_s`` after the late one, so from the first late round on the
schedule is the full-rate one the detector's arithmetic assumes.

What it costs. A blackhole is first seen by the first round that starts after it (or
one in flight at its start): at full rate that round starts within ``I`` = 0.2 s of the
onset, in quiet within ``I_q`` = 0.4 s. Every later step is the same (the late round
sets the pace; it fails at its 0.6 s deadline, the 4th failed round completes ``3·I``
later), so detection takes ``D + 3·I`` to ``D + 3·I + I_q`` = 1.2-1.6 s instead of
1.2-1.4 s: 0.1 s more on average (``decision.detection_time_bounds_s``).

What it does not change. The false-alarm bound is Lorden's, in rounds: the threshold
is set for ``3600 / round_interval_s`` rounds an hour, an upper bound on the rounds
actually run, so fewer rounds only mean fewer chances for a false alarm. Under loss the
line is never quiet for long (at 20 % loss each way a probe's first attempt fails 36 %
of the time): its rounds are the full-rate ones. Brownout steering sees every round as
before. The LTE line (the rounds detector, on a data budget) is paced by the standby
rules, not by this.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from failover.config import MonitorConfig
from failover.link import LinkStatus, RoundOutcome

__all__ = ["QuietPace"]


@dataclass(slots=True)
class QuietPace:
    """One uplink's pace. ``interval_s=None`` turns quiet pacing off (always full rate);
    ``wake`` is called when the quiet ends (the probe loop then starts the next round
    at the full rate instead of waiting out the quiet interval)."""

    interval_s: float | None
    late_s: float
    after_rounds: int
    wake: Callable[[], None]
    quiet: bool = False
    clean: int = 0  # consecutive rounds answered in full, promptly, at rest

    @classmethod
    def of(cls, config: MonitorConfig, wake: Callable[[], None]) -> QuietPace:
        return cls(config.quiet_interval_s, config.quiet_late_s, config.quiet_after_rounds,
                   wake)

    def interval(self, full_rate_s: float) -> float:
        """The time between round starts now."""
        if self.quiet and self.interval_s is not None:
            return max(self.interval_s, full_rate_s)
        return full_rate_s

    def watch(self) -> asyncio.TimerHandle | None:
        """A round starts: while quiet, its lateness is watched (cancel the handle when
        the round ends)."""
        if not self.quiet:
            return None
        return asyncio.get_running_loop().call_later(self.late_s, self.late)

    def late(self) -> None:
        """A round is unanswered ``late_s`` after its start, or ended badly."""
        self.clean = 0
        if self.quiet:
            self.quiet = False
            self.wake()

    def round_done(self, outcome: RoundOutcome, status: LinkStatus, took_s: float) -> None:
        """A round completed after ``took_s``; ``status`` is the link's after it. Only a
        round answered in full, promptly, with the down test at rest counts as clean."""
        if self.interval_s is None:
            return
        clean = (outcome.ok and outcome.succeeded == outcome.attempted
                 and status.usable and status.evidence == 0 and took_s <= self.late_s)
        if not clean:
            self.late()
            return
        self.clean += 1
        if self.clean >= self.after_rounds:
            self.quiet = True

    def describe(self) -> dict[str, object]:
        return {"quiet": self.quiet, "clean_rounds": self.clean}

"""The lab's one error: a step of the drill (or of a lab fixture) could not be done."""

from __future__ import annotations


class DrillError(Exception):
    """The outage drill could not set up or run a step; `step` names it, `detail` says why."""

    def __init__(self, step: str, detail: str) -> None:
        self.step = step
        self.detail = detail
        super().__init__(f"drill: {step}: {detail}")

"""SIGKILL the daemon at random moments under POS load: nothing lost, nothing twice."""

from __future__ import annotations

from pathlib import Path

from tests.support.crash_drill import crash_drill

KILLS = 50  # `make bench` runs 1,000


async def test_kill_restart_then_drain_is_exactly_once(netns: str, tmp_path: Path) -> None:
    report = await crash_drill(netns, tmp_path, kills=KILLS, seed=2021)
    summary = report.summary()
    print(summary)
    assert report.kills == KILLS
    assert report.approved_offline > KILLS, summary  # real load between the kills
    assert report.answered_after_retry > 0, summary  # kills did land mid-request
    assert report.lost == [], summary
    assert report.duplicated == [], summary
    assert report.unexpected == [], summary
    assert report.conflicts_422 == 0, summary
    assert report.integrity == "ok", summary

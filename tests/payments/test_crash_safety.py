"""SIGKILL the daemon at random moments under POS load: nothing lost, nothing twice.

The box seals every card it keeps to the gateway simulator's key (docs/gateway-protocol.md), so the
drill also proves that every payment forwarded after the kills arrived sealed under the
box's kid and was opened by the gateway, and that no sealed card was refused (a card
re-sealed after a kill would be a different body: 422 conflict)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.crash_drill import CrashReport, crash_drill

KILLS = 50  # `make bench` runs 1,000
UNSEALED_KILLS = 20  # boxes without a seal key keep cards under the local key


def check_exactly_once(report: CrashReport, kills: int) -> None:
    summary = report.summary()
    print(summary)
    assert report.kills == kills
    assert report.approved_offline > kills, summary  # real load between the kills
    assert report.answered_after_retry > 0, summary  # kills did land mid-request
    assert report.lost == [], summary
    assert report.duplicated == [], summary
    assert report.unexpected == [], summary
    assert report.conflicts_422 == 0, summary
    assert report.integrity == "ok", summary


def check_sealed(report: CrashReport) -> None:
    """Every forwarded payment arrived as an offline authorization sealed under the box's
    kid, and the gateway opened each one."""
    summary = report.summary()
    assert report.seal_kid is not None, summary
    assert report.not_sealed == [], summary
    assert report.card_refused_422 == 0, summary
    assert report.offline_forwards == report.approved_offline, summary
    assert report.sealed_forwards == report.offline_forwards, summary


@pytest.mark.timeout(360)
async def test_kill_restart_then_drain_is_exactly_once_and_sealed(
        netns: str, tmp_path: Path) -> None:
    # generous: on 2 busy cores restarts and the drain of interrupted payments are slow
    report = await crash_drill(netns, tmp_path, kills=KILLS, seed=2021, sealed=True,
                               drain_timeout=240)
    check_exactly_once(report, KILLS)
    check_sealed(report)


@pytest.mark.timeout(300)
async def test_without_a_seal_key_kill_restart_then_drain_is_exactly_once(
        netns: str, tmp_path: Path) -> None:
    """The local-key path (no `payments.seal_key_file`), fewer kills to spare CI time."""
    report = await crash_drill(netns, tmp_path, kills=UNSEALED_KILLS, seed=2022,
                               sealed=False, drain_timeout=240)
    check_exactly_once(report, UNSEALED_KILLS)
    assert report.seal_kid is None and report.sealed_forwards == 0, report.summary()
    assert report.card_refused_422 == 0, report.summary()
    assert report.offline_forwards == report.approved_offline, report.summary()

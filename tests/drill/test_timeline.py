"""The drill's timeline: phase order, skipped faults, and option errors that name the value."""

from __future__ import annotations

import dataclasses

import pytest

from lab.drill.timeline import SHORT, Faults, Options, parse_faults, plan
from lab.errors import DrillError


def test_the_default_story_is_the_kt_outage_in_order() -> None:
    phases = plan(Options())
    assert [p.name for p in phases] == ["normal", "loss", "blackhole", "lte_down", "recovery"]
    assert phases[1].faults == Faults(wired_loss_pct=20)
    assert phases[2].faults == Faults(wired_blackhole=True)
    assert phases[3].faults == Faults(wired_blackhole=True, lte_blackhole=True)
    assert phases[0].faults == phases[4].faults == Faults()
    assert [p.seconds for p in phases] == [20.0, 60.0, 40.0, 30.0, 120.0]


def test_faults_left_out_are_skipped_and_the_recovery_stays() -> None:
    phases = plan(Options(faults=("blackhole",)))
    assert [p.name for p in phases] == ["normal", "blackhole", "recovery"]
    assert [p.name for p in plan(Options(faults=()))] == ["normal", "recovery"]


def test_loss_rate_reaches_the_loss_phase() -> None:
    phases = plan(Options(loss_pct=35))
    assert phases[1].faults.wired_loss_pct == 35
    assert "35 %" in phases[1].story
    assert phases[1].faults.describe() == "35 % loss on wired"


def test_short_is_about_a_minute_of_faults() -> None:
    phases = plan(SHORT)
    assert sum(p.seconds for p in phases if p.name != "recovery") <= 60
    assert SHORT.failback_after_s < Options().failback_after_s


@pytest.mark.parametrize(("change", "named"), [
    ({"loss_s": 0}, "loss_s = 0"),
    ({"normal_s": -1.0}, "normal_s = -1.0"),
    ({"loss_pct": 90}, "loss_pct = 90"),
    ({"loss_pct": True}, "loss_pct = True"),
    ({"terminals": 0}, "terminals = 0"),
    ({"faults": ("loss", "meteor")}, "faults = 'meteor'"),
    ({"faults": ("lte_down",)}, "needs 'blackhole'"),
])
def test_bad_options_name_the_field_and_value(change: dict[str, object], named: str) -> None:
    with pytest.raises(DrillError) as caught:
        dataclasses.replace(Options(), **change)  # type: ignore[arg-type]
    assert named in str(caught.value)


def test_parse_faults() -> None:
    assert parse_faults("loss, blackhole") == ("loss", "blackhole")
    assert parse_faults("") == ()
    with pytest.raises(DrillError, match="'dns'"):
        parse_faults("loss,dns")

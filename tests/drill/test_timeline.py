"""The drill's timeline: phase order, skipped faults, and option errors that name the value."""

from __future__ import annotations

import dataclasses

import pytest

from lab.drill.timeline import SHORT, UNSTEER_SLACK_S, Faults, Options, parse_faults, plan
from lab.errors import DrillError


def test_the_default_story_is_the_kt_outage_in_order() -> None:
    phases = plan(Options())
    assert [p.name for p in phases] == ["normal", "loss", "brownout", "unsteer", "blackhole",
                                        "lte_down", "recovery"]
    assert phases[1].faults == Faults(wired_loss_pct=20)
    # the bench's brownout: 37 % each way, 60 % of round trips lost
    assert phases[2].faults == Faults(wired_loss_pct=37)
    assert "37 % loss on wired each way (60 % of round trips)" in phases[2].story
    assert phases[3].faults == Faults()  # the loss is over; the box unsteers
    assert phases[4].faults == Faults(wired_blackhole=True)
    assert phases[5].faults == Faults(wired_blackhole=True, lte_blackhole=True)
    assert phases[0].faults == phases[6].faults == Faults()
    assert [p.seconds for p in phases] == [20.0, 60.0, 45.0, 30.0 + UNSTEER_SLACK_S, 40.0,
                                           30.0, 120.0]


def test_the_brownout_and_its_unsteer_come_and_go_together() -> None:
    phases = plan(Options(faults=("brownout",), brownout_pct=45, unsteer_after_s=12.0))
    assert [p.name for p in phases] == ["normal", "brownout", "unsteer", "recovery"]
    assert phases[1].faults == Faults(wired_loss_pct=45)
    assert phases[2].seconds == 12.0 + UNSTEER_SLACK_S
    assert "after 12 s of good rounds" in phases[2].story
    assert "unsteer" not in [p.name for p in plan(Options(faults=("loss", "blackhole")))]


def test_faults_left_out_are_skipped_and_the_recovery_stays() -> None:
    phases = plan(Options(faults=("blackhole",)))
    assert [p.name for p in phases] == ["normal", "blackhole", "recovery"]
    assert [p.name for p in plan(Options(faults=()))] == ["normal", "recovery"]


def test_loss_rate_reaches_the_loss_phase() -> None:
    phases = plan(Options(loss_pct=35))
    assert phases[1].faults.wired_loss_pct == 35
    assert "35 %" in phases[1].story
    assert phases[1].faults.describe() == "35 % loss on wired"


def test_short_is_about_a_minute_of_faults_and_a_brownout() -> None:
    phases = plan(SHORT)
    assert sum(p.seconds for p in phases if p.name not in ("recovery", "brownout",
                                                           "unsteer")) <= 40
    # the brownout's loss long enough for its payments' p95 to outweigh those before the
    # steer; the unsteer waits for a shorter hysteresis than the product's 30 s
    assert 20 <= SHORT.brownout_s <= 45
    assert SHORT.unsteer_after_s < Options().unsteer_after_s
    assert SHORT.failback_after_s < Options().failback_after_s


@pytest.mark.parametrize(("change", "named"), [
    ({"loss_s": 0}, "loss_s = 0"),
    ({"normal_s": -1.0}, "normal_s = -1.0"),
    ({"loss_pct": 90}, "loss_pct = 90"),
    ({"loss_pct": True}, "loss_pct = True"),
    ({"brownout_pct": 84}, "brownout_pct = 84"),
    ({"brownout_pct": 37.5}, "brownout_pct = 37.5"),
    ({"brownout_s": 0}, "brownout_s = 0"),
    ({"unsteer_after_s": -3}, "unsteer_after_s = -3"),
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
    assert parse_faults("brownout") == ("brownout",)
    assert parse_faults("") == ()
    with pytest.raises(DrillError, match="'dns'"):
        parse_faults("loss,dns")

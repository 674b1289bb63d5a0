"""`storebox drill --short`: the end-to-end acceptance test of the whole box.

The real daemon in a shop made of namespaces, with the modem simulator, mock LEDs and the
gateway simulator; a POS on the LAN; 20 % loss, a brownout (37 % loss each way: the
gateway's traffic steered to LTE and back, the shop on wired), a KT-style blackhole, the
LTE carrier failing too, recovery. It fails on any unanswered sale, lost or duplicated
payment, failover slower than 5 s, failover during the loss phase or the brownout, a
steer later than `[steer]` promises, or payments p95 above 2 s in the brownout. The box
seals every card it keeps to a seal key made for the run (docs/gateway-protocol.md): every
offline forward must arrive sealed under that key's kid and be opened by the gateway
simulator.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from firmware.cli.main import main
from lab.drill import runner
from lab.errors import DrillError

REPO = Path(__file__).resolve().parents[2]


def namespaces_of(pid: int) -> list[str]:
    """The network namespaces drill `pid` made (`sbd<role>-<pid>-<n>`) still there; another
    drill running on the machine meanwhile is not this one's leak."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line for line in listed.splitlines()
            if line.startswith("sbd") and f"-{pid}-" in line.split()[0]]


@pytest.mark.timeout(300)
def test_short_drill_passes_end_to_end(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the drill builds network namespaces: root only (CI runs as root)")
    report_path = tmp_path / "report.json"
    with subprocess.Popen(
            [sys.executable, "-m", "firmware", "drill", "--short", "--no-live",
             "--json", str(report_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO))) as drill:
        out, err = drill.communicate(timeout=280)
    proc = subprocess.CompletedProcess(drill.args, drill.returncode, out, err)
    print(proc.stdout[-6000:], proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["passed"] and report["failures"] == []
    assert [p["name"] for p in report["phases"]] == [
        "normal", "loss", "brownout", "unsteer", "blackhole", "lte_down", "recovery"]
    assert report["failover_s"] < 5.0
    assert report["failovers_in_loss"] == 0
    # the brownout: the gateway's traffic by LTE in time, the shop left on wired, payments
    # online and quick, and back on wired after the hysteresis
    brownout = report["brownout"]
    assert brownout["steered_after_s"] is not None
    assert brownout["steered_after_s"] <= brownout["max_steer_s"] == 15.0
    assert brownout["failovers"] == 0 and brownout["active_uplinks"] == ["wired"]
    assert brownout["routes_while_steered"] == {
        "box_to_gateway": "wwan0", "shop_to_gateway": "wan0", "shop_to_internet": "wan0"}
    in_phase = brownout["payments"]
    assert in_phase["total"] > 0 and in_phase["failed"] == 0
    assert in_phase["online"] > in_phase["stood_in"]
    assert in_phase["latency"]["p95_s"] <= 2.0
    assert not brownout["unsteered_in_loss"]
    assert brownout["unsteered_after_heal_s"] is not None
    assert f"    steered     {brownout['steered_after_s']:.2f} s after the loss began" \
        in proc.stdout
    assert report["offline_after_s"] is not None and report["offline_s"] > 0
    payments = report["payments"]
    assert payments["failed"] == 0
    assert payments["approved_online"] > 0 and payments["approved_offline"] > 0
    once = report["exactly_once"]
    assert once["lost"] == [] and once["duplicated"] == []
    counts = once["gateway_count_per_payment"]
    assert len(counts) == payments["total"]  # every answered sale, by its payment id
    assert set(counts.values()) <= {0, 1}
    assert sum(counts.values()) == once["forwarded_once"]
    # every answered payment but those declined offline reached the gateway exactly once
    assert once["forwarded_once"] >= payments["approved_online"] + payments["approved_offline"]
    assert report["final"]["active"] == "wired" and report["final"]["queued"] == 0
    assert report["final"]["forwarded_total"] >= payments["approved_offline"]
    assert "PASSED" in proc.stdout
    # every offline forward arrived sealed to the drill's gateway key and was opened
    sealing = report["sealing"]
    assert sealing["offline_forwards"] > 0
    assert sealing["unsealed"] == [] and sealing["other_kid"] == []
    assert sealing["sealed"] == sealing["opened"] == sealing["offline_forwards"]
    assert sealing["refused_422"] == 0
    assert sealing["box_protection"] == "sealed" and sealing["box_seal_kid"] == sealing["kid"]
    # each offline approval arrived as a sealed offline forward, or was found by lookup
    # at the gateway (its online attempt had arrived, the answer was lost)
    assert sealing["offline_forwards"] + len(sealing["resolved_online"]) \
        == payments["approved_offline"]
    assert (f"offline forwards: {sealing['offline_forwards']}, all sealed "
            f"(kid {sealing['kid']})") in proc.stdout
    # the fleet operator (`fleet serve`) heard of it all, the outage's events once the
    # box was back, and opened one incident for the KT outage (incident_min_boxes = 1)
    fleet = report["fleet"]
    assert fleet["caught_up"] is True and fleet["status"] == "online"
    assert fleet["malformed"] == 0
    assert {"failover", "offline_mode", "failback", "steer", "unsteer"} <= set(fleet["kinds"])
    assert fleet["active"] == "wired" and fleet["state_changes"] >= 2
    assert fleet["incidents"] == 1
    title = fleet["incident"]["title"]
    assert title.startswith("KT wired down at 1 shop"), title
    assert f"incident      #{fleet['incident']['id']} {title}" in proc.stdout
    # the drill leaves no namespace behind
    assert namespaces_of(drill.pid) == []


def test_without_root_the_drill_explains_what_it_needs(mocker: object) -> None:
    mocker.patch("os.geteuid", return_value=1000)  # type: ignore[attr-defined]
    with pytest.raises(DrillError) as caught:
        runner.preflight()
    message = str(caught.value)
    assert "needs root" in message and "sudo make run" in message
    assert "lab.gateway_sim" in message and "make box" in message


def test_missing_tools_are_named(mocker: object) -> None:
    mocker.patch("os.geteuid", return_value=0)  # type: ignore[attr-defined]
    mocker.patch("shutil.which",  # type: ignore[attr-defined]
                 side_effect=lambda tool: None if tool == "conntrack" else "/usr/sbin/" + tool)
    with pytest.raises(DrillError, match="missing conntrack"):
        runner.preflight()


def test_without_the_lab_the_drill_says_it_needs_the_source_tree(
        mocker: object, capsys: pytest.CaptureFixture[str]) -> None:
    """The .deb leaves `lab/` out: `storebox drill` there names what is missing."""
    mocker.patch.dict(sys.modules, {"lab.drill.runner": None})  # type: ignore[attr-defined]
    assert main(["drill", "--short"]) == 2
    err = capsys.readouterr().err
    assert "source tree (lab/)" in err and "make run" in err


@pytest.mark.parametrize(("args", "named"), [
    (["--faults", "loss,meteor"], "faults = 'meteor'"),
    (["--loss", "90"], "loss_pct = 90"),
    (["--short", "--blackhole-s", "0"], "blackhole_s = 0"),
])
def test_bad_drill_options_exit_2_naming_the_value(
        args: list[str], named: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drill", *args]) == 2
    assert named in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_ctrl_c_tears_everything_down() -> None:
    if os.geteuid() != 0:
        pytest.skip("the drill builds network namespaces: root only (CI runs as root)")
    # SIGINT as a terminal delivers it: a suite started in the background by a shell
    # without job control inherits SIGINT ignored, and Python then keeps it ignored
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware", "drill", "--short", "--no-live"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # the drill is selling: the box, POS and simulators all run
        seen.append(line)
        if "phase loss" in line:
            break
    else:
        raise AssertionError(f"the drill never reached the loss phase: {seen}")
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    assert namespaces_of(proc.pid) == []
    daemons = subprocess.run(["pgrep", "-f", "firmware run --config /tmp/storebox-drill-"],
                             capture_output=True, text=True).stdout
    assert daemons == ""
    assert "the drill's files" not in "".join(seen) + rest  # its work dir is gone

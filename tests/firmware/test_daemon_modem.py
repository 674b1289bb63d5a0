"""The daemon drives the LTE modem (the built-in EC25 simulator, chosen by config)."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.cli.main import main
from tests.support.daemon import DaemonProcess, write_config


def start(netns: str, tmp: Path, sim: str) -> DaemonProcess:
    config = write_config(tmp, lte={"simulator": sim, "apn": "lte.sktelecom.com"})
    proc = DaemonProcess(netns, config)
    proc.notify.wait_for("READY", "1")
    return proc


def wait_status(daemon: DaemonProcess, check: Any, what: str) -> dict[str, Any]:
    """Poll the status until `check(doc)` holds; between polls, block on the notify socket
    for at most 0.25 s (the daemon's STATUS lines wake the test early)."""
    deadline = time.monotonic() + 15
    while True:
        doc = daemon.get("/v1/status")
        if check(doc):
            return doc
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {doc['modem']}"
        with contextlib.suppress(TimeoutError):
            daemon.notify.wait_for("STATUS", timeout=0.25)


@pytest.fixture
def skt_box(netns: str, tmp_path: Path) -> Iterator[DaemonProcess]:
    proc = start(netns, tmp_path, "SKT")
    try:
        yield proc
    finally:
        assert proc.stop() == 0


def test_modem_registered_with_data_up_in_hot_standby(skt_box: DaemonProcess) -> None:
    doc = wait_status(skt_box, lambda d: d["modem"]["data_up"] is True, "LTE data up")
    modem = doc["modem"]
    assert modem["present"] is True and modem["registered"] is True
    assert modem["registration"] == "home" and modem["rat"] == "lte"
    assert modem["mcc_mnc"] == "45005" and modem["operator"]
    assert modem["signal_dbm"] == -65 and modem["sinr_db"] is not None
    assert modem["ip"] and modem["model"] == "EC25"
    assert modem["same_carrier_as_wired"] is False  # wired KT, SIM SKT
    assert not any(e["kind"] == "carrier_overlap" for e in doc["recent_events"])


def test_the_cli_does_not_fight_the_daemon_for_the_port(
        skt_box: DaemonProcess, capsys: pytest.CaptureFixture[str]) -> None:
    wait_status(skt_box, lambda d: d["modem"]["present"] is True, "the modem")
    port = re.search(r"simulator \(SKT SIM\) on (\S+)", skt_box.log())
    assert port is not None
    assert main(["modem", "info", "--port", port.group(1)]) == 1
    assert "the port is in use: the storebox daemon owns it" in capsys.readouterr().err


def test_same_carrier_as_the_wired_line_is_said_loudly(netns: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    proc = start(netns, tmp_path, "KT")
    try:
        # the state and the event are published one after the other: wait for both
        doc = wait_status(proc, lambda d: d["modem"]["same_carrier_as_wired"] is True and any(
            e["kind"] == "carrier_overlap" for e in d["recent_events"]), "the carrier overlap")
        events = [e for e in doc["recent_events"] if e["kind"] == "carrier_overlap"]
        assert len(events) == 1 and events[0]["severity"] == "warning"
        assert events[0]["mcc_mnc"] == "45008"
        assert main(["status", "--config", str(proc.config)]) == 0
        assert "one outage takes both" in capsys.readouterr().out
    finally:
        assert proc.stop() == 0

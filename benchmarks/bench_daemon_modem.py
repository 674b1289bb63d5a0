"""Issue 3: time from daemon start to "LTE data ready" against the EC25 simulator."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from benchmarks.report import percentile, record
from tests.support.daemon import DaemonProcess, write_config

pytestmark = pytest.mark.timeout(600)
RUNS = 10


def test_daemon_start_to_lte_data_ready(netns: str, tmp_path: Path) -> None:
    ready_s, data_s = [], []
    for run in range(RUNS):
        tmp = tmp_path / f"run{run}"
        tmp.mkdir()
        started = time.monotonic()
        proc = DaemonProcess(netns, write_config(tmp, lte={"simulator": "SKT"}))
        try:
            proc.notify.wait_for("READY", "1")
            ready_s.append(time.monotonic() - started)
            while not proc.get("/v1/status")["modem"]["data_up"]:
                assert time.monotonic() - started < 60
                time.sleep(0.01)  # measuring, not synchronising
            data_s.append(time.monotonic() - started)
        finally:
            proc.stop()
    record("daemon_modem", [
        ("daemon start to READY=1, p50 (s)", percentile(ready_s, 50), "-"),
        ("daemon start to LTE data ready, p50 (s)", percentile(data_s, 50), "-"),
        ("daemon start to LTE data ready, max (s)", max(data_s), "simulator: no radio delays"),
    ])

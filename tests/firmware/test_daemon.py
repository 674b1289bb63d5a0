"""The real daemon as a subprocess inside a network namespace the test creates."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.cli.main import main
from firmware.errors import ApiClientError
from tests.support.daemon import TOKEN, DaemonProcess, write_config
from tests.support.openapi import checked_get_json as get_json
from tests.support.schemas import check_status


@pytest.fixture
def daemon(netns: str, tmp_path: Path) -> Iterator[DaemonProcess]:
    config = write_config(tmp_path, debug={
        "extra_components": ["tests.support.components:crashing"]})
    proc = DaemonProcess(netns, config, env={"WATCHDOG_USEC": "400000"})
    try:
        proc.notify.wait_for("READY", "1")
        yield proc
    finally:
        proc.stop()


def test_ready_arrives_on_the_notify_socket_with_a_status_line(daemon: DaemonProcess) -> None:
    ready = next(m for m in daemon.notify.messages if m.get("READY") == "1")
    assert ready["STATUS"].startswith("running; uplink none")


def test_status_over_http_has_the_contract_fields(daemon: DaemonProcess) -> None:
    doc = daemon.get("/v1/status")
    assert doc["device_id"] == "store-test"
    assert doc["version"]
    assert doc["uplink"]["active"] in ("wired", "lte", "none")
    for link in ("wired", "lte"):
        assert doc["uplink"][link]["state"] in ("up", "degraded", "down", "standby", "unknown")
    assert {"registered", "operator", "rat", "signal_dbm"} <= doc["modem"].keys()
    assert {"queued", "queued_amount", "oldest_queued_age_s", "forwarded_total",
            "declined_after_offline_total"} <= doc["payments"].keys()
    assert isinstance(doc["leds"], dict)


def test_tcp_listener_inside_the_namespace(daemon: DaemonProcess, netns: str) -> None:
    script = (
        "import sys; from firmware.cli.client import get_json; "
        "print(get_json(sys.argv[2], '/v1/status', sys.argv[1])['device_id'])")
    out = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", script, TOKEN,
                          daemon.tcp_address],
                         capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[2])
    assert out.stdout.strip() == "store-test"


def test_healthz_needs_no_token(daemon: DaemonProcess) -> None:
    assert get_json(daemon.socket_address, "/healthz", "")["ok"] is True


@pytest.mark.parametrize("token", ["", "wrong-token", TOKEN + "x", TOKEN[:-1]])
def test_401_without_or_with_a_wrong_token(daemon: DaemonProcess, token: str) -> None:
    for path in ("/v1/status", "/metrics"):  # over TCP: the admin socket needs no token
        with pytest.raises(ApiClientError, match="401 unauthorized"):
            daemon.get_tcp(path, token)
    if token:
        assert token not in daemon.log()


def wait_restarted(daemon: DaemonProcess, name: str, restarts: int) -> dict[str, Any]:
    """Poll the status (paced by the daemon's own watchdog pings) until `name` runs again."""
    deadline = time.monotonic() + 10
    doc = daemon.get("/v1/status")
    while doc["components"][name]["state"] != "running" or \
            doc["components"][name]["restarts"] < restarts:
        assert time.monotonic() < deadline, doc["components"]
        daemon.notify.wait_for("WATCHDOG", "1")
        doc = daemon.get("/v1/status")
    return doc


def test_metrics_use_prometheus_names(daemon: DaemonProcess) -> None:
    from firmware.cli.client import _UnixConnection

    wait_restarted(daemon, "crashy", 2)

    conn = _UnixConnection(daemon.socket_address[5:], 5)
    conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    response = conn.getresponse()
    text = response.read().decode()
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/plain")
    assert 'storebox_build_info{device_id="store-test"' in text
    assert 'storebox_component_restarts_total{component="crashy"} 2.0' in text


def test_crashing_component_is_restarted_and_reported(daemon: DaemonProcess) -> None:
    doc = wait_restarted(daemon, "crashy", 2)
    crashy = doc["components"]["crashy"]
    assert crashy["last_error"] == "RuntimeError: boom 2"
    assert doc["payments"]["queued"] == 0  # the rest of the box kept serving
    kinds = [e["kind"] for e in doc["recent_events"]]
    assert kinds.count("component_restarted") == 2
    assert "component crashy crashed (RuntimeError: boom 1)" in daemon.log()


def test_watchdog_pings_while_healthy(daemon: DaemonProcess) -> None:
    pings = [daemon.notify.wait_for("WATCHDOG", "1", timeout=2.0) for _ in range(3)]
    assert [p["WATCHDOG"] for p in pings] == ["1", "1", "1"]
    assert "withholding watchdog ping" not in daemon.log()


def test_sigterm_exits_zero_within_five_seconds(daemon: DaemonProcess) -> None:
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=5) == 0
    assert time.monotonic() - started < 5
    assert daemon.notify.wait_for("STOPPING", "1", timeout=1)
    assert not (daemon.config.parent / "api.sock").exists()


def test_sighup_reloads_tokens(daemon: DaemonProcess) -> None:
    tokens = daemon.config.parent / "pos-tokens"
    tokens.write_text("rotated-token-123\n")
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while True:
        try:
            doc = daemon.get_tcp("/v1/status", token="rotated-token-123")
            break
        except ApiClientError:
            assert time.monotonic() < deadline, daemon.log()
            daemon.notify.wait_for("WATCHDOG", "1")
    assert any(e["kind"] == "config_reloaded" for e in doc["recent_events"])
    with pytest.raises(ApiClientError, match="401"):
        daemon.get_tcp("/v1/status")


def test_sighup_with_a_broken_config_keeps_running(daemon: DaemonProcess) -> None:
    original = daemon.config.read_text()
    daemon.config.write_text(original + "\n[hw]\npin_factroy = \"mock\"\n")
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "reload refused" not in daemon.log():
        assert time.monotonic() < deadline
        daemon.notify.wait_for("WATCHDOG", "1")
    assert "hw.pin_factroy: unknown key 'pin_factroy'; did you mean 'pin_factory'?" \
        in daemon.log()
    assert daemon.get("/v1/status")["phase"] == "running"


def test_status_cli_against_the_running_daemon(daemon: DaemonProcess,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--config", str(daemon.config)]) == 0
    out = capsys.readouterr().out
    assert "device id: store-test" in out
    assert "crashy" in out
    assert main(["status", "--json", "--config", str(daemon.config)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["device_id"] == "store-test"
    check_status(printed, "storebox status --json")  # docs/schemas/status.json


def test_status_cli_reports_an_unreachable_daemon(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--api", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("storebox status: cannot reach the storebox API at 'http://127.0.0.1:9'")
    assert "Traceback" not in err


def test_bad_config_exits_2_without_starting(netns: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, hw={"pin_factory": "gpio"})
    proc = subprocess.run([sys.executable, "-m", "firmware", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "hw.pin_factory: must be one of 'mock'" in proc.stderr


def test_tcp_listener_from_a_test_thread_inside_the_namespace(daemon: DaemonProcess,
                                                              netns: str) -> None:
    from tests.support.netns import inside

    address = daemon.tcp_address  # https://127.0.0.1:18470#sha256=<the box's pin>
    with inside(netns):
        doc = get_json(address, "/v1/status", TOKEN)
    assert doc["device_id"] == "store-test"
    # back home: the daemon's port is not reachable from the host namespace
    with pytest.raises(ApiClientError):
        get_json(address, "/v1/status", TOKEN, timeout=1)


def test_watchdog_is_withheld_while_the_loop_is_stalled(netns: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, debug={
        "extra_components": ["tests.support.components:blocking"]})
    proc = DaemonProcess(netns, config, env={"WATCHDOG_USEC": "400000"})
    try:
        proc.notify.wait_for("READY", "1")
        proc.notify.wait_for("WATCHDOG", "1", timeout=3)
        assert "event loop stalled" in proc.log()
        assert "withholding watchdog ping" in proc.log()
    finally:
        assert proc.stop() == 0


def test_start_up_heap_is_frozen_only_when_asked() -> None:
    """#13's idle CPU: full collections skip what start-up built (`storebox run` only:
    the card-data scans of tests/payments/test_cvc_scope.py need `gc.get_objects()`)."""
    import gc

    from firmware.daemon import Daemon, freeze_startup_heap

    assert Daemon.__init__.__kwdefaults__["freeze_heap"] is False
    before = gc.get_freeze_count()
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > before
        assert not any(o is freeze_startup_heap for o in gc.get_objects())
    finally:
        gc.unfreeze()

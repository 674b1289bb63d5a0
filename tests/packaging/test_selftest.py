"""`storebox selftest`: the verdicts an update client acts on (0 commit, 1 roll back,
2 ask again later), with the machine replaced by a fake `Box` and a real SQLite file."""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from firmware.cli import selftest
from firmware.cli.selftest import BROKEN, HEALTHY, UNSURE, Box
from firmware.errors import ApiClientError
from payments_cache.migrations import MIGRATIONS

NAMES = [m.name for m in MIGRATIONS]


def status(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "uptime_s": 600.0, "phase": "running",
        "uplink": {"active": "wired", "wired": {"state": "up"}, "lte": {"state": "standby"}},
        "modem": {"present": True, "sim": "ready"},
        "payments": {"key_provider": "systemd-creds", "faults": []},
        "components": {"modem": {"state": "running"}, "leds": {"state": "running"}},
        "leds": {"wired": "on"},
    }
    doc.update(over)
    return doc


class FakeBox:
    def __init__(self, doc: dict[str, Any] | None, *, unit: dict[str, str] | None = None,
                 boot_s: float = 1000.0, routes: str = "default via 192.0.2.1 dev eth0",
                 tools_ok: bool = True) -> None:
        self.doc, self.unit, self.boot_s = doc, unit, boot_s
        self.routes, self.tools_ok = routes, tools_ok
        self.ran: list[tuple[list[str], bool]] = []

    def api(self, config: Any, path: str) -> dict[str, Any]:
        if self.doc is None:
            raise ApiClientError("unix:/run/storebox/api.sock", "connection refused")
        return {"ok": True, "phase": "running"} if path == "/healthz" else self.doc

    def run(self, cmd: list[str], as_unit: bool) -> tuple[int, str]:
        self.ran.append((cmd, as_unit))
        if cmd[0] == "ip":
            return 0, self.routes
        return (0, "") if self.tools_ok else (1, "Operation not permitted")

    def box(self) -> Box:
        return Box(api=self.api, run=self.run, systemd_unit=lambda: self.unit,
                   boot_uptime=lambda: self.boot_s, claim_gpio=lambda config: None)


def make_db(state: Path, migrations: list[str], payments: dict[str, str]) -> None:
    conn = sqlite3.connect(state / "payments.sqlite3")
    conn.execute("CREATE TABLE migrations (id INTEGER PRIMARY KEY, name TEXT, applied_at INT)")
    conn.execute("CREATE TABLE payments (id TEXT PRIMARY KEY, forward_state TEXT)")
    conn.executemany("INSERT INTO migrations (name, applied_at) VALUES (?, 0)",
                     [(m,) for m in migrations])
    conn.executemany("INSERT INTO payments VALUES (?, ?)", list(payments.items()))
    conn.commit()
    conn.close()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    path = tmp_path / "storebox.toml"
    path.write_text(f'[device]\nid = "store-0001"\nstate_dir = "{state}"\n'
                    '[payments]\ngateway_url = "https://gateway.example"\n'
                    f'[api]\nadmin_socket = "{tmp_path}/api.sock"\n')
    return path


def verdict(config: Path, fake: FakeBox, grace: float = 300.0) -> tuple[int, dict[str, str]]:
    report = selftest.run_checks(str(config), fake.box(), None, grace)
    return report.exit_code, {c.name: report.effective(c) for c in report.checks}


def record(config: Path, fake: FakeBox) -> None:
    args = argparse.Namespace(config=str(config), record=True, record_file=None,
                              json=False, grace=300.0)
    assert selftest.cmd_selftest(args, fake.box()) == HEALTHY


def test_healthy_box_commits(config: Path) -> None:
    make_db(config.parent / "state", NAMES, {"pay_1": "queued", "pay_2": "forwarded"})
    code, checks = verdict(config, FakeBox(status()))
    assert code == HEALTHY, checks
    assert checks["database"] == checks["nft"] == checks["route_wired"] == "ok"


def test_nft_and_conntrack_run_with_the_units_capabilities(config: Path) -> None:
    fake = FakeBox(status())
    verdict(config, fake)
    assert (["nft", "list", "tables"], True) in fake.ran
    assert (["conntrack", "-C"], True) in fake.ran
    assert verdict(config, FakeBox(status(), tools_ok=False))[0] == BROKEN


def test_an_internet_outage_alone_is_never_broken(config: Path) -> None:
    outage = status(uplink={"active": "none", "wired": {"state": "down"},
                            "lte": {"state": "down"}})
    code, checks = verdict(config, FakeBox(outage, routes=""), grace=0)
    assert code == HEALTHY, checks


def test_a_missing_route_of_an_up_uplink_waits_then_breaks(config: Path) -> None:
    assert verdict(config, FakeBox(status(uptime_s=10.0), routes=""))[0] == UNSURE
    assert verdict(config, FakeBox(status(uptime_s=600.0), routes=""))[0] == BROKEN


def test_daemon_not_answering_is_unsure_then_broken(config: Path) -> None:
    assert verdict(config, FakeBox(None, boot_s=30.0))[0] == UNSURE
    assert verdict(config, FakeBox(None, boot_s=900.0))[0] == BROKEN


def test_a_failed_unit_is_broken_at_once(config: Path) -> None:
    failed = {"LoadState": "loaded", "ActiveState": "failed", "SubState": "failed",
              "Result": "start-limit-hit", "NRestarts": "5"}
    code, checks = verdict(config, FakeBox(None, unit=failed, boot_s=20.0))
    assert code == BROKEN and checks["service"] == "broken"


def test_activating_unit_asks_again_later(config: Path) -> None:
    starting = {"LoadState": "loaded", "ActiveState": "activating", "SubState": "start",
                "NRestarts": "0", "up_s": "20.0"}
    assert verdict(config, FakeBox(None, unit=starting, boot_s=9000.0))[0] == UNSURE
    starting["up_s"] = "900.0"  # stuck starting for 15 minutes
    assert verdict(config, FakeBox(None, unit=starting, boot_s=9000.0))[0] == BROKEN


def test_key_provider_fault_is_broken_after_grace(config: Path) -> None:
    doc = status(payments={"key_provider": "systemd-creds",
                           "faults": ["key_provider_unavailable"]})
    assert verdict(config, FakeBox(doc))[0] == BROKEN


def test_payment_queued_before_the_update_must_survive(config: Path) -> None:
    state = config.parent / "state"
    make_db(state, NAMES, {"pay_1": "queued", "pay_2": "queued"})
    record(config, FakeBox(status()))
    saved = json.loads((state / "selftest-record.json").read_text())
    assert saved["queued_ids"] == ["pay_1", "pay_2"] and saved["sim_ready"] is True
    # forwarded meanwhile: fine (the queue may shrink), gone: roll back
    (state / "payments.sqlite3").unlink()
    make_db(state, NAMES, {"pay_1": "forwarded", "pay_2": "queued"})
    assert verdict(config, FakeBox(status()))[0] == HEALTHY
    (state / "payments.sqlite3").unlink()
    make_db(state, NAMES, {"pay_2": "queued"})
    code, checks = verdict(config, FakeBox(status()))
    assert code == BROKEN and checks["database"] == "broken"


def test_database_gone_after_update_is_broken(config: Path) -> None:
    state = config.parent / "state"
    make_db(state, NAMES, {})
    record(config, FakeBox(status()))
    (state / "payments.sqlite3").unlink()
    assert verdict(config, FakeBox(status()))[0] == BROKEN


def test_corrupt_database_is_broken(config: Path) -> None:
    (config.parent / "state" / "payments.sqlite3").write_bytes(b"not a database" * 100)
    assert verdict(config, FakeBox(status()))[0] == BROKEN


def test_database_from_newer_firmware_is_broken(config: Path) -> None:
    make_db(config.parent / "state", [*NAMES, "9999_from_the_future"], {})
    assert verdict(config, FakeBox(status()))[0] == BROKEN


def test_migrations_not_yet_applied_ask_again(config: Path) -> None:
    make_db(config.parent / "state", NAMES[:-1], {})
    assert verdict(config, FakeBox(status(uptime_s=5.0)))[0] == UNSURE


def test_modem_that_answered_before_must_answer_again(config: Path) -> None:
    record(config, FakeBox(status()))
    gone = status(modem={"present": False}, uptime_s=10.0)
    assert verdict(config, FakeBox(gone))[0] == UNSURE
    gone["uptime_s"] = 600.0
    assert verdict(config, FakeBox(gone))[0] == BROKEN
    sim_lost = status(modem={"present": True, "sim": "absent"})
    assert verdict(config, FakeBox(sim_lost))[0] == BROKEN


def test_no_modem_before_nor_now_is_fine(config: Path) -> None:
    assert verdict(config, FakeBox(status(modem={"present": False})))[0] == HEALTHY


def test_broken_config_is_broken(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[device]\nid = 'no spaces allowed'\n")
    report = selftest.run_checks(str(bad), FakeBox(status()).box(), None, 300.0)
    assert report.exit_code == BROKEN


def test_json_output_and_exit_code_via_the_cli(config: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(config=str(config), record=False, record_file=None,
                              json=True, grace=300.0)
    assert selftest.cmd_selftest(args, FakeBox(status()).box()) == HEALTHY
    doc = json.loads(capsys.readouterr().out)
    assert doc["verdict"] == "healthy" and doc["exit_code"] == 0
    assert {c["name"] for c in doc["checks"]} >= {"config", "database", "api", "nft", "gpio"}

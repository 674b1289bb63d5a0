"""systemd/storebox.service: hardened (systemd-analyze security <= 2.0) and clean
(`systemd-analyze verify` prints nothing: it exits 0 even on a misspelt directive)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "storebox.service"
MAX_EXPOSURE = 2.0


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing (Debian package systemd): the unit cannot "
                    "be checked")
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True,
                          timeout=60, check=False)


def _unit_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit under its own name, ExecStart pointed at this checkout's `storebox` (the
    package installs /usr/bin/storebox; verify checks that the command exists here)."""
    text = UNIT.read_text() if text is None else text
    exe = REPO / ".venv" / "bin" / "storebox"
    assert exe.exists(), f"{exe} missing: run `make deps`"
    assert "ExecStart=/usr/bin/storebox " in text
    path = tmp_path / "storebox.service"
    path.write_text(text.replace("ExecStart=/usr/bin/storebox ", f"ExecStart={exe} "))
    return path


def exposure(unit: Path) -> float:
    result = _analyze("security", "--offline=true", "--no-pager", str(unit))
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, f"no score in systemd-analyze security output:\n{result.stdout}{result.stderr}"
    return float(found.group(1))


def verify_output(unit: Path) -> str:
    result = _analyze("verify", "--no-pager", str(unit))
    return (result.stdout + result.stderr).strip()


def test_unit_exposure_is_at_most_2(tmp_path: Path) -> None:
    score = exposure(_unit_copy(tmp_path))
    assert score <= MAX_EXPOSURE, f"systemd-analyze security: {score} > {MAX_EXPOSURE}"


def test_unit_verifies_without_any_output(tmp_path: Path) -> None:
    assert verify_output(_unit_copy(tmp_path)) == ""


def test_verify_check_catches_a_misspelt_directive(tmp_path: Path) -> None:
    """The check above can fail: a typo is only a warning, exit code 0."""
    text = UNIT.read_text().replace("ProtectHome=yes", "ProtectHomes=yes")
    out = verify_output(_unit_copy(tmp_path, text))
    assert "Unknown key" in out and "ProtectHomes" in out


def test_unit_has_what_the_box_needs() -> None:
    text = UNIT.read_text()
    lines = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in text.splitlines()
             if "=" in line and not line.startswith("#")}
    assert lines["Type"] == "notify"
    assert int(lines["WatchdogSec"]) > 0
    assert lines["Restart"] == "always"
    assert int(lines["StartLimitBurst"]) > 0 and int(lines["StartLimitIntervalSec"]) > 0
    assert "PYTHONFAULTHANDLER=1" in lines["Environment"]
    assert lines["LimitCORE"] == "0"
    assert lines["LoadCredentialEncrypted"] == (
        "storebox-kek:/etc/credstore.encrypted/storebox-kek")
    assert lines["User"] == "storebox"
    assert set(lines["CapabilityBoundingSet"].split()) == {"CAP_NET_ADMIN", "CAP_NET_RAW",
                                                           "CAP_NET_BIND_SERVICE"}
    assert lines["ExecStart"].startswith("/usr/bin/storebox run --config "
                                         "/etc/storebox/storebox.toml")

"""The fleet's desired config laid over the box's TOML (`firmware.config.overlay`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.config import load_config
from firmware.config.loader import load_config_with
from firmware.config.overlay import OVERLAY_FILE, write_overlay
from firmware.errors import ConfigError


def toml(tmp: Path) -> Path:
    path = tmp / "storebox.toml"
    path.write_text(f"""\
[device]
id = "store-0001"
state_dir = "{tmp / 'state'}"
[payments]
gateway_url = "http://127.0.0.1:9"
allow_insecure_gateway = true
offline_max_amount = 50000 # the technician's comment
""")
    return path


def test_a_stored_document_is_laid_over_and_the_toml_untouched(tmp_path: Path) -> None:
    path = toml(tmp_path)
    before = path.read_text()
    write_overlay(tmp_path / "state" / OVERLAY_FILE, {
        "version": 3, "settings": {"payments.offline_max_amount": 30000,
                                   "probes.targets": ["tcp:192.0.2.1:443"]}})
    config = load_config(path)
    assert config.payments.offline_max_amount == 30000
    assert config.probes.targets == ["tcp:192.0.2.1:443"]
    assert path.read_text() == before
    assert (tmp_path / "state" / OVERLAY_FILE).stat().st_mode & 0o777 == 0o600


def test_keys_the_fleet_may_not_set_are_skipped_and_a_broken_file_ignored(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = toml(tmp_path)
    overlay = tmp_path / "state" / OVERLAY_FILE
    write_overlay(overlay, {"version": 1, "settings": {"fleet.mqtt_url": "mqtt://x"}})
    assert load_config(path).fleet.mqtt_url == ""
    assert "may not set 'fleet.mqtt_url'" in caplog.text
    overlay.write_text("{not json")
    assert load_config(path).payments.offline_max_amount == 50000  # starts on its own TOML
    assert "ignoring the fleet's desired config" in caplog.text


def test_a_candidate_is_checked_with_the_toml(tmp_path: Path) -> None:
    path = toml(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config_with(path, {"payments.offline_max_count": -1})
    assert "offline_max_count" in str(caught.value.problems[0])
    assert load_config_with(path, {"payments.offline_max_count": 9}) \
        .payments.offline_max_count == 9
    assert not (tmp_path / "state" / OVERLAY_FILE).exists()

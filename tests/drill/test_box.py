"""The box's config as `lab.box` writes it (read back unchanged); the drill's config and
its seal key pair: the gateway's private key stays with the gateway simulator, the box's
config names only the public key (docs/gateway-protocol.md)."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import pytest

import firmware
from firmware.config.files import file_problems
from firmware.config.loader import load_config
from firmware.config.schema import Config
from lab.box import configure, write_config, write_seal_keys
from lab.drill.config import drill_config
from payments_cache.models import Card
from payments_cache.sealing import SealKey, SealOpener, seal_card
from tests.support.daemon import base_config


def test_the_seal_key_pair_is_fresh_and_its_private_half_owner_only(tmp_path: Path) -> None:
    pair = write_seal_keys(tmp_path)
    assert stat.S_IMODE(pair.private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in pair.private.read_bytes()
    assert b"PRIVATE" not in pair.public.read_bytes()
    public = SealKey.load(pair.public)
    assert public.kid == pair.kid and len(pair.kid) == 16
    # what the box seals to the public key, the simulator's private key opens
    sealed = seal_card(public, "pay_1", Card(pan="4111111111111111", exp_month=12,
                                             exp_year=2030))
    opened = SealOpener.from_pem_files([pair.private]).open_card("pay_1", sealed)
    assert opened.pan == "4111111111111111"
    again = write_seal_keys(tmp_path)  # a work dir used again gets a new pair
    assert again.kid != pair.kid
    assert stat.S_IMODE(again.private.stat().st_mode) == 0o600


def test_the_box_config_names_the_public_key_only(tmp_path: Path) -> None:
    pair = write_seal_keys(tmp_path)
    path = write_config(tmp_path / "storebox.toml", drill_config(
        tmp_path, merchant_key="m" * 24, token="t" * 24, lte_carrier="KT",
        failback_after_s=10.0, seal_key_file=pair.public), by="a test")
    text = path.read_text()
    assert str(pair.private) not in text and "gateway-seal.key" not in text
    config = load_config(path)
    assert config.payments.seal_key_file == str(pair.public)
    assert file_problems(config) == []  # `storebox config check` accepts the key


def test_without_a_seal_key_the_config_has_none(tmp_path: Path) -> None:
    path = write_config(tmp_path / "storebox.toml", drill_config(
        tmp_path, merchant_key="m" * 24, token="t" * 24, lte_carrier="KT",
        failback_after_s=10.0), by="a test")
    assert not load_config(path).payments.seal_key_file


# --- the written config is the schema's, read back unchanged -----------------------------


def _round_trip(tmp_path: Path, config: Config) -> None:
    path = write_config(tmp_path / "written.toml", config, by="a test")
    assert load_config(path) == dataclasses.replace(config, source=str(path))


def test_the_drill_config_reads_back_as_written(tmp_path: Path) -> None:
    pair = write_seal_keys(tmp_path)
    _round_trip(tmp_path, drill_config(tmp_path, merchant_key="m" * 24, token="t" * 24,
                                       lte_carrier="LGU", failback_after_s=2.5,
                                       seal_key_file=pair.public))


def test_the_tests_config_with_changes_reads_back_as_written(tmp_path: Path) -> None:
    config = configure(base_config(tmp_path, tls="auto"),
                       payments={"seal_key_file": tmp_path / "gateway.pub",
                                 "currency_limits": {"USD": {"offline_max_amount": 5000,
                                                             "offline_max_total": 90000}},
                                 "lost_attempt_lifetime_s": 2},
                       debug={"extra_components": ["tests.support.components:crashing"]},
                       hw={"led_pins": {"wired": "GPIO5"}})
    _round_trip(tmp_path, config)


def test_the_example_config_reads_back_as_written(tmp_path: Path) -> None:
    """Every table the example sets, with its lists, tables of tables and quoting."""
    _round_trip(tmp_path, load_config(Path(firmware.__file__).parent / "data/example.toml"))


def test_configure_refuses_an_unknown_table_or_key(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    with pytest.raises(TypeError, match="'apii'"):
        configure(config, apii={"tls": "off"})
    with pytest.raises(TypeError, match="tsl"):
        configure(config, api={"tsl": "off"})
    with pytest.raises(TypeError, match="'source'"):
        configure(config, source={})

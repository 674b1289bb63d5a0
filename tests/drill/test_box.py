"""The drill's box config and its seal key pair: the gateway's private key stays with the
gateway simulator, the box's config names only the public key (CONTRACTS §5a)."""

from __future__ import annotations

import stat
from pathlib import Path

from firmware.config.files import file_problems
from firmware.config.loader import load_config
from lab.box import write_config, write_seal_keys
from payments_cache.models import Card
from payments_cache.sealing import SealKey, SealOpener, seal_card


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
    path = write_config(tmp_path, merchant_key="m" * 24, token="t" * 24, lte_carrier="KT",
                        failback_after_s=10.0, seal_key_file=pair.public)
    text = path.read_text()
    assert str(pair.private) not in text and "gateway-seal.key" not in text
    config = load_config(path)
    assert config.payments.seal_key_file == str(pair.public)
    assert file_problems(config) == []  # `storebox config check` accepts the key


def test_without_a_seal_key_the_config_has_none(tmp_path: Path) -> None:
    path = write_config(tmp_path, merchant_key="m" * 24, token="t" * 24, lte_carrier="KT",
                        failback_after_s=10.0)
    assert not load_config(path).payments.seal_key_file

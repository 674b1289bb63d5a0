"""`storebox config check` checks the files the config names, not only the TOML."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware.cli.main import main
from firmware.config import load_config
from firmware.config.files import file_problems
from payments_cache.sealing import generate_keypair


class Box:
    """A config and the files it names, all present and right to begin with."""

    def __init__(self, tmp: Path, provider: str = "file", seal: bool = True) -> None:
        self.tmp = tmp
        self.merchant_key = self.secret("merchant-key", b"mk-0123456789\n")
        self.tokens = self.secret("pos-tokens", b"token-0123456789abcdef\n")
        self.seal_key = self.secret("gateway.pem", generate_keypair()[1])
        self.module = self.secret("libtoken.so", b"\x7fELF")
        self.pin = self.secret("pkcs11-pin", b"1234\n")
        seal_line = f'seal_key_file = "{self.seal_key}"\n' if seal else ""
        self.config = tmp / "storebox.toml"
        self.config.write_text(
            '[device]\n'                                          # 1
            'id = "store-0001"\n'                                 # 2
            f'state_dir = "{tmp / "state"}"\n'                    # 3
            '\n'                                                  # 4
            '[payments]\n'                                        # 5
            'gateway_url = "https://gateway.example"\n'           # 6
            f'merchant_key_file = "{self.merchant_key}"\n'        # 7
            f'key_provider = "{provider}"\n'                      # 8
            f'pkcs11_module = "{self.module}"\n'                  # 9
            f'pkcs11_pin_file = "{self.pin}"\n'                   # 10
            f'{seal_line}'                                        # 11
            '\n'
            '[api]\n'
            f'tokens_file = "{self.tokens}"\n')

    def secret(self, name: str, data: bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    def check(self, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
        code = main(["config", "check", "--config", str(self.config)])
        captured = capsys.readouterr()
        return code, captured.err.splitlines() if code else captured.out.splitlines()

    def problems(self) -> list[tuple[str, str]]:
        return file_problems(load_config(self.config))


@pytest.fixture
def box(tmp_path: Path) -> Box:
    return Box(tmp_path)


def test_a_good_config_and_its_files_exit_0(box: Box, capsys: pytest.CaptureFixture[str]) -> None:
    assert box.problems() == []
    assert box.check(capsys) == (0, [f"{box.config}: ok"])


def test_a_good_pkcs11_config_exits_0(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert Box(tmp_path, provider="pkcs11").check(capsys) == (0, [f"{tmp_path}/storebox.toml: ok"])


def test_missing_merchant_key(box: Box, capsys: pytest.CaptureFixture[str]) -> None:
    box.merchant_key.unlink()
    code, lines = box.check(capsys)
    assert code == 2
    assert lines == [f"{box.config}:7: payments.merchant_key_file: the merchant key file "
                     f"'{box.merchant_key}' does not exist: every payment would stand in "
                     "and nothing would be forwarded"]


@pytest.mark.parametrize("content", [b"", b"\n", b"  \n\n"])
def test_empty_merchant_key(box: Box, capsys: pytest.CaptureFixture[str], content: bytes) -> None:
    box.merchant_key.write_bytes(content)
    code, lines = box.check(capsys)
    assert code == 2
    assert len(lines) == 1
    assert lines[0].startswith(f"{box.config}:7: payments.merchant_key_file: ")
    assert "is empty" in lines[0]


def test_unreadable_merchant_key(box: Box, capsys: pytest.CaptureFixture[str]) -> None:
    box.merchant_key.unlink()
    box.merchant_key.mkdir()  # unreadable even for root, which the tests run as
    code, lines = box.check(capsys)
    assert code == 2
    assert lines == [f"{box.config}:7: payments.merchant_key_file: the merchant key file "
                     f"'{box.merchant_key}' is a directory, not a file: every payment would "
                     "stand in and nothing would be forwarded"]


def ed25519_public_pem() -> bytes:
    return Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize(("content", "reason"), [
    (None, "no such file"),
    (b"not a key at all\n", "not a PEM public key (SubjectPublicKeyInfo)"),
    (ed25519_public_pem(), "not an X25519 key (got Ed25519PublicKey)"),
    (generate_keypair()[0], "holds a private key; the box needs only the gateway's public "
                            "key (PEM SubjectPublicKeyInfo)"),
])
def test_seal_key_file_must_be_an_x25519_public_key(
        box: Box, capsys: pytest.CaptureFixture[str], content: bytes | None,
        reason: str) -> None:
    if content is None:
        box.seal_key.unlink()
    else:
        box.seal_key.write_bytes(content)
    code, lines = box.check(capsys)
    assert code == 2
    assert lines == [f"{box.config}:11: payments.seal_key_file: {reason} ('{box.seal_key}'): "
                     "it must hold the gateway's X25519 public key (PEM SubjectPublicKeyInfo)"]


def test_seal_key_file_that_is_a_directory(box: Box) -> None:
    box.seal_key.unlink()
    box.seal_key.mkdir()
    assert box.problems() == [("payments.seal_key_file",
                               f"is a directory ('{box.seal_key}'): it must hold the "
                               "gateway's X25519 public key (PEM SubjectPublicKeyInfo)")]


def test_no_seal_key_configured_is_not_a_file_problem(tmp_path: Path) -> None:
    assert Box(tmp_path, seal=False).problems() == []


def test_pkcs11_files_are_checked_only_for_the_pkcs11_provider(box: Box) -> None:
    box.module.unlink()
    box.pin.unlink()
    assert box.problems() == []  # the file provider needs neither


def test_pkcs11_module_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    box = Box(tmp_path, provider="pkcs11")
    box.module.unlink()
    code, lines = box.check(capsys)
    assert code == 2
    assert lines == [f"{box.config}:9: payments.pkcs11_module: the PKCS#11 module "
                     f"'{box.module}' does not exist"]


def test_pkcs11_pin_file_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    box = Box(tmp_path, provider="pkcs11")
    box.pin.unlink()
    code, lines = box.check(capsys)
    assert code == 2
    assert lines == [f"{box.config}:10: payments.pkcs11_pin_file: the PKCS#11 PIN file "
                     f"'{box.pin}' does not exist"]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_pkcs11_pin_file_readable_by_group_or_others(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: int) -> None:
    box = Box(tmp_path, provider="pkcs11")
    box.pin.chmod(mode)
    code, lines = box.check(capsys)
    assert code == 2
    assert lines == [f"{box.config}:10: payments.pkcs11_pin_file: the PKCS#11 PIN file "
                     f"'{box.pin}' may be read by group or others (mode {mode:04o}); "
                     "make it 0600"]


def test_pkcs11_pin_file_symlink_and_empty(tmp_path: Path) -> None:
    box = Box(tmp_path, provider="pkcs11")
    real = box.secret("real-pin", b"1234\n")
    box.pin.unlink()
    box.pin.symlink_to(real)
    assert [k for k, _ in box.problems()] == ["payments.pkcs11_pin_file"]
    assert "not a regular file" in box.problems()[0][1]
    box.pin.unlink()
    box.secret("pkcs11-pin", b"\n")
    assert box.problems() == [("payments.pkcs11_pin_file",
                               f"the PKCS#11 PIN file '{box.pin}' is empty")]


def test_tokens_file_missing(box: Box, capsys: pytest.CaptureFixture[str]) -> None:
    box.tokens.unlink()
    code, lines = box.check(capsys)
    assert code == 2
    assert lines == [f"{box.config}:14: api.tokens_file: the POS tokens file "
                     f"'{box.tokens}' does not exist"]


def test_every_file_problem_at_once_in_line_order(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    box = Box(tmp_path, provider="pkcs11")
    for path in (box.tokens, box.merchant_key, box.module, box.pin, box.seal_key):
        path.unlink()
    code, lines = box.check(capsys)
    assert code == 2
    assert [line.split(": ", 2)[:2] for line in lines] == [
        [f"{box.config}:7", "payments.merchant_key_file"],
        [f"{box.config}:9", "payments.pkcs11_module"],
        [f"{box.config}:10", "payments.pkcs11_pin_file"],
        [f"{box.config}:11", "payments.seal_key_file"],
        [f"{box.config}:14", "api.tokens_file"],
    ]


def test_default_paths_are_checked_at_their_table_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A key left out uses its default file, which must exist too; the problem points at
    the table the key belongs in (or line 1 when the table is absent)."""
    config = tmp_path / "storebox.toml"
    config.write_text('[device]\nid = "store-0001"\n\n[payments]\n'
                      'gateway_url = "https://gateway.example"\n'
                      f'merchant_key_file = "{tmp_path / "nope"}"\n')
    assert main(["config", "check", "--config", str(config)]) == 2
    lines = capsys.readouterr().err.splitlines()
    merchant = [line for line in lines if "merchant_key_file" in line]
    tokens = [line for line in lines if "tokens_file" in line]
    assert merchant and merchant[0].startswith(f"{config}:6: payments.merchant_key_file: ")
    if not Path("/etc/storebox/pos-tokens").exists():
        assert tokens == [f"{config}:1: api.tokens_file: the POS tokens file "
                          "'/etc/storebox/pos-tokens' does not exist"]


def test_a_toml_problem_is_reported_before_any_file_is_looked_at(
        box: Box, capsys: pytest.CaptureFixture[str]) -> None:
    box.merchant_key.unlink()
    box.config.write_text(box.config.read_text() + "[lte]\napm = 1\n")
    code, lines = box.check(capsys)
    assert code == 2
    assert len(lines) == 1 and "lte.apm: unknown key 'apm'" in lines[0]


def test_config_check_as_a_process(box: Box) -> None:
    box.tokens.unlink()
    proc = subprocess.run([sys.executable, "-m", "firmware", "config", "check", "--config",
                           str(box.config)], capture_output=True, text=True,
                          env=dict(os.environ))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"{box.config}:14: api.tokens_file: the POS tokens "
                                        f"file '{box.tokens}' does not exist"]
    assert proc.stdout == ""

"""The files a valid config names: do they exist, can they be read, do they hold the right thing?

`load_config` checks the TOML alone; `storebox config check` also runs `file_problems`,
so that a technician learns of a missing merchant key or a seal key that is not the
gateway's X25519 public key before the box is installed. The daemon itself starts with
these problems and shows them as payments faults instead
(`firmware.components.payments`).

Checked are the values the box will use, defaults included (a config that leaves
`payments.merchant_key_file` out still needs `/etc/storebox/merchant-key`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from firmware.config.schema import Config
from firmware.tokens import daemon_uid, tokens_file_problems
from payments_cache.errors import SealKeyError
from payments_cache.sealing import SealKey


def file_problems(config: Config) -> list[tuple[str, str]]:
    """(key, message) for every named file that is missing, unreadable or malformed."""
    p = config.payments
    problems: list[tuple[str, str]] = []

    def add(key: str, message: str | None) -> None:
        if message:
            problems.append((key, message))

    add("payments.merchant_key_file", _merchant_key(p.merchant_key_file))
    if p.seal_key_file:
        add("payments.seal_key_file", _seal_key(p.seal_key_file))
    if p.key_provider == "pkcs11":
        add("payments.pkcs11_module", _readable(p.pkcs11_module, "the PKCS#11 module"))
        add("payments.pkcs11_pin_file", _pin_file(p.pkcs11_pin_file))
    for message in tokens_file_problems(config.api.tokens_file,
                                        daemon_uid(config.device.state_dir)):
        add("api.tokens_file", message)  # as the daemon would refuse it (firmware.tokens)
    return problems


def _read(path: str, what: str) -> tuple[bytes | None, str | None]:
    """The file's bytes, or a message saying why they cannot be read."""
    try:
        return Path(path).read_bytes(), None
    except FileNotFoundError:
        return None, f"{what} {path!r} does not exist"
    except IsADirectoryError:
        return None, f"{what} {path!r} is a directory, not a file"
    except OSError as exc:
        return None, f"cannot read {what} {path!r}: {exc.strerror or exc}"


def _readable(path: str, what: str) -> str | None:
    if not path:
        return f"no file named for {what}"
    return _read(path, what)[1]


def _merchant_key(path: str) -> str | None:
    what = "the merchant key file"
    if not path:
        return f"no file named for {what}: every payment would stand in"
    data, problem = _read(path, what)
    if problem:
        return f"{problem}: every payment would stand in and nothing would be forwarded"
    assert data is not None
    try:
        key = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        return f"{what} {path!r} is not UTF-8 text"
    if not key:
        return f"{what} {path!r} is empty: every payment would stand in and nothing " \
               "would be forwarded"
    return None


def _seal_key(path: str) -> str | None:
    try:
        SealKey.load(path)
    except SealKeyError as exc:
        return (f"{exc.reason} ({path!r}): it must hold the gateway's X25519 public key "
                "(PEM SubjectPublicKeyInfo)")
    return None


def _pin_file(path: str) -> str | None:
    """As the pkcs11 provider reads it: a regular file (no symlink) only its owner may
    access, not empty."""
    what = "the PKCS#11 PIN file"
    data, problem = _read(path, what) if path else (None, f"no file named for {what}")
    if problem:
        return problem
    try:
        mode = os.lstat(path).st_mode
    except OSError as exc:  # removed between the two looks
        return f"cannot read {what} {path!r}: {exc.strerror or exc}"
    if not stat.S_ISREG(mode):
        return f"{what} {path!r} is not a regular file (the box does not follow symlinks)"
    if mode & 0o077:
        return (f"{what} {path!r} may be read by group or others (mode "
                f"{stat.S_IMODE(mode):04o}); make it 0600")
    if not (data or b"").removesuffix(b"\n"):
        return f"{what} {path!r} is empty"
    return None

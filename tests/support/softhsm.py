"""A private SoftHSM2 token per test: its own config and token directory in a tmp dir.

SoftHSM2 reads ``$SOFTHSM2_CONF`` when the module is initialised (``C_Initialize``), so
the context manager points it at ``<tmp>/softhsm2.conf`` (``directories.tokendir =
<tmp>/tokens``) and re-initialises the module on entry and finalises it on exit: the
host's default token directory (/var/lib/softhsm/tokens) is never read nor written.
Providers opened inside are closed before the context exits when `track`ed.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pkcs11

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
UTIL = "softhsm2-util"
SO_PIN = "so-secret-5678"


class Closable(Protocol):
    def close(self) -> None: ...


@dataclass(frozen=True)
class SoftHsm:
    """One initialised token: what a `Pkcs11KeyProvider` needs to open it."""

    module: str
    conf: Path
    token_label: str
    pin: str
    pin_file: Path
    opened: list[Closable] = field(default_factory=list)

    def track(self, provider: Closable) -> None:
        """Closed on exit before the module is finalised, even when a test failed."""
        self.opened.append(provider)

    def init_token(self, label: str, pin: str) -> None:
        """Another token in the same private directory (e.g. another box's).

        Re-initialises the module, which ends every session: close providers first."""
        init_token(self.conf, label, pin)
        pkcs11.lib(self.module).reinitialize()  # SoftHSM lists tokens made since C_Initialize


def init_token(conf: Path, label: str, pin: str) -> None:
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    subprocess.run([UTIL, "--init-token", "--free", "--label", label, "--pin", pin,
                    "--so-pin", SO_PIN], env=env, check=True, capture_output=True, text=True)


def write_pin_file(path: Path, pin: str, mode: int = 0o600) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(pin + "\n")
    os.chmod(path, mode)
    return path


@contextlib.contextmanager
def softhsm(tmp: Path, token_label: str = "storebox-test", pin: str = "user-1234"
            ) -> Iterator[SoftHsm]:
    """A fresh token in `tmp`; `SOFTHSM2_CONF` set for the duration, then restored."""
    tokens = tmp / "tokens"
    tokens.mkdir(mode=0o700, parents=True)
    conf = tmp / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
                    "log.level = ERROR\nslots.removable = false\n")
    init_token(conf, token_label, pin)
    pin_file = write_pin_file(tmp / "pin", pin)
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    try:
        pkcs11.lib(MODULE).reinitialize()  # read our config, not one from an earlier test
        hsm = SoftHsm(MODULE, conf, token_label, pin, pin_file)
        yield hsm
    finally:
        for provider in hsm.opened:
            provider.close()
        pkcs11.lib(MODULE).finalize()
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous

"""One exception root in `firmware`: every error class the package defines is a
`FirmwareError`, so a caller can catch the package's failures in one clause."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import ssl
from pathlib import Path

import pytest

import firmware
from firmware.cli.modem_cmd import ModemUnavailable
from firmware.errors import FirmwareError
from firmware.fleet.agent import FleetLinkError
from firmware.fleet.auth import KeyFileError, load_public_key
from firmware.fleet_server.config import FleetServerConfigError, from_dict
from firmware.tls import PinMismatch


def firmware_exceptions() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for info in pkgutil.walk_packages(firmware.__path__, "firmware."):
        if info.name.endswith("__main__"):  # runs the CLI when imported
            continue
        module = importlib.import_module(info.name)
        found += [obj for _, obj in inspect.getmembers(module, inspect.isclass)
                  if issubclass(obj, BaseException) and obj.__module__ == info.name]
    return found


def test_every_firmware_exception_is_a_firmware_error() -> None:
    classes = firmware_exceptions()
    assert FleetServerConfigError in classes and ModemUnavailable in classes
    outside = [f"{c.__module__}.{c.__qualname__}" for c in classes
               if not issubclass(c, FirmwareError)]
    assert outside == []


def test_the_pin_mismatch_is_still_an_ssl_error() -> None:
    """Callers that catch `ssl.SSLError` around a TLS handshake keep catching it."""
    assert issubclass(PinMismatch, ssl.SSLError)


def test_errors_carry_their_fields(tmp_path: Path) -> None:
    missing = f"{tmp_path}/no-such-key.pub"
    with pytest.raises(KeyFileError) as key_error:
        load_public_key(missing)
    assert key_error.value.path == missing
    assert str(key_error.value) == key_error.value.reason == (
        f"cannot read {missing!r}: No such file or directory")

    with pytest.raises(FleetServerConfigError) as config_error:
        from_dict({"colour": "blue", "listen": "nowhere"}, "fleet.toml")
    assert config_error.value.problems == ["fleet.toml: fleet_server.colour: unknown key",
                                           "fleet.toml: fleet_server.listen: must be HOST:PORT"]
    assert str(config_error.value) == "\n".join(config_error.value.problems)

    link = FleetLinkError("cannot load the CA certificates of 'ca.pem': no such file")
    assert link.reason == str(link)

    unavailable = ModemUnavailable("/dev/ttyUSB2", "the port closed (gone)")
    assert (unavailable.port, unavailable.reason) == ("/dev/ttyUSB2", "the port closed (gone)")
    assert str(unavailable) == "/dev/ttyUSB2: the port closed (gone)"

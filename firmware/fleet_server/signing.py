"""The operator's key (`fleet_server.command_key_file`): it signs command jobs and
desired-config documents exactly as the boxes verify them (`canonical_message`,
`config_message` in `firmware.fleet.topics`). Only the fleet server holds it; the boxes
hold its public half (`fleet.command_key_file`).

    storebox fleet key new OUT   # writes OUT (private, 0600) and OUT.pub (for the boxes)
"""

from __future__ import annotations

import base64
import binascii
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware.fleet.topics import canonical_message, config_message
from firmware.fleet_server.config import FleetServerConfigError

#: A box refuses a command valid for more than 1 h beyond its clock
#: (`firmware.fleet.auth.MAX_AHEAD`); a little less leaves room for clock skew.
MAX_VALID = timedelta(minutes=55)


class OperatorKey:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self.key = key

    def sign_command(self, device_id: str, name: str, command_id: str,
                     args: dict[str, Any], expires_at: datetime) -> dict[str, Any]:
        """The `cmd/<name>` payload for one box, signed and valid until `expires_at`."""
        when = expires_at.isoformat()
        message = canonical_message(device_id, name, command_id, args, when)
        return {"id": command_id, "args": args, "expires_at": when,
                "sig": _b64(self.key.sign(message))}

    def sign_config(self, version: int, issued_at: str,
                    settings: dict[str, Any]) -> dict[str, Any]:
        """The desired-config document, signed."""
        message = config_message(version, issued_at, settings)
        return {"version": version, "issued_at": issued_at, "settings": settings,
                "sig": _b64(self.key.sign(message))}

    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def load_operator_key(path: str) -> OperatorKey | None:
    """The key in `path` (None when `path` is ""); FleetServerConfigError when unusable."""
    if not path:
        return None
    try:
        text = Path(path).read_bytes().strip()
    except OSError as exc:
        raise FleetServerConfigError([f"fleet_server.command_key_file: cannot read {path!r}: "
                                     f"{exc.strerror}"]) from exc
    try:
        if text.startswith(b"-----BEGIN OPENSSH"):
            key: object = serialization.load_ssh_private_key(text, password=None)
        elif text.startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(text, password=None)
        else:
            key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(text, validate=True))
    except (ValueError, TypeError, UnsupportedAlgorithm, binascii.Error) as exc:
        raise FleetServerConfigError([f"fleet_server.command_key_file: {path!r} holds no "
                                     f"Ed25519 private key: {exc}"]) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise FleetServerConfigError([f"fleet_server.command_key_file: {path!r} holds a "
                                      f"{type(key).__name__}, not an Ed25519 private key"])
    return OperatorKey(key)


def new_key_files(path: str) -> tuple[Path, Path]:
    """A new operator key: `path` (PKCS#8 PEM, 0600) and `path`.pub (for the boxes)."""
    key = OperatorKey(Ed25519PrivateKey.generate())
    private = Path(path)
    pem = key.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = private.with_name(private.name + ".pub")
    public.write_bytes(key.public_pem())
    return private, public

"""Authorization of fleet commands that change the box's behaviour.

The fleet operator signs each such command with an Ed25519 private key; the box holds
the public key (`fleet.command_key_file`). The signed message is the canonical JSON
(keys sorted, no spaces, UTF-8) of

    {"args": {...}, "device_id": "...", "expires_at": "...", "id": "...", "name": "..."}

so a signature is bound to one box, one command with its arguments, one id and one
validity window. The box refuses a command whose `expires_at` has passed or lies more
than `MAX_AHEAD` in the future, and one whose id it has already accepted (the ids are
remembered, on disk, until they expire, so a replay also fails after a restart).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    load_pem_public_key,
    load_ssh_public_key,
)

from firmware.errors import FirmwareError
from firmware.fleet.topics import canonical_message

log = logging.getLogger("storebox.fleet")

#: A signed command may be valid for at most this long from now.
MAX_AHEAD = timedelta(hours=1)
SIGNATURE_BYTES = 64


class CommandRefused(FirmwareError):
    """A command the box will not run: `code` for machines, `message` for people."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return error


class KeyFileError(FirmwareError):
    """The operator's command key file cannot be used: `path` names it, `reason` says why."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.reason = message
        super().__init__(message)


def load_public_key(path: str) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM, an OpenSSH line, or base64 of the raw 32 bytes."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(path, f"cannot read {path!r}: {exc.strerror}") from exc
    text = data.strip()
    try:
        if text.startswith(b"-----BEGIN"):
            key: object = load_pem_public_key(text)
        elif text.startswith(b"ssh-ed25519 "):
            key = load_ssh_public_key(text)
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, UnsupportedAlgorithm, binascii.Error) as exc:
        raise KeyFileError(path, f"{path!r} holds no Ed25519 public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(
            path, f"{path!r} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


class UsedIds:
    """Ids of accepted signed commands, each kept until its `expires_at` has passed.

    Persisted (atomically) in `path` when given, so a replay fails after a restart too.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._until: dict[str, datetime] = {}
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            self._until = {str(k): datetime.fromisoformat(v) for k, v in raw.items()}
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.error("fleet: cannot read used command ids from %s (%s); starting empty",
                      path, exc)

    def __contains__(self, command_id: str) -> bool:
        return command_id in self._until

    def __len__(self) -> int:
        return len(self._until)

    def add(self, command_id: str, until: datetime, now: datetime) -> None:
        self._until = {k: v for k, v in self._until.items() if v >= now}
        self._until[command_id] = until
        if self.path is not None:
            self._save(self.path)

    def _save(self, path: Path) -> None:
        text = json.dumps({k: v.isoformat() for k, v in self._until.items()})
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".fleet-ids-")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except OSError as exc:
            log.error("fleet: cannot save used command ids to %s: %s", path, exc)


@dataclass
class SignedFields:
    """What a changing command carries besides its id and args."""

    sig: Any
    expires_at: Any


class Authorizer:
    """Checks the signature, validity window and novelty of changing commands."""

    def __init__(self, device_id: str, key: Ed25519PublicKey | None, wall: Callable[[], datetime],
                 used: UsedIds | None = None, key_problem: str | None = None) -> None:
        self.device_id = device_id
        self.key = key
        self.key_problem = key_problem
        self.wall = wall
        self.used = used if used is not None else UsedIds()

    def set_key(self, key: Ed25519PublicKey | None, problem: str | None = None) -> None:
        self.key = key
        self.key_problem = problem

    def authorize(self, name: str, command_id: str, args: dict[str, Any],
                  signed: SignedFields) -> None:
        """Raise `CommandRefused` unless the command is signed, current and new."""
        if self.key is None:
            reason = self.key_problem or "fleet.command_key_file is empty"
            raise CommandRefused("unauthorized", f"{name!r} changes the box and needs a signed "
                                 f"command; this box accepts none ({reason})")
        if signed.sig is None:
            raise CommandRefused("unauthorized", f"{name!r} changes the box: field 'sig' "
                                 "(base64 Ed25519 signature) is missing", "sig")
        if not isinstance(signed.sig, str):
            raise CommandRefused("bad_request", f"field 'sig' must be a base64 string, got "
                                 f"{brief(signed.sig)}", "sig")
        try:
            signature = base64.b64decode(signed.sig, validate=True)
        except (binascii.Error, ValueError):
            raise CommandRefused("bad_request", f"field 'sig' is not base64: "
                                 f"{brief(signed.sig)}", "sig") from None
        if len(signature) != SIGNATURE_BYTES:
            raise CommandRefused("bad_request", f"field 'sig' must be {SIGNATURE_BYTES} bytes "
                                 f"(base64), got {len(signature)}", "sig")
        expires = self._expiry(signed.expires_at)
        assert signed.expires_at is not None
        message = canonical_message(self.device_id, name, command_id, args, signed.expires_at)
        try:
            self.key.verify(signature, message)  # Ed25519: OpenSSL, constant time
        except InvalidSignature:
            raise CommandRefused("bad_signature", "the signature does not match the command "
                                 "and the fleet operator's key", "sig") from None
        now = self.wall()
        if expires <= now:
            raise CommandRefused("expired", f"command expired at {signed.expires_at} "
                                 f"(box clock {now.isoformat()})", "expires_at")
        if expires - now > MAX_AHEAD:
            raise CommandRefused("bad_request", f"field 'expires_at' {signed.expires_at!r} is "
                                 f"more than {_hours(MAX_AHEAD)} ahead of the box clock "
                                 f"({now.isoformat()})", "expires_at")
        if command_id in self.used:
            raise CommandRefused("replayed", f"command id {command_id!r} was already used",
                                 "id")
        self.used.add(command_id, expires, now)

    @staticmethod
    def _expiry(value: str | None) -> datetime:
        if value is None:
            raise CommandRefused("bad_request", "field 'expires_at' (ISO 8601 with a UTC "
                                 "offset) is missing", "expires_at")
        if not isinstance(value, str):
            raise CommandRefused("bad_request", f"field 'expires_at' must be an ISO 8601 "
                                 f"string, got {brief(value)}", "expires_at")
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise CommandRefused("bad_request", f"field 'expires_at' is not ISO 8601: "
                                 f"{brief(value)}", "expires_at") from None
        if when.tzinfo is None:
            raise CommandRefused("bad_request", f"field 'expires_at' needs a UTC offset "
                                 f"(e.g. 'Z' or '+00:00'), got {brief(value)}", "expires_at")
        return when


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:g} h"


def brief(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"

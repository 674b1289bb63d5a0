"""The box's side of the fleet's desired-config document (README "Fleet operations").

The operator publishes one retained document on `DESIRED_CONFIG` (`firmware.fleet.topics`):

    {"version": 7, "issued_at": "ISO-8601", "settings": {"payments.offline_max_amount":
     30000, ...}, "sig": "<base64 Ed25519 over config_message(version, issued_at,
     settings)>"}

signed with the same operator key as commands (`fleet.command_key_file`). The box applies
a document whose version is above the one it applied last (so an old retained document,
or a replay of one, changes nothing), whose signature verifies and whose settings are all
in `REMOTE_KEYS` and valid together with the box's own TOML: it stores it
(`firmware.config.overlay`), reloads as SIGHUP does, and from then on reports the version
as `config_version` in its state, which is how the fleet counts the boxes that converged.
Each document the box refuses, or applies, is answered once on `cmd_result` with `name`
`desired-config` and `id` `desired-config-<version>`; a refusal names the key.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature

from firmware.config import Config
from firmware.config.loader import load_config_with
from firmware.config.overlay import OVERLAY_FILE, REMOTE_KEYS, read_overlay, write_overlay
from firmware.errors import ConfigError
from firmware.fleet.auth import Authorizer, CommandRefused, brief
from firmware.fleet.commands import load_json
from firmware.fleet.topics import DESIRED_CONFIG_RESULT, config_message

log = logging.getLogger("storebox.fleet")

_FIELDS = frozenset({"version", "issued_at", "settings", "sig"})


def applied_version(state_dir: str) -> int:
    """The version of the desired config this box applied last (0: none)."""
    doc = read_overlay(Path(state_dir) / OVERLAY_FILE)
    version = doc.get("version") if doc else None
    return version if isinstance(version, int) and not isinstance(version, bool) else 0


class DesiredConfig:
    """Verifies and applies desired-config documents; answers each version once."""

    def __init__(self, config: Callable[[], Config], authorizer: Authorizer,
                 reload: Callable[[], dict[str, Any]] | None,
                 on_applied: Callable[[int], None]) -> None:
        self._config = config
        self.authorizer = authorizer
        self.reload = reload
        self.on_applied = on_applied
        self.applied = applied_version(config().device.state_dir)
        #: The last version refused: its retained document arrives again at every
        #: reconnect and is answered once.
        self.refused = 0

    def handle(self, payload: bytes) -> dict[str, Any] | None:
        """The `cmd_result` answer for one document, or None when there is nothing to say
        (an empty retained message, a version applied or refused already)."""
        if not payload:
            return None
        version: int | None = None
        try:
            doc = load_json(payload)
            version = _version(doc)
            if version <= max(self.applied, self.refused):
                return None
            settings = _settings(doc)
            self._verify(version, doc, settings)
        except CommandRefused as refused:  # not remembered: a forger's version must not
            return self._refused(version, refused)  # hold back the operator's next one
        try:
            result = self._apply(version, doc, settings)
        except CommandRefused as refused:
            self.refused = version
            return self._refused(version, refused)
        log.info("fleet: desired config version %d applied", version)
        return _answer(version, ok=True, result=result)

    @staticmethod
    def _refused(version: int | None, refused: CommandRefused) -> dict[str, Any]:
        log.warning("fleet: desired config %s refused: %s: %s", brief(version),
                    refused.code, refused.message)
        return _answer(version, ok=False, error=refused.to_json())

    def _apply(self, version: int, doc: dict[str, Any],
               settings: dict[str, Any]) -> dict[str, Any]:
        _remote_only(settings)
        config = self._config()
        try:
            load_config_with(config.source, settings)
        except ConfigError as exc:
            problems = [str(p) for p in exc.problems]
            raise CommandRefused("invalid", "; ".join(problems) or "refused",
                                 "settings") from None
        try:
            write_overlay(Path(config.device.state_dir) / OVERLAY_FILE, doc)
        except OSError as exc:
            raise CommandRefused("storage", f"cannot store the desired config in "
                                 f"{config.device.state_dir!r}: {exc}") from None
        self.applied = version
        summary = self.reload() if self.reload is not None else {"ok": True}
        self.on_applied(version)
        return {"version": version, "keys": sorted(settings), "reload": summary}

    def _verify(self, version: int, doc: dict[str, Any], settings: dict[str, Any]) -> None:
        key = self.authorizer.key
        if key is None:
            reason = self.authorizer.key_problem or "fleet.command_key_file is empty"
            raise CommandRefused("unauthorized", f"a desired config must be signed; this box "
                                 f"accepts none ({reason})")
        issued_at, sig = doc.get("issued_at"), doc.get("sig")
        if not isinstance(issued_at, str):
            raise CommandRefused("bad_request", f"field 'issued_at' must be an ISO 8601 "
                                 f"string, got {brief(issued_at)}", "issued_at")
        if not isinstance(sig, str):
            raise CommandRefused("unauthorized", f"field 'sig' (base64 Ed25519 signature) "
                                 f"is missing or not a string: {brief(sig)}", "sig")
        try:
            key.verify(base64.b64decode(sig, validate=True),
                       config_message(version, issued_at, settings))
        except (binascii.Error, ValueError, InvalidSignature):
            raise CommandRefused("bad_signature", "the signature does not match the document "
                                 "and the fleet operator's key", "sig") from None


def _version(doc: Any) -> int:
    if not isinstance(doc, dict):
        raise CommandRefused("bad_request", f"a desired config is a JSON object, got "
                             f"{brief(doc)}")
    for name in doc:
        if name not in _FIELDS:
            raise CommandRefused("bad_request", f"unknown field {name!r} (fields: "
                                 f"{', '.join(sorted(_FIELDS))})", name)
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CommandRefused("bad_request", f"field 'version' must be a positive integer, "
                             f"got {brief(version)}", "version")
    return version


def _settings(doc: dict[str, Any]) -> dict[str, Any]:
    settings = doc.get("settings")
    if not isinstance(settings, dict):
        raise CommandRefused("bad_request", f"field 'settings' must be a JSON object, got "
                             f"{brief(settings)}", "settings")
    return settings


def _remote_only(settings: dict[str, Any]) -> None:
    for key in sorted(settings):
        if key not in REMOTE_KEYS:
            raise CommandRefused("not_remote", f"the fleet may not set {key!r} (keys it may "
                                 f"set: {', '.join(sorted(REMOTE_KEYS))})", f"settings.{key}")


def _answer(version: int | None, **fields: Any) -> dict[str, Any]:
    ident = f"{DESIRED_CONFIG_RESULT}-{version}" if version is not None else None
    return {"id": ident, "name": DESIRED_CONFIG_RESULT, "version": version, **fields}

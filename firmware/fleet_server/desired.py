"""The operator's side of the desired-config document (`storebox fleet config push|status`).

A push gives the next version (one more than the last in the database; the version is
the table's key, so two workers pushing at once cannot both issue it), signs it with the
operator's key (`firmware.fleet_server.signing`), stores it, publishes it retained at
QoS 1 on `DESIRED_CONFIG` and writes the audit log. The boxes apply it themselves
(`firmware.fleet.desired`); a box converged when its state's `config_version` is the
version. Boxes answer each version once on `cmd_result` (`name` `desired-config`) and
are not asked again: each box's latest refusal is kept, for the status, in memory and in
the database (`config_refusals`, written with the server's batches, `flush`; read back
when the server starts), so a restart of `fleet serve` still shows who refused what.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from firmware.fleet.topics import DESIRED_CONFIG
from firmware.fleet_server.jobs_store import OperationsStore
from firmware.fleet_server.signing import OperatorKey

log = logging.getLogger("storebox.fleet_server")

Select = Callable[[list[tuple[str, str]]], list[dict[str, Any]]]
MAX_SETTINGS = 64
#: A refusal's message is the box's text: kept this long at most.
MAX_MESSAGE = 500


def check_settings(settings: Any) -> dict[str, Any]:
    """ValueError unless `settings` is an object of dotted keys (`payments.offline_max_
    amount`). Which keys a box accepts is the box's rule: it refuses the others itself,
    naming the key, and the status shows it."""
    if not isinstance(settings, dict) or not settings:
        raise ValueError(f"settings: a non-empty object of section.key settings, got "
                         f"{settings!r}")
    if len(settings) > MAX_SETTINGS:
        raise ValueError(f"settings: at most {MAX_SETTINGS} keys, got {len(settings)}")
    for key in settings:
        section, dot, name = key.partition(".")
        if not dot or not section or not name:
            raise ValueError(f"settings: keys are section.key (e.g. "
                             f"payments.offline_max_amount), got {key!r}")
    return settings


class DesiredConfigs:
    def __init__(self, store: OperationsStore, key: OperatorKey | None,
                 publish: Callable[[str, bytes, bool], Awaitable[None]], select: Select,
                 wall: Callable[[], datetime]) -> None:
        self.store = store
        self.key = key
        self.publish = publish
        self.select = select
        self.wall = wall
        #: device -> the box's refusal of a version: {"version", "code", "message", ...}
        self.refusals: dict[str, dict[str, Any]] = store.refusals()
        #: Boxes whose refusal (or its end) is not yet in the database.
        self.dirty: set[str] = set()

    async def push(self, settings: Any, actor: str) -> dict[str, Any]:
        """Issue, store and publish the next version; ValueError when it cannot be."""
        settings = check_settings(settings)
        if self.key is None:
            raise ValueError("a desired config must be signed: set "
                             "fleet_server.command_key_file")
        latest = self.store.latest_config()
        version = int(latest["version"]) + 1 if latest else 1
        doc = self.key.sign_config(version, self.wall().isoformat(), settings)
        self.store.add_config(doc, actor)
        await self.publish(DESIRED_CONFIG, json.dumps(doc, separators=(",", ":")).encode(),
                           True)
        self.store.audit(self.wall(), actor, "config_push", f"version {version}",
                         {"version": version, "settings": settings})
        return doc

    def answer(self, device: str, doc: dict[str, Any]) -> None:
        """A box's `cmd_result` about a desired-config version."""
        if doc.get("ok") is True:
            if self.refusals.pop(device, None) is not None:
                self.dirty.add(device)
            return
        raw = doc.get("error")
        error = raw if isinstance(raw, dict) else {}
        version = doc.get("version")
        self.refusals[device] = {
            "device_id": device,
            "version": version if isinstance(version, int) and
            not isinstance(version, bool) else None,
            "code": _text(error.get("code")), "message": _text(error.get("message")),
            "field": _text(error.get("field")), "at": self.wall().isoformat()}
        self.dirty.add(device)

    def flush(self) -> None:
        """Write the refusals that changed since the last flush (one transaction); kept
        for the next one when the database cannot be written."""
        if not self.dirty:
            return
        dirty, self.dirty = self.dirty, set()
        refused = [self.refusals[d] for d in sorted(dirty) if d in self.refusals]
        accepted = sorted(d for d in dirty if d not in self.refusals)
        try:
            self.store.save_refusals(refused, accepted)
        except Exception:
            self.dirty |= dirty
            log.exception("fleet server: cannot record %d desired-config refusals",
                          len(refused))

    def status(self) -> dict[str, Any]:
        """The latest version and how far the fleet is with it."""
        latest = self.store.latest_config()
        if latest is None:
            return {"version": None, "settings": {}, "boxes": 0, "converged": 0,
                    "pending": 0, "offline": 0, "refused": []}
        version = int(latest["version"])
        converged = pending = offline = 0
        refused = []
        for box in self.select([]):
            refusal = self.refusals.get(box["device_id"])
            if str(box.get("config_version")) == str(version):
                converged += 1
            elif refusal is not None and refusal.get("version") == version:
                refused.append(refusal)
            elif box.get("online"):
                pending += 1
            else:
                offline += 1
        return {"version": version, "settings": latest["settings"],
                "issued_at": latest["issued_at"], "actor": latest["actor"],
                "boxes": converged + pending + offline + len(refused),
                "converged": converged, "pending": pending, "offline": offline,
                "refused": refused}


def _text(value: Any) -> str | None:
    """A field of a box's answer as stored: text (bounded), or None."""
    return None if value is None else str(value)[:MAX_MESSAGE]

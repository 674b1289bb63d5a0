"""Composes the fleet agent (`firmware.fleet`): the operator's command key, the commands
the box answers, the event store, and the agent the daemon supervises.

The commands that act on other components (`queue_drain`, `config_reload`) are handed
their capabilities by the daemon (the payments' `drain_queue`, the daemon's own reload),
never looked up in the context.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from firmware.components.context import BoxContext
from firmware.config import Config
from firmware.fleet.agent import FleetAgent
from firmware.fleet.auth import Authorizer, CommandRefused, KeyFileError, UsedIds, load_public_key
from firmware.fleet.broker import broker_from
from firmware.fleet.commands import Command, CommandSet
from firmware.fleet.desired import DesiredConfig, applied_version
from firmware.fleet.store import FILE as STORE_FILE
from firmware.fleet.store import FleetStore
from firmware.state import BoxState
from firmware.status import status_document
from firmware.supervisor import Backoff

__all__ = ["DrainQueue", "ReloadConfig", "box_commands", "build_fleet"]

log = logging.getLogger("storebox.fleet")

USED_IDS_FILE = "fleet-used-command-ids.json"

#: Forward the payment queue now (the payments component's `drain_queue`).
DrainQueue = Callable[[], None]
#: Re-read the config as SIGHUP does (the daemon's `reload`); returns what happened.
ReloadConfig = Callable[[], dict[str, Any]]


def read_command_key(path: str) -> tuple[Ed25519PublicKey | None, str | None]:
    """The operator's key, or None and why (logged)."""
    if not path:
        return None, None
    try:
        return load_public_key(path), None
    except KeyFileError as exc:
        log.error("fleet: fleet.command_key_file: %s; commands that change the box are "
                  "refused", exc)
        return None, f"fleet.command_key_file: {exc}"


def box_commands(state: BoxState, *, drain_queue: DrainQueue | None = None,
                 reload_config: ReloadConfig | None = None) -> list[Command]:
    """The commands the box answers; without `drain_queue` (no payment queue) or
    `reload_config` (no daemon) the changing ones are refused as unavailable."""

    async def ping(args: dict[str, Any]) -> dict[str, Any]:
        return {"pong": True, "device_id": state.device_id, "version": state.version,
                "at": state.wall().isoformat()}

    async def status(args: dict[str, Any]) -> dict[str, Any]:
        return status_document(state)

    async def queue_drain(args: dict[str, Any]) -> dict[str, Any]:
        if drain_queue is None:
            raise CommandRefused("unavailable", "this box has no payment queue to drain")
        drain_queue()  # as `storebox queue drain`: wake the forwarder now
        return {"draining": True}

    async def config_reload(args: dict[str, Any]) -> dict[str, Any]:
        if reload_config is None:
            raise CommandRefused("unavailable", "this box cannot reload its configuration")
        summary = reload_config()  # as SIGHUP
        if not summary.get("ok"):
            raise CommandRefused("reload_refused", "; ".join(summary.get("problems", []))
                                 or "the configuration was refused")
        return summary

    return [Command("ping", ping), Command("status", status),
            Command("queue_drain", queue_drain, changes=True),
            Command("config_reload", config_reload, changes=True)]


def config_version(config: Config) -> str:
    """The version of the fleet's desired config the box applied, else the first 16 hex
    of the SHA-256 of the config file (of the settings when there is no file): the fleet
    sees which boxes run which configuration, and which converged."""
    applied = applied_version(config.device.state_dir)
    if applied:
        return str(applied)
    try:
        data = Path(config.source).read_bytes()
    except OSError:
        data = repr(config).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def site_of(config: Config) -> dict[str, str]:
    """The state's `site` (docs/mqtt.md): how the fleet groups shops."""
    return {"isp": config.wired.isp or config.wired.carrier, "region": config.device.region}


def fleet_agent(config: Config, state: BoxState, commands: CommandSet,
                store: FleetStore | None = None) -> FleetAgent:
    fleet = config.fleet
    return FleetAgent(
        state, broker_from(config), commands, state_min_interval_s=fleet.state_min_interval_s,
        state_every_s=fleet.state_every_s, event_buffer=fleet.event_buffer,
        backoff=Backoff(initial_s=1.0, cap_s=fleet.reconnect_max_s, healthy_after_s=60.0),
        store=store, site=site_of(config), config_version=config_version(config))


def desired_config(context: BoxContext, agent: FleetAgent, authorizer: Authorizer,
                   reload_config: ReloadConfig | None) -> DesiredConfig:
    """The fleet's desired config, applied through the daemon's reload (as SIGHUP)."""
    def applied(version: int) -> None:
        agent.config_version = str(version)
        context.state.touch()  # the state goes out with the new config_version

    return DesiredConfig(lambda: context.config, authorizer, reload_config, applied)


async def build_fleet(context: BoxContext, *, drain_queue: DrainQueue | None = None,
                      reload_config: ReloadConfig | None = None) -> FleetAgent | None:
    """The fleet agent, or None when `fleet.mqtt_url` is empty."""
    config = context.config
    if not config.fleet.mqtt_url:
        log.info("fleet agent off (fleet.mqtt_url is empty)")
        return None
    key, problem = read_command_key(config.fleet.command_key_file)
    authorizer = Authorizer(config.device.id, key, wall=context.state.wall,
                            used=UsedIds(Path(config.device.state_dir) / USED_IDS_FILE),
                            key_problem=problem)

    def reload_key(new: Config) -> None:
        authorizer.set_key(*read_command_key(new.fleet.command_key_file))

    context.reload_hooks.append(reload_key)
    store = FleetStore(Path(config.device.state_dir) / STORE_FILE,
                       cap=config.fleet.event_buffer)

    async def close_store() -> None:
        store.close()

    context.closers.append(close_store)
    commands = box_commands(context.state, drain_queue=drain_queue,
                            reload_config=reload_config)
    agent = fleet_agent(config, context.state, CommandSet(commands, authorizer), store)
    agent.desired = desired_config(context, agent, authorizer, reload_config)
    context.state.update(context.state.fleet, link="connecting", broker=agent.broker.url,
                         since=context.state.wall(), last_error=None)
    log.info("fleet agent: %s as %s; changing commands %s", agent.broker.url,
             agent.broker.client_id, "need the operator's signature" if key else "refused")
    return agent


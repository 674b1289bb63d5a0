"""`[fleet_server]` in the fleet server's TOML (docs/cli.md)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from firmware.errors import FirmwareError


class FleetServerConfigError(FirmwareError):
    """The fleet server's config could not be loaded; `problems` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class FleetServerConfig:
    #: Binding keys.
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    listen: str = "127.0.0.1:8480"
    #: A SQLite file path, or a PostgreSQL DSN (`postgresql://user@host:5432/fleet`).
    database: str = "fleet.sqlite3"
    #: Optional.
    client_id: str = "storebox-fleet-server"
    username: str = ""
    password_file: str = ""
    ca_file: str = ""
    #: A box's state is stale when older than `stale_factor` times this.
    state_period_s: float = 60.0
    stale_factor: float = 3.0
    #: Incidents: wired-down changes of one ISP within this sliding window ...
    incident_window_s: float = 120.0
    #: ... at least this many shops ...
    incident_min_boxes: int = 5
    #: ... and at least this share of that ISP's online shops open an incident;
    incident_min_share: float = 0.02
    #: it closes when this share of its shops is back, each for `incident_stable_s`.
    incident_close_share: float = 0.9
    #: A sudden loss of at least this share of the fleet's boxes (offline within
    #: `incident_window_s`, across ISPs) is one fleet-wide incident (the broker or the
    #: operator's network), not an incident per ISP.
    fleet_lost_share: float = 0.5
    incident_stable_s: float = 60.0
    #: Writes to the database are batched: at most this long in memory.
    flush_s: float = 0.5
    #: Scale-out: several `fleet serve` workers on one PostgreSQL database share the
    #: events through the MQTT shared subscription `$share/<group>/storebox/+/events`
    #: (each event reaches one worker); every worker reads status and state itself
    #: (retained messages are not delivered on shared subscriptions). Empty: one worker.
    shared_group: str = ""
    #: The operator's Ed25519 private key (PEM PKCS#8, OpenSSH, or base64 of the raw 32
    #: bytes) that signs command jobs and desired-config documents; "" sends commands
    #: unsigned (boxes refuse those that change them) and refuses to push a config.
    command_key_file: str = ""
    #: A command job waits this long for each box's `cmd_result`, then counts no answer.
    command_timeout_s: float = 30.0

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


def load(path: str | Path) -> FleetServerConfig:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise FleetServerConfigError([f"{path}: {exc}"]) from exc
    return from_dict(doc.get("fleet_server", {}), str(path))


def from_dict(table: dict[str, Any], source: str = "<config>") -> FleetServerConfig:
    known = {f.name: f for f in fields(FleetServerConfig)}
    problems = []
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            problems.append(f"{source}: fleet_server.{key}: unknown key")
            continue
        default = known[key].default
        if isinstance(default, float) and isinstance(value, int) \
                and not isinstance(value, bool):
            value = float(value)
        if type(value) is not type(default):
            problems.append(f"{source}: fleet_server.{key}: must be "
                            f"{type(default).__name__}, got {value!r}")
            continue
        values[key] = value
    config = FleetServerConfig(**values)
    if not config.mqtt_url.startswith(("mqtt://", "mqtts://")):
        problems.append(f"{source}: fleet_server.mqtt_url: must be mqtt:// or mqtts://")
    if config.shared_group and not config.shared_group.replace("-", "").replace(
            "_", "").isalnum():
        problems.append(f"{source}: fleet_server.shared_group: letters, digits, - and _ "
                        f"only, got {config.shared_group!r}")
    try:
        config.host_port  # noqa: B018
    except ValueError:
        problems.append(f"{source}: fleet_server.listen: must be HOST:PORT")
    if problems:
        raise FleetServerConfigError(problems)
    return config


def broker_of(config: FleetServerConfig) -> tuple[str, int, bool]:
    parts = urlsplit(config.mqtt_url)
    tls = parts.scheme == "mqtts"
    return parts.hostname or "127.0.0.1", parts.port or (8883 if tls else 1883), tls

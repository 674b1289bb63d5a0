"""Where and how the fleet agent reaches its MQTT broker (`[fleet]` in the config)."""

from __future__ import annotations

import logging
import ssl
import stat
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from firmware.config import Config

log = logging.getLogger("storebox.fleet")

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True)
class Broker:
    #: For logs and the status: scheme, host and port, never credentials.
    url: str
    host: str
    port: int
    tls: bool
    client_id: str
    ca_file: str = ""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    keepalive_s: int = 60

    def tls_context(self) -> ssl.SSLContext | None:
        """The system CA store (or `ca_file`) with hostname checks; None for mqtt://.

        Raises OSError/ssl.SSLError when `ca_file` cannot be loaded."""
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=self.ca_file or None)


def read_password(path: str) -> str | None:
    """The first line of `path`; None (logged, never the content) when unreadable."""
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            mode = stat.S_IMODE(Path(path).stat().st_mode)
            password = f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        log.error("fleet: cannot read fleet.password_file %r: %s; connecting without a "
                  "password", path, reason)
        return None
    if mode & 0o077:
        log.warning("fleet: fleet.password_file %r is readable by others (mode %04o); "
                    "chmod 600 it", path, mode)
    return password


def broker_from(config: Config) -> Broker:
    """The broker of `fleet.mqtt_url` (validated by the config schema)."""
    fleet = config.fleet
    parts = urlsplit(fleet.mqtt_url)
    host = parts.hostname or ""
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    shown_host = f"[{host}]" if ":" in host else host
    return Broker(
        url=f"{parts.scheme}://{shown_host}:{port}", host=host, port=port,
        tls=parts.scheme == "mqtts", client_id=f"storebox-{config.device.id}",
        ca_file=fleet.ca_file, username=fleet.username or None,
        password=read_password(fleet.password_file) if fleet.username else None,
        keepalive_s=fleet.keepalive_s)
